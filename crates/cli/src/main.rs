//! `captioner`: a thin command line over the captioner libraries.
//!
//! Every subcommand lives in `commands/` and only parses flags, wires the libraries together and
//! reports; the work itself happens in the library crates.

mod commands;
mod logging;
mod progress;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Image captioning: caption photos, extract CNN features, train and evaluate captioners.
///
/// The pipeline is: `extract` image features once with a frozen CNN, `train` a decoder on them,
/// `caption` new images with the trained bundle, `eval` captions against references with
/// BLEU/METEOR/ROUGE-L/CIDEr-D, and `serve` it all as a web page and JSON API.
#[derive(Debug, Parser)]
#[command(
    name = "captioner",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    /// More log output (-v: debug, -vv: trace). Logs go to stderr; RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Only errors on stderr, and no progress bars.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Caption images, folders or globs with a trained model bundle.
    Caption(commands::caption::Args),
    /// Compute CNN features for a dataset's images once and cache them on disk.
    Extract(commands::extract::Args),
    /// Train a decoder on cached features.
    Train(commands::train::Args),
    /// Score captions against references (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D).
    Eval(commands::eval::Args),
    /// Copy a model bundle with f16 weights (for shipping), or average checkpoints into one.
    Export(commands::export::Args),
    /// Serve a web page and a JSON API for captioning.
    Serve(commands::serve::Args),
    /// Build a vocabulary (Hugging Face tokenizer.json) from a dataset's captions.
    Vocab(commands::vocab::Args),
    /// Look inside datasets, images and models (sanity checks).
    Inspect(commands::inspect::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose, cli.quiet);
    progress::set_enabled(!cli.quiet);

    let result = match cli.command {
        Command::Caption(args) => commands::caption::run(args),
        Command::Extract(args) => commands::extract::run(args),
        Command::Train(args) => commands::train::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Export(args) => commands::export::run(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Vocab(args) => commands::vocab::run(args),
        Command::Inspect(args) => commands::inspect::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line: "reading x.json: line 3: ...".
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

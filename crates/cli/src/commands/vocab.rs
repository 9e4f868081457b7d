//! `captioner vocab`: build the word vocabulary from a dataset's captions and save it as a
//! Hugging Face `tokenizer.json`.

use std::path::PathBuf;

use anyhow::Context;
use captioner_data::{DatasetSpec, Normalizer, Split, Vocab, VocabConfig};

/// Build a vocabulary (tokenizer.json) from a dataset's captions.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The dataset: flickr8k:<dir>, flickr8k-csv:<captions.txt>[@<images>],
    /// coco:<captions.json>[@<images>], karpathy:<dataset.json>[@<root>], folder:<dir>.
    #[arg(long, value_name = "SPEC")]
    dataset: DatasetSpec,

    /// Count words of this split only (train, val, test, restval); all captions when omitted.
    #[arg(long)]
    split: Option<Split>,

    /// Keep at most N words (the 4 special tokens come on top).
    #[arg(long, value_name = "N")]
    max_words: Option<usize>,

    /// Keep only words seen at least K times.
    #[arg(long, value_name = "K", default_value_t = 1)]
    min_count: u64,

    /// Caption normalisation as JSON (a Normalizer config file); the seeds' defaults otherwise.
    #[arg(long, value_name = "FILE")]
    normalizer: Option<PathBuf>,

    /// Where to write the tokenizer.json.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let normalizer = match &args.normalizer {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str::<Normalizer>(&text)
                .with_context(|| format!("parsing normaliser config {}", path.display()))?
        }
        None => Normalizer::default(),
    };

    let spinner = crate::progress::spinner(format!("reading {}", args.dataset));
    let (dataset, report) = args
        .dataset
        .load()
        .with_context(|| format!("loading dataset {}", args.dataset))?;
    spinner.finish_and_clear();
    if !report.missing_images.is_empty() {
        tracing::warn!(
            "{} image(s) without a file were skipped ({} caption(s))",
            report.missing_images.len(),
            report.captions_without_image
        );
    }
    let dataset = dataset.filtered(args.split);
    let captions: Vec<String> = dataset
        .captions()
        .map(|(_, c)| normalizer.normalize(c))
        .collect();
    let which = args
        .split
        .map_or("all splits".to_owned(), |s| format!("split {s}"));
    anyhow::ensure!(
        !captions.is_empty(),
        "{} has no captions in {which} (split counts: {})",
        args.dataset,
        split_summary(&dataset)
    );

    let config = VocabConfig {
        max_words: args.max_words,
        min_count: args.min_count,
    };
    let vocab = Vocab::build(captions.iter().map(String::as_str), &config);
    let coverage = vocab.coverage(captions.iter().map(String::as_str));
    vocab
        .save(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;

    println!(
        "vocab size: {} ({} words + 4 specials) from {} captions of {} images ({which})",
        vocab.len(),
        vocab.len().saturating_sub(4),
        captions.len(),
        dataset.len()
    );
    println!(
        "coverage: {:.2}% of {} tokens in vocabulary",
        coverage.ratio() * 100.0,
        coverage.tokens
    );
    println!("wrote {}", args.out.display());
    Ok(())
}

fn split_summary(dataset: &captioner_data::Dataset) -> String {
    let counts = dataset.split_counts();
    if counts.is_empty() {
        return "no images".to_owned();
    }
    counts
        .iter()
        .map(|(s, n)| format!("{}={n}", s.map_or("none", Split::as_str)))
        .collect::<Vec<_>>()
        .join(", ")
}

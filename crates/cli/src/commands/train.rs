//! `captioner train`.

/// Not built yet; the flags arrive with the issue that builds this subcommand.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Arguments are accepted so that the message below is what a user sees.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

pub fn run(_args: Args) -> anyhow::Result<()> {
    Err(super::not_implemented(
        "train",
        "the decoders and the training engine",
    ))
}

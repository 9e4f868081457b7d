//! One module per subcommand.

pub mod caption;
pub mod eval;
pub mod export;
pub mod extract;
pub mod inspect;
pub mod serve;
pub mod train;
pub mod vocab;

use captioner_encode::encoder::EncoderKind;

/// Parses `--encoder`, listing every [`EncoderKind`] name in `--help` and in the error for an
/// unknown one.
pub fn encoder_parser() -> impl clap::builder::TypedValueParser<Value = EncoderKind> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(EncoderKind::ALL.iter().map(|k| k.name()))
        .try_map(|name| name.parse::<EncoderKind>())
}

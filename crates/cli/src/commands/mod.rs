//! One module per subcommand.

pub mod caption;
pub mod eval;
pub mod export;
pub mod extract;
pub mod inspect;
pub mod serve;
pub mod train;
pub mod vocab;

/// The error a subcommand returns until the issue that builds it lands.
pub fn not_implemented(command: &str, what_it_needs: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "`captioner {command}` is not implemented yet: it needs {what_it_needs}. \
         See README.md for what works today."
    )
}

//! One module per subcommand.

pub mod caption;
pub mod eval;
pub mod export;
pub mod extract;
pub mod inspect;
pub mod serve;
pub mod train;
pub mod vocab;

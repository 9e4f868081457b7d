//! The four decoder architectures, one per file.

mod common;
pub mod gru_init;
pub mod merge_lstm;
pub mod sat;
pub mod transformer;

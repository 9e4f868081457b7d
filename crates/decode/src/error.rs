use std::path::PathBuf;

/// Errors of building, running, saving and loading decoders.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Kernel arguments that do not fit together.
    #[error(transparent)]
    Kernel(#[from] crate::kernels::KernelError),
    /// Inputs of the wrong size.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A hyper-parameter out of range, or a configuration the data cannot serve.
    #[error("invalid decoder configuration: {0}")]
    Config(String),
    /// A model bundle that is missing pieces or does not match its config.
    #[error("model bundle {path}: {message}")]
    Bundle {
        /// The bundle directory or file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An error from candle (the transformer's autograd).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

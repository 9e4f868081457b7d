use std::path::PathBuf;

/// Everything that can go wrong loading or running a Hugging Face captioner.
#[derive(Debug, thiserror::Error)]
pub enum VlmError {
    /// A file the model folder needs is not there.
    #[error("{path}: missing ({what})")]
    Missing { path: PathBuf, what: &'static str },
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file is there but does not say what we need, or says it wrongly.
    #[error("{path}: {message}")]
    Malformed { path: PathBuf, message: String },
    /// `config.json` names an architecture this crate does not run.
    #[error("{path}: unsupported model_type {model_type:?} (supported: \"blip\", \"vision-encoder-decoder\" with a ViT encoder and a GPT-2 decoder)")]
    Unsupported { path: PathBuf, model_type: String },
    /// Generation settings out of range.
    #[error("invalid generation options: {0}")]
    Options(String),
    /// The tensor library failed while running the model.
    #[error("model: {0}")]
    Candle(candle_core::Error),
    /// The tokenizer failed to encode a prompt or decode a caption.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Downloading from the hub failed (feature `hub`).
    #[error("hub: {0}")]
    Hub(String),
}

impl From<candle_core::Error> for VlmError {
    fn from(e: candle_core::Error) -> Self {
        Self::Candle(crate::captioner::without_backtrace(e))
    }
}

pub type Result<T, E = VlmError> = std::result::Result<T, E>;

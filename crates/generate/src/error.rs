use captioner_decode::DecodeError;

/// Errors of caption generation and of drawing attention heat-maps.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The decoder failed (bad features, a shape the model does not accept, ...).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A [`crate::GenerateConfig`] value out of range.
    #[error("invalid generation settings: {0}")]
    Config(String),
    /// Inputs of the wrong size (decoder rows, attention maps, heat-map grids).
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// The decoder produced a NaN log-probability.
    #[error("the decoder returned a NaN log-probability (step {step}, token {token})")]
    NotANumber {
        /// Decoding step (number of words generated before it).
        step: usize,
        /// Vocabulary id whose log-probability was NaN.
        token: usize,
    },
    /// Attention was asked for, but the decoder cannot report it.
    #[error(
        "attention weights were requested, but the `{0}` decoder does not attend over a \
         spatial grid (or the features have no grid)"
    )]
    NoAttention(&'static str),
}

//! Step three of the pipeline: caption decoders over cached image features, and their training.
//!
//! The speed-critical pieces are hand-fused CPU kernels in [`kernels`] (GEMM, LSTM/GRU layers with
//! backward through time, vocabulary projection + softmax + cross-entropy) and fused optimisers in
//! [`optim`], all over plain `f32` slices. [`ops`] wraps the layers and the loss as candle custom
//! ops so decoders built from `candle_nn` pieces get their gradients through `backward()`.

pub mod kernels;
pub mod ops;
pub mod optim;
pub mod params;

pub use kernels::KernelError;

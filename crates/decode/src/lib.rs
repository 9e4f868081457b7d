//! Step three of the pipeline: caption decoders over cached image features, and their training.
//!
//! The speed-critical pieces are hand-fused CPU kernels in [`kernels`] (GEMM, LSTM/GRU layers with
//! backward through time, vocabulary projection + softmax + cross-entropy) and fused optimisers in
//! [`optim`], all over plain `f32` slices. [`ops`] wraps the layers and the loss as candle custom
//! ops so decoders built from `candle_nn` pieces get their gradients through `backward()`.
//! [`params::ParamSet`] keeps a model's parameters and gradients in two flat buffers.
//!
//! Two ways to train with them, measured on the issue-5 LSTM decoder (`benches/train_step.rs`,
//! same run, loaded 2-core machine): the explicit engine (hand-written forward/backward calling the
//! kernels, one flat buffer, one fused Adam pass) took 793 ms/step; the same model through candle
//! autograd with the fused ops took 997 ms/step (its `backward()` 300 ms against our 138 ms, mostly
//! the generic matmul/embedding backward and tensor copies, and Adam per variable with copies in
//! and out of candle 45 ms against 13 ms). So the RNN decoders (`gru-init`, `merge-lstm`, `sat`)
//! should use the explicit engine; the ops stay for models whose other layers are easier to
//! write in candle (the transformer) and as the cross-check of the kernels against autograd.

pub mod bundle;
pub mod config;
pub mod ensemble;
mod error;
pub mod kernels;
pub mod model;
pub mod models;
pub mod ops;
pub mod optim;
pub mod params;

pub use config::{DecoderConfig, LengthPenalty, ModelDims};
pub use ensemble::Ensemble;
pub use error::DecodeError;
pub use kernels::KernelError;
pub use model::{DecodeState, Decoder, Features, PassOptions, PassStats, TeacherBatch};

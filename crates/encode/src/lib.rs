//! Step two of the pipeline: decode images and turn them into features with a frozen ImageNet CNN.

pub mod fast;
pub mod kernels;

pub mod cache;
pub mod encoder;
pub mod image;
pub mod models;

pub use cache::{CacheError, CacheMeta, CacheWriter, FeatureCache};
pub use encoder::pipeline::{extract, ExtractItem, ExtractOptions, ExtractReport};
pub use encoder::{CandleEncoder, CandleLite0, EncodeError, Encoder, EncoderKind, Features, Want};
pub use image::{
    ImageError, ImageLoader, ImageTensor, Layout, Normalization, NormalizationKind, ResizeMode,
};

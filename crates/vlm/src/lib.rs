//! Pretrained Hugging Face vision-language captioners — BLIP and ViT-GPT2 — on the CPU, with
//! greedy search, beam search and sampling that give the same token ids as `transformers`'
//! `model.generate`.
//!
//! ```no_run
//! use captioner_vlm::{HfCaptioner, HfGenerateOptions};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A folder from `huggingface-cli download Salesforce/blip-image-captioning-base --local-dir ...`
//! let model = HfCaptioner::load("models/blip-base")?;
//! let img = image::open("photo.jpg")?.to_rgb8();
//! let opts = HfGenerateOptions { num_beams: 3, max_new_tokens: 30, ..Default::default() };
//! for caption in &model.caption(&[img], &opts)?[0] {
//!     println!("{} ({:.2})", caption.text, caption.log_prob);
//! }
//! # Ok(()) }
//! ```
//!
//! - [`HfCaptioner::is_hf_dir`] tells a Hugging Face folder (`config.json` with `model_type`
//!   `blip` or `vision-encoder-decoder`) from one of our own bundles.
//! - [`HfCaptioner::load`] reads `config.json`, `preprocessor_config.json`, `tokenizer.json` and
//!   `model.safetensors` (or its shards, or `pytorch_model.bin`); every error names its file.
//! - [`HfCaptioner::caption`] captions a batch of images; [`HfGenerateOptions`] mirrors
//!   `generate`'s keyword arguments (`num_beams`, `length_penalty`, `early_stopping`,
//!   `no_repeat_ngram_size`, `min_new_tokens`, `max_new_tokens`, `do_sample`, `top_k`, `top_p`,
//!   `temperature`, plus a `seed` and BLIP's conditional `prompt`).
//! - [`HfCaptioner::generate_ids`] and [`HfCaptioner::logits`] work on pixel tensors, for tests
//!   against `transformers` (`scripts/vlm_fixtures.py`).
//!
//! The vision towers are candle-transformers' (`blip::VisionModel`, `vit`); the text decoders
//! are ours ([`models`]): candle's BLIP text decoder keeps its key/value cache inside the layers
//! where beam search cannot reorder it, and candle has no GPT-2 with cross-attention.
//! Sampling draws from its own seeded generator, so it is reproducible here but not identical
//! to torch's draws.

mod captioner;
pub mod config;
mod error;
pub mod models;
mod preprocess;
mod search;

pub use captioner::{HfArchitecture, HfCaption, HfCaptioner};
pub use config::Preprocessor;
pub use error::VlmError;
pub use search::{EarlyStopping, Generated, HfGenerateOptions};

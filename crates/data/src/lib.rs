//! Step one of the pipeline: caption datasets, text normalisation, the vocabulary and batching.
//!
//! - Readers for Flickr8k ([`flickr8k`]), its Kaggle CSV and user CSVs ([`captions_csv`]),
//!   MS-COCO ([`coco`]), Karpathy split files ([`karpathy`]) and user folders ([`folder`]), all
//!   into one [`Dataset`] plus a [`LoadReport`]; a [`DatasetSpec`] string (`coco:<file>@<dir>`)
//!   picks the reader. Each reader parses from `&str`/`&[u8]` as well as from files, and every
//!   error names its file and line or JSON path.
//! - [`Normalizer`]: the seeds' caption cleaning, step by step.
//! - [`Vocab`]: word ids with fixed specials, saved as a Hugging Face `tokenizer.json`.
//! - [`Batcher`]: seeded, resumable teacher-forcing batches.
//!
//! ```
//! use captioner_data::{Normalizer, Vocab, VocabConfig};
//! let norm = Normalizer::default();
//! let caps: Vec<String> = ["A dog 's ball .", "Two dogs run !"].iter().map(|c| norm.normalize(c)).collect();
//! let vocab = Vocab::build(caps.iter().map(String::as_str), &VocabConfig::default());
//! assert_eq!(vocab.decode(&vocab.encode(&caps[0])), "a dog ball");
//! ```

pub mod batch;
pub mod captions_csv;
pub mod coco;
pub mod dataset;
pub mod error;
pub mod flickr8k;
pub mod folder;
pub mod id;
pub mod karpathy;
pub mod spec;
pub mod text;
pub mod vocab;

pub use batch::{Batch, BatchConfig, BatchError, Batcher, EpochBatches, SamplingMode};
pub use dataset::{Dataset, ImageEntry, LoadReport};
pub use error::{DataError, Location};
pub use id::{ImageId, Split, UnknownSplit};
pub use spec::{DatasetSpec, SpecError};
pub use text::Normalizer;
pub use vocab::{Coverage, Vocab, VocabConfig};

//! `--dataset <spec>`: one string that names a dataset's format and where its files are.
//!
//! Grammar: `<kind>:<path>[@<images dir>]`, where `<kind>` is one of
//!
//! | spec | what |
//! |---|---|
//! | `flickr8k:<dir>` | a Flickr8k folder: `Flickr8k.token.txt`, `Flickr_8k.{train,dev,test}Images.txt`, `images/` |
//! | `flickr8k-csv:<captions.txt>[@<images dir>]` | the Kaggle Flickr8k CSV (`image,caption`) |
//! | `coco:<captions.json>[@<images dir>]` | MS-COCO caption annotations |
//! | `karpathy:<dataset.json>[@<images root>]` | a Karpathy split file; files are `root/filepath/filename` |
//! | `folder:<dir>` | your own folder with `captions.csv` or `captions.jsonl` |
//!
//! The images directory follows the **last** `@`, so a caption file's path may hold `@` but an
//! images directory may not. Without an images directory, image files are not checked. The
//! folder kinds (`flickr8k`, `folder`) take no `@`: their whole rest is the directory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::dataset::{Dataset, LoadReport};
use crate::error::Result;

/// The accepted forms, as shown to a user whose spec does not parse.
pub const FORMS: &str = "  flickr8k:<dir>                              Flickr8k folder (token file, split files, images/)
  flickr8k-csv:<captions.txt>[@<images dir>]  Kaggle Flickr8k CSV (image,caption)
  coco:<captions.json>[@<images dir>]         MS-COCO caption annotations
  karpathy:<dataset.json>[@<images root>]     Karpathy split file (dataset_*.json)
  folder:<dir>                                your folder with captions.csv or captions.jsonl";

/// Where a dataset is and in which format; see the module docs for the grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetSpec {
    Flickr8k {
        dir: PathBuf,
    },
    Flickr8kCsv {
        captions: PathBuf,
        images: Option<PathBuf>,
    },
    Coco {
        captions: PathBuf,
        images: Option<PathBuf>,
    },
    Karpathy {
        dataset: PathBuf,
        images: Option<PathBuf>,
    },
    Folder {
        dir: PathBuf,
    },
}

/// A spec that does not parse; its message lists every accepted form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid dataset spec {input:?}: {reason}; expected one of:\n{FORMS}")]
pub struct SpecError {
    pub input: String,
    pub reason: String,
}

impl DatasetSpec {
    /// The kind prefix (`coco`, `flickr8k-csv`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Flickr8k { .. } => "flickr8k",
            Self::Flickr8kCsv { .. } => "flickr8k-csv",
            Self::Coco { .. } => "coco",
            Self::Karpathy { .. } => "karpathy",
            Self::Folder { .. } => "folder",
        }
    }

    /// The images directory, when the spec gives or implies one.
    pub fn images_dir(&self) -> Option<PathBuf> {
        match self {
            Self::Flickr8k { dir } => Some(dir.join(crate::flickr8k::IMAGES_DIR)),
            Self::Folder { dir } => Some(dir.clone()),
            Self::Flickr8kCsv { images, .. }
            | Self::Coco { images, .. }
            | Self::Karpathy { images, .. } => images.clone(),
        }
    }

    /// Reads the dataset. Image files are checked when an images directory is known.
    pub fn load(&self) -> Result<(Dataset, LoadReport)> {
        match self {
            Self::Flickr8k { dir } => crate::flickr8k::load_dir(dir),
            Self::Flickr8kCsv { captions, images } => {
                crate::captions_csv::load(captions, images.as_deref())
            }
            Self::Coco { captions, images } => crate::coco::load(captions, images.as_deref()),
            Self::Karpathy { dataset, images } => crate::karpathy::load(dataset, images.as_deref()),
            Self::Folder { dir } => crate::folder::load_dir(dir),
        }
    }
}

impl FromStr for DatasetSpec {
    type Err = SpecError;

    fn from_str(input: &str) -> Result<Self, SpecError> {
        let fail = |reason: &str| SpecError {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        let (kind, rest) = input
            .split_once(':')
            .ok_or_else(|| fail("no `<kind>:` prefix"))?;
        let nonempty = |s: &str, what: &str| {
            if s.is_empty() {
                Err(fail(&format!("empty {what}")))
            } else {
                Ok(PathBuf::from(s))
            }
        };
        // Only the file kinds take `@<images dir>`, split at the last `@`.
        let with_images = |what: &str| -> Result<(PathBuf, Option<PathBuf>), SpecError> {
            match rest.rsplit_once('@') {
                Some((path, images)) => Ok((
                    nonempty(path, what)?,
                    Some(nonempty(images, "images directory after `@`")?),
                )),
                None => Ok((nonempty(rest, what)?, None)),
            }
        };
        match kind.trim().to_ascii_lowercase().as_str() {
            "flickr8k" => Ok(Self::Flickr8k {
                dir: nonempty(rest, "directory")?,
            }),
            "flickr8k-csv" => {
                let (captions, images) = with_images("captions file")?;
                Ok(Self::Flickr8kCsv { captions, images })
            }
            "coco" => {
                let (captions, images) = with_images("captions file")?;
                Ok(Self::Coco { captions, images })
            }
            "karpathy" => {
                let (dataset, images) = with_images("dataset file")?;
                Ok(Self::Karpathy { dataset, images })
            }
            "folder" => Ok(Self::Folder {
                dir: nonempty(rest, "directory")?,
            }),
            other => Err(fail(&format!("unknown kind {other:?}"))),
        }
    }
}

impl fmt::Display for DatasetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (path, images): (&Path, Option<&PathBuf>) = match self {
            Self::Flickr8k { dir } | Self::Folder { dir } => (dir, None),
            Self::Flickr8kCsv { captions, images } | Self::Coco { captions, images } => {
                (captions, images.as_ref())
            }
            Self::Karpathy { dataset, images } => (dataset, images.as_ref()),
        };
        write!(f, "{}:{}", self.kind(), path.display())?;
        if let Some(images) = images {
            write!(f, "@{}", images.display())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let cases = [
            (
                "flickr8k:../shared/data/flickr8k",
                DatasetSpec::Flickr8k {
                    dir: "../shared/data/flickr8k".into(),
                },
            ),
            (
                "flickr8k-csv:captions.txt",
                DatasetSpec::Flickr8kCsv {
                    captions: "captions.txt".into(),
                    images: None,
                },
            ),
            (
                "flickr8k-csv:c.txt@imgs",
                DatasetSpec::Flickr8kCsv {
                    captions: "c.txt".into(),
                    images: Some("imgs".into()),
                },
            ),
            (
                "coco:a@b/c.json@/data/val2017",
                DatasetSpec::Coco {
                    captions: "a@b/c.json".into(),
                    images: Some("/data/val2017".into()),
                },
            ),
            (
                "karpathy:dataset_coco.json@/coco",
                DatasetSpec::Karpathy {
                    dataset: "dataset_coco.json".into(),
                    images: Some("/coco".into()),
                },
            ),
            (
                "folder:my@photos",
                DatasetSpec::Folder {
                    dir: "my@photos".into(),
                },
            ),
            (
                "COCO:x.json",
                DatasetSpec::Coco {
                    captions: "x.json".into(),
                    images: None,
                },
            ),
        ];
        for (text, want) in cases {
            let got: DatasetSpec = text.parse().unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string().parse::<DatasetSpec>().unwrap(), want);
        }
    }

    #[test]
    fn errors_list_the_forms() {
        for bad in [
            "",
            "coco",
            "imagenet:/x",
            "coco:",
            "coco:x.json@",
            "folder:",
            "flickr8k-csv:@imgs",
        ] {
            let err = bad.parse::<DatasetSpec>().unwrap_err().to_string();
            assert!(
                err.contains("flickr8k:<dir>") && err.contains("folder:<dir>"),
                "{err}"
            );
        }
        let err = "imagenet:/x".parse::<DatasetSpec>().unwrap_err();
        assert_eq!(err.reason, "unknown kind \"imagenet\"");
    }
}

//! Andrej Karpathy's `dataset_{flickr8k,flickr30k,coco}.json` (from NeuralTalk): the splits
//! used by most captioning papers. Each entry of `images` has `filename`, an optional
//! `filepath` (COCO's `train2014`/`val2014`), `split` (`train`, `val`, `test`, `restval`),
//! `sentences[].raw` and, for COCO, `cocoid`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::dataset::{Builder, Dataset, LoadReport};
use crate::error::{self, DataError, Location, Result};
use crate::id::{ImageId, Split};

#[derive(Debug, Deserialize)]
struct KarpathyFile {
    images: Vec<KarpathyImage>,
}

#[derive(Debug, Deserialize)]
struct KarpathyImage {
    filename: String,
    #[serde(default)]
    filepath: Option<String>,
    split: Split,
    sentences: Vec<Sentence>,
    #[serde(default)]
    cocoid: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Sentence {
    raw: String,
}

/// Parses a Karpathy split file. The id is `cocoid` when present (so results match COCO's own
/// annotations, which number images) and the file name otherwise; the file is
/// `filepath/filename` under the images root.
pub fn from_str(
    text: &str,
    source: &str,
    images_root: Option<&Path>,
) -> Result<(Dataset, LoadReport)> {
    let mut de = serde_json::Deserializer::from_str(text);
    let file: KarpathyFile =
        serde_path_to_error::deserialize(&mut de).map_err(|e| error::json_error(source, e))?;
    de.end()
        .map_err(|e| DataError::parse(Location::new(source), e.to_string()))?;

    let mut builder = Builder::default();
    for (i, image) in file.images.iter().enumerate() {
        let id = match image.cocoid {
            Some(n) => ImageId::Int(n),
            None => ImageId::from(image.filename.as_str()),
        };
        if builder.index_of(&id).is_some() {
            return Err(DataError::parse(
                Location::json(source, format!("images[{i}]")),
                format!("image {id} appears twice"),
            ));
        }
        let file = match &image.filepath {
            Some(dir) => Path::new(dir).join(&image.filename),
            None => PathBuf::from(&image.filename),
        };
        let index = builder.image(id.clone(), || file);
        builder.set_split(index, Some(image.split));
        for sentence in &image.sentences {
            builder.add(id.clone(), PathBuf::new, &sentence.raw);
        }
    }
    Ok(builder.finish(images_root, source))
}

/// Same as [`from_str`] for raw bytes.
pub fn from_bytes(
    bytes: &[u8],
    source: &str,
    images_root: Option<&Path>,
) -> Result<(Dataset, LoadReport)> {
    from_str(error::str_from_bytes(bytes, source)?, source, images_root)
}

/// Loads a Karpathy split file; with `images_root`, images are checked at
/// `images_root/filepath/filename`.
pub fn load(path: &Path, images_root: Option<&Path>) -> Result<(Dataset, LoadReport)> {
    let text = error::read_to_string(path)?;
    from_str(&text, &path.display().to_string(), images_root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cocoid_wins_over_filename_and_filepath_joins() {
        let text = r#"{"dataset": "coco", "images": [
            {"filepath": "val2014", "filename": "x.jpg", "cocoid": 42, "split": "restval",
             "sentences": [{"raw": "A b.", "tokens": ["a", "b"]}]}]}"#;
        let (ds, _) = from_str(text, "k", None).unwrap();
        assert_eq!(ds.images[0].id, ImageId::Int(42));
        assert_eq!(ds.images[0].file, Path::new("val2014").join("x.jpg"));
        assert_eq!(ds.images[0].split, Some(Split::Restval));
    }

    #[test]
    fn bad_split_names_its_path() {
        let text = r#"{"images": [{"filename": "a.jpg", "split": "train", "sentences": []},
                                  {"filename": "b.jpg", "split": "holdout", "sentences": []}]}"#;
        let err = from_str(text, "k.json", None).unwrap_err();
        assert!(
            err.to_string()
                .contains("images[1].split: unknown variant `holdout`"),
            "{err}"
        );
        let text =
            r#"{"images": [{"filename": "a.jpg", "split": "train", "sentences": [{"raw": 1}]}]}"#;
        let err = from_str(text, "k.json", None).unwrap_err();
        assert!(
            err.to_string().contains("images[0].sentences[0].raw"),
            "{err}"
        );
    }
}

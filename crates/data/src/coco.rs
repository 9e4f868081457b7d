//! MS-COCO caption annotations (`captions_train2017.json`, `captions_val2017.json`):
//! `{"images": [{"id", "file_name", ...}], "annotations": [{"image_id", "caption", ...}]}`.
//! Other top-level keys (`info`, `licenses`) and fields are ignored.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::dataset::{Builder, Dataset, LoadReport};
use crate::error::{self, DataError, Location, Result};
use crate::id::ImageId;

#[derive(Debug, Deserialize)]
struct CocoFile {
    images: Vec<CocoImage>,
    annotations: Vec<CocoAnnotation>,
}

#[derive(Debug, Deserialize)]
struct CocoImage {
    id: ImageId,
    file_name: String,
}

#[derive(Debug, Deserialize)]
struct CocoAnnotation {
    image_id: ImageId,
    caption: String,
}

/// Parses COCO caption JSON. Syntax and type errors name the JSON path
/// (`annotations[17].caption`); an annotation whose `image_id` is not in `images` is an error at
/// `annotations[i].image_id`. Images come in `images` order; images without captions are
/// dropped. COCO files carry no split: every image's split is `None`.
pub fn from_str(
    text: &str,
    source: &str,
    images_dir: Option<&Path>,
) -> Result<(Dataset, LoadReport)> {
    let mut de = serde_json::Deserializer::from_str(text);
    let file: CocoFile =
        serde_path_to_error::deserialize(&mut de).map_err(|e| error::json_error(source, e))?;
    de.end()
        .map_err(|e| DataError::parse(Location::new(source), e.to_string()))?;

    let mut builder = Builder::default();
    for (i, image) in file.images.iter().enumerate() {
        if builder.index_of(&image.id).is_some() {
            return Err(DataError::parse(
                Location::json(source, format!("images[{i}].id")),
                format!("image id {} appears twice", image.id),
            ));
        }
        builder.image(image.id.clone(), || PathBuf::from(&image.file_name));
    }
    for (i, ann) in file.annotations.iter().enumerate() {
        if builder.index_of(&ann.image_id).is_none() {
            return Err(DataError::parse(
                Location::json(source, format!("annotations[{i}].image_id")),
                format!("no image with id {} in `images`", ann.image_id),
            ));
        }
        builder.add(ann.image_id.clone(), PathBuf::new, &ann.caption);
    }
    Ok(builder.finish(images_dir, source))
}

/// Same as [`from_str`] for raw bytes.
pub fn from_bytes(
    bytes: &[u8],
    source: &str,
    images_dir: Option<&Path>,
) -> Result<(Dataset, LoadReport)> {
    from_str(error::str_from_bytes(bytes, source)?, source, images_dir)
}

/// Loads a COCO caption file; with `images_dir`, images whose `file_name` is missing there are
/// dropped and reported.
pub fn load(path: &Path, images_dir: Option<&Path>) -> Result<(Dataset, LoadReport)> {
    let text = error::read_to_string(path)?;
    from_str(&text, &path.display().to_string(), images_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"{"info": {}, "images": [{"id": 2, "file_name": "b.jpg"}, {"id": 1, "file_name": "a.jpg", "width": 3}],
        "annotations": [{"image_id": 1, "id": 10, "caption": "A cat."}, {"image_id": 2, "id": 11, "caption": "A dog."},
                        {"image_id": 1, "id": 12, "caption": "Another cat."}]}"#;

    #[test]
    fn reads_images_and_annotations() {
        let (ds, report) = from_str(SMALL, "c.json", None).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.images[0].id, ImageId::Int(2));
        assert_eq!(ds.images[1].captions, ["A cat.", "Another cat."]);
        assert_eq!(ds.images[1].file, PathBuf::from("a.jpg"));
        assert_eq!(report.captions, 3);
    }

    #[test]
    fn errors_name_the_json_path() {
        let bad = SMALL.replace(r#""caption": "A dog.""#, r#""caption": 5"#);
        let err = from_str(&bad, "c.json", None).unwrap_err();
        assert!(
            err.to_string()
                .contains("annotations[1].caption: invalid type"),
            "{err}"
        );
        let bad = SMALL.replace(r#""image_id": 2"#, r#""image_id": 9"#);
        let err = from_str(&bad, "c.json", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "c.json: annotations[1].image_id: no image with id 9 in `images`"
        );
        let err = from_str(
            r#"{"images": [{"id": -3, "file_name": "x"}], "annotations": []}"#,
            "c",
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("images[0].id"), "{err}");
        let err = from_str("{\n\"images\": [,]}", "c.json", None).unwrap_err();
        assert!(err.to_string().starts_with("c.json:2:"), "{err}");
        let err = from_str(r#"{"images": []}"#, "c.json", None).unwrap_err();
        assert!(
            err.to_string().contains("missing field `annotations`"),
            "{err}"
        );
        let err = from_str(r#"{"images": [], "annotations": []} x"#, "c.json", None).unwrap_err();
        assert!(err.to_string().contains("trailing"), "{err}");
    }
}

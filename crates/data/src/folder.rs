//! A user's own folder of images with one caption file beside them:
//!
//! - `captions.csv`: a header row `image,caption` plus an optional `split` column;
//! - `captions.jsonl`: one `{"image": ..., "caption": ..., "split": ...}` object per line
//!   (`split` optional or null; `image` a path string, or an integer id whose file is its
//!   decimal name).
//!
//! `image` is a path relative to the folder (`cat.jpg`, `photos/cat.jpg`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::captions_csv;
use crate::dataset::{Builder, Dataset, LoadReport};
use crate::error::{self, DataError, Location, Result};
use crate::id::{ImageId, Split};

pub const CSV_FILE: &str = "captions.csv";
pub const JSONL_FILE: &str = "captions.jsonl";

/// One parsed line of `captions.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct JsonlRow {
    pub image: ImageId,
    pub caption: String,
    #[serde(default)]
    pub split: Option<Split>,
    /// 1-based line in the file (not part of the JSON).
    #[serde(skip)]
    pub line: u64,
}

/// Parses `captions.jsonl` text. Blank lines are skipped; a bad line is an error naming the
/// line and the field (`captions.jsonl:4: caption: invalid type: ...`).
pub fn parse_jsonl(text: &str, source: &str) -> Result<Vec<JsonlRow>> {
    let mut rows = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i as u64 + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let mut de = serde_json::Deserializer::from_str(raw);
        let mut row: JsonlRow = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let mut err = error::json_error(source, e);
            // serde_json counts lines within this one line; the file line is what helps.
            if let DataError::Parse { location, .. } = &mut err {
                location.line = Some(line);
            }
            err
        })?;
        de.end()
            .map_err(|e| DataError::parse(Location::line(source, line), e.to_string()))?;
        row.line = line;
        rows.push(row);
    }
    Ok(rows)
}

/// Same as [`parse_jsonl`] for raw bytes.
pub fn parse_jsonl_bytes(bytes: &[u8], source: &str) -> Result<Vec<JsonlRow>> {
    parse_jsonl(error::str_from_bytes(bytes, source)?, source)
}

/// Groups JSONL rows into a dataset; an image whose rows disagree on the split is an error.
pub fn dataset_from_jsonl(
    rows: &[JsonlRow],
    source: &str,
    images_dir: Option<&Path>,
) -> Result<(Dataset, LoadReport)> {
    let mut builder = Builder::default();
    for row in rows {
        let index = builder.add(
            row.image.clone(),
            || PathBuf::from(row.image.to_string()),
            &row.caption,
        );
        if let Some(split) = row.split {
            builder.assign_split(index, split, Location::line(source, row.line))?;
        }
    }
    Ok(builder.finish(images_dir, source))
}

/// Loads a folder holding exactly one of [`CSV_FILE`] and [`JSONL_FILE`]; images are checked
/// relative to the folder.
pub fn load_dir(dir: &Path) -> Result<(Dataset, LoadReport)> {
    let csv = dir.join(CSV_FILE);
    let jsonl = dir.join(JSONL_FILE);
    match (csv.is_file(), jsonl.is_file()) {
        (true, false) => captions_csv::load(&csv, Some(dir)),
        (false, true) => {
            let text = error::read_to_string(&jsonl)?;
            let source = jsonl.display().to_string();
            let rows = parse_jsonl(&text, &source)?;
            dataset_from_jsonl(&rows, &source, Some(dir))
        }
        (true, true) => Err(DataError::Dataset {
            path: dir.to_owned(),
            message: format!("holds both {CSV_FILE} and {JSONL_FILE}; keep one"),
        }),
        (false, false) => Err(DataError::Dataset {
            path: dir.to_owned(),
            message: format!("no {CSV_FILE} or {JSONL_FILE} in this folder"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_rows() {
        let text = "{\"image\": \"a.jpg\", \"caption\": \"A dog\", \"split\": \"train\"}\n\n\
                    {\"image\": 7, \"caption\": \"seven\", \"split\": null, \"extra\": 1}\n";
        let rows = parse_jsonl(text, "c.jsonl").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].split, Some(Split::Train));
        assert_eq!(rows[1].image, ImageId::Int(7));
        assert_eq!(rows[1].line, 3);
        let (ds, _) = dataset_from_jsonl(&rows, "c", None).unwrap();
        assert_eq!(ds.images[1].file, PathBuf::from("7"));
    }

    #[test]
    fn jsonl_errors_name_line_and_field() {
        let text =
            "{\"image\": \"a.jpg\", \"caption\": \"ok\"}\n{\"image\": \"b.jpg\", \"caption\": 5}\n";
        let err = parse_jsonl(text, "c.jsonl").unwrap_err();
        assert!(err.to_string().starts_with("c.jsonl:2:"), "{err}");
        assert!(err.to_string().contains("caption: invalid type"), "{err}");
        let err = parse_jsonl("{\"image\": \"a\"}", "c.jsonl").unwrap_err();
        assert!(err.to_string().contains("missing field `caption`"), "{err}");
        let err = parse_jsonl("{\"image\": \"a\", \"caption\": \"x\"} {}", "c.jsonl").unwrap_err();
        assert!(err.to_string().starts_with("c.jsonl:1"), "{err}");
        let err = parse_jsonl(
            "{\"image\":\"a\",\"caption\":\"x\",\"split\":\"nope\"}",
            "j",
        )
        .unwrap_err();
        assert!(err.to_string().contains("split: unknown variant"), "{err}");
    }

    #[test]
    fn folder_needs_exactly_one_caption_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_dir(dir.path())
            .unwrap_err()
            .to_string()
            .contains("no captions.csv"));
        std::fs::write(dir.path().join("cat.jpg"), b"x").unwrap();
        std::fs::write(
            dir.path().join(CSV_FILE),
            "image,caption,split\ncat.jpg,a cat,test\ndog.jpg,a dog,\n",
        )
        .unwrap();
        let (ds, report) = load_dir(dir.path()).unwrap();
        assert_eq!(ds.len(), 1);
        assert_eq!(ds.images[0].split, Some(Split::Test));
        assert_eq!(report.missing_images, vec![ImageId::from("dog.jpg")]);
        std::fs::write(dir.path().join(JSONL_FILE), "").unwrap();
        assert!(load_dir(dir.path())
            .unwrap_err()
            .to_string()
            .contains("both"));
    }
}

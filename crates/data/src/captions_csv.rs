//! Caption tables in CSV: the Kaggle Flickr8k `captions.txt` (`image,caption`) and a user
//! folder's `captions.csv` (`image,caption[,split]`). Both are one row per caption; captions
//! hold commas and quotes, so the `csv` crate does the quoting rules.

use std::path::{Path, PathBuf};

use crate::dataset::{Builder, Dataset, LoadReport};
use crate::error::{DataError, Location, Result};
use crate::id::{ImageId, Split};

/// One caption row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptionRow {
    /// The image path relative to the images directory.
    pub image: String,
    pub caption: String,
    /// From the optional `split` column; an empty cell is `None`.
    pub split: Option<Split>,
    /// 1-based line where the row starts.
    pub line: u64,
}

fn csv_error(source: &str, err: &csv::Error) -> DataError {
    let location = match err.position() {
        Some(pos) => Location::line(source, pos.line()),
        None => Location::new(source),
    };
    // csv's own message repeats the position; keep only the part after it when present.
    let message = match err.kind() {
        csv::ErrorKind::Utf8 { err, .. } => format!("not valid UTF-8 in field {}", err.field() + 1),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!(
            "{len} field(s) where the header has {expected_len} (quote captions that hold commas)"
        ),
        _ => err.to_string(),
    };
    DataError::parse(location, message)
}

/// Parses a caption CSV with a header row naming at least `image` and `caption` (any order,
/// any case, extra columns ignored) and optionally `split`.
pub fn parse_csv(bytes: &[u8], source: &str) -> Result<Vec<CaptionRow>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(bytes);
    let headers = reader.headers().map_err(|e| csv_error(source, &e))?.clone();
    let column = |name: &str| {
        headers.iter().position(|h| {
            h.trim()
                .trim_start_matches('\u{feff}')
                .eq_ignore_ascii_case(name)
        })
    };
    let missing = |name: &str| {
        DataError::parse(
            Location::line(source, 1),
            format!(
                "the header row has no `{name}` column (found {:?}; expected `image,caption[,split]`)",
                headers.iter().collect::<Vec<_>>()
            ),
        )
    };
    let image_col = column("image").ok_or_else(|| missing("image"))?;
    let caption_col = column("caption").ok_or_else(|| missing("caption"))?;
    let split_col = column("split");

    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(source, &e))?;
        let line = record.position().map_or(0, |p| p.line());
        let field = |i: usize| record.get(i).unwrap_or("");
        let image = field(image_col).trim();
        if image.is_empty() {
            return Err(DataError::parse(
                Location::line(source, line),
                "empty `image` field",
            ));
        }
        let split = match split_col.map(field).map(str::trim) {
            None | Some("") => None,
            Some(s) => Some(
                s.parse::<Split>()
                    .map_err(|e| DataError::parse(Location::line(source, line), e.to_string()))?,
            ),
        };
        rows.push(CaptionRow {
            image: image.to_owned(),
            caption: field(caption_col).to_owned(),
            split,
            line,
        });
    }
    Ok(rows)
}

/// Groups rows into images (first-mention order). An image whose rows disagree on its split is
/// an error at the first disagreeing row.
pub fn dataset_from_rows(
    rows: &[CaptionRow],
    source: &str,
    images_dir: Option<&Path>,
) -> Result<(Dataset, LoadReport)> {
    let mut builder = Builder::default();
    for row in rows {
        let index = builder.add(
            ImageId::from(row.image.as_str()),
            || PathBuf::from(&row.image),
            &row.caption,
        );
        if let Some(split) = row.split {
            builder.assign_split(index, split, Location::line(source, row.line))?;
        }
    }
    Ok(builder.finish(images_dir, source))
}

/// Parses caption CSV bytes into a dataset.
pub fn from_bytes(
    bytes: &[u8],
    source: &str,
    images_dir: Option<&Path>,
) -> Result<(Dataset, LoadReport)> {
    let rows = parse_csv(bytes, source)?;
    dataset_from_rows(&rows, source, images_dir)
}

/// Loads a caption CSV file; image paths are relative to `images_dir` when given.
pub fn load(path: &Path, images_dir: Option<&Path>) -> Result<(Dataset, LoadReport)> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    from_bytes(&bytes, &path.display().to_string(), images_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_commas_quotes_and_newlines() {
        let text = "image,caption\n\
                    a.jpg,\"A dog, running .\"\n\
                    a.jpg,\"He said \"\"hi\"\" .\"\n\
                    b.jpg,\"two\nlines\"\n\
                    b.jpg,plain\n";
        let rows = parse_csv(text.as_bytes(), "captions.txt").unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].caption, "A dog, running .");
        assert_eq!(rows[1].caption, "He said \"hi\" .");
        assert_eq!(rows[2].caption, "two\nlines");
        assert_eq!(rows[3].line, 6);
    }

    #[test]
    fn header_in_any_order_with_split_and_bom() {
        let text = "\u{feff}Split,Caption,Image,extra\ntrain,a cat,c.jpg,x\n,another,d.jpg,y\n";
        let rows = parse_csv(text.as_bytes(), "f").unwrap();
        assert_eq!(rows[0].split, Some(Split::Train));
        assert_eq!(rows[0].image, "c.jpg");
        assert_eq!(rows[1].split, None);
    }

    #[test]
    fn errors_point_at_lines() {
        let err = parse_csv(b"image,caption\na.jpg,ok\nb.jpg,a, b\n", "c.csv").unwrap_err();
        assert!(err.to_string().starts_with("c.csv:3: 3 field(s)"), "{err}");
        let err = parse_csv(b"img,caption\n", "c.csv").unwrap_err();
        assert!(err.to_string().contains("no `image` column"), "{err}");
        let err = parse_csv(b"image,caption,split\na.jpg,x,training\n", "c.csv").unwrap_err();
        assert!(
            err.to_string().starts_with("c.csv:2: unknown split"),
            "{err}"
        );
        let err = parse_csv(b"image,caption\n,x\n", "c.csv").unwrap_err();
        assert_eq!(err.to_string(), "c.csv:2: empty `image` field");
        let err = parse_csv(b"image,caption\na.jpg,\xff\n", "c.csv").unwrap_err();
        assert!(
            err.to_string().starts_with("c.csv:2: not valid UTF-8"),
            "{err}"
        );
        let err = parse_csv(b"", "c.csv").unwrap_err();
        assert!(err.to_string().contains("no `image` column"), "{err}");
    }

    #[test]
    fn conflicting_splits() {
        let rows = parse_csv(b"image,caption,split\na.jpg,x,train\na.jpg,y,test\n", "c").unwrap();
        let err = dataset_from_rows(&rows, "c", None).unwrap_err();
        assert_eq!(err.to_string(), "c:3: a.jpg is already in the train split");
    }
}

//! Flickr8k (Hodosh, Young & Hockenmaier, JAIR 2013) in its original layout: a token file of
//! `<image>.jpg#<n>\t<caption>` lines and three split files listing one image name per line.
//! The Kaggle `captions.txt` CSV of the same corpus is read by [`crate::captions_csv`].

use std::path::{Path, PathBuf};

use crate::dataset::{Builder, Dataset, LoadReport};
use crate::error::{self, DataError, Location, Result};
use crate::id::{ImageId, Split};

/// The token file's name in a Flickr8k directory.
pub const TOKEN_FILE: &str = "Flickr8k.token.txt";
/// The split files' names in a Flickr8k directory; dev is the validation split.
pub const SPLIT_FILES: [(Split, &str); 3] = [
    (Split::Train, "Flickr_8k.trainImages.txt"),
    (Split::Val, "Flickr_8k.devImages.txt"),
    (Split::Test, "Flickr_8k.testImages.txt"),
];
/// The images folder inside a Flickr8k directory.
pub const IMAGES_DIR: &str = "images";

/// One line of the token file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenLine<'a> {
    /// The image file name (the part before `#`).
    pub image: &'a str,
    /// The caption number after `#` (0..4 in the real file).
    pub number: u32,
    pub caption: &'a str,
    /// 1-based line in the file.
    pub line: u64,
}

/// Parses a token file. Blank lines are skipped; anything else that is not
/// `<image>#<number>\t<caption>` is an error naming the line.
pub fn parse_tokens<'a>(text: &'a str, source: &str) -> Result<Vec<TokenLine<'a>>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i as u64 + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw.trim().is_empty() {
            continue;
        }
        let bad = |message: &str| {
            DataError::parse(
                Location::line(source, line),
                format!("{message}; expected `<image>#<number><TAB><caption>`"),
            )
        };
        let (key, caption) = raw.split_once('\t').ok_or_else(|| bad("no tab"))?;
        let (image, number) = key
            .rsplit_once('#')
            .ok_or_else(|| bad("no `#` before the tab"))?;
        let image = image.trim();
        if image.is_empty() {
            return Err(bad("empty image name"));
        }
        let number: u32 = number
            .trim()
            .parse()
            .map_err(|_| bad(&format!("caption number {number:?} is not a number")))?;
        out.push(TokenLine {
            image,
            number,
            caption,
            line,
        });
    }
    Ok(out)
}

/// Same as [`parse_tokens`] for raw bytes (invalid UTF-8 is an error naming the line).
pub fn parse_tokens_bytes<'a>(bytes: &'a [u8], source: &str) -> Result<Vec<TokenLine<'a>>> {
    parse_tokens(error::str_from_bytes(bytes, source)?, source)
}

/// Parses a split file: one image name per line, blank lines skipped. A line with inner
/// whitespace is an error, since no Flickr8k file name has any and it usually means a token
/// file was passed by mistake.
pub fn parse_split_list<'a>(text: &'a str, source: &str) -> Result<Vec<(&'a str, u64)>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let name = raw.trim();
        if name.is_empty() {
            continue;
        }
        if name.contains(char::is_whitespace) {
            return Err(DataError::parse(
                Location::line(source, i as u64 + 1),
                format!("{name:?} is not an image file name (split files list one per line)"),
            ));
        }
        out.push((name, i as u64 + 1));
    }
    Ok(out)
}

/// Builds a dataset from a token file's text and the split files' texts (`(split, source name,
/// text)`); with `images_dir`, captions of images without a file are dropped and reported.
pub fn from_strs(
    tokens: &str,
    tokens_source: &str,
    splits: &[(Split, &str, &str)],
    images_dir: Option<&Path>,
) -> Result<(Dataset, LoadReport)> {
    let mut builder = Builder::default();
    for t in parse_tokens(tokens, tokens_source)? {
        builder.add(ImageId::from(t.image), || PathBuf::from(t.image), t.caption);
    }
    let mut without_captions = 0;
    for &(split, source, text) in splits {
        for (name, line) in parse_split_list(text, source)? {
            let Some(index) = builder.index_of(&ImageId::from(name)) else {
                without_captions += 1;
                continue;
            };
            builder.assign_split(index, split, Location::line(source, line))?;
        }
    }
    let (dataset, mut report) = builder.finish(images_dir, tokens_source);
    report.split_entries_without_captions = without_captions;
    if without_captions > 0 {
        tracing::warn!("{tokens_source}: {without_captions} split-file entries have no captions");
    }
    Ok((dataset, report))
}

/// Loads a Flickr8k directory: [`TOKEN_FILE`], the [`SPLIT_FILES`] (each optional: images of a
/// missing split file get no split) and, if present, [`IMAGES_DIR`] for the file check.
pub fn load_dir(dir: &Path) -> Result<(Dataset, LoadReport)> {
    let token_path = dir.join(TOKEN_FILE);
    let tokens = error::read_to_string(&token_path)?;
    let mut split_texts = Vec::new();
    for (split, name) in SPLIT_FILES {
        let path = dir.join(name);
        if path.is_file() {
            split_texts.push((
                split,
                path.display().to_string(),
                error::read_to_string(&path)?,
            ));
        } else {
            tracing::warn!("{}: not found; its images get no split", path.display());
        }
    }
    let splits: Vec<(Split, &str, &str)> = split_texts
        .iter()
        .map(|(s, src, text)| (*s, src.as_str(), text.as_str()))
        .collect();
    let images = dir.join(IMAGES_DIR);
    let images = images.is_dir().then_some(images);
    from_strs(
        &tokens,
        &token_path.display().to_string(),
        &splits,
        images.as_deref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKENS: &str = "a.jpg#0\tA dog .\na.jpg#1\tA brown dog .\r\n\nb.jpg#0\tA cat , sitting .\nc.jpg.1#0\tOdd one\n";

    #[test]
    fn parses_lines_and_numbers() {
        let lines = parse_tokens(TOKENS, "t").unwrap();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[1].caption, "A brown dog .");
        assert_eq!(lines[2].line, 4);
        assert_eq!(lines[3].image, "c.jpg.1");
    }

    #[test]
    fn errors_name_file_and_line() {
        let err = parse_tokens("a.jpg#0\tok\nbroken line\n", "Flickr8k.token.txt").unwrap_err();
        assert!(
            err.to_string().starts_with("Flickr8k.token.txt:2: no tab"),
            "{err}"
        );
        let err = parse_tokens("a.jpg#x\tok\n", "f").unwrap_err();
        assert!(err.to_string().contains("f:1: caption number"), "{err}");
        let err = parse_tokens("#0\tok\n", "f").unwrap_err();
        assert!(err.to_string().contains("empty image name"), "{err}");
        let err = parse_tokens_bytes(b"a.jpg#0\tok\n\xff#0\tx", "f").unwrap_err();
        assert_eq!(err.to_string(), "f:2: not valid UTF-8");
    }

    #[test]
    fn splits_and_missing_images() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["a.jpg", "b.jpg"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let splits = [
            (Split::Train, "train", "a.jpg\nzzz.jpg\n"),
            (Split::Test, "test", "b.jpg"),
        ];
        let (ds, report) = from_strs(TOKENS, "t", &splits, Some(dir.path())).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.images[0].split, Some(Split::Train));
        assert_eq!(ds.images[1].split, Some(Split::Test));
        assert_eq!(report.missing_images, vec![ImageId::from("c.jpg.1")]);
        assert_eq!(report.split_entries_without_captions, 1);
        assert_eq!(report.captions, 3);
    }

    #[test]
    fn image_in_two_splits_is_an_error() {
        let splits = [
            (Split::Train, "train", "a.jpg"),
            (Split::Test, "test", "\na.jpg"),
        ];
        let err = from_strs(TOKENS, "t", &splits, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "test:2: a.jpg is already in the train split"
        );
    }
}

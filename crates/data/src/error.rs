//! Errors of the data crate. Every parse error carries a [`Location`] so that a user can go
//! straight to the offending line or JSON field, as ripgrep's errors do.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where in an input a problem is: a file (or `<input>` for in-memory text) plus a 1-based line
/// and/or a JSON path such as `annotations[17].caption`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file name as given by the user, or `<input>` when parsing from memory.
    pub source: String,
    /// 1-based line number, when the format is line-oriented or the JSON parser knows it.
    pub line: Option<u64>,
    /// 1-based column, when known (JSON syntax errors).
    pub column: Option<u64>,
    /// JSON path of the offending value (`images[3].sentences[0].raw`).
    pub json_path: Option<String>,
}

impl Location {
    pub fn new(source: &str) -> Self {
        Self {
            source: source.to_owned(),
            line: None,
            column: None,
            json_path: None,
        }
    }

    pub fn line(source: &str, line: u64) -> Self {
        Self {
            line: Some(line),
            ..Self::new(source)
        }
    }

    pub fn json(source: &str, path: impl Into<String>) -> Self {
        Self {
            json_path: Some(path.into()),
            ..Self::new(source)
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if let Some(path) = &self.json_path {
            // `.` is what serde_path_to_error prints for the document root: it says nothing.
            if !path.is_empty() && path != "." {
                write!(f, ": {path}")?;
            }
        }
        Ok(())
    }
}

/// Everything that can go wrong while reading a dataset or a vocabulary.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{location}: {message}")]
    Parse { location: Location, message: String },
    #[error("{0}")]
    Spec(#[from] crate::spec::SpecError),
    #[error("{}: {message}", path.display())]
    Dataset { path: PathBuf, message: String },
}

impl DataError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn parse(location: Location, message: impl Into<String>) -> Self {
        Self::Parse {
            location,
            message: message.into(),
        }
    }

    /// The location of a parse error, for tests and tools that point at it.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Self::Parse { location, .. } => Some(location),
            _ => None,
        }
    }
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Reads a whole file as UTF-8, naming the file in the error.
pub(crate) fn read_to_string(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        let line = bytes_line(e.as_bytes(), e.utf8_error().valid_up_to());
        DataError::parse(
            Location::line(&path.display().to_string(), line),
            "not valid UTF-8",
        )
    })
}

/// Decodes in-memory bytes as UTF-8 with the same error as a file would give.
pub(crate) fn str_from_bytes<'a>(bytes: &'a [u8], source: &str) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|e| {
        DataError::parse(
            Location::line(source, bytes_line(bytes, e.valid_up_to())),
            "not valid UTF-8",
        )
    })
}

/// 1-based line of byte offset `at`.
fn bytes_line(bytes: &[u8], at: usize) -> u64 {
    let end = at.min(bytes.len());
    bytes
        .get(..end)
        .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count()) as u64
        + 1
}

/// Turns a serde_json error (with the path serde_path_to_error tracked) into a located error.
pub(crate) fn json_error(
    source: &str,
    err: serde_path_to_error::Error<serde_json::Error>,
) -> DataError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    let mut location = Location::json(source, path);
    if inner.line() > 0 {
        location.line = Some(inner.line() as u64);
        location.column = Some(inner.column() as u64);
    }
    // serde_json appends " at line X column Y"; the location already says it.
    let message = inner.to_string();
    let message = match message.rfind(" at line ") {
        Some(i) => message.get(..i).unwrap_or(&message).to_owned(),
        None => message,
    };
    DataError::parse(location, message)
}

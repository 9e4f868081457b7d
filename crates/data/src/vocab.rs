//! The word vocabulary, saved as a Hugging Face `tokenizer.json` (WordLevel model,
//! WhitespaceSplit pre-tokenizer) so that Rust and Python `tokenizers` read the same ids.
//!
//! Ids are fixed: `<pad>` = 0, `<start>` = 1, `<end>` = 2, `<unk>` = 3, then words by count
//! (descending) with ties broken by the word (ascending), so the same captions always give the
//! same file. Padding being 0 lets a batch start as zeros; the order of the other three is the
//! seeds' and never changes, so a decoder trained against one vocabulary file keeps its meaning.

use std::collections::HashMap;
use std::path::Path;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::error::{self, DataError, Location, Result};

pub const PAD: &str = "<pad>";
pub const START: &str = "<start>";
pub const END: &str = "<end>";
pub const UNK: &str = "<unk>";
/// The special tokens in id order.
pub const SPECIALS: [&str; 4] = [PAD, START, END, UNK];

/// How many words to keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VocabConfig {
    /// Keep at most this many words (specials not counted: the vocabulary size is this + 4).
    pub max_words: Option<usize>,
    /// Keep only words seen at least this often (1 keeps every word).
    pub min_count: u64,
}

impl Default for VocabConfig {
    fn default() -> Self {
        Self {
            max_words: None,
            min_count: 1,
        }
    }
}

/// Share of corpus tokens the vocabulary knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    pub tokens: u64,
    pub known: u64,
}

impl Coverage {
    /// `known / tokens`; 1.0 for an empty corpus (nothing was missed).
    pub fn ratio(&self) -> f64 {
        if self.tokens == 0 {
            1.0
        } else {
            self.known as f64 / self.tokens as f64
        }
    }
}

/// A word-level vocabulary: id → word and back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocab {
    words: Vec<String>,
    index: HashMap<String, u32>,
}

impl Vocab {
    pub const PAD_ID: u32 = 0;
    pub const START_ID: u32 = 1;
    pub const END_ID: u32 = 2;
    pub const UNK_ID: u32 = 3;

    /// Counts whitespace-separated words of already normalised captions (see
    /// [`crate::Normalizer`]) and keeps those `config` allows. Words spelled like a special
    /// token are not counted: they already have an id.
    pub fn build<'a>(captions: impl IntoIterator<Item = &'a str>, config: &VocabConfig) -> Self {
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for caption in captions {
            for word in caption.split_whitespace() {
                *counts.entry(word).or_insert(0) += 1;
            }
        }
        let mut ranked: Vec<(&str, u64)> = counts
            .into_iter()
            .filter(|(w, c)| *c >= config.min_count && !SPECIALS.contains(w))
            .collect();
        ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        if let Some(max) = config.max_words {
            ranked.truncate(max);
        }
        Self::from_words(ranked.into_iter().map(|(w, _)| w))
    }

    /// A vocabulary of the specials followed by `words` in order (duplicates and specials
    /// skipped).
    pub fn from_words<'a>(words: impl IntoIterator<Item = &'a str>) -> Self {
        let mut vocab = Self {
            words: Vec::new(),
            index: HashMap::new(),
        };
        for word in SPECIALS.into_iter().chain(words) {
            if !vocab.index.contains_key(word) {
                vocab
                    .index
                    .insert(word.to_owned(), vocab.words.len() as u32);
                vocab.words.push(word.to_owned());
            }
        }
        vocab
    }

    /// Number of ids, specials included.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Never true: the specials are always there.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    pub fn id(&self, word: &str) -> Option<u32> {
        self.index.get(word).copied()
    }

    pub fn word(&self, id: u32) -> Option<&str> {
        self.words.get(id as usize).map(String::as_str)
    }

    /// Words in id order, specials first.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// Ids of a normalised caption's words, `<unk>` for unknown ones; no markers added.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        text.split_whitespace()
            .map(|w| self.id(w).unwrap_or(Self::UNK_ID))
            .collect()
    }

    /// Caption text from ids: skips `<pad>` and `<start>`, stops at the first `<end>`, and
    /// spells unknown ids as `<unk>`.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out = Vec::new();
        for &id in ids {
            match id {
                Self::END_ID => break,
                Self::PAD_ID | Self::START_ID => {}
                _ => out.push(self.word(id).unwrap_or(UNK)),
            }
        }
        out.join(" ")
    }

    /// How many of the normalised captions' words are in the vocabulary.
    pub fn coverage<'a>(&self, captions: impl IntoIterator<Item = &'a str>) -> Coverage {
        let mut cov = Coverage::default();
        for caption in captions {
            for word in caption.split_whitespace() {
                cov.tokens += 1;
                if self.index.get(word).is_some_and(|&id| id != Self::UNK_ID) {
                    cov.known += 1;
                }
            }
        }
        cov
    }

    /// The Hugging Face `tokenizer.json` text.
    pub fn to_tokenizer_json(&self) -> String {
        let added: Vec<AddedToken> = SPECIALS
            .iter()
            .enumerate()
            .map(|(id, content)| AddedToken {
                id: id as u32,
                content,
                single_word: false,
                lstrip: false,
                rstrip: false,
                normalized: false,
                special: true,
            })
            .collect();
        let file = TokenizerOut {
            version: "1.0",
            truncation: None,
            padding: None,
            added_tokens: added,
            normalizer: None,
            pre_tokenizer: TypeOnly {
                kind: "WhitespaceSplit",
            },
            post_processor: None,
            decoder: None,
            model: ModelOut {
                kind: "WordLevel",
                vocab: IdOrdered(&self.words),
                unk_token: UNK,
            },
        };
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_string_pretty(&file).unwrap_or_default()
    }

    /// Reads a `tokenizer.json` with a WordLevel model. Ids must be dense (0..n) and the
    /// specials must hold ids 0..3, since batches and trained models rely on them.
    pub fn from_tokenizer_json(text: &str, source: &str) -> Result<Self> {
        let mut de = serde_json::Deserializer::from_str(text);
        let file: TokenizerIn =
            serde_path_to_error::deserialize(&mut de).map_err(|e| error::json_error(source, e))?;
        let at =
            |path: &str, message: String| DataError::parse(Location::json(source, path), message);
        if file.model.kind != "WordLevel" {
            return Err(at(
                "model.type",
                format!("{:?} is not a WordLevel model", file.model.kind),
            ));
        }
        if file.model.unk_token != UNK {
            return Err(at(
                "model.unk_token",
                format!("expected {UNK:?}, found {:?}", file.model.unk_token),
            ));
        }
        let n = file.model.vocab.len();
        let mut words: Vec<Option<String>> = vec![None; n];
        for (word, id) in file.model.vocab {
            match words.get_mut(id as usize) {
                Some(slot @ None) => *slot = Some(word),
                Some(Some(other)) => {
                    return Err(at(
                        "model.vocab",
                        format!("id {id} is used by both {other:?} and {word:?}"),
                    ))
                }
                None => {
                    return Err(at(
                        "model.vocab",
                        format!("id {id} of {word:?} is out of range: ids must be 0..{n}"),
                    ))
                }
            }
        }
        // Every slot is filled: n distinct ids in 0..n.
        let words: Vec<String> = words.into_iter().flatten().collect();
        for (id, special) in SPECIALS.iter().enumerate() {
            if words.get(id).map(String::as_str) != Some(*special) {
                return Err(at("model.vocab", format!("{special} must have id {id}")));
            }
        }
        let index = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as u32))
            .collect();
        Ok(Self { words, index })
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_tokenizer_json()).map_err(|e| DataError::io(path, e))
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = error::read_to_string(path)?;
        Self::from_tokenizer_json(&text, &path.display().to_string())
    }
}

#[derive(Serialize)]
struct TokenizerOut<'a> {
    version: &'a str,
    truncation: Option<()>,
    padding: Option<()>,
    added_tokens: Vec<AddedToken<'a>>,
    normalizer: Option<()>,
    pre_tokenizer: TypeOnly<'a>,
    post_processor: Option<()>,
    decoder: Option<()>,
    model: ModelOut<'a>,
}

#[derive(Serialize)]
struct AddedToken<'a> {
    id: u32,
    content: &'a str,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    normalized: bool,
    special: bool,
}

#[derive(Serialize)]
struct TypeOnly<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
}

#[derive(Serialize)]
struct ModelOut<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    vocab: IdOrdered<'a>,
    unk_token: &'a str,
}

/// Writes the vocab map in id order, as Hugging Face does, so the file reads top-down.
struct IdOrdered<'a>(&'a [String]);

impl Serialize for IdOrdered<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (id, word) in self.0.iter().enumerate() {
            map.serialize_entry(word, &id)?;
        }
        map.end()
    }
}

#[derive(Deserialize)]
struct TokenizerIn {
    model: ModelIn,
}

#[derive(Deserialize)]
struct ModelIn {
    #[serde(rename = "type")]
    kind: String,
    vocab: HashMap<String, u32>,
    unk_token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_ties_and_limits() {
        let caps = ["b a c", "a b", "d a", "c"];
        let v = Vocab::build(caps, &VocabConfig::default());
        assert_eq!(
            v.words(),
            ["<pad>", "<start>", "<end>", "<unk>", "a", "b", "c", "d"]
        );
        let v = Vocab::build(
            caps,
            &VocabConfig {
                max_words: Some(2),
                min_count: 1,
            },
        );
        assert_eq!(v.len(), 6);
        let v = Vocab::build(
            caps,
            &VocabConfig {
                max_words: None,
                min_count: 2,
            },
        );
        assert_eq!(
            v.words().get(4..),
            Some(&["a".to_owned(), "b".into(), "c".into()][..])
        );
        assert_eq!(v.encode("a d zz"), [4, 3, 3]);
        let cov = v.coverage(caps);
        assert_eq!((cov.known, cov.tokens), (7, 8));
        assert_eq!(v.decode(&[1, 4, 5, 99, 3, 2, 6]), "a b <unk> <unk>");
    }

    #[test]
    fn specials_in_text_are_not_counted() {
        let v = Vocab::build(["<unk> <pad> x"], &VocabConfig::default());
        assert_eq!(v.len(), 5);
        assert_eq!(v.encode("<start> x <end>"), [1, 4, 2]);
    }

    #[test]
    fn tokenizer_json_round_trip() {
        let v = Vocab::build(["a dog runs", "a cat"], &VocabConfig::default());
        let json = v.to_tokenizer_json();
        assert!(json.contains("\"WhitespaceSplit\"") && json.contains("\"WordLevel\""));
        assert_eq!(Vocab::from_tokenizer_json(&json, "t").unwrap(), v);
    }

    #[test]
    fn tokenizer_json_validation() {
        let ok = Vocab::from_words(["x"]).to_tokenizer_json();
        let bad = ok.replace("\"x\": 4", "\"x\": 9");
        let err = Vocab::from_tokenizer_json(&bad, "t.json").unwrap_err();
        assert!(
            err.to_string().contains("t.json: model.vocab: id 9"),
            "{err}"
        );
        let bad = ok
            .replace("\"<pad>\": 0", "\"<pad>\": 4")
            .replace("\"x\": 4", "\"x\": 0");
        let err = Vocab::from_tokenizer_json(&bad, "t.json").unwrap_err();
        assert!(err.to_string().contains("<pad> must have id 0"), "{err}");
        let bad = ok.replace("\"WordLevel\"", "\"BPE\"");
        assert!(Vocab::from_tokenizer_json(&bad, "t").is_err());
        let bad = ok.replace("\"x\": 4", "\"x\": 3");
        assert!(Vocab::from_tokenizer_json(&bad, "t")
            .unwrap_err()
            .to_string()
            .contains("used by both"));
        assert!(Vocab::from_tokenizer_json("{}", "t")
            .unwrap_err()
            .to_string()
            .contains("model"));
    }
}

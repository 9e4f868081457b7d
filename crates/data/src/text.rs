//! Caption normalisation: the cleaning steps the seed notebooks apply before building a
//! vocabulary, each one switchable so that an experiment can turn one off and say so in its
//! config.

use serde::{Deserialize, Serialize};

/// Which cleaning steps to apply, in this order: lowercase, strip punctuation, strip digits,
/// collapse spaces, drop one-letter words, add markers.
///
/// The defaults are the seeds' pipeline, without markers: the [`crate::Vocab`] and the
/// [`crate::Batcher`] add `<start>`/`<end>` as ids themselves, so markers in the text are only
/// for tools that want them spelled out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Normalizer {
    /// Unicode lowercase.
    pub lowercase: bool,
    /// Remove every character that is neither alphanumeric nor whitespace. Removal, not
    /// replacement by a space, is what the seeds do: "tri-colored" becomes "tricolored".
    pub strip_punctuation: bool,
    /// Remove digits ("2 dogs" becomes "dogs" once one-letter words are dropped).
    pub strip_digits: bool,
    /// Trim and turn every run of whitespace into one space.
    pub collapse_spaces: bool,
    /// Drop one-letter words except "a". The seeds do this because stripping punctuation
    /// leaves stray letters behind, such as the "s" of Flickr8k's tokenised "dog 's", and those
    /// are noise; "a" is a real word (the most common one in the captions) and stays.
    pub drop_single_letters: bool,
    /// Wrap the result in `start_marker ... end_marker`.
    pub add_markers: bool,
    pub start_marker: String,
    pub end_marker: String,
}

impl Default for Normalizer {
    fn default() -> Self {
        Self {
            lowercase: true,
            strip_punctuation: true,
            strip_digits: true,
            collapse_spaces: true,
            drop_single_letters: true,
            add_markers: false,
            start_marker: crate::vocab::START.to_owned(),
            end_marker: crate::vocab::END.to_owned(),
        }
    }
}

impl Normalizer {
    /// No step at all: text passes through unchanged.
    pub fn identity() -> Self {
        Self {
            lowercase: false,
            strip_punctuation: false,
            strip_digits: false,
            collapse_spaces: false,
            drop_single_letters: false,
            add_markers: false,
            ..Self::default()
        }
    }

    /// Applies the enabled steps.
    pub fn normalize(&self, caption: &str) -> String {
        let mut text = if self.lowercase {
            caption.to_lowercase()
        } else {
            caption.to_owned()
        };
        if self.strip_punctuation || self.strip_digits {
            text.retain(|c| {
                let punct = !c.is_alphanumeric() && !c.is_whitespace();
                !(self.strip_punctuation && punct || self.strip_digits && c.is_numeric())
            });
        }
        if self.drop_single_letters {
            text = rebuild(&text, self.collapse_spaces, |w| {
                let mut chars = w.chars();
                let single = chars.next().is_some() && chars.next().is_none();
                !single || w == "a"
            });
        } else if self.collapse_spaces {
            text = rebuild(&text, true, |_| true);
        }
        if self.add_markers {
            text = match (text.is_empty(), self.collapse_spaces) {
                (true, true) => format!("{} {}", self.start_marker, self.end_marker),
                _ => format!("{} {text} {}", self.start_marker, self.end_marker),
            };
        }
        text
    }

    /// The normalised caption split into words.
    pub fn words(&self, caption: &str) -> Vec<String> {
        self.normalize(caption)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }
}

/// Keeps the words that pass `keep`. With `collapse`, words are joined by single spaces;
/// without it the original whitespace between kept words is preserved.
fn rebuild(text: &str, collapse: bool, keep: impl Fn(&str) -> bool) -> String {
    if collapse {
        return text
            .split_whitespace()
            .filter(|w| keep(w))
            .collect::<Vec<_>>()
            .join(" ");
    }
    let mut out = String::with_capacity(text.len());
    for piece in text.split_inclusive(char::is_whitespace) {
        let word = piece.trim_end_matches(char::is_whitespace);
        if word.is_empty() || keep(word) {
            out.push_str(piece);
        } else {
            out.push_str(piece.get(word.len()..).unwrap_or(""));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_pipeline() {
        let n = Normalizer::default();
        assert_eq!(
            n.normalize("A black dog 's toy , 2 balls ."),
            "a black dog toy balls"
        );
        assert_eq!(n.normalize("A tri-colored dog"), "a tricolored dog");
        assert_eq!(n.normalize("  I   saw\tA  CAT!  "), "saw a cat");
        assert_eq!(n.normalize("Ébène café 3D"), "ébène café");
        assert_eq!(n.normalize("..."), "");
    }

    #[test]
    fn each_step_switches_off() {
        let mut n = Normalizer::identity();
        assert_eq!(n.normalize(" A  dog's 2 "), " A  dog's 2 ");
        n.lowercase = true;
        assert_eq!(n.normalize(" A  dog's 2 "), " a  dog's 2 ");
        n.strip_punctuation = true;
        assert_eq!(n.normalize(" A  dog's 2 "), " a  dogs 2 ");
        n.strip_digits = true;
        assert_eq!(n.normalize(" A  dog's 2 "), " a  dogs  ");
        n.drop_single_letters = true;
        assert_eq!(n.normalize("x a b  dog  "), " a   dog  ");
        n.collapse_spaces = true;
        assert_eq!(n.normalize("x a b  dog  "), "a dog");
        n.add_markers = true;
        assert_eq!(n.normalize("x a b  dog  "), "<start> a dog <end>");
        assert_eq!(n.normalize("!!"), "<start> <end>");
    }

    #[test]
    fn serde_defaults_and_unknown_fields() {
        let n: Normalizer = serde_json::from_str(r#"{"lowercase": false}"#).unwrap();
        assert!(!n.lowercase && n.strip_punctuation);
        assert!(serde_json::from_str::<Normalizer>(r#"{"lowercas": false}"#).is_err());
        let back: Normalizer = serde_json::from_str(&serde_json::to_string(&n).unwrap()).unwrap();
        assert_eq!(back, n);
    }
}

//! METEOR's English resources: function words, non-breaking prefixes, the WordNet synonym
//! tables (all inside `meteor-1.5.jar`) and the paraphrase table (`data/paraphrase-en.gz`
//! beside the jar), read from pycocoevalcap's `meteor/` folder or from extracted copies.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::words::FxHashMap;

use super::normalize::{java_lines, java_tokens, parse_nbp, Nbp};
use super::MeteorError;

/// Jar entries (or files under the data folder) METEOR English needs.
pub(crate) const FUNCTION_WORDS: &str = "function/english.words";
pub(crate) const NONBREAKING: &str = "nonbreaking/english.prefixes";
pub(crate) const EXCEPTIONS: &str = "synonym/english.exceptions";
pub(crate) const SYNSETS: &str = "synonym/english.synsets";
pub(crate) const JAR: &str = "meteor-1.5.jar";
pub(crate) const PARAPHRASE: &str = "paraphrase-en.gz";

/// Find a resource: a plain file `dir/name`, else the entry `name` of `dir/meteor-1.5.jar`.
pub(crate) fn read_resource(dir: &Path, name: &str) -> Result<String, MeteorError> {
    let plain = dir.join(name);
    if plain.is_file() {
        let bytes = std::fs::read(&plain).map_err(|e| MeteorError::io(&plain, e))?;
        return utf8(&plain, bytes);
    }
    let jar = dir.join(JAR);
    if !jar.is_file() {
        return Err(MeteorError::Missing {
            dir: dir.to_owned(),
            what: format!("{name} (neither a file nor {JAR} to read it from)"),
        });
    }
    let bytes = std::fs::read(&jar).map_err(|e| MeteorError::io(&jar, e))?;
    let entry = zip_entry(&bytes, name).map_err(|msg| MeteorError::Format {
        path: jar.clone(),
        msg,
    })?;
    utf8(&jar.join(name), entry)
}

/// The paraphrase table's path: `dir/data/paraphrase-en.gz` (pycocoevalcap's layout) or
/// `dir/paraphrase-en.gz`.
pub(crate) fn paraphrase_path(dir: &Path) -> Result<PathBuf, MeteorError> {
    for p in [dir.join("data").join(PARAPHRASE), dir.join(PARAPHRASE)] {
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(MeteorError::Missing {
        dir: dir.to_owned(),
        what: format!("data/{PARAPHRASE}"),
    })
}

fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, MeteorError> {
    String::from_utf8(bytes).map_err(|_| MeteorError::Format {
        path: path.to_owned(),
        msg: "not UTF-8".into(),
    })
}

fn le16(b: &[u8], at: usize) -> Option<usize> {
    let s = b.get(at..at + 2)?;
    Some(u16::from_le_bytes([s[0], s[1]]) as usize)
}

fn le32(b: &[u8], at: usize) -> Option<usize> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
}

/// The uncompressed bytes of one entry of a zip archive (stored or deflated; no zip64, which
/// a 6 MB jar never needs).
pub(crate) fn zip_entry(zip: &[u8], name: &str) -> Result<Vec<u8>, String> {
    const EOCD: [u8; 4] = [0x50, 0x4b, 0x05, 0x06];
    const CENTRAL: usize = 0x0201_4b50;
    const LOCAL: usize = 0x0403_4b50;
    let bad = || "malformed zip archive".to_owned();
    let search_from = zip.len().saturating_sub(22 + 65_535);
    let eocd = (search_from..zip.len().saturating_sub(21))
        .rev()
        .find(|&i| zip[i..i + 4] == EOCD)
        .ok_or_else(bad)?;
    let entries = le16(zip, eocd + 10).ok_or_else(bad)?;
    let mut at = le32(zip, eocd + 16).ok_or_else(bad)?;
    for _ in 0..entries {
        if le32(zip, at) != Some(CENTRAL) {
            return Err(bad());
        }
        let method = le16(zip, at + 10).ok_or_else(bad)?;
        let compressed = le32(zip, at + 20).ok_or_else(bad)?;
        let size = le32(zip, at + 24).ok_or_else(bad)?;
        let name_len = le16(zip, at + 28).ok_or_else(bad)?;
        let extra_len = le16(zip, at + 30).ok_or_else(bad)?;
        let comment_len = le16(zip, at + 32).ok_or_else(bad)?;
        let local = le32(zip, at + 42).ok_or_else(bad)?;
        let entry_name = zip.get(at + 46..at + 46 + name_len).ok_or_else(bad)?;
        at += 46 + name_len + extra_len + comment_len;
        if entry_name != name.as_bytes() {
            continue;
        }
        if le32(zip, local) != Some(LOCAL) {
            return Err(bad());
        }
        let start = local
            + 30
            + le16(zip, local + 26).ok_or_else(bad)?
            + le16(zip, local + 28).ok_or_else(bad)?;
        let data = zip.get(start..start + compressed).ok_or_else(bad)?;
        return match method {
            0 => Ok(data.to_vec()),
            8 => {
                let mut out = Vec::with_capacity(size);
                flate2::read::DeflateDecoder::new(data)
                    .read_to_end(&mut out)
                    .map_err(|e| format!("{name}: {e}"))?;
                Ok(out)
            }
            m => Err(format!("{name}: unsupported zip compression method {m}")),
        };
    }
    Err(format!("no entry {name}"))
}

/// The function-word list: one word a line.
pub(crate) fn parse_function_words(text: &str) -> HashSet<String> {
    java_lines(text).map(str::to_owned).collect()
}

/// METEOR's `SynonymDictionary`: WordNet synsets of words, base forms of irregular forms, and
/// WordNet's suffix-stripping morphology for the rest.
#[derive(Debug, Default)]
pub(crate) struct Synonyms {
    word_to_bases: HashMap<String, Vec<String>>,
    word_to_synsets: HashMap<String, Vec<u32>>,
}

/// WordNet 3 morphology: noun, verb and adjective suffixes and their replacements.
const SUFFIXES: [(&str, &str); 20] = [
    ("s", ""),
    ("ses", "s"),
    ("xes", "x"),
    ("zes", "z"),
    ("ches", "ch"),
    ("shes", "sh"),
    ("men", "man"),
    ("ies", "y"),
    ("s", ""),
    ("ies", "y"),
    ("es", "e"),
    ("es", ""),
    ("ed", "e"),
    ("ed", ""),
    ("ing", "e"),
    ("ing", ""),
    ("er", ""),
    ("est", ""),
    ("er", "e"),
    ("est", "e"),
];

impl Synonyms {
    /// From the `english.exceptions` (base line, forms line) and `english.synsets` (word line,
    /// synset ids line) texts.
    pub(crate) fn parse(exceptions: &str, synsets: &str) -> Result<Self, String> {
        let mut word_to_bases: HashMap<String, Vec<String>> = HashMap::new();
        let mut lines = java_lines(exceptions);
        while let Some(base) = lines.next() {
            let forms = lines.next().unwrap_or("");
            for form in java_tokens(forms) {
                word_to_bases
                    .entry(form.to_owned())
                    .or_default()
                    .push(base.to_owned());
            }
        }
        let mut word_to_synsets = HashMap::new();
        let mut lines = java_lines(synsets).enumerate();
        while let Some((_, word)) = lines.next() {
            let (n, ids) = lines.next().unwrap_or((0, ""));
            let mut set = java_tokens(ids)
                .map(|t| {
                    t.parse::<i64>()
                        .map(|v| v as u32)
                        .map_err(|_| format!("line {}: bad synset id {t:?}", n + 1))
                })
                .collect::<Result<Vec<u32>, String>>()?;
            set.sort_unstable();
            set.dedup();
            word_to_synsets.insert(word.to_owned(), set);
        }
        Ok(Self {
            word_to_bases,
            word_to_synsets,
        })
    }

    fn synsets(&self, word: &str) -> &[u32] {
        self.word_to_synsets.get(word).map_or(&[], Vec::as_slice)
    }

    /// `getSynSets(word) ∪ getStemSynSets(word)`, sorted, as `SynonymMatcher` builds it.
    pub(crate) fn all_synsets(&self, word: &str) -> Vec<u32> {
        let mut set: Vec<u32> = self.synsets(word).to_vec();
        match self.word_to_bases.get(word) {
            Some(bases) => {
                for b in bases {
                    set.extend_from_slice(self.synsets(b));
                }
            }
            None => set.extend_from_slice(self.synsets(&self.morph(word))),
        }
        set.sort_unstable();
        set.dedup();
        set
    }

    /// `SynonymDictionary.morph`: the first suffix replacement that is a WordNet word, else "".
    fn morph(&self, word: &str) -> String {
        // Java's `length()` counts UTF-16 units.
        if word.ends_with("ss") || word.encode_utf16().count() <= 2 {
            return word.to_owned();
        }
        for (suffix, replacement) in SUFFIXES {
            if let Some(stem) = word.strip_suffix(suffix) {
                let candidate = format!("{stem}{replacement}");
                if self.word_to_synsets.contains_key(&candidate) {
                    // (A trailing "ful" is re-appended in Java, but no suffix ends in "l".)
                    return candidate;
                }
            }
        }
        String::new()
    }
}

/// METEOR's `ParaphraseTransducer`: for each reference phrase (as word ids), the paraphrases
/// in file order.
#[derive(Debug, Default)]
pub(crate) struct Paraphrases {
    vocab: FxHashMap<Box<str>, u32>,
    /// Reference phrase -> indices into `entries`, in file order.
    by_phrase: FxHashMap<Box<[u32]>, Vec<u32>>,
    /// Paraphrase `k` is `words[entries[k].0 .. entries[k].0 + entries[k].1]`.
    entries: Vec<(u32, u32)>,
    words: Vec<u32>,
    max_len: usize,
}

impl Paraphrases {
    /// Parse the table's text: blocks of three lines (probability, phrase, paraphrase).
    pub(crate) fn parse(text: &str) -> Self {
        let mut p = Self::default();
        let mut lines = java_lines(text);
        let mut phrase: Vec<u32> = Vec::new();
        while lines.next().is_some() {
            let (Some(reference), Some(paraphrase)) = (lines.next(), lines.next()) else {
                break;
            };
            phrase.clear();
            for w in java_tokens(reference) {
                let id = p.intern(w);
                phrase.push(id);
            }
            let start = p.words.len() as u32;
            for w in java_tokens(paraphrase) {
                let id = p.intern(w);
                p.words.push(id);
            }
            let k = p.entries.len() as u32;
            p.entries.push((start, p.words.len() as u32 - start));
            p.max_len = p.max_len.max(phrase.len());
            match p.by_phrase.get_mut(phrase.as_slice()) {
                Some(list) => list.push(k),
                None => {
                    p.by_phrase.insert(phrase.as_slice().into(), vec![k]);
                }
            }
        }
        p
    }

    /// Read and parse a gzipped table.
    pub(crate) fn load(path: &Path) -> Result<Self, MeteorError> {
        let file = std::fs::File::open(path).map_err(|e| MeteorError::io(path, e))?;
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(std::io::BufReader::with_capacity(1 << 20, file))
            .read_to_string(&mut text)
            .map_err(|e| MeteorError::io(path, e))?;
        Ok(Self::parse(&text))
    }

    fn intern(&mut self, w: &str) -> u32 {
        if let Some(&id) = self.vocab.get(w) {
            return id;
        }
        let id = self.vocab.len() as u32;
        self.vocab.insert(w.into(), id);
        id
    }

    /// `translate`: the word's id, `None` for a word the table never uses.
    pub(crate) fn id(&self, word: &str) -> Option<u32> {
        self.vocab.get(word).copied()
    }

    /// `getReferencePaths(words, start)`: `(phrase length, paraphrase)` for every phrase of
    /// the table starting at `start`, shortest first, each length in file order.
    pub(crate) fn paths<'a>(
        &'a self,
        words: &'a [Option<u32>],
        start: usize,
    ) -> impl Iterator<Item = (usize, &'a [u32])> + 'a {
        let mut key: Vec<u32> = Vec::new();
        let mut out: Vec<(usize, &'a [u32])> = Vec::new();
        for w in words[start..].iter().take(self.max_len) {
            let Some(w) = w else { break };
            key.push(*w);
            if let Some(list) = self.by_phrase.get(key.as_slice()) {
                for &k in list {
                    let (s, n) = self.entries[k as usize];
                    out.push((key.len(), &self.words[s as usize..(s + n) as usize]));
                }
            }
        }
        out.into_iter()
    }

    /// Number of (phrase, paraphrase) pairs.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Everything METEOR English needs besides the parameters.
#[derive(Debug, Default)]
pub(crate) struct Resources {
    pub function_words: HashSet<String>,
    pub nbp: HashMap<String, Nbp>,
    pub synonyms: Synonyms,
    pub paraphrases: Paraphrases,
}

impl Resources {
    pub(crate) fn load(dir: &Path) -> Result<Self, MeteorError> {
        let para_path = paraphrase_path(dir)?;
        let function_words = parse_function_words(&read_resource(dir, FUNCTION_WORDS)?);
        let nbp = parse_nbp(&read_resource(dir, NONBREAKING)?);
        let exceptions = read_resource(dir, EXCEPTIONS)?;
        let synsets = read_resource(dir, SYNSETS)?;
        // The paraphrase table is the bulk of the loading time: parse it beside the rest.
        let (paraphrases, synonyms) = rayon::join(
            || Paraphrases::load(&para_path),
            || Synonyms::parse(&exceptions, &synsets),
        );
        let synonyms = synonyms.map_err(|msg| MeteorError::Format {
            path: dir.join(SYNSETS),
            msg,
        })?;
        Ok(Self {
            function_words,
            nbp,
            synonyms,
            paraphrases: paraphrases?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn morphology_and_exceptions() {
        let syn = Synonyms::parse("mouse\nmice\n", "dog\n1 2\nmouse\n3\nbox\n4\nrun\n5\n").unwrap();
        assert_eq!(syn.all_synsets("dogs"), vec![1, 2]);
        assert_eq!(syn.all_synsets("mice"), vec![3]);
        assert_eq!(syn.all_synsets("boxes"), vec![4]);
        assert_eq!(syn.all_synsets("running"), Vec::<u32>::new()); // "runn" is no word
        assert_eq!(syn.all_synsets("runs"), vec![5]);
        assert_eq!(syn.all_synsets("ss"), Vec::<u32>::new());
    }

    #[test]
    fn paraphrase_paths() {
        let p = Paraphrases::parse("0.1\na b\nc\n0.2\na\nd e\n0.3\na b\nf\n");
        assert_eq!(p.len(), 3);
        let ids: Vec<Option<u32>> = ["a", "b", "zzz"].iter().map(|w| p.id(w)).collect();
        let paths: Vec<(usize, Vec<u32>)> =
            p.paths(&ids, 0).map(|(n, w)| (n, w.to_vec())).collect();
        let id = |w: &str| p.id(w).unwrap();
        assert_eq!(
            paths,
            vec![
                (1, vec![id("d"), id("e")]),
                (2, vec![id("c")]),
                (2, vec![id("f")])
            ]
        );
        assert_eq!(p.paths(&ids, 2).count(), 0);
    }

    #[test]
    fn zip_reader_rejects_garbage() {
        assert!(zip_entry(b"not a zip", "x").is_err());
        assert!(zip_entry(&[], "x").is_err());
    }
}

//! Word splitting and n-gram keys shared by the scorers, following how pycocoevalcap 1.2 splits
//! tokenised captions: `bleu_scorer.py` and `cider_scorer.py` call `str.split()` (any Python
//! whitespace, so the U+00A0 inside `22\u{a0}3/4` splits), `rouge.py` calls `str.split(" ")`
//! (only spaces, and an empty caption is one empty word).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::tokenizer::is_python_space;

/// Python `str.split()`.
pub(crate) fn split_whitespace(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_python_space).filter(|w| !w.is_empty())
}

/// Python `str.split(" ")`.
pub(crate) fn split_spaces(s: &str) -> impl Iterator<Item = &str> {
    s.split(' ')
}

/// The Fx hash (rustc's): n-gram keys and words are hashed millions of times per evaluation and
/// need no protection against adversarial collisions.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(buf));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        // Fx leaves the low bits (which pick the bucket) weak for keys that differ only in high
        // lanes, such as n-grams sharing their first word; one xor-shift-multiply spreads them.
        let h = self.hash ^ (self.hash >> 32);
        h.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (h >> 29)
    }
}

pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;
pub(crate) type FxHashMap<K, V> = HashMap<K, V, FxBuild>;

/// An n-gram (n <= 4) of word ids, one id per 32-bit lane, ids starting at 1 so that the number
/// of non-zero lanes is n.
pub(crate) type NGram = u128;

/// The largest n-gram order every scorer uses.
pub(crate) const MAX_N: usize = 4;

/// Which order (0-based: 0 = unigram) an n-gram key has.
pub(crate) fn order(g: NGram) -> usize {
    (4 - (g.leading_zeros() / 32) as usize).saturating_sub(1)
}

/// Word ids for one evaluation; the same word always gets the same id.
#[derive(Default, Clone, Debug)]
pub(crate) struct Vocab {
    ids: FxHashMap<String, u32>,
}

impl Vocab {
    pub(crate) fn id(&mut self, word: &str) -> u32 {
        if let Some(&id) = self.ids.get(word) {
            return id;
        }
        let id = self.ids.len() as u32 + 1;
        self.ids.insert(word.to_owned(), id);
        id
    }

    pub(crate) fn get(&self, word: &str) -> Option<u32> {
        self.ids.get(word).copied()
    }

    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    pub(crate) fn ids(&mut self, text: &str) -> Vec<u32> {
        split_whitespace(text).map(|w| self.id(w)).collect()
    }
}

/// All 1..=4-grams of a word-id sequence with their counts, sorted by key.
pub(crate) fn ngram_counts(words: &[u32]) -> Vec<(NGram, u32)> {
    let mut grams: Vec<NGram> = Vec::with_capacity(words.len() * MAX_N);
    for start in 0..words.len() {
        let mut key: NGram = 0;
        for (k, &w) in words[start..].iter().take(MAX_N).enumerate() {
            key |= NGram::from(w) << (32 * k);
            grams.push(key);
        }
    }
    grams.sort_unstable();
    let mut out: Vec<(NGram, u32)> = Vec::with_capacity(grams.len());
    for g in grams {
        match out.last_mut() {
            Some((last, c)) if *last == g => *c += 1,
            _ => out.push((g, 1)),
        }
    }
    out
}

/// A caption as BLEU and CIDEr-D see it: its number of words and its n-gram counts.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cooked {
    pub len: usize,
    pub counts: Vec<(NGram, u32)>,
}

impl Cooked {
    pub(crate) fn new(words: &[u32]) -> Self {
        Self {
            len: words.len(),
            counts: ngram_counts(words),
        }
    }
}

/// Look a key up in a sorted `(key, value)` list.
pub(crate) fn lookup<V: Copy>(sorted: &[(NGram, V)], key: NGram) -> Option<V> {
    sorted
        .binary_search_by(|(k, _)| k.cmp(&key))
        .ok()
        .map(|i| sorted[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_split_semantics() {
        let v: Vec<&str> = split_whitespace(" a\u{a0}b  c ").collect();
        assert_eq!(v, ["a", "b", "c"]);
        let v: Vec<&str> = split_spaces("").collect();
        assert_eq!(v, [""]);
    }

    #[test]
    fn ngram_orders() {
        let counts = ngram_counts(&[1, 2, 1, 2]);
        let by_order = |n: usize| counts.iter().filter(|(g, _)| order(*g) == n).count();
        assert_eq!(
            [by_order(0), by_order(1), by_order(2), by_order(3)],
            [2, 2, 2, 1]
        );
        assert_eq!(lookup(&counts, 1 | (2 << 32)), Some(2));
    }
}

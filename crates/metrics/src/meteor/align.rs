//! METEOR 1.5's aligner (`edu.cmu.meteor.aligner.Aligner` and its matchers), ported statement
//! by statement because its quirks change scores:
//!
//! - words are compared by Java `String.hashCode` (exact, stem and synonym modules);
//! - the beam search ranks partial alignments by *truncated integer* weighted match counts:
//!   `matches1 += matchLength * weight` on an `int` field, with the evaluation weights
//!   1, 0.5, 0.5, 0.5, so a one-word stem/synonym/paraphrase match adds nothing to the rank;
//! - when a position offers several matches, the match distance is added to the *parent* path
//!   (so later siblings inherit it), not to the new path;
//! - a match whose words are covered by nothing else is fixed before the search.
//!
//! "Line 1" is the hypothesis, "line 2" the reference; matches are indexed by their first
//! reference word.

use super::data::Resources;

/// Module numbers (positions in METEOR English's module list).
pub(crate) const EXACT: usize = 0;
pub(crate) const STEM: usize = 1;
pub(crate) const SYNONYM: usize = 2;
pub(crate) const PARAPHRASE: usize = 3;
pub(crate) const MODULES: usize = 4;

/// Weights the aligner ranks partial alignments with (`MeteorScorer.loadConfiguration`).
const ALIGN_WEIGHTS: [f64; MODULES] = [1.0, 0.5, 0.5, 0.5];
/// `Constants.DEFAULT_BEAM_SIZE`.
const BEAM: usize = 40;

/// A sentence after normalisation, with everything the matchers look up once per sentence.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sentence {
    pub words: Vec<String>,
    hash: Vec<i32>,
    stem_hash: Vec<i32>,
    synsets: Vec<Vec<u32>>,
    para: Vec<Option<u32>>,
    pub function: Vec<bool>,
}

/// Java `String.hashCode`.
pub(crate) fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(i32::from(u)))
}

impl Sentence {
    /// `words`: the normalised, lower-cased line split as `StringTokenizer` splits it.
    pub(crate) fn new(
        words: Vec<String>,
        res: &Resources,
        stemmer: &rust_stemmers::Stemmer,
    ) -> Self {
        let hash = words.iter().map(|w| java_hash(w)).collect();
        let stem_hash = words.iter().map(|w| java_hash(&stemmer.stem(w))).collect();
        let synsets = words.iter().map(|w| res.synonyms.all_synsets(w)).collect();
        let para = words.iter().map(|w| res.paraphrases.id(w)).collect();
        // `functionWords.contains(word.toLowerCase())`; the words are lower case already.
        let function = words
            .iter()
            .map(|w| res.function_words.contains(w))
            .collect();
        Self {
            words,
            hash,
            stem_hash,
            synsets,
            para,
            function,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.words.len()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Match {
    /// First reference word and number of reference words.
    pub start: usize,
    pub length: usize,
    /// First hypothesis word and number of hypothesis words.
    pub match_start: usize,
    pub match_length: usize,
    pub module: usize,
}

/// The result of aligning a hypothesis with one reference.
#[derive(Clone, Debug, Default)]
pub(crate) struct Alignment {
    /// Matches of the best alignment, by first reference word.
    pub matches: Vec<Option<Match>>,
    pub chunks: usize,
}

/// All candidate matches (`Stage`).
struct Stage {
    matches: Vec<Vec<Match>>,
    cover1: Vec<u32>,
    cover2: Vec<u32>,
}

impl Stage {
    fn add(&mut self, m: Match) {
        for k in 0..m.match_length {
            self.cover1[m.match_start + k] += 1;
        }
        for k in 0..m.length {
            self.cover2[m.start + k] += 1;
        }
        self.matches[m.start].push(m);
    }
}

fn intersects(a: &[u32], b: &[u32]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return true,
        }
    }
    false
}

fn word_match(start: usize, match_start: usize, module: usize) -> Match {
    Match {
        start,
        length: 1,
        match_start,
        match_length: 1,
        module,
    }
}

/// A partial alignment of the beam search (`PartialAlignment`).
#[derive(Clone, Debug)]
struct Partial {
    matches: Vec<Option<Match>>,
    matches1: i32,
    matches2: i32,
    chunks: i32,
    idx: usize,
    last_match_end: Option<usize>,
    distance: i32,
    used1: Vec<bool>,
    used2: Vec<bool>,
}

impl Partial {
    fn is_used(&self, m: &Match) -> bool {
        (0..m.length).any(|k| self.used2[m.start + k])
            || (0..m.match_length).any(|k| self.used1[m.match_start + k])
    }

    fn set_used(&mut self, m: &Match) {
        for k in 0..m.length {
            self.used2[m.start + k] = true;
        }
        for k in 0..m.match_length {
            self.used1[m.match_start + k] = true;
        }
    }

    /// The statistics update shared by a fixed match and a chosen match.
    fn take(&mut self, m: &Match) {
        let w = ALIGN_WEIGHTS[m.module];
        // `int += double` truncates towards zero.
        self.matches1 = (f64::from(self.matches1) + m.match_length as f64 * w) as i32;
        self.matches2 = (f64::from(self.matches2) + m.length as f64 * w) as i32;
        if self.last_match_end.is_some_and(|end| m.match_start != end) {
            self.chunks += 1;
        }
        self.idx = m.start + m.length;
        self.last_match_end = Some(m.match_start + m.match_length);
    }

    /// `Constants.PARTIAL_COMPARE_TOTAL`: more (weighted) matches, then fewer chunks, then a
    /// shorter distance.
    fn rank(&self) -> (i32, i32, i32) {
        (-(self.matches1 + self.matches2), self.chunks, self.distance)
    }
}

fn abs_diff(a: usize, b: usize) -> i32 {
    a.abs_diff(b) as i32
}

/// Align `hyp` (line 1) with `reference` (line 2).
pub(crate) fn align(hyp: &Sentence, reference: &Sentence, res: &Resources) -> Alignment {
    let (n1, n2) = (hyp.len(), reference.len());
    let mut s = Stage {
        matches: vec![Vec::new(); n2],
        cover1: vec![0; n1],
        cover2: vec![0; n2],
    };
    // Identical sentences only need exact matches ("prevents beam search errors").
    let identical = hyp.hash == reference.hash;

    // Exact.
    for j in 0..n2 {
        for i in 0..n1 {
            if hyp.hash[i] == reference.hash[j] {
                s.add(word_match(j, i, EXACT));
            }
        }
    }
    if !identical {
        // Stem: same Snowball stem, different word.
        for j in 0..n2 {
            for i in 0..n1 {
                if hyp.stem_hash[i] == reference.stem_hash[j] && hyp.hash[i] != reference.hash[j] {
                    s.add(word_match(j, i, STEM));
                }
            }
        }
        // Synonym: a shared WordNet synset (of the word or of its base form), different word.
        for j in 0..n2 {
            for i in 0..n1 {
                if intersects(&hyp.synsets[i], &reference.synsets[j])
                    && hyp.hash[i] != reference.hash[j]
                {
                    s.add(word_match(j, i, SYNONYM));
                }
            }
        }
        paraphrase_matches(&mut s, hyp, reference, res);
    }

    let mut start = Partial {
        matches: vec![None; n2],
        matches1: 0,
        matches2: 0,
        chunks: 0,
        idx: 0,
        last_match_end: None,
        distance: 0,
        used1: vec![false; n1],
        used2: vec![false; n2],
    };
    // One-to-one matches whose words nothing else covers are definite.
    for i in 0..n2 {
        if let [m] = s.matches[i].as_slice() {
            let overlap = (0..m.length).any(|k| s.cover2[i + k] != 1)
                || (0..m.match_length).any(|k| s.cover1[m.match_start + k] != 1);
            if !overlap {
                start.matches[i] = Some(*m);
                start.set_used(m);
            }
        }
    }
    let best = resolve(&s, start);
    Alignment {
        chunks: count_chunks(&best.matches),
        matches: best.matches,
    }
}

/// `ParaphraseMatcher`: reference phrases paraphrased in the hypothesis, then hypothesis
/// phrases paraphrased in the reference.
fn paraphrase_matches(s: &mut Stage, hyp: &Sentence, reference: &Sentence, res: &Resources) {
    let table = &res.paraphrases;
    let (line1, line2) = (&hyp.para, &reference.para);
    let occurs_at = |line: &[Option<u32>], at: usize, words: &[u32]| {
        words.len() <= line.len() - at && words.iter().zip(&line[at..]).all(|(w, l)| Some(*w) == *l)
    };
    for j in 0..line2.len() {
        for (len, words) in table.paths(line2, j) {
            for i in 0..line1.len() {
                if occurs_at(line1, i, words) {
                    s.add(Match {
                        start: j,
                        length: len,
                        match_start: i,
                        match_length: words.len(),
                        module: PARAPHRASE,
                    });
                }
            }
        }
    }
    for i in 0..line1.len() {
        for (len, words) in table.paths(line1, i) {
            for j in 0..line2.len() {
                if occurs_at(line2, j, words) {
                    s.add(Match {
                        start: j,
                        length: words.len(),
                        match_start: i,
                        match_length: len,
                        module: PARAPHRASE,
                    });
                }
            }
        }
    }
}

/// The beam search over reference positions (`Aligner.resolve`).
fn resolve(s: &Stage, start: Partial) -> Partial {
    let n2 = s.matches.len();
    let mut next = vec![start];
    for current in 0..=n2 {
        let mut paths = std::mem::take(&mut next);
        // `Collections.sort` is stable, and so is `sort_by_key`.
        paths.sort_by_key(Partial::rank);
        let keep = paths.len().min(BEAM);
        let mut pushed = false;
        for path in paths.iter_mut().take(keep) {
            if current == n2 {
                if path.last_match_end.is_some() {
                    path.chunks += 1;
                }
                next.push(path.clone());
                pushed = true;
                continue;
            }
            if path.used2[current] {
                if current < path.idx {
                    next.push(path.clone());
                    pushed = true;
                } else if let Some(m) = path.matches.get(path.idx).copied().flatten() {
                    path.take(&m);
                    path.distance += abs_diff(m.start, m.match_start);
                    next.push(path.clone());
                    pushed = true;
                }
                continue;
            }
            for m in &s.matches[current] {
                if path.is_used(m) {
                    continue;
                }
                let mut new_path = path.clone();
                new_path.set_used(m);
                new_path.matches[current] = Some(*m);
                new_path.take(m);
                // Java adds the distance to the parent path here.
                path.distance += abs_diff(m.start, m.match_start);
                next.push(new_path);
            }
            // Skip this reference word.
            if path.last_match_end.is_some() {
                path.chunks += 1;
                path.last_match_end = None;
            }
            path.idx += 1;
            next.push(path.clone());
            pushed = true;
        }
        if !pushed {
            // "unexpected conditions - skipping matches until possible to continue"
            if let Some(first) = paths.into_iter().next() {
                next.push(first);
            }
        }
    }
    next.sort_by_key(Partial::rank);
    next.into_iter().next().unwrap_or(Partial {
        matches: vec![None; n2],
        matches1: 0,
        matches2: 0,
        chunks: 0,
        idx: 0,
        last_match_end: None,
        distance: 0,
        used1: Vec::new(),
        used2: Vec::new(),
    })
}

/// `Aligner.getCountAndChunks`: the number of chunks of the final alignment.
pub(crate) fn count_chunks(matches: &[Option<Match>]) -> usize {
    let mut chunks = 0;
    let mut idx = 0;
    let mut last_match_end: Option<usize> = None;
    while idx < matches.len() {
        match matches[idx] {
            None => {
                if last_match_end.take().is_some() {
                    chunks += 1;
                }
                idx += 1;
            }
            Some(m) => {
                if last_match_end.is_some_and(|end| m.match_start != end) {
                    chunks += 1;
                }
                idx = m.start + m.length;
                last_match_end = Some(m.match_start + m.match_length);
            }
        }
    }
    if last_match_end.is_some() {
        chunks += 1;
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_string_hash() {
        assert_eq!(java_hash(""), 0);
        assert_eq!(java_hash("a"), 97);
        assert_eq!(java_hash("hello"), 99_162_322);
        // The classic collision.
        assert_eq!(java_hash("Aa"), java_hash("BB"));
        assert_eq!(java_hash("polygenelubricants"), i32::MIN);
    }

    #[test]
    fn chunks_of_an_alignment() {
        let m = |start, match_start| Some(word_match(start, match_start, EXACT));
        // ref: a b c d ; hyp: a b d c -> chunks "a b", "c", "d"
        assert_eq!(count_chunks(&[m(0, 0), m(1, 1), m(2, 3), m(3, 2)]), 3);
        assert_eq!(count_chunks(&[m(0, 0), None, m(2, 1)]), 2);
        assert_eq!(count_chunks(&[None, None]), 0);
        assert_eq!(count_chunks(&[m(0, 0), m(1, 1)]), 1);
    }
}

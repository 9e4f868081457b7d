//! METEOR 1.5 as pycocoevalcap 1.2 runs it (`java -jar meteor-1.5.jar - - -stdio -l en -norm`,
//! driven by `pycocoevalcap/meteor/meteor.py`), in pure Rust.
//!
//! - Text: the hypothesis loses `|||`, every caption is normalised as METEOR's `-norm` does and
//!   lower-cased ([`normalize`]).
//! - Alignment against each reference: exact, stem (Snowball English), synonym (WordNet synsets)
//!   and paraphrase (`paraphrase-en.gz`) matches, then METEOR's beam search ([`align`]).
//! - Score: the English "default" (ranking) task parameters alpha 0.85, beta 0.20, gamma 0.60,
//!   delta 0.75 and module weights 1.0, 0.6, 0.8, 0.6; precision and recall weighted by delta
//!   between content and function words; `Fmean = P R / (alpha P + (1 - alpha) R)`; chunk
//!   penalty `gamma (chunks / matches)^beta`. The best reference (highest score, first on ties)
//!   gives the image's 23 statistics ([`MeteorStats`]).
//! - Corpus: METEOR's own score of the statistics summed over images (chunks of perfect
//!   matches left out), as the `EVAL` line of the protocol returns it — not the mean of the
//!   per-image scores.
//!
//! The data (WordNet tables inside `meteor-1.5.jar`, the 60 MB paraphrase table beside it) is
//! not in the repository. One command fetches pycocoevalcap's copy:
//!
//! ```sh
//! pip download --no-deps pycocoevalcap==1.2 -d /tmp/coco && unzip -oq /tmp/coco/pycocoevalcap-1.2-*.whl 'pycocoevalcap/meteor/*' -d /tmp/coco
//! export CAPTIONER_METEOR_DATA=/tmp/coco/pycocoevalcap/meteor
//! ```
//!
//! (an installed pycocoevalcap's `site-packages/pycocoevalcap/meteor` folder works as is).
//! [`Meteor::load`] reads that folder: `meteor-1.5.jar` (read as a zip; extracted `function/`,
//! `nonbreaking/` and `synonym/` folders beside it are used instead when present) and
//! `data/paraphrase-en.gz` (or `paraphrase-en.gz`).
//!
//! Known differences: lower-casing uses Rust's Unicode tables (Java's differ in rare
//! characters); the Snowball stemmer is `rust-stemmers`' English (checked against the jar's on
//! every Flickr8k and COCO val2017 word).

mod align;
mod data;
mod normalize;

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::{check_shapes, MetricsError};
use align::{Sentence, MODULES};
use data::Resources;

/// The environment variable naming the METEOR data folder.
pub const DATA_ENV: &str = "CAPTIONER_METEOR_DATA";

/// How to get the data, for error messages.
pub const FETCH_HINT: &str = "METEOR needs pycocoevalcap's METEOR data: run `pip download --no-deps pycocoevalcap==1.2 -d /tmp/coco && unzip -oq /tmp/coco/pycocoevalcap-1.2-*.whl 'pycocoevalcap/meteor/*' -d /tmp/coco` and set CAPTIONER_METEOR_DATA=/tmp/coco/pycocoevalcap/meteor";

/// Errors from loading METEOR's data.
#[derive(Debug, thiserror::Error)]
pub enum MeteorError {
    #[error("no METEOR data folder given and {DATA_ENV} is not set. {FETCH_HINT}")]
    NotConfigured,
    #[error("METEOR data folder {dir}: missing {what}. {FETCH_HINT}")]
    Missing { dir: PathBuf, what: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
}

impl MeteorError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// METEOR's parameters for English, task "default" (= "rank").
const ALPHA: f64 = 0.85;
const BETA: f64 = 0.20;
const GAMMA: f64 = 0.60;
const DELTA: f64 = 0.75;
const MODULE_WEIGHTS: [f64; MODULES] = [1.0, 0.6, 0.8, 0.6];

/// The sufficient statistics of one image (or their sum), in the order of METEOR's
/// `MeteorStats.toString`: lengths, function words, per module the content and function word
/// matches of test and reference, chunks, total word matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MeteorStats {
    pub test_length: u64,
    pub reference_length: u64,
    pub test_function_words: u64,
    pub reference_function_words: u64,
    /// Per module (exact, stem, synonym, paraphrase): test content, reference content, test
    /// function, reference function matches.
    pub module_matches: [[u64; 4]; MODULES],
    pub chunks: u64,
    pub test_word_matches: u64,
    pub reference_word_matches: u64,
}

impl MeteorStats {
    /// From the 23 numbers of METEOR's `SCORE` answer.
    pub fn from_array(v: &[u64; 23]) -> Self {
        let mut module_matches = [[0; 4]; MODULES];
        for (m, mm) in module_matches.iter_mut().enumerate() {
            mm.copy_from_slice(&v[4 + 4 * m..8 + 4 * m]);
        }
        Self {
            test_length: v[0],
            reference_length: v[1],
            test_function_words: v[2],
            reference_function_words: v[3],
            module_matches,
            chunks: v[20],
            test_word_matches: v[21],
            reference_word_matches: v[22],
        }
    }

    /// The 23 numbers, as METEOR prints them.
    pub fn to_array(&self) -> [u64; 23] {
        let mut v = [0; 23];
        v[0] = self.test_length;
        v[1] = self.reference_length;
        v[2] = self.test_function_words;
        v[3] = self.reference_function_words;
        for (m, mm) in self.module_matches.iter().enumerate() {
            v[4 + 4 * m..8 + 4 * m].copy_from_slice(mm);
        }
        v[20] = self.chunks;
        v[21] = self.test_word_matches;
        v[22] = self.reference_word_matches;
        v
    }

    fn test_total_matches(&self) -> u64 {
        self.module_matches.iter().map(|m| m[0] + m[2]).sum()
    }

    fn reference_total_matches(&self) -> u64 {
        self.module_matches.iter().map(|m| m[1] + m[3]).sum()
    }

    /// A perfect match: everything matched in one chunk (no fragmentation penalty, and its
    /// chunk is left out of corpus sums).
    fn is_perfect(&self) -> bool {
        self.test_total_matches() == self.test_length
            && self.reference_total_matches() == self.reference_length
            && self.chunks == 1
    }

    /// `MeteorStats.addStats`.
    pub fn add(&mut self, other: &MeteorStats) {
        self.test_length += other.test_length;
        self.reference_length += other.reference_length;
        self.test_function_words += other.test_function_words;
        self.reference_function_words += other.reference_function_words;
        for (a, b) in self.module_matches.iter_mut().zip(&other.module_matches) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        if !other.is_perfect() {
            self.chunks += other.chunks;
        }
        self.test_word_matches += other.test_word_matches;
        self.reference_word_matches += other.reference_word_matches;
    }

    /// METEOR's score of these statistics (`MeteorScorer.computeMetrics`), in the same
    /// floating-point order as the Java code.
    pub fn score(&self) -> f64 {
        let f = |v: u64| v as f64;
        let test_weighted_length = DELTA * (f(self.test_length) - f(self.test_function_words))
            + (1.0 - DELTA) * f(self.test_function_words);
        let reference_weighted_length = DELTA
            * (f(self.reference_length) - f(self.reference_function_words))
            + (1.0 - DELTA) * f(self.reference_function_words);
        let mut test_weighted = 0.0;
        let mut reference_weighted = 0.0;
        for (m, w) in self.module_matches.iter().zip(MODULE_WEIGHTS) {
            test_weighted += f(m[0]) * w * DELTA;
        }
        for (m, w) in self.module_matches.iter().zip(MODULE_WEIGHTS) {
            reference_weighted += f(m[1]) * w * DELTA;
        }
        for (m, w) in self.module_matches.iter().zip(MODULE_WEIGHTS) {
            test_weighted += f(m[2]) * w * (1.0 - DELTA);
        }
        for (m, w) in self.module_matches.iter().zip(MODULE_WEIGHTS) {
            reference_weighted += f(m[3]) * w * (1.0 - DELTA);
        }
        let precision = test_weighted / test_weighted_length;
        let recall = reference_weighted / reference_weighted_length;
        let f_mean = 1.0 / (((1.0 - ALPHA) / precision) + (ALPHA / recall));
        let frag = if self.is_perfect() {
            0.0
        } else {
            f(self.chunks) / ((f(self.test_word_matches) + f(self.reference_word_matches)) / 2.0)
        };
        let penalty = GAMMA * frag.powf(BETA);
        let score = f_mean * (1.0 - penalty);
        if score.is_nan() {
            0.0
        } else {
            score.max(0.0)
        }
    }
}

/// Corpus METEOR: the score of the summed statistics (what pycocoevalcap reports).
pub fn corpus_score(stats: &[MeteorStats]) -> f64 {
    let mut total = MeteorStats::default();
    for s in stats {
        total.add(s);
    }
    total.score()
}

/// Corpus and per-image METEOR with the per-image statistics.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MeteorScores {
    pub corpus: f64,
    pub per_image: Vec<f64>,
    pub stats: Vec<MeteorStats>,
}

/// One image's references as [`Meteor::prepare`] leaves them.
#[derive(Clone, Debug)]
pub struct MeteorReferences {
    sentences: Vec<Sentence>,
}

/// METEOR 1.5 English with its data loaded. Loading takes a few seconds (the paraphrase
/// table); scoring is thread-safe.
///
/// ```no_run
/// use captioner_metrics::meteor::Meteor;
/// let meteor = Meteor::load_default(None)?; // $CAPTIONER_METEOR_DATA
/// let refs = ["a dog runs on the grass", "a brown dog is running"];
/// let s = meteor.score(&refs, "a dog is running on grass");
/// assert!(s > 0.0 && s <= 1.0);
/// # Ok::<(), captioner_metrics::meteor::MeteorError>(())
/// ```
pub struct Meteor {
    res: Resources,
    stemmer: rust_stemmers::Stemmer,
}

impl std::fmt::Debug for Meteor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meteor")
            .field("paraphrases", &self.res.paraphrases.len())
            .finish_non_exhaustive()
    }
}

impl Meteor {
    /// Load the data from `dir`: pycocoevalcap's `meteor/` folder (see the module docs).
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, MeteorError> {
        Ok(Self::from_resources(Resources::load(dir.as_ref())?))
    }

    /// The data folder: `explicit` if given, else `$CAPTIONER_METEOR_DATA`.
    pub fn data_dir(explicit: Option<&Path>) -> Result<PathBuf, MeteorError> {
        match explicit {
            Some(p) => Ok(p.to_owned()),
            None => std::env::var_os(DATA_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .ok_or(MeteorError::NotConfigured),
        }
    }

    /// [`Meteor::load`] from [`Meteor::data_dir`].
    pub fn load_default(explicit: Option<&Path>) -> Result<Self, MeteorError> {
        Self::load(Self::data_dir(explicit)?)
    }

    /// Build from the texts of the data files (same formats), for tests and custom tables:
    /// function words (one a line), Moses non-breaking prefixes, WordNet exceptions and
    /// synsets, and the uncompressed paraphrase table.
    pub fn from_tables(
        function_words: &str,
        nonbreaking_prefixes: &str,
        exceptions: &str,
        synsets: &str,
        paraphrases: &str,
    ) -> Result<Self, MeteorError> {
        let synonyms =
            data::Synonyms::parse(exceptions, synsets).map_err(|msg| MeteorError::Format {
                path: PathBuf::from("synsets"),
                msg,
            })?;
        Ok(Self::from_resources(Resources {
            function_words: data::parse_function_words(function_words),
            nbp: normalize::parse_nbp(nonbreaking_prefixes),
            synonyms,
            paraphrases: data::Paraphrases::parse(paraphrases),
        }))
    }

    fn from_resources(res: Resources) -> Self {
        Self {
            res,
            stemmer: rust_stemmers::Stemmer::create(rust_stemmers::Algorithm::English),
        }
    }

    /// A caption as METEOR sees it: normalised, lower-cased, split into words.
    pub fn normalize(&self, caption: &str) -> Vec<String> {
        normalize::java_tokens(&normalize::normalize(caption, &self.res.nbp))
            .map(str::to_owned)
            .collect()
    }

    fn sentence(&self, caption: &str) -> Sentence {
        Sentence::new(self.normalize(caption), &self.res, &self.stemmer)
    }

    /// One image's tokenised references, normalised and looked up once, for scoring many
    /// candidates against them (as a self-critical reward does) with [`Meteor::stats_prepared`].
    pub fn prepare<S: AsRef<str>>(&self, references: &[S]) -> MeteorReferences {
        // The jar splits each reference line at `|||` and trims the parts.
        let sentences = references
            .iter()
            .flat_map(|r| r.as_ref().split("|||"))
            .map(|part| self.sentence(normalize::java_trim(part)))
            .collect();
        MeteorReferences { sentences }
    }

    /// Statistics of one candidate against its references (`SCORE`), all *tokenised* as
    /// pycocoevalcap hands them over ([`crate::tokenizer`]).
    pub fn stats<S: AsRef<str>>(&self, references: &[S], candidate: &str) -> MeteorStats {
        self.stats_prepared(&self.prepare(references), candidate)
    }

    /// [`Meteor::stats`] against references made by [`Meteor::prepare`].
    pub fn stats_prepared(&self, references: &MeteorReferences, candidate: &str) -> MeteorStats {
        // meteor.py drops `|||` from the hypothesis.
        let hyp = candidate.replace("|||", "");
        let hyp = self.sentence(normalize::java_trim(&hyp));
        let mut best: Option<(f64, MeteorStats)> = None;
        for reference in &references.sentences {
            let stats = self.pair_stats(&hyp, reference);
            let score = stats.score();
            if best.as_ref().is_none_or(|(b, _)| score > *b) {
                best = Some((score, stats));
            }
        }
        best.map(|(_, s)| s).unwrap_or_default()
    }

    /// Per-image METEOR of one candidate against its tokenised references.
    pub fn score<S: AsRef<str>>(&self, references: &[S], candidate: &str) -> f64 {
        self.stats(references, candidate).score()
    }

    /// [`Meteor::score`] against references made by [`Meteor::prepare`].
    pub fn score_prepared(&self, references: &MeteorReferences, candidate: &str) -> f64 {
        self.stats_prepared(references, candidate).score()
    }

    fn pair_stats(&self, hyp: &Sentence, reference: &Sentence) -> MeteorStats {
        let a = align::align(hyp, reference, &self.res);
        let mut s = MeteorStats {
            test_length: hyp.len() as u64,
            reference_length: reference.len() as u64,
            test_function_words: hyp.function.iter().filter(|&&f| f).count() as u64,
            reference_function_words: reference.function.iter().filter(|&&f| f).count() as u64,
            chunks: a.chunks as u64,
            ..Default::default()
        };
        for m in a.matches.iter().flatten() {
            let mm = &mut s.module_matches[m.module];
            for k in 0..m.match_length {
                mm[if hyp.function[m.match_start + k] {
                    2
                } else {
                    0
                }] += 1;
            }
            for k in 0..m.length {
                mm[if reference.function[m.start + k] {
                    3
                } else {
                    1
                }] += 1;
            }
        }
        s.test_word_matches = s.test_total_matches();
        s.reference_word_matches = s.reference_total_matches();
        s
    }

    /// Corpus and per-image METEOR of tokenised captions (`references[i]` are the references
    /// of `candidates[i]`), as pycocoevalcap's `Meteor().compute_score` computes them.
    pub fn evaluate_tokenized<R: AsRef<str> + Sync, C: AsRef<str> + Sync>(
        &self,
        references: &[Vec<R>],
        candidates: &[C],
    ) -> Result<MeteorScores, MetricsError> {
        check_shapes(
            references.iter().map(Vec::len),
            references.len(),
            candidates.len(),
        )?;
        let stats: Vec<MeteorStats> = references
            .par_iter()
            .zip(candidates)
            .map(|(refs, cand)| self.stats(refs, cand.as_ref()))
            .collect();
        Ok(MeteorScores {
            corpus: corpus_score(&stats),
            per_image: stats.iter().map(MeteorStats::score).collect(),
            stats,
        })
    }

    /// Like [`Meteor::evaluate_tokenized`] for raw captions, tokenised as
    /// [`crate::evaluate`] tokenises them (references in one call, candidates in another).
    pub fn evaluate<R: AsRef<str> + Sync, C: AsRef<str> + Sync>(
        &self,
        references: &[Vec<R>],
        candidates: &[C],
    ) -> Result<MeteorScores, MetricsError> {
        let (refs, cands) = crate::tokenize_pairs(references, candidates)?;
        self.evaluate_tokenized(&refs, &cands)
    }
}

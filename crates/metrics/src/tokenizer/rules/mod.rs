//! The token rules of the Stanford PTBLexer (CoreNLP 3.4.1, `PTBLexer.flex`) with the options
//! pycocoevalcap runs it with (`-preserveLines -lowerCase`, PTB3 escaping, no americanisation).
//!
//! JFlex picks the rule with the longest match, trailing context included, and the earliest rule
//! on a tie. Each matcher below returns how many characters it would match in total and how many
//! of those form the token; [`best_match`] applies the JFlex choice. Rules whose only effect is a
//! token pycocoevalcap deletes afterwards (the duplicated sentence-final period after `U.S.`) are
//! folded into the rule they duplicate.

mod abbrev;
mod numbers;
mod symbols;
mod words;

use abbrev::abbreviation;
use numbers::{currency, date, frac, frac2, number, phone};
use symbols::{
    double_quote, entities, misc_symbol, open_single_quote, punctuation, quotes, sgml, skip,
    smiley, subsupnum, twitter, url,
};
use words::{
    apoword, apoword2, cannot, hthing_rule, redaux_ctx, sredaux_rule, sword_sredaux, tbspec,
    tbspec2, thing3, thing_rule, thinga, word_dot, word_redaux, word_rule,
};

/// What to do with the matched characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Emit the text as matched (soft hyphens removed).
    Plain,
    /// Emit a fixed string.
    Fixed(&'static str),
    /// A quote the lexer believes opens (`` ` `` / ``` `` ```).
    QuoteLeft,
    /// A quote the lexer believes closes (`'` / `''`).
    QuoteRight,
    /// Fractions and phone numbers: spaces become U+00A0, parentheses become `-LRB-`/`-RRB-`.
    SpaceToNbsp,
    /// `¼ ½ ¾ ⅓` spelled out.
    Fraction,
    /// Currency symbols mapped to the PTB3 `$`, `#`, `cents`.
    Currency,
    /// `&amp;` normalised to `&`.
    Amp,
    /// Consumed without a token (spaces, control and untokenizable characters).
    Skip,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Match {
    /// Characters matched including trailing context; decides between rules.
    pub total: usize,
    /// Characters that form the token (the rest is pushed back).
    pub token: usize,
    pub action: Action,
}

fn m(total: usize, token: usize, action: Action) -> Option<Match> {
    (total > 0 && token > 0).then_some(Match {
        total,
        token,
        action,
    })
}

/// Case-insensitive (ASCII) literal at `i`; JFlex `%caseless` applies to literal strings.
fn lit(s: &[char], i: usize, word: &str) -> bool {
    let mut k = i;
    for w in word.chars() {
        match s.get(k) {
            Some(c) if c.eq_ignore_ascii_case(&w) => k += 1,
            _ => return false,
        }
    }
    true
}

/// Like [`lit`], but an entry starting with `=` keeps its first letter case-sensitive, as the
/// lexer does with `[A]rk` or `[M]iss` so that common lower-case words are not abbreviations.
fn lit_list(s: &[char], i: usize, list: &[&str]) -> usize {
    let mut best = 0;
    for entry in list {
        let (exact_first, word) = match entry.strip_prefix('=') {
            Some(rest) => (true, rest),
            None => (false, *entry),
        };
        if exact_first && s.get(i).copied() != word.chars().next() {
            continue;
        }
        if lit(s, i, word) {
            best = best.max(word.chars().count());
        }
    }
    best
}

fn run(s: &[char], i: usize, f: impl Fn(char) -> bool) -> usize {
    s[i.min(s.len())..].iter().take_while(|&&c| f(c)).count()
}

fn at(s: &[char], i: usize, f: impl Fn(char) -> bool) -> bool {
    s.get(i).is_some_and(|&c| f(c))
}

type Rule = fn(&[char], usize) -> Option<Match>;

/// The rules in the order of `PTBLexer.flex`, which breaks ties between equally long matches.
const RULES: &[Rule] = &[
    cannot,
    sgml,
    entities,
    word_redaux,
    sword_sredaux,
    word_rule,
    apoword,
    apoword2,
    url,
    redaux_ctx,
    sredaux_rule,
    date,
    number,
    subsupnum,
    frac,
    frac2,
    tbspec,
    thing3,
    currency,
    abbreviation,
    tbspec2,
    word_dot,
    phone,
    double_quote,
    smiley,
    twitter,
    punctuation,
    hthing_rule,
    thing_rule,
    thinga,
    open_single_quote,
    quotes,
    misc_symbol,
    skip,
];

/// The JFlex choice at `i`: the longest match, the earliest rule on a tie. `None` means the
/// character is untokenizable (the lexer deletes it).
pub(crate) fn best_match(s: &[char], i: usize) -> Option<Match> {
    let mut best: Option<Match> = None;
    for rule in RULES {
        if let Some(found) = rule(s, i) {
            if best.is_none_or(|b| found.total > b.total) {
                best = Some(found);
            }
        }
    }
    best
}

//! Caption tokenisation identical to `pycocoevalcap/tokenizer/ptbtokenizer.py` (pycocoevalcap
//! 1.2): the Stanford PTBTokenizer of CoreNLP 3.4.1 run with `-preserveLines -lowerCase`, then
//! the removal of the punctuation tokens listed in that file.
//!
//! Two quirks of the reference are reproduced on purpose because they change scores:
//! - the punctuation list holds `-LRB-` and friends in upper case while the tokens are already
//!   lower-cased, so `-lrb-`, `-rrb-`, `-lsb-`, ... stay in the output;
//! - fractions and phone numbers keep a non-breaking space inside one token (`22\u{a0}3/4`),
//!   which BLEU and CIDEr later split (Python `str.split()`) and ROUGE-L does not
//!   (`str.split(" ")`). See [`crate::words`].
//!
//! Known limits: pycocoevalcap writes all captions into one file, so a caption containing a
//! line break other than `\n` (`\r`, U+2028, ...) shifts every later caption onto the wrong image
//! there; here such characters separate tokens like spaces. The lexer rules are a hand port
//! checked against the Java tokenizer on all Flickr8k and COCO val2017 captions (identical) and
//! on 4,000 random glued-punctuation strings (8 still differ: an abbreviation glued to a letter,
//! `Jan.a`, and `1990sA.B.C`); rare non-ASCII inputs may also differ (character classes use
//! Rust's Unicode tables).

mod chars;
mod rules;

pub use chars::is_python_space;

use rayon::prelude::*;
use rules::{best_match, Action};

/// The tokens pycocoevalcap deletes after tokenising (`PUNCTUATIONS` in `ptbtokenizer.py`).
const PUNCTUATIONS: &[&str] = &[
    "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
    "...", ";",
];

/// Tokenise one caption as pycocoevalcap does when it is the only caption in the call, and
/// return its tokens joined by single spaces (the string pycocoevalcap hands to the scorers).
pub fn tokenize(caption: &str) -> String {
    tokenize_all(&[caption]).pop().unwrap_or_default()
}

/// Tokenise captions as one pycocoevalcap `PTBTokenizer.tokenize` call does: the captions are
/// lexed as one text, one per line, in this order. The order matters in rare cases because the
/// lexer looks past a line end (a single letter plus period, `K.`, ends a sentence only when the
/// next line starts with a capital).
///
/// Large inputs are lexed in parallel chunks; each chunk also sees the captions after it up to
/// the next non-blank one, which is as far as any rule looks past a line end, so the result is
/// the same as one sequential pass.
pub fn tokenize_all<S: AsRef<str> + Sync>(captions: &[S]) -> Vec<String> {
    const CHUNK: usize = 512;
    if captions.len() <= 2 * CHUNK {
        return tokenize_lines(captions, 0);
    }
    let starts: Vec<usize> = (0..captions.len()).step_by(CHUNK).collect();
    starts
        .par_iter()
        .flat_map_iter(|&start| {
            let end = (start + CHUNK).min(captions.len());
            let mut context_end = end;
            while context_end < captions.len() {
                context_end += 1;
                if !captions[context_end - 1].as_ref().trim().is_empty() {
                    break;
                }
            }
            let mut lines = tokenize_lines(&captions[start..context_end], context_end - end);
            lines.truncate(end - start);
            lines
        })
        .collect()
}

/// Tokenise `captions` as one text; the last `context` captions only serve as look-ahead.
fn tokenize_lines<S: AsRef<str>>(captions: &[S], context: usize) -> Vec<String> {
    let mut lines = ptb_lines(captions);
    lines.truncate(captions.len() - context);
    lines
        .into_iter()
        .map(|tokens| filter_punctuation(&tokens.join(" ")))
        .collect()
}

/// pycocoevalcap: `' '.join(w for w in line.rstrip().split(' ') if w not in PUNCTUATIONS)`.
fn filter_punctuation(line: &str) -> String {
    let kept: Vec<&str> = line
        .trim_end_matches(is_python_space)
        .split(' ')
        .filter(|w| !PUNCTUATIONS.contains(w))
        .collect();
    kept.join(" ")
}

/// The raw PTBTokenizer tokens of one caption, lower-cased, before pycocoevalcap removes
/// punctuation.
pub fn ptb_tokens(caption: &str) -> Vec<String> {
    ptb_lines(&[caption]).pop().unwrap_or_default()
}

/// Lex the captions joined by `\n` and split the tokens back into one list per caption.
fn ptb_lines<S: AsRef<str>>(captions: &[S]) -> Vec<Vec<String>> {
    let mut text: Vec<char> = Vec::new();
    for (k, caption) in captions.iter().enumerate() {
        if k > 0 {
            text.push('\n');
        }
        // pycocoevalcap replaces `\n` inside a caption with a space. The other line breaks the
        // Java lexer knows would shift its output lines against the captions; they are spaces
        // here.
        text.extend(caption.as_ref().chars().map(|c| match c {
            '\n' | '\r' | '\u{2028}' | '\u{2029}' | '\u{0B}' | '\u{0C}' => ' ',
            other => other,
        }));
    }
    let mut lines = vec![Vec::new(); captions.len()];
    let mut line = 0;
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        if c == '\n' {
            line += 1;
            i += 1;
            continue;
        }
        if c == ' ' {
            i += 1;
            continue;
        }
        if let Some(n) = plain_word(&text, i) {
            lines[line].push(
                text[i..i + n]
                    .iter()
                    .map(char::to_ascii_lowercase)
                    .collect(),
            );
            i += n;
            continue;
        }
        let Some(found) = best_match(&text, i) else {
            // Untokenizable character: the lexer drops it (its default `firstDelete`).
            i += 1;
            continue;
        };
        let piece: String = text[i..i + found.token].iter().collect();
        i += found.token;
        if let Some(tok) = apply(found.action, &piece) {
            lines[line].push(tok.to_lowercase());
        }
    }
    lines
}

/// Fast path: an ASCII letter run followed by a space or line end can only be a `{WORD}` (no
/// rule matches longer: they all need a character other than a letter), except for `cannot`
/// and the assimilations (`gonna`, ...), which win the tie with `{WORD}` and split.
fn plain_word(text: &[char], i: usize) -> Option<usize> {
    let n = text[i..]
        .iter()
        .take_while(|c| c.is_ascii_alphabetic())
        .count();
    let next = text.get(i + n).copied();
    let ends = matches!(next, None | Some(' ') | Some('\n'));
    let splits = (n == 5 || n == 6)
        && ["cannot", "gonna", "gotta", "lemme", "gimme", "wanna"]
            .iter()
            .any(|w| {
                w.len() == n
                    && text[i..i + n]
                        .iter()
                        .map(|c| c.to_ascii_lowercase())
                        .eq(w.chars())
            });
    (n > 0 && ends && !splits).then_some(n)
}

fn apply(action: Action, text: &str) -> Option<String> {
    let out = match action {
        Action::Skip => return None,
        Action::Plain => text.replace('\u{AD}', ""),
        Action::Fixed(f) => f.to_string(),
        Action::QuoteLeft => latex_quotes(text, true),
        Action::QuoteRight => latex_quotes(text, false),
        Action::SpaceToNbsp => text
            .replace(' ', "\u{A0}")
            .replace('(', "-LRB-")
            .replace(')', "-RRB-"),
        Action::Fraction => text
            .replace('\u{BC}', "1/4")
            .replace('\u{BD}', "1/2")
            .replace('\u{BE}', "3/4")
            .replace('\u{2153}', "1/3"),
        Action::Currency => text
            .replace('\u{A2}', "cents")
            .replace('\u{A3}', "#")
            .replace(['\u{80}', '\u{A4}', '\u{20A0}', '\u{20AC}'], "$"),
        Action::Amp => replace_caseless(text, "&amp;", "&"),
    };
    Some(out)
}

/// The lexer's `latexQuotes`: ASCII quotes become `` ` ``/`` `` `` when opening and `'`/`''`
/// when closing; curly quotes map by their direction.
fn latex_quotes(text: &str, probably_left: bool) -> String {
    let s = text.replace("&apos;", "'").replace("&quot;", "\"");
    let (single, double) = if probably_left {
        ("`", "``")
    } else {
        ("'", "''")
    };
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '\'' => out.push_str(single),
            '"' => out.push_str(double),
            '\u{91}' | '\u{2018}' | '\u{201B}' | '\u{2039}' => out.push('`'),
            '\u{92}' | '\u{2019}' | '\u{203A}' => out.push('\''),
            '\u{93}' | '\u{201C}' | '\u{AB}' => out.push_str("``"),
            '\u{94}' | '\u{201D}' | '\u{BB}' => out.push_str("''"),
            other => out.push(other),
        }
    }
    out
}

fn replace_caseless(text: &str, from: &str, to: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(pos) = lower[i..].find(from) {
        out.push_str(&text[i..i + pos]);
        out.push_str(to);
        i += pos + from.len();
    }
    out.push_str(&text[i..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_caption() {
        assert_eq!(
            tokenize("A dog's ball, isn't it? (Mr. Smith) \"Yes\"."),
            "a dog 's ball is n't it -lrb- mr. smith -rrb- yes"
        );
    }

    #[test]
    fn fraction_keeps_nbsp() {
        assert_eq!(tokenize("22 3/4 St."), "22\u{a0}3/4 st.");
    }

    #[test]
    fn empty_and_punctuation_only() {
        assert_eq!(tokenize(""), "");
        assert_eq!(tokenize(" ... !"), "");
    }
}

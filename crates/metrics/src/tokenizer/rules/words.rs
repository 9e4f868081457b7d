//! Word-like rules of the PTBLexer (CoreNLP 3.4.1 `PTBLexer.flex`): `{WORD}`, the clitic splits
//! (`{REDAUX}`, `{SREDAUX}`), apostrophe words, hyphenated and slashed compounds.

use super::abbrev::acro;
use super::{at, lit, lit_list, m, run, Action, Match};
use crate::tokenizer::chars::*;

/// `{WORD}`: letters and digits starting with a letter, with inner `.`, `!`, `?` between runs.
pub(super) fn word(s: &[char], i: usize) -> usize {
    if !at(s, i, is_letter) {
        return 0;
    }
    let mut end = i + 1 + run(s, i + 1, is_alnum);
    while at(s, end, |c| matches!(c, '.' | '!' | '?')) && at(s, end + 1, is_letter) {
        end += 2 + run(s, end + 2, is_alnum);
    }
    end - i
}

/// `{REDAUX}`: `'s 'm 'd 're 've 'll`.
pub(super) fn redaux(s: &[char], i: usize) -> usize {
    if !at(s, i, is_apos) {
        return 0;
    }
    if lit(s, i + 1, "re") || lit(s, i + 1, "ve") || lit(s, i + 1, "ll") {
        3
    } else if at(s, i + 1, |c| matches!(c, 'm' | 's' | 'd' | 'M' | 'S' | 'D')) {
        2
    } else {
        0
    }
}

/// `{SREDAUX}`: `n't`.
pub(super) fn sredaux(s: &[char], i: usize) -> usize {
    if lit(s, i, "n") && at(s, i + 1, is_apos_etc) && lit(s, i + 2, "t") {
        3
    } else {
        0
    }
}

/// `cannot` and the assimilations `gonna`, `gotta`, `lemme`, `gimme`, `wanna`: split after
/// their third letter (`can not`, `gon na`); `'tis`, `'twas` after `'t`.
pub(crate) fn cannot(s: &[char], i: usize) -> Option<Match> {
    for w in ["cannot", "gonna", "gotta", "lemme", "gimme", "wanna"] {
        if lit(s, i, w) {
            return m(w.len(), 3, Action::Plain);
        }
    }
    if at(s, i, is_apos) && lit(s, i + 1, "t") {
        for rest in ["is", "was"] {
            if lit(s, i + 2, rest) {
                return m(2 + rest.len(), 2, Action::Plain);
            }
        }
    }
    None
}

/// `{WORD}/{REDAUX}`: the word in front of `'s`, `'ll`, ...
pub(crate) fn word_redaux(s: &[char], i: usize) -> Option<Match> {
    let w = word(s, i);
    let r = if w > 0 { redaux(s, i + w) } else { 0 };
    if r > 0 {
        m(w + r, w, Action::Plain)
    } else {
        None
    }
}

/// `{SWORD}/{SREDAUX}`: the word in front of `n't` (`do` of `don't`).
pub(crate) fn sword_sredaux(s: &[char], i: usize) -> Option<Match> {
    let letters = run(s, i, |c| c.is_alphabetic() || c == '\u{AD}');
    // The `n` of `n't` belongs to the letter run; SWORD needs at least one letter before it,
    // and that letter may not be an `n` itself.
    if letters < 2 {
        return None;
    }
    let n_at = i + letters - 1;
    let mut last = n_at - 1;
    while last > i && s[last] == '\u{AD}' {
        last -= 1;
    }
    if sredaux(s, n_at) == 3 && s[last].is_ascii_alphabetic() && !matches!(s[last], 'n' | 'N') {
        m(letters + 2, letters - 1, Action::Plain)
    } else {
        None
    }
}

pub(crate) fn word_rule(s: &[char], i: usize) -> Option<Match> {
    let w = word(s, i);
    m(w, w, Action::Plain)
}

/// `{APOWORD}`: words with an inner or leading apostrophe that stay whole (`o'clock`, `'n'`).
pub(crate) fn apoword(s: &[char], i: usize) -> Option<Match> {
    let mut best = 0;
    let apos = |k: usize| at(s, k, is_apos);
    if apos(i) && lit(s, i + 1, "n") {
        best = best.max(if apos(i + 2) { 3 } else { 2 });
    }
    if at(s, i, |c| matches!(c, 'l' | 'L' | 'd' | 'D' | 'j' | 'J')) && apos(i + 1) {
        best = best.max(2);
    }
    for w in ["dunkin", "somethin", "ol"] {
        if lit(s, i, w) && apos(i + w.len()) {
            best = best.max(w.len() + 1);
        }
    }
    if apos(i) && lit(s, i + 1, "em") {
        best = best.max(3);
    }
    if at(s, i, |c| matches!(c, 'A'..='H' | 'J'..='X' | 'Z' | 'n')) && at(s, i + 1, is_apos_etc) {
        let l = run(s, i + 2, is_letter);
        if l >= 2 {
            best = best.max(2 + l);
        }
    }
    if apos(i)
        && at(s, i + 1, |c| ('2'..='9').contains(&c))
        && at(s, i + 2, |c| c == '0')
        && lit(s, i + 3, "s")
    {
        best = best.max(4);
    }
    if apos(i) && lit(s, i + 1, "til") {
        best = best.max(if lit(s, i + 4, "l") { 5 } else { 4 });
    }
    let letters = run(s, i, is_letter);
    if letters >= 2 {
        let p = i + letters;
        let vowel = |c: char| "aeiouyAEIOUY".contains(c);
        if at(s, p - 1, vowel)
            && at(s, p, is_apos_etc)
            && at(s, p + 1, |c| "aeiou".contains(c) || c.is_ascii_uppercase())
        {
            best = best.max(letters + 2 + run(s, p + 2, is_letter));
        }
    }
    if apos(i) && lit(s, i + 1, "cause") {
        best = best.max(6);
    }
    if lit(s, i, "cont'd") {
        best = best.max(if at(s, i + 6, |c| c == '.') { 7 } else { 6 });
    }
    let fixed = [
        "'twas",
        "nor'easter",
        "c'mon",
        "e'er",
        "s'mores",
        "ev'ry",
        "li'l",
        "nat'l",
    ];
    best = best.max(lit_list(s, i, &fixed));
    m(best, best, Action::Plain)
}

/// `{APOWORD2}/[:letter:]`: the `y'` of `y'all`.
pub(crate) fn apoword2(s: &[char], i: usize) -> Option<Match> {
    if lit(s, i, "y") && at(s, i + 1, is_apos) && at(s, i + 2, is_letter) {
        m(3, 2, Action::Plain)
    } else {
        None
    }
}

/// `{REDAUX}/[^A-Za-z]`: `'s` and friends as their own token.
pub(crate) fn redaux_ctx(s: &[char], i: usize) -> Option<Match> {
    let r = redaux(s, i);
    if r > 0 && !at(s, i + r, |c| c.is_ascii_alphabetic()) {
        m(r + 1, r, Action::QuoteRight)
    } else {
        None
    }
}

pub(crate) fn sredaux_rule(s: &[char], i: usize) -> Option<Match> {
    let r = sredaux(s, i);
    m(r, r, Action::QuoteRight)
}

/// `{TBSPEC}`: tokens the Treebank spells specially.
pub(crate) fn tbspec(s: &[char], i: usize) -> Option<Match> {
    let list = [
        "-RRB-",
        "-LRB-",
        "-RCB-",
        "-LCB-",
        "-RSB-",
        "-LSB-",
        "C.D.s",
        "pro-",
        "anti-",
        "S&P-500",
        "S&amp;P-500",
        "S&Ls",
        "S&amp;Ls",
    ];
    let mut best = lit_list(s, i, &list);
    for w in [("cap", "n"), ("c", "est")] {
        if lit(s, i, w.0) && at(s, i + w.0.len(), is_apos) && lit(s, i + w.0.len() + 1, w.1) {
            best = best.max(w.0.len() + 1 + w.1.len());
        }
    }
    m(best, best, Action::Amp)
}

/// One `[A-Za-z0-9]+(-[A-Za-z]+){0,2}` unit of `{THING3}`.
fn thing3_unit(s: &[char], k: usize) -> usize {
    let a = run(s, k, |c| c.is_ascii_alphanumeric());
    if a == 0 {
        return 0;
    }
    let mut end = k + a;
    for _ in 0..2 {
        let h = if at(s, end, |c| c == '-') {
            run(s, end + 1, |c| c.is_ascii_alphabetic())
        } else {
            0
        };
        if h == 0 {
            break;
        }
        end += 1 + h;
    }
    end - k
}

/// `{THING3}`: slash compounds such as `and/or`, `tub/shower`.
pub(crate) fn thing3(s: &[char], i: usize) -> Option<Match> {
    let first = thing3_unit(s, i);
    if first == 0 {
        return None;
    }
    let mut end = i + first;
    let mut parts = 0;
    while parts < 2 {
        let mut k = end;
        if at(s, k, |c| c == '\\') {
            k += 1;
        }
        if !at(s, k, |c| c == '/') {
            break;
        }
        let u = thing3_unit(s, k + 1);
        if u == 0 {
            break;
        }
        end = k + 1 + u;
        parts += 1;
    }
    if parts == 0 {
        None
    } else {
        m(end - i, end - i, Action::Plain)
    }
}

/// `{TBSPEC2}/{SPACENL}`: `'90` in front of a space.
pub(crate) fn tbspec2(s: &[char], i: usize) -> Option<Match> {
    if at(s, i, is_apos)
        && at(s, i + 1, |c| c.is_ascii_digit())
        && at(s, i + 2, |c| c.is_ascii_digit())
        && at(s, i + 3, is_space_nl)
    {
        m(4, 3, Action::Plain)
    } else {
        None
    }
}

/// `{WORD}\./{INSENTP}`: `word.` directly followed by `,`, `;` or `:` keeps its period.
pub(crate) fn word_dot(s: &[char], i: usize) -> Option<Match> {
    let w = word(s, i);
    dot_insentp(s, i, w)
}

pub(super) fn dot_insentp(s: &[char], i: usize, len: usize) -> Option<Match> {
    if len > 0
        && at(s, i + len, |c| c == '.')
        && at(s, i + len + 1, |c| matches!(c, ',' | ';' | ':'))
    {
        m(len + 2, len + 1, Action::Plain)
    } else {
        None
    }
}

/// `{HTHING}`: hyphenated tokens whose first part may contain `.` or `,` (`p-51`, `b-25`).
fn hthing(s: &[char], i: usize) -> usize {
    if !at(s, i, |c| c.is_ascii_alphanumeric()) {
        return 0;
    }
    let head = 1 + run(s, i + 1, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | ',' | '\u{AD}')
    });
    // The head is greedy but must be followed by `-`; back off to the last such position.
    let mut best = 0;
    for h in (1..=head).rev() {
        let mut k = i + h;
        let mut parts = 0;
        while at(s, k, |c| c == '-') {
            let a = run(s, k + 1, |c| c.is_ascii_alphanumeric() || c == '\u{AD}');
            let ac = acro(s, k + 1);
            let acro_dot = if ac > 1 && at(s, k + 1 + ac, |c| c == '.') {
                ac + 1
            } else {
                0
            };
            let step = a.max(acro_dot);
            if step == 0 {
                break;
            }
            k += 1 + step;
            parts += 1;
        }
        if parts > 0 {
            best = best.max(k - i);
        }
    }
    best
}

/// `{THING}`: letters and digits joined by hyphens or underscores (`t-shirt`, `4-wheeler`).
fn thing(s: &[char], i: usize) -> usize {
    let part = |k: usize| -> usize {
        let mut p = k;
        if at(s, p, |c| matches!(c, 'd' | 'D' | 'o' | 'O' | 'l' | 'L'))
            && at(s, p + 1, is_apos_etc)
            && at(s, p + 2, is_alnum)
        {
            p += 3;
        }
        let mut a = run(s, p, is_alnum);
        if a == 0 {
            // The optional `d'` prefix needs letters after it; without them JFlex backtracks to
            // no prefix, and the part is the plain alphanumeric run.
            p = k;
            a = run(s, p, is_alnum);
            if a == 0 {
                return 0;
            }
        }
        p + a - k
    };
    let first = part(i);
    if first == 0 {
        return 0;
    }
    let mut end = i + first;
    while at(s, end, is_hyphen) {
        let p = part(end + 1);
        if p == 0 {
            break;
        }
        end += 1 + p;
    }
    end - i
}

pub(crate) fn hthing_rule(s: &[char], i: usize) -> Option<Match> {
    let h = hthing(s, i);
    dot_insentp(s, i, h).or_else(|| m(h, h, Action::Plain))
}

pub(crate) fn thing_rule(s: &[char], i: usize) -> Option<Match> {
    let t = thing(s, i);
    dot_insentp(s, i, t).or_else(|| m(t, t, Action::Plain))
}

/// `{THINGA}`: upper-case compounds joined by `&` or `+` (`AT&T`).
pub(crate) fn thinga(s: &[char], i: usize) -> Option<Match> {
    let caps = |k: usize| run(s, k, |c| c.is_ascii_uppercase());
    let first = caps(i);
    if first == 0 {
        return None;
    }
    let mut end = i + first;
    let mut parts = 0;
    loop {
        let joint = if at(s, end, |c| c == '+' || c == '&') {
            1
        } else if lit(s, end, "&amp;") {
            5
        } else {
            0
        };
        if joint == 0 || caps(end + joint) == 0 {
            break;
        }
        end += joint + caps(end + joint);
        parts += 1;
    }
    if parts == 0 {
        return None;
    }
    dot_insentp(s, i, end - i).or_else(|| m(end - i, end - i, Action::Amp))
}

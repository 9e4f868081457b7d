//! Number rules of the PTBLexer (CoreNLP 3.4.1 `PTBLexer.flex`): `{DATE}`, `{NUMBER}`, `{FRAC}`,
//! `{FRAC2}`, `{PHONE}` and the currency signs.

use super::{at, m, run, Action, Match};
use crate::tokenizer::chars::*;

/// `{DATE}`: `1/2/2003`, `10-29-2011`.
pub(crate) fn date(s: &[char], i: usize) -> Option<Match> {
    let a = run(s, i, is_digit);
    if !(1..=2).contains(&a) || !at(s, i + a, |c| c == '-' || c == '/') {
        return None;
    }
    let k = i + a + 1;
    let b = run(s, k, is_digit);
    if !(1..=2).contains(&b) || !at(s, k + b, |c| c == '-' || c == '/') {
        return None;
    }
    let k = k + b + 1;
    let c = run(s, k, is_digit).min(4);
    if c >= 2 {
        m(k + c - i, k + c - i, Action::Plain)
    } else {
        None
    }
}

/// `{NUMBER}`: optional sign, digits with `.`, `:` or `,` groups (`12:43`, `1,000.5`).
pub(crate) fn number(s: &[char], i: usize) -> Option<Match> {
    let mut k = i;
    if at(s, k, |c| c == '-' || c == '+') {
        k += 1;
    }
    let lead = run(s, k, is_digit);
    k += lead;
    let mut groups = 0;
    while at(s, k, |c| matches!(c, '.' | ':' | ',' | '\u{AD}')) && at(s, k + 1, is_digit) {
        k += 1 + run(s, k + 1, is_digit);
        groups += 1;
    }
    if lead == 0 && groups == 0 {
        return None;
    }
    m(k - i, k - i, Action::Plain)
}

/// `{FRAC}`: `3/4`, `1 1/2`, `1-1/2` (digit runs of at most four).
pub(crate) fn frac(s: &[char], i: usize) -> Option<Match> {
    let simple = |k: usize| -> usize {
        let a = run(s, k, is_digit);
        if !(1..=4).contains(&a) {
            return 0;
        }
        let mut p = k + a;
        if at(s, p, |c| c == '\\') && at(s, p + 1, |c| c == '/') {
            p += 2;
        } else if at(s, p, |c| c == '/' || c == '\u{2044}') {
            p += 1;
        } else {
            return 0;
        }
        let b = run(s, p, is_digit).min(4);
        if b == 0 {
            0
        } else {
            p + b - k
        }
    };
    let mut best = simple(i);
    let a = run(s, i, is_digit);
    if (1..=4).contains(&a) && at(s, i + a, |c| matches!(c, '-' | ' ' | '\u{A0}')) {
        let rest = simple(i + a + 1);
        if rest > 0 {
            best = best.max(a + 1 + rest);
        }
    }
    m(best, best, Action::SpaceToNbsp)
}

/// `{FRAC2}`: the precomposed fraction characters.
pub(crate) fn frac2(s: &[char], i: usize) -> Option<Match> {
    if at(s, i, |c| {
        matches!(c, '\u{BC}' | '\u{BD}' | '\u{BE}' | '\u{2153}'..='\u{215E}')
    }) {
        m(1, 1, Action::Fraction)
    } else {
        None
    }
}

/// `{DOLSIGN}` and `{DOLSIGN2}`.
pub(crate) fn currency(s: &[char], i: usize) -> Option<Match> {
    let caps = run(s, i, |c| c.is_ascii_uppercase());
    if at(s, i + caps, |c| c == '$') {
        return m(caps + 1, caps + 1, Action::Plain);
    }
    if at(s, i, |c| c == '#') {
        return m(1, 1, Action::Plain);
    }
    let dol2 = |c: char| {
        matches!(
            c,
            '\u{A2}'
                ..='\u{A5}'
                    | '\u{80}'
                    | '\u{20A0}'
                    | '\u{20AC}'
                    | '\u{060B}'
                    | '\u{0E3F}'
                    | '\u{20A4}'
                    | '\u{FFE0}'
                    | '\u{FFE1}'
                    | '\u{FFE5}'
                    | '\u{FFE6}'
        )
    };
    if at(s, i, dol2) {
        return m(1, 1, Action::Currency);
    }
    None
}

/// `{PHONE}` as CoreNLP 3.4.1 has it: `(555) 123-4567`, `555-123-4567`, `22 555-123-4567`,
/// `555.123.4567`; spaces inside become U+00A0.
pub(crate) fn phone(s: &[char], i: usize) -> Option<Match> {
    let digits = |k: usize| run(s, k, |c| c.is_ascii_digit());
    let sep = |k: usize| at(s, k, |c| matches!(c, '-' | ' ' | '\u{A0}'));
    let mut best = 0;
    // The tail `[0-9]{3,4}[- ]?[0-9]{3,5}` from `k`: its longest match end.
    let tail = |k: usize| -> Option<usize> {
        let a = digits(k);
        let mut end = None;
        for a_len in 3..=a.min(4) {
            let p = k + a_len;
            if a_len < a {
                // More digits follow directly: they can only be the second group.
                let b = digits(p).min(5);
                if b >= 3 {
                    end = end.max(Some(p + b));
                }
            } else if sep(p) {
                let b = digits(p + 1).min(5);
                if b >= 3 {
                    end = end.max(Some(p + 1 + b));
                }
            }
        }
        end
    };
    // `\([0-9]{2,3}\)[ ]?` prefix.
    if at(s, i, |c| c == '(') {
        let d = digits(i + 1);
        if (2..=3).contains(&d) && at(s, i + 1 + d, |c| c == ')') {
            let mut k = i + 2 + d;
            if at(s, k, |c| c == ' ' || c == '\u{A0}') {
                k += 1;
            }
            if let Some(e) = tail(k).or_else(|| tail(i + 2 + d)) {
                best = best.max(e - i);
            }
        }
    }
    // `(\+\+?)?([0-9]{2,4}[- ])?[0-9]{2,4}[- ]` prefix.
    let mut k0 = i;
    while k0 < i + 2 && at(s, k0, |c| c == '+') {
        k0 += 1;
    }
    let g1 = digits(k0);
    if (2..=4).contains(&g1) && sep(k0 + g1) {
        let k1 = k0 + g1 + 1;
        if let Some(e) = tail(k1) {
            best = best.max(e - i);
        }
        let g2 = digits(k1);
        if (2..=4).contains(&g2) && sep(k1 + g2) {
            if let Some(e) = tail(k1 + g2 + 1) {
                best = best.max(e - i);
            }
        }
    }
    // `((\+\+?)?[0-9]{2,4}\.)?[0-9]{2,4}\.[0-9]{3,4}\.[0-9]{3,5}`.
    let dotted = |k: usize| -> Option<usize> {
        let a = digits(k);
        if !(2..=4).contains(&a) || !at(s, k + a, |c| c == '.') {
            return None;
        }
        let b = digits(k + a + 1);
        if !(3..=4).contains(&b) || !at(s, k + a + 1 + b, |c| c == '.') {
            return None;
        }
        let c = digits(k + a + b + 2).min(5);
        (c >= 3).then_some(k + a + b + 2 + c)
    };
    if let Some(e) = dotted(k0) {
        best = best.max(e - i);
    }
    if (2..=4).contains(&g1) && at(s, k0 + g1, |c| c == '.') {
        if let Some(e) = dotted(k0 + g1 + 1) {
            best = best.max(e - i);
        }
    }
    m(best, best, Action::SpaceToNbsp)
}

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

/// `{PHONE}`: American phone numbers.
pub(crate) fn phone(s: &[char], i: usize) -> Option<Match> {
    let digits = |k: usize, n: usize| (0..n).all(|d| at(s, k + d, |c| c.is_ascii_digit()));
    let sep = |k: usize| at(s, k, |c| matches!(c, '-' | ' ' | '\u{A0}' | '.'));
    let mut k = i;
    if at(s, k, |c| c == '(') && digits(k + 1, 3) && at(s, k + 4, |c| c == ')') {
        k += 5;
        if at(s, k, |c| c == ' ' || c == '\u{A0}') {
            k += 1;
        }
    } else if digits(k, 3) && sep(k + 3) {
        k += 4;
    } else {
        return None;
    }
    if digits(k, 3) && sep(k + 3) && digits(k + 4, 4) {
        let n = k + 8 - i;
        m(n, n, Action::SpaceToNbsp)
    } else {
        None
    }
}

//! Punctuation, quotes, brackets, URLs and other symbol rules of the PTBLexer (CoreNLP 3.4.1
//! `PTBLexer.flex`).

use super::words::redaux;
use super::{at, lit, lit_list, m, run, Action, Match};
use crate::tokenizer::chars::*;

/// `{SGML}`: `<tag ...>` on one line.
pub(crate) fn sgml(s: &[char], i: usize) -> Option<Match> {
    if !at(s, i, |c| c == '<') {
        return None;
    }
    let mut k = i + 1;
    if at(s, k, |c| c == '/') {
        k += 1;
    }
    if !at(s, k, |c| c.is_ascii_alphabetic() || c == '!') {
        return None;
    }
    k += 1;
    k += run(s, k, |c| c != '>' && !is_newline(c));
    if at(s, k, |c| c == '>') {
        m(k + 1 - i, k + 1 - i, Action::Plain)
    } else {
        None
    }
}

/// `{SPMDASH}`, `{SPAMP}`, `{SPPUNC}`: SGML entities and dash characters.
pub(crate) fn entities(s: &[char], i: usize) -> Option<Match> {
    let dash = ["&MD;", "&mdash;", "&ndash;"];
    for d in dash {
        if lit(s, i, d) {
            let n = d.len();
            return m(n, n, Action::Fixed("--"));
        }
    }
    if at(s, i, |c| {
        matches!(
            c,
            '\u{96}' | '\u{97}' | '\u{2013}' | '\u{2014}' | '\u{2015}'
        )
    }) {
        return m(1, 1, Action::Fixed("--"));
    }
    if lit(s, i, "&amp;") {
        return m(5, 5, Action::Amp);
    }
    if at(s, i, |c| c == '&') {
        let n = lit_list(
            s,
            i + 1,
            &[
                "HT;", "TL;", "UR;", "LR;", "QC;", "QL;", "QR;", "odq;", "cdq;",
            ],
        );
        if n > 0 {
            return m(n + 1, n + 1, Action::Plain);
        }
        if at(s, i + 1, |c| c == '#') {
            let d = run(s, i + 2, |c| c.is_ascii_digit());
            if d > 0 && at(s, i + 2 + d, |c| c == ';') {
                return m(d + 3, d + 3, Action::Plain);
            }
        }
    }
    None
}

fn url_stop(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\n' | '\u{0C}' | '\r' | '"' | '<' | '>' | '|' | '(' | ')'
    )
}

fn url_end_ok(c: char) -> bool {
    !url_stop(c) && !matches!(c, '.' | '!' | '?' | '{' | '}' | ',' | '-')
}

/// `X+ Y` where `X` is `!url_stop` and `Y` is `url_end_ok`: the longest such run from `k`.
fn url_tail(s: &[char], k: usize) -> usize {
    let r = run(s, k, |c| !url_stop(c));
    (2..=r)
        .rev()
        .find(|&n| url_end_ok(s[k + n - 1]))
        .unwrap_or(0)
}

/// `{FULLURL}`, `{LIKELYURL}`, `{EMAIL}`.
pub(crate) fn url(s: &[char], i: usize) -> Option<Match> {
    let mut best = 0;
    for scheme in ["http://", "https://"] {
        if lit(s, i, scheme) {
            let t = url_tail(s, i + scheme.len());
            if t > 0 {
                best = best.max(scheme.len() + t);
            }
        }
    }
    // LIKELYURL, second form: labels of characters outside ` "`'<>|.!?(){}` and the range
    // `,`..`_` (a range by accident in the original class), then a .com/.net/.org/.edu.
    let label = |c: char| {
        !url_stop(c)
            && !matches!(
                c,
                '`' | '\'' | '.' | '!' | '?' | '{' | '}' | '$' | ','..='_'
            )
    };
    let mut k = i;
    loop {
        let l = run(s, k, label);
        if l == 0 || !at(s, k + l, |c| c == '.') {
            break;
        }
        k += l + 1;
        if ["com", "net", "org", "edu"].iter().any(|t| lit(s, k, t)) {
            let mut end = k + 3;
            if at(s, end, |c| c == '/') {
                end += 1 + url_tail(s, end + 1);
                if url_tail(s, k + 4) == 0 {
                    end = k + 3;
                }
            }
            best = best.max(end - i);
        }
    }
    // LIKELYURL, first form: www.<labels>.<2-4 letters>.
    if lit(s, i, "www.") {
        let label2 = |c: char| !url_stop(c) && !matches!(c, '.' | '!' | '?' | '{' | '}' | ',');
        let mut k = i + 4;
        loop {
            let l = run(s, k, label2);
            if l == 0 || !at(s, k + l, |c| c == '.') {
                break;
            }
            k += l + 1;
            let tld = run(s, k, |c| c.is_ascii_alphabetic());
            if tld >= 2 {
                let mut end = k + tld.min(4);
                if at(s, end, |c| c == '/') && url_tail(s, end + 1) > 0 {
                    end += 1 + url_tail(s, end + 1);
                }
                best = best.max(end - i);
            }
        }
    }
    best = best.max(email(s, i));
    m(best, best, Action::Plain)
}

/// `{EMAIL}` as CoreNLP 3.4.1 has it: a local part, `@`, dotted labels, and a last label
/// that may hold anything but spaces and `.` (so `foo@bar.org^;` is one token).
fn email(s: &[char], i: usize) -> usize {
    if !at(s, i, |c| c.is_ascii_alphanumeric()) {
        return 0;
    }
    let local_ok = |c: char| !url_stop(c) && !matches!(c, '\u{A0}' | '{' | '}');
    let label_ok = |c: char| !url_stop(c) && !matches!(c, '\u{A0}' | '{' | '}' | '.');
    let r = run(s, i, local_ok);
    let mut best = 0;
    for at_pos in (i + 1..i + r).filter(|&k| s[k] == '@') {
        let mut k = at_pos + 1;
        loop {
            let last = run(s, k, label_ok);
            if last > 0 {
                best = best.max(k + last - i);
            }
            let l = run(s, k, label_ok);
            if l == 0 || !at(s, k + l, |c| c == '.') {
                break;
            }
            k += l + 1;
        }
    }
    best
}

/// `{SMILEY}`: `:)`, `;-(`, `=D`, with parentheses spelled as in the Treebank.
pub(crate) fn smiley(s: &[char], i: usize) -> Option<Match> {
    let mut k = i;
    if at(s, k, |c| c == '<' || c == '>') {
        k += 1;
    }
    if !at(s, k, |c| matches!(c, ':' | ';' | '=')) {
        return None;
    }
    k += 1;
    if at(s, k, |c| matches!(c, '-' | 'o' | '*' | '\'')) {
        k += 1;
    }
    let mouth = |c: char| "()DPdpO\\{@|[]".contains(c);
    // Only when no letter or digit follows: `=dog` is `=` and `dog`.
    if at(s, k, mouth) && at(s, k + 1, |c| !c.is_ascii_alphanumeric()) {
        m(k + 1 - i, k + 1 - i, Action::SpaceToNbsp)
    } else {
        None
    }
}

/// `{DBLQUOT}`: `"` opens when a letter, digit or `$` follows, else it closes.
pub(crate) fn double_quote(s: &[char], i: usize) -> Option<Match> {
    let n = if at(s, i, |c| c == '"') {
        1
    } else if lit(s, i, "&quot;") {
        6
    } else {
        return None;
    };
    if at(s, i + n, |c| c.is_ascii_alphanumeric() || c == '$') {
        m(n + 1, n, Action::QuoteLeft)
    } else {
        m(n, n, Action::QuoteRight)
    }
}

/// Single-character symbols, brackets, dashes, dots and other punctuation.
pub(crate) fn punctuation(s: &[char], i: usize) -> Option<Match> {
    let c = s[i];
    let fixed = match c {
        '(' => Some("-LRB-"),
        ')' => Some("-RRB-"),
        '[' => Some("-LSB-"),
        ']' => Some("-RSB-"),
        '{' => Some("-LCB-"),
        '}' => Some("-RCB-"),
        _ => None,
    };
    if let Some(f) = fixed {
        return m(1, 1, Action::Fixed(f));
    }
    // `<<` and `>>` ("fake duck feet") stay together.
    if lit(s, i, "<<") || lit(s, i, ">>") {
        return m(2, 2, Action::Plain);
    }
    if lit(s, i, "&lt;") {
        return m(4, 4, Action::Fixed("<"));
    }
    if lit(s, i, "&gt;") {
        return m(4, 4, Action::Fixed(">"));
    }
    let same = |f: fn(char) -> bool| run(s, i, f);
    match c {
        '-' => {
            let n = same(|c| c == '-');
            let action = if (3..=4).contains(&n) {
                Action::Fixed("--")
            } else {
                Action::Plain
            };
            m(n, n, action)
        }
        '.' => {
            let n = same(|c| c == '.');
            if n >= 3 {
                let n = n.min(5);
                return m(n, n, Action::Fixed("..."));
            }
            // `. . .` spaced out: two to four `. ` pairs, then a period.
            let mut k = i;
            let mut best = 0;
            for pairs in 1..=4 {
                if !(at(s, k, |c| c == '.') && at(s, k + 1, |c| c == ' ' || c == '\u{A0}')) {
                    break;
                }
                k += 2;
                if pairs >= 2 && at(s, k, |c| c == '.') {
                    best = k + 1 - i;
                }
            }
            if best > 0 {
                return m(best, best, Action::Fixed("..."));
            }
            m(1, 1, Action::Plain)
        }
        '\u{85}' | '\u{2026}' => m(1, 1, Action::Fixed("...")),
        '@' => {
            let n = same(|c| c == '@');
            m(n, n, Action::Plain)
        }
        '#' => {
            let n = same(|c| c == '#');
            m(n, n, Action::Plain)
        }
        '_' => {
            let n = same(|c| c == '_');
            m(n, n, Action::Plain)
        }
        '*' => {
            let n = same(|c| c == '*');
            m(n, n, Action::Plain)
        }
        '\\' if at(s, i + 1, |c| c == '*') => {
            // `{ASTS}` also takes escaped asterisks: `\*`, up to three of them.
            let mut k = i;
            while k < i + 6 && lit(s, k, "\\*") {
                k += 2;
            }
            m(k - i, k - i, Action::Plain)
        }
        '?' | '!' => {
            let n = same(|c| c == '?' || c == '!');
            m(n, n, Action::Plain)
        }
        ','
        | ';'
        | ':'
        | '+'
        | '%'
        | '&'
        | '\u{2030}'
        | '\u{2031}'
        | '~'
        | '^'
        | '|'
        | '\\'
        | '='
        | '/'
        | '<'
        | '>'
        | '\u{7F}'
        | '\u{A1}'
        | '\u{BF}'
        | '\u{37E}'
        | '\u{589}'
        | '\u{61F}'
        | '\u{6D4}'
        | '\u{700}'..='\u{702}'
        | '\u{7FA}' => m(1, 1, Action::Plain),
        _ => None,
    }
}

/// `{TWITTER}`: `@name` and `#tag`.
pub(crate) fn twitter(s: &[char], i: usize) -> Option<Match> {
    if at(s, i, |c| c == '@' || c == '\u{FF20}')
        && at(s, i + 1, |c| c.is_ascii_alphabetic() || c == '_')
    {
        let n = 2 + run(s, i + 2, |c| c.is_ascii_alphanumeric() || c == '_');
        return m(n, n, Action::Plain);
    }
    if at(s, i, |c| c == '#' || c == '\u{FF03}') && at(s, i + 1, is_letter) {
        // CoreNLP 3.4.1 hashtags are letters only: `#tag1` is `#tag` then `1`.
        let n = 1 + run(s, i + 1, is_letter);
        return m(n, n, Action::Plain);
    }
    None
}

/// `'/[A-Za-z][^ \t\n\r\u00A0]`: an apostrophe before a word is taken as an opening quote.
pub(crate) fn open_single_quote(s: &[char], i: usize) -> Option<Match> {
    if at(s, i, |c| c == '\'')
        && at(s, i + 1, |c| c.is_ascii_alphabetic())
        && at(s, i + 2, |c| {
            !matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{A0}')
        })
    {
        m(3, 1, Action::QuoteLeft)
    } else {
        None
    }
}

/// `{REDAUX}` without context, then `{QUOTES}`.
pub(crate) fn quotes(s: &[char], i: usize) -> Option<Match> {
    let r = redaux(s, i);
    if r > 0 {
        return m(r, r, Action::QuoteRight);
    }
    if lit(s, i, "''") {
        return m(2, 2, Action::QuoteRight);
    }
    if at(s, i, is_apos) {
        return m(1, 1, Action::QuoteRight);
    }
    let q = |c: char| {
        matches!(c, '`' | '\u{2018}'..='\u{201F}' | '\u{91}'..='\u{94}' | '\u{2039}' | '\u{203A}'
            | '\u{AB}' | '\u{BB}')
    };
    let n = run(s, i, q).min(2);
    m(n, n, Action::QuoteRight)
}

/// `{MISCSYMBOL}`: symbols that stand alone as tokens.
pub(crate) fn misc_symbol(s: &[char], i: usize) -> Option<Match> {
    let c = s[i];
    let sym = matches!(c,
        '\u{A6}' | '\u{A7}' | '\u{A8}' | '\u{A9}' | '\u{AC}' | '\u{AE}' | '\u{AF}'
        | '\u{B0}'..='\u{BA}' | '\u{D7}' | '\u{F7}' | '\u{387}' | '\u{5BE}' | '\u{5C0}'
        | '\u{5C3}' | '\u{5C6}' | '\u{5F3}' | '\u{5F4}' | '\u{600}'..='\u{603}'
        | '\u{606}'..='\u{60A}' | '\u{60C}' | '\u{614}' | '\u{61B}' | '\u{61E}' | '\u{66A}'
        | '\u{66D}' | '\u{703}'..='\u{70D}' | '\u{7F6}'..='\u{7F8}' | '\u{964}' | '\u{965}'
        | '\u{E4F}' | '\u{2020}'..='\u{2023}' | '\u{2032}'..='\u{2038}' | '\u{2044}'
        | '\u{207A}'..='\u{207F}' | '\u{208A}'..='\u{208E}' | '\u{2100}'..='\u{214F}'
        | '\u{2190}'..='\u{21FF}' | '\u{2200}'..='\u{22FF}' | '\u{2300}'..='\u{23FF}'
        | '\u{2600}'..='\u{26FF}' | '\u{3012}' | '\u{30FB}' | '\u{FF01}'..='\u{FF0F}'
        | '\u{FF1A}'..='\u{FF20}' | '\u{FF3B}'..='\u{FF40}' | '\u{FF5B}'..='\u{FF65}');
    if sym {
        m(1, 1, Action::Plain)
    } else {
        None
    }
}

/// Superscript and subscript digit runs (`²`, `₂`).
pub(crate) fn subsupnum(s: &[char], i: usize) -> Option<Match> {
    let mut k = i;
    if at(s, k, |c| {
        matches!(c, '\u{207A}' | '\u{207B}' | '\u{208A}' | '\u{208B}')
    }) {
        k += 1;
    }
    let sup = run(s, k, |c| {
        matches!(
            c,
            '\u{2070}' | '\u{B9}' | '\u{B2}' | '\u{B3}' | '\u{2074}'..='\u{2079}'
        )
    });
    let sub = run(s, k, |c| ('\u{2080}'..='\u{2089}').contains(&c));
    let n = sup.max(sub);
    if n == 0 {
        None
    } else {
        m(k + n - i, k + n - i, Action::Plain)
    }
}

/// Whitespace and characters the lexer drops.
pub(crate) fn skip(s: &[char], i: usize) -> Option<Match> {
    let c = s[i];
    if is_space_nl(c) || is_ignorable(c) {
        m(1, 1, Action::Skip)
    } else {
        None
    }
}

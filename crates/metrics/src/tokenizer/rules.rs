//! The token rules of the Stanford PTBLexer (CoreNLP 3.4.1, `PTBLexer.flex`) with the options
//! pycocoevalcap runs it with (`-preserveLines -lowerCase`, PTB3 escaping, no americanisation).
//!
//! JFlex picks the rule with the longest match, trailing context included, and the earliest rule
//! on a tie. Each matcher below returns how many characters it would match in total and how many
//! of those form the token; [`best_match`] applies the JFlex choice. Rules whose only effect is a
//! token pycocoevalcap deletes afterwards (the duplicated sentence-final period after `U.S.`) are
//! folded into the rule they duplicate.

use super::chars::{
    is_alnum, is_apos, is_apos_etc, is_digit, is_hyphen, is_letter, is_newline, is_space,
    is_space_nl,
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
            Some(c) if c.to_ascii_lowercase() == w.to_ascii_lowercase() => k += 1,
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

/// Words after which the lexer takes `X.` to end a sentence (`{ACRONYM}/...` in the flex
/// file). The first letter must be upper case; the rest is caseless.
const SENTENCE_STARTERS: &[&str] = &[
    "About", "According", "Additionally", "After", "An", "A", "As", "At", "But", "Earlier", "He",
    "Her", "Here", "However", "If", "In", "It", "Last", "Many", "More", "Mr.", "Ms.", "Now",
    "Once", "One", "Other", "Our", "She", "Since", "So", "Some", "Such", "That", "The", "Then",
    "There", "These", "They", "This", "We", "When", "While", "What", "Yet", "You",
];

/// Spaces or newlines, then a sentence starter, then a space. Captions are lexed as one file
/// joined by newlines, so this looks into the next caption.
fn sentence_follows(s: &[char], i: usize) -> bool {
    let sp = run(s, i, is_space_nl);
    if sp == 0 {
        return false;
    }
    let k = i + sp;
    SENTENCE_STARTERS.iter().any(|w| {
        let n = w.len();
        s.get(k).copied() == w.chars().next() && lit(s, k, w) && at(s, k + n, is_space_nl)
    })
}

/// `{WORD}`: letters and digits starting with a letter, with inner `.`, `!`, `?` between runs.
fn word(s: &[char], i: usize) -> usize {
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
fn redaux(s: &[char], i: usize) -> usize {
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
fn sredaux(s: &[char], i: usize) -> usize {
    if lit(s, i, "n") && at(s, i + 1, is_apos_etc) && lit(s, i + 2, "t") {
        3
    } else {
        0
    }
}

pub(crate) fn cannot(s: &[char], i: usize) -> Option<Match> {
    if lit(s, i, "cannot") {
        m(6, 3, Action::Plain)
    } else {
        None
    }
}

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
        matches!(c, '\u{96}' | '\u{97}' | '\u{2013}' | '\u{2014}' | '\u{2015}')
    }) {
        return m(1, 1, Action::Fixed("--"));
    }
    if lit(s, i, "&amp;") {
        return m(5, 5, Action::Amp);
    }
    if at(s, i, |c| c == '&') {
        let n = lit_list(s, i + 1, &["HT;", "TL;", "UR;", "LR;", "QC;", "QL;", "QR;", "odq;", "cdq;"]);
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
        "'twas", "nor'easter", "c'mon", "e'er", "s'mores", "ev'ry", "li'l", "nat'l",
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

fn url_stop(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\u{0C}' | '\r' | '"' | '<' | '>' | '|' | '(' | ')')
}

fn url_end_ok(c: char) -> bool {
    !url_stop(c) && !matches!(c, '.' | '!' | '?' | '{' | '}' | ',' | '-')
}

/// `X+ Y` where `X` is `!url_stop` and `Y` is `url_end_ok`: the longest such run from `k`.
fn url_tail(s: &[char], k: usize) -> usize {
    let r = run(s, k, |c| !url_stop(c));
    (2..=r).rev().find(|&n| url_end_ok(s[k + n - 1])).unwrap_or(0)
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
            && !matches!(c, '`' | '\'' | '.' | '!' | '?' | '{' | '}' | '$' | ','..='_')
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

fn email(s: &[char], i: usize) -> usize {
    if !at(s, i, |c| c.is_ascii_alphanumeric()) {
        return 0;
    }
    let local_ok = |c: char| !url_stop(c) && c != '\u{A0}';
    let r = run(s, i, local_ok);
    let mut best = 0;
    for at_pos in (i + 1..i + r).filter(|&k| s[k] == '@') {
        let label = |c: char| !url_stop(c) && c != '.' && c != '\u{A0}';
        let mut k = at_pos + 1;
        loop {
            let l = run(s, k, label);
            if l == 0 || !at(s, k + l, |c| c == '.') {
                break;
            }
            k += l + 1;
            let tld = run(s, k, |c| c.is_ascii_alphabetic());
            if tld >= 2 {
                best = best.max(k + tld.min(4) - i);
            }
        }
    }
    best
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
    if at(s, i, |c| matches!(c, '\u{BC}' | '\u{BD}' | '\u{BE}' | '\u{2153}'..='\u{215E}')) {
        m(1, 1, Action::Fraction)
    } else {
        None
    }
}

/// `{TBSPEC}`: tokens the Treebank spells specially.
pub(crate) fn tbspec(s: &[char], i: usize) -> Option<Match> {
    let list = [
        "-RRB-", "-LRB-", "-RCB-", "-LCB-", "-RSB-", "-LSB-", "C.D.s", "pro-", "anti-",
        "S&P-500", "S&amp;P-500", "S&Ls", "S&amp;Ls",
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
            '\u{A2}'..='\u{A5}' | '\u{80}' | '\u{20A0}' | '\u{20AC}' | '\u{060B}' | '\u{0E3F}'
                | '\u{20A4}' | '\u{FFE0}' | '\u{FFE1}' | '\u{FFE5}' | '\u{FFE6}'
        )
    };
    if at(s, i, dol2) {
        return m(1, 1, Action::Currency);
    }
    None
}

const ABBREVIATIONS: &[&str] = &[
    // Months and days (Sat. and Sun. are left out on purpose by the lexer).
    "Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct", "Nov", "Dec", "Mon",
    "Tue", "Tues", "Wed", "Thu", "Thurs", "Fri",
    // States; the `=` entries only count with a capital, since they are also common words.
    "Ala", "Ariz", "=Ark", "Calif", "Colo", "Conn", "Ct", "Dak", "=Del", "Fla", "Ga", "=Ill",
    "Ind", "Kan", "Kans", "Ky", "=La", "=Mass", "Md", "Mich", "Minn", "Mo", "Mont", "Neb", "Nev",
    "Okla", "=Ore", "=Pa", "Penn", "Tenn", "=Tex", "Va", "Vt", "=Wash", "Wis", "Wisc", "Wyo",
    "=Az",
    // Companies, numbers and post-name titles.
    "Inc", "Co", "Cos", "Corp", "Pty", "Ptys", "Ppty", "Ppty", "Ptys", "Ltd", "Plc", "Bancorp",
    "Bhd", "Assn", "Univ", "Intl", "Sys", "Rt", "tel", "est", "ext", "sq", "Jr", "Sr", "Bros",
    "Blvd", "Rd", "Esq", "Ed.D", "Ph.D", "etc", "al", "seq", "Bldg",
    // Titles and other abbreviations that are normally followed by a capitalised word.
    "Mr", "Mrs", "Ms", "=Miss", "Dr", "Drs", "Prof", "Profs", "Sen", "Sens", "Rep", "Reps",
    "Atty", "Attys", "Lt", "Col", "Gen", "Messrs", "Gov", "Govs", "Adm", "Rev", "Maj", "Sgt",
    "Cpl", "Pvt", "Mt", "Capt", "St", "Ste", "Ave", "Pres", "Lieut", "Hon", "Brig", "Cmdr",
    "Comdr", "Pfc", "Spc", "Supt", "Supts", "Det", "Adj", "Asst", "Ens", "Mme", "Msgr", "Sfc",
    "Ft", "vs", "Alex", "Wm", "Jos", "Cie", "cf", "TREAS", "Invt", "Elec", "Natl", "Mfg", "Mtg",
    "Dept", "Ph", "a.k.a",
];

/// Abbreviations that keep their period only in front of a number (`No. 5`, `Fig. 3`).
const ABBREVIATIONS_BEFORE_NUMBER: &[&str] =
    &["ca", "fig", "figs", "prop", "no", "nos", "art", "pp", "op", "bldg"];

/// `{ACRO}`: `U.S`, `t.v`, single letters.
fn acro(s: &[char], i: usize) -> usize {
    if !at(s, i, |c| c.is_ascii_alphabetic()) {
        return 0;
    }
    let mut k = i + 1;
    while at(s, k, |c| c == '.') && at(s, k + 1, |c| c.is_ascii_alphabetic()) {
        k += 2;
    }
    k - i
}

/// `{ABBREV1}`, `{ABBREV2}`, `{ABBREV3}`, `{ACRONYM}`: an abbreviation keeps its period.
///
/// The lexer also emits a second `.` after some of these at a sentence end; pycocoevalcap
/// deletes `.` tokens, so that duplication is not reproduced.
pub(crate) fn abbreviation(s: &[char], i: usize) -> Option<Match> {
    let mut best = 0;
    let n = lit_list(s, i, ABBREVIATIONS);
    if n > 0 && at(s, i + n, |c| c == '.') {
        best = n + 1;
    }
    let a = acro(s, i);
    if a > 0 && at(s, i + a, |c| c == '.') {
        if a == 1 && sentence_follows(s, i + 2) {
            // A single letter and a period before a sentence start (`reads K. The ...`): the
            // period is taken to end the sentence and becomes its own token.
            return m(4, 1, Action::Plain);
        }
        best = best.max(a + 1);
    }
    let n = lit_list(s, i, ABBREVIATIONS_BEFORE_NUMBER);
    if n > 0 && at(s, i + n, |c| c == '.') {
        let sp = run(s, i + n + 1, is_space);
        if at(s, i + n + 1 + sp, is_digit) {
            best = best.max(n + 1);
        }
    }
    m(best, best, Action::Plain)
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

fn dot_insentp(s: &[char], i: usize, len: usize) -> Option<Match> {
    if len > 0 && at(s, i + len, |c| c == '.') && at(s, i + len + 1, |c| matches!(c, ',' | ';' | ':'))
    {
        m(len + 2, len + 1, Action::Plain)
    } else {
        None
    }
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
        '?' | '!' => {
            let n = same(|c| c == '?' || c == '!');
            m(n, n, Action::Plain)
        }
        ',' | ';' | ':' | '+' | '%' | '&' | '\u{2030}' | '\u{2031}' | '~' | '^' | '|' | '\\'
        | '=' | '/' | '<' | '>' | '\u{7F}' | '\u{A1}' | '\u{BF}' | '\u{37E}' | '\u{589}'
        | '\u{61F}' | '\u{6D4}' | '\u{700}'..='\u{702}' | '\u{7FA}' => m(1, 1, Action::Plain),
        _ => None,
    }
}

/// `{TWITTER}`: `@name` and `#tag`.
pub(crate) fn twitter(s: &[char], i: usize) -> Option<Match> {
    if at(s, i, |c| c == '@' || c == '\u{FF20}') && at(s, i + 1, |c| c.is_ascii_alphabetic() || c == '_')
    {
        let n = 2 + run(s, i + 2, |c| c.is_ascii_alphanumeric() || c == '_');
        return m(n, n, Action::Plain);
    }
    if at(s, i, |c| c == '#' || c == '\u{FF03}') && at(s, i + 1, is_letter) {
        let r = run(s, i + 2, |c| is_alnum(c) || c == '_');
        // The tag may not end with an underscore.
        let mut n = r;
        while n > 0 && s[i + 1 + n] == '_' {
            n -= 1;
        }
        return m(2 + n, 2 + n, Action::Plain);
    }
    None
}

/// `{HTHING}`: hyphenated tokens whose first part may contain `.` or `,` (`p-51`, `b-25`).
fn hthing(s: &[char], i: usize) -> usize {
    if !at(s, i, |c| c.is_ascii_alphanumeric()) {
        return 0;
    }
    let head = 1 + run(s, i + 1, |c| c.is_ascii_alphanumeric() || matches!(c, '.' | ',' | '\u{AD}'));
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
        let a = run(s, p, is_alnum);
        if a == 0 {
            // The optional prefix consumed the only alphanumeric; JFlex backtracks into it.
            if p > k {
                return 0;
            }
            return 0;
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

/// `'/[A-Za-z][^ \t\n\r\u00A0]`: an apostrophe before a word is taken as an opening quote.
pub(crate) fn open_single_quote(s: &[char], i: usize) -> Option<Match> {
    if at(s, i, |c| c == '\'')
        && at(s, i + 1, |c| c.is_ascii_alphabetic())
        && at(s, i + 2, |c| !matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{A0}'))
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
    if at(s, k, |c| matches!(c, '\u{207A}' | '\u{207B}' | '\u{208A}' | '\u{208B}')) {
        k += 1;
    }
    let sup = run(s, k, |c| matches!(c, '\u{2070}' | '\u{B9}' | '\u{B2}' | '\u{B3}' | '\u{2074}'..='\u{2079}'));
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
    if is_space_nl(c) || super::chars::is_ignorable(c) {
        m(1, 1, Action::Skip)
    } else {
        None
    }
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

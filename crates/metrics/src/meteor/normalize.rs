//! METEOR 1.5's `-norm` text normalisation for English (`edu.cmu.meteor.util.Normalizer.
//! normalizeLine` with punctuation kept, then `String.toLowerCase`): a Moses-style tokenizer
//! with METEOR's additions (quote and dash normalisation, dashes between words dropped, dotted
//! abbreviations undotted).
//!
//! Every regular expression of the Java code matches a fixed number of characters, so each one
//! is a hand-written left-to-right scan here with `java.util.regex.Matcher.replaceAll`'s
//! semantics (leftmost match, scanning resumes after it; matches never overlap).
//! `\p{Digit}` and `\p{Lower}` are ASCII-only in Java unless asked otherwise, and `\s` is
//! `[ \t\n\x0B\f\r]`.

use std::collections::HashMap;

/// A non-breaking prefix of `nonbreaking/english.prefixes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Nbp {
    /// A dot after it never ends a sentence.
    Any,
    /// Only when a number follows (`No. 5`).
    NumericOnly,
}

/// Parse a Moses non-breaking prefix list (`Constants.NBP_ANY` / `NBP_NUM_ONLY`).
pub(crate) fn parse_nbp(text: &str) -> HashMap<String, Nbp> {
    let mut out = HashMap::new();
    for line in java_lines(text) {
        let mut tok = java_tokens(line);
        let Some(pre) = tok.next() else { continue };
        if pre.starts_with('#') {
            continue;
        }
        let kind = match tok.next() {
            Some("#NUMERIC_ONLY#") => Nbp::NumericOnly,
            _ => Nbp::Any,
        };
        out.insert(pre.to_owned(), kind);
    }
    out
}

/// `BufferedReader.readLine` lines: split at `\n`, `\r\n` or `\r`.
pub(crate) fn java_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match rest.find(['\n', '\r']) {
            Some(i) => {
                let line = &rest[..i];
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[i + skip..];
                Some(line)
            }
            None => {
                let line = rest;
                rest = "";
                Some(line)
            }
        }
    })
}

/// `java.util.StringTokenizer` with its default delimiters.
pub(crate) fn java_tokens(s: &str) -> impl Iterator<Item = &str> {
    s.split([' ', '\t', '\n', '\r', '\u{c}'])
        .filter(|w| !w.is_empty())
}

/// `String.trim`: strips every char up to U+0020.
pub(crate) fn java_trim(s: &str) -> &str {
    s.trim_matches(|c: char| c <= ' ')
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit()
}

/// The `alpha` character class of the normaliser (Latin, Latin-1, Latin Extended-A, Cyrillic).
fn is_alpha(c: char) -> bool {
    matches!(c,
        'A'..='Z' | 'a'..='z'
        | '\u{160}' | '\u{17d}' | '\u{161}' | '\u{17e}' | '\u{178}'
        | '\u{c0}'..='\u{d6}' | '\u{d8}'..='\u{f6}' | '\u{f8}'..='\u{17e}'
        | '\u{400}'..='\u{4ff}' | '\u{500}'..='\u{527}'
        | '\u{a640}'..='\u{a66e}' | '\u{a67e}'..='\u{a697}' | '\u{1d00}'..='\u{1d7f}')
}

fn is_alnum(c: char) -> bool {
    is_digit(c) || is_alpha(c)
}

/// Java's `\s`.
fn is_java_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\u{b}' | '\u{c}' | '\r')
}

/// The characters of `r_white`.
fn is_white(c: char) -> bool {
    matches!(
        c,
        ' ' | '\u{2000}'..='\u{200a}' | '\u{202f}' | '\u{205f}' | '\u{3000}' | '\u{a0}'
    )
}

/// `replaceAll` of a pattern `(A)(X)(B)` of three single characters.
fn replace3(
    s: &str,
    a: impl Fn(char) -> bool,
    x: impl Fn(char) -> bool,
    b: impl Fn(char) -> bool,
    out_fn: impl Fn(&mut String, char, char, char),
) -> String {
    let c: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 8);
    let mut i = 0;
    while i < c.len() {
        if i + 2 < c.len() && a(c[i]) && x(c[i + 1]) && b(c[i + 2]) {
            out_fn(&mut out, c[i], c[i + 1], c[i + 2]);
            i += 3;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// `$1 <sep> $2` replacement around the middle character.
fn spaced(sep: &'static str) -> impl Fn(&mut String, char, char, char) {
    move |out, a, _, b| {
        out.push(a);
        out.push_str(sep);
        out.push(b);
    }
}

/// Normalise one line as `Normalizer.normalizeLine(line, LANG_EN, true)` followed by
/// `toLowerCase()`.
pub(crate) fn normalize(line: &str, nbp: &HashMap<String, Nbp>) -> String {
    let mut w = String::with_capacity(line.len() + 16);
    // Wrap in spaces; separate every character that is not alphanumeric, a space or one of
    // `.'`,-‘’` (r_sep_other).
    w.push(' ');
    for c in line.chars() {
        if is_alnum(c) || is_java_space(c) || matches!(c, '.' | '\'' | '`' | ',' | '-' | '‘' | '’')
        {
            w.push(c);
        } else {
            w.push(' ');
            w.push(c);
            w.push(' ');
        }
    }
    w.push(' ');

    // Escape runs of dots: `\.([\.]+)` -> ` DOTMULTI$1`.
    let w = {
        let c: Vec<char> = w.chars().collect();
        let mut out = String::with_capacity(w.len() + 16);
        let mut i = 0;
        while i < c.len() {
            if c[i] == '.' && i + 1 < c.len() && c[i + 1] == '.' {
                let mut j = i + 1;
                while j < c.len() && c[j] == '.' {
                    j += 1;
                }
                out.push_str(" DOTMULTI");
                out.extend(std::iter::repeat_n('.', j - i - 1));
                i = j;
            } else {
                out.push(c[i]);
                i += 1;
            }
        }
        out
    };
    let mut w = w;
    while w.contains("DOTMULTI.") {
        // `DOTMULTI\.([^\.])` -> `DOTDOTMULTI $1`
        let mut out = String::with_capacity(w.len() + 16);
        let mut rest = w.as_str();
        while let Some(pos) = rest.find("DOTMULTI.") {
            let after = &rest[pos + "DOTMULTI.".len()..];
            match after.chars().next() {
                Some(n) if n != '.' => {
                    out.push_str(&rest[..pos]);
                    out.push_str("DOTDOTMULTI ");
                    out.push(n);
                    rest = &after[n.len_utf8()..];
                }
                _ => {
                    // No match starting here; the regex scan resumes one character later.
                    let first = rest[pos..].chars().next().map_or(1, char::len_utf8);
                    out.push_str(&rest[..pos + first]);
                    rest = &rest[pos + first..];
                }
            }
        }
        out.push_str(rest);
        w = out.replace("DOTMULTI.", "DOTDOTMULTI");
    }

    // Commas, except inside numbers.
    let w = replace3(
        &w,
        |c| !is_digit(c),
        |c| c == ',',
        |c| !is_digit(c),
        spaced(" , "),
    );
    let w = replace3(&w, is_digit, |c| c == ',', |c| !is_digit(c), spaced(" , "));
    let w = replace3(&w, |c| !is_digit(c), |c| c == ',', is_digit, spaced(" , "));

    // Quotes: `[`‘’]` -> `'`, then `([“”]|'')` -> ` " `.
    let w: String = w
        .chars()
        .map(|c| {
            if matches!(c, '`' | '‘' | '’') {
                '\''
            } else {
                c
            }
        })
        .collect();
    let w = {
        let c: Vec<char> = w.chars().collect();
        let mut out = String::with_capacity(w.len() + 8);
        let mut i = 0;
        while i < c.len() {
            if matches!(c[i], '“' | '”') {
                out.push_str(" \" ");
                i += 1;
            } else if c[i] == '\'' && i + 1 < c.len() && c[i + 1] == '\'' {
                out.push_str(" \" ");
                i += 2;
            } else {
                out.push(c[i]);
                i += 1;
            }
        }
        out
    };

    // Dashes: en dash and double dash become a dash; a dash between words is dropped.
    let w = w.replace('–', "-").replace("--", "-");
    let w = replace3(
        &w,
        |c| is_alnum(c) || c == '.',
        |c| c == '-',
        is_alnum,
        spaced(" "),
    );

    // English contractions split to the right.
    let w = replace3(
        &w,
        |c| !is_alpha(c),
        |c| c == '\'',
        |c| !is_alpha(c),
        spaced(" ' "),
    );
    let w = replace3(
        &w,
        |c| !is_alpha(c) && !is_digit(c),
        |c| c == '\'',
        is_alpha,
        spaced(" ' "),
    );
    let w = replace3(&w, is_alpha, |c| c == '\'', |c| !is_alpha(c), spaced(" ' "));
    let w = replace3(&w, is_alpha, |c| c == '\'', is_alpha, spaced(" '"));
    let w = replace3(&w, is_digit, |c| c == '\'', |c| c == 's', spaced(" '"));

    // Words, with dots split off unless the prefix is non-breaking.
    let words: Vec<&str> = java_tokens(&w).collect();
    let mut out = String::with_capacity(w.len() + 8);
    for (i, word) in words.iter().enumerate() {
        let next = words.get(i + 1);
        match word.strip_suffix('.') {
            Some(pre) if !pre.is_empty() => {
                let kind = nbp.get(pre).copied();
                if pre.contains('.') && pre.chars().any(is_alpha) {
                    out.push_str(&word.replace('.', ""));
                } else if kind == Some(Nbp::Any)
                    // Followed by lower case: catches unlisted items such as "Inc.".
                    || next.is_some_and(|n| n.starts_with(|c: char| c.is_ascii_lowercase()))
                    // Non-breaking before a number only.
                    || (kind == Some(Nbp::NumericOnly)
                        && next.is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit())))
                {
                    out.push_str(word);
                } else {
                    out.push_str(pre);
                    out.push_str(" .");
                }
            }
            _ => out.push_str(word),
        }
        out.push(' ');
    }
    let mut w = out;
    while w.contains("DOTDOTMULTI") {
        w = w.replace("DOTDOTMULTI", "DOTMULTI.");
    }
    let w = w.replace("DOTMULTI", ".");

    // Whitespace runs (including Unicode spaces) become one space; then trim and lower-case.
    let mut out = String::with_capacity(w.len());
    let mut in_white = false;
    for c in w.chars() {
        if is_white(c) {
            if !in_white {
                out.push(' ');
            }
            in_white = true;
        } else {
            out.push(c);
            in_white = false;
        }
    }
    java_trim(&out).to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nbp() -> HashMap<String, Nbp> {
        parse_nbp("# comment\nMr\nNo #NUMERIC_ONLY#\n\nSt\n")
    }

    #[test]
    fn nbp_list() {
        let n = nbp();
        assert_eq!(n.get("Mr"), Some(&Nbp::Any));
        assert_eq!(n.get("No"), Some(&Nbp::NumericOnly));
        assert_eq!(n.len(), 3);
    }

    #[test]
    fn basic_normalisation() {
        let n = nbp();
        assert_eq!(
            normalize("a dog runs on the grass", &n),
            "a dog runs on the grass"
        );
        assert_eq!(normalize("A Tug-of-war!", &n), "a tug of war !");
        assert_eq!(normalize("He doesn't go.", &n), "he doesn 't go .");
        assert_eq!(normalize("the U.S. flag", &n), "the us flag");
        assert_eq!(normalize("Mr. Smith", &n), "mr. smith");
        assert_eq!(normalize("No. 5 and No. Five", &n), "no. 5 and no . five");
        assert_eq!(normalize("wait... what", &n), "wait ... what");
        assert_eq!(normalize("1,000 apples,pears", &n), "1,000 apples , pears");
        assert_eq!(normalize("“quoted” ''x''", &n), "\" quoted \" \" x \"");
        assert_eq!(normalize("1990's  x\u{a0}y", &n), "1990 's x y");
        assert_eq!(normalize("", &n), "");
        assert_eq!(normalize("a.... b ..c", &n), "a .... b .. c");
        assert_eq!(normalize("x--y a–b", &n), "x y a - b");
    }
}

//! Character classes of the Stanford PTBLexer (CoreNLP 3.4.1, `PTBLexer.flex`), as used by
//! `pycocoevalcap/tokenizer/ptbtokenizer.py`.
//!
//! JFlex evaluates `[:letter:]` and `[:digit:]` with Java's `Character.isLetter` / `isDigit`.
//! Rust's standard library exposes `Alphabetic` and `Numeric` instead, which are slightly wider;
//! the differences are confined to rare non-ASCII characters (letter numbers, combining marks).

/// `{SPACE}` in the lexer: characters that separate tokens and count as a space in trailing
/// contexts such as `{ABBREV4}/{SPACE}`.
pub(crate) fn is_space(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\u{A0}' | '\u{2000}'..='\u{200A}' | '\u{3000}'
    )
}

/// `{NEWLINE}` in the lexer. pycocoevalcap puts one caption on each line, so inside a caption
/// these only appear when the caller passes them; they separate tokens like spaces.
pub(crate) fn is_newline(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{2028}' | '\u{2029}' | '\u{0B}' | '\u{0C}' | '\u{85}'
    )
}

/// `{SPACENL}`: a space or a newline. The end of a caption is a newline in pycocoevalcap's input
/// file (one caption per line), so callers treat "end of input" as matching this class.
pub(crate) fn is_space_nl(c: char) -> bool {
    is_space(c) || is_newline(c)
}

/// Characters the lexer skips without producing a token (besides spaces and newlines).
pub(crate) fn is_ignorable(c: char) -> bool {
    matches!(c, '\0' | '\u{200B}' | '\u{200E}' | '\u{200F}' | '\u{FEFF}')
}

/// Java's `Character.isDigit` for the characters that matter here, plus NKo digits which the
/// lexer adds explicitly.
pub(crate) fn is_digit(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    if ('\u{07C0}'..='\u{07C9}').contains(&c) {
        return true;
    }
    // `is_numeric` also covers superscripts, vulgar fractions, roman numerals and circled
    // numbers, which Java does not call digits.
    c.is_numeric()
        && !matches!(c,
            '\u{B2}' | '\u{B3}' | '\u{B9}' | '\u{BC}'..='\u{BE}'
            | '\u{2070}'..='\u{209F}' | '\u{2150}'..='\u{218F}' | '\u{2460}'..='\u{24FF}'
            | '\u{2776}'..='\u{2793}' | '\u{3007}' | '\u{3021}'..='\u{3029}')
}

/// `{LETTER}`: `[:letter:]` plus the combining marks and other characters the lexer lists.
pub(crate) fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    (c.is_alphabetic() && !is_digit(c))
        || matches!(c, '\u{AD}' | '\u{0300}'..='\u{036F}' | '\u{0483}'..='\u{0487}')
}

/// `[\p{Alpha}\p{Digit}]`, the alphanumerics of `THING` and friends.
pub(crate) fn is_alnum(c: char) -> bool {
    is_letter(c) || is_digit(c)
}

/// `{APOS}`: straight apostrophe, the CP1252 and Unicode right single quotes.
pub(crate) fn is_apos(c: char) -> bool {
    matches!(c, '\'' | '\u{92}' | '\u{2019}')
}

/// `{APOSETCETERA}`: apostrophes plus the quote characters that also turn up inside words.
pub(crate) fn is_apos_etc(c: char) -> bool {
    is_apos(c) || matches!(c, '\u{91}' | '\u{2018}' | '\u{201B}')
}

/// `{HYPHEN}` inside `THING`.
pub(crate) fn is_hyphen(c: char) -> bool {
    matches!(c, '-' | '_' | '\u{58A}' | '\u{2010}' | '\u{2011}')
}

/// Python's `str.isspace`, which decides how pycocoevalcap's `split()` and `rstrip()` cut a
/// tokenised line. It differs from Rust's `char::is_whitespace` on U+001C..U+001F.
pub fn is_python_space(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{1C}'..='\u{1F}')
}

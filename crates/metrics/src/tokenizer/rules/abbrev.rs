//! Abbreviations and acronyms of the PTBLexer (CoreNLP 3.4.1 `PTBLexer.flex`: `{ABBREV1}`..
//! `{ABBREV4}`, `{ACRO}`, `{ACRONYM}`): which `word.` keeps its period. The lists were checked
//! one by one against the 3.4.1 jar.

use super::{at, lit, lit_list, m, run, Action, Match};
use crate::tokenizer::chars::*;

/// Words after which the lexer takes `X.` to end a sentence (`{ACRONYM}/...` in the flex
/// file). The first letter must be upper case; the rest is caseless.
const SENTENCE_STARTERS: &[&str] = &[
    "About",
    "According",
    "Additionally",
    "After",
    "An",
    "A",
    "As",
    "At",
    "But",
    "Earlier",
    "He",
    "Her",
    "Here",
    "However",
    "If",
    "In",
    "It",
    "Last",
    "Many",
    "More",
    "Mr.",
    "Ms.",
    "Now",
    "Once",
    "One",
    "Other",
    "Our",
    "She",
    "Since",
    "So",
    "Some",
    "Such",
    "That",
    "The",
    "Then",
    "There",
    "These",
    "They",
    "This",
    "We",
    "When",
    "While",
    "What",
    "Yet",
    "You",
];

/// Spaces or newlines, then a sentence starter, then a space. Captions are lexed as one file
/// joined by newlines, so this looks into the next caption.
pub(super) fn sentence_follows(s: &[char], i: usize) -> bool {
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

const ABBREVIATIONS: &[&str] = &[
    // Months and days (Sat. and Sun. are left out on purpose by the lexer).
    "Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct", "Nov", "Dec", "Mon",
    "Tue", "Tues", "Wed", "Thu", "Thurs", "Fri",
    // States; the `=` entries only count with a capital, since they are also common words.
    "Ala", "Ariz", "=Ark", "Calif", "Colo", "Conn", "Ct", "Dak", "=Del", "Fla", "Ga", "=Ill", "Ind",
    "Kan", "Kans", "Ky", "=La", "=Mass", "Md", "Mich", "Minn", "Mo", "Mont", "Neb", "Nev", "Okla",
    "=Ore", "=Pa", "Penn", "Tenn", "=Tex", "Va", "Vt", "=Wash", "Wis", "Wisc", "Wyo", "=Az",
    // Companies, numbers and post-name titles.
    "Inc", "Co", "Cos", "Corp", "Pty", "Ptys", "Ppty", "Ppty", "Ptys", "Ltd", "Plc", "Bancorp",
    "Bhd", "Assn", "Univ", "Intl", "Sys", "Rt", "tel", "est", "ext", "sq", "Jr", "Sr", "Bros",
    "Blvd", "Rd", "Esq", "Ed.D", "Ph.D", "etc", "al", "seq", "Bldg",
    // Titles and other abbreviations that are normally followed by a capitalised word.
    "Mr", "Mrs", "Ms", "=Miss", "Dr", "Drs", "Prof", "Profs", "Sen", "Sens", "Rep", "Reps", "Atty",
    "Attys", "Lt", "Col", "Gen", "Messrs", "Gov", "Govs", "Adm", "Rev", "Maj", "Sgt", "Cpl", "Pvt",
    "Mt", "Capt", "St", "Ste", "Ave", "Pres", "Lieut", "Hon", "Brig", "Cmdr", "Comdr", "Pfc",
    "Spc", "Supt", "Supts", "Det", "Adj", "Asst", "Ens", "Mme", "Msgr", "Sfc", "Ft", "vs", "Alex",
    "Wm", "Jos", "Cie", "cf", "TREAS", "Invt", "Elec", "Natl", "Mfg", "Mtg", "Dept", "Ph", "a.k.a",
];

/// Abbreviations that keep their period only in front of a number (`No. 5`, `Fig. 3`).
const ABBREVIATIONS_BEFORE_NUMBER: &[&str] = &[
    "ca", "fig", "figs", "prop", "no", "nos", "art", "pp", "op", "bldg",
];

/// `{ACRO}`: `U.S`, `t.v`, single letters.
pub(super) fn acro(s: &[char], i: usize) -> usize {
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
    // Every rule here starts with ASCII letters followed by a period; most tokens are not.
    let letters = run(s, i, |c| c.is_ascii_alphabetic());
    if letters == 0 || !at(s, i + letters, |c| c == '.') {
        return None;
    }
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
        // Before a number, which may start the next line (captions are lexed as one text).
        let sp = run(s, i + n + 1, is_space_nl);
        if at(s, i + n + 1 + sp, is_digit) {
            best = best.max(n + 1);
        }
    }
    m(best, best, Action::Plain)
}

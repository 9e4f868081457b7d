//! Tokenise stdin as pycocoevalcap does with one line per caption, all in one call; used to
//! compare with the Java tokenizer (`--raw`: before punctuation removal).
use std::io::{Read, Write};

fn main() {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .expect("stdin is UTF-8");
    let lines: Vec<&str> = input.split('\n').collect();
    let raw = std::env::args().any(|a| a == "--raw");
    let out: Vec<String> = if raw {
        lines
            .iter()
            .map(|l| captioner_metrics::tokenizer::ptb_tokens(l).join(" "))
            .collect()
    } else {
        captioner_metrics::tokenizer::tokenize_all(&lines)
    };
    let mut stdout = std::io::BufWriter::new(std::io::stdout());
    write!(stdout, "{}", out.join("\n")).expect("stdout");
}

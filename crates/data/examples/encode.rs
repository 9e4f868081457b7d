//! Encodes stdin lines with a saved vocabulary and prints one JSON id list per line: the Rust
//! side of the cross-check against Python `tokenizers` (see the `vocab` module docs).
//!
//! `cargo run -p captioner-data --example encode -- tokenizer.json < captions.txt`

use std::io::{BufRead, Write};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args_os()
        .nth(1)
        .ok_or("usage: encode <tokenizer.json> < lines")?;
    let vocab = captioner_data::Vocab::load(std::path::Path::new(&path))?;
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        writeln!(out, "{}", serde_json::to_string(&vocab.encode(&line?))?)?;
    }
    Ok(())
}

//! Speed of `evaluate` on evaluation set (a) (COCO val2017, one held-out caption per image as
//! the candidate, the other captions as references), end to end: raw captions in, scores out.
//!
//! `cargo bench -p captioner-metrics --bench evaluate`
//!
//! With `PYCOCOEVALCAP_PYTHON=/path/to/python` (a Python with pycocoevalcap and Java on the
//! PATH), the same run also times pycocoevalcap on the same set through
//! `scripts/metrics_fixtures.py --time-only` and prints the ratio.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

fn main() {
    let set = common::coco_heldout();
    let repeats = 5;
    let mut best = f64::INFINITY;
    let mut tokenize_best = f64::INFINITY;
    for _ in 0..repeats {
        let t0 = Instant::now();
        let scores =
            captioner_metrics::evaluate(&set.references, &set.candidates).expect("evaluate");
        best = best.min(t0.elapsed().as_secs_f64());
        std::hint::black_box(scores);

        let t0 = Instant::now();
        let flat: Vec<&str> = set
            .references
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        std::hint::black_box(captioner_metrics::tokenizer::tokenize_all(&flat));
        std::hint::black_box(captioner_metrics::tokenizer::tokenize_all(&set.candidates));
        tokenize_best = tokenize_best.min(t0.elapsed().as_secs_f64());
    }
    let images = set.candidates.len();
    let captions: usize = images + set.references.iter().map(Vec::len).sum::<usize>();
    println!(
        "captioner-metrics evaluate, set (a): {images} images, {captions} captions: best of {repeats}: {best:.4} s (tokenisation {tokenize_best:.4} s)"
    );
    if let Some(python) = std::env::var_os("PYCOCOEVALCAP_PYTHON") {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/metrics_fixtures.py"
        );
        let out = std::process::Command::new(python)
            .args([script, "--time-only", "--data"])
            .arg(common::shared_data())
            .output()
            .expect("run pycocoevalcap timing");
        let text = String::from_utf8_lossy(&out.stdout);
        let seconds = text
            .lines()
            .find_map(|l| l.strip_prefix("pycocoevalcap_seconds "))
            .and_then(|s| s.trim().parse::<f64>().ok());
        match seconds {
            Some(py) => println!(
                "pycocoevalcap (tokenize + Bleu + Rouge + Cider), same set: {py:.4} s; speed-up {:.1}x",
                py / best
            ),
            None => println!(
                "pycocoevalcap timing failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

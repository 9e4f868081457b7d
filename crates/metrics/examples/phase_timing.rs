//! Temporary: phase timings on set (a).
#[path = "../tests/common/mod.rs"]
mod common;
use std::time::Instant;
fn main() {
    let set = common::coco_heldout();
    let flat: Vec<&str> = set.references.iter().flatten().map(String::as_str).collect();
    for _ in 0..3 {
        let t = Instant::now();
        let toks = captioner_metrics::tokenizer::tokenize_all(&flat);
        let cands = captioner_metrics::tokenizer::tokenize_all(&set.candidates);
        let t_tok = t.elapsed();
        let mut it = toks.into_iter();
        let refs: Vec<Vec<String>> = set.references.iter().map(|r| it.by_ref().take(r.len()).collect()).collect();
        let t = Instant::now();
        let c = captioner_metrics::CiderD::from_references(&refs).unwrap();
        let t_df = t.elapsed();
        let t = Instant::now();
        let mut x = 0.0;
        for (r, cand) in refs.iter().zip(&cands) { x += c.score_against(cand, r); }
        let t_cider = t.elapsed();
        let t = Instant::now();
        let s = captioner_metrics::evaluate_tokenized(&refs, &cands).unwrap();
        let t_all = t.elapsed();
        println!("tok {t_tok:?} df {t_df:?} cider {t_cider:?} eval_tokenized {t_all:?} {x} {}", s.corpus.cider_d);
    }
}

//! The kernels against PyTorch itself: `tests/fixtures/torch_rnn.json` holds `torch.nn.LSTM`,
//! `torch.nn.GRU` and `F.cross_entropy` outputs and gradients for small random layers
//! (regenerate with `scripts/decode_fixtures.py`). Weights are used exactly as torch stores them.

use captioner_decode::kernels::gru::*;
use captioner_decode::kernels::lstm::*;
use captioner_decode::kernels::softmax_xent::*;
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/torch_rnn.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture file"))
        .expect("fixture json")
}

fn vec_of(v: &Value, key: &str) -> Vec<f32> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("missing {key}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn dim(f: &Value, key: &str) -> usize {
    f["dims"][key].as_u64().unwrap() as usize
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}");
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!("{what}: max |ours - torch| = {worst:.2e}");
    assert!(worst < 2e-5, "{what} differs from torch by {worst}");
}

#[test]
fn lstm_matches_torch() {
    let f = fixture();
    let c = &f["lstm"];
    let d = SeqDims {
        seq_len: dim(&f, "seq_len"),
        batch: dim(&f, "batch"),
        input: dim(&f, "input"),
        hidden: dim(&f, "hidden"),
    };
    let [w_ih, w_hh, b_ih, b_hh] =
        ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"].map(|k| vec_of(c, k));
    let (x, h0, c0, w_out) = (
        vec_of(c, "x"),
        vec_of(c, "h0"),
        vec_of(c, "c0"),
        vec_of(c, "w_out"),
    );
    let p = LstmParams {
        w_ih: &w_ih,
        w_hh: &w_hh,
        b_ih: &b_ih,
        b_hh: &b_hh,
    };
    let mut cache = LstmCache::new();
    lstm_forward(&d, &p, &x, Some(&h0), Some(&c0), &mut cache).unwrap();
    assert_close("lstm out", cache.output(), &vec_of(c, "out"));
    let mut g = [w_ih.len(), w_hh.len(), b_ih.len(), b_hh.len()].map(|n| vec![0f32; n]);
    let [gw_ih, gw_hh, gb_ih, gb_hh] = &mut g;
    let mut grads = LstmParamGrads {
        w_ih: gw_ih,
        w_hh: gw_hh,
        b_ih: gb_ih,
        b_hh: gb_hh,
    };
    let (mut dx, mut dh0, mut dc0) = (
        vec![0f32; x.len()],
        vec![0f32; h0.len()],
        vec![0f32; c0.len()],
    );
    let inputs = LstmInputGrads {
        x: Some(&mut dx),
        h0: Some(&mut dh0),
        c0: Some(&mut dc0),
    };
    lstm_backward(
        &d, &p, &x, &mut cache, &w_out, None, None, &mut grads, inputs,
    )
    .unwrap();
    for (k, got) in ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
        .iter()
        .zip(&g)
    {
        assert_close(&format!("lstm d_{k}"), got, &vec_of(c, &format!("d_{k}")));
    }
    assert_close("lstm dx", &dx, &vec_of(c, "dx"));
    assert_close("lstm dh0", &dh0, &vec_of(c, "dh0"));
    assert_close("lstm dc0", &dc0, &vec_of(c, "dc0"));
}

#[test]
fn gru_matches_torch() {
    let f = fixture();
    let c = &f["gru"];
    let d = SeqDims {
        seq_len: dim(&f, "seq_len"),
        batch: dim(&f, "batch"),
        input: dim(&f, "input"),
        hidden: dim(&f, "hidden"),
    };
    let [w_ih, w_hh, b_ih, b_hh] =
        ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"].map(|k| vec_of(c, k));
    let (x, h0, w_out) = (vec_of(c, "x"), vec_of(c, "h0"), vec_of(c, "w_out"));
    let p = GruParams {
        w_ih: &w_ih,
        w_hh: &w_hh,
        b_ih: &b_ih,
        b_hh: &b_hh,
    };
    let mut cache = GruCache::new();
    gru_forward(&d, &p, &x, Some(&h0), &mut cache).unwrap();
    assert_close("gru out", cache.output(), &vec_of(c, "out"));
    let mut g = [w_ih.len(), w_hh.len(), b_ih.len(), b_hh.len()].map(|n| vec![0f32; n]);
    let [gw_ih, gw_hh, gb_ih, gb_hh] = &mut g;
    let mut grads = GruParamGrads {
        w_ih: gw_ih,
        w_hh: gw_hh,
        b_ih: gb_ih,
        b_hh: gb_hh,
    };
    let (mut dx, mut dh0) = (vec![0f32; x.len()], vec![0f32; h0.len()]);
    let inputs = GruInputGrads {
        x: Some(&mut dx),
        h0: Some(&mut dh0),
    };
    gru_backward(&d, &p, &x, &mut cache, &w_out, None, &mut grads, inputs).unwrap();
    for (k, got) in ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
        .iter()
        .zip(&g)
    {
        assert_close(&format!("gru d_{k}"), got, &vec_of(c, &format!("d_{k}")));
    }
    assert_close("gru dx", &dx, &vec_of(c, "dx"));
    assert_close("gru dh0", &dh0, &vec_of(c, "dh0"));
}

#[test]
fn fused_cross_entropy_matches_torch() {
    let f = fixture();
    let c = &f["xent"];
    let (x, w, b) = (vec_of(c, "x"), vec_of(c, "weight"), vec_of(c, "bias"));
    let targets: Vec<u32> = c["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let dims = XentDims {
        rows: targets.len(),
        dim: dim(&f, "hidden"),
        vocab: dim(&f, "vocab"),
    };
    let cfg = XentConfig {
        label_smoothing: 0.1,
        ignore_index: Some(0),
        chunk_rows: 3,
        ..XentConfig::default()
    };
    let (mut dx, mut dw, mut db) = (
        vec![0f32; x.len()],
        vec![0f32; w.len()],
        vec![0f32; b.len()],
    );
    let grads = XentGrads {
        x: &mut dx,
        w: &mut dw,
        b: &mut db,
    };
    let st = linear_xent(
        &dims,
        &x,
        &w,
        &b,
        &targets,
        &cfg,
        Some(grads),
        &mut XentWorkspace::new(),
    )
    .unwrap();
    assert_close(
        "xent loss",
        &[st.loss],
        &[c["loss"].as_f64().unwrap() as f32],
    );
    assert_close("xent dx", &dx, &vec_of(c, "dx"));
    assert_close("xent d_weight", &dw, &vec_of(c, "d_weight"));
    assert_close("xent d_bias", &db, &vec_of(c, "d_bias"));
}

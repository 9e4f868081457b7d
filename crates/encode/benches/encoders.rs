//! Encoder throughput: the fast NHWC kernels (`captioner_encode::fast`) against the candle
//! reference model, with FLOP counts from the layer shapes. The PyTorch numbers come from
//! `scripts/bench_encoders_torch.py`; `scripts/bench_encoders.sh` runs both back to back on the
//! same threads and prints the ratios. Timings on a shared machine are only comparable within
//! one run.
//!
//!   scripts/bench_encoders.sh                       # Rust + PyTorch, ratio table (2 threads)
//!   RAYON_NUM_THREADS=2 cargo bench -p captioner-encode --bench encoders -- [--runs N]
//!       [--only fast_lite0_b1,fast_lite0_b32,fast_resnet50_b8,candle_lite0_b1,candle_lite0_b32]
//!       [--sub-batch N]                             # images per internal Lite0 pass
//!       [--json]                                    # one JSON object on the last line
//!
//! Weights: `$CAPTIONER_LITE0_DIR` (default `../shared/data/models/efficientnet-lite0`);
//! ResNet-50 uses seeded random weights in torchvision's layout (speed does not depend on them).

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use captioner_encode::fast::{FastEfficientNetLite0, FastResNet50, DEFAULT_SUB_BATCH};
use captioner_encode::CandleLite0;

struct Args {
    runs: usize,
    sub_batch: usize,
    resnet_sub_batch: Option<usize>,
    only: Vec<String>,
    json: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        runs: 10,
        sub_batch: DEFAULT_SUB_BATCH,
        resnet_sub_batch: None,
        only: Vec::new(),
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => args.runs = it.next().and_then(|v| v.parse().ok()).unwrap_or(10),
            "--only" => {
                args.only = it
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(str::to_string)
                    .collect()
            }
            "--json" => args.json = true,
            "--resnet-sub-batch" => args.resnet_sub_batch = it.next().and_then(|v| v.parse().ok()),
            "--sub-batch" => args.sub_batch = it.next().and_then(|v| v.parse().ok()).unwrap_or(1),
            // `cargo bench` passes `--bench`; ignore anything else we do not know.
            _ => {}
        }
    }
    args
}

fn lite0_dir() -> PathBuf {
    std::env::var_os("CAPTIONER_LITE0_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/data/models/efficientnet-lite0")
        })
}

/// Warm-up then the median and minimum of `runs` timed calls, in milliseconds.
fn time_ms(runs: usize, warmup: usize, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..warmup {
        f();
    }
    let mut t: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (t[t.len() / 2], t[0])
}

/// Deterministic input in a normalised-image range.
fn input(batch: usize) -> Vec<f32> {
    (0..batch * 3 * 224 * 224)
        .map(|i| ((i.wrapping_mul(2_654_435_761) >> 7) % 1000) as f32 / 400.0 - 1.25)
        .collect()
}

struct Row {
    case: String,
    batch: usize,
    median_ms: f64,
    min_ms: f64,
    gflop: f64,
}

fn main() {
    let args = parse_args();
    let want = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let threads = captioner_encode::kernels::num_threads();
    let weights = lite0_dir().join("efficientnet-lite0.safetensors");
    let mut rows = Vec::new();
    // Big batches get fewer runs: the machine is shared and a run takes seconds.
    let runs_for = |batch: usize| {
        if batch >= 8 {
            args.runs.div_ceil(3).max(3)
        } else {
            args.runs
        }
    };

    if want("fast_lite0_b1") || want("fast_lite0_b32") {
        let model = FastEfficientNetLite0::from_safetensors(&weights)
            .expect("Lite0 weights")
            .with_sub_batch(args.sub_batch);
        for batch in [1, 32] {
            let name = format!("fast_lite0_b{batch}");
            if !want(&name) {
                continue;
            }
            let x = input(batch);
            let flops = model.flops(batch, 224, 224).expect("flops") as f64;
            let (med, min) = time_ms(runs_for(batch), 2, || {
                model.forward_nchw(&x, batch, 224, 224).expect("forward");
            });
            rows.push(Row {
                case: name,
                batch,
                median_ms: med,
                min_ms: min,
                gflop: flops / 1e9,
            });
        }
    }
    if want("fast_resnet50_b8") {
        let mut model = FastResNet50::random(0, 1000).expect("ResNet-50");
        if let Some(n) = args.resnet_sub_batch {
            model = model.with_sub_batch(n);
        }
        let batch = 8;
        let x = input(batch);
        let flops = model.flops(batch, 224, 224).expect("flops") as f64;
        let (med, min) = time_ms(runs_for(batch), 1, || {
            model.forward_nchw(&x, batch, 224, 224).expect("forward");
        });
        rows.push(Row {
            case: "fast_resnet50_b8".into(),
            batch,
            median_ms: med,
            min_ms: min,
            gflop: flops / 1e9,
        });
    }
    if want("candle_lite0_b1") || want("candle_lite0_b32") {
        let model = CandleLite0::load(&weights).expect("candle Lite0");
        let fast = FastEfficientNetLite0::from_safetensors(&weights).expect("Lite0 weights");
        for batch in [1, 32] {
            let name = format!("candle_lite0_b{batch}");
            if !want(&name) {
                continue;
            }
            let x =
                Tensor::from_vec(input(batch), (batch, 3, 224, 224), &Device::Cpu).expect("tensor");
            let flops = fast.flops(batch, 224, 224).expect("flops") as f64;
            let (med, min) = time_ms(runs_for(batch).min(5), 1, || {
                model.model().forward_all(&x).expect("candle forward");
            });
            rows.push(Row {
                case: name,
                batch,
                median_ms: med,
                min_ms: min,
                gflop: flops / 1e9,
            });
        }
    }

    println!("threads: {threads}");
    println!(
        "{:<20} {:>6} {:>11} {:>11} {:>8} {:>9}",
        "case", "batch", "median ms", "min ms", "GFLOP", "GFLOP/s"
    );
    for r in &rows {
        println!(
            "{:<20} {:>6} {:>11.2} {:>11.2} {:>8.2} {:>9.1}",
            r.case,
            r.batch,
            r.median_ms,
            r.min_ms,
            r.gflop,
            r.gflop / (r.median_ms / 1e3)
        );
    }
    if args.json {
        let items: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{{\"case\":\"{}\",\"batch\":{},\"median_ms\":{:.3},\"min_ms\":{:.3},\"gflop\":{:.4}}}",
                    r.case, r.batch, r.median_ms, r.min_ms, r.gflop
                )
            })
            .collect();
        println!(
            "{{\"threads\":{threads},\"results\":[{}]}}",
            items.join(",")
        );
    }
}

//! End-to-end captioning speed (issue #6, "Speed"): JPEG file -> decode, resize, normalise ->
//! EfficientNet-Lite0 (fast kernels) -> the bundle's decoder with beam search 3, max 20 words.
//!
//! - single: the model is loaded once, then the median over `--runs` calls of
//!   `Captioner::load_image` (read, JPEG decode, resize, which is a no-op at 224x224) +
//!   `Captioner::caption_images` (normalise, encode, beam search) for one image, in ms/image. The
//!   image is the first Flickr8k test image, a 224x224 JPEG like every image of the shared copy.
//! - folder: the 1,000 Flickr8k test images in batches of `--batch-size` (default 32), as `captioner
//!   caption DIR` does, with the JPEGs of batch k+1 decoded on `--decode-threads` threads while
//!   batch k is encoded and captioned (`--decode-threads 0`: decode each batch inline, serially).
//!   Wall time from the first file read to the last caption, in images/s. `--folder DIR` captions
//!   every file of DIR instead (`scripts/bench_caption.sh` uses it on PNG copies of test images, so
//!   both pipelines see the same pixels whatever their JPEG decoders do).
//!
//! `crates/generate/benches/caption_pipeline_torch.py` measures the same pipeline in PyTorch;
//! `scripts/bench_caption.sh` runs both back to back and prints the ratios.
//!
//!   RAYON_NUM_THREADS=2 cargo bench -p captioner-generate --bench caption_pipeline -- \
//!       [--runs 20] [--batch-size 32] [--images 1000] [--decode-threads 2] [--only single,folder]
//!       [--image FILE] [--folder DIR] [--captions-out FILE]
//!
//! Paths are relative to the workspace root. Model bundle: `$CAPTIONER_BENCH_MODEL`, else
//! `models/default`, else `runs/default/best`. Data: `$CAPTIONER_SHARED_DATA` (default
//! `../shared/data`): Lite0 weights in `models/efficientnet-lite0/`, images and the test list in
//! `flickr8k/`. `--captions-out` (default `target/bench-caption/captions_rust.tsv`) receives the
//! folder's captions (`image<TAB>caption`), which the PyTorch script compares with its own.

use captioner_encode::encoder::Backend;
use captioner_generate::pipeline::Captioner;
use captioner_generate::{GenerateConfig, Strategy};
use image::RgbImage;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

struct Args {
    runs: usize,
    batch_size: usize,
    images: usize,
    decode_threads: usize,
    single: bool,
    folder: bool,
    image: Option<PathBuf>,
    folder_dir: Option<PathBuf>,
    captions_out: PathBuf,
}

fn parse_args() -> Args {
    let mut args = Args {
        runs: 20,
        batch_size: 32,
        images: 1000,
        decode_threads: std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2),
        single: true,
        folder: true,
        image: None,
        folder_dir: None,
        captions_out: PathBuf::from("target/bench-caption/captions_rust.tsv"),
    };
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>, name: &str| -> usize {
        v.and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{name} needs a number"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => args.runs = num(it.next(), "--runs").max(1),
            "--batch-size" => args.batch_size = num(it.next(), "--batch-size").max(1),
            "--images" => args.images = num(it.next(), "--images"),
            "--decode-threads" => args.decode_threads = num(it.next(), "--decode-threads"),
            "--only" => {
                let only = it.next().unwrap_or_default();
                args.single = only.split(',').any(|s| s == "single");
                args.folder = only.split(',').any(|s| s == "folder");
            }
            "--image" => args.image = it.next().map(PathBuf::from),
            "--folder" => args.folder_dir = it.next().map(PathBuf::from),
            "--captions-out" => {
                args.captions_out = PathBuf::from(it.next().expect("--captions-out needs a path"))
            }
            // `cargo bench` passes `--bench`; ignore anything else we do not know.
            _ => {}
        }
    }
    args
}

fn shared_data() -> PathBuf {
    std::env::var_os("CAPTIONER_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/data"))
}

/// `$CAPTIONER_BENCH_MODEL`, else `models/default`, else `runs/default/best`.
fn model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CAPTIONER_BENCH_MODEL") {
        return PathBuf::from(dir);
    }
    let shipped = PathBuf::from("models/default");
    if shipped.join("model.safetensors").is_file() {
        shipped
    } else {
        PathBuf::from("runs/default/best")
    }
}

/// The Flickr8k test images, in the order of the split file.
fn test_images(limit: usize) -> Vec<PathBuf> {
    let flickr = shared_data().join("flickr8k");
    let list = flickr.join("Flickr_8k.testImages.txt");
    let text = std::fs::read_to_string(&list).unwrap_or_else(|e| panic!("{}: {e}", list.display()));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(limit)
        .map(|name| flickr.join("images").join(name))
        .collect()
}

/// Every file of `dir`, sorted by name.
fn dir_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("reading the folder").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Median and minimum of `runs` timed calls after `warmup` untimed ones, in milliseconds.
fn time_ms(runs: usize, warmup: usize, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..warmup {
        f();
    }
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (t[t.len() / 2], t[0])
}

/// Decodes one batch of files on `threads` threads (0: inline), in file order.
fn decode_batch(captioner: &Captioner, files: &[PathBuf], threads: usize) -> Vec<RgbImage> {
    let load = |p: &PathBuf| {
        captioner
            .load_image(p)
            .unwrap_or_else(|e| panic!("decoding: {e}"))
    };
    if threads <= 1 {
        return files.iter().map(load).collect();
    }
    let per = files.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(per)
            .map(|chunk| s.spawn(move || chunk.iter().map(load).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("decode thread"))
            .collect()
    })
}

/// Captions `files` in batches; returns the captions in file order and the wall time in seconds.
fn caption_folder(
    captioner: &Captioner,
    files: &[PathBuf],
    config: &GenerateConfig,
    batch_size: usize,
    decode_threads: usize,
) -> (Vec<String>, f64) {
    let start = Instant::now();
    let mut captions = Vec::with_capacity(files.len());
    let mut caption = |images: Vec<RgbImage>| {
        let out = captioner
            .caption_images(images, config)
            .expect("captioning a batch");
        captions.extend(out.into_iter().map(|c| c.caption));
    };
    if decode_threads == 0 {
        for chunk in files.chunks(batch_size) {
            caption(decode_batch(captioner, chunk, 1));
        }
    } else {
        std::thread::scope(|s| {
            // Capacity 1: one decoded batch waits while the next is being decoded.
            let (tx, rx) = mpsc::sync_channel::<Vec<RgbImage>>(1);
            s.spawn(move || {
                for chunk in files.chunks(batch_size) {
                    if tx
                        .send(decode_batch(captioner, chunk, decode_threads))
                        .is_err()
                    {
                        break;
                    }
                }
            });
            for images in rx {
                caption(images);
            }
        });
    }
    (captions, start.elapsed().as_secs_f64())
}

fn main() {
    // `cargo bench` runs in the crate's folder; every path here is relative to the workspace root.
    std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .expect("workspace root");
    let args = parse_args();
    let dir = model_dir();
    let t = Instant::now();
    let captioner = Captioner::load(&dir, None, Backend::Fast)
        .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()));
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let bundle = captioner.bundle();
    // Beam 3 with the bundle's length penalty (as `captioner caption`), 1..=20 words.
    let config = GenerateConfig {
        strategy: Strategy::Beam {
            size: 3,
            length_penalty: bundle.config.length_penalty.unwrap_or_default(),
            top_k_hypotheses: 1,
        },
        ..GenerateConfig::default()
    };
    println!(
        "threads: {}  model: {} ({}, vocabulary {}, length penalty {})  load ms: {load_ms:.0}",
        captioner_encode::kernels::num_threads(),
        dir.display(),
        bundle.config.decoder.kind(),
        bundle.vocab.len(),
        bundle.config.length_penalty.unwrap_or_default(),
    );
    if args.single {
        let path = args
            .image
            .clone()
            .unwrap_or_else(|| test_images(1).remove(0));
        let mut caption = String::new();
        let (med, min) = time_ms(args.runs, 3, || {
            let img = captioner.load_image(&path).expect("decoding");
            let out = captioner
                .caption_images(vec![img], &config)
                .expect("captioning");
            caption.clone_from(&out[0].caption);
        });
        let (w, h) = image::image_dimensions(&path).expect("image size");
        println!(
            "single ms/image: {med:.2}  (min {min:.2}, median of {} runs, {w}x{h} {}: \"{caption}\")",
            args.runs,
            path.display()
        );
    }

    if args.folder {
        let files = match &args.folder_dir {
            Some(dir) => dir_files(dir),
            None => test_images(args.images),
        };
        let (captions, secs) = caption_folder(
            &captioner,
            &files,
            &config,
            args.batch_size,
            args.decode_threads,
        );
        println!(
            "folder images/s: {:.2}  ({} images, batch {}, decode threads {}, {secs:.2} s)",
            files.len() as f64 / secs,
            files.len(),
            args.batch_size,
            args.decode_threads
        );
        if let Some(dir) = args.captions_out.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&args.captions_out)
                .unwrap_or_else(|e| panic!("{}: {e}", args.captions_out.display())),
        );
        for (file, caption) in files.iter().zip(&captions) {
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            writeln!(out, "{name}\t{caption}").expect("writing captions");
        }
        out.flush().expect("writing captions");
    }
}

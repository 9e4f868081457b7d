//! Captions images with a Hugging Face model folder and prints how long it took, until the
//! `captioner` CLI takes these folders itself:
//!
//! ```sh
//! cargo run --release -p captioner-vlm --example caption -- models/blip-base photo.jpg [--beams 3] [--prompt "a picture of"]
//! ```

use captioner_vlm::{HfCaptioner, HfGenerateOptions};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or(
        "usage: caption <model dir> <image>... [--beams N] [--prompt TEXT] [--max N] [--min N]",
    )?;
    let mut opts = HfGenerateOptions::default();
    let mut paths = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--beams" => {
                opts.num_beams = args.next().ok_or("--beams needs a number")?.parse()?;
            }
            "--prompt" => opts.prompt = Some(args.next().ok_or("--prompt needs text")?),
            "--max" => {
                opts.max_new_tokens = args.next().ok_or("--max needs a number")?.parse()?;
            }
            "--min" => {
                opts.min_new_tokens = args.next().ok_or("--min needs a number")?.parse()?;
            }
            _ => paths.push(a),
        }
    }
    let t = Instant::now();
    let model = HfCaptioner::load(&dir)?;
    eprintln!(
        "loaded {} from {dir} in {:.2}s",
        model.architecture().name(),
        t.elapsed().as_secs_f64()
    );
    let images = paths
        .iter()
        .map(|p| Ok(image::open(p)?.to_rgb8()))
        .collect::<Result<Vec<_>, image::ImageError>>()?;
    let t = Instant::now();
    let captions = model.caption(&images, &opts)?;
    let secs = t.elapsed().as_secs_f64();
    for (path, caps) in paths.iter().zip(&captions) {
        for c in caps {
            println!("{path}\t{}\t{:.3}", c.text, c.log_prob);
        }
    }
    eprintln!(
        "{} image(s), {} beam(s): {secs:.2}s ({:.2}s per image)",
        images.len(),
        opts.num_beams,
        secs / images.len().max(1) as f64
    );
    Ok(())
}

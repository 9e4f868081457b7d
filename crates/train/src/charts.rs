//! `loss.png` and `metrics.png` in the run directory, redrawn after every epoch from the log.

use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

/// Registers the system font with plotters once; without one, charts are drawn without text
/// rather than not at all.
fn font_available() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        captioner_generate::font::system_font().is_some_and(|bytes| {
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
        })
    })
}

type Series = (String, Vec<(f64, f64)>, RGBColor);

fn series(records: &[serde_json::Value], kind: &str, x: &str, y: &str) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter(|r| r.get("type").and_then(|t| t.as_str()) == Some(kind))
        .filter_map(|r| Some((r.get(x)?.as_f64()?, r.get(y)?.as_f64()?)))
        .filter(|(_, v)| v.is_finite())
        .collect()
}

fn plot(path: &Path, title: &str, x_label: &str, lines: &[Series]) -> Result<(), String> {
    let points: Vec<&(f64, f64)> = lines.iter().flat_map(|(_, s, _)| s).collect();
    if points.is_empty() {
        return Ok(());
    }
    let text = font_available();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &&(x, y) in &points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    let root = BitMapBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60);
    if text {
        builder.caption(title, ("sans-serif", 22));
    }
    let mut chart = builder
        .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
        .map_err(|e| e.to_string())?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc(x_label);
    } else {
        mesh.disable_x_mesh()
            .disable_y_mesh()
            .x_labels(0)
            .y_labels(0);
    }
    mesh.draw().map_err(|e| e.to_string())?;
    for (name, s, color) in lines {
        let color = *color;
        let drawn = chart
            .draw_series(LineSeries::new(s.iter().copied(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?;
        if text {
            drawn
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

/// Redraws both charts from the log records.
pub(crate) fn draw(run: &Path, records: &[serde_json::Value]) -> Result<(), String> {
    let step_loss = series(records, "step", "step", "loss");
    let val_loss = series(records, "epoch", "step", "val_loss");
    let train_loss = series(records, "epoch", "step", "train_loss");
    plot(
        &run.join("loss.png"),
        "Cross-entropy per token",
        "step",
        &[
            ("train (steps)".into(), step_loss, RGBColor(160, 190, 230)),
            ("train (epoch mean)".into(), train_loss, BLUE),
            ("validation".into(), val_loss, RED),
        ],
    )?;
    let mut metrics = vec![
        (
            "BLEU-1".into(),
            series(records, "epoch", "epoch", "bleu1"),
            GREEN,
        ),
        (
            "BLEU-4".into(),
            series(records, "epoch", "epoch", "bleu4"),
            BLUE,
        ),
        (
            "CIDEr-D".into(),
            series(records, "epoch", "epoch", "cider_d"),
            RED,
        ),
    ];
    // SCST runs: the sampled captions' mean training CIDEr-D reward, in the same percent.
    let reward: Vec<(f64, f64)> = series(records, "epoch", "epoch", "train_reward")
        .into_iter()
        .map(|(x, y)| (x, y * 100.0))
        .collect();
    if !reward.is_empty() {
        metrics.push((
            "train reward (CIDEr-D of samples)".into(),
            reward,
            RGBColor(230, 150, 40),
        ));
    }
    plot(
        &run.join("metrics.png"),
        "Validation (greedy), %",
        "epoch",
        &metrics,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_png_files() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<serde_json::Value> = (1..=3)
            .flat_map(|e| {
                [
                    serde_json::json!({"type": "step", "step": e * 10, "loss": 5.0 / e as f64}),
                    serde_json::json!({"type": "epoch", "epoch": e, "step": e * 10,
                        "train_loss": 4.0 / e as f64, "val_loss": 4.5 / e as f64,
                        "bleu1": 40.0 + e as f64, "bleu4": 10.0 + e as f64, "cider_d": 30.0 + e as f64}),
                ]
            })
            .collect();
        draw(dir.path(), &records).unwrap();
        for f in ["loss.png", "metrics.png"] {
            let bytes = std::fs::read(dir.path().join(f)).unwrap();
            assert_eq!(&bytes[1..4], b"PNG", "{f}");
        }
    }
}

//! Attention heat-maps: each word's attention over the feature grid, upsampled bilinearly to the
//! image and blended over it in the `inferno` colour map (black = no attention, pale yellow = the
//! most attended cell), one panel per word.

use crate::GenerateError;
use image::{imageops, Rgb, RgbImage};

/// Longest side of a panel in [`attention_panel`] (larger images are scaled down to it).
pub const PANEL_SIDE: u32 = 224;
/// Most panels per row in [`attention_panel`].
pub const PANEL_COLUMNS: usize = 5;
/// White gap between panels, in pixels.
pub const PANEL_GAP: u32 = 4;
/// Opacity of the heat-map over the image.
pub const HEAT_ALPHA: f32 = 0.5;
/// Height of the white strip under each panel that holds its word.
pub const LABEL_HEIGHT: u32 = 22;

/// Upsamples a row-major `[gh, gw]` map (`grid = (gh, gw)`) to `[height, width]`
/// (`size = (height, width)`) by bilinear interpolation with half-pixel centres and clamped
/// edges (PyTorch's `interpolate(mode="bilinear", align_corners=False)`).
pub fn upsample_bilinear(
    map: &[f32],
    grid: (usize, usize),
    size: (usize, usize),
) -> Result<Vec<f32>, GenerateError> {
    let (gh, gw) = grid;
    let (h, w) = size;
    if gh == 0 || gw == 0 || map.len() != gh * gw {
        return Err(GenerateError::Shape(format!(
            "a {gh}x{gw} attention grid needs {} values, got {}",
            gh * gw,
            map.len()
        )));
    }
    // Source index pair and weight of the second, per output coordinate.
    let taps = |n_out: usize, n_in: usize| -> Vec<(usize, usize, f32)> {
        let scale = n_in as f32 / n_out as f32;
        (0..n_out)
            .map(|o| {
                let src = ((o as f32 + 0.5) * scale - 0.5).clamp(0.0, (n_in - 1) as f32);
                let i0 = (src.floor() as usize).min(n_in - 1);
                let i1 = (i0 + 1).min(n_in - 1);
                (i0, i1, src - i0 as f32)
            })
            .collect()
    };
    let xs = taps(w, gw);
    let ys = taps(h, gh);
    let mut out = Vec::with_capacity(h * w);
    let mut row = vec![0.0f32; gw];
    for &(y0, y1, fy) in &ys {
        let (r0, r1) = (&map[y0 * gw..(y0 + 1) * gw], &map[y1 * gw..(y1 + 1) * gw]);
        for ((v, &a), &b) in row.iter_mut().zip(r0).zip(r1) {
            *v = a + (b - a) * fy;
        }
        out.extend(
            xs.iter()
                .map(|&(x0, x1, fx)| row[x0] + (row[x1] - row[x0]) * fx),
        );
    }
    Ok(out)
}

/// `inferno` at 17 evenly spaced points (matplotlib's map, 8-bit).
const INFERNO: [[u8; 3]; 17] = [
    [0, 0, 4],
    [11, 7, 36],
    [33, 12, 74],
    [61, 9, 101],
    [87, 16, 110],
    [113, 25, 110],
    [138, 34, 106],
    [163, 44, 97],
    [188, 55, 84],
    [208, 69, 69],
    [227, 89, 51],
    [241, 113, 31],
    [249, 140, 10],
    [252, 170, 15],
    [249, 201, 50],
    [242, 232, 101],
    [252, 255, 164],
];

/// The `inferno` colour of `v` in `[0, 1]` (clamped; NaN is 0); brightness rises with `v`.
pub fn inferno(v: f32) -> [u8; 3] {
    let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
    let x = v * (INFERNO.len() - 1) as f32;
    let i = (x.floor() as usize).min(INFERNO.len() - 2);
    let f = x - i as f32;
    let (a, b) = (INFERNO[i], INFERNO[i + 1]);
    std::array::from_fn(|c| (a[c] as f32 + (b[c] as f32 - a[c] as f32) * f).round() as u8)
}

/// The image with one attention map (`[gh, gw]`, `grid = (gh, gw)`) blended over it: the map is
/// scaled so its largest weight is 1, upsampled bilinearly to the image and coloured with
/// [`inferno`] at opacity [`HEAT_ALPHA`].
pub fn overlay_heatmap(
    image: &RgbImage,
    map: &[f32],
    grid: (usize, usize),
) -> Result<RgbImage, GenerateError> {
    let (w, h) = image.dimensions();
    let max = map.iter().copied().fold(0.0f32, f32::max);
    let scale = if max > 0.0 && max.is_finite() {
        1.0 / max
    } else {
        0.0
    };
    let normalised: Vec<f32> = map.iter().map(|&a| a * scale).collect();
    let up = upsample_bilinear(&normalised, grid, (h as usize, w as usize))?;
    let mut out = image.clone();
    for (px, &a) in out.pixels_mut().zip(&up) {
        let heat = inferno(a);
        for (v, &hc) in px.0.iter_mut().zip(&heat) {
            *v = (*v as f32 * (1.0 - HEAT_ALPHA) + hc as f32 * HEAT_ALPHA).round() as u8;
        }
    }
    Ok(out)
}

/// One [`overlay_heatmap`] panel per word, laid out left to right in rows of at most
/// [`PANEL_COLUMNS`], separated by [`PANEL_GAP`] white pixels; the image is first scaled down so
/// its longest side is at most [`PANEL_SIDE`]. `attention[i]` (`gh * gw` weights, `grid =
/// (gh, gw)`) is the map of `words[i]`, as [`crate::Hypothesis::attention`] gives them. Each
/// panel has a [`LABEL_HEIGHT`] strip below it with its word, drawn when a font is found
/// ([`crate::font::system_font`]).
pub fn attention_panel(
    image: &RgbImage,
    words: &[String],
    attention: &[Vec<f32>],
    grid: (usize, usize),
) -> Result<RgbImage, GenerateError> {
    if attention.is_empty() || words.len() != attention.len() {
        return Err(GenerateError::Shape(format!(
            "{} words with {} attention maps (need as many, at least one)",
            words.len(),
            attention.len()
        )));
    }
    let (w, h) = image.dimensions();
    if w == 0 || h == 0 {
        return Err(GenerateError::Shape("the image is empty".into()));
    }
    let base = if w.max(h) > PANEL_SIDE {
        let s = PANEL_SIDE as f32 / w.max(h) as f32;
        let (nw, nh) = (
            ((w as f32 * s).round() as u32).max(1),
            ((h as f32 * s).round() as u32).max(1),
        );
        imageops::resize(image, nw, nh, imageops::FilterType::Triangle)
    } else {
        image.clone()
    };
    let (pw, ph) = base.dimensions();
    let cols = attention.len().min(PANEL_COLUMNS);
    let rows = attention.len().div_ceil(cols);
    let out_w = cols as u32 * pw + (cols as u32 - 1) * PANEL_GAP;
    let out_h = rows as u32 * (ph + LABEL_HEIGHT) + (rows as u32 - 1) * PANEL_GAP;
    let mut out = RgbImage::from_pixel(out_w, out_h, Rgb([255, 255, 255]));
    for (i, map) in attention.iter().enumerate() {
        let panel = overlay_heatmap(&base, map, grid)?;
        let (c, r) = ((i % cols) as u32, (i / cols) as u32);
        imageops::replace(
            &mut out,
            &panel,
            (c * (pw + PANEL_GAP)) as i64,
            (r * (ph + LABEL_HEIGHT + PANEL_GAP)) as i64,
        );
        let size = LABEL_HEIGHT as f32 * 0.75;
        let word = &words[i];
        let x = c * (pw + PANEL_GAP);
        let y = r * (ph + LABEL_HEIGHT + PANEL_GAP) + ph;
        let centred = x as f32 + ((pw as f32 - crate::font::text_width(word, size)) / 2.0).max(0.0);
        crate::font::draw_text(
            &mut out,
            centred,
            y as f32 + 2.0,
            word,
            size,
            Rgb([0, 0, 0]),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsample_identity_and_constant() {
        let m = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(upsample_bilinear(&m, (2, 3), (2, 3)).unwrap(), m.to_vec());
        let c = upsample_bilinear(&[0.25; 4], (2, 2), (7, 5)).unwrap();
        assert_eq!(c.len(), 35);
        assert!(c.iter().all(|&v| (v - 0.25).abs() < 1e-6));
        assert!(upsample_bilinear(&m, (2, 2), (4, 4)).is_err());
    }

    #[test]
    fn upsample_matches_pytorch_2x() {
        // torch.nn.functional.interpolate([[1, 2]], scale_factor=2, mode="linear",
        // align_corners=False) == [1, 1.25, 1.75, 2]
        let up = upsample_bilinear(&[1.0, 2.0], (1, 2), (1, 4)).unwrap();
        assert_eq!(up, vec![1.0, 1.25, 1.75, 2.0]);
        let up = upsample_bilinear(&[1.0, 2.0], (2, 1), (4, 1)).unwrap();
        assert_eq!(up, vec![1.0, 1.25, 1.75, 2.0]);
    }

    #[test]
    fn inferno_ends_and_brightness() {
        assert_eq!(inferno(0.0), [0, 0, 4]);
        assert_eq!(inferno(1.0), [252, 255, 164]);
        assert_eq!(inferno(f32::NAN), inferno(0.0));
        let lum = |c: [u8; 3]| 0.2126 * c[0] as f32 + 0.7152 * c[1] as f32 + 0.0722 * c[2] as f32;
        for i in 0..100 {
            assert!(lum(inferno(i as f32 / 100.0)) <= lum(inferno((i + 1) as f32 / 100.0)));
        }
    }
}

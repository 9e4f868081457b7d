//! Attention heat-map panels.

use captioner_generate::heatmap::{LABEL_HEIGHT, PANEL_GAP, PANEL_SIDE};
use captioner_generate::{attention_panel, overlay_heatmap, upsample_bilinear};
use image::{Rgb, RgbImage};

fn lum(p: &Rgb<u8>) -> f32 {
    0.2126 * p.0[0] as f32 + 0.7152 * p.0[1] as f32 + 0.0722 * p.0[2] as f32
}

/// A 7x7 map with all weight on cell (row 2, col 5) but a little everywhere.
fn hot_map() -> Vec<f32> {
    let mut m = vec![0.01f32; 49];
    m[2 * 7 + 5] = 0.51;
    m
}

#[test]
fn panel_dimensions() {
    let img = RgbImage::from_pixel(300, 200, Rgb([90, 120, 150]));
    let words: Vec<String> = (0..7).map(|i| format!("w{i}")).collect();
    let maps = vec![vec![1.0 / 49.0; 49]; 7];
    let out = attention_panel(&img, &words, &maps, (7, 7)).unwrap();
    // 300x200 scaled to 224x149; 5 panels on the first row, 2 on the second.
    assert_eq!(PANEL_SIDE, 224);
    assert_eq!(
        out.dimensions(),
        (
            5 * 224 + 4 * PANEL_GAP,
            2 * (149 + LABEL_HEIGHT) + PANEL_GAP
        )
    );
    // A small image keeps its size; one word, one panel.
    let small = RgbImage::from_pixel(70, 35, Rgb([0, 0, 0]));
    let one = attention_panel(&small, &words[..1], &maps[..1], (7, 7)).unwrap();
    assert_eq!(one.dimensions(), (70, 35 + LABEL_HEIGHT));
    // Mismatched inputs are errors, not panics.
    assert!(attention_panel(&img, &words[..2], &maps[..3], (7, 7)).is_err());
    assert!(attention_panel(&img, &[], &[], (7, 7)).is_err());
    assert!(attention_panel(&img, &words[..1], &[vec![0.0; 48]], (7, 7)).is_err());
}

#[test]
fn the_hottest_cell_is_the_brightest_area() {
    let img = RgbImage::from_pixel(70, 70, Rgb([128, 128, 128]));
    let words = vec!["dog".to_string(), "ball".to_string()];
    let mut second = vec![0.0f32; 49];
    second[6 * 7] = 1.0; // bottom-left cell
    let out = attention_panel(&img, &words, &[hot_map(), second], (7, 7)).unwrap();
    assert_eq!(out.dimensions(), (2 * 70 + PANEL_GAP, 70 + LABEL_HEIGHT));
    // Mean brightness of each 10x10 cell of panel `k`.
    let cell_lum = |k: u32, r: u32, c: u32| -> f32 {
        let x0 = k * (70 + PANEL_GAP);
        let mut s = 0.0;
        for y in r * 10..(r + 1) * 10 {
            for x in c * 10..(c + 1) * 10 {
                s += lum(out.get_pixel(x0 + x, y));
            }
        }
        s / 100.0
    };
    for (k, hot) in [(0, (2, 5)), (1, (6, 0))] {
        let mut best = (f32::MIN, (0, 0));
        for r in 0..7 {
            for c in 0..7 {
                let l = cell_lum(k, r, c);
                if l > best.0 {
                    best = (l, (r, c));
                }
            }
        }
        assert_eq!(best.1, hot, "panel {k}");
        // The single brightest pixel lies in the hot cell too.
        let x0 = k * (70 + PANEL_GAP);
        let (mut bx, mut by, mut bl) = (0, 0, f32::MIN);
        for y in 0..70 {
            for x in 0..70 {
                let l = lum(out.get_pixel(x0 + x, y));
                if l > bl {
                    (bx, by, bl) = (x, y, l);
                }
            }
        }
        assert_eq!((by / 10, bx / 10), hot);
    }
    // The gap is white.
    assert_eq!(out.get_pixel(71, 30), &Rgb([255, 255, 255]));
}

#[test]
fn overlay_keeps_the_image_size_and_blends() {
    let img = RgbImage::from_pixel(33, 21, Rgb([200, 10, 10]));
    let out = overlay_heatmap(&img, &[0.0; 4], (2, 2)).unwrap();
    assert_eq!(out.dimensions(), (33, 21));
    // Zero attention: the image blended half with inferno(0) = (0, 0, 4).
    assert_eq!(out.get_pixel(5, 5), &Rgb([100, 5, 7]));
}

#[test]
fn upsample_peak_stays_at_its_cell() {
    let up = upsample_bilinear(&hot_map(), (7, 7), (70, 140)).unwrap();
    assert_eq!(up.len(), 70 * 140);
    let (i, _) = up
        .iter()
        .enumerate()
        .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
    let (y, x) = (i / 140, i % 140);
    assert_eq!((y / 10, x / 20), (2, 5));
    assert!(up.iter().all(|&v| (0.01..=0.51).contains(&v)));
}

#[test]
fn each_panel_is_labelled_with_its_word_when_a_font_exists() {
    let img = RgbImage::from_pixel(100, 100, Rgb([128, 128, 128]));
    let words = vec!["dog".to_string(), "".to_string()];
    let out = attention_panel(&img, &words, &[hot_map(), hot_map()], (7, 7)).unwrap();
    let dark_in_strip = |k: u32| {
        (100..100 + LABEL_HEIGHT)
            .flat_map(|y| (0..100).map(move |x| (x, y)))
            .filter(|&(x, y)| lum(out.get_pixel(k * (100 + PANEL_GAP) + x, y)) < 128.0)
            .count()
    };
    let font = captioner_generate::font::system_font().is_some();
    assert_eq!(dark_in_strip(0) > 20, font, "label of `dog`");
    assert_eq!(dark_in_strip(1), 0, "an empty word leaves the strip white");
}

//! Text on images (attention panel labels, chart captions) from a TrueType font found on the
//! system: fonts are not bundled, so where none is found, pictures are drawn without text.

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use image::{Rgb, RgbImage};
use std::sync::OnceLock;

/// Environment variable naming a `.ttf` to use instead of the system fonts tried below.
pub const FONT_ENV: &str = "CAPTIONER_FONT";

const SYSTEM_FONTS: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// The bytes of a usable font (`$CAPTIONER_FONT`, then common system paths), read once.
pub fn system_font() -> Option<&'static [u8]> {
    static FONT: OnceLock<Option<&'static [u8]>> = OnceLock::new();
    *FONT.get_or_init(|| {
        let env = std::env::var(FONT_ENV).ok();
        let candidates: Vec<String> = env
            .into_iter()
            .chain(SYSTEM_FONTS.iter().map(|p| p.to_string()))
            .collect();
        candidates
            .iter()
            .filter_map(|p| std::fs::read(p).ok())
            .find(|bytes| FontRef::try_from_slice(bytes).is_ok())
            .map(|bytes| &*Box::leak(bytes.into_boxed_slice()))
    })
}

/// Draws `text` in `color` with its top-left corner at `(x, y)`, `size` pixels high, clipped to
/// the image. Returns false (and draws nothing) without a font.
pub fn draw_text(
    img: &mut RgbImage,
    x: f32,
    y: f32,
    text: &str,
    size: f32,
    color: Rgb<u8>,
) -> bool {
    let Some(font) = system_font().and_then(|b| FontRef::try_from_slice(b).ok()) else {
        return false;
    };
    let scale = PxScale::from(size);
    let scaled = font.as_scaled(scale);
    let mut caret = x;
    let (w, h) = img.dimensions();
    for c in text.chars() {
        let id = font.glyph_id(c);
        let glyph = id.with_scale_and_position(scale, point(caret, y + scaled.ascent()));
        caret += scaled.h_advance(id);
        let Some(outlined) = font.outline_glyph(glyph) else {
            continue;
        };
        let bounds = outlined.px_bounds();
        outlined.draw(|gx, gy, coverage| {
            let px = bounds.min.x as i64 + gx as i64;
            let py = bounds.min.y as i64 + gy as i64;
            if px < 0 || py < 0 || px >= w as i64 || py >= h as i64 {
                return;
            }
            let p = img.get_pixel_mut(px as u32, py as u32);
            for (v, &c) in p.0.iter_mut().zip(&color.0) {
                *v = (*v as f32 * (1.0 - coverage) + c as f32 * coverage).round() as u8;
            }
        });
    }
    true
}

/// Width in pixels of `text` at `size` (0 without a font).
pub fn text_width(text: &str, size: f32) -> f32 {
    let Some(font) = system_font().and_then(|b| FontRef::try_from_slice(b).ok()) else {
        return 0.0;
    };
    let scaled = font.as_scaled(PxScale::from(size));
    text.chars()
        .map(|c| scaled.h_advance(font.glyph_id(c)))
        .sum()
}

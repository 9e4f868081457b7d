//! Damaged image files never panic the decoder: random cuts and byte changes of small JPEGs and
//! PNGs either decode to the header's size or fail with an error naming the file. The same
//! property runs under libFuzzer as `fuzz/fuzz_targets/image_decode.rs`.

use std::io::Cursor;
use std::path::Path;

use captioner_encode::image::{decode_rgb, ImageError};
use image::{DynamicImage, ImageFormat, RgbImage};
use proptest::prelude::*;

fn encoded(format: ImageFormat) -> Vec<u8> {
    let img = RgbImage::from_fn(24, 16, |x, y| {
        image::Rgb([(x * 10) as u8, (y * 15) as u8, (x * y) as u8])
    });
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img)
        .write_to(&mut out, format)
        .expect("encode test image");
    out.into_inner()
}

fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    let path = Path::new("fuzzed/image.bin");
    match decode_rgb(bytes, path, 1 << 16) {
        // A changed byte may change the header, but never past the pixel limit.
        Ok(rgb) => prop_assert!(u64::from(rgb.width()) * u64::from(rgb.height()) <= 1 << 16),
        Err(err) => {
            prop_assert_eq!(err.path(), path);
            prop_assert!(err.to_string().starts_with("fuzzed/image.bin: "), "{}", err);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn damaged_images_decode_or_fail_naming_the_file(
        png in any::<bool>(),
        cut in 0.0f64..=1.0,
        changes in proptest::collection::vec((0.0f64..1.0, any::<u8>()), 0..4),
    ) {
        let mut bytes = encoded(if png { ImageFormat::Png } else { ImageFormat::Jpeg });
        for (at, value) in changes {
            let at = (at * bytes.len() as f64) as usize;
            bytes[at] = value;
        }
        let keep = (cut * bytes.len() as f64) as usize;
        check(&bytes[..keep])?;
    }

    #[test]
    fn a_cut_jpeg_is_never_decoded(cut in 0.0f64..1.0) {
        let bytes = encoded(ImageFormat::Jpeg);
        let keep = ((cut * bytes.len() as f64) as usize).min(bytes.len() - 1);
        let err = decode_rgb(&bytes[..keep], Path::new("cut.jpg"), 1 << 16);
        prop_assert!(
            matches!(
                err,
                Err(ImageError::Truncated { .. } | ImageError::Empty { .. } | ImageError::UnknownFormat { .. } | ImageError::Decode { .. })
            ),
            "{:?}",
            err.map(|rgb| rgb.dimensions())
        );
    }
}

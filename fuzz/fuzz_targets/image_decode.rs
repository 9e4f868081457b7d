#![no_main]
use std::path::Path;

use captioner_encode::image::decode_rgb;
use libfuzzer_sys::fuzz_target;

// Any bytes as an uploaded or listed image file: an image within the pixel limit, or an error
// that names the file; never a panic, and never a decode of an image over the limit.
fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.img");
    match decode_rgb(data, path, 1 << 20) {
        Ok(rgb) => assert!(u64::from(rgb.width()) * u64::from(rgb.height()) <= 1 << 20),
        Err(err) => assert_eq!(err.path(), path),
    }
});

//! The truncation check on real photos: every eighth Flickr8k image (about 1,000 files) decodes,
//! and the same files cut short are refused by name rather than captioned as half-grey pictures.

mod common;

use std::path::Path;

use captioner_encode::image::{decode_rgb, ImageError, DEFAULT_MAX_PIXELS};

#[test]
fn real_photos_decode_and_their_cut_copies_are_refused_as_truncated() {
    let images = common::shared_data().join("flickr8k/images");
    let mut names: Vec<_> = std::fs::read_dir(&images)
        .expect("list flickr8k images")
        .map(|entry| entry.expect("read dir entry").file_name())
        .collect();
    names.sort();
    let mut checked = 0;
    for name in names.iter().step_by(8) {
        let path = images.join(name);
        let bytes = std::fs::read(&path).expect("read image");
        let rgb = decode_rgb(&bytes, &path, DEFAULT_MAX_PIXELS);
        assert!(rgb.is_ok(), "{}: {:?}", path.display(), rgb.err());
        // Cut inside the scan data, and just before the end marker.
        for cut in [bytes.len() * 2 / 3, bytes.len() - 2] {
            let err = decode_rgb(&bytes[..cut], Path::new("cut.jpg"), DEFAULT_MAX_PIXELS);
            assert!(
                matches!(err, Err(ImageError::Truncated { .. })),
                "{} cut at {cut}: {:?}",
                path.display(),
                err.map(|rgb| rgb.dimensions())
            );
        }
        checked += 1;
    }
    assert!(
        checked > 1000,
        "only {checked} images found in {}",
        images.display()
    );
}

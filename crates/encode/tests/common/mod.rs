//! What the encoder integration tests share (as `crates/cli/tests/common`).

use std::path::PathBuf;

/// The shared data folder (Flickr8k images, the Lite0 weights): `$CAPTIONER_SHARED_DATA`, else
/// `../shared/data` beside the checkout. Panics, saying where it looked, when it is not there.
pub fn shared_data() -> PathBuf {
    let dir = std::env::var_os("CAPTIONER_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
        });
    assert!(
        dir.join("flickr8k/images").is_dir(),
        "shared data not found at {} (set CAPTIONER_SHARED_DATA)",
        dir.display()
    );
    dir
}

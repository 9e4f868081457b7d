//! What the CLI's integration tests share.
// Each test binary compiles this module and uses only some of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The shared data folder (Flickr8k, the Lite0 weights): `$CAPTIONER_SHARED_DATA`, else
/// `../shared/data` beside the checkout. Panics, saying where it looked, when it is not there.
pub fn shared_data() -> PathBuf {
    let dir = std::env::var_os("CAPTIONER_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
        });
    assert!(
        dir.join("flickr8k/Flickr8k.token.txt").is_file()
            && dir.join("models/efficientnet-lite0").is_dir(),
        "shared data not found at {} (set CAPTIONER_SHARED_DATA)",
        dir.display()
    );
    dir
}

/// The default model bundle committed in `models/default`.
pub fn default_model() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/default"))
}

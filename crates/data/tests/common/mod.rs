//! Where the shared real data is: `CAPTIONER_SHARED_DATA`, or `../shared/data` beside the repo.

use std::path::PathBuf;

pub fn shared_data() -> PathBuf {
    let dir = std::env::var_os("CAPTIONER_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
        });
    assert!(
        dir.join("flickr8k").is_dir(),
        "shared data not found at {} (set CAPTIONER_SHARED_DATA to the folder holding flickr8k/ and coco/)",
        dir.display()
    );
    dir
}

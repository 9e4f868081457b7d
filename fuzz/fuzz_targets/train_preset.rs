#![no_main]
use std::path::Path;

use captioner_train::preset::Preset;
use libfuzzer_sys::fuzz_target;

// A training preset: whatever parses and validates must serialise (as every run stores it) to
// TOML that parses and validates again.
fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(preset) = Preset::from_toml(text, Path::new("fuzz.toml")) {
        let written = preset.to_toml();
        if let Err(e) = Preset::from_toml(&written, Path::new("written.toml")) {
            panic!("{text:?} -> {written:?}: {e}");
        }
    }
});

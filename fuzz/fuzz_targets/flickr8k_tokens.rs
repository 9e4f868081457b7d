#![no_main]
use captioner_data::{flickr8k, Split};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = flickr8k::parse_tokens_bytes(data, "fuzz");
    if let Ok(text) = std::str::from_utf8(data) {
        // The same bytes as token file and as split file exercise the split bookkeeping too.
        let _ = flickr8k::from_strs(text, "fuzz", &[(Split::Train, "split", text)], None);
    }
});

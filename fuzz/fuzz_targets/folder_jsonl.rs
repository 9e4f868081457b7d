#![no_main]
use captioner_data::folder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(rows) = folder::parse_jsonl_bytes(data, "fuzz") {
        let _ = folder::dataset_from_jsonl(&rows, "fuzz", None);
    }
});

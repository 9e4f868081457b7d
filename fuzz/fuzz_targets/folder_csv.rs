#![no_main]
use captioner_data::captions_csv;
use libfuzzer_sys::fuzz_target;

// A user's `captions.csv`: header included in the fuzzed bytes, optional split column.
fuzz_target!(|data: &[u8]| {
    let _ = captions_csv::from_bytes(data, "fuzz", None);
});

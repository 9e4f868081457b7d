#![no_main]
use captioner_data::captions_csv;
use libfuzzer_sys::fuzz_target;

// The Kaggle `captions.txt`: always `image,caption`, so the header is given and the body fuzzed.
fuzz_target!(|data: &[u8]| {
    let mut bytes = b"image,caption\n".to_vec();
    bytes.extend_from_slice(data);
    let _ = captions_csv::from_bytes(&bytes, "fuzz", None);
});

#![no_main]
use captioner_data::karpathy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = karpathy::from_bytes(data, "fuzz", None);
});

#![no_main]
use captioner_data::DatasetSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = text.parse::<DatasetSpec>() {
        // Display must give back a spec that parses to the same thing.
        let shown = spec.to_string();
        let again: DatasetSpec = shown.parse().expect("Display output parses");
        assert_eq!(again, spec, "{text:?} -> {shown:?}");
    }
});

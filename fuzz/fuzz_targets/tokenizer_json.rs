#![no_main]
use captioner_data::Vocab;
use libfuzzer_sys::fuzz_target;

// A model bundle's `tokenizer.json`: whatever parses must be written back to the same words.
fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(vocab) = Vocab::from_tokenizer_json(text, "fuzz.json") {
        let again = Vocab::from_tokenizer_json(&vocab.to_tokenizer_json(), "again.json")
            .expect("written tokenizer.json parses");
        assert_eq!(again.words(), vocab.words());
    }
});

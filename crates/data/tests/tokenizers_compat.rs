//! Our `tokenizer.json` must load in Hugging Face `tokenizers` and encode to the same ids.

mod common;

use captioner_data::{flickr8k, Normalizer, Split, Vocab, VocabConfig};

#[test]
fn hugging_face_tokenizers_reads_our_file_and_agrees() {
    let (ds, _) = flickr8k::load_dir(&common::shared_data().join("flickr8k")).unwrap();
    let norm = Normalizer::default();
    let train: Vec<String> = ds
        .split(Split::Train)
        .flat_map(|i| i.captions.iter().map(|c| norm.normalize(c)))
        .collect();
    let vocab = Vocab::build(
        train.iter().map(String::as_str),
        &VocabConfig {
            max_words: None,
            min_count: 5,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    vocab.save(&path).unwrap();

    let hf = tokenizers::Tokenizer::from_file(&path).unwrap();
    assert_eq!(hf.get_vocab_size(true), vocab.len());
    for (id, special) in ["<pad>", "<start>", "<end>", "<unk>"].iter().enumerate() {
        assert_eq!(hf.token_to_id(special), Some(id as u32));
    }
    let test: Vec<String> = ds
        .split(Split::Test)
        .flat_map(|i| i.captions.iter().map(|c| norm.normalize(c)))
        .take(500)
        .chain([
            "<start> a zzzunknownzzz dog <end>".to_owned(),
            String::new(),
        ])
        .collect();
    for text in &test {
        let enc = hf.encode(text.as_str(), false).unwrap();
        assert_eq!(enc.get_ids(), vocab.encode(text).as_slice(), "{text:?}");
    }
}

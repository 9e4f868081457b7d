//! Properties of every parser (never panics, round trips), the normaliser, the vocabulary and
//! the batcher.

use captioner_data::{
    captions_csv, coco, flickr8k, folder, karpathy, BatchConfig, Batcher, DatasetSpec, ImageId,
    Normalizer, SamplingMode, Split, Vocab, VocabConfig,
};
use proptest::prelude::*;

fn caption() -> impl Strategy<Value = String> {
    // Printable text with the characters that trip parsers: quotes, commas, tabs, `#`, unicode.
    "[a-zA-Z0-9 ,.\"'#\t!é☕-]{0,40}"
}

fn image_name() -> impl Strategy<Value = String> {
    "[a-z0-9_]{1,12}\\.jpg"
}

proptest! {
    #[test]
    fn parsers_never_panic_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = flickr8k::parse_tokens_bytes(&bytes, "f");
        let _ = captions_csv::from_bytes(&bytes, "f", None);
        let _ = coco::from_bytes(&bytes, "f", None);
        let _ = karpathy::from_bytes(&bytes, "f", None);
        let _ = folder::parse_jsonl_bytes(&bytes, "f");
        let _ = Vocab::from_tokenizer_json(&String::from_utf8_lossy(&bytes), "f");
    }

    #[test]
    fn parsers_never_panic_on_text(text in "[\\PC\n\t\"{}\\[\\]:,#@0-9]{0,200}") {
        let _ = flickr8k::parse_tokens(&text, "f");
        let _ = flickr8k::parse_split_list(&text, "f");
        let _ = flickr8k::from_strs(&text, "f", &[(Split::Train, "s", &text)], None);
        let _ = captions_csv::from_bytes(text.as_bytes(), "f", None);
        let _ = coco::from_str(&text, "f", None);
        let _ = karpathy::from_str(&text, "f", None);
        let _ = folder::parse_jsonl(&text, "f");
        let _ = text.parse::<DatasetSpec>();
    }

    #[test]
    fn json_shaped_input_never_panics(
        ids in proptest::collection::vec(-3i64..5, 0..6),
        caps in proptest::collection::vec(caption(), 0..6),
    ) {
        let images: Vec<String> = ids.iter().map(|i| format!("{{\"id\": {i}, \"file_name\": \"{i}.jpg\"}}")).collect();
        let anns: Vec<String> = ids.iter().zip(&caps).map(|(i, c)| serde_json::json!({"image_id": i, "caption": c}).to_string()).collect();
        let text = format!("{{\"images\": [{}], \"annotations\": [{}]}}", images.join(","), anns.join(","));
        let _ = coco::from_str(&text, "f", None);
    }

    #[test]
    fn token_file_round_trip(rows in proptest::collection::vec((image_name(), 0u32..5, caption()), 0..20)) {
        let text: String = rows.iter().map(|(i, n, c)| format!("{i}#{n}\t{c}\n")).collect();
        let lines = flickr8k::parse_tokens(&text, "t").unwrap();
        prop_assert_eq!(lines.len(), rows.len());
        for (line, (i, n, c)) in lines.iter().zip(&rows) {
            prop_assert_eq!((line.image, line.number, line.caption), (i.as_str(), *n, c.as_str()));
        }
    }

    #[test]
    fn csv_round_trip(rows in proptest::collection::vec((image_name(), "[\\PC\n]{0,30}", proptest::option::of(0usize..4)), 0..20)) {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(["image", "caption", "split"]).unwrap();
        for (i, c, s) in &rows {
            w.write_record([i.as_str(), c.as_str(), s.map_or("", |s| Split::ALL[s].as_str())]).unwrap();
        }
        let bytes = w.into_inner().unwrap();
        let parsed = captions_csv::parse_csv(&bytes, "c").unwrap();
        prop_assert_eq!(parsed.len(), rows.len());
        for (p, (i, c, s)) in parsed.iter().zip(&rows) {
            prop_assert_eq!(&p.image, i);
            prop_assert_eq!(&p.caption, c);
            prop_assert_eq!(p.split, s.map(|s| Split::ALL[s]));
        }
    }

    #[test]
    fn jsonl_round_trip(rows in proptest::collection::vec((prop_oneof![any::<u64>().prop_map(ImageId::Int), image_name().prop_map(ImageId::Name)], "\\PC{0,30}"), 0..20)) {
        let text: String = rows.iter().map(|(i, c)| format!("{}\n", serde_json::json!({"image": i, "caption": c}))).collect();
        let parsed = folder::parse_jsonl(&text, "j").unwrap();
        prop_assert_eq!(parsed.len(), rows.len());
        for (p, (i, c)) in parsed.iter().zip(&rows) {
            prop_assert_eq!(&p.image, i);
            prop_assert_eq!(&p.caption, c);
        }
    }

    #[test]
    fn image_id_json_round_trip(id in prop_oneof![any::<u64>().prop_map(ImageId::Int), "\\PC{0,20}".prop_map(ImageId::Name)]) {
        let json = serde_json::to_string(&id).unwrap();
        prop_assert_eq!(json.starts_with('"'), id.as_name().is_some());
        prop_assert_eq!(serde_json::from_str::<ImageId>(&json).unwrap(), id);
    }

    #[test]
    fn spec_round_trip(kind in 0usize..5, path in "[a-zA-Z0-9_./@ -]{1,20}", images in proptest::option::of("[a-zA-Z0-9_./ -]{1,20}")) {
        let kinds = ["flickr8k", "flickr8k-csv", "coco", "karpathy", "folder"];
        let takes_images = matches!(kind, 1..=3);
        let text = match (&images, takes_images) {
            (Some(dir), true) => format!("{}:{path}@{dir}", kinds[kind]),
            _ if takes_images && path.contains('@') => return Ok(()),
            _ => format!("{}:{path}", kinds[kind]),
        };
        let spec: DatasetSpec = text.parse().unwrap();
        prop_assert_eq!(spec.to_string(), text.clone());
        prop_assert_eq!(spec.to_string().parse::<DatasetSpec>().unwrap(), spec);
    }

    #[test]
    fn normaliser_is_idempotent_and_clean(text in "\\PC{0,60}") {
        let n = Normalizer::default();
        let once = n.normalize(&text);
        prop_assert_eq!(n.normalize(&once), once.clone());
        for word in once.split(' ') {
            prop_assert!(!word.is_empty() || once.is_empty());
            prop_assert!(word.chars().all(|c| c.is_alphanumeric() && !c.is_numeric()), "{:?}", word);
            prop_assert!(word.chars().count() != 1 || word == "a");
        }
        let _ = Normalizer::identity().normalize(&text);
        let mut markers = n.clone();
        markers.add_markers = true;
        let marked = markers.normalize(&text);
        prop_assert!(marked.starts_with("<start>") && marked.ends_with("<end>"));
    }

    #[test]
    fn vocab_is_order_independent_and_round_trips(
        caps in proptest::collection::vec("[a-e]{1,3}( [a-e]{1,3}){0,5}", 1..20),
        max_words in proptest::option::of(0usize..10),
        min_count in 1u64..3,
    ) {
        let cfg = VocabConfig { max_words, min_count };
        let v = Vocab::build(caps.iter().map(String::as_str), &cfg);
        let mut rev = caps.clone();
        rev.reverse();
        prop_assert_eq!(&Vocab::build(rev.iter().map(String::as_str), &cfg), &v);
        prop_assert_eq!(&Vocab::from_tokenizer_json(&v.to_tokenizer_json(), "t").unwrap(), &v);
        prop_assert!(max_words.is_none_or(|m| v.len() <= m + 4));
        let cov = v.coverage(caps.iter().map(String::as_str));
        for c in &caps {
            let ids = v.encode(c);
            let known = ids.iter().all(|&i| i != Vocab::UNK_ID);
            if known {
                prop_assert_eq!(&v.decode(&ids), c);
            }
        }
        prop_assert!(cov.known <= cov.tokens);
        if max_words.is_none() && min_count == 1 {
            prop_assert_eq!(cov.known, cov.tokens);
        }
    }

    #[test]
    fn batcher_epochs_are_permutations_and_resume_exactly(
        sizes in proptest::collection::vec(0usize..4, 1..30),
        batch_size in 1usize..8,
        seed in any::<u64>(),
        epoch in 0u64..1000,
        all_pairs in any::<bool>(),
        length_sort_window in 0usize..5,
        drop_last in any::<bool>(),
    ) {
        let caps: Vec<Vec<Vec<u32>>> = sizes.iter().enumerate()
            .map(|(i, &n)| (0..n).map(|j| vec![4 + i as u32; j + 1]).collect()).collect();
        let mode = if all_pairs { SamplingMode::AllPairs } else { SamplingMode::OneCaptionPerImage };
        let cfg = BatchConfig { batch_size, mode, seed, length_sort_window, drop_last, ..Default::default() };
        let Ok(b) = Batcher::new(caps.clone(), cfg) else {
            prop_assert!(sizes.iter().all(|&n| n == 0));
            return Ok(());
        };
        let batches: Vec<_> = b.epoch(epoch).collect();
        prop_assert_eq!(batches.len(), b.batches_per_epoch());
        let rows: usize = batches.iter().map(|x| x.batch).sum();
        let n = b.examples_per_epoch();
        prop_assert_eq!(rows, if drop_last { n - n % batch_size } else { n });
        prop_assert!(batches.iter().all(|x| x.batch == batch_size || (!drop_last && x.index + 1 == batches.len())));
        if all_pairs && !drop_last {
            let mut seen: Vec<(usize, usize)> = batches.iter()
                .flat_map(|x| x.images.iter().copied().zip(x.captions.iter().copied())).collect();
            seen.sort();
            let every: Vec<(usize, usize)> = sizes.iter().enumerate()
                .flat_map(|(i, &n)| (0..n).map(move |j| (i, j))).collect();
            prop_assert_eq!(seen, every);
        }
        for (k, batch) in batches.iter().enumerate() {
            let again = b.batch(epoch, k);
            prop_assert_eq!(again.as_ref(), Some(batch));
            for r in 0..batch.batch {
                let n = caps[batch.images[r]][batch.captions[r]].len();
                let t = batch.time;
                prop_assert_eq!(batch.targets[r * t + n], Vocab::END_ID);
            }
        }
    }
}

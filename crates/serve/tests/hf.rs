//! `captioner serve` with a Hugging Face folder: the tiny random-weight BLIP fixture of
//! `crates/vlm` (proved against `transformers` there) behind the same HTTP API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use captioner_serve::api::{CaptionResponse, ModelList};
use captioner_serve::{ServeConfig, Service};
use captioner_vlm::{HfCaptioner, HfGenerateOptions};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../vlm/tests/fixtures")
        .join(rel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blip_folder_is_served_with_the_same_captions_as_the_library() {
    let model = fixture("blip-tiny");
    let service = Service::new(
        HfCaptioner::load(&model).expect("load"),
        ServeConfig::default(),
    )
    .expect("service");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service.serve(listener, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");

    let models: ModelList = client
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    assert_eq!(models.models[0].decoder, "blip");
    assert!(!models.models[0].attention);

    let library = HfCaptioner::load(&model).expect("load");
    for name in ["img0.png", "img1.png"] {
        let path = fixture(&format!("images/{name}"));
        let bytes = std::fs::read(&path).expect("fixture image");
        let resp = client
            .post(format!("{base}/v1/captions?beam=3&top_k=2&max_len=12"))
            .header("content-type", "image/png")
            .body(bytes)
            .send()
            .await
            .expect("caption");
        assert_eq!(resp.status(), 200);
        let got: CaptionResponse = resp.json().await.expect("json");
        let img = image::open(&path).expect("decode").to_rgb8();
        let opts = HfGenerateOptions {
            num_beams: 3,
            num_return_sequences: 2,
            max_new_tokens: 12,
            min_new_tokens: 1,
            length_penalty: 1.0,
            ..HfGenerateOptions::default()
        };
        let want = library.caption(&[img], &opts).expect("library");
        assert_eq!(got.caption, want[0][0].text, "{name}");
        let texts: Vec<&str> = got.hypotheses.iter().map(|h| h.caption.as_str()).collect();
        let want_texts: Vec<&str> = want[0].iter().map(|h| h.text.as_str()).collect();
        assert_eq!(texts, want_texts, "{name}");
        assert!(got.attention.is_none());
    }

    let _ = stop.send(());
    task.await.expect("join").expect("server stops cleanly");
}

//! `captioner serve` over real HTTP: a server on 127.0.0.1 (random port) with a small
//! random-weight `sat` decoder over the real EfficientNet-Lite0 encoder, driven with reqwest.
//!
//! The encoder weights and the images come from the shared data folder:
//! `$CAPTIONER_SHARED_DATA`, else `../shared/data` beside the checkout.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use captioner_data::Vocab;
use captioner_decode::bundle::{self, BundleConfig, EncoderInfo, WeightDtype, BUNDLE_FORMAT};
use captioner_decode::models::sat::SatConfig;
use captioner_decode::{DecoderConfig, LengthPenalty, ModelDims};
use captioner_encode::encoder::Backend;
use captioner_generate::pipeline::Captioner;
use captioner_generate::{GenerateConfig, Strategy};
use captioner_serve::api::{CaptionResponse, Health, ModelList};
use captioner_serve::metrics::Metrics;
use captioner_serve::{ErrorBody, ServeConfig, Service};
use image::{DynamicImage, ImageFormat, RgbImage};
use reqwest::multipart::{Form, Part};
use reqwest::StatusCode;
use tokio::sync::oneshot;

fn shared_data() -> PathBuf {
    std::env::var_os("CAPTIONER_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
        })
}

fn encoder_weights() -> PathBuf {
    let dir = shared_data().join("models/efficientnet-lite0");
    [
        "efficientnet-lite0.safetensors",
        "efficientnet-lite0-57934424.pth",
    ]
    .iter()
    .map(|f| dir.join(f))
    .find(|p| p.is_file())
    .unwrap_or_else(|| panic!("no EfficientNet-Lite0 weights in {}", dir.display()))
}

fn flickr_image(name: &str) -> Vec<u8> {
    let path = shared_data().join("flickr8k/images").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const IMAGES: [&str; 3] = [
    "1000268201_693b08cb0e.jpg",
    "1001773457_577c3a7d70.jpg",
    "1002674143_1b742ab4b8.jpg",
];

/// A small random-weight `sat` bundle, made once per test run.
fn bundle_dir() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("tiny-sat");
        let vocab = Vocab::from_words(
            "a dog cat man woman runs sits on the grass in water red blue ball".split(' '),
        );
        let decoder = DecoderConfig::Sat(SatConfig {
            embed: 16,
            hidden: 16,
            attention: 16,
            dropout: 0.0,
            alpha_c: 1.0,
            deep_output: false,
        });
        let dims = ModelDims {
            vocab: vocab.len(),
            feature_dim: 1280,
            cells: 49,
        };
        let model = decoder.build(dims, 7).expect("build decoder");
        let config = BundleConfig {
            format: BUNDLE_FORMAT,
            decoder,
            dims,
            encoder: EncoderInfo {
                name: "efficientnet-lite0".into(),
                resize: "squash".into(),
                normalization: "inception".into(),
            },
            max_words: 20,
            length_penalty: None,
            training: serde_json::Value::Null,
        };
        bundle::save(&dir, &config, model.as_ref(), &vocab, WeightDtype::F32).expect("save");
        (tmp, dir)
    })
    .1
}

fn captioner() -> Captioner {
    Captioner::load(bundle_dir(), Some(&encoder_weights()), Backend::Fast).expect("load model")
}

/// A server on a random loopback port; stopped (gracefully) when dropped or by `stop`.
struct Server {
    base: String,
    metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), captioner_serve::ServeError>>>,
}

impl Server {
    async fn start(config: ServeConfig) -> Self {
        Self::start_with(captioner(), config).await
    }

    async fn start_with(captioner: Captioner, config: ServeConfig) -> Self {
        let service = Service::new(captioner, config).expect("service");
        let metrics = service.metrics();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(service.serve(listener, async move {
            let _ = stopped.await;
        }));
        Self {
            base,
            metrics,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn stop(mut self) -> Result<(), captioner_serve::ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the server stops within a minute")
            .expect("server task")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// `GET /v1/models`.
async fn model_list(server: &Server, http: &reqwest::Client) -> ModelList {
    http.get(server.url("/v1/models"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

fn image_form(bytes: Vec<u8>, name: &str) -> Form {
    Form::new().part(
        "image",
        Part::bytes(bytes)
            .file_name(name.to_string())
            .mime_str("image/jpeg")
            .expect("mime"),
    )
}

async fn error_of(resp: reqwest::Response) -> (StatusCode, ErrorBody) {
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("application/json"),
        "{status}: error content type {content_type}"
    );
    let body: ErrorBody = resp.json().await.expect("JSON error body");
    assert_eq!(body.error.status, status.as_u16());
    assert!(!body.error.message.is_empty());
    (status, body)
}

fn png_bytes(img: &RgbImage) -> Vec<u8> {
    image_bytes(img, ImageFormat::Png)
}

fn image_bytes(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img.clone())
        .write_to(&mut out, format)
        .expect("encode test image");
    out.into_inner()
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A valid PNG whose header claims 30000 x 30000 pixels (900 Mpx) over 8 x 8 pixels of data.
fn pixel_bomb() -> Vec<u8> {
    let mut png = png_bytes(&RgbImage::from_pixel(8, 8, image::Rgb([200, 10, 10])));
    png[16..20].copy_from_slice(&30_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&30_000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

fn check_caption(c: &CaptionResponse, top_k: usize) {
    assert!(!c.caption.is_empty());
    assert_eq!(c.caption, c.words.join(" "));
    assert_eq!(c.hypotheses.len(), top_k);
    assert_eq!(c.hypotheses[0].caption, c.caption);
    assert!(c
        .hypotheses
        .iter()
        .all(|h| h.log_prob.is_finite() && h.log_prob <= 0.0));
    assert_eq!(c.model, "tiny-sat");
    assert!(c.batch_size >= 1);
    let t = &c.timings_ms;
    assert!(t.decode >= 0.0 && t.queue >= 0.0 && t.caption > 0.0);
    assert!(t.total + 0.01 >= t.decode + t.caption);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captions_multipart_and_raw_uploads_with_options() {
    let server = Server::start(ServeConfig::default()).await;
    let http = client();

    // Multipart, options in the query, attention maps asked.
    let resp = http
        .post(server.url("/v1/captions?beam=3&top_k=3&max_len=8&attention=true"))
        .multipart(image_form(flickr_image(IMAGES[0]), IMAGES[0]))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    let c: CaptionResponse = resp.json().await.expect("json");
    check_caption(&c, 3);
    assert!(c.words.len() <= 8);
    let att = c.attention.as_ref().expect("attention maps");
    assert_eq!((att.h, att.w), (7, 7));
    assert_eq!(att.resize, "squash");
    assert_eq!(att.maps.len(), c.words.len());
    for map in &att.maps {
        assert_eq!(map.len(), 49);
        let sum: f32 = map.iter().sum();
        assert!((sum - 1.0).abs() < 1e-3, "attention sums to {sum}");
    }
    // Scores come best first.
    assert!(c
        .hypotheses
        .windows(2)
        .all(|w| w[0].log_prob >= w[1].log_prob));

    // Multipart with options as form fields; greedy search.
    let form = image_form(flickr_image(IMAGES[1]), IMAGES[1])
        .text("beam", "1")
        .text("max_len", "5");
    let resp = http
        .post(server.url("/v1/captions"))
        .multipart(form)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    let c: CaptionResponse = resp.json().await.expect("json");
    check_caption(&c, 1);
    assert!(c.words.len() <= 5);
    assert!(c.attention.is_none(), "attention only when asked");

    // The raw file as the body; the same image gives the same caption (deterministic model).
    let resp = http
        .post(server.url("/v1/captions?beam=1&max_len=5"))
        .header("content-type", "image/jpeg")
        .body(flickr_image(IMAGES[1]))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    let raw: CaptionResponse = resp.json().await.expect("json");
    check_caption(&raw, 1);
    assert_eq!(raw.caption, c.caption);

    // A PNG works too.
    let resp = http
        .post(server.url("/v1/captions"))
        .body(png_bytes(&RgbImage::from_fn(96, 64, |x, y| {
            image::Rgb([x as u8, y as u8, 128])
        })))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ensemble_is_served_under_its_members_ids_with_attention() {
    let dirs = [bundle_dir().to_path_buf(), bundle_dir().to_path_buf()];
    let ensemble = Captioner::load_ensemble(&dirs, Some(&encoder_weights()), Backend::Fast)
        .expect("load ensemble");
    let server = Server::start_with(ensemble, ServeConfig::default()).await;
    let http = client();
    let models = model_list(&server, &http).await;
    let m = &models.models[0];
    assert_eq!(m.id, "tiny-sat+tiny-sat");
    assert_eq!(m.members, ["tiny-sat", "tiny-sat"]);
    assert_eq!(m.decoder, "ensemble");
    assert!(m.attention);

    // An ensemble of a model with itself captions as the model does.
    let ask = "/v1/captions?beam=3&top_k=2&attention=true";
    let resp = http
        .post(server.url(ask))
        .multipart(image_form(flickr_image(IMAGES[0]), IMAGES[0]))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    let c: CaptionResponse = resp.json().await.expect("json");
    assert_eq!(c.model, "tiny-sat+tiny-sat");
    assert_eq!(c.hypotheses.len(), 2);
    assert_eq!(c.caption, c.words.join(" "));
    let att = c.attention.as_ref().expect("attention maps");
    assert_eq!(att.maps.len(), c.words.len());
    server.stop().await.expect("clean stop");

    let single = Server::start(ServeConfig::default()).await;
    let resp = http
        .post(single.url(ask))
        .multipart(image_form(flickr_image(IMAGES[0]), IMAGES[0]))
        .send()
        .await
        .expect("send");
    let one: CaptionResponse = resp.json().await.expect("json");
    assert_eq!(c.caption, one.caption);
    single.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_healthz_page_openapi_and_404() {
    let server = Server::start(ServeConfig::default()).await;
    let http = client();

    let models = model_list(&server, &http).await;
    assert_eq!(models.models.len(), 1);
    let m = &models.models[0];
    assert_eq!(m.id, "tiny-sat");
    assert!(m.members.is_empty());
    assert_eq!(m.decoder, "sat");
    assert_eq!(m.encoder, "efficientnet-lite0");
    assert!(m.attention);
    assert_eq!(m.grid, [7, 7]);
    assert_eq!(m.default_beam, 3);
    assert_eq!(m.length_penalty, "none");
    assert_eq!(m.vocab_size, 4 + 15);

    let resp = http.get(server.url("/healthz")).send().await.expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    let health: Health = resp.json().await.expect("json");
    assert_eq!(health.status, "ok");
    assert_eq!(health.queue_depth, 0);
    assert_eq!(health.queue_capacity, 64);

    let resp = http.get(server.url("/")).send().await.expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/html"));
    let page = resp.text().await.expect("text");
    for needle in [
        "<canvas",
        "/v1/captions",
        "attention=true",
        "type=\"file\"",
        "aria-label",
        "viewport",
    ] {
        assert!(page.contains(needle), "the page lacks {needle}");
    }
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no CDN"
    );

    let resp = http
        .get(server.url("/openapi.json"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: serde_json::Value = resp.json().await.expect("json");
    assert!(doc["openapi"].as_str().expect("version").starts_with("3."));
    for path in ["/v1/captions", "/v1/models", "/healthz", "/metrics", "/"] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }
    let post = &doc["paths"]["/v1/captions"]["post"];
    for status in ["200", "413", "415", "422", "503", "504"] {
        assert!(
            post["responses"][status].is_object(),
            "no {status} response"
        );
    }
    assert!(post["requestBody"]["content"]["multipart/form-data"].is_object());
    assert!(doc["components"]["schemas"]["CaptionResponse"].is_object());

    let resp = http
        .get(server.url("/no/such/thing"))
        .send()
        .await
        .expect("send");
    let (status, body) = error_of(resp).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body.error.code, "not_found");

    let resp = http
        .get(server.url("/v1/captions"))
        .send()
        .await
        .expect("send");
    let (status, body) = error_of(resp).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body.error.code, "method_not_allowed");
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_json_errors_with_the_right_status() {
    let server = Server::start(ServeConfig {
        body_limit: 256 * 1024,
        ..ServeConfig::default()
    })
    .await;
    let http = client();
    let post_raw = |body: Vec<u8>, query: &str| {
        http.post(server.url(&format!("/v1/captions{query}")))
            .body(body)
            .send()
    };

    // Over the body limit: raw and multipart.
    let (status, body) = error_of(post_raw(vec![0u8; 400 * 1024], "").await.expect("send")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body.error.code, "payload_too_large");
    let resp = http
        .post(server.url("/v1/captions"))
        .multipart(image_form(vec![0xFF; 300 * 1024], "big.jpg"))
        .send()
        .await
        .expect("send");
    let (status, _) = error_of(resp).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // A pixel bomb: refused from its header, before decoding.
    let started = Instant::now();
    let (status, body) = error_of(post_raw(pixel_bomb(), "").await.expect("send")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body.error.code, "image_too_large");
    assert!(
        body.error.message.contains("30000x30000"),
        "{}",
        body.error.message
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // Not an image.
    let (status, body) = error_of(
        post_raw(b"hello, this is not an image".to_vec(), "")
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body.error.code, "unsupported_media_type");

    // Corrupt images: a PNG cut in the middle of its pixel data, and a JPEG cut short (which the
    // decoder alone would paint grey and caption).
    let pattern = RgbImage::from_fn(64, 64, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 4) as u8, (x ^ y) as u8])
    });
    for (format, says) in [
        (ImageFormat::Png, "cannot decode image"),
        (ImageFormat::Jpeg, "part of the picture is missing"),
    ] {
        let bytes = image_bytes(&pattern, format);
        let (status, body) = error_of(
            post_raw(bytes[..bytes.len() / 2].to_vec(), "")
                .await
                .expect("send"),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{format:?}");
        assert_eq!(body.error.code, "invalid_image");
        assert!(body.error.message.contains(says), "{}", body.error.message);
    }

    // An empty body.
    let (status, body) = error_of(post_raw(Vec::new(), "").await.expect("send")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body.error.code, "invalid_image");

    // A multipart body without an `image` field.
    let resp = http
        .post(server.url("/v1/captions"))
        .multipart(Form::new().text("beam", "2"))
        .send()
        .await
        .expect("send");
    let (status, body) = error_of(resp).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body.error.code, "missing_image");

    // Options: unparsable -> 400, out of range -> 422, unknown form field -> 400.
    let jpeg = flickr_image(IMAGES[2]);
    for (query, want) in [
        ("?beam=wide", StatusCode::BAD_REQUEST),
        ("?attention=maybe", StatusCode::BAD_REQUEST),
        ("?beam=0", StatusCode::UNPROCESSABLE_ENTITY),
        ("?beam=99", StatusCode::UNPROCESSABLE_ENTITY),
        ("?max_len=0", StatusCode::UNPROCESSABLE_ENTITY),
        ("?beam=2&top_k=3", StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let (status, _) = error_of(post_raw(jpeg.clone(), query).await.expect("send")).await;
        assert_eq!(status, want, "{query}");
    }
    let resp = http
        .post(server.url("/v1/captions"))
        .multipart(image_form(jpeg.clone(), "x.jpg").text("bean", "3"))
        .send()
        .await
        .expect("send");
    let (status, _) = error_of(resp).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The server is still fine after all that.
    let resp = post_raw(jpeg, "?beam=2&top_k=2").await.expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    let c: CaptionResponse = resp.json().await.expect("json");
    check_caption(&c, 2);
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_time_out_with_504() {
    let server = Server::start(ServeConfig {
        timeout: Duration::from_millis(1),
        ..ServeConfig::default()
    })
    .await;
    let resp = client()
        .post(server.url("/v1/captions"))
        .body(flickr_image(IMAGES[0]))
        .send()
        .await
        .expect("send");
    let (status, body) = error_of(resp).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(body.error.code, "timeout");
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after() {
    let server = Server::start(ServeConfig {
        max_batch: 1,
        max_wait: Duration::ZERO,
        queue: 1,
        ..ServeConfig::default()
    })
    .await;
    let http = client();
    let jpeg = flickr_image(IMAGES[0]);
    let requests = (0..16).map(|_| {
        http.post(server.url("/v1/captions?beam=3"))
            .body(jpeg.clone())
            .send()
    });
    let responses = futures_join_all(requests).await;
    let (mut ok, mut full) = (0, 0);
    for resp in responses {
        let resp = resp.expect("send");
        match resp.status() {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                let retry = resp
                    .headers()
                    .get("retry-after")
                    .expect("Retry-After")
                    .clone();
                assert!(
                    retry
                        .to_str()
                        .expect("ascii")
                        .parse::<u32>()
                        .expect("seconds")
                        >= 1
                );
                let (_, body) = error_of(resp).await;
                assert_eq!(body.error.code, "queue_full");
                full += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(ok >= 1, "no request got through");
    assert!(
        full >= 1,
        "16 concurrent requests into a queue of 1 were all accepted"
    );
    server.stop().await.expect("clean stop");
}

/// Concurrent requests share one encoder/decoder batch, and /metrics shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_batched_and_counted() {
    let server = Server::start(ServeConfig {
        max_batch: 8,
        max_wait: Duration::from_millis(500),
        ..ServeConfig::default()
    })
    .await;
    let http = client();
    let requests = IMAGES.iter().chain(IMAGES.iter().take(1)).map(|name| {
        http.post(server.url("/v1/captions?beam=2"))
            .body(flickr_image(name))
            .send()
    });
    let mut sizes = Vec::new();
    for resp in futures_join_all(requests).await {
        let resp = resp.expect("send");
        assert_eq!(resp.status(), StatusCode::OK);
        let c: CaptionResponse = resp.json().await.expect("json");
        sizes.push(c.batch_size);
    }
    assert!(
        sizes.iter().any(|&s| s >= 2),
        "4 requests within 500 ms were never batched: {sizes:?}"
    );

    // A 404 and a 413 to count as well.
    http.get(server.url("/nope")).send().await.expect("send");
    let metrics = http.get(server.url("/metrics")).send().await.expect("send");
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(metrics.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/plain"));
    let text = metrics.text().await.expect("text");
    for needle in [
        "captioner_http_requests_total{route=\"/v1/captions\",method=\"POST\",status=\"200\"} 4",
        "captioner_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1",
        "captioner_http_request_duration_seconds_bucket{route=\"/v1/captions\",le=\"+Inf\"} 4",
        "captioner_http_request_duration_seconds_count{route=\"/v1/captions\"} 4",
        "captioner_queue_depth 0",
        "captioner_queue_capacity 64",
        "captioner_batch_size_bucket{le=\"+Inf\"}",
        "captioner_captions_total 4",
        "# TYPE captioner_batch_size histogram",
    ] {
        assert!(text.contains(needle), "/metrics lacks `{needle}`:\n{text}");
    }
    assert_eq!(server.metrics.queue_depth(), 0);
    server.stop().await.expect("clean stop");
}

/// SIGTERM's path: the shutdown future fires while a request is in flight; it still gets its
/// caption, then the server stops and refuses new connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_requests_in_flight() {
    let server = Server::start(ServeConfig {
        // The worker waits this long for company, so the request is surely in flight.
        max_wait: Duration::from_millis(800),
        ..ServeConfig::default()
    })
    .await;
    let http = client();
    let url = server.url("/v1/captions");
    let in_flight = tokio::spawn(http.post(url.clone()).body(flickr_image(IMAGES[0])).send());
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.metrics.in_flight() < 1 || server.metrics.queue_depth() < 1 {
        assert!(Instant::now() < deadline, "the request never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let base = server.base.clone();
    server.stop().await.expect("clean stop");
    let resp = in_flight
        .await
        .expect("join")
        .expect("the in-flight request got an answer");
    assert_eq!(resp.status(), StatusCode::OK);
    let c: CaptionResponse = resp.json().await.expect("json");
    assert!(!c.caption.is_empty());
    assert!(
        client()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_err(),
        "the server still answers after shutdown"
    );
}

/// A panic in a handler becomes a JSON 500, and the server goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_never_reaches_the_client() {
    fn boom() -> &'static str {
        panic!("deliberate test panic")
    }
    let metrics = Arc::new(Metrics::default());
    let app = captioner_serve::harden(
        Router::new()
            .route("/boom", get(|| async { boom() }))
            .route("/fine", get(|| async { "fine" })),
        metrics.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    let http = client();
    let (status, body) =
        error_of(http.get(format!("{base}/boom")).send().await.expect("send")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body.error.code, "internal");
    assert!(
        !body.error.message.contains("deliberate"),
        "panic details leak to the client"
    );
    let resp = http.get(format!("{base}/fine")).send().await.expect("send");
    assert_eq!(resp.text().await.expect("text"), "fine");
    assert!(metrics.render().contains(
        "captioner_http_requests_total{route=\"/boom\",method=\"GET\",status=\"500\"} 1"
    ));
    task.abort();
}

/// Joins futures concurrently without pulling in the `futures` crate.
async fn futures_join_all<F, T>(futures: impl IntoIterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("join"));
    }
    out
}

/// A bundle that records a length penalty (`captioner export --length-penalty`) is served with
/// it: `/v1/models` names it, and a request's hypotheses are the library's with that penalty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_s_recorded_length_penalty_is_the_request_default() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("tiny-sat-average");
    std::fs::create_dir(&dir).expect("mkdir");
    for name in [
        bundle::CONFIG_FILE,
        bundle::WEIGHTS_FILE,
        bundle::TOKENIZER_FILE,
    ] {
        std::fs::copy(bundle_dir().join(name), dir.join(name)).expect("copy");
    }
    let mut config = bundle::read_config(&dir).expect("config");
    config.length_penalty = Some(LengthPenalty::Average);
    std::fs::write(
        dir.join(bundle::CONFIG_FILE),
        serde_json::to_string(&config).expect("json"),
    )
    .expect("write");
    let load = || Captioner::load(&dir, Some(&encoder_weights()), Backend::Fast).expect("load");

    let library = load();
    let search = |length_penalty| GenerateConfig {
        strategy: Strategy::Beam {
            size: 3,
            length_penalty,
            top_k_hypotheses: 3,
        },
        max_words: 8,
        suppress_unk: true,
        ..GenerateConfig::default()
    };
    let hypotheses = |penalty| -> Vec<(String, f32)> {
        let image = library
            .decode_image(&flickr_image(IMAGES[0]), IMAGES[0])
            .expect("decode");
        library
            .caption_images(vec![image], &search(penalty))
            .expect("caption")
            .remove(0)
            .hypotheses
    };
    let average = hypotheses(LengthPenalty::Average);
    assert_ne!(
        average,
        hypotheses(LengthPenalty::None),
        "the test needs the two penalties to rank differently"
    );

    let server = Server::start_with(load(), ServeConfig::default()).await;
    let http = client();
    let models = model_list(&server, &http).await;
    assert_eq!(models.models[0].length_penalty, "average");
    let c: CaptionResponse = http
        .post(server.url("/v1/captions?beam=3&top_k=3&max_len=8"))
        .multipart(image_form(flickr_image(IMAGES[0]), IMAGES[0]))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let served: Vec<(String, f32)> = c
        .hypotheses
        .into_iter()
        .map(|h| (h.caption, h.log_prob))
        .collect();
    assert_eq!(served, average);
    server.stop().await.expect("clean stop");
}

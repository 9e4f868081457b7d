//! The HTTP endpoints, their JSON types and the OpenAPI document generated from them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use captioner_generate::{GenerateConfig, LengthPenalty, Strategy};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::batcher::{Batcher, Job, SubmitError};
use crate::error::{ApiError, ErrorBody};
use crate::metrics::Metrics;
use crate::model::Model;
use crate::ServeConfig;

/// Widest beam a request may ask for.
pub const MAX_BEAM: usize = 16;
/// Longest caption a request may ask for, in words.
pub const MAX_LEN: usize = 50;

/// What every handler shares.
pub struct AppState {
    /// The model (decoding runs on the blocking pool, captioning on the worker thread).
    pub captioner: Arc<Model>,
    /// The queue to the worker.
    pub batcher: Batcher,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub config: ServeConfig,
    /// What `/v1/models` says about the model.
    pub model: ModelInfo,
}

/// Options of `POST /v1/captions`, from the query string or from form fields of a multipart
/// body (a form field overrides the query).
#[derive(Debug, Clone, Default, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct CaptionOptions {
    /// Beam width, 1 ..= 16 (1 = greedy search); default: the server's `--beam`.
    pub beam: Option<usize>,
    /// Longest caption in words, 1 ..= 50 (default 20).
    pub max_len: Option<usize>,
    /// Hypotheses to return, best first, 1 ..= beam (default 1).
    pub top_k: Option<usize>,
    /// Return per-word attention maps over the encoder grid (attention models).
    pub attention: Option<bool>,
}

/// A multipart upload: the image and, optionally, the options as text fields.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The image file (JPEG, PNG, WebP, GIF or BMP).
    #[schema(content_media_type = "application/octet-stream")]
    image: Vec<u8>,
    /// See [`CaptionOptions::beam`].
    beam: Option<usize>,
    /// See [`CaptionOptions::max_len`].
    max_len: Option<usize>,
    /// See [`CaptionOptions::top_k`].
    top_k: Option<usize>,
    /// See [`CaptionOptions::attention`].
    attention: Option<bool>,
}

/// One returned caption.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HypothesisOut {
    /// The caption.
    pub caption: String,
    /// Its summed log-probability (higher is likelier).
    pub log_prob: f32,
}

/// Per-word attention over the encoder's grid.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttentionOut {
    /// Grid rows.
    pub h: usize,
    /// Grid columns.
    pub w: usize,
    /// How the image was fitted to the encoder's square input: `squash` (the grid covers the
    /// whole image) or `crop` (the grid covers the centred square).
    pub resize: String,
    /// One row-major `h * w` map per word of `words`.
    pub maps: Vec<Vec<f32>>,
}

/// Where the time went, in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Timings {
    /// Decoding and resizing the image.
    pub decode: f64,
    /// Waiting in the queue for the worker.
    pub queue: f64,
    /// The batch's encoder + decoder pass.
    pub caption: f64,
    /// The whole request, as the server saw it.
    pub total: f64,
}

/// The answer of `POST /v1/captions`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CaptionResponse {
    /// The best caption.
    pub caption: String,
    /// Its words (what the attention maps refer to).
    pub words: Vec<String>,
    /// The returned hypotheses, best first (the first is `caption`).
    pub hypotheses: Vec<HypothesisOut>,
    /// Per-word attention, when asked and the model has it.
    pub attention: Option<AttentionOut>,
    /// The model's id (as in `/v1/models`).
    pub model: String,
    /// Images captioned together with this one.
    pub batch_size: usize,
    /// Timings.
    pub timings_ms: Timings,
}

/// A served model.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelInfo {
    /// Its id (the bundle folder's name; an ensemble's names joined by `+`).
    pub id: String,
    /// Ids of an ensemble's members, in order; empty for one model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// Decoder architecture (`sat`, `transformer`, `gru-init`, `merge-lstm`), `ensemble` for
    /// several bundles, or a Hugging Face architecture.
    pub decoder: String,
    /// Image encoder.
    pub encoder: String,
    /// `squash` or `crop`.
    pub resize: String,
    /// Words in the vocabulary, specials included.
    pub vocab_size: usize,
    /// Whether `attention=true` returns maps.
    pub attention: bool,
    /// Encoder grid `[rows, columns]`.
    pub grid: [usize; 2],
    /// Default beam width.
    pub default_beam: usize,
    /// Beam length normalisation (`none`, `average` or `gnmt:<alpha>`): the model's own.
    pub length_penalty: String,
    /// Widest beam accepted.
    pub max_beam: usize,
    /// Longest caption accepted (`max_len`).
    pub max_len: usize,
}

/// The answer of `GET /v1/models`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    /// The served models (one today).
    pub models: Vec<ModelInfo>,
}

/// The answer of `GET /healthz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// The model's id.
    pub model: String,
    /// Images waiting for the worker.
    pub queue_depth: i64,
    /// Queue capacity.
    pub queue_capacity: usize,
}

/// The OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "captioner",
        description = "Image captioning: JSON API of `captioner serve`."
    ),
    paths(create_caption, list_models, healthz, metrics, index),
    components(schemas(
        CaptionResponse,
        HypothesisOut,
        AttentionOut,
        Timings,
        ModelList,
        ModelInfo,
        Health,
        ErrorBody,
        UploadForm
    ))
)]
pub struct ApiDoc;

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Caption one image.
///
/// The image is the `image` field of a `multipart/form-data` body, or the whole body. Options
/// come from the query string or (multipart) from form fields.
#[utoipa::path(
    post,
    path = "/v1/captions",
    params(CaptionOptions),
    request_body(
        description = "The image: a multipart form with an `image` field, or the raw file",
        content(
            (UploadForm = "multipart/form-data"),
            ("image/jpeg"),
            ("image/png"),
            ("image/webp"),
            ("application/octet-stream"),
        )
    ),
    responses(
        (status = 200, description = "The caption", body = CaptionResponse),
        (status = 400, description = "Malformed request or option", body = ErrorBody),
        (status = 413, description = "Body over the limit, or image over the pixel limit", body = ErrorBody),
        (status = 415, description = "Not an image format the server reads", body = ErrorBody),
        (status = 422, description = "Corrupt image, or an option out of range", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Queue full or shutting down (see Retry-After)", body = ErrorBody),
        (status = 504, description = "Took longer than the server's timeout", body = ErrorBody),
    )
)]
pub async fn create_caption(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let started = Instant::now();
    let limit = state.config.timeout;
    match tokio::time::timeout(limit, caption_request(&state, req, started)).await {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(_) => ApiError::timeout(limit).into_response(),
    }
}

/// How much of a refused (too large) body is still read and dropped before answering 413, as a
/// multiple of the limit: a client still sending would otherwise meet a reset connection instead
/// of the answer. Larger bodies are answered at once.
const DRAIN_FACTOR: usize = 4;

/// Reads the body under the size limit.
async fn read_body(mut body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let drain_cap = limit.saturating_mul(DRAIN_FACTOR);
    if declared.is_some_and(|n| n > drain_cap as u64) {
        return Err(ApiError::body_too_large(limit));
    }
    let mut over = declared.is_some_and(|n| n > limit as u64);
    let mut received = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        let Some(chunk) = frame.data_ref() else {
            continue;
        };
        seen = seen.saturating_add(chunk.len());
        over |= seen > limit;
        if !over {
            received.extend_from_slice(chunk);
        } else if seen > drain_cap {
            break;
        }
    }
    if over {
        return Err(ApiError::body_too_large(limit));
    }
    Ok(Bytes::from(received))
}

fn parse_bool(name: &str, v: &str) -> Result<bool, ApiError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "option `{name}`: expected true or false, not `{v}`"
        ))),
    }
}

fn parse_usize(name: &str, v: &str) -> Result<usize, ApiError> {
    v.trim().parse().map_err(|_| {
        ApiError::bad_request(format!(
            "option `{name}`: expected a whole number, not `{v}`"
        ))
    })
}

/// Sets one option from a form field; unknown fields are an error (a typo should not be
/// silently ignored).
fn set_option(options: &mut CaptionOptions, name: &str, value: &str) -> Result<(), ApiError> {
    match name {
        "beam" => options.beam = Some(parse_usize(name, value)?),
        "max_len" => options.max_len = Some(parse_usize(name, value)?),
        "top_k" => options.top_k = Some(parse_usize(name, value)?),
        "attention" => options.attention = Some(parse_bool(name, value)?),
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown form field `{other}` (expected image, beam, max_len, top_k, attention)"
            )))
        }
    }
    Ok(())
}

/// The generation settings for `options`.
pub fn generate_config(
    options: &CaptionOptions,
    default_beam: usize,
    length_penalty: LengthPenalty,
) -> Result<GenerateConfig, ApiError> {
    let beam = options.beam.unwrap_or(default_beam);
    if !(1..=MAX_BEAM).contains(&beam) {
        return Err(ApiError::invalid_option(format!(
            "beam must be in 1..={MAX_BEAM}, not {beam}"
        )));
    }
    let max_len = options.max_len.unwrap_or(20);
    if !(1..=MAX_LEN).contains(&max_len) {
        return Err(ApiError::invalid_option(format!(
            "max_len must be in 1..={MAX_LEN}, not {max_len}"
        )));
    }
    let top_k = options.top_k.unwrap_or(1);
    if !(1..=beam).contains(&top_k) {
        return Err(ApiError::invalid_option(format!(
            "top_k must be in 1..={beam} (the beam width), not {top_k}"
        )));
    }
    let strategy = if beam == 1 {
        Strategy::Greedy
    } else {
        Strategy::Beam {
            size: beam,
            length_penalty,
            top_k_hypotheses: top_k,
        }
    };
    let config = GenerateConfig {
        strategy,
        min_words: 1,
        max_words: max_len,
        no_repeat_ngram: 0,
        suppress_unk: true,
        return_attention: options.attention.unwrap_or(false),
    };
    config
        .validate()
        .map_err(|e| ApiError::invalid_option(e.to_string()))?;
    Ok(config)
}

fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        })
}

/// The image bytes, a name for messages, and the options.
async fn read_upload(
    req: Request,
    limit: usize,
) -> Result<(Bytes, String, CaptionOptions), ApiError> {
    let mut options = match Query::<CaptionOptions>::try_from_uri(req.uri()) {
        Ok(Query(o)) => o,
        Err(e) => {
            return Err(ApiError::bad_request(format!(
                "bad query string: {}",
                e.body_text()
            )))
        }
    };
    let (parts, body) = req.into_parts();
    let bytes = read_body(body, &parts.headers, limit).await?;
    if !is_multipart(&parts.headers) {
        return Ok((bytes, "upload".into(), options));
    }
    let req = Request::from_parts(parts, Body::from(bytes));
    let mut form = Multipart::from_request(req, &())
        .await
        .map_err(|e| ApiError::bad_request(format!("bad multipart body: {}", e.body_text())))?;
    let mut image = None;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| ApiError::bad_request(format!("bad multipart body: {}", e.body_text())))?
    {
        let name = field.name().unwrap_or_default().to_string();
        if name == "image" {
            let file = field
                .file_name()
                .filter(|f| !f.is_empty())
                .unwrap_or("upload")
                .to_string();
            let data = field.bytes().await.map_err(|e| {
                ApiError::bad_request(format!("bad multipart body: {}", e.body_text()))
            })?;
            image = Some((data, file));
        } else {
            let value = field.text().await.map_err(|e| {
                ApiError::bad_request(format!("bad multipart field `{name}`: {}", e.body_text()))
            })?;
            set_option(&mut options, &name, &value)?;
        }
    }
    let (data, file) = image.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_image",
            "the multipart body has no `image` field",
        )
    })?;
    Ok((data, file, options))
}

async fn caption_request(
    state: &Arc<AppState>,
    req: Request,
    started: Instant,
) -> Result<CaptionResponse, ApiError> {
    let (bytes, name, options) = read_upload(req, state.config.body_limit).await?;
    let config = generate_config(
        &options,
        state.config.default_beam,
        state.captioner.length_penalty(),
    )?;
    // Refuse early, before the decoding work, when the queue is already full.
    if state.metrics.queue_depth() >= state.batcher.capacity() as i64 {
        return Err(ApiError::queue_full(state.batcher.capacity()));
    }

    // Decoding is CPU work: off the async executor.
    let decode_started = Instant::now();
    let captioner = state.captioner.clone();
    let image = tokio::task::spawn_blocking(move || captioner.decode_image(&bytes, &name))
        .await
        .map_err(|e| ApiError::internal(format!("decoding the image failed: {e}")))??;
    let decode = decode_started.elapsed();

    let (reply, answer) = oneshot::channel();
    let job = Job {
        image,
        config,
        enqueued: Instant::now(),
        reply,
    };
    match state.batcher.submit(job) {
        Ok(()) => {}
        Err(SubmitError::Full) => return Err(ApiError::queue_full(state.batcher.capacity())),
        Err(SubmitError::Closed) => return Err(ApiError::shutting_down()),
    }
    let out = answer
        .await
        .map_err(|_| ApiError::internal("the captioning worker stopped"))??;
    let c = out.captioned;
    let (h, w) = state.captioner.grid();
    Ok(CaptionResponse {
        attention: c.attention.map(|maps| AttentionOut {
            h,
            w,
            resize: state.model.resize.clone(),
            maps,
        }),
        caption: c.caption,
        words: c.words,
        hypotheses: c
            .hypotheses
            .into_iter()
            .map(|(caption, log_prob)| HypothesisOut { caption, log_prob })
            .collect(),
        model: state.model.id.clone(),
        batch_size: out.batch_size,
        timings_ms: Timings {
            decode: ms(decode),
            queue: ms(out.queued),
            caption: ms(out.caption),
            total: ms(started.elapsed()),
        },
    })
}

/// The served models.
#[utoipa::path(get, path = "/v1/models", responses((status = 200, body = ModelList)))]
pub async fn list_models(State(state): State<Arc<AppState>>) -> Json<ModelList> {
    Json(ModelList {
        models: vec![state.model.clone()],
    })
}

/// Liveness: the model is loaded and the worker takes jobs.
#[utoipa::path(
    get,
    path = "/healthz",
    responses(
        (status = 200, body = Health),
        (status = 503, description = "Shutting down", body = ErrorBody)
    )
)]
pub async fn healthz(State(state): State<Arc<AppState>>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        model: state.model.id.clone(),
        queue_depth: state.metrics.queue_depth().max(0),
        queue_capacity: state.batcher.capacity(),
    })
}

/// Prometheus metrics (text exposition format 0.0.4).
#[utoipa::path(
    get,
    path = "/metrics",
    responses((status = 200, description = "Prometheus text", body = String, content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// The web page.
#[utoipa::path(
    get,
    path = "/",
    responses((status = 200, description = "The captioning page", body = String, content_type = "text/html"))
)]
pub async fn index() -> Html<&'static str> {
    Html(crate::PAGE)
}

/// The OpenAPI document.
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// JSON 404 for every unknown path.
pub async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(req.uri().path())
}

/// JSON 405 for a known path with the wrong method.
pub async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_map_to_strategies_and_ranges_are_checked() {
        let greedy = generate_config(
            &CaptionOptions {
                beam: Some(1),
                ..Default::default()
            },
            3,
            LengthPenalty::None,
        )
        .unwrap();
        assert_eq!(greedy.strategy, Strategy::Greedy);
        let beam = generate_config(
            &CaptionOptions {
                top_k: Some(2),
                max_len: Some(7),
                attention: Some(true),
                ..Default::default()
            },
            3,
            LengthPenalty::Average,
        )
        .unwrap();
        assert!(matches!(
            beam.strategy,
            Strategy::Beam {
                size: 3,
                top_k_hypotheses: 2,
                length_penalty: LengthPenalty::Average,
            }
        ));
        assert_eq!(beam.max_words, 7);
        assert!(beam.return_attention);
        for bad in [
            CaptionOptions {
                beam: Some(0),
                ..Default::default()
            },
            CaptionOptions {
                beam: Some(MAX_BEAM + 1),
                ..Default::default()
            },
            CaptionOptions {
                max_len: Some(0),
                ..Default::default()
            },
            CaptionOptions {
                top_k: Some(4),
                ..Default::default()
            },
        ] {
            let e = generate_config(&bad, 3, LengthPenalty::None).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
        }
    }

    #[test]
    fn form_fields_are_parsed_and_unknown_ones_refused() {
        let mut o = CaptionOptions::default();
        set_option(&mut o, "beam", " 5 ").unwrap();
        set_option(&mut o, "attention", "on").unwrap();
        assert_eq!(o.beam, Some(5));
        assert_eq!(o.attention, Some(true));
        assert!(set_option(&mut o, "beam", "five").is_err());
        assert!(set_option(&mut o, "bean", "5").is_err());
    }
}

//! `captioner serve`: an HTTP captioning service over one model bundle.
//!
//! - `POST /v1/captions`: a multipart form (`image` field) or the raw image as the body; options
//!   `beam`, `max_len`, `top_k`, `attention=true` in the query or as form fields; answers JSON
//!   with the caption, the hypotheses, optional attention maps, the model id and timings.
//! - `GET /v1/models`, `GET /healthz`, `GET /metrics` (Prometheus), `GET /openapi.json`
//!   (generated with `utoipa`) and `GET /`, a single embedded page.
//!
//! Requests are micro-batched ([`batcher`]): a bounded queue feeds one worker thread that
//! captions up to `max_batch` images per encoder/decoder pass; a full queue answers 503 with
//! `Retry-After`. Every error is JSON with its status code ([`ApiError`]); a panic in a handler
//! becomes a 500, and [`Service::serve`] shuts down gracefully, finishing requests in flight.

pub mod api;
pub mod batcher;
mod error;
pub mod metrics;
mod model;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;

pub use error::{ApiError, ErrorBody, ErrorDetail, ServeError};
pub use model::Model;

use api::{AppState, ModelInfo};
use batcher::{BatchConfig, Batcher};
use metrics::Metrics;

/// The web page served at `/`.
pub const PAGE: &str = include_str!("../static/index.html");

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Most images per encoder/decoder batch.
    pub max_batch: usize,
    /// Longest wait for more images after the first of a batch arrives.
    pub max_wait: Duration,
    /// Most images waiting for the worker; more are answered 503.
    pub queue: usize,
    /// Largest request body, in bytes (413 above).
    pub body_limit: usize,
    /// Longest a caption request may take (504 after).
    pub timeout: Duration,
    /// Beam width when a request does not say.
    pub default_beam: usize,
    /// The model's id in answers; `None`: from the bundle folder's name (an ensemble's names
    /// joined by `+`).
    pub model_id: Option<String>,
}

impl Default for ServeConfig {
    /// Batches of up to 64 waiting at most 5 ms, a queue of 64, 10 MB bodies, 30 s timeout, beam 3.
    fn default() -> Self {
        Self {
            max_batch: 64,
            max_wait: Duration::from_millis(5),
            queue: 64,
            body_limit: 10 * 1024 * 1024,
            timeout: Duration::from_secs(30),
            default_beam: 3,
            model_id: None,
        }
    }
}

/// A model id from its folder: `models/default` -> `default`, `runs/sat/best` -> `sat/best`.
pub fn model_id(dir: &Path) -> String {
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty() && n != "." && n != "..")
    };
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    match name(&dir) {
        Some(n) if n == "best" || n == "last" => match dir.parent().and_then(name) {
            Some(parent) => format!("{parent}/{n}"),
            None => n,
        },
        Some(n) => n,
        None => "model".into(),
    }
}

/// A running captioning service: the model, its worker thread and the HTTP routes.
pub struct Service {
    state: Arc<AppState>,
}

impl Service {
    /// Starts the worker thread for `model` (a bundle's `Captioner` or an `HfCaptioner`) with
    /// `config`.
    pub fn new(model: impl Into<Model>, config: ServeConfig) -> Result<Self, ServeError> {
        if config.body_limit == 0 {
            return Err(ServeError::Config("the body limit must be above 0".into()));
        }
        if config.timeout.is_zero() {
            return Err(ServeError::Config("the timeout must be above 0".into()));
        }
        if !(1..=api::MAX_BEAM).contains(&config.default_beam) {
            return Err(ServeError::Config(format!(
                "the default beam must be in 1..={}",
                api::MAX_BEAM
            )));
        }
        let metrics = Arc::new(Metrics::default());
        let captioner = Arc::new(model.into());
        let batcher = Batcher::start(
            captioner.clone(),
            BatchConfig {
                max_batch: config.max_batch,
                max_wait: config.max_wait,
                queue: config.queue,
            },
            metrics.clone(),
        )?;
        let described = captioner.describe();
        let (gh, gw) = captioner.grid();
        let members: Vec<String> = described.folders.iter().map(|f| model_id(f)).collect();
        let model = ModelInfo {
            id: config.model_id.clone().unwrap_or_else(|| members.join("+")),
            members: if members.len() > 1 {
                members
            } else {
                Vec::new()
            },
            decoder: described.decoder,
            encoder: described.encoder,
            resize: described.resize,
            vocab_size: described.vocab_size,
            attention: described.attention,
            grid: [gh, gw],
            default_beam: config.default_beam,
            length_penalty: captioner.length_penalty().to_string(),
            max_beam: api::MAX_BEAM,
            max_len: api::MAX_LEN,
        };
        Ok(Self {
            state: Arc::new(AppState {
                captioner,
                batcher,
                metrics,
                config,
                model,
            }),
        })
    }

    /// The metrics (also for watching the service from tests).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.state.metrics.clone()
    }

    /// What `/v1/models` reports.
    pub fn model(&self) -> &ModelInfo {
        &self.state.model
    }

    /// Every route, with the error handling and metrics layers.
    pub fn router(&self) -> Router {
        let routes = Router::new()
            .route("/", get(api::index))
            .route("/v1/captions", post(api::create_caption))
            .route("/v1/models", get(api::list_models))
            .route("/healthz", get(api::healthz))
            .route("/metrics", get(api::metrics))
            .route("/openapi.json", get(api::openapi))
            .fallback(api::not_found)
            .method_not_allowed_fallback(api::method_not_allowed)
            .with_state(self.state.clone());
        harden(routes, self.state.metrics.clone())
    }

    /// Serves on `listener` until `shutdown` completes, then stops accepting connections,
    /// finishes the requests in flight, lets the worker caption what is queued and returns.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let app = self.router();
        let addr = listener.local_addr().ok();
        tracing::info!(
            "serving model {} on http://{}/",
            self.state.model.id,
            addr.map(|a| a.to_string()).unwrap_or_default()
        );
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| ServeError::Io {
                context: "serving HTTP".into(),
                source,
            });
        let state = self.state.clone();
        let stopped = tokio::task::spawn_blocking(move || state.batcher.shutdown())
            .await
            .map_err(|e| ServeError::Worker(e.to_string()))?;
        served?;
        stopped?;
        tracing::info!("server stopped");
        Ok(())
    }
}

/// Starts the service for `captioner`, binds `host:port` and serves until Ctrl-C or SIGTERM, on
/// a Tokio runtime of its own (for callers without one, like the `captioner` binary).
pub fn run(
    model: impl Into<Model>,
    config: ServeConfig,
    host: &str,
    port: u16,
) -> Result<(), ServeError> {
    let service = Service::new(model, config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("captioner-http")
        .build()
        .map_err(|source| ServeError::Io {
            context: "starting the async runtime".into(),
            source,
        })?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((host, port))
            .await
            .map_err(|source| ServeError::Io {
                context: format!("binding {host}:{port}"),
                source,
            })?;
        service.serve(listener, shutdown_signal()).await
    })
}

/// Wraps `router` in what every route gets: a JSON 500 instead of a panic reaching the client,
/// request counting and latency (by matched route), and no body limit of axum's own (the caption
/// handler enforces the configured one, as JSON).
pub fn harden(router: Router, metrics: Arc<Metrics>) -> Router {
    router
        .layer(DefaultBodyLimit::disable())
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn_with_state(metrics, track))
}

fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into());
    tracing::error!("a handler panicked: {detail}");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error (the server logged it)",
    )
    .into_response()
}

async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    metrics.add_in_flight(1);
    let response = next.run(req).await;
    metrics.add_in_flight(-1);
    metrics.record_request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Resolves when the process gets Ctrl-C or (Unix) SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

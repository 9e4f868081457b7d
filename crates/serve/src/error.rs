//! Errors: [`ServeError`] for starting and running the service, [`ApiError`] for what one request
//! answers (always JSON, always with the right status code).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use captioner_encode::ImageError;
use captioner_generate::pipeline::PipelineError;
use captioner_generate::GenerateError;
use serde::Serialize;
use utoipa::ToSchema;

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting out of range.
    #[error("invalid server setting: {0}")]
    Config(String),
    /// Binding or serving the socket.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The batching worker thread could not be started or died.
    #[error("the captioning worker: {0}")]
    Worker(String),
}

/// The JSON body of every error: `{"error": {"status": 413, "code": "payload_too_large",
/// "message": "..."}}`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// See [`ErrorBody`].
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// The HTTP status code, repeated.
    pub status: u16,
    /// A stable machine-readable code: `bad_request` (400), `not_found` (404),
    /// `method_not_allowed` (405), `payload_too_large` (413: the body), `image_too_large` (413:
    /// the pixel count, from the header), `unsupported_media_type` (415), `invalid_image`,
    /// `missing_image`, `invalid_option` (422), `internal` (500), `queue_full`, `shutting_down`
    /// (503) or `timeout` (504).
    pub code: String,
    /// A human-readable explanation.
    pub message: String,
}

/// An error answer to one request.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// See [`ErrorDetail::code`].
    pub code: &'static str,
    /// See [`ErrorDetail::message`].
    pub message: String,
    /// Seconds for a `Retry-After` header (503 answers).
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400: the request is malformed (bad multipart, unparsable option).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 422: an option is out of range.
    pub fn invalid_option(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_option", message)
    }

    /// 413: the body is over the limit.
    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is over the limit of {limit} bytes"),
        )
    }

    /// 503 with `Retry-After`: the queue is full.
    pub fn queue_full(capacity: usize) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "queue_full",
                format!("the captioning queue is full ({capacity} waiting); retry shortly"),
            )
        }
    }

    /// 503: the server is shutting down.
    pub fn shutting_down() -> Self {
        Self {
            retry_after: Some(5),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down",
            )
        }
    }

    /// 504: the request took longer than the server's timeout.
    pub fn timeout(limit: std::time::Duration) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "the request took longer than the server's limit of {} ms",
                limit.as_millis()
            ),
        )
    }

    /// 500: a bug or an internal failure; the message is logged, the client gets a summary.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 404 for unknown paths.
    pub fn not_found(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such endpoint: {path} (see /openapi.json)"),
        )
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                status: self.status.as_u16(),
                code: self.code.to_string(),
                message: self.message.clone(),
            },
        }
    }
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> Self {
        let message = e.to_string();
        match e {
            // Checked from the header, before any pixel is decoded.
            ImageError::TooLarge { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "image_too_large", message)
            }
            ImageError::UnknownFormat { .. } => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                message,
            ),
            ImageError::Empty { .. }
            | ImageError::ZeroSized { .. }
            | ImageError::Decode { .. }
            | ImageError::Truncated { .. }
            | ImageError::Resize { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_image", message)
            }
            ImageError::Io { .. } => Self::internal(message),
        }
    }
}

impl From<PipelineError> for ApiError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Image(e) => e.into(),
            PipelineError::Generate(GenerateError::Config(m)) => Self::invalid_option(m),
            other => Self::internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(
                status = self.status.as_u16(),
                code = self.code,
                "{}",
                self.message
            );
        } else {
            tracing::debug!(
                status = self.status.as_u16(),
                code = self.code,
                "{}",
                self.message
            );
        }
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

//! One error shape for every HTTP answer the bridge gives: `{"error": {code, message, request_id}}`.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Header carrying the request id, set on every response (and taken from the request if present).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// An error a handler returns. Rendered as JSON with the request id by [`render_errors`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// The JSON body of every error the bridge itself answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The two shapes a placing route's error comes in, for the OpenAPI document: a `Failure` (the
/// match was tried and its failure recorded: `{match_id, error: {code, message, retryable}}`) or
/// an `ErrorBody` (the request was refused, or the state store failed, before any outcome).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // describes answers; never built
pub enum FailureOrError {
    Failure(bridge::Failure),
    Error(ErrorBody),
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable, e.g. `INVALID_REQUEST`, `UNAUTHORIZED`, `NOT_FOUND`.
    pub code: String,
    /// For humans; names the offending field when there is one.
    pub message: String,
    /// Also in the `x-request-id` response header; quote it when reporting a problem.
    pub request_id: String,
}

/// Middleware: gives every error response the JSON error body, including those produced outside
/// handlers (body limit, unknown route, wrong method, extractor rejections).
pub async fn render_errors(request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_default();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let error = match parts.extensions.remove::<ApiError>() {
        Some(error) => error,
        None if is_json(&parts.headers) => return Response::from_parts(parts, body),
        None => {
            // Rejections from axum and tower carry a short text reason: keep it as the message.
            let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
            let message = String::from_utf8_lossy(&text).trim().to_owned();
            ApiError::new(status, code_for(status), if message.is_empty() { reason(status) } else { message })
        }
    };
    let json = serde_json::to_vec(&ErrorBody {
        error: ErrorDetail { code: error.code.to_owned(), message: error.message, request_id },
    })
    .unwrap_or_default();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(json))
}

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

fn reason(status: StatusCode) -> String {
    status.canonical_reason().unwrap_or("error").to_owned()
}

fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "BAD_REQUEST",
        StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
        StatusCode::FORBIDDEN => "FORBIDDEN",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
        StatusCode::UNPROCESSABLE_ENTITY => "INVALID_REQUEST",
        StatusCode::REQUEST_TIMEOUT => "TIMEOUT",
        StatusCode::SERVICE_UNAVAILABLE => "UNAVAILABLE",
        _ if status.is_client_error() => "BAD_REQUEST",
        _ => "INTERNAL",
    }
}

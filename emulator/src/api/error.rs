//! Error answers in the spec's `ErrorResponse` shape.
//!
//! Handlers return an [`ApiError`] without knowing the request path; the [`render_errors`]
//! middleware, which does, writes the body. So no handler formats an error by hand.

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::Serialize;

/// One invalid field of a request body (`FieldViolation` in the spec).
#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    /// The field, e.g. `env.MODE` or `args[0]`.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

impl Violation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Violation { field: field.into(), description: description.into() }
    }
}

/// An error answer waiting for its request path.
#[derive(Clone, Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: String,
    violations: Option<Vec<Violation>>,
    /// Answer a proxy's HTML page instead of JSON (fault injection).
    html: bool,
}

impl ApiError {
    /// An error with the usual `code` for its status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code_for(status.as_u16()),
            message: message.into(),
            details: String::new(),
            violations: None,
            html: false,
        }
    }

    /// 401: no or unknown token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 422 with the list of invalid fields.
    pub fn invalid(violations: Vec<Violation>) -> Self {
        let mut e = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "The request body is invalid.");
        e.details = violations
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect::<Vec<_>>()
            .join("; ");
        e.violations = Some(violations);
        e
    }

    /// Any status, as fault injection asks; `html` answers a text/html page like a proxy's.
    pub fn injected(status: u16, html: bool) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut e = Self::new(status, "Injected fault.");
        e.details = "This answer was injected by an emulator fault rule.".to_owned();
        e.html = html;
        e
    }

    /// Adds details.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }
}

/// The `code` Gameye uses (or would plausibly use) for a status.
fn code_for(status: u16) -> &'static str {
    match status {
        400 => "BAD_REQUEST",
        401 => "UNAUTHORIZED",
        402 => "QUOTA_EXCEEDED",
        403 => "FORBIDDEN",
        404 => "RESOURCE_NOT_FOUND",
        409 => "CONFLICT",
        420 => "NO_CAPACITY",
        422 => "VALIDATION_ERROR",
        429 => "TOO_MANY_REQUESTS",
        500 => "INTERNAL_ERROR",
        502 => "BAD_GATEWAY",
        503 => "SERVICE_UNAVAILABLE",
        504 => "GATEWAY_TIMEOUT",
        s if s >= 500 => "INTERNAL_ERROR",
        _ => "ERROR",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorResponse<'a> {
    status_code: u16,
    code: &'a str,
    message: &'a str,
    details: &'a str,
    path: &'a str,
    identifier: String,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    violations: Option<&'a [Violation]>,
}

impl ApiError {
    /// The full answer for a request to `path`.
    pub fn render(&self, path: &str) -> Response {
        if self.html {
            let reason = self.status.canonical_reason().unwrap_or("Error");
            let code = self.status.as_u16();
            let page = format!(
                "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n\
                 <center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            );
            return (self.status, [(header::CONTENT_TYPE, HeaderValue::from_static("text/html"))], page)
                .into_response();
        }
        let body = ErrorResponse {
            status_code: self.status.as_u16(),
            code: self.code,
            message: &self.message,
            details: &self.details,
            path,
            identifier: uuid::Uuid::new_v4().to_string(),
            timestamp: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            violations: self.violations.as_deref(),
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        (
            self.status,
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            Body::from(json),
        )
            .into_response()
    }
}

/// Middleware: turns an [`ApiError`] left in a response's extensions into its body.
pub async fn render_errors(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    match response.extensions().get::<ApiError>() {
        Some(error) => error.render(&path),
        None => response,
    }
}

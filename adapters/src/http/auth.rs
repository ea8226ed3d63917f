//! Bearer-token authentication of the `/v1` API.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::config::Secret;

/// The accepted API tokens. Empty: the API is open (the configuration then allows loopback only).
#[derive(Clone, Default)]
pub struct ApiTokens(Arc<Vec<Secret>>);

impl ApiTokens {
    pub fn new(tokens: Vec<Secret>) -> Self {
        Self(Arc::new(tokens))
    }

    fn accepts(&self, presented: &[u8]) -> bool {
        // Check every token in constant time, so timing tells nothing about which one came close.
        self.0
            .iter()
            .fold(false, |found, token| found | bool::from(token.expose().as_bytes().ct_eq(presented)))
    }
}

/// Middleware: `Authorization: Bearer <token>` must name a configured token.
pub async fn require_token(State(tokens): State<ApiTokens>, request: Request, next: Next) -> Response {
    if tokens.0.is_empty() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
        .map(str::trim);
    match presented {
        Some(token) if tokens.accepts(token.as_bytes()) => next.run(request).await,
        Some(_) => unauthorized("the bearer token is not valid"),
        None => unauthorized("an `Authorization: Bearer <token>` header is required"),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    response
}

//! Bearer-token authentication of the `/v1` API.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::config::Secret;

/// The accepted API tokens, as SHA-256 digests. Empty: the API is open (the configuration then
/// allows loopback only).
#[derive(Clone, Default)]
pub struct ApiTokens(Arc<Vec<[u8; 32]>>);

impl ApiTokens {
    pub fn new(tokens: Vec<Secret>) -> Self {
        Self(Arc::new(tokens.iter().map(|token| digest(token.expose().as_bytes())).collect()))
    }

    fn accepts(&self, presented: &[u8]) -> bool {
        // Digests, compared in constant time with every token: equal lengths whatever was sent
        // (`ct_eq` answers at once on a length mismatch), so timing tells neither a token's length
        // nor which one came close.
        let presented = digest(presented);
        self.0.iter().fold(false, |found, token| found | bool::from(token.ct_eq(&presented)))
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_configured_token_whole_is_accepted() {
        let tokens = ApiTokens::new(vec![Secret::new("first-token"), Secret::new("second")]);
        assert!(tokens.accepts(b"first-token"));
        assert!(tokens.accepts(b"second"));
        for wrong in [&b""[..], b"first", b"first-token-", b"secon", b"Second", b"first-tokenfirst-token"] {
            assert!(!tokens.accepts(wrong), "{}", String::from_utf8_lossy(wrong));
        }
        assert!(!ApiTokens::default().accepts(b""), "no tokens accept nothing (the open API skips this)");
    }
}

//! Test controls under `/_emulator/` (no auth: meant for loopback use by tests and demos).

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;
use tokio::time::Instant;

use crate::{
    api::error::ApiError,
    faults::FaultRule,
    state::{SharedState, lock},
    views::EmulatorEntry,
    world::Quirks,
};

/// `/_emulator/faults` (GET, PUT = replace all, DELETE = clear), `/_emulator/sessions` (every
/// session ever), `/_emulator/quirks` (GET, PUT) and `/_emulator/world` (GET, as loaded).
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/_emulator/faults", get(get_faults).put(put_faults).delete(clear_faults))
        .route("/_emulator/sessions", get(all_sessions))
        .route("/_emulator/quirks", get(get_quirks).put(put_quirks))
        .route("/_emulator/world", get(get_world))
}

async fn get_faults(State(state): State<SharedState>) -> Response {
    Json(lock(&state.faults).rules().to_vec()).into_response()
}

async fn put_faults(State(state): State<SharedState>, body: Bytes) -> Result<Response, ApiError> {
    let rules: Vec<FaultRule> = serde_json::from_slice(&body).map_err(bad_request)?;
    for rule in &rules {
        rule.validate().map_err(bad_request)?;
    }
    lock(&state.faults).replace(rules.clone());
    Ok(Json(rules).into_response())
}

async fn clear_faults(State(state): State<SharedState>) -> StatusCode {
    lock(&state.faults).replace(Vec::new());
    StatusCode::NO_CONTENT
}

async fn all_sessions(State(state): State<SharedState>) -> Response {
    #[derive(Serialize)]
    struct All<'a> {
        sessions: Vec<EmulatorEntry<'a>>,
    }
    let now = Instant::now();
    let registry = state.sessions();
    let sessions = registry.all().map(|s| EmulatorEntry::new(s, now)).collect();
    Json(All { sessions }).into_response()
}

async fn get_quirks(State(state): State<SharedState>) -> Response {
    Json(lock(&state.quirks).clone()).into_response()
}

async fn put_quirks(State(state): State<SharedState>, body: Bytes) -> Result<Response, ApiError> {
    let quirks: Quirks = serde_json::from_slice(&body).map_err(bad_request)?;
    *lock(&state.quirks) = quirks.clone();
    Ok(Json(quirks).into_response())
}

async fn get_world(State(state): State<SharedState>) -> Response {
    Json(&state.world).into_response()
}

fn bad_request(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "Invalid control request.").with_details(e.to_string())
}

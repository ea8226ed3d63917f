//! The Session API itself: one handler module per group of operations of the spec.

mod artifacts;
mod body;
pub mod error;
mod guard;
mod list_query;
mod logs;
mod players;
mod query;
mod regions;
mod run;
mod sessions;

use axum::{
    Router,
    extract::State,
    http::HeaderMap,
    routing::{delete, get, put},
};

use crate::state::SharedState;
use error::ApiError;

/// The spec's routes.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/session", get(sessions::session_list).post(run::session_run))
        .route("/session/{id}", get(sessions::describe_session).delete(sessions::session_stop))
        .route("/session/player/join", put(players::join_session))
        .route("/session/player/leave", delete(players::leave_session))
        .route("/available-location/{image}", get(regions::available_locations))
        .route("/tag/{region}/{image}/{version}", get(regions::tag_exists))
        .route("/logs", get(logs::stream_logs))
        .route("/artifacts", get(artifacts::artifacts))
}

/// Anything else: like the live API's gateway, the token is checked before the path is.
pub async fn fallback(State(state): State<SharedState>, headers: HeaderMap) -> ApiError {
    match guard::authorize(&state, &headers, None) {
        Err(e) => e,
        Ok(()) => ApiError::not_found("No such resource."),
    }
}

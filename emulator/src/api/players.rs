//! PUT /session/player/join (join-session) and DELETE /session/player/leave (leave-session).

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{
    body::Fields,
    error::ApiError,
    guard::{authorize, inject_faults},
    sessions::{location_of, session_not_found},
};
use crate::{
    faults::Operation,
    state::{SharedState, now_ms},
};

/// Handler of PUT /session/player/join: body `{session, players}`, answer `{count, players}` with
/// every joined player; joining twice counts once.
pub async fn join_session(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, None)?;
    let mut f = Fields::parse(&body, &["session", "players"])?;
    let session = f.string("session", true, 0);
    let players = f.string_array("players", true, 0);
    f.finish()?;
    let (session, players) = (session.unwrap_or_default(), players.unwrap_or_default());
    let location = location_of(&state, Operation::JoinSession, &session);
    let after = inject_faults(&state, Operation::JoinSession, location.as_deref()).await?;
    let answer = {
        let mut registry = state.sessions();
        let joined = registry.join(&session, players, now_ms());
        joined
            .map(|joined| Json(json!({ "count": joined.len(), "players": joined })).into_response())
            .ok_or_else(|| session_not_found(&session))
    };
    after.answer(&state, answer).await
}

/// Handler of DELETE /session/player/leave: the spec's body is `{players}`, but the live API
/// answers 404 unless `session` is sent too, and so does this. Answer: the remaining players.
pub async fn leave_session(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, None)?;
    let mut f = Fields::parse(&body, &["session", "players"])?;
    let session = f.string("session", false, 0);
    let players = f.string_array("players", true, 0);
    f.finish()?;
    let players = players.unwrap_or_default();
    let location = session.as_deref().and_then(|id| location_of(&state, Operation::LeaveSession, id));
    let after = inject_faults(&state, Operation::LeaveSession, location.as_deref()).await?;
    let answer =
        match session {
            None => Err(ApiError::not_found("The provided session does not exist.")
                .with_details("No session was given.")),
            Some(session) => {
                let mut registry = state.sessions();
                let remaining = registry.leave(&session, &players, now_ms());
                remaining
                    .map(|remaining| {
                        Json(json!({ "count": remaining.len(), "players": remaining })).into_response()
                    })
                    .ok_or_else(|| session_not_found(&session))
            }
        };
    after.answer(&state, answer).await
}

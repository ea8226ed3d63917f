//! GET /session (session-list), GET /session/{id} (describe-session), DELETE /session/{id} (session-stop).

use axum::{
    Json,
    extract::{Path, RawQuery, State, rejection::PathRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use tokio::time::Instant;

use super::{
    error::ApiError,
    guard::{authorize, inject_faults},
    list_query::ListQuery,
};
use crate::{
    faults::Operation,
    sessions::StopError,
    state::{AppState, SharedState, lock},
    views::{Described, ListEntry},
    world::Scope,
};

/// Handler of GET /session.
pub async fn session_list(
    State(state): State<SharedState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Some(Scope::SessionRead))?;
    let query = ListQuery::parse(query.as_deref());
    inject_faults(&state, Operation::SessionList, query.location.as_deref()).await?;

    // Written in pages, the lock released between them: a listing of a hundred thousand sessions
    // would otherwise hold every other request (POST /session included) for its whole
    // serialization. Like any unpaginated live listing it is not a snapshot: a session created or
    // stopped meanwhile may or may not be in it; one active throughout always is.
    let mut body = b"{\"sessions\":[".to_vec();
    let mut from = 0;
    let mut first = true;
    loop {
        let mut next = None;
        {
            let registry = state.sessions();
            let now = Instant::now();
            for (scanned, (idx, s)) in registry.active_from(from, query.first_filter()).enumerate() {
                if scanned == LIST_PAGE {
                    next = Some(idx);
                    break;
                }
                // A list entry is plain data: serializing it cannot fail.
                if query.matches(s, s.status(now))
                    && let Ok(entry) = serde_json::to_vec(&ListEntry::new(s, now))
                {
                    if !first {
                        body.push(b',');
                    }
                    first = false;
                    body.extend_from_slice(&entry);
                }
            }
        }
        match next {
            Some(idx) => from = idx,
            None => break,
        }
        tokio::task::yield_now().await;
    }
    body.extend_from_slice(b"]}");
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Sessions looked at per lock hold when listing.
const LIST_PAGE: usize = 2048;

/// Handler of GET /session/{id}.
pub async fn describe_session(
    State(state): State<SharedState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Some(Scope::SessionRead))?;
    let id = path_id(id)?;
    inject_faults(
        &state,
        Operation::DescribeSession,
        location_of(&state, Operation::DescribeSession, &id).as_deref(),
    )
    .await?;
    let registry = state.sessions();
    let session = registry.get_active(&id).ok_or_else(|| session_not_found(&id))?;
    Ok(Json(Described::new(session, Instant::now())).into_response())
}

/// Handler of DELETE /session/{id}.
pub async fn session_stop(
    State(state): State<SharedState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Some(Scope::SessionStop))?;
    let id = path_id(id)?;
    inject_faults(
        &state,
        Operation::SessionStop,
        location_of(&state, Operation::SessionStop, &id).as_deref(),
    )
    .await?;
    match state.sessions().stop(&id, Instant::now()) {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(StopError::NotFound) => Err(session_not_found(&id)),
        Err(StopError::AlreadyStopped) => {
            Err(ApiError::conflict(format!("Session {id:?} has already been terminated.")))
        }
    }
}

/// The session's id from the path; an undecodable one cannot name a session.
pub fn path_id(id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    id.map(|Path(id)| id).map_err(|_| ApiError::not_found("The specified session does not exist."))
}

/// The location of any session ever created with this id, for location-scoped fault rules
/// (looked up only when such a rule exists for `op`, to keep the common path to one lock).
pub fn location_of(state: &AppState, op: Operation, id: &str) -> Option<String> {
    if !lock(&state.faults).has_location_rule(op) {
        return None;
    }
    state.sessions().get(id).map(|s| s.location.clone())
}

/// 404 for a session that is unknown or stopped.
pub fn session_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Session {id:?} does not exist."))
        .with_details("Please provide the id of an active session.")
}

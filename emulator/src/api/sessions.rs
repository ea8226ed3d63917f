//! GET /session (session-list), GET /session/{id} (describe-session), DELETE /session/{id} (session-stop).

use axum::{
    Json,
    body::Body,
    extract::{Path, RawQuery, State, rejection::PathRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use futures::StreamExt;
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
    let after = inject_faults(&state, Operation::SessionList, query.location.as_deref()).await?;
    // The `after` rules hold the listing's start: it is produced as it is read.
    let answer = Ok(stream_listing(state.clone(), query));
    after.answer(&state, answer).await
}

/// The listing's streamed answer.
fn stream_listing(state: SharedState, query: ListQuery) -> Response {
    // Streamed in pages, the lock released between them: a listing of a hundred thousand sessions
    // would otherwise hold every other request (POST /session included) for its whole
    // serialization, and sit in memory whole. A page is written only when the connection takes
    // it, so a client that reads slowly spreads the work instead of meeting it in one burst. Like
    // any unpaginated live listing it is not a snapshot: a session created or stopped meanwhile
    // may or may not be in it; one active throughout always is.
    let mut listing = Listing { state, query, first: true };
    let pages = futures::stream::unfold(Some(0), move |from| {
        // Produced here, not in the future: the registry lock is never held across an await.
        let page = from.map(|from| listing.page_from(from));
        async move { page }
    });
    let body = futures::stream::once(async { b"{\"sessions\":[".to_vec() })
        .chain(pages)
        .chain(futures::stream::once(async { b"]}".to_vec() }))
        .map(Ok::<_, std::convert::Infallible>);
    ([(axum::http::header::CONTENT_TYPE, "application/json")], Body::from_stream(body)).into_response()
}

/// A listing being streamed.
struct Listing {
    state: SharedState,
    query: ListQuery,
    /// No session written yet (the next one needs no comma before it).
    first: bool,
}

impl Listing {
    /// The matching sessions among up to [`LIST_PAGE`] looked at from registry index `from`, under
    /// one lock hold, and the index to go on from (`None`: that was the last page).
    fn page_from(&mut self, from: usize) -> (Vec<u8>, Option<usize>) {
        let mut page = Vec::new();
        let registry = self.state.sessions();
        let now = Instant::now();
        for (scanned, (idx, s)) in registry.active_from(from, self.query.first_filter()).enumerate() {
            if scanned == LIST_PAGE {
                return (page, Some(idx));
            }
            // A list entry is plain data: serializing it cannot fail.
            if self.query.matches(s, s.status(now))
                && let Ok(entry) = serde_json::to_vec(&ListEntry::new(s, now))
            {
                if !self.first {
                    page.push(b',');
                }
                self.first = false;
                page.extend_from_slice(&entry);
            }
        }
        (page, None)
    }
}

/// Sessions looked at per lock hold when listing. Every other request waits for the lock meanwhile:
/// with 2,048 a page held `POST /session` for milliseconds, so a bridge's reconciler listing showed
/// in the bench as the bridge's own latency, which Gameye (no such lock) would not add
/// (bench/RESULTS.md, session 9).
const LIST_PAGE: usize = 256;

/// Handler of GET /session/{id}.
pub async fn describe_session(
    State(state): State<SharedState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Some(Scope::SessionRead))?;
    let id = path_id(id)?;
    let after = inject_faults(
        &state,
        Operation::DescribeSession,
        location_of(&state, Operation::DescribeSession, &id).as_deref(),
    )
    .await?;
    let answer = {
        let registry = state.sessions();
        registry
            .get_active(&id)
            .map(|session| Json(Described::new(session, Instant::now())).into_response())
            .ok_or_else(|| session_not_found(&id))
    };
    after.answer(&state, answer).await
}

/// Handler of DELETE /session/{id}.
pub async fn session_stop(
    State(state): State<SharedState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Some(Scope::SessionStop))?;
    let id = path_id(id)?;
    let after = inject_faults(
        &state,
        Operation::SessionStop,
        location_of(&state, Operation::SessionStop, &id).as_deref(),
    )
    .await?;
    let stopped = state.sessions().stop(&id, Instant::now());
    let answer = match stopped {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(StopError::NotFound) => Err(session_not_found(&id)),
        Err(StopError::AlreadyStopped) => {
            Err(ApiError::conflict(format!("Session {id:?} has already been terminated.")))
        }
    };
    after.answer(&state, answer).await
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

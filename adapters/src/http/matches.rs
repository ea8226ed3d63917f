//! `POST /v1/matches`, `GET /v1/matches/{match_id}`: the generic HTTP door of the placement engine.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bridge::placement::{Accepted, Answer, PlaceError, PlacementService, Progress};
use bridge::ports::{Outcome, PlacementState, StoreError};
use bridge::{
    Assignment, Failure, FailureCode, FailureDetail, InvalidRequest, InvalidRequestKind, MatchIdConflict,
    ValidatedMatch,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio_util::task::TaskTracker;
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ErrorBody, FailureOrError};

/// The source name HTTP placements carry (it is part of the session id).
pub const SOURCE: &str = "http";

/// What the match handlers share.
#[derive(Clone)]
pub struct MatchesState {
    pub service: Arc<dyn PlacementService>,
    /// Sessions' seats: `/v1/sessions`, `/v1/backfill`.
    pub seats: Arc<dyn bridge::placement::SeatService>,
    /// Placements (those answered 202, and those a caller waits for) and announcements; awaited
    /// at shutdown.
    pub background: TaskTracker,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct PlaceQuery {
    /// `false`: answer 202 at once and place in the background; poll `GET /v1/matches/{match_id}`.
    #[serde(default = "default_wait")]
    wait: bool,
}

fn default_wait() -> bool {
    true
}

/// A placement's state, for polling.
#[derive(Debug, Serialize, ToSchema)]
pub struct MatchStatus {
    pub match_id: String,
    /// `pending`, `placed` or `failed`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignment: Option<Assignment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<FailureDetail>,
    #[serde(with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub accepted_at: Option<OffsetDateTime>,
}

/// Places a match: picks the lowest-latency location, starts one Gameye session, answers with the
/// connection details. Sending the same `match_id` again answers the same assignment.
#[utoipa::path(
    post, path = "/v1/matches", tag = "matches",
    params(PlaceQuery),
    request_body(content = bridge::MatchRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Placed", body = Assignment),
        (status = 202, description = "Accepted; still being placed (`wait=false`, or another instance is on it)", body = MatchStatus),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 402, description = "Gameye quota exceeded", body = Failure),
        (status = 404, description = "Gameye does not know the image, tag or location", body = Failure),
        (status = 409, description = "MATCH_ID_CONFLICT: the match_id was first requested with another match (other players, image, env, …; latencies and requested_at may differ); the message names what differs. Nothing changed", body = ErrorBody),
        (status = 413, description = "Body larger than http.body_limit", body = ErrorBody),
        (status = 422, description = "Invalid request, naming the field (an ErrorBody); or no location fits, or Gameye refused the session as invalid (a Failure)", body = FailureOrError),
        (status = 502, description = "Gameye refused the bridge's token or kept failing", body = Failure),
        (status = 503, description = "No capacity in any eligible location (a Failure), or the state store is down (an ErrorBody)", body = FailureOrError),
        (status = 504, description = "The placement deadline passed", body = Failure),
    ),
    security(("bearer" = []))
)]
pub async fn place_match(
    State(state): State<MatchesState>,
    Query(query): Query<PlaceQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = bridge::parse_match_request(&body).map_err(invalid_request)?;
    let match_id = request.match_id.clone();
    if query.wait {
        let answer = place_detached(&state.service, &state.background, SOURCE, request).await?;
        return Ok(answer_response(&match_id, answer, progress_response));
    }
    let accepted = accept_detached(&state.service, &state.background, SOURCE, request).await?;
    Ok(match accepted {
        None => pending_response(&match_id),
        Some(progress) => progress_response(&match_id, progress),
    })
}

/// A placement's state: `pending`, `placed` (with the assignment) or `failed` (with the error).
#[utoipa::path(
    get, path = "/v1/matches/{match_id}", tag = "matches",
    params(("match_id" = String, Path, description = "The matchmaker's match id")),
    responses(
        (status = 200, description = "Known match", body = MatchStatus),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown (or expired) match", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_match(
    State(state): State<MatchesState>,
    Path(match_id): Path<String>,
) -> Result<Json<MatchStatus>, ApiError> {
    let record = state
        .service
        .status(&match_id)
        .await
        .map_err(place_error)?
        .ok_or_else(|| ApiError::not_found(format!("no match `{match_id}`")))?;
    let (status, assignment, error) = match record.state {
        PlacementState::Pending { .. } => ("pending", None, None),
        PlacementState::Placed { assignment } => ("placed", Some(assignment), None),
        PlacementState::Failed { failure } => ("failed", None, Some(failure.error)),
    };
    Ok(Json(MatchStatus { match_id, status, assignment, error, accepted_at: Some(record.accepted_at) }))
}

/// Places the match in a task of `background` and waits for it there, so a caller that hangs up
/// drops only the wait: the placement is still recorded and announced. Run in the handler itself,
/// it was dropped with the request, and the record stayed pending until its lease ran out and
/// recovery placed it again (25 s late with the default deadline). The task also claims the match,
/// so no hang-up can leave a claim that nobody finishes.
pub(super) async fn place_detached(
    service: &Arc<dyn PlacementService>,
    background: &TaskTracker,
    source: &'static str,
    request: ValidatedMatch,
) -> Result<Answer, ApiError> {
    let (service, announcements) = (service.clone(), background.clone());
    run_detached(background, "placement", async move {
        let answer = service.place_answer(source, request).await.map_err(place_error)?;
        if let Progress::Done(outcome) = &answer.progress {
            announce_in_background(&service, &announcements, source, outcome);
        }
        Ok(answer)
    })
    .await
}

/// Claims the match and starts its placement in the background without waiting for it (`wait=false`):
/// `None` when this call placed it, else where a known match stands. The claim runs in a task of
/// its own, like `place_detached`'s: a caller hanging up while the claim is in flight must not
/// leave a claim that nobody places until its lease runs out.
pub(super) async fn accept_detached(
    service: &Arc<dyn PlacementService>,
    background: &TaskTracker,
    source: &'static str,
    request: ValidatedMatch,
) -> Result<Option<Progress>, ApiError> {
    let (service, tasks) = (service.clone(), background.clone());
    run_detached(background, "accepting a placement", async move {
        Ok(match service.accept(source, request).await.map_err(place_error)? {
            Accepted::Owned(job) => {
                tasks.spawn(service.clone().finish_and_announce(source.to_owned(), job));
                None
            }
            Accepted::Known(Progress::Done(outcome)) => {
                // A duplicate of a finished match re-publishes it (DESIGN §3.1), as with
                // `wait=true`, so a lost announcement is made good by sending again.
                announce_in_background(&service, &tasks, source, &outcome);
                Some(Progress::Done(outcome))
            }
            Accepted::Known(pending) => Some(pending),
        })
    })
    .await
}

/// Runs `work` in a task of `background` and waits for it, so a caller that hangs up (dropping
/// the handler) does not cancel it halfway. `what` names it in the error of a task that ended
/// without an answer.
pub(super) async fn run_detached<T: Send + 'static>(
    background: &TaskTracker,
    what: &'static str,
    work: impl Future<Output = Result<T, ApiError>> + Send + 'static,
) -> Result<T, ApiError> {
    match background.spawn(work).await {
        Ok(answer) => answer,
        // A panic (already reported by the panic hook), or the runtime shutting down.
        Err(error) => {
            tracing::error!(%error, what, "a task ended without an answer");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                format!("the {what} ended without an answer; see the bridge's log"),
            ))
        }
    }
}

/// The caller has its answer already; sinks (NATS subjects, webhooks, Nakama) hear of it off the
/// request path. Nothing is spawned when no sink wants `source`'s placements.
pub(super) fn announce_in_background(
    service: &Arc<dyn PlacementService>,
    background: &TaskTracker,
    source: &'static str,
    outcome: &Outcome,
) {
    if !service.announces(source) {
        return;
    }
    let (service, outcome) = (service.clone(), outcome.clone());
    background.spawn(async move {
        // Failures are logged by the engine; the caller was answered either way.
        let _ = service.announce(source, &outcome).await;
    });
}

/// The answer to a placement the caller waited for: a fresh Assignment's JSON as the engine
/// rendered it for the record (200), anything else as the door's `progress_response` writes it.
pub(super) fn answer_response(
    match_id: &str,
    answer: Answer,
    progress_response: fn(&str, Progress) -> Response,
) -> Response {
    match answer {
        Answer { progress: Progress::Done(Outcome::Placed(_)), outcome_json: Some(json) } => {
            let content_type = [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))];
            (StatusCode::OK, content_type, json).into_response()
        }
        Answer { progress, .. } => progress_response(match_id, progress),
    }
}

pub(super) fn progress_response(match_id: &str, progress: Progress) -> Response {
    match progress {
        Progress::Done(Outcome::Placed(assignment)) => (StatusCode::OK, Json(assignment)).into_response(),
        Progress::Done(Outcome::Failed(failure)) => failure_response(failure),
        Progress::Pending { .. } => pending_response(match_id),
    }
}

fn pending_response(match_id: &str) -> Response {
    let body = MatchStatus {
        match_id: match_id.to_owned(),
        status: "pending",
        assignment: None,
        error: None,
        accepted_at: None,
    };
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    let location = format!("/v1/matches/{}", percent_encode_segment(match_id));
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The failure JSON of DESIGN §2, with a status that says who can fix it.
pub fn failure_response(failure: Failure) -> Response {
    let status = failure_status(failure.error.code);
    let mut response = (status, Json(failure)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

pub fn failure_status(code: FailureCode) -> StatusCode {
    match code {
        FailureCode::NoCapacity => StatusCode::SERVICE_UNAVAILABLE,
        FailureCode::NoLocation | FailureCode::InvalidRequest => StatusCode::UNPROCESSABLE_ENTITY,
        FailureCode::QuotaExceeded => StatusCode::PAYMENT_REQUIRED,
        FailureCode::NotFound => StatusCode::NOT_FOUND,
        // Gameye refusing the bridge's own token is the operator's problem, not the caller's auth.
        FailureCode::Unauthorized | FailureCode::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
        FailureCode::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        FailureCode::MatchIdConflict => StatusCode::CONFLICT,
    }
}

pub fn invalid_request(invalid: InvalidRequest) -> ApiError {
    let status = match invalid.kind {
        InvalidRequestKind::Malformed => StatusCode::BAD_REQUEST,
        InvalidRequestKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
    };
    ApiError::new(status, "INVALID_REQUEST", invalid.to_string())
}

/// What a door answers when the engine did not take a match on: 409 for a match id first
/// requested with another match, else what [`store_unavailable`] says.
pub fn place_error(error: PlaceError) -> ApiError {
    match error {
        PlaceError::Store(error) => store_unavailable(error),
        PlaceError::MatchIdConflict(conflict) => match_id_conflict(&conflict),
    }
}

/// The error code of a match id first requested with another match.
pub const MATCH_ID_CONFLICT: &str = "MATCH_ID_CONFLICT";

/// 409 `MATCH_ID_CONFLICT`, naming what differs from the first request (never a value: `env`
/// may hold secrets). The engine has logged it.
pub fn match_id_conflict(conflict: &MatchIdConflict) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, MATCH_ID_CONFLICT, conflict.to_string())
}

pub fn store_unavailable(error: StoreError) -> ApiError {
    // A store error no retry fixes is not "unavailable, retry", which would have the caller retry
    // forever.
    let status =
        if error.transient { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::INTERNAL_SERVER_ERROR };
    let (code, message) = crate::store::store_error_answer(&error);
    ApiError::new(status, code, message)
}

fn percent_encode_segment(segment: &str) -> String {
    let mut url = reqwest::Url::parse("http://x/").expect("static URL");
    url.path_segments_mut().expect("http URL").push(segment);
    url.path()[1..].to_owned()
}

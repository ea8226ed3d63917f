//! `POST /v1/nakama/matched`, `POST /v1/nakama/events`: the Nakama door. Reading and checking what
//! Nakama sends lives in [`crate::nakama`]; this file is the HTTP around it, including the
//! authentication that accepts either the bearer token or a hook signature.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, FromRequest, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bridge::Assignment;
use bridge::placement::{PlacementService, Progress, SeatService, SeatServiceError};
use bridge::ports::Outcome;
use serde::{Deserialize, Serialize};
use tokio_util::task::TaskTracker;
use utoipa::{IntoParams, ToSchema};

use super::matches::{
    MATCH_ID_CONFLICT, accept_detached, answer_response, failure_response, invalid_request,
    match_id_conflict, place_detached, run_detached, store_unavailable,
};
use super::{ApiError, ApiTokens, ErrorBody, FailureOrError, auth};
use crate::nakama::{
    Claimed, EventsAccepted, HookRules, LeavePlan, NakamaEvent, NakamaMetrics, RecentMatchUsers, ReplayGuard,
    SIGNATURE_HEADER, SOURCE, SeatsReleased, SignatureVerifier, SignedRequest, TIMESTAMP_HEADER,
    parse_events, read_hook,
};

/// What the Nakama handlers share.
#[derive(Clone)]
pub struct NakamaDoor {
    pub service: Arc<dyn PlacementService>,
    /// Sessions' seats: leave events remove their users.
    pub seats: Arc<dyn SeatService>,
    /// Placements (`wait=false` ones, and those a hook waits for), announcements and events being
    /// applied; awaited at shutdown.
    pub background: TaskTracker,
    pub rules: Arc<HookRules>,
    /// Shared with the push sink, so a failure can be pushed to the users it concerns.
    pub users: RecentMatchUsers,
    pub metrics: NakamaMetrics,
    /// Signatures events were applied under, so a captured signed request is not applied twice.
    pub replays: ReplayGuard,
}

/// The bearer tokens, and the hook signature verifier when `nakama.hmac_secret` is set.
#[derive(Clone)]
pub struct NakamaAuth {
    pub tokens: ApiTokens,
    pub verifier: Option<SignatureVerifier>,
}

/// The Nakama routes, behind their own authentication (token or signature).
pub fn nakama_router(door: NakamaDoor, auth: NakamaAuth) -> Router {
    Router::new()
        .route("/v1/nakama/matched", post(matched))
        .route("/v1/nakama/events", post(events))
        .with_state(door)
        .layer(axum::middleware::from_fn_with_state(auth, require_token_or_signature))
}

/// Middleware: a request carrying a signature header is judged by its signature alone; any other
/// by the bearer token, exactly like the rest of `/v1`.
async fn require_token_or_signature(
    State(auth): State<NakamaAuth>,
    request: Request,
    next: Next,
) -> Response {
    if !request.headers().contains_key(SIGNATURE_HEADER) {
        return auth::require_token(State(auth.tokens), request, next).await;
    }
    let Some(verifier) = auth.verifier else {
        return unauthorized("hook signatures are not enabled here (nakama.hmac_secret is empty)");
    };
    let headers = request.headers();
    let header_text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (timestamp, signature) = (header_text(TIMESTAMP_HEADER), header_text(SIGNATURE_HEADER));
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return unauthorized("a signed request needs both x-bridge-timestamp and x-bridge-signature");
    };
    let (mut parts, body) = request.into_parts();
    // Read through axum's extractor so an oversized body is the usual 413.
    let body = match Bytes::from_request(Request::from_parts(parts.clone(), body), &()).await {
        Ok(body) => body,
        Err(rejection) => return rejection.into_response(),
    };
    let signed = match verifier.verify(&timestamp, &signature, &body, unix_now()) {
        Ok(signed) => signed,
        Err(error) => {
            tracing::warn!(%error, "refused a signed Nakama request");
            return unauthorized("the request signature is not valid");
        }
    };
    // For the events handler's replay guard (the hook is idempotent by match id without one).
    parts.extensions.insert(signed);
    next.run(Request::from_parts(parts, Body::from(body))).await
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn unauthorized(message: &str) -> Response {
    ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message).into_response()
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct WaitQuery {
    /// `false`: answer 202 with the match id at once; the outcome goes to Nakama's RPC (push path)
    /// and to `GET /v1/matches/{match_id}`.
    #[serde(default = "default_wait")]
    wait: bool,
}

fn default_wait() -> bool {
    true
}

/// A Nakama match accepted but not placed yet.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NakamaPending {
    pub match_id: String,
    /// Always `pending`.
    pub status: String,
}

/// One matchmaker entry as Nakama's Go runtime serializes it. The JS runtime's camelCase form
/// (`presence.userId`, `partyId`) and Lua's snake_case are accepted too.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
struct HookEntry {
    ticket: Option<String>,
    presence: HookPresence,
    /// String and numeric properties; numeric ones named by `nakama.latency_property_pattern` are latencies.
    properties: Option<BTreeMap<String, serde_json::Value>>,
    party_id: Option<String>,
    /// Unix nanoseconds; the earliest becomes the match's `requested_at`.
    create_time: Option<i64>,
}

#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
struct HookPresence {
    user_id: String,
    session_id: Option<String>,
    username: Option<String>,
    node: Option<String>,
}

/// The envelope form of a hook call. A bare JSON list of entries is accepted as well.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
struct HookEnvelope {
    entries: Vec<HookEntry>,
    /// Default: `nakama-` + a hash of the sorted ticket ids, so a retried call is idempotent.
    match_id: Option<String>,
    latencies: Option<Vec<HookLatency>>,
    max_players: Option<u32>,
    image: Option<String>,
    version: Option<String>,
    /// Container environment; may hold secrets, never logged.
    env: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
    locations: Option<Vec<String>>,
    ttl: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
struct HookLatency {
    user_id: String,
    region: String,
    latency_ms: f64,
}

/// Places the match a Nakama matchmaker-matched hook reports. Synchronous by default, because a
/// TS/Lua hook can only make a blocking `nk.httpRequest`: the answer is the assignment or the
/// failure. The outcome is also pushed to Nakama's RPC when `nakama.rpc_url` is set.
#[utoipa::path(
    post, path = "/v1/nakama/matched", tag = "nakama",
    params(WaitQuery),
    request_body(content = HookEnvelope, content_type = "application/json"),
    responses(
        (status = 200, description = "Placed", body = Assignment),
        (status = 202, description = "Accepted (`wait=false`), or still being placed elsewhere", body = NakamaPending),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "Neither a valid bearer token nor a valid signature", body = ErrorBody),
        (status = 402, description = "Gameye quota exceeded", body = bridge::Failure),
        (status = 409, description = "MATCH_ID_CONFLICT: the match id (the envelope's, or derived from the tickets) was first requested with another match; the message names what differs. Nothing changed", body = ErrorBody),
        (status = 413, description = "Body larger than http.body_limit", body = ErrorBody),
        (status = 422, description = "Malformed entries, naming the field (an ErrorBody); or no location fits (a Failure)", body = FailureOrError),
        (status = 502, description = "Gameye refused the bridge's token or kept failing", body = bridge::Failure),
        (status = 503, description = "No capacity (a Failure), or the state store is down (an ErrorBody)", body = FailureOrError),
        (status = 504, description = "The placement deadline passed", body = bridge::Failure),
    ),
    security(("bearer" = []), ("nakama_signature" = []))
)]
pub async fn matched(
    State(door): State<NakamaDoor>,
    Query(query): Query<WaitQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let hook = read_hook(&body).map_err(invalid_request)?;
    let users = hook.user_ids();
    let request = hook.into_match(&door.rules).map_err(invalid_request)?;
    let match_id = request.match_id.clone();
    let remembered = door.users.remember(&match_id, users);
    let answered = place(&door, query.wait, &match_id, request).await;
    if remembered && answered.as_ref().is_err_and(|error| error.code == MATCH_ID_CONFLICT) {
        // Another match under a known id (a bug upstream: Nakama's ids are the module's or
        // derived from tickets): refused, so its users must not get the first match's pushes.
        door.users.forget(&match_id);
    }
    answered
}

async fn place(
    door: &NakamaDoor,
    wait: bool,
    match_id: &str,
    request: bridge::ValidatedMatch,
) -> Result<Response, ApiError> {
    if wait {
        // In a task: a hook that gives up (the example module's times out after 5 s) must not
        // cancel the placement nor its push.
        let answer = place_detached(&door.service, &door.background, SOURCE, request).await?;
        return Ok(answer_response(match_id, answer, progress_response));
    }
    Ok(match accept_detached(&door.service, &door.background, SOURCE, request).await? {
        None => pending_response(match_id),
        Some(progress) => progress_response(match_id, progress),
    })
}

fn progress_response(match_id: &str, progress: Progress) -> Response {
    match progress {
        Progress::Done(Outcome::Placed(assignment)) => (StatusCode::OK, Json(assignment)).into_response(),
        Progress::Done(Outcome::Failed(failure)) => failure_response(failure),
        Progress::Pending { .. } => pending_response(match_id),
    }
}

fn pending_response(match_id: &str) -> Response {
    let body = NakamaPending { match_id: match_id.to_owned(), status: "pending".to_owned() };
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    let mut location = reqwest::Url::parse("http://x/v1/matches/").expect("static URL");
    location.path_segments_mut().expect("http URL").pop_if_empty().push(match_id);
    if let Ok(value) = HeaderValue::from_str(location.path()) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Nakama events naming users. `session_end` and leave events (`match_leave`, `leave`) remove their
/// users from the sessions where they are joined or hold a reservation: the session of the event's
/// `match_id` (derived like a Nakama placement's), else every session holding them. Users holding no
/// seat, and unknown or ended sessions, change nothing (a repeated event is harmless). Other events
/// are recorded (log and `gameye_bridge_nakama_events_total`). A signed request is applied once:
/// sent again with the same signature it is refused (409 `REPLAYED`), unless applying it failed.
#[utoipa::path(
    post, path = "/v1/nakama/events", tag = "nakama",
    request_body(content = crate::nakama::EventsBody, content_type = "application/json",
        description = "`{\"events\": [{\"name\": \"session_end\", \"user_id\": \"…\", \"match_id\"?: \"…\"}]}`, a list of events, or one event"),
    responses(
        (status = 202, description = "Applied: the seats released per session", body = EventsAccepted),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "Neither a valid bearer token nor a valid signature", body = ErrorBody),
        (status = 409, description = "REPLAYED: a request with this signature was applied already; nothing changed. Sign again (a new timestamp) to send the events anew", body = ErrorBody),
        (status = 422, description = "An event without a name or users, or too many (naming it)", body = ErrorBody),
        (status = 500, description = "STORE_ERROR: the state store refused a command; nothing or part applied (a signed request may be sent again as it is)", body = ErrorBody),
        (status = 503, description = "The state store is unavailable; nothing or part applied, retry (a signed request as it is). IN_PROGRESS: another copy of this signed request is being applied right now; nothing changed, send it again in a few seconds", body = ErrorBody),
    ),
    security(("bearer" = []), ("nakama_signature" = []))
)]
pub async fn events(
    State(door): State<NakamaDoor>,
    signed: Option<Extension<SignedRequest>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let events = parse_events(&body).map_err(invalid_request)?;
    let signed = signed.map(|Extension(signed)| signed);
    // In a task, like placements: a handler dropped by a hang-up between claiming a signature and
    // releasing it after a failure would leave it claimed, and the sender's retry refused.
    let background = door.background.clone();
    run_detached(&background, "events", apply_once(door, events, signed)).await
}

/// Applies the events; a signed request only if its signature was not used already, and with the
/// signature forgotten again when applying fails, so the sender's retry is applied.
async fn apply_once(
    door: NakamaDoor,
    events: Vec<NakamaEvent>,
    signed: Option<SignedRequest>,
) -> Result<Response, ApiError> {
    // Bearer-token requests carry nothing that identifies a copy; they are not guarded.
    let Some(signed) = signed else {
        return apply_events(&door, &events).await;
    };
    match door.replays.claim(&signed, unix_now()).await.map_err(store_unavailable)? {
        Claimed::First => {}
        Claimed::InFlight => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "IN_PROGRESS",
                "a request with this signature is being applied right now; nothing changed. Send it \
                 again in a few seconds: it is then applied if the first attempt failed, or refused as \
                 a replay if it succeeded",
            ));
        }
        Claimed::Replay => {
            door.metrics.replay();
            tracing::warn!(events = events.len(), "refused a replayed signed Nakama events request");
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "REPLAYED",
                "a request with this signature was applied already; nothing changed. Sign the events \
                 again (a new timestamp) to send them anew",
            ));
        }
    }
    let applied = apply_events(&door, &events).await;
    if applied.is_ok() {
        door.replays.applied(&signed).await;
    } else {
        door.replays.release(&signed).await;
    }
    applied
}

async fn apply_events(door: &NakamaDoor, events: &[NakamaEvent]) -> Result<Response, ApiError> {
    let mut users = 0;
    for event in events {
        door.metrics.event(event);
        users += event.users().count();
        tracing::info!(
            event = %event.name,
            kind = event.kind(),
            users = event.users().count(),
            match_id = event.match_id().unwrap_or(""),
            "Nakama event"
        );
    }
    let mut plan = LeavePlan::of(events);
    let mut sessions = Vec::new();
    // Sessions named through match ids first; users whose match id names no session the bridge
    // knows (say the hook placed it under a ticket-derived id) are then looked for everywhere.
    let named = std::mem::take(&mut plan.by_session);
    let unknown = leave_sessions(door, named, &mut sessions).await?;
    plan.unlocated.extend(unknown);
    if !plan.unlocated.is_empty() {
        // One look-up for the whole request, however many events lack a match id: the sessions
        // where these users sit, not every session.
        let holding = door.seats.sessions_holding(&plan.unlocated).await.map_err(seat_store_failure)?;
        plan.locate(&holding);
        leave_sessions(door, std::mem::take(&mut plan.by_session), &mut sessions).await?;
    }
    sessions.sort_by_key(|s| s.session_id);
    let accepted = EventsAccepted { accepted: events.len(), users, applied: true, sessions };
    Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
}

/// Removes the users from each session; answers the users of sessions the bridge does not know.
async fn leave_sessions(
    door: &NakamaDoor,
    by_session: std::collections::BTreeMap<uuid::Uuid, std::collections::BTreeSet<String>>,
    released: &mut Vec<SeatsReleased>,
) -> Result<std::collections::BTreeSet<String>, ApiError> {
    let mut unknown = std::collections::BTreeSet::new();
    for (session_id, leaving) in by_session {
        let leaving: Vec<String> = leaving.into_iter().collect();
        match door.seats.leave(session_id, &leaving, None).await.map_err(seat_store_failure)? {
            Ok(change) if !change.outcome.left.is_empty() || !change.outcome.released.is_empty() => {
                let left: Vec<String> = change.outcome.left.into_iter().collect();
                let released_seats: Vec<String> = change.outcome.released.into_iter().collect();
                tracing::info!(%session_id, ?left, released = ?released_seats, "Nakama event: players removed from the session");
                released.push(SeatsReleased { session_id, left, released: released_seats });
            }
            Ok(_) => {}
            Err(bridge::seats::SeatError::NotFound) => unknown.extend(leaving),
            // Ended, or whatever else refuses a leave: nothing to take away there.
            Err(refused) => tracing::debug!(%session_id, %refused, "Nakama event: nothing to leave"),
        }
    }
    Ok(unknown)
}

fn seat_store_failure(error: SeatServiceError) -> ApiError {
    match error {
        SeatServiceError::Store(error) => store_unavailable(error),
        // Leaving and listing place nothing; should that change, the answer is the HTTP door's.
        SeatServiceError::MatchIdConflict(conflict) => match_id_conflict(&conflict),
        // Leaving and listing do not wait for Gameye; should that change, say so plainly.
        SeatServiceError::Gameye(error) => {
            tracing::warn!(%error, "Gameye call failed");
            ApiError::new(StatusCode::BAD_GATEWAY, "UPSTREAM_UNAVAILABLE", format!("Gameye: {error}"))
        }
    }
}

//! `/v1/sessions` and `/v1/backfill`: placed sessions' players, reserved and open seats (DESIGN §4).
//!
//! Redis is the source of truth and changes at once; Gameye's player list follows through the
//! player-sync outbox (`bridge::placement` `player_sync`).

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bridge::Port;
use bridge::placement::{SeatServiceError, SessionFilter, SessionMetadata};
use bridge::seats::{BackfillChoice, SeatError, SessionSeats};
// The bodies are the core's, shared with the NATS door (and named so in the OpenAPI document).
use bridge::seats::{BackfillBody, BackfillResult, PlayersBody};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::matches::{
    MatchesState, answer_response, invalid_request, match_id_conflict, place_detached, progress_response,
    store_unavailable,
};
use super::{ApiError, ErrorBody, FailureOrError};

/// A reservation: seats held for players who have not joined yet.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReservationView {
    pub reservation_id: Uuid,
    pub players: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// A placed session and its seats.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub session_id: Uuid,
    /// `created` (placed at Gameye) or `running`.
    pub status: String,
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub location: String,
    pub host: String,
    pub ports: Vec<Port>,
    /// The match the session was placed for.
    pub match_id: String,
    pub labels: BTreeMap<String, String>,
    pub capacity: u32,
    /// Players who joined.
    pub players: Vec<String>,
    /// Live reservations.
    pub reservations: Vec<ReservationView>,
    /// capacity − players − reserved seats.
    pub open_seats: u32,
    #[serde(with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub placed_at: Option<OffsetDateTime>,
}

impl SessionView {
    fn new(seats: &SessionSeats, now: OffsetDateTime) -> Self {
        let metadata = SessionMetadata::of(seats);
        let seats_now = seats.at(now);
        Self {
            session_id: seats.session_id,
            status: seats.status.as_str().to_owned(),
            image: seats.info.image.clone(),
            version: seats.info.version.clone(),
            location: seats.info.location.clone(),
            host: metadata.as_ref().map(|m| m.host.clone()).unwrap_or_default(),
            ports: metadata.as_ref().map(|m| m.ports.clone()).unwrap_or_default(),
            match_id: metadata.as_ref().map(|m| m.match_id.clone()).unwrap_or_default(),
            labels: seats.info.labels.clone(),
            capacity: seats.capacity,
            players: seats.joined.iter().cloned().collect(),
            reservations: seats_now
                .reservations
                .iter()
                .map(|(id, r)| ReservationView {
                    reservation_id: *id,
                    players: r.players.iter().cloned().collect(),
                    expires_at: r.expires_at,
                })
                .collect(),
            open_seats: seats.open_seats(now),
            placed_at: metadata.map(|m| m.placed_at),
        }
    }
}

/// One page of `GET /v1/sessions`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    /// In session id order, at most `limit` of them.
    pub sessions: Vec<SessionView>,
    /// More sessions matched: pass this (the last listed session's id) as `after` for the next
    /// page. Absent (never `null`) on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next: Option<Uuid>,
}

/// Sessions in one answer when the query names no `limit`.
const DEFAULT_LIMIT: usize = 100;
/// The most sessions one answer may hold.
const MAX_LIMIT: usize = 1000;

/// Which sessions of those matching a `GET /v1/sessions` filter one answer holds.
#[derive(Debug)]
struct Page {
    limit: usize,
    after: Option<Uuid>,
}

/// Query of `GET /v1/sessions` (documentation; read by `parse_query`, which allows repeated labels).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(dead_code, reason = "documents the query; parse_query reads it")]
pub struct ListQuery {
    /// Only sessions of this image.
    pub image: Option<String>,
    /// Only sessions in this location.
    pub location: Option<String>,
    /// `key=value`; repeat for several labels (all must match).
    pub label: Option<String>,
    /// `true`: only sessions with an open seat; `false`: only full ones.
    pub has_open_seats: Option<bool>,
    /// Most sessions in this answer.
    // DEFAULT_LIMIT and MAX_LIMIT (utoipa wants literals; the OpenAPI test pins them).
    #[param(minimum = 1, maximum = 1000, default = 100)]
    pub limit: Option<u32>,
    /// The previous page's `next`: only sessions whose id sorts after this one.
    pub after: Option<Uuid>,
}

/// What a join did.
#[derive(Debug, Serialize, ToSchema)]
pub struct JoinResult {
    pub session_id: Uuid,
    /// Players who joined now (reserved or not).
    pub joined: Vec<String>,
    /// Those of `joined` who used their reserved seat.
    pub from_reservations: Vec<String>,
    /// Players who had joined before: nothing changed for them.
    pub already_joined: Vec<String>,
    pub session: SessionView,
}

/// What a leave did.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeaveResult {
    pub session_id: Uuid,
    /// Joined players who left.
    pub left: Vec<String>,
    /// Players whose reserved seat was released.
    pub released: Vec<String>,
    pub session: SessionView,
}

/// What ending a session did.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndResult {
    pub session_id: Uuid,
    pub status: &'static str,
    /// `stopped`, or `already_gone` when Gameye had stopped it before (404/409).
    pub gameye: &'static str,
    pub released_players: Vec<String>,
    pub released_reservations: Vec<Uuid>,
}

/// Sessions the bridge placed that have not ended, a page at a time: follow `next` (as `after`)
/// until it is absent.
#[utoipa::path(
    get, path = "/v1/sessions", tag = "sessions",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of sessions, in session id order", body = SessionList),
        (status = 400, description = "Bad filter, `limit` or `after`", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 503, description = "State store unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_sessions(
    State(state): State<MatchesState>,
    RawQuery(query): RawQuery,
) -> Result<Json<SessionList>, ApiError> {
    let (filter, page) = parse_query(query.as_deref().unwrap_or_default())?;
    let listed =
        state.seats.list_sessions_page(&filter, page.after, page.limit).await.map_err(seat_failure)?;
    let now = state.seats.now();
    Ok(Json(SessionList {
        sessions: listed.sessions.iter().map(|s| SessionView::new(s, now)).collect(),
        next: listed.next,
    }))
}

fn parse_query(query: &str) -> Result<(SessionFilter, Page), ApiError> {
    let mut filter = SessionFilter::default();
    let mut page = Page { limit: DEFAULT_LIMIT, after: None };
    let url = reqwest::Url::parse(&format!("http://x/?{query}")).map_err(|e| bad_query(&e.to_string()))?;
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "image" => filter.image = Some(value.into_owned()),
            "location" => filter.location = Some(value.into_owned()),
            "label" => {
                let (k, v) = value.split_once('=').ok_or_else(|| bad_query("label: must be key=value"))?;
                filter.labels.insert(k.to_owned(), v.to_owned());
            }
            "has_open_seats" => {
                filter.has_open_seats =
                    Some(value.parse().map_err(|_| bad_query("has_open_seats: must be true or false"))?);
            }
            "limit" => {
                page.limit =
                    value.parse().ok().filter(|limit| (1..=MAX_LIMIT).contains(limit)).ok_or_else(|| {
                        bad_query(&format!("limit: must be an integer from 1 to {MAX_LIMIT}"))
                    })?;
            }
            "after" => {
                page.after = Some(
                    Uuid::parse_str(&value)
                        .map_err(|_| bad_query("after: must be a session id (a UUID), as in `next`"))?,
                );
            }
            other => return Err(bad_query(&format!("unknown filter `{other}`"))),
        }
    }
    Ok((filter, page))
}

/// A session's players, reservations and open seats.
#[utoipa::path(
    get, path = "/v1/sessions/{session_id}", tag = "sessions",
    params(("session_id" = Uuid, Path, description = "The Gameye session id")),
    responses(
        (status = 200, description = "The session", body = SessionView),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown or ended session", body = ErrorBody),
        (status = 503, description = "State store unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_session(
    State(state): State<MatchesState>,
    Path(session_id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    let id = session_uuid(&session_id)?;
    let session = state
        .seats
        .get_session(id)
        .await
        .map_err(seat_failure)?
        .ok_or_else(|| unknown_session(&session_id))?;
    Ok(Json(SessionView::new(&session, state.seats.now())))
}

/// Players join: a reserved player uses their seat, the others need an open one. Idempotent.
/// Gameye's player list follows through the player-sync outbox.
#[utoipa::path(
    post, path = "/v1/sessions/{session_id}/players", tag = "sessions",
    params(("session_id" = Uuid, Path, description = "The Gameye session id")),
    request_body(content = PlayersBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Joined", body = JoinResult),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown or ended session", body = ErrorBody),
        (status = 409, description = "SESSION_FULL: not enough open seats; nobody joined", body = ErrorBody),
        (status = 422, description = "Invalid player list (naming the field)", body = ErrorBody),
        (status = 503, description = "State store unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn join_players(
    State(state): State<MatchesState>,
    Path(session_id): Path<String>,
    body: Bytes,
) -> Result<Json<JoinResult>, ApiError> {
    let id = session_uuid(&session_id)?;
    let players = bridge::seats::parse_players_body(&body).map_err(invalid_request)?;
    let change = state
        .seats
        // HTTP requests carry no order: applied as they come (see `bridge::seats`, "Ordering").
        .join(id, &players, None)
        .await
        .map_err(seat_failure)?
        .map_err(|refused| seat_refusal(&session_id, refused))?;
    let now = state.seats.now();
    Ok(Json(JoinResult {
        session_id: id,
        joined: change.outcome.joined.into_iter().collect(),
        from_reservations: change.outcome.from_reservations.into_iter().collect(),
        already_joined: change.outcome.already_joined.into_iter().collect(),
        session: SessionView::new(&change.session, now),
    }))
}

/// Players leave (or give up their reserved seats). Idempotent. Gameye's player list follows
/// through the player-sync outbox.
#[utoipa::path(
    delete, path = "/v1/sessions/{session_id}/players", tag = "sessions",
    params(("session_id" = Uuid, Path, description = "The Gameye session id")),
    request_body(content = PlayersBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Left", body = LeaveResult),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown or ended session", body = ErrorBody),
        (status = 422, description = "Invalid player list (naming the field)", body = ErrorBody),
        (status = 503, description = "State store unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn leave_players(
    State(state): State<MatchesState>,
    Path(session_id): Path<String>,
    body: Bytes,
) -> Result<Json<LeaveResult>, ApiError> {
    let id = session_uuid(&session_id)?;
    let players = bridge::seats::parse_players_body(&body).map_err(invalid_request)?;
    let change = state
        .seats
        .leave(id, &players, None)
        .await
        .map_err(seat_failure)?
        .map_err(|refused| seat_refusal(&session_id, refused))?;
    let now = state.seats.now();
    Ok(Json(LeaveResult {
        session_id: id,
        left: change.outcome.left.into_iter().collect(),
        released: change.outcome.released.into_iter().collect(),
        session: SessionView::new(&change.session, now),
    }))
}

/// Stops the session at Gameye (already gone counts as stopped), then releases its seats; it is no
/// longer listed afterwards.
#[utoipa::path(
    delete, path = "/v1/sessions/{session_id}", tag = "sessions",
    params(("session_id" = Uuid, Path, description = "The Gameye session id")),
    responses(
        (status = 200, description = "Ended", body = EndResult),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown or already ended session", body = ErrorBody),
        (status = 502, description = "Gameye failed to stop it; nothing changed, retry", body = ErrorBody),
        (status = 503, description = "State store unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn end_session(
    State(state): State<MatchesState>,
    Path(session_id): Path<String>,
) -> Result<Json<EndResult>, ApiError> {
    let id = session_uuid(&session_id)?;
    let ended = state
        .seats
        .end(id)
        .await
        .map_err(seat_failure)?
        .map_err(|refused| seat_refusal(&session_id, refused))?;
    Ok(Json(EndResult {
        session_id: id,
        status: "ended",
        gameye: if ended.stopped_now { "stopped" } else { "already_gone" },
        released_players: ended.released_players.into_iter().collect(),
        released_reservations: ended.released_reservations.into_iter().collect(),
    }))
}

/// Reserves seats for all requesting players in one eligible session: same image (version,
/// labels, locations when given), every player under the latency cap of a new match, then lowest
/// worst-player latency, then fullest. The reservation lasts `seats.reservation_ttl`; a join by a
/// reserved player uses it.
#[utoipa::path(
    post, path = "/v1/backfill", tag = "sessions",
    request_body(content = BackfillBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Seats reserved (or, with create_if_none, a new match placed: the /v1/matches answer)", body = BackfillResult),
        (status = 202, description = "create_if_none: the new match is still being placed", body = super::matches::MatchStatus),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 402, description = "create_if_none: Gameye quota exceeded", body = bridge::Failure),
        (status = 404, description = "NO_SEATS: no eligible session has enough open seats (an ErrorBody); with create_if_none, Gameye does not know the image, tag or location (a Failure)", body = FailureOrError),
        (status = 409, description = "MATCH_ID_CONFLICT: create_if_none with a request_id whose match (backfill-<request_id>) was first requested with another body; nothing changed", body = ErrorBody),
        (status = 422, description = "Invalid request (naming the field); with create_if_none, no location fits (a Failure)", body = FailureOrError),
        (status = 502, description = "create_if_none: Gameye refused the bridge's token or kept failing", body = bridge::Failure),
        (status = 503, description = "State store unavailable; with create_if_none, no capacity in any eligible location (a Failure)", body = FailureOrError),
        (status = 504, description = "create_if_none: not placed within placement.deadline", body = bridge::Failure),
    ),
    security(("bearer" = []))
)]
pub async fn backfill(State(state): State<MatchesState>, body: Bytes) -> Result<Response, ApiError> {
    let request = bridge::seats::parse_backfill_request(&body).map_err(invalid_request)?;
    let choice = bridge::seats::reserve_or_new_match(state.seats.as_ref(), &request, Uuid::new_v4())
        .await
        .map_err(seat_failure)?;
    match choice {
        BackfillChoice::Reserved(result) => Ok((StatusCode::OK, Json(result)).into_response()),
        BackfillChoice::NewMatch(new_match) => {
            // Placed (and announced) like `POST /v1/matches`: in a task a hang-up cannot cancel.
            let match_id = new_match.match_id.clone();
            let answer =
                place_detached(&state.service, &state.background, super::matches::SOURCE, new_match).await?;
            Ok(answer_response(&match_id, answer, progress_response))
        }
        BackfillChoice::NoSeats => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NO_SEATS",
            "no eligible session has open seats for every requesting player",
        )),
    }
}

fn session_uuid(session_id: &str) -> Result<Uuid, ApiError> {
    // Not a session id the bridge could have made: unknown, like any other.
    Uuid::parse_str(session_id).map_err(|_| unknown_session(session_id))
}

fn unknown_session(session_id: &str) -> ApiError {
    ApiError::not_found(format!("no live session `{session_id}`"))
}

fn seat_refusal(session_id: &str, refused: SeatError) -> ApiError {
    match refused {
        SeatError::NotFound | SeatError::Ended => unknown_session(session_id),
        SeatError::SessionFull { .. } => {
            ApiError::new(StatusCode::CONFLICT, "SESSION_FULL", refused.to_string())
        }
        SeatError::NoSeats { .. } => ApiError::new(StatusCode::NOT_FOUND, "NO_SEATS", refused.to_string()),
        SeatError::AlreadyExists | SeatError::AlreadyJoined { .. } => {
            ApiError::new(StatusCode::CONFLICT, "CONFLICT", refused.to_string())
        }
        SeatError::NoPlayers => invalid("players", "must name at least one player"),
    }
}

fn seat_failure(error: SeatServiceError) -> ApiError {
    match error {
        SeatServiceError::Store(error) => store_unavailable(error),
        SeatServiceError::MatchIdConflict(conflict) => match_id_conflict(&conflict),
        SeatServiceError::Gameye(error) => {
            tracing::warn!(%error, "Gameye call failed");
            ApiError::new(StatusCode::BAD_GATEWAY, "UPSTREAM_UNAVAILABLE", format!("Gameye: {error}"))
        }
    }
}

fn bad_query(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message.to_owned())
}

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST", format!("{field}: {message}"))
}

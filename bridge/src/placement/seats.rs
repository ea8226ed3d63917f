//! The engine's side of seats (DESIGN §4): a placed session's seat record, and the object-safe
//! [`SeatService`] the doors use to list sessions, join, leave, end and backfill.
//!
//! Joins and leaves change the seat record at once; Gameye's player list follows through the
//! player-sync outbox (see `player_sync`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::engine::{Engine, PlaceError};
use super::service::BoxFuture;
use crate::ports::{
    Clock, Ending, SeatChange, SessionApi, SessionApiError, SessionsPage, StateStore, StoreError,
};
use crate::seats::{
    BackfillCandidate, BackfillPlayer, BackfillQuery, EndReason, Joined, JsonText, Left, NewSession,
    Reserved, SeatError, SeatResult, SessionInfo, SessionSeats, SessionStatus, choose_backfill,
};
use crate::{Assignment, MatchIdConflict, MatchRequest, Port};

/// What the seat record's opaque `metadata` holds: what a backfill answer and `GET /v1/sessions`
/// need besides the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionMetadata {
    pub match_id: String,
    pub host: String,
    #[serde(default)]
    pub ports: Vec<Port>,
    #[serde(with = "time::serde::rfc3339")]
    pub placed_at: OffsetDateTime,
}

/// [`SessionMetadata`] as a placement writes it, borrowed from the assignment.
#[derive(Serialize)]
struct NewMetadata<'a> {
    match_id: &'a str,
    host: &'a str,
    ports: &'a [Port],
    #[serde(with = "time::serde::rfc3339")]
    placed_at: OffsetDateTime,
}

impl SessionMetadata {
    /// The metadata of `seats`, when it holds any (records written by this engine always do).
    pub fn of(seats: &SessionSeats) -> Option<Self> {
        seats.info.metadata.decode()
    }
}

/// Which sessions `GET /v1/sessions` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFilter {
    pub image: Option<String>,
    pub location: Option<String>,
    /// Every one of these labels, with these values.
    pub labels: BTreeMap<String, String>,
    /// `Some(true)`: only sessions with an open seat; `Some(false)`: only full ones.
    pub has_open_seats: Option<bool>,
}

/// A backfill request, checked by the door (non-empty image, at least one player, unique ids).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackfillRequest {
    pub image: String,
    pub version: Option<String>,
    pub players: Vec<BackfillPlayer>,
    pub locations: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
}

/// Seats reserved by a backfill: where to connect, and until when the seats are held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillAnswer {
    /// Assignment-shaped: the session's match id, the requesting players and their latencies.
    pub assignment: Assignment,
    pub reserved: Reserved,
}

/// What a join did, with the session after it.
pub type JoinAnswer = SeatChange<Joined>;
/// What a leave did, with the session after it.
pub type LeaveAnswer = SeatChange<Left>;

/// What `DELETE /v1/sessions/{id}` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedSession {
    /// `false`: Gameye had already stopped it (404/409).
    pub stopped_now: bool,
    pub released_players: BTreeSet<String>,
    pub released_reservations: BTreeSet<Uuid>,
}

/// Why a seat operation could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeatServiceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Gameye failed a call the operation depends on (stopping a session).
    #[error("Gameye: {0}")]
    Gameye(SessionApiError),
    /// A backfill's new match (`create_if_none` with a `request_id`) reuses the match id of an
    /// earlier, different one: refused, nothing changed.
    #[error(transparent)]
    MatchIdConflict(#[from] MatchIdConflict),
}

impl From<PlaceError> for SeatServiceError {
    fn from(error: PlaceError) -> Self {
        match error {
            PlaceError::Store(error) => Self::Store(error),
            PlaceError::MatchIdConflict(conflict) => Self::MatchIdConflict(conflict),
        }
    }
}

/// What the doors may ask about sessions and seats. Object-safe, like
/// [`super::PlacementService`].
pub trait SeatService: Send + Sync + 'static {
    /// The engine's clock (open seats are counted at a time).
    fn now(&self) -> OffsetDateTime;

    /// Sessions not ended, matching `filter`, in session id order.
    fn list_sessions<'a>(
        &'a self,
        filter: &'a SessionFilter,
    ) -> BoxFuture<'a, Result<Vec<SessionSeats>, SeatServiceError>>;

    /// [`SeatService::list_sessions`] a page at a time: at most `limit` (at least one) after
    /// `after`. `next`, where the following page starts, only when more sessions match.
    fn list_sessions_page<'a>(
        &'a self,
        filter: &'a SessionFilter,
        after: Option<Uuid>,
        limit: usize,
    ) -> BoxFuture<'a, Result<SessionsPage, SeatServiceError>>;

    /// Sessions not ended in which any of `players` is joined or holds a reservation, in session
    /// id order (see [`crate::ports::SeatStore::sessions_holding`]).
    fn sessions_holding<'a>(
        &'a self,
        players: &'a BTreeSet<String>,
    ) -> BoxFuture<'a, Result<Vec<SessionSeats>, SeatServiceError>>;

    /// The session, unless unknown or ended.
    fn get_session(&self, session_id: Uuid) -> BoxFuture<'_, Result<Option<SessionSeats>, SeatServiceError>>;

    /// Players join (Redis at once; Gameye through the player-sync outbox). `order`: the change's
    /// JetStream stream sequence (NATS), so that a change older than one already applied to a
    /// player is skipped for them (reported as `duplicate`/`stale`); `None` (HTTP, Nakama): always
    /// applied (see `crate::seats`, "Ordering").
    fn join<'a>(
        &'a self,
        session_id: Uuid,
        players: &'a [String],
        order: Option<u64>,
    ) -> BoxFuture<'a, Result<SeatResult<JoinAnswer>, SeatServiceError>>;

    /// Players leave or give up their reserved seats (Redis at once; Gameye through the outbox);
    /// `order` as for [`SeatService::join`].
    fn leave<'a>(
        &'a self,
        session_id: Uuid,
        players: &'a [String],
        order: Option<u64>,
    ) -> BoxFuture<'a, Result<SeatResult<LeaveAnswer>, SeatServiceError>>;

    /// Stops the session at Gameye, then ends its seats. `Ok(Err(NotFound | Ended))` when the
    /// bridge does not know it as a live session (Gameye is not called then).
    fn end(&self, session_id: Uuid) -> BoxFuture<'_, Result<SeatResult<EndedSession>, SeatServiceError>>;

    /// Reserves seats for all requesting players in the best eligible session; `None`: none fits.
    fn backfill<'a>(
        &'a self,
        request: &'a BackfillRequest,
    ) -> BoxFuture<'a, Result<Option<BackfillAnswer>, SeatServiceError>>;
}

impl<A, S, C> Engine<A, S, C>
where
    A: SessionApi,
    S: StateStore,
    C: Clock,
{
    /// Records a placed session's seats: capacity from the request (else `[seats]`), the match's
    /// own players holding one reservation. Never fails the placement: a store failure is logged
    /// and counted (the reconciler adopts sessions whose record is missing). A record that exists
    /// already (or ended) is left alone.
    pub(super) async fn record_seats(&self, request: &MatchRequest, assignment: &Assignment) {
        let (new, keep_for) = self.new_session(request, assignment);
        let created = self.store.create_session(&new, keep_for).await;
        self.seats_recorded(assignment, created);
    }

    /// The seat record of a placed session, and how long it lives after its last change.
    pub(super) fn new_session(
        &self,
        request: &MatchRequest,
        assignment: &Assignment,
    ) -> (NewSession, Duration) {
        let seats = &self.settings.seats;
        let metadata = NewMetadata {
            match_id: &assignment.match_id,
            host: &assignment.host,
            ports: &assignment.ports,
            placed_at: assignment.placed_at,
        };
        let ttl = self.session_ttl(request);
        let new = NewSession {
            session_id: assignment.session_id,
            capacity: seats.match_capacity(&assignment.image, request),
            status: SessionStatus::Created,
            info: SessionInfo {
                image: assignment.image.clone(),
                version: request.version.clone().or_else(|| self.settings.default_version.clone()),
                location: assignment.location.clone(),
                labels: request.labels.clone(),
                metadata: JsonText::of(&metadata).unwrap_or_default(),
            },
            players: assignment.players.clone(),
            joined: Vec::new(),
            reservation_ttl: seats.match_reservation_ttl,
            now: self.clock.now(),
        };
        // The record outlives the Gameye session's own lifetime a little; every change refreshes it.
        (new, ttl + Duration::from_secs(600))
    }

    /// What the seat record's creation answered: logged and counted when it failed.
    pub(super) fn seats_recorded(
        &self,
        assignment: &Assignment,
        created: Result<SeatResult<SessionSeats>, StoreError>,
    ) {
        match created {
            Ok(Ok(_)) => self.backfill_cache.forget(&assignment.image),
            Ok(Err(SeatError::AlreadyExists | SeatError::Ended)) => {}
            Ok(Err(refused)) => {
                tracing::warn!(match_id = %assignment.match_id, session_id = %assignment.session_id, %refused, "session seats refused");
                self.seat_write_failed();
            }
            Err(error) => {
                tracing::warn!(match_id = %assignment.match_id, session_id = %assignment.session_id, %error, "cannot record the session's seats; the reconciler adopts it");
                self.seat_write_failed();
            }
        }
    }

    /// The match was placed on a session that already had a seat record: the reconciler listed the
    /// session while its create's answer was on the way (or lost, and a later attempt found the
    /// session with 409) and adopted it, without the match's players. They get the seats the
    /// placement would have reserved them, or backfill could fill the session and turn their
    /// joins away. Players already joined or holding a seat there (the record was this match's
    /// own, written by another attempt) are left as they are.
    pub(super) async fn seat_in_existing_record(&self, assignment: &Assignment) {
        let now = self.clock.now();
        let seats = match self.store.get_session(assignment.session_id, now).await {
            Ok(Some(seats)) => seats,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(match_id = %assignment.match_id, session_id = %assignment.session_id, %error, "cannot read the session's seats to reserve the match's players");
                self.seat_write_failed();
                return;
            }
        };
        let unseated: Vec<String> =
            assignment.players.iter().filter(|player| !seats.holds(player)).cloned().collect();
        if unseated.is_empty() || seats.status == SessionStatus::Ended {
            return;
        }
        let ttl = self.settings.seats.match_reservation_ttl;
        let error = match self.store.reserve_seats(assignment.session_id, &unseated, ttl, now).await {
            Ok(Ok(_)) => {
                tracing::info!(match_id = %assignment.match_id, session_id = %assignment.session_id, players = unseated.len(), "the match's players reserved in the session's adopted record");
                self.backfill_cache.forget(&assignment.image);
                return;
            }
            Ok(Err(refused)) => refused.to_string(),
            Err(error) => error.to_string(),
        };
        tracing::warn!(match_id = %assignment.match_id, session_id = %assignment.session_id, %error, "cannot reserve the match's players in the session's existing record");
        self.seat_write_failed();
    }

    /// [`Engine::record_seats`] for a duplicate of a placed match, unless the session's Gameye TTL
    /// has run out (then it cannot be running, and an ended record may have expired already: a late
    /// duplicate must not bring a dead session back as a backfill target).
    pub(super) async fn record_missing_seats(&self, request: &MatchRequest, assignment: &Assignment) {
        let ttl = self.session_ttl(request);
        let ends_by =
            time::Duration::try_from(ttl).ok().and_then(|ttl| assignment.placed_at.checked_add(ttl));
        if ends_by.is_none_or(|ends_by| self.clock.now() < ends_by) {
            self.record_seats(request, assignment).await;
        }
    }

    /// The image's sessions as backfill candidates, from the short cache when fresh.
    async fn backfill_candidates(
        &self,
        image: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<BackfillCandidate>, SeatServiceError> {
        use super::backfill_cache::Lookup;
        if let Lookup::Cached(candidates) =
            self.backfill_cache.lookup(image, self.settings.seats.backfill_cache, now)
        {
            return Ok(candidates);
        }
        let sessions = match self.store.list_sessions(Some(image), now).await {
            Ok(sessions) => sessions,
            Err(error) => {
                self.backfill_cache.forget(image);
                return Err(error.into());
            }
        };
        let candidates: Vec<BackfillCandidate> = sessions
            .iter()
            .map(|s| {
                let mut candidate = s.backfill_candidate(now);
                // Gameye accepted a created session: it takes players as soon as it runs.
                if candidate.status == SessionStatus::Created {
                    candidate.status = SessionStatus::Running;
                }
                candidate
            })
            .collect();
        self.backfill_cache.store(image, candidates.clone(), self.settings.seats.backfill_cache, now);
        Ok(candidates)
    }

    /// Keeps the backfill cache's view of a session this instance just changed.
    fn seats_changed(&self, session: &SessionSeats) {
        self.backfill_cache.update(&session.info.image, seats_now(session, self.clock.now()));
    }

    fn seat_write_failed(&self) {
        if let Some(observer) = &self.observer {
            observer.seat_write_failed();
        }
    }

    /// The latency cap a new match is held to (the policy's first cap); no caps: no limit.
    fn backfill_cap(&self) -> u32 {
        self.settings.policy.caps.iter().min_by_key(|cap| cap.after_s).map_or(u32::MAX, |cap| cap.max_ms)
    }

    async fn do_backfill(
        &self,
        request: &BackfillRequest,
    ) -> Result<Option<BackfillAnswer>, SeatServiceError> {
        let now = self.clock.now();
        let aliases = &self.settings.aliases;
        let players: Vec<BackfillPlayer> = request
            .players
            .iter()
            .map(|p| BackfillPlayer { id: p.id.clone(), latencies: aliases.map_latencies(&p.latencies) })
            .collect();
        let locations = request.locations.as_deref().map(|l| aliases.map_locations(l));
        let candidates = self.backfill_candidates(&request.image, now).await?;
        let query = BackfillQuery {
            image: &request.image,
            version: request.version.as_deref(),
            labels: &request.labels,
            locations: locations.as_deref(),
            players: &players,
            latency_cap_ms: self.backfill_cap(),
        };
        let ranked = choose_backfill(&query, &candidates);
        if ranked.is_empty() {
            return Ok(None);
        }
        let ids: Vec<Uuid> = ranked.iter().map(|r| r.session_id).collect();
        let ids_of_players: Vec<String> = players.iter().map(|p| p.id.clone()).collect();
        let needed = u32::try_from(ids_of_players.iter().collect::<BTreeSet<_>>().len()).unwrap_or(u32::MAX);
        let reserved =
            self.store.reserve_best(&ids, &ids_of_players, self.settings.seats.reservation_ttl, now).await?;
        let winner = reserved.as_ref().map(|r| seats_now(&r.session, now));
        let refused = match &winner {
            Some(won) => &ids[..ids.iter().position(|c| *c == won.session_id).unwrap_or(0)],
            None => &ids[..],
        };
        self.backfill_cache.learn(&request.image, refused, needed, winner);
        let Some(reserved) = reserved else {
            return Ok(None);
        };
        let session = &reserved.session;
        let metadata = SessionMetadata::of(session);
        let assignment = Assignment {
            match_id: metadata.as_ref().map(|m| m.match_id.clone()).unwrap_or_default(),
            session_id: session.session_id,
            image: session.info.image.clone(),
            location: session.info.location.clone(),
            host: metadata.as_ref().map(|m| m.host.clone()).unwrap_or_default(),
            ports: metadata.as_ref().map(|m| m.ports.clone()).unwrap_or_default(),
            players: ids_of_players.clone(),
            latency_ms: players
                .iter()
                .filter_map(|p| p.latencies.get(&session.info.location).map(|ms| (p.id.clone(), *ms)))
                .collect(),
            placed_at: metadata.map_or(now, |m| m.placed_at),
            latency_cap_exceeded: false,
        };
        Ok(Some(BackfillAnswer { assignment, reserved: reserved.outcome }))
    }
}

/// What the backfill cache keeps up to date about `session` after a change here (an ended session
/// has no open seats and no reservations).
fn seats_now(session: &SessionSeats, now: OffsetDateTime) -> super::backfill_cache::SeatsNow {
    super::backfill_cache::SeatsNow {
        session_id: session.session_id,
        open_seats: session.open_seats(now),
        reserved_players: session.reserved_players(now),
    }
}

/// Sessions read per store round trip by a filtered page (most may not match).
const FILTERED_BATCH: usize = 500;

fn matches_filter(session: &SessionSeats, filter: &SessionFilter, now: OffsetDateTime) -> bool {
    filter.location.as_ref().is_none_or(|l| &session.info.location == l)
        && filter.labels.iter().all(|(k, v)| session.info.labels.get(k) == Some(v))
        && filter.has_open_seats.is_none_or(|open| (session.open_seats(now) > 0) == open)
}

impl<A, S, C> SeatService for Engine<A, S, C>
where
    A: SessionApi,
    S: StateStore,
    C: Clock,
{
    fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    fn list_sessions<'a>(
        &'a self,
        filter: &'a SessionFilter,
    ) -> BoxFuture<'a, Result<Vec<SessionSeats>, SeatServiceError>> {
        Box::pin(async move {
            let now = self.clock.now();
            let sessions = self.store.list_sessions(filter.image.as_deref(), now).await?;
            Ok(sessions.into_iter().filter(|s| matches_filter(s, filter, now)).collect())
        })
    }

    fn list_sessions_page<'a>(
        &'a self,
        filter: &'a SessionFilter,
        after: Option<Uuid>,
        limit: usize,
    ) -> BoxFuture<'a, Result<SessionsPage, SeatServiceError>> {
        Box::pin(async move {
            let limit = limit.max(1);
            let now = self.clock.now();
            // One more than the page holds, read only to know whether a `next` page has any.
            let wanted = limit + 1;
            // Filters beyond the image are applied here, to what the store reads: with them, read
            // more per round trip, since some of what is read will not be listed.
            let narrowed =
                filter.location.is_some() || !filter.labels.is_empty() || filter.has_open_seats.is_some();
            let batch = if narrowed { wanted.max(FILTERED_BATCH) } else { wanted };
            let mut listed = Vec::new();
            let mut cursor = after;
            while listed.len() < wanted {
                let page =
                    self.store.list_sessions_after(filter.image.as_deref(), cursor, batch, now).await?;
                listed.extend(page.sessions.into_iter().filter(|s| matches_filter(s, filter, now)));
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            let next = (listed.len() > limit).then(|| listed[limit - 1].session_id);
            listed.truncate(limit);
            Ok(SessionsPage { sessions: listed, next })
        })
    }

    fn sessions_holding<'a>(
        &'a self,
        players: &'a BTreeSet<String>,
    ) -> BoxFuture<'a, Result<Vec<SessionSeats>, SeatServiceError>> {
        Box::pin(async move { Ok(self.store.sessions_holding(players, self.clock.now()).await?) })
    }

    fn get_session(&self, session_id: Uuid) -> BoxFuture<'_, Result<Option<SessionSeats>, SeatServiceError>> {
        Box::pin(async move {
            let session = self.store.get_session(session_id, self.clock.now()).await?;
            Ok(session.filter(|s| s.status != SessionStatus::Ended))
        })
    }

    fn join<'a>(
        &'a self,
        session_id: Uuid,
        players: &'a [String],
        order: Option<u64>,
    ) -> BoxFuture<'a, Result<SeatResult<JoinAnswer>, SeatServiceError>> {
        Box::pin(async move {
            let joined =
                self.store.join_players_ordered(session_id, players, order, self.clock.now()).await?;
            let change = match joined {
                Ok(change) => change,
                Err(refused) => return Ok(Err(refused)),
            };
            self.seats_changed(&change.session);
            // Queued even when nobody new joined: a retried request then repairs a sync that was
            // never queued because the bridge stopped between the change and the queue.
            self.queue_player_sync(session_id).await;
            Ok(Ok(change))
        })
    }

    fn leave<'a>(
        &'a self,
        session_id: Uuid,
        players: &'a [String],
        order: Option<u64>,
    ) -> BoxFuture<'a, Result<SeatResult<LeaveAnswer>, SeatServiceError>> {
        Box::pin(async move {
            let left = self.store.leave_players_ordered(session_id, players, order, self.clock.now()).await?;
            let change = match left {
                Ok(change) => change,
                Err(refused) => return Ok(Err(refused)),
            };
            self.seats_changed(&change.session);
            // Releasing reserved seats is nothing to Gameye (it only counts joined players): a
            // backfill's release must not cost a Gameye call. Any other leave is queued, also when
            // nobody was there to leave (a retry after a crash between change and queue).
            let only_released =
                change.outcome.left.is_empty() && players.iter().all(|p| change.outcome.released.contains(p));
            if !only_released {
                self.queue_player_sync(session_id).await;
            }
            Ok(Ok(change))
        })
    }

    fn end(&self, session_id: Uuid) -> BoxFuture<'_, Result<SeatResult<EndedSession>, SeatServiceError>> {
        Box::pin(async move {
            match self.store.get_session(session_id, self.clock.now()).await? {
                None => return Ok(Err(SeatError::NotFound)),
                Some(s) if s.status == SessionStatus::Ended => return Ok(Err(SeatError::Ended)),
                Some(_) => {}
            }
            let stopped_now = self.api.stop_session(session_id).await.map_err(SeatServiceError::Gameye)?;
            let now = self.clock.now();
            let ending = Ending { reason: EndReason::Stopped, owe: self.settings.seats.end_announcements };
            Ok(self.store.end_session(session_id, ending, now).await?.map(|change| {
                self.seats_changed(&change.session);
                EndedSession {
                    stopped_now,
                    released_players: change.outcome.players,
                    released_reservations: change.outcome.reservations,
                }
            }))
        })
    }

    fn backfill<'a>(
        &'a self,
        request: &'a BackfillRequest,
    ) -> BoxFuture<'a, Result<Option<BackfillAnswer>, SeatServiceError>> {
        Box::pin(self.do_backfill(request))
    }
}

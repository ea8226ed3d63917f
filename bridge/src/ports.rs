//! The engine's view of the outside world. The `adapters` crate implements these traits (Gameye
//! over HTTP; Redis and in-memory state); the engine never names an implementation.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::seats::{NewSession, SeatResult, SessionSeats};
use crate::{Assignment, Failure, MatchIdConflict, MatchRequest, Port};

// ---------------------------------------------------------------------------------------------
// Gameye

/// What the engine asks Gameye to start. Borrows from the match request: it lives for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSpec<'a> {
    pub session_id: Uuid,
    pub location: &'a str,
    pub image: &'a str,
    pub version: Option<&'a str>,
    /// Container environment: may hold secrets, never log it.
    pub env: &'a BTreeMap<String, String>,
    pub args: &'a [String],
    /// The request's labels plus the bridge's own.
    pub labels: BTreeMap<String, String>,
    pub ttl: Duration,
    /// How long Gameye may take to answer: what is left of the placement deadline. (An answer
    /// after it could contradict the instance that took the match over when the lease ran out.)
    pub answer_within: Duration,
}

/// A session Gameye runs (or has just started), as far as players need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedSession {
    pub location: String,
    pub host: String,
    pub ports: Vec<Port>,
    /// Players Gameye counts as joined (`GET /session/{id}` tells; a new session has none).
    pub players: Vec<String>,
}

/// A location that can host an image now, with the addresses clients ping to measure latency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AvailableLocation {
    pub id: String,
    pub ping_ips: Vec<String>,
}

/// How a Gameye call failed, in the terms the engine decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionApiErrorKind {
    Unauthorized,
    QuotaExceeded,
    Forbidden,
    NotFound,
    /// The id is taken (POST) — an earlier attempt of this very placement won.
    Conflict,
    /// 420: this location cannot take the session now.
    NoCapacity,
    /// Gameye rejected the request (422 and other 4xx).
    Invalid,
    /// 5xx, timeouts, unreachable: retry with backoff.
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SessionApiError {
    pub kind: SessionApiErrorKind,
    /// Gameye's HTTP status, when it answered.
    pub status: Option<u16>,
    pub message: String,
}

/// The Gameye Session API operations placement needs.
pub trait SessionApi: Send + Sync + 'static {
    /// Locations that can host `image` now (may be served from a short cache).
    fn available_locations(
        &self,
        image: &str,
    ) -> impl Future<Output = Result<Vec<AvailableLocation>, SessionApiError>> + Send;

    /// Forgets any cached answer for `image` (after a 404 or 420).
    fn invalidate_locations(&self, image: &str);

    /// `POST /session` with the spec's fixed id.
    fn create_session(
        &self,
        spec: &SessionSpec<'_>,
    ) -> impl Future<Output = Result<StartedSession, SessionApiError>> + Send;

    /// `GET /session/{id}`: used when a create answered 409 (an earlier attempt won) or omitted ports.
    fn describe_session(
        &self,
        session_id: Uuid,
    ) -> impl Future<Output = Result<StartedSession, SessionApiError>> + Send;

    /// `DELETE /session/{id}`: `Ok(true)` stopped now, `Ok(false)` already gone (Gameye answered 404/409).
    fn stop_session(&self, session_id: Uuid) -> impl Future<Output = Result<bool, SessionApiError>> + Send;

    /// `PUT /session/player/join`: Gameye's player list (`playerCount`) gains `players`. Idempotent.
    fn join_players(
        &self,
        session_id: Uuid,
        players: &[String],
    ) -> impl Future<Output = Result<(), SessionApiError>> + Send;

    /// `DELETE /session/player/leave` (with the session in the body).
    fn leave_players(
        &self,
        session_id: Uuid,
        players: &[String],
    ) -> impl Future<Output = Result<(), SessionApiError>> + Send;
}

// ---------------------------------------------------------------------------------------------
// State

/// A state-store failure. `transient` failures (connection lost, timeout) may succeed on retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state store: {message}")]
pub struct StoreError {
    pub message: String,
    pub transient: bool,
}

impl StoreError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self { message: message.into(), transient: true }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), transient: false }
    }
}

/// Proof of owning a pending placement. `fence` grows with every takeover, so a previous owner
/// that wakes up late cannot overwrite the new owner's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: String,
    pub fence: u64,
}

/// Where a placement stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PlacementState {
    /// Someone owns it until `lease_until`; after that anyone may take it over.
    Pending {
        owner: String,
        fence: u64,
        #[serde(with = "time::serde::rfc3339")]
        lease_until: OffsetDateTime,
    },
    Placed {
        assignment: Assignment,
    },
    Failed {
        failure: Failure,
    },
}

/// Everything known about one match's placement, keyed by match id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementRecord {
    pub match_id: String,
    /// The door that first accepted the match (`http`, `nats`, `sns`, `nakama`).
    pub source: String,
    pub session_id: Uuid,
    /// The request as first accepted; a takeover places this, not a later duplicate's copy, and a
    /// later claim is compared with it ([`MatchRequest::differences`]).
    pub request: MatchRequest,
    #[serde(with = "time::serde::rfc3339")]
    pub accepted_at: OffsetDateTime,
    pub state: PlacementState,
}

/// A door's bid to place a match.
#[derive(Debug, Clone)]
pub struct Claim {
    pub match_id: String,
    pub source: String,
    pub session_id: Uuid,
    pub request: MatchRequest,
    pub owner: String,
    pub now: OffsetDateTime,
    /// How long the claim is exclusive before others may take it over.
    pub lease_for: Duration,
    /// How long the record is kept at all (it expires afterwards).
    pub keep_for: Duration,
}

impl Claim {
    /// The record a claim creates when there was none: pending, owned by the claimant with fence 1.
    /// Times as the store keeps them (stores round to milliseconds).
    pub fn new_record(&self, accepted_at: OffsetDateTime, lease_until: OffsetDateTime) -> PlacementRecord {
        PlacementRecord {
            match_id: self.match_id.clone(),
            source: self.source.clone(),
            session_id: self.session_id,
            request: self.request.clone(),
            accepted_at,
            state: PlacementState::Pending { owner: self.owner.clone(), fence: 1, lease_until },
        }
    }
}

/// What a [`Claim`] achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The caller owns the placement: a new record, or one taken over (expired lease, or an earlier
    /// failure that was retryable). Place `record.request`.
    Owned { record: Box<PlacementRecord>, lease: Lease, taken_over: bool },
    /// Placed before: answer with the stored assignment, touch nothing.
    Placed(Assignment),
    /// Failed for good before: answer with the stored failure.
    Failed(Failure),
    /// Someone else is placing it right now.
    Held { owner: String, lease_until: OffsetDateTime },
    /// The record's request is another match than the claim's (whatever the record's state): the
    /// claim is refused and the record left as it was, lease, fence and all.
    Conflict(MatchIdConflict),
}

/// The final word on a placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Placed(Assignment),
    Failed(Failure),
}

impl Outcome {
    pub fn match_id(&self) -> &str {
        match self {
            Self::Placed(assignment) => &assignment.match_id,
            Self::Failed(failure) => &failure.match_id,
        }
    }

    /// The Assignment's or the Failure's JSON: what a record keeps and what the HTTP door
    /// answers. Rendered once per placement and handed to both ([`Completion::json`],
    /// [`crate::placement::Answer`]).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        match self {
            Self::Placed(assignment) => serde_json::to_string(assignment),
            Self::Failed(failure) => serde_json::to_string(failure),
        }
    }
}

/// Placement records. Every change is atomic per match.
pub trait PlacementStore: Send + Sync + 'static {
    /// Creates the record or reports what exists (see [`ClaimOutcome`]). A record whose request
    /// is not the same match as the claim's ([`MatchIdConflict::between`] the record's request
    /// and the claim's) is reported as [`ClaimOutcome::Conflict`] before anything else, and
    /// nothing is written: not taken over, not even when its lease ran out or it failed retryably.
    fn claim(&self, claim: &Claim) -> impl Future<Output = Result<ClaimOutcome, StoreError>> + Send;

    /// Extends the lease if `lease` still owns the pending record. `false`: ownership was lost.
    fn renew(
        &self,
        match_id: &str,
        lease: &Lease,
        now: OffsetDateTime,
        lease_for: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Writes the outcome if `lease` still owns the pending record. `false`: ownership was lost
    /// (another instance took over; its outcome stands).
    fn complete(
        &self,
        match_id: &str,
        lease: &Lease,
        outcome: &Outcome,
        keep_for: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    fn get(&self, match_id: &str)
    -> impl Future<Output = Result<Option<PlacementRecord>, StoreError>> + Send;

    /// Pending placements whose lease ran out before `now` (work a crashed owner left behind), at most `limit`.
    fn expired_pending(
        &self,
        now: OffsetDateTime,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
}

/// Latencies players reported ahead of their matches (`PUT /v1/players/{id}/latencies`).
pub trait LatencyStore: Send + Sync + 'static {
    /// Replaces the player's latencies; they expire after `keep_for`.
    fn put_latencies(
        &self,
        player_id: &str,
        latencies: &BTreeMap<String, u32>,
        keep_for: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The stored latencies of those players that have any.
    fn get_latencies(
        &self,
        player_ids: &[String],
    ) -> impl Future<Output = Result<BTreeMap<String, BTreeMap<String, u32>>, StoreError>> + Send;
}

/// Locations that answered 420 recently, shared by every instance.
pub trait CooldownStore: Send + Sync + 'static {
    fn cool_down(
        &self,
        location: &str,
        for_: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Which of `locations` are cooling down now.
    fn cooling(
        &self,
        locations: &[String],
    ) -> impl Future<Output = Result<BTreeSet<String>, StoreError>> + Send;
}

/// A placement's outcome to record ([`PlacementStore::complete`]).
#[derive(Debug, Clone, Copy)]
pub struct Completion<'a> {
    pub match_id: &'a str,
    pub lease: &'a Lease,
    pub outcome: &'a Outcome,
    /// The outcome's JSON ([`Outcome::to_json`]) when it rendered, for a store that keeps the
    /// text not to render it again.
    pub json: Option<&'a str>,
    pub keep_for: Duration,
    /// Set when sinks want this placement's outcome: the outcome is owed to them from then on
    /// ([`AnnouncementStore::owe_announcement`], written before the outcome), and the outbox
    /// retries it from the time given unless the door's own announcement got through first.
    pub owed: Option<(&'a Owed, OffsetDateTime)>,
}

/// What [`StateStore::finish_placement`] answers: whether the outcome was written (`false`: the
/// lease was lost), and the seat record's creation when one was asked for.
pub type Finished = (Result<bool, StoreError>, Option<Result<SeatResult<SessionSeats>, StoreError>>);

/// One outcome owed to sinks: the match, and which of its outcomes (`placed`, or
/// `failed:<CODE>`). Keyed by both, so that announcing an older outcome (a retryable failure that
/// was taken over since) never clears what is owed for the newer one. The kind rather than the
/// outcome's text: stable across versions, and two outcomes of one kind tell a sink the same.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owed {
    pub match_id: String,
    pub outcome: String,
}

impl Owed {
    pub fn of(outcome: &Outcome) -> Self {
        let kind = match outcome {
            Outcome::Placed(_) => "placed".to_owned(),
            Outcome::Failed(failure) => {
                let code = serde_json::to_value(failure.error.code).ok();
                format!("failed:{}", code.as_ref().and_then(|code| code.as_str()).unwrap_or("?"))
            }
        };
        Self { match_id: outcome.match_id().to_owned(), outcome: kind }
    }
}

/// The announcement outbox (DESIGN §3.4: a placement whose publish keeps failing is retried from
/// the record, never re-created): outcomes some sink has not heard yet ([`Owed`]), each due at a
/// time. An entry is written before its outcome (so a crash between recording and announcing
/// leaves it), removed when an announcement of that outcome got through, and claimed for a while
/// by one retrier at a time. The outcome itself is read from the record.
pub trait AnnouncementStore: Send + Sync + 'static {
    /// Owes the outcome, due at `due` (moved there if owed already). The entry lives at least
    /// `keep_for` (the record's life).
    fn owe_announcement(
        &self,
        owed: &Owed,
        due: OffsetDateTime,
        keep_for: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The outcome was announced (or given up): nothing is owed for it any more.
    fn announced(&self, owed: &Owed) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Claims up to `limit` entries due by `now` (earliest first): each is moved to `now + hold`,
    /// so no other retrier takes it meanwhile. Atomic: two concurrent calls never get one entry.
    fn claim_announcements(
        &self,
        now: OffsetDateTime,
        limit: usize,
        hold: Duration,
    ) -> impl Future<Output = Result<Vec<Owed>, StoreError>> + Send;

    /// Moves an owed entry to `due` (an attempt failed, or the placement is still pending);
    /// nothing happens if it is no longer owed.
    fn defer_announcement(
        &self,
        owed: &Owed,
        due: OffsetDateTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// How many announcements are owed (due or not).
    fn owed_announcements(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// Everything the engine keeps: one backend implements all six.
pub trait StateStore:
    PlacementStore + LatencyStore + CooldownStore + SeatStore + PlayerSyncStore + AnnouncementStore
{
    /// A placement's last writes: its outcome ([`PlacementStore::complete`]) and, when it
    /// placed, its session's seat record ([`SeatStore::create_session`] with `keep_for`). Neither
    /// depends on the other's answer, so a store may send both in one round trip; by default they
    /// run concurrently.
    fn finish_placement(
        &self,
        completion: Completion<'_>,
        seats: Option<(&NewSession, Duration)>,
    ) -> impl Future<Output = Finished> + Send {
        finish_concurrently(self, completion, seats)
    }
}

/// [`StateStore::finish_placement`] as two concurrent store calls, after the owed announcement's
/// entry (when there is one) is written.
pub async fn finish_concurrently<S: PlacementStore + SeatStore + AnnouncementStore + ?Sized>(
    store: &S,
    completion: Completion<'_>,
    seats: Option<(&NewSession, Duration)>,
) -> Finished {
    let Completion { match_id, lease, outcome, keep_for, owed, .. } = completion;
    if let Some((owed, due)) = owed
        && let Err(error) = store.owe_announcement(owed, due, keep_for).await
    {
        // Not written before the outcome: the outcome must wait too (a record that is done
        // with nothing owed would never be announced should this instance stop now).
        let seats_too = seats.map(|_| Err(error.clone()));
        return (Err(error), seats_too);
    }
    let complete = store.complete(match_id, lease, outcome, keep_for);
    let create = async {
        match seats {
            Some((new, keep_for)) => Some(store.create_session(new, keep_for).await),
            None => None,
        }
    };
    futures_util::future::join(complete, create).await
}

// ---------------------------------------------------------------------------------------------
// Announcing outcomes

/// A place outcomes are announced to besides the door's own answer: NATS subjects, a signed
/// webhook, Nakama's RPC. Object-safe, so wiring can hold any mix of them.
pub trait OutcomeSink: Send + Sync + 'static {
    /// A short name for logs and metrics (`nats`, `webhook`, `nakama`).
    fn name(&self) -> &'static str;

    /// Whether placements accepted by this door (`http`, `nats`, `sns`, `nakama`) go here.
    fn wants(&self, source: &str) -> bool;

    /// Delivers once; the engine retries transient failures with backoff.
    fn deliver<'a>(
        &'a self,
        source: &'a str,
        outcome: &'a Outcome,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>>;
}

/// An announcement that did not get through. `permanent`: retrying cannot help (bad credentials,
/// unknown RPC): reported loudly once instead of retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{sink}: {message}")]
pub struct DeliveryError {
    pub sink: String,
    pub message: String,
    pub permanent: bool,
}

// ---------------------------------------------------------------------------------------------
// What doors remember (the SNS door: message ids seen, matchmaking tickets' statuses)

/// Where a delivery stands in a [`DeliveryLog`] when it is claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Not recorded: it is now (held for the claim's time), act on it.
    First,
    /// Claimed by another copy that has not finished ([`DeliveryLog::keep_delivery`]) yet: it may
    /// still fail, or its processor may have died (the hold then runs out).
    InProgress,
    /// Acted on already.
    Done,
}

impl Delivery {
    pub fn is_first(self) -> bool {
        self == Self::First
    }
}

/// Deliveries a door has already acted on, so an at-least-once source's redelivery has no second
/// effect. Object-safe, so a door can hold it without naming the store.
pub trait DeliveryLog: Send + Sync + 'static {
    /// Claims `key` for `hold`: [`Delivery::First`] when it was not recorded (it is now, as in
    /// progress), else where the earlier claim stands. Atomic: of two concurrent calls with one
    /// key, exactly one gets `First`.
    fn first_delivery<'a>(
        &'a self,
        key: &'a str,
        hold: Duration,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Delivery, StoreError>> + Send + 'a>>;

    /// Records `key` as done for `keep_for`, whether or not it was recorded (once the delivery
    /// has been acted on).
    fn keep_delivery<'a>(
        &'a self,
        key: &'a str,
        keep_for: Duration,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

    /// Forgets `key`, so a delivery that could not be processed is processed when it comes again.
    fn forget_delivery<'a>(
        &'a self,
        key: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;
}

/// Where a matchmaking ticket stands, as its matchmaker (FlexMatch) last told, and as the
/// bridge's own placement of its match moved on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketState {
    Searching,
    /// Matched; the match is being placed (or its placement is recorded under `match_id`).
    Placing,
    Placed,
    Failed,
    TimedOut,
    Cancelled,
}

impl TicketState {
    /// Whether the matchmaker is done with the ticket: every state but `Searching`. FlexMatch
    /// ends a ticket once (matched, failed, timed out or cancelled) and never searches it again.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Searching)
    }
}

/// One matchmaking ticket's last known status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketStatus {
    pub ticket_id: String,
    pub status: TicketState,
    /// The match the ticket ended up in, once matchmaking succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_id: Option<String>,
    /// The matchmaker's event that set this status (`MatchmakingSucceeded`, `MatchmakingTimedOut`, …).
    pub event: String,
    /// The matchmaker's reason, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Matchmaking tickets' statuses, for polling (`GET /v1/tickets/{ticket_id}`). Object-safe.
pub trait TicketStore: Send + Sync + 'static {
    /// Replaces the ticket's status; it expires after `keep_for`.
    fn put_ticket_status<'a>(
        &'a self,
        status: &'a TicketStatus,
        keep_for: Duration,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

    fn get_ticket_status<'a>(
        &'a self,
        ticket_id: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Option<TicketStatus>, StoreError>> + Send + 'a>>;

    /// Writes the status only over none or a `searching` one, in one atomic step; `false` when the
    /// stored one names a match or is final ([`TicketState::is_final`]): nothing changed.
    /// Matchmaker events arrive in no set order and are retried, so a late "searching" must not
    /// replace a final status, and a read then a write would let it overwrite the "placing"
    /// written in between. The first final status stands: a ticket ends once, so a second,
    /// different end is late or confused news (a match still replaces it: `put_ticket_status`).
    fn put_unmatched_ticket_status<'a>(
        &'a self,
        status: &'a TicketStatus,
        keep_for: Duration,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<bool, StoreError>> + Send + 'a>>;
}

// ---------------------------------------------------------------------------------------------
// Seats (DESIGN §4): the seat ledger's rules are `crate::seats`; a store applies them atomically
// per session and keeps the records (with a time to live, refreshed on every change).

/// A seat operation's effect together with the session as it stands right after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatChange<T> {
    pub outcome: T,
    pub session: crate::seats::SessionSeats,
}

/// Reserved seats in one session, picked by [`SeatStore::reserve_best`].
pub type BackfillReserved = SeatChange<crate::seats::Reserved>;

/// A session's record as [`SeatStore::recorded_sessions`] gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedSession {
    pub session_id: Uuid,
    pub status: crate::seats::SessionStatus,
    /// How many players have joined.
    pub joined: usize,
    /// When the record was first written, to the millisecond, on the clock of the instance that
    /// wrote it: a listing of Gameye's sessions that began before then may not show the session.
    pub recorded_at: OffsetDateTime,
}

/// One page of [`SeatStore::list_sessions_after`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionsPage {
    pub sessions: Vec<crate::seats::SessionSeats>,
    /// Where the next page starts (the last session of this one); `None` when nothing follows.
    /// A page before the end may come back empty when what followed has ended meanwhile.
    pub next: Option<Uuid>,
}

/// One page of [`SeatStore::recorded_sessions_page`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordedPage {
    pub sessions: Vec<RecordedSession>,
    /// The cursor of the next page; `None` after the last.
    pub next: Option<u64>,
}

/// Sessions' seats. Every operation is atomic per session and all-or-nothing; `now` is the
/// caller's clock (reservation expiry), record time to live runs on the store's clock.
/// `Ok(Err(SeatError))` is a refusal (nothing changed); `Err(StoreError)` a store failure.
pub trait SeatStore: Send + Sync + 'static {
    /// Records a session at placement; its own players hold one reservation (id made by the
    /// store). The record lives `keep_for` after its last change. An existing or ended session is
    /// left alone: `AlreadyExists` / `Ended`.
    fn create_session(
        &self,
        new: &crate::seats::NewSession,
        keep_for: Duration,
    ) -> impl Future<Output = Result<crate::seats::SeatResult<crate::seats::SessionSeats>, StoreError>> + Send;

    /// The session at `now` (expired reservations left out). An ended session is returned with
    /// status `ended` and no seats while its record lives; `None` when unknown or expired.
    fn get_session(
        &self,
        session_id: Uuid,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Option<crate::seats::SessionSeats>, StoreError>> + Send;

    /// Sessions not ended (of `image`, when given), at `now`, in session id order: the backfill
    /// candidates and `GET /v1/sessions`.
    fn list_sessions(
        &self,
        image: Option<&str>,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Vec<crate::seats::SessionSeats>, StoreError>> + Send;

    /// [`SeatStore::list_sessions`] a page at a time, for `GET /v1/sessions`: at most `count`
    /// sessions (at least one) whose id comes after `after`, in session id order. A store should read about
    /// `count` records per page, not all of them (the default here reads all).
    fn list_sessions_after(
        &self,
        image: Option<&str>,
        after: Option<Uuid>,
        count: usize,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<SessionsPage, StoreError>> + Send {
        async move {
            let count = count.max(1);
            let mut sessions = self.list_sessions(image, now).await?;
            sessions.retain(|s| after.is_none_or(|after| s.session_id > after));
            let next = (sessions.len() > count).then(|| sessions[count - 1].session_id);
            sessions.truncate(count);
            Ok(SessionsPage { sessions, next })
        }
    }

    /// Sessions not ended in which any of `players` is joined or holds a reservation, at `now`, in
    /// session id order: where leaving players sit when the caller does not know (Nakama's
    /// `session_end`). A store should find them without reading every session (the default here
    /// reads all).
    fn sessions_holding(
        &self,
        players: &BTreeSet<String>,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Vec<crate::seats::SessionSeats>, StoreError>> + Send {
        async move {
            let mut sessions = self.list_sessions(None, now).await?;
            sessions.retain(|session| players.iter().any(|player| session.holds(player)));
            Ok(sessions)
        }
    }

    /// Every session not ended, as the reconciler compares them with Gameye: status and joined
    /// count, not the whole record (cheaper to read and parse when there are a hundred thousand).
    /// In session id order, each once.
    fn recorded_sessions(
        &self,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Vec<RecordedSession>, StoreError>> + Send {
        async move {
            let mut all = Vec::new();
            let mut cursor = 0;
            loop {
                let page = self.recorded_sessions_page(cursor, now).await?;
                all.extend(page.sessions);
                match page.next {
                    Some(next) => cursor = next,
                    None => break,
                }
            }
            all.sort_by_key(|session| session.session_id);
            all.dedup_by_key(|session| session.session_id);
            Ok(all)
        }
    }

    /// [`SeatStore::recorded_sessions`] a page at a time, so a caller can pace a long read: start
    /// at cursor 0 and go on with `next` until it is `None`. Every session recorded throughout is
    /// in some page; one may be in more than one, and one recorded meanwhile may be missing.
    fn recorded_sessions_page(
        &self,
        cursor: u64,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<RecordedPage, StoreError>> + Send;

    /// `created → running`; idempotent.
    fn mark_running(
        &self,
        session_id: Uuid,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<crate::seats::SeatResult<crate::seats::SessionSeats>, StoreError>> + Send;

    /// `created → running` for many sessions at once (the reconciler's scan, which may find
    /// thousands): returns those it moved; absent, ended or already running ones are skipped.
    /// Cheaper than [`SeatStore::mark_running`] per session, as it returns no records.
    fn mark_running_many(
        &self,
        session_ids: &[Uuid],
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Vec<Uuid>, StoreError>> + Send;

    /// Players join ([`crate::seats::SessionSeats::join`]). `order`: the change's place in its
    /// source (a JetStream stream sequence), so that a change older than one already applied to a
    /// player is skipped for them (`duplicate`/`stale` in the outcome); `None` for changes without
    /// one. The orders are stored in the session's record, atomically with the change.
    fn join_players_ordered(
        &self,
        session_id: Uuid,
        players: &[String],
        order: Option<u64>,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<crate::seats::SeatResult<SeatChange<crate::seats::Joined>>, StoreError>> + Send;

    /// Players leave ([`crate::seats::SessionSeats::leave`]); `order` as for
    /// [`SeatStore::join_players_ordered`].
    fn leave_players_ordered(
        &self,
        session_id: Uuid,
        players: &[String],
        order: Option<u64>,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<crate::seats::SeatResult<SeatChange<crate::seats::Left>>, StoreError>> + Send;

    /// An unordered join: [`SeatStore::join_players_ordered`] without an order.
    fn join_players(
        &self,
        session_id: Uuid,
        players: &[String],
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<crate::seats::SeatResult<SeatChange<crate::seats::Joined>>, StoreError>> + Send
    {
        self.join_players_ordered(session_id, players, None, now)
    }

    /// An unordered leave: [`SeatStore::leave_players_ordered`] without an order.
    fn leave_players(
        &self,
        session_id: Uuid,
        players: &[String],
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<crate::seats::SeatResult<SeatChange<crate::seats::Left>>, StoreError>> + Send
    {
        self.leave_players_ordered(session_id, players, None, now)
    }

    /// Reserves seats for all `players` for `ttl` (reservation id made by the store).
    fn reserve_seats(
        &self,
        session_id: Uuid,
        players: &[String],
        ttl: Duration,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<crate::seats::SeatResult<SeatChange<crate::seats::Reserved>>, StoreError>>
    + Send;

    /// Tries [`SeatStore::reserve_seats`] in each candidate in turn (best first, see
    /// [`crate::seats::choose_backfill`]) and answers with the first that succeeded; `None` when
    /// none could take all `players`. Each attempt is atomic in its session.
    fn reserve_best(
        &self,
        candidates: &[Uuid],
        players: &[String],
        ttl: Duration,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Option<BackfillReserved>, StoreError>> + Send;

    /// Drops the session's reservations expired at `now`, reporting them in reservation id order.
    fn expire_reservations(
        &self,
        session_id: Uuid,
        now: OffsetDateTime,
    ) -> impl Future<
        Output = Result<
            crate::seats::SeatResult<SeatChange<Vec<crate::seats::ExpiredReservation>>>,
            StoreError,
        >,
    > + Send;

    /// Releases every seat; the session is no longer listed and refuses everything afterwards. The
    /// ended record keeps how it ended ([`crate::seats::SessionEnd`], at `now`) and, when
    /// `ending.owe` says so, the end is owed to the session-event sinks
    /// ([`EndAnnouncementStore`]: the record says so, and is kept at least `owe.keep_for`).
    fn end_session(
        &self,
        session_id: Uuid,
        ending: Ending,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<crate::seats::SeatResult<SeatChange<crate::seats::Ended>>, StoreError>> + Send;
}

/// How [`SeatStore::end_session`] ends a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    pub reason: crate::seats::EndReason,
    /// `Some`: the end is owed to the session-event sinks ([`EndAnnouncementStore`]); `None`:
    /// nobody is told.
    pub owe: Option<EndOwing>,
}

/// How an end is owed to the session-event sinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndOwing {
    /// The outbox takes the end this long after it (the ender's own attempt has it first).
    pub window: Duration,
    /// The ended record is kept at least this long, so a late announcement can still read it.
    pub keep_for: Duration,
}

impl EndOwing {
    /// Ending a session for `reason`, owed like this.
    pub fn ending(self, reason: crate::seats::EndReason) -> Ending {
        Ending { reason, owe: Some(self) }
    }
}

/// What the session-end outbox finds for an owed session ([`EndAnnouncementStore::session_end`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(clippy::large_enum_variant, reason = "one per owed end read, moved once: a box buys nothing")]
pub enum EndRecord {
    /// Ended and still owed: the record (its info; seats empty) and how it ended.
    Owed(SessionSeats, crate::seats::SessionEnd),
    /// Ended, and nothing is owed: announced already, or ended without owing (by an older version,
    /// or with no sinks then).
    Settled,
    /// Not ended (yet): the end that owed it did not happen (it may still).
    NotEnded,
    /// No record: it expired.
    Gone,
}

/// The session-end outbox: ended sessions some [`SessionEvents`] sink has not heard of yet, each
/// due at a time (like [`AnnouncementStore`] for placements). The ended record says whether its
/// end is owed (set by the end itself, atomically) and keeps what is announced; an index of owed
/// ends, due times attached, is written just before the end (so no owed end lacks its entry) and
/// may hold entries of ends that did not happen or were announced meanwhile: the record decides.
pub trait EndAnnouncementStore: Send + Sync + 'static {
    /// What the session's record says about its end.
    fn session_end(
        &self,
        session_id: Uuid,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<EndRecord, StoreError>> + Send;

    /// Claims up to `limit` session ends due by `now` (earliest first): each is moved to
    /// `now + hold`. Atomic: two concurrent calls never get one entry.
    fn claim_end_announcements(
        &self,
        now: OffsetDateTime,
        limit: usize,
        hold: Duration,
    ) -> impl Future<Output = Result<Vec<Uuid>, StoreError>> + Send;

    /// The end was announced to every sink (or given up, or found settled): the record no longer
    /// owes it, then its entry is removed.
    fn end_announced(&self, session_id: Uuid) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Moves an owed end to `due` (an attempt failed); nothing happens if it is no longer owed.
    fn defer_end_announcement(
        &self,
        session_id: Uuid,
        due: OffsetDateTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// How many session ends are owed (due or not).
    fn owed_end_announcements(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

// ---------------------------------------------------------------------------------------------
// Gameye's player lists follow the seat records through an outbox (DESIGN §4)

/// A claimed entry of the player-sync outbox: a session whose Gameye player list must be brought
/// in line with its seat record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayerSyncClaim {
    pub session_id: Uuid,
    /// Failed attempts since the session was last in sync (the retry delay grows with it).
    pub attempts: u32,
    /// This claim's identity: finishing or retrying it does nothing once the session was queued again.
    pub token: String,
}

/// The outbox of sessions whose players changed since Gameye was last told. An entry is queued
/// after every change (so a crash between the two leaves the change unsynced until the reconciler
/// notices the count differs) and claimed for a lease by one worker at a time: queueing a claimed
/// session only marks it changed, and ending that claim (finish or retry) then makes it due at
/// once, so the change is synced after the sync in hand, never beside it. A worker that outlives
/// its lease loses the claim. Times run on the store's clock.
pub trait PlayerSyncStore: Send + Sync + 'static {
    /// Queues the session, due now (also one waiting out a retry delay); a claimed one is marked
    /// changed instead. Idempotent.
    fn queue_player_sync(&self, session_id: Uuid) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Queues the session, due now, unless it is queued already (claimed, or waiting out a retry
    /// delay): for a suspected difference rather than a change, which must not cut retries short.
    fn queue_player_sync_if_absent(
        &self,
        session_id: Uuid,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Claims up to `limit` due sessions (longest due first) for `lease`.
    fn claim_player_syncs(
        &self,
        limit: usize,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<PlayerSyncClaim>, StoreError>> + Send;

    /// The sync succeeded: dequeues the session, or makes it due now if it changed meanwhile. A
    /// claim that no longer holds the session does nothing.
    fn finish_player_sync(
        &self,
        claim: &PlayerSyncClaim,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The sync failed: one more attempt counted, due again `retry_in` from now (now if it changed
    /// meanwhile). A claim that no longer holds the session does nothing.
    fn retry_player_sync(
        &self,
        claim: &PlayerSyncClaim,
        retry_in: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// How many sessions are queued (due or not).
    fn queued_player_syncs(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

// ---------------------------------------------------------------------------------------------
// Background duties that run on one instance at a time (the reconciler)

/// Named leases in the shared store: whoever holds `name` does the duty; the lease runs out
/// `ttl` after its last acquire/renew (on the store's clock), so a dead holder is replaced.
pub trait LeaseStore: Send + Sync + 'static {
    /// Takes the lease if free or expired, or renews it if `owner` holds it; `false` while
    /// someone else holds it.
    fn try_acquire(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Gives the lease up if `owner` holds it (a no-op otherwise).
    fn release(&self, name: &str, owner: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Where the end of a session is announced (NATS `<prefix>.session.ended.<id>`). Object-safe.
pub trait SessionEvents: Send + Sync + 'static {
    /// A short name for logs (`nats`).
    fn name(&self) -> &'static str;

    /// Announces that the session ended: `session` is its ended record (who and what it was),
    /// `end` how it ended. The same end may be announced again after a failure (the session-end
    /// outbox), so receivers deduplicate by session id.
    fn session_ended<'a>(
        &'a self,
        session: &'a crate::seats::SessionSeats,
        end: &'a crate::seats::SessionEnd,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>>;
}

// ---------------------------------------------------------------------------------------------
// Time

/// Wall-clock time and waiting, so the engine stays runtime-agnostic and testable.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> OffsetDateTime;
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
}

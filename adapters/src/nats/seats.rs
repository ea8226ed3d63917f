//! Seats on NATS (DESIGN §4): joins and leaves in on JetStream (`<prefix>.session.players.join|leave`,
//! durable, one shared consumer), their outcomes out on
//! `<prefix>.session.players.joined|left|rejected.<session_id>`; backfill by core-NATS request/reply
//! (`<prefix>.backfill.request`) in the responders' queue group.
//!
//! A join or leave is acknowledged only once it was applied (or refused for good) and its outcome
//! published; a store failure is redelivered, and the store's operations are idempotent, so a
//! redelivery never counts a player twice.
//!
//! **Ordering.** Each change carries its JetStream stream sequence into the store, which keeps per
//! player the sequence of the last change applied and skips older ones (`bridge::seats`,
//! "Ordering"). So a join redelivered after a newer leave for its player (or a join and a leave
//! processed concurrently, by several instances or in flight at once in one) ends as the newest
//! message says: per player, the latest stream sequence wins. A redelivery of a change applied
//! before reports its players as `already_applied`; a change a newer one overtook for every one of
//! its players is reported as rejected with code `STALE`. A join refused `SESSION_FULL` while a
//! leave published before it is still unacknowledged is retried, not refused: in stream order that
//! leave comes first and may free the seat (refused once none is outstanding, or on the last delivery).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use async_nats::HeaderMap;
use async_nats::jetstream::stream::RawMessageErrorKind;
use async_nats::jetstream::{self, AckKind, consumer};
use bridge::placement::{PlacementService, Progress, SeatService, SeatServiceError, SessionMetadata};
use bridge::ports::Outcome;
use bridge::seats::{BackfillOutcome, SeatError, SessionPlayers, SessionSeats};
use bridge::{Failure, FailureCode, InvalidRequest};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::consumer::with_progress;
use super::metrics::NatsMetrics;
use super::sink::{MATCH_ID_HEADER, SESSION_ID_HEADER, STATUS_HEADER};
use super::subjects::Subjects;
use super::{NatsError, SOURCE};
use crate::config::NatsSettings;

/// The durable consumer of joins and leaves: the match consumer's name with `-seats`, so several
/// bridges on one NATS under different `nats.consumer` names stay apart.
pub(crate) fn seats_consumer_name(settings: &NatsSettings) -> String {
    format!("{}-seats", settings.consumer)
}

/// Which change a message asks for, from its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Action {
    Join,
    Leave,
}

impl Action {
    fn of(subject: &str, subjects: &Subjects) -> Option<Self> {
        if subject == subjects.players_join() {
            Some(Self::Join)
        } else if subject == subjects.players_leave() {
            Some(Self::Leave)
        } else {
            None
        }
    }
}

/// The metrics `kind` of a message: `join`, `leave`, or `players` (neither subject).
fn metrics_kind(action: Option<Action>) -> &'static str {
    match action {
        Some(Action::Join) => "join",
        Some(Action::Leave) => "leave",
        None => "players",
    }
}

/// `{code, message, retryable}`, the error object of every seat outcome and backfill reply.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ErrorDetail {
    pub code: &'static str,
    pub message: String,
    pub retryable: bool,
    /// The offending field of an `INVALID_REQUEST`, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorDetail {
    fn new(code: &'static str, message: impl Into<String>, retryable: bool) -> Self {
        Self { code, message: message.into(), retryable, field: None }
    }

    fn invalid(invalid: &InvalidRequest) -> Self {
        Self { field: invalid.field.clone(), ..Self::new("INVALID_REQUEST", invalid.to_string(), false) }
    }

    /// A change whose every player had a newer one (later stream sequence) applied: ignored.
    fn stale(sequence: u64) -> Self {
        let message =
            format!("a join or leave newer than stream sequence {sequence} was applied to every player");
        Self::new("STALE", format!("{message}; nothing changed"), false)
    }

    fn store_unavailable() -> Self {
        Self::new("STORE_UNAVAILABLE", crate::store::STORE_UNAVAILABLE_MESSAGE, true)
    }

    /// The codes of the HTTP door's answers to the same refusals.
    fn refused(session_id: Uuid, refused: &SeatError) -> Self {
        match refused {
            SeatError::NotFound | SeatError::Ended => {
                Self::new("NOT_FOUND", format!("no live session `{session_id}`"), false)
            }
            SeatError::SessionFull { .. } => Self::new("SESSION_FULL", refused.to_string(), false),
            SeatError::NoSeats { .. } => Self::new("NO_SEATS", refused.to_string(), false),
            SeatError::NoPlayers => Self {
                field: Some("players".to_owned()),
                ..Self::new("INVALID_REQUEST", "players: must name at least one player", false)
            },
            SeatError::AlreadyExists | SeatError::AlreadyJoined { .. } => {
                Self::new("CONFLICT", refused.to_string(), false)
            }
        }
    }

    fn of_service(error: &SeatServiceError) -> Self {
        match error {
            SeatServiceError::Store(_) => Self::store_unavailable(),
            SeatServiceError::MatchIdConflict(conflict) => {
                Self::new("MATCH_ID_CONFLICT", conflict.to_string(), false)
            }
            SeatServiceError::Gameye(error) => {
                Self::new("UPSTREAM_UNAVAILABLE", format!("Gameye: {error}"), true)
            }
        }
    }
}

/// What `<prefix>.session.players.joined|left.<session_id>` carries.
#[derive(Debug, Serialize)]
struct Changed {
    session_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    match_id: Option<String>,
    action: Action,
    /// join: players who joined now (reserved or not).
    #[serde(skip_serializing_if = "Option::is_none")]
    joined: Option<Vec<String>>,
    /// join: those of `joined` who used their reserved seat.
    #[serde(skip_serializing_if = "Option::is_none")]
    from_reservations: Option<Vec<String>>,
    /// join: players who had joined before (nothing changed for them).
    #[serde(skip_serializing_if = "Option::is_none")]
    already_joined: Option<Vec<String>>,
    /// leave: joined players who left.
    #[serde(skip_serializing_if = "Option::is_none")]
    left: Option<Vec<String>>,
    /// leave: players whose reserved seat was released.
    #[serde(skip_serializing_if = "Option::is_none")]
    released: Option<Vec<String>>,
    /// Players this message was applied to on an earlier delivery (a redelivery): not applied again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    already_applied: Vec<String>,
    /// Players a newer join or leave (later stream sequence) had been applied to: skipped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stale: Vec<String>,
    /// Every player in the session now.
    players: Vec<String>,
    capacity: u32,
    open_seats: u32,
}

impl Changed {
    fn new(action: Action, session: &SessionSeats, now: time::OffsetDateTime) -> Self {
        Self {
            session_id: session.session_id,
            match_id: SessionMetadata::of(session).map(|metadata| metadata.match_id),
            action,
            joined: None,
            from_reservations: None,
            already_joined: None,
            left: None,
            released: None,
            already_applied: Vec::new(),
            stale: Vec::new(),
            players: session.joined.iter().cloned().collect(),
            capacity: session.capacity,
            open_seats: session.open_seats(now),
        }
    }
}

/// What `<prefix>.session.players.rejected.<session_id>` carries: nothing changed.
#[derive(Debug, Serialize)]
struct Rejected {
    session_id: Uuid,
    action: Action,
    /// The players asked for, when the body could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    players: Option<Vec<String>>,
    error: ErrorDetail,
}

/// What `<prefix>.session.players.dead` carries: a join or leave given up on, and why.
#[derive(Debug, Serialize)]
struct DeadChange {
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<Action>,
    subject: String,
    error: ErrorDetail,
    deliveries: i64,
    stream_sequence: u64,
    /// `true`: the change is in the store, only its outcome could not be published. `false`:
    /// nothing was applied as far as the bridge knows (a store call that timed out may still have
    /// been carried out).
    applied: bool,
    /// The original payload (as text; invalid UTF-8 replaced).
    payload: String,
}

/// What became of one join or leave.
enum Verdict {
    /// Applied and published: double-ack.
    Ack { result: &'static str },
    /// Refused for good (unknown session, full, malformed) and published: TERM.
    Term { result: &'static str },
    /// Store down or outcome not published: NAK with delay; on the last delivery, a dead letter.
    /// `applied`: the change is in the store (only its outcome is missing).
    Retry { session_id: Option<Uuid>, error: ErrorDetail, applied: bool },
    /// No usable session id to report on, or given up: dead letter, then TERM.
    Dead { session_id: Option<Uuid>, error: ErrorDetail, applied: bool },
    /// Shutdown grace ran out: NAK at once, so another instance takes it now.
    Aborted,
}

/// Publishes seat outcomes and dead letters: through JetStream when a results stream captures
/// them (so "published" means "stored"), else on core NATS.
pub(crate) struct SeatPublisher {
    pub client: async_nats::Client,
    pub jetstream: Option<jetstream::Context>,
    pub metrics: Arc<NatsMetrics>,
}

impl SeatPublisher {
    async fn send<T: Serialize>(
        &self,
        kind: &'static str,
        subject: String,
        headers: HeaderMap,
        body: &T,
    ) -> Result<(), NatsError> {
        let payload = serde_json::to_vec(body)
            .map_err(|e| NatsError::Publish { subject: subject.clone(), message: e.to_string() })?;
        super::sink::publish(
            &self.client,
            self.jetstream.as_ref(),
            &self.metrics,
            kind,
            subject,
            headers,
            payload,
        )
        .await
    }
}

/// The handling of each join and leave (the loop is [`super::pull`]).
pub(crate) struct SeatConsumer {
    pub jetstream: jetstream::Context,
    pub settings: NatsSettings,
    pub subjects: Subjects,
    pub seats: Arc<dyn SeatService>,
    pub publisher: SeatPublisher,
    pub metrics: Arc<NatsMetrics>,
    /// True while a pull subscription is established (for `/readyz`).
    pub ready: Arc<AtomicBool>,
    /// Connections made so far; changes at each reconnect.
    pub connections: tokio::sync::watch::Receiver<u64>,
    pub permits: Arc<Semaphore>,
}

impl super::pull::PulledConsumer for SeatConsumer {
    const TASK: &'static str = "seats";
    const WHAT: &'static str = "seat consumer";

    fn consumer_name(&self) -> String {
        seats_consumer_name(&self.settings)
    }

    fn settings(&self) -> &NatsSettings {
        &self.settings
    }

    fn metrics(&self) -> &NatsMetrics {
        &self.metrics
    }

    fn ready(&self) -> &AtomicBool {
        &self.ready
    }

    fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    fn connections(&self) -> tokio::sync::watch::Receiver<u64> {
        self.connections.clone()
    }

    fn permits(&self) -> &Arc<Semaphore> {
        &self.permits
    }

    fn ensure(&self) -> impl std::future::Future<Output = Result<consumer::PullConsumer, NatsError>> + Send {
        self.ensure_consumer()
    }

    async fn handle(self: Arc<Self>, message: jetstream::Message, abort: CancellationToken) {
        self.handle_message(message, abort).await;
    }
}

impl SeatConsumer {
    async fn ensure_consumer(&self) -> Result<consumer::PullConsumer, NatsError> {
        let name = seats_consumer_name(&self.settings);
        let required = [self.subjects.players_join(), self.subjects.players_leave()];
        let stream =
            super::streams::ensure_streams(&self.jetstream, &self.settings, &self.subjects, &required)
                .await?;
        stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(name.clone()),
                description: Some("gameye-bridge instances: joins and leaves".to_owned()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: self.settings.ack_wait,
                max_deliver: self.settings.max_deliver,
                filter_subject: self.subjects.players_changes(),
                ..Default::default()
            })
            .await
            .map_err(|e| NatsError::Consumer { consumer: name, message: e.to_string() })
    }

    async fn handle_message(&self, message: jetstream::Message, abort: CancellationToken) {
        let _in_flight = self.metrics.in_flight("seats");
        let (delivered, sequence) =
            message.info().map(|info| (info.delivered, info.stream_sequence)).unwrap_or((1, 0));
        let last = delivered >= self.settings.max_deliver;
        let action = Action::of(message.subject.as_str(), &self.subjects);
        let work = self.decide(&message, action, last, sequence);
        let verdict = tokio::select! {
            verdict = with_progress(&message, self.settings.ack_wait / 3, work) => verdict,
            _ = abort.cancelled() => Verdict::Aborted,
        };
        self.settle(&message, action, verdict, last, delivered, sequence).await;
    }

    /// Everything up to (not including) the acknowledgement.
    async fn decide(
        &self,
        message: &jetstream::Message,
        action: Option<Action>,
        last: bool,
        sequence: u64,
    ) -> Verdict {
        let Some(action) = action else {
            let error = ErrorDetail::new(
                "INVALID_REQUEST",
                format!("`{}` is neither a join nor a leave subject", message.subject),
                false,
            );
            return Verdict::Dead { session_id: None, error, applied: false };
        };
        let change = match bridge::seats::parse_session_players(&message.payload) {
            Ok(change) => change,
            Err(invalid) => {
                let mut error = ErrorDetail::invalid(&invalid);
                let Some(session_id) = session_id_of(&message.payload) else {
                    error.message.push_str(" (and no usable session_id to report it on)");
                    return Verdict::Dead { session_id: None, error, applied: false };
                };
                let rejected = Rejected { session_id, action, players: None, error };
                return self.report_rejection(&rejected, sequence, Verdict::Term { result: "invalid" }).await;
            }
        };
        let session_id = change.session_id;
        // The stream sequence orders changes per player (0: no message info, which JetStream
        // always sends; such a change is applied unordered).
        let order = (sequence > 0).then_some(sequence);
        let mut applied = self.apply(action, &change, order).await;
        // Full may be early: a leave published before this join (first in stream order) may still
        // be in flight, here, on another instance or waiting for redelivery. Retried until no
        // older leave is outstanding; refused then, or on the last delivery.
        if let Ok(Err(refused @ SeatError::SessionFull { .. })) = &applied
            && action == Action::Join
            && order.is_some()
            && !last
        {
            let full = refused.to_string();
            let retry = |message: String| Verdict::Retry {
                session_id: Some(session_id),
                error: ErrorDetail::new("SESSION_FULL", message, true),
                applied: false,
            };
            match self.older_leave_outstanding(sequence).await {
                Ok(Some(leave)) => {
                    return retry(format!(
                        "{full}; the leave at stream sequence {leave}, published before, is not handled yet"
                    ));
                }
                // Every older leave is applied by now, perhaps since the refusal: once more.
                Ok(None) => applied = self.apply(action, &change, order).await,
                Err(error) => {
                    return retry(format!(
                        "{full}; whether a leave published before is outstanding is unknown: {error}"
                    ));
                }
            }
        }
        match applied {
            // Newer changes had been applied to every player (the players are distinct): nothing of
            // this one applies, now or before. Reported like a refusal, acknowledged as handled.
            Ok(Ok(changed)) if changed.stale.len() == change.players.len() => {
                let error = ErrorDetail::stale(sequence);
                let rejected = Rejected { session_id, action, players: Some(change.players), error };
                self.report_rejection(&rejected, sequence, Verdict::Ack { result: "stale" }).await
            }
            Ok(Ok(changed)) => {
                let (kind, subject) = match action {
                    Action::Join => ("joined", self.subjects.players_joined(&session_id.to_string())),
                    Action::Leave => ("left", self.subjects.players_left(&session_id.to_string())),
                };
                let headers = outcome_headers(session_id, changed.match_id.as_deref(), kind, sequence);
                match self.publisher.send(kind, subject, headers, &changed).await {
                    Ok(()) => Verdict::Ack { result: kind },
                    // Applied but not reported: the redelivery finds it applied (`already_applied`) and
                    // reports it, or finds it overtaken by a newer change (`STALE`).
                    Err(error) => Verdict::Retry {
                        session_id: Some(session_id),
                        error: ErrorDetail::new(
                            "UPSTREAM_UNAVAILABLE",
                            format!("outcome not published: {error}"),
                            true,
                        ),
                        applied: true,
                    },
                }
            }
            Ok(Err(refused)) => {
                let rejected = Rejected {
                    session_id,
                    action,
                    players: Some(change.players),
                    error: ErrorDetail::refused(session_id, &refused),
                };
                self.report_rejection(&rejected, sequence, Verdict::Term { result: "rejected" }).await
            }
            Err(error) if !last => {
                tracing::warn!(%session_id, %error, "seat change not applied; redelivering");
                Verdict::Retry {
                    session_id: Some(session_id),
                    error: ErrorDetail::of_service(&error),
                    applied: false,
                }
            }
            Err(error) => {
                // The last delivery: the publisher hears it failed (retryable), beside the dead letter.
                let error = ErrorDetail::of_service(&error);
                let rejected =
                    Rejected { session_id, action, players: Some(change.players), error: error.clone() };
                if let Err(publish_error) = self.publish_rejection(&rejected, sequence).await {
                    tracing::warn!(%session_id, error = %publish_error, "rejection not published");
                }
                Verdict::Dead { session_id: Some(session_id), error, applied: false }
            }
        }
    }

    /// Applies the join or leave (ordered by `order`); its outcome's body, or the refusal.
    async fn apply(
        &self,
        action: Action,
        change: &SessionPlayers,
        order: Option<u64>,
    ) -> Result<Result<Changed, SeatError>, SeatServiceError> {
        let session_id = change.session_id;
        match action {
            Action::Join => self.seats.join(session_id, &change.players, order).await.map(|result| {
                result.map(|joined| {
                    let mut body = Changed::new(action, &joined.session, self.seats.now());
                    body.joined = Some(joined.outcome.joined.into_iter().collect());
                    body.from_reservations = Some(joined.outcome.from_reservations.into_iter().collect());
                    body.already_joined = Some(joined.outcome.already_joined.into_iter().collect());
                    body.already_applied = joined.outcome.duplicate.into_iter().collect();
                    body.stale = joined.outcome.stale.into_iter().collect();
                    body
                })
            }),
            Action::Leave => self.seats.leave(session_id, &change.players, order).await.map(|result| {
                result.map(|left| {
                    let mut body = Changed::new(action, &left.session, self.seats.now());
                    body.left = Some(left.outcome.left.into_iter().collect());
                    body.released = Some(left.outcome.released.into_iter().collect());
                    body.already_applied = left.outcome.duplicate.into_iter().collect();
                    body.stale = left.outcome.stale.into_iter().collect();
                    body
                })
            }),
        }
    }

    /// The stream sequence of a leave published before `sequence` and not yet acknowledged, if
    /// any. Everything up to the consumer's ack floor is acknowledged, so a floor right below
    /// `sequence` settles it. But a filtered consumer's floor stays below other subjects' messages
    /// (matches share the stream) until a later join or leave is acknowledged, so a gap is looked
    /// up in the stream: an unacknowledged leave is still stored there (work-queue retention
    /// deletes a message once acknowledged; under other retention an acknowledged leave above the
    /// floor costs a needless retry, never a lost join).
    async fn older_leave_outstanding(&self, sequence: u64) -> Result<Option<u64>, NatsError> {
        let stream_name = &self.settings.stream;
        let stream_error = |message: String| NatsError::Stream { stream: stream_name.clone(), message };
        let stream =
            self.jetstream.get_stream_no_info(stream_name).await.map_err(|e| stream_error(e.to_string()))?;
        let consumer = seats_consumer_name(&self.settings);
        let info = stream
            .consumer_info(&consumer)
            .await
            .map_err(|e| NatsError::Consumer { consumer, message: e.to_string() })?;
        let unsettled = info.ack_floor.stream_sequence + 1;
        if unsettled >= sequence {
            return Ok(None);
        }
        match stream.get_first_raw_message_by_subject(self.subjects.players_leave(), unsettled).await {
            Ok(leave) => Ok((leave.sequence < sequence).then_some(leave.sequence)),
            Err(error) if error.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(error) => Err(stream_error(error.to_string())),
        }
    }

    async fn publish_rejection(&self, rejected: &Rejected, sequence: u64) -> Result<(), NatsError> {
        let session_id = rejected.session_id;
        let headers = outcome_headers(session_id, None, "rejected", sequence);
        let subject = self.subjects.players_rejected(&session_id.to_string());
        self.publisher.send("rejected", subject, headers, rejected).await
    }

    /// Publishes a refusal (nothing changed); `settled` once it is out (TERM for a refusal, which
    /// never changes on redelivery; ACK for a stale change), else retry.
    async fn report_rejection(&self, rejected: &Rejected, sequence: u64, settled: Verdict) -> Verdict {
        match self.publish_rejection(rejected, sequence).await {
            Ok(()) => settled,
            Err(error) => Verdict::Retry {
                session_id: Some(rejected.session_id),
                error: ErrorDetail::new(
                    rejected.error.code,
                    format!("{}; not published: {error}", rejected.error.message),
                    rejected.error.retryable,
                ),
                applied: false,
            },
        }
    }

    async fn settle(
        &self,
        message: &jetstream::Message,
        action: Option<Action>,
        verdict: Verdict,
        last: bool,
        delivered: i64,
        sequence: u64,
    ) {
        let kind = metrics_kind(action);
        let final_ack = |ack: AckKind| async move {
            if let Err(error) = message.double_ack_with(ack).await {
                tracing::warn!(%error, "acknowledgement not confirmed; JetStream may redeliver (applied again, idempotent)");
                self.metrics.handled(kind, "ack_error");
            }
        };
        match verdict {
            Verdict::Ack { result } => {
                final_ack(AckKind::Ack).await;
                self.metrics.handled(kind, result);
            }
            Verdict::Term { result } => {
                final_ack(AckKind::Term).await;
                self.metrics.handled(kind, result);
            }
            Verdict::Retry { session_id, error, .. } if !last => {
                tracing::info!(session_id = ?session_id, delivered, reason = %error.message, "NAK: will be redelivered");
                super::consumer::nak_after(message, self.settings.nak_delay).await;
                self.metrics.handled(kind, "nak");
            }
            Verdict::Retry { session_id, error, applied } | Verdict::Dead { session_id, error, applied } => {
                tracing::warn!(session_id = ?session_id, delivered, applied, reason = %error.message, "giving up on a join/leave: dead letter");
                let dead = DeadChange {
                    session_id,
                    action,
                    subject: message.subject.to_string(),
                    error,
                    deliveries: delivered,
                    stream_sequence: sequence,
                    applied,
                    payload: String::from_utf8_lossy(&message.payload).into_owned(),
                };
                let mut headers = HeaderMap::new();
                if let Some(session_id) = session_id {
                    headers.insert(SESSION_ID_HEADER, session_id.to_string());
                }
                headers.insert(STATUS_HEADER, dead.error.code);
                let subject = self.subjects.players_dead();
                let sent = super::consumer::dead_letter_sent(last, || {
                    self.publisher.send("players_dead", subject.clone(), headers.clone(), &dead)
                })
                .await;
                if sent {
                    final_ack(AckKind::Term).await;
                    self.metrics.handled(kind, "dead");
                } else {
                    // Redelivered, to end the same way and try the letter again.
                    super::consumer::nak_after(message, self.settings.nak_delay).await;
                    self.metrics.handled(kind, "nak");
                }
            }
            Verdict::Aborted => {
                let _ = message.ack_with(AckKind::Nak(None)).await;
                self.metrics.handled(kind, "aborted");
            }
        }
    }
}

/// Headers of a seat outcome. `Nats-Msg-Id` is per inbound message and outcome kind, so a results
/// stream stores the outcome of a redelivered join once (the first, most telling, report).
fn outcome_headers(
    session_id: Uuid,
    match_id: Option<&str>,
    status: &'static str,
    sequence: u64,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(SESSION_ID_HEADER, session_id.to_string());
    if let Some(match_id) = match_id {
        headers.insert(MATCH_ID_HEADER, match_id);
    }
    headers.insert(STATUS_HEADER, status);
    if sequence > 0 {
        headers.insert("Nats-Msg-Id", format!("players:{sequence}:{status}"));
    }
    headers
}

/// The session id of a body that failed validation, when it holds a usable one (a UUID: safe in
/// a subject).
fn session_id_of(payload: &[u8]) -> Option<Uuid> {
    let body: serde_json::Value = serde_json::from_slice(payload).ok()?;
    Uuid::parse_str(body.get("session_id")?.as_str()?).ok()
}

/// `<prefix>.backfill.request`: reserve seats (or place a new match) and reply, like `POST /v1/backfill`.
pub(crate) struct BackfillResponder {
    pub client: async_nats::Client,
    pub subjects: Subjects,
    pub seats: Arc<dyn SeatService>,
    pub service: Arc<dyn PlacementService>,
    pub metrics: Arc<NatsMetrics>,
    /// Where announcements of new matches run after the reply went out (awaited at shutdown).
    pub background: TaskTracker,
}

/// A backfill reply: the `Gameye-Status` header, ids for the other headers, the JSON body.
struct Reply {
    status: &'static str,
    session_id: Option<Uuid>,
    match_id: Option<String>,
    body: Vec<u8>,
}

impl Reply {
    fn error(status: &'static str, error: ErrorDetail) -> Self {
        Self {
            status,
            session_id: None,
            match_id: None,
            body: to_json(&serde_json::json!({ "error": error })),
        }
    }
}

impl BackfillResponder {
    pub async fn handle(self: Arc<Self>, message: async_nats::Message) {
        let _in_flight = self.metrics.in_flight("backfill");
        let Some(reply) = message.reply.clone() else {
            tracing::warn!(subject = %message.subject, "backfill request without a reply subject ignored");
            self.metrics.handled("backfill", "no_reply");
            return;
        };
        let answer = self.answer(&message.payload).await;
        let mut headers = HeaderMap::new();
        headers.insert(STATUS_HEADER, answer.status);
        if let Some(session_id) = answer.session_id {
            headers.insert(SESSION_ID_HEADER, session_id.to_string());
        }
        if let Some(match_id) = &answer.match_id {
            headers.insert(MATCH_ID_HEADER, match_id.as_str());
        }
        match self.client.publish_with_headers(reply, headers, answer.body.into()).await {
            Ok(()) => self.metrics.handled("backfill", answer.status),
            Err(error) => {
                tracing::warn!(%error, "backfill reply not sent");
                self.metrics.handled("backfill", "error");
            }
        }
    }

    async fn answer(&self, payload: &[u8]) -> Reply {
        let request = match bridge::seats::parse_backfill_request(payload) {
            Ok(request) => request,
            Err(invalid) => return Reply::error("invalid", ErrorDetail::invalid(&invalid)),
        };
        let outcome = bridge::seats::backfill_or_place(
            self.seats.as_ref(),
            self.service.as_ref(),
            SOURCE,
            &request,
            Uuid::new_v4(),
        )
        .await;
        match outcome {
            Ok(BackfillOutcome::Reserved(result)) => Reply {
                status: "reserved",
                session_id: Some(result.assignment.session_id),
                match_id: Some(result.assignment.match_id.clone()),
                body: to_json(&result),
            },
            Ok(BackfillOutcome::NoSeats) => Reply::error(
                "no_seats",
                ErrorDetail::new(
                    "NO_SEATS",
                    "no eligible session has open seats for every requesting player",
                    false,
                ),
            ),
            Ok(BackfillOutcome::Placed { match_id, progress }) => self.placed(match_id, progress),
            // Logged by the engine; the requester reused a request_id for another match.
            Err(error @ SeatServiceError::MatchIdConflict(_)) => {
                Reply::error("conflict", ErrorDetail::of_service(&error))
            }
            Err(error) => {
                tracing::error!(%error, "backfill failed");
                Reply::error("error", ErrorDetail::of_service(&error))
            }
        }
    }

    /// A new match placed for `create_if_none`: answered like `<prefix>.match.request`.
    fn placed(&self, match_id: String, progress: Progress) -> Reply {
        let session_id = Some(bridge::session_id(SOURCE, &match_id));
        match progress {
            Progress::Done(outcome) => {
                let (status, body) = match &outcome {
                    Outcome::Placed(assignment) => ("placed", to_json(assignment)),
                    Outcome::Failed(failure) => ("failed", to_json(failure)),
                };
                // Subscribers of match.assigned/failed hear of it too, off the requester's path.
                let service = self.service.clone();
                self.background.spawn(async move {
                    let _ = service.announce(SOURCE, &outcome).await;
                });
                Reply { status, session_id, match_id: Some(match_id), body }
            }
            Progress::Pending { .. } => {
                let message = format!(
                    "still being placed after the placement deadline; the outcome will be published on {} or {}",
                    self.subjects.assigned(&match_id),
                    self.subjects.failed(&match_id)
                );
                let failure = Failure::new(&match_id, FailureCode::DeadlineExceeded, message);
                Reply { status: "pending", session_id, match_id: Some(match_id), body: to_json(&failure) }
            }
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_of_refused_bodies_must_be_uuids() {
        let id = Uuid::new_v4();
        assert_eq!(session_id_of(format!(r#"{{"session_id": "{id}", "players": []}}"#).as_bytes()), Some(id));
        assert_eq!(session_id_of(br#"{"session_id": "a.b.>", "players": ["p"]}"#), None);
        assert_eq!(session_id_of(b"not json"), None);
    }

    #[test]
    fn refusals_carry_the_http_codes() {
        let id = Uuid::new_v4();
        assert_eq!(ErrorDetail::refused(id, &SeatError::NotFound).code, "NOT_FOUND");
        assert_eq!(ErrorDetail::refused(id, &SeatError::Ended).code, "NOT_FOUND");
        let full = SeatError::SessionFull { capacity: 2, open: 0, needed: 1 };
        assert_eq!(ErrorDetail::refused(id, &full).code, "SESSION_FULL");
    }
}

//! The end of a session, announced however it ended: the reconciler finding it gone at Gameye
//! (reason `gone`) or `DELETE /v1/sessions/{id}` stopping it (reason `stopped`). Every
//! [`SessionEvents`] sink hears it: NATS (`<prefix>.session.ended.<id>`, in the nats adapter) and
//! the signed [`SessionEndedWebhook`].
//!
//! Through an outbox in the state store ([`EndAnnouncementStore`]), like placements' outcomes: the
//! end is owed in the store before it is made, the ender asks the [`EndAnnouncer`] to announce it at
//! once (in the background, so neither a scan nor a `DELETE` waits for a receiver), and every
//! instance's [`EndAnnouncer::run`] announces what is still owed a window later: an attempt that
//! failed, an answer that was lost, an instance that stopped in between. What is announced is read
//! from the ended record, so every attempt says the same. At least once: a sink may hear an end
//! again after another sink failed (receivers deduplicate by session id; the webhook's id is one
//! per session).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bridge::placement::{
    BackfillAnswer, BackfillRequest, BoxFuture, EndedSession, JoinAnswer, LeaveAnswer, SeatService,
    SeatServiceError, SessionFilter, SessionMetadata,
};
use bridge::ports::{
    DeliveryError, EndAnnouncementStore, EndOwing, EndRecord, Ending, SessionEvents, SessionsPage, StoreError,
};
use bridge::seats::{EndReason, SeatResult, SessionEnd, SessionSeats};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::webhook::{WebhookSender, message_id};

/// The `type` of the session-ended webhook.
pub const SESSION_ENDED_TYPE: &str = "session.ended";

/// Ends announced at once in the background at a time; beyond that (a mass TTL expiry) the outbox
/// announces them a window later.
const INLINE_ANNOUNCEMENTS: usize = 64;
/// Owed ends one outbox round claims and announces (concurrently).
const OWED_PER_ROUND: usize = 100;
/// How often each instance looks for owed ends.
const OUTBOX_POLL: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// The announcer and its outbox

/// How an [`EndAnnouncer`] times its attempts.
#[derive(Debug, Clone, Copy)]
pub struct EndAnnouncerSettings {
    /// One attempt at every sink is cut after this long.
    pub deadline: Duration,
    /// An end still not announced this long after it happened is given up (logged).
    pub give_up_after: Duration,
}

impl EndAnnouncerSettings {
    /// How ends are owed: the outbox takes an end (and a claimed one from its retrier) one attempt
    /// and five seconds after it; the ended record is kept until its last retry can read it.
    pub fn owing(&self) -> EndOwing {
        let window = self.deadline + Duration::from_secs(5);
        EndOwing { window, keep_for: self.give_up_after + window * 2 }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnnouncementLabels {
    /// delivered, retry, given_up, dropped
    result: &'static str,
}

/// Session-end announcements by result, and how many are owed.
#[derive(Clone, Default)]
pub struct EndAnnouncementMetrics {
    results: Family<AnnouncementLabels, Counter>,
    owed: Gauge,
}

impl EndAnnouncementMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "session_end_announcements",
            "Announcements of a session's end to every sink, by result (delivered; retry: a sink \
             failed, due again later; given_up: refused, or out of time; dropped: the end never \
             happened or its record is gone)",
            metrics.results.clone(),
        );
        registry.register(
            "session_ends_owed",
            "Session ends not yet announced to every sink (due or not), as of the last outbox round",
            metrics.owed.clone(),
        );
        metrics
    }

    fn count(&self, result: &'static str) {
        self.results.get_or_create(&AnnouncementLabels { result }).inc();
    }
}

/// What one attempt at announcing an owed end came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndAnnounced {
    Delivered,
    /// A sink or the store failed, or the end has not happened (yet): due again later.
    Retry,
    GivenUp,
    /// Nothing owed: the record says it was announced already, or that end did not happen.
    Dropped,
}

/// Announces session ends to every sink, from the ended records, and keeps the outbox.
pub struct EndAnnouncer<S> {
    store: S,
    sinks: Vec<Arc<dyn SessionEvents>>,
    settings: EndAnnouncerSettings,
    inline_slots: Arc<Semaphore>,
    inline: TaskTracker,
    metrics: EndAnnouncementMetrics,
}

impl<S: EndAnnouncementStore> EndAnnouncer<S> {
    pub fn new(
        store: S,
        sinks: Vec<Arc<dyn SessionEvents>>,
        settings: EndAnnouncerSettings,
        metrics: EndAnnouncementMetrics,
    ) -> Self {
        Self {
            store,
            sinks,
            settings,
            inline_slots: Arc::new(Semaphore::new(INLINE_ANNOUNCEMENTS)),
            inline: TaskTracker::new(),
            metrics,
        }
    }

    /// How an ender ends a session whose end this announcer announces.
    pub fn ending(&self, reason: EndReason) -> Ending {
        self.settings.owing().ending(reason)
    }

    /// Announces the end of `session_id` (just ended, owed) in the background; when too many are
    /// under way already, the outbox announces it a window later.
    pub fn announce_soon(self: &Arc<Self>, session_id: Uuid) {
        let Ok(slot) = self.inline_slots.clone().try_acquire_owned() else {
            tracing::debug!(%session_id, "many ends being announced: this one is left to the outbox");
            return;
        };
        let announcer = self.clone();
        self.inline.spawn(async move {
            let _slot = slot;
            if announcer.announce(session_id, OffsetDateTime::now_utc()).await == EndAnnounced::Retry {
                tracing::warn!(%session_id, "session end not announced yet; the outbox tries again");
            }
        });
    }

    /// Announces one owed end to every sink at once, each cut at the deadline, and settles its
    /// entry: removed when every sink took it, it is given up, or the record says nothing is
    /// owed; else due again after a quarter of the end's age (1 s to 5 min).
    pub async fn announce(&self, session_id: Uuid, now: OffsetDateTime) -> EndAnnounced {
        let result = match self.attempt(session_id, now).await {
            Ok(result) => result,
            Err(error) if !error.transient => {
                tracing::error!(%session_id, %error, "session end announcement given up: the state store refuses it");
                self.settle(session_id).await;
                EndAnnounced::GivenUp
            }
            Err(error) => {
                // Due again when the claim's hold runs out.
                tracing::debug!(%session_id, %error, "session end not announced (state store)");
                EndAnnounced::Retry
            }
        };
        self.metrics.count(match result {
            EndAnnounced::Delivered => "delivered",
            EndAnnounced::Retry => "retry",
            EndAnnounced::GivenUp => "given_up",
            EndAnnounced::Dropped => "dropped",
        });
        result
    }

    /// Nothing more is owed for the end (logged when that fails: the outbox comes back to it).
    async fn settle(&self, session_id: Uuid) {
        if let Err(error) = self.store.end_announced(session_id).await {
            tracing::debug!(%session_id, %error, "settled session end still indexed; the outbox comes back to it");
        }
    }

    async fn attempt(&self, session_id: Uuid, now: OffsetDateTime) -> Result<EndAnnounced, StoreError> {
        let (session, end) = match self.store.session_end(session_id, now).await? {
            EndRecord::Owed(session, end) => (session, end),
            EndRecord::Settled => {
                self.store.end_announced(session_id).await?;
                return Ok(EndAnnounced::Dropped);
            }
            EndRecord::NotEnded => {
                // Its end failed, or is still under way: the record will say.
                self.store.defer_end_announcement(session_id, now + self.settings.owing().window).await?;
                return Ok(EndAnnounced::Retry);
            }
            EndRecord::Gone => {
                tracing::error!(%session_id, "session end announcement given up: its record expired first");
                self.store.end_announced(session_id).await?;
                return Ok(EndAnnounced::GivenUp);
            }
        };
        let attempts = self.sinks.iter().map(|sink| {
            let (session, end) = (&session, &end);
            async move {
                match tokio::time::timeout(self.settings.deadline, sink.session_ended(session, end)).await {
                    Ok(result) => result,
                    Err(_) => Err(DeliveryError {
                        sink: sink.name().to_owned(),
                        message: format!("no answer within {:?}", self.settings.deadline),
                        permanent: false,
                    }),
                }
            }
        });
        let failures: Vec<DeliveryError> =
            futures::future::join_all(attempts).await.into_iter().filter_map(Result::err).collect();
        if failures.is_empty() {
            self.store.end_announced(session_id).await?;
            return Ok(EndAnnounced::Delivered);
        }
        let age = (now - end.ended_at).try_into().unwrap_or(Duration::ZERO);
        let refused = failures.iter().all(|f| f.permanent);
        if refused || age >= self.settings.give_up_after {
            let why = if refused { "refused" } else { "still failing" };
            for failure in &failures {
                tracing::error!(%session_id, sink = %failure.sink, error = %failure.message, "session end announcement given up: {why}");
            }
            self.store.end_announced(session_id).await?;
            return Ok(EndAnnounced::GivenUp);
        }
        for failure in &failures {
            tracing::debug!(%session_id, sink = %failure.sink, error = %failure.message, "session end not announced");
        }
        let retry_in = (age / 4).clamp(Duration::from_secs(1), Duration::from_secs(300));
        // The last try at the give-up age at the latest: the ended record is kept only a little
        // beyond it, and a try after its expiry would never reach the sinks.
        let last_try = end.ended_at + self.settings.give_up_after;
        self.store.defer_end_announcement(session_id, (now + retry_in).min(last_try)).await?;
        Ok(EndAnnounced::Retry)
    }

    /// One outbox round: claims up to `limit` due ends and announces them concurrently. Answers
    /// how many were claimed.
    pub async fn announce_owed(&self, limit: usize) -> Result<usize, StoreError> {
        let now = OffsetDateTime::now_utc();
        let due = self.store.claim_end_announcements(now, limit, self.settings.owing().window).await?;
        let results = futures::future::join_all(due.iter().map(|id| self.announce(*id, now))).await;
        let waiting = results.iter().filter(|r| **r == EndAnnounced::Retry).count();
        if waiting > 0 {
            // One line per round, not per end: a receiver down during a mass expiry is one problem.
            tracing::warn!(
                waiting,
                of = due.len(),
                "session ends still not announced (a sink is failing, or their end has not happened); retrying"
            );
        }
        Ok(due.len())
    }

    /// The outbox loop, every second until `stop` (a full round: at once).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let this = &self;
        crate::pace::run_rounds(OUTBOX_POLL, &stop, || async move {
            let full = match this.announce_owed(OWED_PER_ROUND).await {
                Ok(claimed) => claimed == OWED_PER_ROUND,
                Err(error) => {
                    tracing::warn!(%error, "session-end outbox round failed; will try again");
                    false
                }
            };
            if let Ok(owed) = this.store.owed_end_announcements().await {
                this.metrics.owed.set(i64::try_from(owed).unwrap_or(i64::MAX));
            }
            full
        })
        .await;
    }

    /// Waits up to `grace` for the announcements under way; the rest stay owed for the outbox.
    pub async fn close(&self, grace: Duration) {
        self.inline.close();
        if tokio::time::timeout(grace, self.inline.wait()).await.is_err() {
            tracing::info!(
                pending = self.inline.len(),
                "session ends still being announced at exit stay owed"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The webhook

/// The body of the session-ended webhook (Standard Webhooks' `type`/`timestamp`/`data` shape, like
/// the results webhook).
#[derive(Debug, Serialize)]
pub struct SessionEndedPayload<'a> {
    /// Always `session.ended`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When the bridge ended the session (the same as `data.ended_at`).
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    pub data: SessionEndedData<'a>,
}

/// What the session-ended webhook says about the session.
#[derive(Debug, Serialize)]
pub struct SessionEndedData<'a> {
    pub session_id: Uuid,
    /// Absent only for a record without the bridge's metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_id: Option<String>,
    pub image: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'a str>,
    pub location: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    /// Players who were joined when it ended.
    pub players: Vec<&'a str>,
    /// Players who held a live reservation when it ended (they had not joined yet).
    pub reserved_players: Vec<&'a str>,
    /// `gone` (Gameye no longer runs it) or `stopped` (`DELETE /v1/sessions/{id}`).
    pub reason: &'a str,
    #[serde(with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub placed_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub ended_at: OffsetDateTime,
}

/// The `webhook-id` of a session's end: one per session, so receivers deduplicate retries.
pub fn session_ended_id(session_id: Uuid) -> String {
    message_id(&[SESSION_ENDED_TYPE, &session_id.to_string()])
}

/// The webhook body announcing that `session` ended as `end` says.
pub fn session_ended_body(session: &SessionSeats, end: &SessionEnd) -> Result<Vec<u8>, serde_json::Error> {
    let metadata = SessionMetadata::of(session);
    let data = SessionEndedData {
        session_id: session.session_id,
        match_id: metadata.as_ref().map(|m| m.match_id.clone()),
        image: &session.info.image,
        version: session.info.version.as_deref(),
        location: &session.info.location,
        labels: &session.info.labels,
        players: end.players.iter().map(String::as_str).collect(),
        reserved_players: end.reserved_players.iter().map(String::as_str).collect(),
        reason: end.reason.as_str(),
        placed_at: metadata.map(|m| m.placed_at),
        ended_at: end.ended_at,
    };
    serde_json::to_vec(&SessionEndedPayload { kind: SESSION_ENDED_TYPE, timestamp: end.ended_at, data })
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookResultLabels {
    /// delivered, retry, failed
    result: &'static str,
}

/// Session-ended webhook attempts by result.
#[derive(Clone, Default)]
pub struct SessionWebhookMetrics {
    results: Family<WebhookResultLabels, Counter>,
}

impl SessionWebhookMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "session_ended_webhooks",
            "Session-ended webhook attempts by result (delivered; retry: a transient failure, the \
             outbox tries again; failed: refused)",
            metrics.results.clone(),
        );
        metrics
    }

    fn count(&self, result: &'static str) {
        self.results.get_or_create(&WebhookResultLabels { result }).inc();
    }
}

/// POSTs a signed `session.ended` event per ended session to one URL: one attempt per call, so
/// retries are the outbox's (an end it holds survives a restart; a retry it makes carries the
/// same webhook-id and body). 5xx, 408, 429, timeouts and connection errors are transient; other
/// answers are refusals, not retried.
pub struct SessionEndedWebhook {
    sender: WebhookSender,
    metrics: SessionWebhookMetrics,
}

impl SessionEndedWebhook {
    pub fn new(sender: WebhookSender, metrics: SessionWebhookMetrics) -> Self {
        Self { sender, metrics }
    }
}

impl SessionEvents for SessionEndedWebhook {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn session_ended<'a>(
        &'a self,
        session: &'a SessionSeats,
        end: &'a SessionEnd,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let failed = |message: String, permanent: bool| DeliveryError {
                sink: "webhook".to_owned(),
                message,
                permanent,
            };
            let body = session_ended_body(session, end)
                .map_err(|e| failed(format!("cannot encode the session-ended event: {e}"), true))?;
            match self.sender.post(&session_ended_id(session.session_id), &body).await {
                Ok(()) => {
                    self.metrics.count("delivered");
                    Ok(())
                }
                Err(error) => {
                    let permanent = error.is_permanent();
                    self.metrics.count(if permanent { "failed" } else { "retry" });
                    Err(failed(error.to_string(), permanent))
                }
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Ending through the API announces too

/// A [`SeatService`] whose `end` (`DELETE /v1/sessions/{id}`) has the end announced at once (the
/// engine owes it, see [`bridge::placement::SeatSettings::end_announcements`]). Only the call
/// whose store end succeeded announces, so a session ended by both paths at once is announced
/// once. Everything else is passed through unchanged.
pub struct EndAnnouncingSeats<S> {
    inner: Arc<dyn SeatService>,
    announcer: Arc<EndAnnouncer<S>>,
}

impl<S> EndAnnouncingSeats<S> {
    pub fn new(inner: Arc<dyn SeatService>, announcer: Arc<EndAnnouncer<S>>) -> Self {
        Self { inner, announcer }
    }
}

impl<S: EndAnnouncementStore> SeatService for EndAnnouncingSeats<S> {
    fn now(&self) -> OffsetDateTime {
        self.inner.now()
    }

    fn list_sessions<'a>(
        &'a self,
        filter: &'a SessionFilter,
    ) -> BoxFuture<'a, Result<Vec<SessionSeats>, SeatServiceError>> {
        self.inner.list_sessions(filter)
    }

    fn list_sessions_page<'a>(
        &'a self,
        filter: &'a SessionFilter,
        after: Option<Uuid>,
        limit: usize,
    ) -> BoxFuture<'a, Result<SessionsPage, SeatServiceError>> {
        self.inner.list_sessions_page(filter, after, limit)
    }

    fn sessions_holding<'a>(
        &'a self,
        players: &'a BTreeSet<String>,
    ) -> BoxFuture<'a, Result<Vec<SessionSeats>, SeatServiceError>> {
        self.inner.sessions_holding(players)
    }

    fn get_session(&self, session_id: Uuid) -> BoxFuture<'_, Result<Option<SessionSeats>, SeatServiceError>> {
        self.inner.get_session(session_id)
    }

    fn join<'a>(
        &'a self,
        session_id: Uuid,
        players: &'a [String],
        order: Option<u64>,
    ) -> BoxFuture<'a, Result<SeatResult<JoinAnswer>, SeatServiceError>> {
        self.inner.join(session_id, players, order)
    }

    fn leave<'a>(
        &'a self,
        session_id: Uuid,
        players: &'a [String],
        order: Option<u64>,
    ) -> BoxFuture<'a, Result<SeatResult<LeaveAnswer>, SeatServiceError>> {
        self.inner.leave(session_id, players, order)
    }

    fn end(&self, session_id: Uuid) -> BoxFuture<'_, Result<SeatResult<EndedSession>, SeatServiceError>> {
        Box::pin(async move {
            let answer = self.inner.end(session_id).await?;
            if answer.is_ok() {
                self.announcer.announce_soon(session_id);
            }
            Ok(answer)
        })
    }

    fn backfill<'a>(
        &'a self,
        request: &'a BackfillRequest,
    ) -> BoxFuture<'a, Result<Option<BackfillAnswer>, SeatServiceError>> {
        self.inner.backfill(request)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bridge::placement::SessionMetadata;
    use bridge::ports::SeatStore;
    use bridge::seats::{NewSession, SessionInfo, SessionStatus};
    use serde_json::{Value, json};

    use super::*;
    use crate::store::MemoryStore;

    fn metadata() -> bridge::seats::JsonText {
        let metadata = SessionMetadata {
            match_id: "m-1".into(),
            host: "192.0.2.1".into(),
            ports: vec![],
            placed_at: OffsetDateTime::UNIX_EPOCH,
        };
        bridge::seats::JsonText::of(&metadata).unwrap()
    }

    fn info() -> SessionInfo {
        SessionInfo {
            image: "demo-game".into(),
            version: Some("1.0.0".into()),
            location: "eu-west-1".into(),
            labels: [("mode".to_owned(), "duel".to_owned())].into(),
            metadata: metadata(),
        }
    }

    #[test]
    fn the_body_describes_the_session_and_its_players() {
        let session = SessionSeats {
            session_id: Uuid::from_u128(7),
            capacity: 8,
            status: SessionStatus::Ended,
            info: info(),
            joined: Default::default(),
            reservations: Default::default(),
            last_order: Default::default(),
        };
        let end = SessionEnd {
            reason: EndReason::Gone,
            ended_at: OffsetDateTime::UNIX_EPOCH + time::Duration::hours(1),
            players: ["p1".to_owned(), "p2".to_owned()].into(),
            reserved_players: ["p3".to_owned()].into(),
        };
        let body: Value = serde_json::from_slice(&session_ended_body(&session, &end).unwrap()).unwrap();
        assert_eq!(body["type"], "session.ended");
        assert_eq!(body["timestamp"], "1970-01-01T01:00:00Z");
        assert_eq!(body["timestamp"], body["data"]["ended_at"]);
        let data = &body["data"];
        assert_eq!(data["session_id"], Uuid::from_u128(7).to_string());
        assert_eq!(data["match_id"], "m-1");
        assert_eq!(data["version"], "1.0.0");
        assert_eq!(data["labels"], json!({"mode": "duel"}));
        assert_eq!(data["players"], json!(["p1", "p2"]));
        assert_eq!(data["reserved_players"], json!(["p3"]));
        assert_eq!(data["reason"], "gone");
        assert_eq!(data["placed_at"], "1970-01-01T00:00:00Z");
    }

    #[test]
    fn the_webhook_id_is_one_per_session() {
        assert_eq!(session_ended_id(Uuid::from_u128(7)), session_ended_id(Uuid::from_u128(7)));
        assert_ne!(session_ended_id(Uuid::from_u128(7)), session_ended_id(Uuid::from_u128(8)));
    }

    /// A sink failing `failures` times, then recording what it heard.
    struct Flaky {
        failures: Mutex<u32>,
        permanent: bool,
        heard: Mutex<Vec<(Uuid, SessionEnd)>>,
    }

    fn flaky(failures: u32, permanent: bool) -> Arc<Flaky> {
        Arc::new(Flaky { failures: failures.into(), permanent, heard: Default::default() })
    }

    impl SessionEvents for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }

        fn session_ended<'a>(
            &'a self,
            session: &'a SessionSeats,
            end: &'a SessionEnd,
        ) -> BoxFuture<'a, Result<(), DeliveryError>> {
            Box::pin(async move {
                let mut failures = self.failures.lock().unwrap();
                if *failures > 0 {
                    *failures -= 1;
                    return Err(DeliveryError {
                        sink: "flaky".into(),
                        message: "down".into(),
                        permanent: self.permanent,
                    });
                }
                self.heard.lock().unwrap().push((session.session_id, end.clone()));
                Ok(())
            })
        }
    }

    const SETTINGS: EndAnnouncerSettings =
        EndAnnouncerSettings { deadline: Duration::from_secs(1), give_up_after: Duration::from_secs(3600) };

    fn announcer(store: &MemoryStore, sinks: &[Arc<Flaky>]) -> EndAnnouncer<MemoryStore> {
        let sinks = sinks.iter().map(|sink| sink.clone() as Arc<dyn SessionEvents>).collect();
        EndAnnouncer::new(store.clone(), sinks, SETTINGS, EndAnnouncementMetrics::default())
    }

    /// A session with `p1` joined and `p2` reserved, ended (owed) at `now`.
    async fn ended(
        store: &MemoryStore,
        id: u128,
        announcer: &EndAnnouncer<MemoryStore>,
        now: OffsetDateTime,
    ) {
        let new = NewSession {
            session_id: Uuid::from_u128(id),
            capacity: 4,
            status: SessionStatus::Running,
            info: info(),
            players: vec!["p1".into(), "p2".into()],
            joined: Vec::new(),
            reservation_ttl: Duration::from_secs(60),
            now,
        };
        store.create_session(&new, Duration::from_secs(600)).await.unwrap().unwrap();
        store.join_players(new.session_id, &["p1".to_owned()], now).await.unwrap().unwrap();
        let ending = announcer.ending(EndReason::Stopped);
        store.end_session(new.session_id, ending, now).await.unwrap().unwrap();
    }

    async fn owed_due(store: &MemoryStore, now: OffsetDateTime) -> Vec<Uuid> {
        store.claim_end_announcements(now, 10, Duration::ZERO).await.unwrap()
    }

    #[tokio::test]
    async fn an_end_every_sink_took_is_no_longer_owed_and_says_who_was_in() {
        let store = MemoryStore::default();
        let (first, second) = (flaky(0, false), flaky(0, false));
        let announcer = announcer(&store, &[first.clone(), second.clone()]);
        let now = OffsetDateTime::now_utc();
        ended(&store, 1, &announcer, now).await;

        assert_eq!(announcer.announce(Uuid::from_u128(1), now).await, EndAnnounced::Delivered);
        for sink in [first, second] {
            let heard = sink.heard.lock().unwrap().clone();
            assert_eq!(heard.len(), 1);
            let (id, end) = &heard[0];
            assert_eq!(*id, Uuid::from_u128(1));
            assert_eq!(end.reason, EndReason::Stopped);
            assert_eq!(end.players, ["p1".to_owned()].into());
            assert_eq!(end.reserved_players, ["p2".to_owned()].into());
        }
        assert_eq!(store.owed_end_announcements().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn an_end_a_sink_failed_is_owed_again_later_and_then_delivered() {
        let store = MemoryStore::default();
        let (down_once, fine) = (flaky(1, false), flaky(0, false));
        let announcer = announcer(&store, &[down_once.clone(), fine.clone()]);
        let now = OffsetDateTime::now_utc();
        ended(&store, 1, &announcer, now).await;

        assert_eq!(announcer.announce(Uuid::from_u128(1), now).await, EndAnnounced::Retry);
        assert!(owed_due(&store, now).await.is_empty(), "not due again at once");
        let later = now + Duration::from_secs(1);
        assert_eq!(
            store.claim_end_announcements(later, 10, SETTINGS.owing().window).await.unwrap(),
            [Uuid::from_u128(1)]
        );
        assert_eq!(announcer.announce(Uuid::from_u128(1), later).await, EndAnnounced::Delivered);
        assert_eq!(down_once.heard.lock().unwrap().len(), 1);
        assert_eq!(fine.heard.lock().unwrap().len(), 2, "at least once: the other sink hears it again");
        assert_eq!(store.owed_end_announcements().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn an_end_refused_for_good_or_too_old_is_given_up() {
        let store = MemoryStore::default();
        let now = OffsetDateTime::now_utc();
        let refusing = announcer(&store, &[flaky(1, true)]);
        ended(&store, 1, &refusing, now).await;
        assert_eq!(refusing.announce(Uuid::from_u128(1), now).await, EndAnnounced::GivenUp);
        assert_eq!(store.owed_end_announcements().await.unwrap(), 0);

        let down = announcer(&store, &[flaky(9, false)]);
        ended(&store, 2, &down, now).await;
        let too_late = now + SETTINGS.give_up_after;
        assert_eq!(down.announce(Uuid::from_u128(2), too_late).await, EndAnnounced::GivenUp);
        assert_eq!(store.owed_end_announcements().await.unwrap(), 0);
    }
}

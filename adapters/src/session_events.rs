//! The end of a session, announced once however it ended: the reconciler finding it gone at Gameye
//! (reason `gone`) or `DELETE /v1/sessions/{id}` stopping it (reason `stopped`, through
//! [`EndAnnouncingSeats`]). Every [`SessionEvents`] sink hears it: NATS
//! (`<prefix>.session.ended.<id>`, in the nats adapter) and the signed [`SessionEndedWebhook`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bridge::placement::{
    BackfillAnswer, BackfillRequest, BoxFuture, EndedSession, JoinAnswer, LeaveAnswer, SeatService,
    SeatServiceError, SessionFilter, SessionMetadata,
};
use bridge::ports::{DeliveryError, SessionEvents};
use bridge::seats::{SeatResult, SessionSeats};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::webhook::{RetryBound, WebhookSender, message_id};

/// Why a session ended: Gameye no longer lists it (TTL expiry, the process exited, stopped elsewhere).
pub const REASON_GONE: &str = "gone";
/// Why a session ended: stopped through the bridge (`DELETE /v1/sessions/{id}`).
pub const REASON_STOPPED: &str = "stopped";

/// The `type` of the session-ended webhook.
pub const SESSION_ENDED_TYPE: &str = "session.ended";

/// Deliveries of the session-ended webhook in flight at once; more wait their turn.
const CONCURRENT_DELIVERIES: usize = 16;
/// Deliveries waiting or in flight at most. A receiver that is down while thousands of sessions
/// end (a mass TTL expiry) would otherwise hold every body in memory for hours; beyond this, new
/// events are dropped, logged and counted (`dropped`).
const QUEUED_DELIVERIES: usize = 10_000;

/// Tells every sink that `session` ended, a few quick tries each. The end is recorded already, so a
/// sink that stays down misses this one announcement (logged); sinks that retry for longer (the
/// webhook) do so in their own background.
pub async fn announce_session_ended(sinks: &[Arc<dyn SessionEvents>], session: &SessionSeats, reason: &str) {
    for sink in sinks {
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=3 {
            match sink.session_ended(session, reason).await {
                Ok(()) => break,
                Err(error) if attempt == 3 || error.permanent => {
                    tracing::warn!(sink = sink.name(), session_id = %session.session_id, %error, "session end not announced");
                    break;
                }
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
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

/// The webhook body announcing that `session` ended at `ended_at`.
pub fn session_ended_body(
    session: &SessionSeats,
    reason: &str,
    ended_at: OffsetDateTime,
) -> Result<Vec<u8>, serde_json::Error> {
    let metadata = SessionMetadata::of(session);
    let reserved: BTreeSet<&str> = session
        .reservations
        .values()
        .filter(|r| r.is_live(ended_at))
        .flat_map(|r| r.players.iter().map(String::as_str))
        .collect();
    let data = SessionEndedData {
        session_id: session.session_id,
        match_id: metadata.as_ref().map(|m| m.match_id.clone()),
        image: &session.info.image,
        version: session.info.version.as_deref(),
        location: &session.info.location,
        labels: &session.info.labels,
        players: session.joined.iter().map(String::as_str).collect(),
        reserved_players: reserved.into_iter().collect(),
        reason,
        placed_at: metadata.map(|m| m.placed_at),
        ended_at,
    };
    serde_json::to_vec(&SessionEndedPayload { kind: SESSION_ENDED_TYPE, timestamp: ended_at, data })
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
            "Session-ended webhook deliveries by result (delivered; retry: a transient failure, tried \
             again; failed: given up, refused or out of retries; dropped: too many waiting)",
            metrics.results.clone(),
        );
        metrics
    }

    fn count(&self, result: &'static str) {
        self.results.get_or_create(&WebhookResultLabels { result }).inc();
    }
}

/// POSTs a signed `session.ended` event per ended session to one URL. Delivery runs in the
/// background (a receiver that is down must not hold up the reconciler's scan or a `DELETE`):
/// transient failures are retried within the [`RetryBound`], refusals are not; giving up is logged
/// and counted. [`SessionEndedWebhook::close`] waits for deliveries in flight at shutdown.
pub struct SessionEndedWebhook {
    sender: Arc<WebhookSender>,
    retry: RetryBound,
    tasks: TaskTracker,
    slots: Arc<Semaphore>,
    queue_limit: usize,
    metrics: SessionWebhookMetrics,
}

impl SessionEndedWebhook {
    pub fn new(sender: WebhookSender, retry: RetryBound, metrics: SessionWebhookMetrics) -> Self {
        Self {
            sender: Arc::new(sender),
            retry,
            tasks: TaskTracker::new(),
            slots: Arc::new(Semaphore::new(CONCURRENT_DELIVERIES)),
            queue_limit: QUEUED_DELIVERIES,
            metrics,
        }
    }

    /// Waits up to `grace` for deliveries in flight; what is left is logged and dropped.
    pub async fn close(&self, grace: Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            tracing::warn!(
                pending = self.tasks.len(),
                "session-ended webhooks still being delivered at exit are dropped"
            );
        }
    }

    fn deliver_in_background(&self, session_id: Uuid, id: String, body: Vec<u8>) {
        if self.tasks.len() >= self.queue_limit {
            self.metrics.count("dropped");
            tracing::error!(%session_id, webhook_id = %id, queued = self.tasks.len(), "session-ended webhook dropped: too many deliveries waiting");
            return;
        }
        let sender = self.sender.clone();
        let slots = self.slots.clone();
        let metrics = self.metrics.clone();
        let retry = self.retry;
        self.tasks.spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else { return };
            let result = sender
                .post_with_retries(&id, &body, retry, |error, pause| {
                    metrics.count("retry");
                    tracing::debug!(%session_id, %error, ?pause, "session-ended webhook failed; retrying");
                })
                .await;
            match result {
                Ok(()) => metrics.count("delivered"),
                Err(error) => {
                    metrics.count("failed");
                    let why = if error.is_permanent() { "refused" } else { "still failing after retries" };
                    tracing::error!(%session_id, webhook_id = %id, %error, "session-ended webhook given up: {why}");
                }
            }
        });
    }
}

impl SessionEvents for SessionEndedWebhook {
    fn name(&self) -> &'static str {
        "webhook"
    }

    /// Queues the delivery and answers at once; see the type's documentation.
    fn session_ended<'a>(
        &'a self,
        session: &'a SessionSeats,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let body = session_ended_body(session, reason, OffsetDateTime::now_utc()).map_err(|e| {
                DeliveryError {
                    sink: "webhook".to_owned(),
                    message: format!("cannot encode the session-ended event: {e}"),
                    permanent: true,
                }
            })?;
            self.deliver_in_background(session.session_id, session_ended_id(session.session_id), body);
            Ok(())
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Ending through the API announces too

/// A [`SeatService`] whose `end` (`DELETE /v1/sessions/{id}`) announces the end to every sink, like
/// the reconciler does for sessions gone at Gameye. Only the call whose store end succeeded
/// announces, so a session ended by both paths at once is announced once. Everything else is
/// passed through unchanged.
pub struct EndAnnouncingSeats {
    inner: Arc<dyn SeatService>,
    sinks: Vec<Arc<dyn SessionEvents>>,
}

impl EndAnnouncingSeats {
    pub fn new(inner: Arc<dyn SeatService>, sinks: Vec<Arc<dyn SessionEvents>>) -> Self {
        Self { inner, sinks }
    }
}

impl SeatService for EndAnnouncingSeats {
    fn now(&self) -> OffsetDateTime {
        self.inner.now()
    }

    fn list_sessions<'a>(
        &'a self,
        filter: &'a SessionFilter,
    ) -> BoxFuture<'a, Result<Vec<SessionSeats>, SeatServiceError>> {
        self.inner.list_sessions(filter)
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
            // What the event describes: the session as it was, with the seats the end released.
            let before = self.inner.get_session(session_id).await?;
            let answer = self.inner.end(session_id).await?;
            if let (Ok(ended), Some(mut session)) = (&answer, before) {
                session.joined = ended.released_players.clone();
                session.reservations.retain(|id, _| ended.released_reservations.contains(id));
                announce_session_ended(&self.sinks, &session, REASON_STOPPED).await;
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
    use bridge::placement::SessionMetadata;
    use bridge::seats::{Reservation, SessionInfo, SessionStatus};
    use serde_json::{Value, json};

    use super::*;

    fn session() -> SessionSeats {
        let now = OffsetDateTime::now_utc();
        let hour = time::Duration::hours(1);
        let metadata = SessionMetadata {
            match_id: "m-1".into(),
            host: "192.0.2.1".into(),
            ports: vec![],
            placed_at: OffsetDateTime::UNIX_EPOCH,
        };
        SessionSeats {
            session_id: Uuid::from_u128(7),
            capacity: 8,
            status: SessionStatus::Running,
            info: SessionInfo {
                image: "demo-game".into(),
                version: Some("1.0.0".into()),
                location: "eu-west-1".into(),
                labels: [("mode".to_owned(), "duel".to_owned())].into(),
                metadata: bridge::seats::JsonText::of(&metadata).unwrap(),
            },
            joined: ["p1".to_owned(), "p2".to_owned()].into(),
            reservations: [
                (
                    Uuid::from_u128(1),
                    Reservation { players: ["p3".to_owned()].into(), expires_at: now + hour },
                ),
                (
                    Uuid::from_u128(2),
                    Reservation { players: ["p4".to_owned()].into(), expires_at: now - hour },
                ),
            ]
            .into(),
            last_order: Default::default(),
        }
    }

    #[test]
    fn the_body_describes_the_session_and_its_players() {
        let ended_at = OffsetDateTime::now_utc();
        let body: Value =
            serde_json::from_slice(&session_ended_body(&session(), "gone", ended_at).unwrap()).unwrap();
        assert_eq!(body["type"], "session.ended");
        assert_eq!(body["timestamp"], body["data"]["ended_at"]);
        let data = &body["data"];
        assert_eq!(data["session_id"], Uuid::from_u128(7).to_string());
        assert_eq!(data["match_id"], "m-1");
        assert_eq!(data["version"], "1.0.0");
        assert_eq!(data["labels"], json!({"mode": "duel"}));
        assert_eq!(data["players"], json!(["p1", "p2"]));
        assert_eq!(data["reserved_players"], json!(["p3"]), "an expired reservation holds nobody");
        assert_eq!(data["reason"], "gone");
        assert_eq!(data["placed_at"], "1970-01-01T00:00:00Z");
    }

    #[test]
    fn the_webhook_id_is_one_per_session() {
        assert_eq!(session_ended_id(Uuid::from_u128(7)), session_ended_id(Uuid::from_u128(7)));
        assert_ne!(session_ended_id(Uuid::from_u128(7)), session_ended_id(Uuid::from_u128(8)));
    }

    /// A receiver that never answers holds every delivery: beyond the queue's limit new events
    /// are dropped (and counted), not held.
    #[tokio::test]
    async fn deliveries_beyond_the_queue_limit_are_dropped_and_counted() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let silent = axum::Router::new().fallback(std::future::pending::<&'static str>);
        tokio::spawn(async move { axum::serve(listener, silent).await.unwrap() });
        let sender = WebhookSender::new(
            &url,
            crate::webhook::WebhookSecret::parse("s").unwrap(),
            Duration::from_secs(30),
            "test",
        )
        .unwrap();
        let retry = RetryBound {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(1),
            total: Duration::from_secs(60),
        };
        let mut webhook = SessionEndedWebhook::new(sender, retry, SessionWebhookMetrics::default());
        webhook.queue_limit = 3;
        for n in 0..5 {
            let session = SessionSeats { session_id: Uuid::from_u128(n), ..session() };
            webhook.session_ended(&session, "gone").await.unwrap();
        }
        assert_eq!(webhook.tasks.len(), 3, "held at the limit");
        let dropped = webhook.metrics.results.get_or_create(&WebhookResultLabels { result: "dropped" }).get();
        assert_eq!(dropped, 2);
    }

    /// A sink failing `failures` times (transiently), then recording.
    struct Flaky {
        failures: std::sync::Mutex<u32>,
        permanent: bool,
        heard: std::sync::Mutex<Vec<(Uuid, String)>>,
    }

    impl SessionEvents for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }

        fn session_ended<'a>(
            &'a self,
            session: &'a SessionSeats,
            reason: &'a str,
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
                self.heard.lock().unwrap().push((session.session_id, reason.to_owned()));
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn announcing_retries_transient_failures_a_few_times_only() {
        let flaky = |failures: u32, permanent: bool| {
            Arc::new(Flaky { failures: failures.into(), permanent, heard: Default::default() })
        };
        let (recovers, stays_down, refuses) = (flaky(2, false), flaky(3, false), flaky(1, true));
        let sinks: Vec<Arc<dyn SessionEvents>> = vec![recovers.clone(), stays_down.clone(), refuses.clone()];
        announce_session_ended(&sinks, &session(), "gone").await;
        assert_eq!(*recovers.heard.lock().unwrap(), vec![(Uuid::from_u128(7), "gone".to_owned())]);
        assert!(stays_down.heard.lock().unwrap().is_empty());
        assert_eq!(*stays_down.failures.lock().unwrap(), 0, "tried three times");
        assert!(refuses.heard.lock().unwrap().is_empty());
    }
}

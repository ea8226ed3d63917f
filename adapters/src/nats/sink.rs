//! Publishes outcomes on `<prefix>.match.assigned.<match_id>` / `<prefix>.match.failed.<match_id>`
//! (and dead letters on `<prefix>.match.dead`), through JetStream when a results stream captures them.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream;
use bridge::ports::{DeliveryError, Outcome, OutcomeSink};
use serde::Serialize;

use super::NatsError;
use super::metrics::NatsMetrics;
use super::subjects::Subjects;

/// Header with the match id (the subject may not show it verbatim to every client library).
pub const MATCH_ID_HEADER: &str = "Gameye-Match-Id";
/// Header with the Gameye session id (derived from door and match id, so known for failures too).
pub const SESSION_ID_HEADER: &str = "Gameye-Session-Id";
/// Header naming the door that accepted the match (`http`, `nats`, …).
pub const SOURCE_HEADER: &str = "Gameye-Source";
/// Header on request/reply answers and dead letters: `placed`, `failed`, `pending`, or the error code.
pub const STATUS_HEADER: &str = "Gameye-Status";

/// What `<prefix>.match.dead` carries: the message given up on, and why.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_id: Option<String>,
    pub error: bridge::FailureDetail,
    /// How often JetStream delivered it.
    pub deliveries: i64,
    pub stream_sequence: u64,
    /// The original payload (as text; invalid UTF-8 replaced).
    pub payload: String,
}

/// The NATS [`OutcomeSink`]. Cheap to clone behind an `Arc`.
pub struct NatsOutcomeSink {
    client: async_nats::Client,
    /// Set when `nats.results_stream` captures the result subjects: publishes then wait for the
    /// stream's ack, so "announced" means "stored".
    jetstream: Option<jetstream::Context>,
    subjects: Subjects,
    announce_all: bool,
    announce: BTreeSet<String>,
    metrics: Arc<NatsMetrics>,
}

impl NatsOutcomeSink {
    pub(crate) fn new(
        client: async_nats::Client,
        jetstream: Option<jetstream::Context>,
        subjects: Subjects,
        announce_sources: &[String],
        metrics: Arc<NatsMetrics>,
    ) -> Self {
        Self {
            client,
            jetstream,
            subjects,
            announce_all: announce_sources.iter().any(|s| s == "*"),
            announce: announce_sources.iter().cloned().collect(),
            metrics,
        }
    }

    /// Publishes one outcome (once; callers retry).
    pub async fn publish(&self, source: &str, outcome: &Outcome) -> Result<(), NatsError> {
        let (kind, match_id, subject, payload) = match outcome {
            Outcome::Placed(assignment) => (
                "assigned",
                assignment.match_id.as_str(),
                self.subjects.assigned(&assignment.match_id),
                serde_json::to_vec(assignment),
            ),
            Outcome::Failed(failure) => (
                "failed",
                failure.match_id.as_str(),
                self.subjects.failed(&failure.match_id),
                serde_json::to_vec(failure),
            ),
        };
        let payload =
            payload.map_err(|e| NatsError::Publish { subject: subject.clone(), message: e.to_string() })?;
        let mut headers = HeaderMap::new();
        headers.insert(MATCH_ID_HEADER, match_id);
        // A placement answered from another door's record carries that door's session id.
        let session_id = match outcome {
            Outcome::Placed(assignment) => assignment.session_id.to_string(),
            Outcome::Failed(_) => bridge::session_id(source, match_id).to_string(),
        };
        headers.insert(SESSION_ID_HEADER, session_id);
        headers.insert(SOURCE_HEADER, source);
        // The results stream's duplicate window drops re-announcements of the same outcome (a
        // redelivered match answered from its record), so late readers see it once.
        let dedup = match outcome {
            Outcome::Placed(_) => format!("assigned:{match_id}"),
            Outcome::Failed(failure) => {
                format!(
                    "failed:{match_id}:{}",
                    serde_json::to_string(&failure.error.code).unwrap_or_default()
                )
            }
        };
        headers.insert("Nats-Msg-Id", dedup);
        self.send(kind, subject, headers, payload).await
    }

    pub(crate) async fn publish_dead(&self, dead: &DeadLetter) -> Result<(), NatsError> {
        let subject = self.subjects.match_dead();
        let payload = serde_json::to_vec(dead)
            .map_err(|e| NatsError::Publish { subject: subject.clone(), message: e.to_string() })?;
        let mut headers = HeaderMap::new();
        if let Some(match_id) = &dead.match_id {
            headers.insert(MATCH_ID_HEADER, match_id.as_str());
        }
        headers.insert(
            STATUS_HEADER,
            serde_json::to_string(&dead.error.code).unwrap_or_default().trim_matches('"'),
        );
        self.send("dead", subject, headers, payload).await
    }

    async fn send(
        &self,
        kind: &'static str,
        subject: String,
        headers: HeaderMap,
        payload: Vec<u8>,
    ) -> Result<(), NatsError> {
        publish(&self.client, self.jetstream.as_ref(), &self.metrics, kind, subject, headers, payload).await
    }
}

/// Publishes on `subject`: through JetStream when a results stream captures it (then "published"
/// means "stored": the stream's ack is awaited), else on core NATS (at most once by nature;
/// buffered while reconnecting). Counted in `metrics` as `kind`.
pub(super) async fn publish(
    client: &async_nats::Client,
    jetstream: Option<&jetstream::Context>,
    metrics: &NatsMetrics,
    kind: &'static str,
    subject: String,
    headers: HeaderMap,
    payload: Vec<u8>,
) -> Result<(), NatsError> {
    let result = match jetstream {
        Some(jetstream) => {
            match jetstream.publish_with_headers(subject.clone(), headers, payload.into()).await {
                Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
        None => client
            .publish_with_headers(subject.clone(), headers, payload.into())
            .await
            .map_err(|e| e.to_string()),
    };
    metrics.published(kind, result.is_ok());
    result.map_err(|message| NatsError::Publish { subject, message })
}

impl OutcomeSink for NatsOutcomeSink {
    fn name(&self) -> &'static str {
        "nats"
    }

    /// The NATS door's own outcomes always (they are its answer); other doors' as configured.
    fn wants(&self, source: &str) -> bool {
        source == super::SOURCE || self.announce_all || self.announce.contains(source)
    }

    fn deliver<'a>(
        &'a self,
        source: &'a str,
        outcome: &'a Outcome,
    ) -> Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>> {
        Box::pin(async move {
            // Every NATS failure (disconnected, no stream ack in time) can heal: the engine retries.
            self.publish(source, outcome).await.map_err(|error| DeliveryError {
                sink: "nats".to_owned(),
                message: error.to_string(),
                permanent: false,
            })
        })
    }
}

/// What `<prefix>.session.ended.<session_id>` carries.
#[derive(Debug, Clone, Serialize)]
struct SessionEnded<'a> {
    session_id: uuid::Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    match_id: Option<String>,
    image: &'a str,
    location: &'a str,
    reason: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    ended_at: time::OffsetDateTime,
}

impl bridge::ports::SessionEvents for NatsOutcomeSink {
    fn name(&self) -> &'static str {
        "nats"
    }

    /// Core NATS (the results stream captures match subjects only), with the session id header.
    fn session_ended<'a>(
        &'a self,
        session: &'a bridge::seats::SessionSeats,
        end: &'a bridge::seats::SessionEnd,
    ) -> Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>> {
        Box::pin(async move {
            let subject = self.subjects.session_ended(&session.session_id.to_string());
            let match_id = bridge::placement::SessionMetadata::of(session).map(|metadata| metadata.match_id);
            let body = SessionEnded {
                session_id: session.session_id,
                match_id: match_id.clone(),
                image: &session.info.image,
                location: &session.info.location,
                reason: end.reason.as_str(),
                ended_at: end.ended_at,
            };
            let failed =
                |message: String| DeliveryError { sink: "nats".to_owned(), message, permanent: false };
            let payload = serde_json::to_vec(&body).map_err(|e| failed(e.to_string()))?;
            let mut headers = HeaderMap::new();
            headers.insert(SESSION_ID_HEADER, session.session_id.to_string());
            if let Some(match_id) = &match_id {
                headers.insert(MATCH_ID_HEADER, match_id.as_str());
            }
            let result = self
                .client
                .publish_with_headers(subject.clone(), headers, payload.into())
                .await
                .map_err(|e| e.to_string());
            self.metrics.published("session_ended", result.is_ok());
            result.map_err(failed)
        })
    }
}

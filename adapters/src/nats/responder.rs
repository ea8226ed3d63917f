//! `<prefix>.match.request`: core-NATS request/reply in a queue group, for matchmakers that simply
//! `request` and wait. The reply is the Assignment or the Failure JSON.

use std::sync::Arc;

use async_nats::HeaderMap;
use bridge::placement::{PlaceError, PlacementService, Progress};
use bridge::ports::Outcome;
use bridge::{Failure, FailureCode};
use tokio_util::task::TaskTracker;

use super::SOURCE;
use super::metrics::NatsMetrics;
use super::sink::{MATCH_ID_HEADER, SESSION_ID_HEADER, STATUS_HEADER};
use super::subjects::Subjects;

pub(crate) struct MatchResponder {
    pub client: async_nats::Client,
    pub subjects: Subjects,
    pub service: Arc<dyn PlacementService>,
    pub metrics: Arc<NatsMetrics>,
    /// Where announcements run after the reply went out (awaited at shutdown).
    pub background: TaskTracker,
}

impl MatchResponder {
    pub async fn handle(self: Arc<Self>, message: async_nats::Message) {
        let _in_flight = self.metrics.in_flight("responder");
        let Some(reply) = message.reply.clone() else {
            // A publish, not a request: nobody to answer. JetStream's subject is the durable door.
            tracing::warn!(subject = %message.subject, "match request without a reply subject ignored; publish to match.found instead");
            self.metrics.handled("request", "no_reply");
            return;
        };
        let (status, match_id, body) = self.answer(&message.payload).await;
        let mut headers = HeaderMap::new();
        headers.insert(STATUS_HEADER, status);
        if !match_id.is_empty() {
            headers.insert(MATCH_ID_HEADER, match_id.as_str());
            headers.insert(SESSION_ID_HEADER, bridge::session_id(SOURCE, &match_id).to_string());
        }
        match self.client.publish_with_headers(reply, headers, body.into()).await {
            Ok(()) => self.metrics.handled("request", status),
            Err(error) => {
                tracing::warn!(%match_id, %error, "reply not sent");
                self.metrics.handled("request", "error");
            }
        }
    }

    /// (`placed` | `failed` | `pending` | `invalid` | `conflict` | `error`, match id, JSON body)
    async fn answer(&self, payload: &[u8]) -> (&'static str, String, Vec<u8>) {
        let request = match bridge::parse_match_request(payload) {
            Ok(request) => request,
            Err(invalid) => {
                let match_id = serde_json::from_slice::<serde_json::Value>(payload)
                    .ok()
                    .and_then(|v| v.get("match_id")?.as_str().map(str::to_owned))
                    .unwrap_or_default();
                return ("invalid", String::new(), to_json(&Failure::invalid_request(match_id, &invalid)));
            }
        };
        let match_id = request.match_id.clone();
        match self.service.place(SOURCE, request).await {
            Ok(Progress::Done(outcome)) => {
                let (status, body) = match &outcome {
                    Outcome::Placed(assignment) => ("placed", to_json(assignment)),
                    Outcome::Failed(failure) => ("failed", to_json(failure)),
                };
                // Subscribers of match.assigned/failed hear of it too, off the requester's path.
                let service = self.service.clone();
                self.background.spawn(async move {
                    let _ = service.announce(SOURCE, &outcome).await;
                });
                (status, match_id, body)
            }
            // Another instance (or door) owns it and did not finish within the deadline. Not a
            // failure of the match: the owner publishes the outcome, and asking again answers it.
            Ok(Progress::Pending { .. }) => {
                let message = format!(
                    "still being placed after the placement deadline; the outcome will be published on {} or {}, \
                     and the same request answers it",
                    self.subjects.assigned(&match_id),
                    self.subjects.failed(&match_id)
                );
                let failure = Failure::new(&match_id, FailureCode::DeadlineExceeded, message);
                ("pending", match_id, to_json(&failure))
            }
            // Logged by the engine. Not announced: `match.failed.<id>` belongs to the first match.
            Err(PlaceError::MatchIdConflict(conflict)) => {
                ("conflict", match_id, to_json(&Failure::match_id_conflict(&conflict)))
            }
            Err(error @ PlaceError::Store(_)) => {
                tracing::error!(%match_id, %error, "state store unavailable");
                let failure = Failure::new(
                    &match_id,
                    FailureCode::UpstreamUnavailable,
                    crate::store::STORE_UNAVAILABLE_MESSAGE,
                );
                ("error", match_id, to_json(&failure))
            }
        }
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

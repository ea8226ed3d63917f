//! Results back to the game backend: a signed POST per outcome, following the Standard Webhooks
//! convention (signing and sending live in [`crate::webhook`]).

use std::pin::Pin;
use std::time::Duration;

use bridge::ports::{DeliveryError, Outcome, OutcomeSink};
use serde::Serialize;
use time::OffsetDateTime;

pub use crate::webhook::WebhookSecret;
use crate::webhook::{WebhookSender, message_id};

/// The body of a results webhook.
#[derive(Debug, Serialize)]
pub struct WebhookPayload<'a> {
    /// `match.placed` or `match.failed`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// The Assignment, or the Failure.
    pub data: serde_json::Value,
    /// The door that accepted the match (`sns`).
    pub source: &'a str,
}

/// Posts every outcome of the doors it serves to one URL, signed. Retries are the engine's
/// (`announce`), so each delivery is one attempt.
pub struct ResultsWebhook {
    sender: WebhookSender,
    sources: Vec<String>,
}

impl ResultsWebhook {
    /// `sources`: the doors whose placements go here (e.g. `["sns"]`).
    pub fn new(
        url: &str,
        secret: WebhookSecret,
        timeout: Duration,
        sources: Vec<String>,
    ) -> Result<Self, String> {
        let sender =
            WebhookSender::new(url, secret, timeout, "results webhook").map_err(|e| e.to_string())?;
        Ok(Self { sender, sources })
    }

    /// The `webhook-id` of an outcome: the same for every attempt and re-announcement of one
    /// outcome, so receivers can deduplicate; different for a match's placed and failed outcomes.
    pub fn message_id(source: &str, outcome: &Outcome) -> String {
        let (match_id, kind) = match outcome {
            Outcome::Placed(a) => (a.match_id.as_str(), "placed"),
            Outcome::Failed(f) => (f.match_id.as_str(), "failed"),
        };
        message_id(&[source, match_id, kind])
    }

    async fn post(&self, source: &str, outcome: &Outcome) -> Result<(), DeliveryError> {
        let error =
            |message: String, permanent: bool| DeliveryError { sink: "webhook".into(), message, permanent };
        let (kind, data) = match outcome {
            Outcome::Placed(a) => ("match.placed", serde_json::to_value(a)),
            Outcome::Failed(f) => ("match.failed", serde_json::to_value(f)),
        };
        let data = data.map_err(|e| error(format!("cannot encode the outcome: {e}"), true))?;
        let now = OffsetDateTime::now_utc();
        let body = serde_json::to_vec(&WebhookPayload { kind, timestamp: now, data, source })
            .map_err(|e| error(format!("cannot encode the payload: {e}"), true))?;
        let id = Self::message_id(source, outcome);
        self.sender.post(&id, &body).await.map_err(|e| error(e.to_string(), e.is_permanent()))
    }
}

impl OutcomeSink for ResultsWebhook {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn wants(&self, source: &str) -> bool {
        self.sources.iter().any(|s| s == source)
    }

    fn deliver<'a>(
        &'a self,
        source: &'a str,
        outcome: &'a Outcome,
    ) -> Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>> {
        Box::pin(self.post(source, outcome))
    }
}

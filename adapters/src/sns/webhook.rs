//! Results back to the game backend: a signed POST per outcome, following the Standard Webhooks
//! convention (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`).

use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use base64::Engine as _;
use bridge::ports::{DeliveryError, Outcome, OutcomeSink};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde::Serialize;
use sha2::Sha256;
use time::OffsetDateTime;
use uuid::Uuid;

/// Namespace of webhook message ids (UUIDv5 of source, match and outcome kind).
const WEBHOOK_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5d4c_51d2_6a3e_4f0b_9a49_3f1e_2b7c_8e10);

/// The signing key: `whsec_<base64>` (Standard Webhooks' form) decodes to bytes; any other string is
/// used as its UTF-8 bytes.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    pub fn parse(text: &str) -> Result<Self, String> {
        let key = match text.strip_prefix("whsec_") {
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| "a `whsec_` secret must be base64 after the prefix".to_owned())?,
            None => text.as_bytes().to_vec(),
        };
        if key.is_empty() {
            return Err("the secret is empty".into());
        }
        Ok(Self(key))
    }

    /// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

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

/// Posts every outcome of the doors it serves to one URL, signed.
pub struct ResultsWebhook {
    url: reqwest::Url,
    secret: WebhookSecret,
    client: reqwest::Client,
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
        let url = reqwest::Url::parse(url).map_err(|e| format!("results webhook URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("results webhook URL must be http(s)".into());
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .map_err(|e| format!("results webhook client: {e}"))?;
        Ok(Self { url, secret, client, sources })
    }

    /// The `webhook-id` of an outcome: the same for every attempt and re-announcement of one
    /// outcome, so receivers can deduplicate; different for a match's placed and failed outcomes.
    pub fn message_id(source: &str, outcome: &Outcome) -> String {
        let (match_id, kind) = match outcome {
            Outcome::Placed(a) => (a.match_id.as_str(), "placed"),
            Outcome::Failed(f) => (f.match_id.as_str(), "failed"),
        };
        let name = format!("{source}\n{match_id}\n{kind}");
        format!("msg_{}", Uuid::new_v5(&WEBHOOK_ID_NAMESPACE, name.as_bytes()).simple())
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
        let timestamp = now.unix_timestamp();
        let signature = self.secret.sign(&id, timestamp, &body);
        let response = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| error(format!("POST {}: {}", loggable_url(&self.url), e.without_url()), false))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let transient = status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS;
        Err(error(format!("POST {} answered {status}", loggable_url(&self.url)), !transient))
    }
}

/// The URL without its query and credentials, for logs.
fn loggable_url(url: &reqwest::Url) -> String {
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}://{}{port}{}", url.scheme(), url.host_str().unwrap_or_default(), url.path())
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

//! Signed webhook POSTs following the Standard Webhooks convention (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`), shared by every sink that
//! posts events to a configured URL (the SNS results webhook, the session-ended webhook). What is
//! posted, and when, is the sink's business; this module only signs, sends and classifies.

use std::fmt;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use sha2::Sha256;
use time::OffsetDateTime;
use uuid::Uuid;

/// Namespace of webhook message ids (UUIDv5 of what identifies one event).
const WEBHOOK_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5d4c_51d2_6a3e_4f0b_9a49_3f1e_2b7c_8e10);

/// The `webhook-id` of the event named by `parts`: `msg_` + UUIDv5 of the parts joined by newlines,
/// so every attempt and re-announcement of one event carries the same id (receivers deduplicate).
pub fn message_id(parts: &[&str]) -> String {
    let name = parts.join("\n");
    format!("msg_{}", Uuid::new_v5(&WEBHOOK_ID_NAMESPACE, name.as_bytes()).simple())
}

/// Why a webhook could not be set up or delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// A bad URL or an HTTP client that cannot be built.
    #[error("{0}")]
    Setup(String),
    /// The receiver refused the event (a 4xx other than 408/429): retrying cannot help.
    #[error("{0}")]
    Rejected(String),
    /// 5xx, 408, 429, a timeout or no connection: a later attempt may succeed.
    #[error("{0}")]
    Unavailable(String),
}

impl WebhookError {
    /// Whether retrying is pointless.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Self::Unavailable(_))
    }
}

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

/// How long a failing delivery is retried: jittered exponential delays from `min_delay` up to
/// `max_delay`, until the delays add up to `total` (then the last error is the answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBound {
    pub min_delay: Duration,
    pub max_delay: Duration,
    pub total: Duration,
}

/// Posts signed JSON bodies to one URL (no redirects followed, one timeout per attempt).
pub struct WebhookSender {
    url: reqwest::Url,
    secret: WebhookSecret,
    client: reqwest::Client,
}

impl WebhookSender {
    /// `what` names the webhook in setup errors (`results webhook`).
    pub fn new(
        url: &str,
        secret: WebhookSecret,
        timeout: Duration,
        what: &str,
    ) -> Result<Self, WebhookError> {
        let url = reqwest::Url::parse(url).map_err(|e| WebhookError::Setup(format!("{what} URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(WebhookError::Setup(format!("{what} URL must be http(s)")));
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .map_err(|e| WebhookError::Setup(format!("{what} client: {e}")))?;
        Ok(Self { url, secret, client })
    }

    /// One attempt: `body` signed with `id` and the current time. 2xx is success; 5xx, 408, 429,
    /// timeouts and connection errors are [`WebhookError::Unavailable`], other answers
    /// [`WebhookError::Rejected`].
    pub async fn post(&self, id: &str, body: &[u8]) -> Result<(), WebhookError> {
        let timestamp = OffsetDateTime::now_utc().unix_timestamp();
        let signature = self.secret.sign(id, timestamp, body);
        let response = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| {
                WebhookError::Unavailable(format!("POST {}: {}", self.loggable_url(), e.without_url()))
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let message = format!("POST {} answered {status}", self.loggable_url());
        let transient = status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS;
        Err(if transient { WebhookError::Unavailable(message) } else { WebhookError::Rejected(message) })
    }

    /// [`WebhookSender::post`], retried within `bound` while the failure is transient;
    /// `on_retry` hears of each failure that is retried and the pause before the next attempt.
    pub async fn post_with_retries(
        &self,
        id: &str,
        body: &[u8],
        bound: RetryBound,
        mut on_retry: impl FnMut(&WebhookError, Duration),
    ) -> Result<(), WebhookError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(bound.min_delay)
            .with_max_delay(bound.max_delay)
            .with_jitter()
            .without_max_times()
            .with_total_delay(Some(bound.total));
        (|| self.post(id, body))
            .retry(backoff)
            .when(|error| !error.is_permanent())
            .notify(|error, pause| on_retry(error, pause))
            .await
    }

    /// The URL without its query and credentials, for logs.
    pub fn loggable_url(&self) -> String {
        let url = &self.url;
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        format!("{}://{}{port}{}", url.scheme(), url.host_str().unwrap_or_default(), url.path())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn message_ids_are_stable_and_distinct() {
        let id = message_id(&["session.ended", "a"]);
        assert!(id.starts_with("msg_"), "{id}");
        assert_eq!(id, message_id(&["session.ended", "a"]));
        assert_ne!(id, message_id(&["session.ended", "b"]));
        // The parts are separated, so moving a boundary changes the id.
        assert_ne!(message_id(&["ab", "c"]), message_id(&["a", "bc"]));
    }

    #[test]
    fn setup_refuses_urls_that_are_not_http() {
        let secret = || WebhookSecret::parse("s").unwrap();
        for url in ["not a url", "ftp://example.test/hook"] {
            let error =
                WebhookSender::new(url, secret(), Duration::from_secs(1), "test webhook").err().unwrap();
            assert!(
                matches!(error, WebhookError::Setup(ref m) if m.starts_with("test webhook URL")),
                "{error}"
            );
        }
        let sender = WebhookSender::new(
            "https://user:pw@example.test:8443/h?token=x",
            secret(),
            Duration::from_secs(1),
            "t",
        )
        .unwrap();
        assert_eq!(sender.loggable_url(), "https://example.test:8443/h");
    }

    /// A receiver answering `statuses` in turn (the last one forever), counting requests.
    async fn receiver(statuses: Vec<u16>) -> (String, Arc<Mutex<usize>>) {
        let count = Arc::new(Mutex::new(0));
        let seen = count.clone();
        let app = axum::Router::new().fallback(move || {
            let seen = seen.clone();
            let statuses = statuses.clone();
            async move {
                let mut seen = seen.lock().unwrap();
                let status = statuses[(*seen).min(statuses.len() - 1)];
                *seen += 1;
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, count)
    }

    const QUICK: RetryBound = RetryBound {
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
        total: Duration::from_millis(200),
    };

    #[tokio::test]
    async fn transient_failures_are_retried_within_the_bound_and_rejections_are_not() {
        let secret = WebhookSecret::parse("s").unwrap();
        let (url, count) = receiver(vec![503, 429, 200]).await;
        let sender = WebhookSender::new(&url, secret.clone(), Duration::from_secs(2), "t").unwrap();
        let mut retried = 0;
        sender.post_with_retries("msg_1", b"{}", QUICK, |_, _| retried += 1).await.unwrap();
        assert_eq!((*count.lock().unwrap(), retried), (3, 2));

        let (url, count) = receiver(vec![400]).await;
        let sender = WebhookSender::new(&url, secret.clone(), Duration::from_secs(2), "t").unwrap();
        let error = sender.post_with_retries("msg_1", b"{}", QUICK, |_, _| {}).await.unwrap_err();
        assert!(matches!(error, WebhookError::Rejected(_)), "{error}");
        assert_eq!(*count.lock().unwrap(), 1);

        // Always 500: given up once the delays add up to the bound.
        let (url, count) = receiver(vec![500]).await;
        let sender = WebhookSender::new(&url, secret, Duration::from_secs(2), "t").unwrap();
        let started = std::time::Instant::now();
        let error = sender.post_with_retries("msg_1", b"{}", QUICK, |_, _| {}).await.unwrap_err();
        assert!(!error.is_permanent(), "{error}");
        assert!(*count.lock().unwrap() >= 3, "retried: {}", count.lock().unwrap());
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }
}

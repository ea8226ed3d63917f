//! The SNS door: AWS GameLift FlexMatch events delivered by Amazon SNS over HTTP(S).
//!
//! A body becomes an [`Unverified`] message; the [`Verifier`] checks topic, age, certificate URL,
//! certificate and signature and yields a [`Verified`] one; only then does [`SnsDoor`] act:
//! confirm a subscription, or turn a `MatchmakingSucceeded` into a durably accepted placement
//! (answered at once, placed in the background), and record tickets' statuses for polling.
//! Results go back through the engine's sinks, e.g. the Standard Webhooks [`ResultsWebhook`].
//!
//! This adapter knows no other adapter: it talks to the core's [`PlacementService`],
//! [`DeliveryLog`] and [`TicketStore`] ports only.

pub mod certs;
pub mod flexmatch;
pub mod message;
pub mod verify;
pub mod webhook;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bridge::placement::{Accepted, PlaceError, PlacementService, Progress};
use bridge::ports::{
    Delivery, DeliveryLog, Outcome, PlacementState, StoreError, TicketState, TicketStatus, TicketStore,
};
use bridge::{Assignment, Failure, FailureCode, FailureDetail, MatchIdConflict};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Serialize;
use time::OffsetDateTime;
use tokio_util::task::TaskTracker;

pub use certs::{CertCache, CertError, SigningCert, UrlPolicy, UrlRejected, is_sns_host};
pub use flexmatch::{Event, EventError, ImageChoice};
pub use message::{MessageType, ParseError, SnsMessage, Unverified, Verified};
pub use verify::{Verifier, VerifyError};
pub use webhook::{ResultsWebhook, WebhookSecret};

/// The source name SNS placements carry (it is part of the session id).
pub const SOURCE: &str = "sns";

/// How long a message id is held while its message is being processed: SNS gives up on an
/// answer after 15 s and retries after that, so a crash mid-processing does not make the retry
/// look like a duplicate.
const IN_PROGRESS_FOR: Duration = Duration::from_secs(15);

/// The code a copy of a message that is being processed is answered with (503).
pub const IN_PROGRESS: &str = "IN_PROGRESS";

/// The door's settings (built from `[sns]` by the wiring).
#[derive(Debug, Clone)]
pub struct SnsConfig {
    /// TopicArns accepted; anything else is rejected before any fetch.
    pub topics: Vec<String>,
    /// Directory of pinned signing certificates, named like the last segment of their URL.
    pub pinned_cert_dir: Option<PathBuf>,
    pub cert_cache_ttl: Duration,
    /// Older messages are rejected.
    pub max_age: Duration,
    /// Confirm subscriptions by visiting SubscribeURL (else log it).
    pub auto_confirm: bool,
    /// Accept messages without checking signatures. Local producers only.
    pub insecure_skip_verify: bool,
    /// Image and version per matchmaking configuration ARN.
    pub configurations: BTreeMap<String, ImageChoice>,
    /// How long ticket statuses are kept (the placement records' lifetime).
    pub keep_for: Duration,
    /// Bound on certificate fetches and subscription confirmations.
    pub fetch_timeout: Duration,
}

impl SnsConfig {
    /// The verifier this configuration asks for, with AWS's URL rule.
    pub fn verifier(&self) -> Verifier {
        self.verifier_with(UrlPolicy::Aws)
    }

    fn verifier_with(&self, policy: UrlPolicy) -> Verifier {
        let certs =
            CertCache::new(policy, self.pinned_cert_dir.clone(), self.cert_cache_ttl, self.fetch_timeout);
        Verifier::new(self.topics.iter().cloned(), self.max_age, certs)
            .skipping_signatures(self.insecure_skip_verify)
    }
}

/// Why the door refused a message; the HTTP adapter turns it into a 4xx/5xx.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SnsError {
    pub kind: SnsErrorKind,
    /// Machine-readable: `INVALID_REQUEST`, `SIGNATURE_INVALID`, `TOPIC_NOT_ALLOWED`, …
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnsErrorKind {
    /// Malformed, not FlexMatch, stale, missing fields: 400/422 (SNS does not retry 4xx).
    BadRequest,
    /// The message's fields do not make a valid match: 422.
    Invalid,
    /// Not genuine, or not for us: 403.
    Forbidden,
    /// Our side or AWS failed: 5xx, so SNS retries.
    Unavailable,
    /// The match id is known as another match: 409 (not retried).
    Conflict,
}

impl SnsError {
    fn new(kind: SnsErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Self { kind, code, message: message.into() }
    }

    fn store(error: StoreError) -> Self {
        let (code, message) = crate::store::store_error_answer(&error);
        Self::new(SnsErrorKind::Unavailable, code, message)
    }
}

impl From<ParseError> for SnsError {
    fn from(error: ParseError) -> Self {
        let code = if error == ParseError::Unsigned { "UNSIGNED_MESSAGE" } else { "INVALID_REQUEST" };
        Self::new(SnsErrorKind::BadRequest, code, error.to_string())
    }
}

impl From<VerifyError> for SnsError {
    fn from(error: VerifyError) -> Self {
        use SnsErrorKind::{BadRequest, Forbidden, Unavailable};
        let (kind, code) = match &error {
            VerifyError::TopicNotAllowed(_) => (Forbidden, "TOPIC_NOT_ALLOWED"),
            VerifyError::Stale { .. } | VerifyError::FromTheFuture(_) => (BadRequest, "STALE_MESSAGE"),
            VerifyError::BadTimestamp(_) => (BadRequest, "INVALID_REQUEST"),
            VerifyError::Cert(CertError::Rejected(_)) => (Forbidden, "SIGNING_CERT_URL_REJECTED"),
            VerifyError::Cert(CertError::Unavailable { .. }) => (Unavailable, "SIGNING_CERT_UNAVAILABLE"),
            VerifyError::UnsupportedVersion(_)
            | VerifyError::SignatureNotBase64
            | VerifyError::BadSignature
            | VerifyError::CertificateExpired(_)
            | VerifyError::Cert(CertError::Invalid { .. }) => (Forbidden, "SIGNATURE_INVALID"),
        };
        Self::new(kind, code, error.to_string())
    }
}

impl From<EventError> for SnsError {
    fn from(error: EventError) -> Self {
        let code = match error {
            EventError::NotFlexMatch(_) => "NOT_FLEXMATCH",
            _ => "INVALID_REQUEST",
        };
        Self::new(SnsErrorKind::BadRequest, code, error.to_string())
    }
}

/// What the door did with a genuine message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Receipt {
    /// MatchmakingSucceeded: the placement is recorded and runs in the background.
    Accepted { match_id: String },
    /// This MessageId was handled before: nothing done again.
    Duplicate { message_id: String },
    /// SubscriptionConfirmation: SubscribeURL was visited.
    Confirmed,
    /// SubscriptionConfirmation with `auto_confirm` off: the URL was logged for an operator.
    ConfirmationLogged,
    /// UnsubscribeConfirmation: logged.
    Unsubscribed,
    /// A FlexMatch event that ended or updated tickets (`MatchmakingTimedOut`, …).
    Recorded { event: String, tickets: usize },
    /// Another FlexMatch event: acknowledged and counted.
    Acknowledged { event: String },
}

/// A ticket's status as polled (`GET /v1/tickets/{ticket_id}`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TicketView {
    pub ticket_id: String,
    /// `searching`, `placing`, `placed`, `failed`, `timed_out` or `cancelled`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_id: Option<String>,
    /// The FlexMatch event that last changed the ticket.
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignment: Option<Assignment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<FailureDetail>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    /// Notification, SubscriptionConfirmation, UnsubscribeConfirmation, or `unknown` (unparsable).
    r#type: String,
    /// accepted, duplicate, confirmed, …, or the refusal code.
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: String,
}

/// SNS messages by type and result; FlexMatch events by type.
#[derive(Clone, Default)]
pub struct SnsMetrics {
    messages: Family<MessageLabels, Counter>,
    events: Family<EventLabels, Counter>,
}

impl SnsMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "sns_messages",
            "SNS messages received, by type and result",
            metrics.messages.clone(),
        );
        registry.register("flexmatch_events", "FlexMatch events received, by type", metrics.events.clone());
        metrics
    }
}

/// The SNS door itself; cheap to share behind an `Arc`.
pub struct SnsDoor {
    config: SnsConfig,
    verifier: Verifier,
    service: Arc<dyn PlacementService>,
    deliveries: Arc<dyn DeliveryLog>,
    tickets: Arc<dyn TicketStore>,
    background: TaskTracker,
    metrics: SnsMetrics,
    http: reqwest::Client,
    now: Arc<dyn Fn() -> OffsetDateTime + Send + Sync>,
}

impl SnsDoor {
    pub fn new(
        config: SnsConfig,
        service: Arc<dyn PlacementService>,
        deliveries: Arc<dyn DeliveryLog>,
        tickets: Arc<dyn TicketStore>,
        background: TaskTracker,
        metrics: SnsMetrics,
    ) -> Self {
        if config.insecure_skip_verify {
            tracing::warn!(
                "sns.insecure_skip_verify is ON: SNS signatures are NOT checked, anyone who can reach \
                 /v1/webhooks/sns can start game servers; use only with a local producer that cannot sign"
            );
        }
        if config.topics.is_empty() {
            tracing::info!("sns.topics is empty: every SNS message will be refused");
        }
        let verifier = config.verifier();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.fetch_timeout)
            .build()
            .unwrap_or_default();
        Self {
            config,
            verifier,
            service,
            deliveries,
            tickets,
            background,
            metrics,
            http,
            now: Arc::new(OffsetDateTime::now_utc),
        }
    }

    /// Replaces the verifier (tests: a fake SNS host, a pinned clock).
    #[cfg(test)]
    fn with_verifier(mut self, verifier: Verifier) -> Self {
        self.verifier = verifier;
        self
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, now: Arc<dyn Fn() -> OffsetDateTime + Send + Sync>) -> Self {
        self.now = now;
        self
    }

    /// Handles one POST. `header_type` is `x-amz-sns-message-type`, when sent.
    pub async fn receive(&self, header_type: Option<&str>, body: &[u8]) -> Result<Receipt, SnsError> {
        let parsed = Unverified::parse(body);
        let kind = parsed.as_ref().map(|m| m.peek().kind.as_str()).unwrap_or("unknown");
        let result = match parsed {
            Ok(message) => self.receive_parsed(header_type, message).await,
            Err(error) => Err(error.into()),
        };
        let label = match &result {
            Ok(receipt) => receipt_label(receipt).to_owned(),
            Err(error) => error.code.to_ascii_lowercase(),
        };
        self.metrics.messages.get_or_create(&MessageLabels { r#type: kind.to_owned(), result: label }).inc();
        if let Err(error) = &result {
            tracing::warn!(code = error.code, error = %error.message, "SNS message refused");
        }
        result
    }

    async fn receive_parsed(
        &self,
        header_type: Option<&str>,
        message: Unverified,
    ) -> Result<Receipt, SnsError> {
        if let Some(header) = header_type
            && header != message.peek().kind.as_str()
        {
            return Err(SnsError::new(
                SnsErrorKind::BadRequest,
                "INVALID_REQUEST",
                format!("x-amz-sns-message-type {header:?} does not match the body's Type"),
            ));
        }
        let verified = self.verifier.verify(message, (self.now)()).await?;
        let key = format!("sns:{}", verified.message().message_id);
        match self.deliveries.first_delivery(&key, IN_PROGRESS_FOR).await.map_err(SnsError::store)? {
            Delivery::First => {}
            Delivery::Done => {
                return Ok(Receipt::Duplicate { message_id: verified.message().message_id.clone() });
            }
            // The copy being processed may still fail, or its instance may have died: a 5xx has
            // SNS retry, and the retry finds it done or the hold run out.
            Delivery::InProgress => {
                return Err(SnsError::new(
                    SnsErrorKind::Unavailable,
                    IN_PROGRESS,
                    "this MessageId is being processed; a retry is answered once that has finished",
                ));
            }
        }
        match self.act(&verified).await {
            Ok(receipt) => {
                // Keep the id as long as SNS could still deliver the message (older ones are stale).
                let keep = self.config.max_age + Duration::from_secs(300);
                if let Err(error) = self.deliveries.keep_delivery(&key, keep).await {
                    tracing::warn!(%error, "could not extend the SNS message id record");
                }
                Ok(receipt)
            }
            Err(error) => {
                if error.kind == SnsErrorKind::Unavailable {
                    // Let SNS's retry be processed, not answered as a duplicate.
                    let _ = self.deliveries.forget_delivery(&key).await;
                }
                Err(error)
            }
        }
    }

    async fn act(&self, verified: &Verified) -> Result<Receipt, SnsError> {
        let message = verified.message();
        match message.kind {
            MessageType::SubscriptionConfirmation => self.confirm(message).await,
            MessageType::UnsubscribeConfirmation => {
                tracing::info!(topic = %message.topic_arn, "SNS unsubscribe confirmation received");
                Ok(Receipt::Unsubscribed)
            }
            MessageType::Notification => self.notification(message).await,
        }
    }

    async fn confirm(&self, message: &SnsMessage) -> Result<Receipt, SnsError> {
        let url_text = message.subscribe_url.as_deref().unwrap_or_default();
        let url =
            self.verifier.certs().policy().check_subscribe_url(url_text).map_err(|e| {
                SnsError::new(SnsErrorKind::Forbidden, "SUBSCRIBE_URL_REJECTED", e.to_string())
            })?;
        if !self.config.auto_confirm {
            tracing::warn!(
                topic = %message.topic_arn, subscribe_url = %url_text,
                "SNS subscription awaiting confirmation (sns.auto_confirm is off): visit the URL to confirm"
            );
            return Ok(Receipt::ConfirmationLogged);
        }
        let unavailable = |detail: String| {
            SnsError::new(
                SnsErrorKind::Unavailable,
                "CONFIRMATION_FAILED",
                format!("confirming the subscription: {detail}"),
            )
        };
        let response =
            self.http.get(url).send().await.map_err(|e| unavailable(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("SNS answered {}", response.status())));
        }
        tracing::info!(topic = %message.topic_arn, "SNS subscription confirmed");
        Ok(Receipt::Confirmed)
    }

    async fn notification(&self, message: &SnsMessage) -> Result<Receipt, SnsError> {
        let event = Event::parse(&message.message)?;
        self.metrics.events.get_or_create(&EventLabels { event: event.kind.clone() }).inc();
        let now = (self.now)();
        match event.kind.as_str() {
            "MatchmakingSucceeded" => self.succeeded(&event, now).await,
            "MatchmakingTimedOut" => self.record(&event, TicketState::TimedOut, now).await,
            "MatchmakingCancelled" => self.record(&event, TicketState::Cancelled, now).await,
            "MatchmakingFailed" => self.record(&event, TicketState::Failed, now).await,
            "MatchmakingSearching" => self.record(&event, TicketState::Searching, now).await,
            other => Ok(Receipt::Acknowledged { event: other.to_owned() }),
        }
    }

    async fn succeeded(&self, event: &Event, now: OffsetDateTime) -> Result<Receipt, SnsError> {
        let request = match event.to_match_request(&self.config.configurations) {
            Ok(request) => request.validate().map_err(|invalid| {
                SnsError::new(SnsErrorKind::Invalid, "INVALID_REQUEST", format!("FlexMatch event: {invalid}"))
            }),
            Err(error) => Err(SnsError::from(error)),
        };
        let request = match request {
            Ok(request) => request,
            Err(refused) => return Err(self.refused(event, refused, now).await),
        };
        let match_id = request.request().match_id.clone();
        // Accepted before the tickets are written: a ticket must not point at a match that turns
        // out to be another one (a conflict). A crash or a store failure before the tickets are
        // written answers no 200, so SNS delivers again and the tickets are written then.
        let accepted = match self.service.accept(SOURCE, request).await {
            Ok(accepted) => accepted,
            Err(PlaceError::MatchIdConflict(conflict)) => {
                return Err(self.conflict(event, &conflict, now).await);
            }
            Err(PlaceError::Store(error)) => return Err(SnsError::store(error)),
        };
        // The tickets first: the outcome (and its results webhook) must not overtake them.
        let written = self.record_placing(event, &match_id, now).await;
        self.place_accepted(&match_id, accepted);
        // A failure to write them answers no 200 (the placement goes on): SNS delivers again.
        written?;
        Ok(Receipt::Accepted { match_id })
    }

    async fn record_placing(
        &self,
        event: &Event,
        match_id: &str,
        now: OffsetDateTime,
    ) -> Result<(), SnsError> {
        for ticket_id in event.ticket_ids() {
            let status = TicketStatus {
                ticket_id,
                status: TicketState::Placing,
                match_id: Some(match_id.to_owned()),
                event: event.kind.clone(),
                reason: None,
                updated_at: now,
            };
            self.tickets.put_ticket_status(&status, self.config.keep_for).await.map_err(SnsError::store)?;
        }
        Ok(())
    }

    /// Places an accepted match in the background (or announces a known outcome again).
    fn place_accepted(&self, match_id: &str, accepted: Accepted) {
        let service = self.service.clone();
        match accepted {
            Accepted::Owned(job) => {
                tracing::info!(%match_id, "FlexMatch match accepted; placing in the background");
                self.background.spawn(async move {
                    let match_id = job.match_id().to_owned();
                    match service.clone().finish(job).await {
                        Ok(outcome) => {
                            let _ = service.announce(SOURCE, &outcome).await;
                        }
                        // The record stays pending; the recovery loop finishes it once the lease ends.
                        Err(error) => {
                            tracing::warn!(%match_id, %error, "background placement could not record its outcome")
                        }
                    }
                });
            }
            Accepted::Known(Progress::Done(outcome)) => {
                // A new message for a match placed before: announce again, a lost announcement is made good.
                self.background.spawn(async move {
                    let _ = service.announce(SOURCE, &outcome).await;
                });
            }
            Accepted::Known(Progress::Pending { .. }) => {}
        }
    }

    /// A match FlexMatch made that the bridge cannot place: SNS hears the refusal (and does not
    /// retry a 4xx), so the game's backend is told too, the one way it listens: the tickets are
    /// recorded as failed, and the failure is announced when the event names its match.
    async fn refused(&self, event: &Event, refused: SnsError, now: OffsetDateTime) -> SnsError {
        tracing::error!(event = %event.kind, error = %refused.message, "FlexMatch match refused: it cannot be placed");
        self.fail_unmatched_tickets(event, &refused, now).await;
        if let Some(match_id) = event.match_id() {
            let failure = Failure::new(match_id, FailureCode::InvalidRequest, refused.message.clone());
            let service = self.service.clone();
            self.background.spawn(async move {
                // A match recorded under the id stands (placed, failed or under way): its listeners
                // must not hear that it failed because a later event naming it was unusable.
                match service.status(&failure.match_id).await {
                    Ok(None) => {
                        let _ = service.announce(SOURCE, &Outcome::Failed(failure)).await;
                    }
                    Ok(Some(_)) => {
                        tracing::warn!(match_id = %failure.match_id, "refused event names a recorded match; that match stands and is not told");
                    }
                    Err(error) => {
                        tracing::warn!(match_id = %failure.match_id, %error, "refused event not announced: cannot tell whether its match id is recorded");
                    }
                }
            });
        }
        refused
    }

    /// A `MatchmakingSucceeded` whose match id the bridge knows as another match (FlexMatch makes
    /// its ids, so this is a bug upstream): 409, which SNS does not retry, and nothing placed.
    /// The first match stands untouched and is not told (no `match.failed` for its id); the
    /// event's tickets not already matched are recorded failed, so polling them says why.
    async fn conflict(&self, event: &Event, conflict: &MatchIdConflict, now: OffsetDateTime) -> SnsError {
        let refused = SnsError::new(SnsErrorKind::Conflict, "MATCH_ID_CONFLICT", conflict.to_string());
        self.fail_unmatched_tickets(event, &refused, now).await;
        refused
    }

    /// Records the event's tickets not already in a match as failed, with the refusal as reason.
    async fn fail_unmatched_tickets(&self, event: &Event, refused: &SnsError, now: OffsetDateTime) {
        let reason = format!("{}: {}", refused.code, refused.message);
        for ticket_id in event.ticket_ids() {
            let status = TicketStatus {
                ticket_id,
                status: TicketState::Failed,
                match_id: None,
                event: event.kind.clone(),
                reason: Some(reason.clone()),
                updated_at: now,
            };
            if let Err(error) = self.tickets.put_unmatched_ticket_status(&status, self.config.keep_for).await
            {
                // The refusal stands either way; SNS will not send this event again.
                tracing::warn!(%error, code = refused.code, "refused FlexMatch match: ticket status not recorded");
            }
        }
    }

    /// Records a status for the event's tickets, unless a ticket already reached a match.
    async fn record(
        &self,
        event: &Event,
        state: TicketState,
        now: OffsetDateTime,
    ) -> Result<Receipt, SnsError> {
        let mut recorded = 0;
        for ticket_id in event.ticket_ids() {
            let status = TicketStatus {
                ticket_id,
                status: state,
                match_id: None,
                event: event.kind.clone(),
                reason: event.reason(),
                updated_at: now,
            };
            // A matched ticket's status follows its placement, and an ended one stays ended.
            if self
                .tickets
                .put_unmatched_ticket_status(&status, self.config.keep_for)
                .await
                .map_err(SnsError::store)?
            {
                recorded += 1;
            }
        }
        Ok(Receipt::Recorded { event: event.kind.clone(), tickets: recorded })
    }

    /// A ticket's status; a matched ticket's follows its placement record.
    pub async fn ticket(&self, ticket_id: &str) -> Result<Option<TicketView>, SnsError> {
        let Some(status) = self.tickets.get_ticket_status(ticket_id).await.map_err(SnsError::store)? else {
            return Ok(None);
        };
        let mut view = TicketView {
            ticket_id: status.ticket_id,
            status: state_name(status.status).to_owned(),
            match_id: status.match_id.clone(),
            event: status.event,
            reason: status.reason,
            assignment: None,
            error: None,
            updated_at: status.updated_at,
        };
        if let Some(match_id) = &status.match_id {
            let record = self.service.status(match_id).await.map_err(|error| {
                tracing::error!(%error, "state store unavailable");
                SnsError::new(
                    SnsErrorKind::Unavailable,
                    "STORE_UNAVAILABLE",
                    crate::store::STORE_UNAVAILABLE_MESSAGE,
                )
            })?;
            match record.map(|r| r.state) {
                Some(PlacementState::Placed { assignment }) => {
                    view.status = state_name(TicketState::Placed).to_owned();
                    view.updated_at = assignment.placed_at;
                    view.assignment = Some(assignment);
                }
                Some(PlacementState::Failed { failure }) => {
                    view.status = state_name(TicketState::Failed).to_owned();
                    view.error = Some(failure.error);
                }
                Some(PlacementState::Pending { .. }) | None => {}
            }
        }
        Ok(Some(view))
    }

    /// Runs an outcome announcement like the background tasks do (tests).
    #[cfg(test)]
    async fn wait_background(&self) {
        self.background.close();
        self.background.wait().await;
        self.background.reopen();
    }
}

fn state_name(state: TicketState) -> &'static str {
    match state {
        TicketState::Searching => "searching",
        TicketState::Placing => "placing",
        TicketState::Placed => "placed",
        TicketState::Failed => "failed",
        TicketState::TimedOut => "timed_out",
        TicketState::Cancelled => "cancelled",
    }
}

fn receipt_label(receipt: &Receipt) -> &'static str {
    match receipt {
        Receipt::Accepted { .. } => "accepted",
        Receipt::Duplicate { .. } => "duplicate",
        Receipt::Confirmed => "confirmed",
        Receipt::ConfirmationLogged => "confirmation_logged",
        Receipt::Unsubscribed => "unsubscribed",
        Receipt::Recorded { .. } => "recorded",
        Receipt::Acknowledged { .. } => "acknowledged",
    }
}

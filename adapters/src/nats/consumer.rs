//! The durable door: `<prefix>.match.found` through a JetStream work-queue stream and one durable
//! pull consumer shared by every instance. A message is acknowledged only once its outcome is
//! recorded (by the engine) and announced (by the sinks); everything else is redelivered.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use bridge::placement::{PlaceError, PlacementService, Progress};
use bridge::ports::Outcome;
use bridge::{Failure, FailureCode, FailureDetail};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::metrics::NatsMetrics;
use super::sink::{DeadLetter, NatsOutcomeSink};
use super::subjects::{Subjects, usable_match_id};
use super::{NatsError, SOURCE};
use crate::config::NatsSettings;

/// What became of one message.
#[derive(Debug)]
enum Verdict {
    /// Placed and announced: double-ack.
    Ack,
    /// Answered for good (invalid, or a permanent failure published): TERM, no redelivery.
    Term { result: &'static str },
    /// Not done yet (store down, owned elsewhere, not announced, retryable failure): NAK with
    /// delay, or the dead-letter subject on the last delivery.
    Retry { match_id: Option<String>, error: FailureDetail },
    /// Cannot be answered on a `failed` subject (no usable match id), or a retryable failure on
    /// its last delivery: dead-letter subject, then TERM.
    Dead { match_id: Option<String>, error: FailureDetail },
    /// The match id was first requested with another match: dead-letter subject, then TERM. Not
    /// `match.failed.<id>`, whose listeners wait for the first match and would be told it failed.
    Conflict { match_id: String, error: FailureDetail },
    /// Shutdown grace ran out mid-placement: NAK at once, so another instance takes it now.
    Aborted,
}

/// The handling of each `match.found` message (the loop is [`super::pull`]).
pub(crate) struct MatchConsumer {
    pub jetstream: jetstream::Context,
    pub settings: NatsSettings,
    pub subjects: Subjects,
    pub service: Arc<dyn PlacementService>,
    pub sink: Arc<NatsOutcomeSink>,
    pub metrics: Arc<NatsMetrics>,
    /// True while a pull subscription is established (for `/readyz`).
    pub ready: Arc<AtomicBool>,
    /// Connections made so far; changes at each reconnect.
    pub connections: tokio::sync::watch::Receiver<u64>,
    /// In-flight messages across rebuilds of the pull subscription.
    pub permits: Arc<Semaphore>,
}

impl super::pull::PulledConsumer for MatchConsumer {
    const TASK: &'static str = "consumer";
    const WHAT: &'static str = "match consumer";

    fn consumer_name(&self) -> String {
        self.settings.consumer.clone()
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

    fn ensure(&self) -> impl Future<Output = Result<consumer::PullConsumer, NatsError>> + Send {
        self.ensure_consumer()
    }

    async fn handle(self: Arc<Self>, message: jetstream::Message, abort: CancellationToken) {
        self.handle_message(message, abort).await;
    }
}

impl MatchConsumer {
    /// Creates (if absent) the streams and the durable consumer; adds missing subjects to streams
    /// an older version created.
    pub async fn ensure_consumer(&self) -> Result<consumer::PullConsumer, NatsError> {
        let required = [self.subjects.match_found()];
        let matches =
            super::streams::ensure_streams(&self.jetstream, &self.settings, &self.subjects, &required)
                .await?;
        // Create-or-update: changed ack_wait / max_deliver apply on the next start.
        matches
            .create_consumer(consumer::pull::Config {
                durable_name: Some(self.settings.consumer.clone()),
                description: Some("gameye-bridge instances".to_owned()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: self.settings.ack_wait,
                max_deliver: self.settings.max_deliver,
                filter_subject: self.subjects.match_found(),
                ..Default::default()
            })
            .await
            .map_err(|e| NatsError::Consumer {
                consumer: self.settings.consumer.clone(),
                message: e.to_string(),
            })
    }

    async fn handle_message(&self, message: jetstream::Message, abort: CancellationToken) {
        let _in_flight = self.metrics.in_flight("consumer");
        let (delivered, stream_sequence) =
            message.info().map(|info| (info.delivered, info.stream_sequence)).unwrap_or((1, 0));
        let last = delivered >= self.settings.max_deliver;
        let verdict = tokio::select! {
            verdict = with_progress(&message, self.settings.ack_wait / 3, self.decide(&message, last)) => verdict,
            _ = abort.cancelled() => Verdict::Aborted,
        };
        self.settle(&message, verdict, last, delivered, stream_sequence).await;
    }

    /// Everything up to (not including) the acknowledgement.
    async fn decide(&self, message: &jetstream::Message, last: bool) -> Verdict {
        let request = match bridge::parse_match_request(&message.payload) {
            Ok(request) => request,
            Err(invalid) => {
                let Some(match_id) = match_id_of(message) else {
                    return Verdict::Dead {
                        match_id: None,
                        error: detail(
                            FailureCode::InvalidRequest,
                            format!("{invalid} (and no usable match_id)"),
                            false,
                        ),
                    };
                };
                let failure = Failure::invalid_request(&match_id, &invalid);
                return match self.sink.publish(SOURCE, &Outcome::Failed(failure.clone())).await {
                    Ok(()) => Verdict::Term { result: "invalid" },
                    Err(error) => Verdict::Retry {
                        match_id: Some(match_id),
                        error: detail(
                            FailureCode::InvalidRequest,
                            format!("{}; not announced: {error}", failure.error.message),
                            false,
                        ),
                    },
                };
            }
        };
        let match_id = request.match_id.clone();
        let outcome = match self.service.place(SOURCE, request).await {
            Ok(Progress::Done(outcome)) => outcome,
            Ok(Progress::Pending { lease_until }) => {
                return Verdict::Retry {
                    match_id: Some(match_id),
                    error: detail(
                        FailureCode::DeadlineExceeded,
                        format!("still being placed by another owner (lease until {lease_until})"),
                        true,
                    ),
                };
            }
            Err(PlaceError::MatchIdConflict(conflict)) => {
                return Verdict::Conflict { match_id, error: Failure::match_id_conflict(&conflict).error };
            }
            Err(error @ PlaceError::Store(_)) => {
                return Verdict::Retry {
                    match_id: Some(match_id),
                    error: detail(FailureCode::UpstreamUnavailable, format!("the bridge's {error}"), true),
                };
            }
        };
        // A retryable failure is placed again by the redelivery (the engine takes over retryable
        // failures); the matchmaker hears of it only when the deliveries run out.
        if let Outcome::Failed(failure) = &outcome
            && failure.error.retryable
            && !last
        {
            return Verdict::Retry { match_id: Some(match_id), error: failure.error.clone() };
        }
        match self.service.announce(SOURCE, &outcome).await {
            Ok(()) => {}
            // Another sink that can never succeed (bad credentials) must not hold NATS matches hostage.
            Err(error) if error.permanent => {
                tracing::error!(%match_id, %error, "a sink refused the announcement for good; acknowledging anyway")
            }
            Err(error) => {
                return Verdict::Retry {
                    match_id: Some(match_id),
                    error: detail(
                        FailureCode::UpstreamUnavailable,
                        format!("outcome not announced: {error}"),
                        true,
                    ),
                };
            }
        }
        match outcome {
            Outcome::Placed(_) => Verdict::Ack,
            Outcome::Failed(failure) if failure.error.retryable => {
                Verdict::Dead { match_id: Some(match_id), error: failure.error }
            }
            Outcome::Failed(_) => Verdict::Term { result: "failed" },
        }
    }

    async fn settle(
        &self,
        message: &jetstream::Message,
        verdict: Verdict,
        last: bool,
        delivered: i64,
        sequence: u64,
    ) {
        match verdict {
            Verdict::Ack => {
                self.final_ack(message, AckKind::Ack).await;
                self.metrics.handled("found", "acked");
            }
            Verdict::Term { result } => {
                self.final_ack(message, AckKind::Term).await;
                self.metrics.handled("found", result);
            }
            Verdict::Retry { match_id, error } if !last => {
                tracing::info!(match_id = match_id.as_deref().unwrap_or(""), delivered, reason = %error.message, "NAK: will be redelivered");
                nak_after(message, self.settings.nak_delay).await;
                self.metrics.handled("found", "nak");
            }
            Verdict::Retry { match_id, error } | Verdict::Dead { match_id, error } => {
                tracing::warn!(match_id = match_id.as_deref().unwrap_or(""), delivered, reason = %error.message, "giving up on a match: dead letter");
                let sent = self.dead_letter(message, match_id, error, delivered, sequence, last).await;
                self.term_once_dead_lettered(message, sent, "dead").await;
            }
            Verdict::Conflict { match_id, error } => {
                // The engine logged what differs; a redelivery would be refused the same way.
                let sent = self.dead_letter(message, Some(match_id), error, delivered, sequence, last).await;
                self.term_once_dead_lettered(message, sent, "conflict").await;
            }
            Verdict::Aborted => {
                let _ = message.ack_with(AckKind::Nak(None)).await;
                self.metrics.handled("found", "aborted");
            }
        }
    }

    /// Publishes the message on the dead-letter subject with why it was given up on. Whether it
    /// may be terminated: the letter is out, or this was the last delivery (then after a few more
    /// tries, since nothing brings the message back).
    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        match_id: Option<String>,
        error: FailureDetail,
        delivered: i64,
        sequence: u64,
        last: bool,
    ) -> bool {
        let dead = DeadLetter {
            match_id,
            error,
            deliveries: delivered,
            stream_sequence: sequence,
            payload: String::from_utf8_lossy(&message.payload).into_owned(),
        };
        dead_letter_sent(last, || self.sink.publish_dead(&dead)).await
    }

    /// Double ack: the server confirms, so a lost ack shows up here instead of as a surprise
    /// redelivery.
    async fn final_ack(&self, message: &jetstream::Message, kind: AckKind) {
        if let Err(error) = message.double_ack_with(kind).await {
            tracing::warn!(%error, "acknowledgement not confirmed; JetStream may redeliver (answered from the record)");
            self.metrics.handled("found", "ack_error");
        }
    }

    /// Terminates a message given up on once its dead letter is `sent` (counted as `result`). If the
    /// letter could not be published, the message comes back after `nats.nak_delay`, and its
    /// redelivery ends the same way and tries the letter again, rather than vanish untraced.
    async fn term_once_dead_lettered(&self, message: &jetstream::Message, sent: bool, result: &'static str) {
        if sent {
            self.final_ack(message, AckKind::Term).await;
            self.metrics.handled("found", result);
        } else {
            nak_after(message, self.settings.nak_delay).await;
            self.metrics.handled("found", "nak");
        }
    }
}

/// Hands `message` back for redelivery after `delay`. A NAK that is not sent only delays the
/// redelivery (to `ack_wait`).
pub(super) async fn nak_after(message: &jetstream::Message, delay: Duration) {
    if let Err(nak_error) = message.ack_with(AckKind::Nak(Some(delay))).await {
        tracing::warn!(error = %nak_error, "NAK not sent; JetStream redelivers after ack_wait");
    }
}

/// Publishes a dead letter with `publish`; whether the message it is about may be terminated.
/// Before the last delivery one try (a failure NAKs the message, and its redelivery tries again);
/// on the last, three tries a second or two apart, then the message is terminated all the same.
pub(super) async fn dead_letter_sent<F, Fut, E>(last: bool, publish: F) -> bool
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let tries = if last { 3 } else { 1 };
    for attempt in 1..=tries {
        match publish().await {
            Ok(()) => return true,
            Err(error) => tracing::error!(%error, attempt, last, "dead letter not published"),
        }
        if attempt < tries {
            tokio::time::sleep(Duration::from_secs(attempt)).await;
        }
    }
    last
}

/// Runs `work`, telling JetStream "still working" every `every` so a slow placement is not redelivered.
pub(super) async fn with_progress<F: Future>(
    message: &jetstream::Message,
    every: Duration,
    work: F,
) -> F::Output {
    let every = every.max(Duration::from_millis(200));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tokio::pin!(work);
    loop {
        tokio::select! {
            output = &mut work => return output,
            _ = ticks.tick() => {
                if let Err(error) = message.ack_with(AckKind::Progress).await {
                    tracing::debug!(%error, "progress ack not sent");
                }
            }
        }
    }
}

/// The match id of a payload that failed validation: its `match_id` if usable, else the
/// `Nats-Msg-Id` header (publishers set it to the match id).
fn match_id_of(message: &jetstream::Message) -> Option<String> {
    let from_body = serde_json::from_slice::<serde_json::Value>(&message.payload)
        .ok()
        .and_then(|body| body.get("match_id")?.as_str().map(str::to_owned));
    let from_header =
        message.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")).map(|value| value.as_str().to_owned());
    from_body.into_iter().chain(from_header).find(|id| usable_match_id(id))
}

fn detail(code: FailureCode, message: String, retryable: bool) -> FailureDetail {
    FailureDetail { code, message, retryable }
}

//! The durable pull consumers' shared loop: (re)build the consumer, pull at most `concurrency`
//! messages at a time, hand each to its handler, and rebuild with capped backoff after any error.
//! The match consumer and the seat consumer differ only in how they build the consumer and handle a
//! message ([`PulledConsumer`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::StatusCode;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::NatsError;
use super::metrics::NatsMetrics;
use crate::config::NatsSettings;

/// Restarts of the consumer loop wait this long at first, doubling up to [`MAX_RESTART_DELAY`].
const MIN_RESTART_DELAY: Duration = Duration::from_millis(200);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(10);
/// The server sends heartbeats this often while it has nothing for a pull; two missed → rebuild.
const PULL_HEARTBEAT: Duration = Duration::from_secs(5);
/// A pull request lives this long on the server when it gets fewer messages than it asked for.
const PULL_EXPIRES: Duration = Duration::from_secs(30);
/// At a stop, how long the server has to confirm the pull inbox's unsubscribe.
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// A durable pull consumer of the door's work-queue stream.
pub(super) trait PulledConsumer: Send + Sync + 'static {
    /// Names it in metrics (`consumer`, `seats`) and logs (`match consumer`, `seat consumer`).
    const TASK: &'static str;
    const WHAT: &'static str;

    fn consumer_name(&self) -> String;
    fn settings(&self) -> &NatsSettings;
    fn metrics(&self) -> &NatsMetrics;
    /// True while a pull subscription is established (for `/readyz`).
    fn ready(&self) -> &AtomicBool;
    /// In-flight messages across rebuilds of the pull subscription.
    fn permits(&self) -> &Arc<Semaphore>;
    fn jetstream(&self) -> &jetstream::Context;
    /// The count of connections made, which changes at each reconnect.
    fn connections(&self) -> watch::Receiver<u64>;

    /// Creates (if absent) the streams and the durable consumer.
    fn ensure(&self) -> impl Future<Output = Result<consumer::PullConsumer, NatsError>> + Send;

    /// Works one message to its acknowledgement; `abort` says the shutdown grace is over.
    fn handle(
        self: Arc<Self>,
        message: jetstream::Message,
        abort: CancellationToken,
    ) -> impl Future<Output = ()> + Send;
}

/// Runs `this` until `stop`, rebuilding stream, consumer and pull subscription after any error with
/// capped backoff. Handlers are spawned on `handlers`; `abort` tells them the grace is over.
pub(super) async fn run<C: PulledConsumer>(
    this: Arc<C>,
    stop: CancellationToken,
    abort: CancellationToken,
    handlers: TaskTracker,
) {
    let mut delay = MIN_RESTART_DELAY;
    loop {
        let started = Instant::now();
        let result = consume(&this, &stop, &abort, &handlers).await;
        this.ready().store(false, Ordering::Relaxed);
        let Err(error) = result else { return };
        this.metrics().restarted(C::TASK);
        if started.elapsed() > Duration::from_secs(60) {
            delay = MIN_RESTART_DELAY;
        }
        tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "NATS {} stopped; rebuilding it", C::WHAT);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_RESTART_DELAY);
    }
}

async fn consume<C: PulledConsumer>(
    this: &Arc<C>,
    stop: &CancellationToken,
    abort: &CancellationToken,
    handlers: &TaskTracker,
) -> Result<(), NatsError> {
    let consumer_error = |message: String| NatsError::Consumer { consumer: this.consumer_name(), message };
    let consumer = tokio::select! {
        _ = stop.cancelled() => return Ok(()),
        consumer = this.ensure() => consumer?,
    };
    let jetstream = this.jetstream();
    let client = jetstream.client();
    // Each request has a reply subject of its own under one subscription, so an earlier
    // request's end (a request outlives a reconnect when the server does) is not taken for the
    // current one's.
    let inbox = client.new_inbox();
    let mut inbox_messages =
        client.subscribe(format!("{inbox}.*")).await.map_err(|e| consumer_error(e.to_string()))?;
    let mut requests_sent: u64 = 0;
    let batch = this.settings().concurrency;
    let request = consumer::pull::BatchConfig {
        batch,
        expires: Some(PULL_EXPIRES),
        idle_heartbeat: PULL_HEARTBEAT,
        ..Default::default()
    };
    let mut connected_again = this.connections();
    connected_again.mark_unchanged();
    this.ready().store(true, Ordering::Relaxed);
    tracing::info!(stream = %this.settings().stream, consumer = %this.consumer_name(), "NATS {} running", C::WHAT);
    'requests: loop {
        // One pull request at a time, for `concurrency` messages: what arrives beyond the free
        // slots waits in the inbox for one, and the next request goes out once this one is
        // worked off, so an instance never holds more than one batch that it is not working on.
        requests_sent += 1;
        let reply = async_nats::Subject::from(format!("{inbox}.{requests_sent}"));
        consumer
            .request_batch(request.clone(), reply.clone())
            .await
            .map_err(|e| consumer_error(e.to_string()))?;
        let mut expected = batch;
        while expected > 0 {
            let permit = tokio::select! {
                _ = stop.cancelled() => break 'requests,
                permit = this.permits().clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            let message = loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => break 'requests,
                    // The request was lost with the server it was sent to (or may be): send it again.
                    Ok(()) = connected_again.changed() => continue 'requests,
                    next = tokio::time::timeout(2 * PULL_HEARTBEAT, inbox_messages.next()) => next,
                };
                let message = match next {
                    Err(_) => {
                        return Err(consumer_error(
                            "no message or heartbeat from the server in time".to_owned(),
                        ));
                    }
                    Ok(None) => return Err(consumer_error("the pull subscription ended".to_owned())),
                    Ok(Some(message)) => message,
                };
                match message.status {
                    None | Some(StatusCode::OK) => break Some(message),
                    Some(StatusCode::IDLE_HEARTBEAT) => continue,
                    // Statuses come on the request's own subject: an earlier request ended.
                    Some(StatusCode::TIMEOUT) if message.subject != reply => continue,
                    // The request expired with nothing (more) for it: ask again.
                    Some(StatusCode::TIMEOUT) => break None,
                    Some(status) => {
                        let reason = message.description.as_deref().unwrap_or("no description");
                        return Err(consumer_error(format!("the server ended the pull: {status} {reason}")));
                    }
                }
            };
            let Some(message) = message else { continue 'requests };
            // Counted against this request even if an earlier one sent it (messages carry their
            // stream subject, not the request's): that only sends the next request sooner, and
            // the earlier one ends within its expiry.
            expected -= 1;
            let handler = this
                .clone()
                .handle(jetstream::Message { message, context: jetstream.clone() }, abort.clone());
            handlers.spawn(async move {
                let _permit = permit;
                handler.await;
            });
        }
    }
    hand_back_fetched(inbox_messages, jetstream).await;
    Ok(())
}

/// NAKs (no delay) the messages the pull fetched that no handler took: at a stop they would
/// otherwise wait out `ack_wait` before another instance gets them.
///
/// The inbox is drained first: its unsubscribe and a ping go to the server, and everything the
/// server sent before it saw the unsubscribe arrives before the pong. So every fetched message is
/// in hand, none is still on its way, and the server offers nothing more (the NAKed ones included)
/// to this pull, which nobody listens to any more. Then the NAKs, on the same connection.
async fn hand_back_fetched(mut inbox_messages: async_nats::Subscriber, jetstream: &jetstream::Context) {
    if let Err(error) = inbox_messages.drain().await {
        tracing::warn!(%error, "the pull inbox was not drained; what it fetched comes back after ack_wait");
        return;
    }
    let deadline = tokio::time::Instant::now() + DRAIN_WAIT;
    let mut handed_back = 0;
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, inbox_messages.next()).await {
        if !matches!(message.status, None | Some(StatusCode::OK)) {
            continue;
        }
        let message = jetstream::Message { message, context: jetstream.clone() };
        if let Err(error) = message.ack_with(jetstream::AckKind::Nak(None)).await {
            tracing::debug!(%error, "a fetched message was not handed back; it comes back after ack_wait");
        } else {
            handed_back += 1;
        }
    }
    if handed_back > 0 {
        tracing::info!(handed_back, "messages fetched ahead handed back to the stream at the stop");
    }
}

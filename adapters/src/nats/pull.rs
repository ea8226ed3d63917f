//! The durable pull consumers' shared loop: (re)build the consumer, pull at most `concurrency`
//! messages at a time, hand each to its handler, and rebuild with capped backoff after any error.
//! The match consumer and the seat consumer differ only in how they build the consumer and handle a
//! message ([`PulledConsumer`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use tokio::sync::Semaphore;
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
/// At a stop, how long to wait for a fetched message still on its way before handing back the rest.
const IN_FLIGHT_WAIT: Duration = Duration::from_millis(100);

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
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(this.settings().concurrency)
        .heartbeat(PULL_HEARTBEAT)
        .messages()
        .await
        .map_err(|e| consumer_error(e.to_string()))?;
    this.ready().store(true, Ordering::Relaxed);
    tracing::info!(stream = %this.settings().stream, consumer = %this.consumer_name(), "NATS {} running", C::WHAT);
    loop {
        // A free slot first, then a message: at most `concurrency` are worked on; the pull
        // requests one batch of that size ahead, so a message waits at most for one free slot.
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            permit = this.permits().clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let next = tokio::select! {
            _ = stop.cancelled() => break,
            next = messages.next() => next,
        };
        match next {
            None => return Err(consumer_error("the pull subscription ended".to_owned())),
            Some(Err(error)) => return Err(consumer_error(error.to_string())),
            Some(Ok(message)) => {
                let handler = this.clone().handle(message, abort.clone());
                handlers.spawn(async move {
                    let _permit = permit;
                    handler.await;
                });
            }
        }
    }
    hand_back_fetched(&mut messages, this.settings().concurrency).await;
    Ok(())
}

/// NAKs (no delay) the messages the pull fetched ahead that no handler took: at a stop they would
/// otherwise wait out `ack_wait` before another instance gets them. A pull fetches one batch
/// (`concurrency`) ahead, and the server may be delivering the next: what is on its way is waited
/// for, [`IN_FLIGHT_WAIT`] at most per message, so that it is not left to `ack_wait` either.
async fn hand_back_fetched(messages: &mut consumer::pull::Stream, batch: usize) {
    let mut handed_back = 0;
    for _ in 0..2 * batch {
        let Ok(Some(Ok(message))) = tokio::time::timeout(IN_FLIGHT_WAIT, messages.next()).await else {
            break;
        };
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

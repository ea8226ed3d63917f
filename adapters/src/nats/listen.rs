//! A supervised core-NATS queue subscription: resubscribes after errors, bounds concurrency, and
//! stops taking messages on shutdown while the handlers already running finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::metrics::NatsMetrics;

pub(crate) struct Listener {
    pub client: async_nats::Client,
    pub subject: String,
    pub queue_group: String,
    /// `responder` or `latency`, for metrics and logs.
    pub task: &'static str,
    pub permits: Arc<Semaphore>,
    pub metrics: Arc<NatsMetrics>,
}

impl Listener {
    pub async fn run<H, Fut>(self, stop: CancellationToken, handlers: TaskTracker, handler: H)
    where
        H: Fn(async_nats::Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut delay = Duration::from_millis(200);
        loop {
            let subscribed = tokio::select! {
                _ = stop.cancelled() => return,
                subscribed = self.client.queue_subscribe(self.subject.clone(), self.queue_group.clone()) => subscribed,
            };
            match subscribed {
                Ok(mut subscriber) => {
                    tracing::info!(subject = %self.subject, queue_group = %self.queue_group, "NATS {} listening", self.task);
                    delay = Duration::from_millis(200);
                    loop {
                        let permit = tokio::select! {
                            _ = stop.cancelled() => {
                                // Stop taking work; the queue group's other members get it.
                                let _ = subscriber.unsubscribe().await;
                                return;
                            }
                            permit = self.permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                        };
                        let next = tokio::select! {
                            _ = stop.cancelled() => {
                                let _ = subscriber.unsubscribe().await;
                                return;
                            }
                            next = subscriber.next() => next,
                        };
                        let Some(message) = next else { break };
                        let work = handler(message);
                        handlers.spawn(async move {
                            let _permit = permit;
                            work.await;
                        });
                    }
                    tracing::warn!(subject = %self.subject, "NATS subscription ended; subscribing again");
                }
                Err(error) => {
                    tracing::warn!(subject = %self.subject, %error, "NATS subscribe failed; retrying");
                }
            }
            self.metrics.restarted(self.task);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}

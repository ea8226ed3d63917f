//! The NATS door's metrics, registered in the process's `Registry` (names get `gameye_bridge_`).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HandledLabels {
    /// `found` (JetStream), `request` (request/reply), `latency`, `join`/`leave` (JetStream seat
    /// changes; `players` for neither subject) or `backfill` (request/reply).
    pub kind: &'static str,
    /// What became of it: `acked`, `termed`, `nak`, `dead`, `replied`, `stored`, `invalid`, `aborted`,
    /// `error`; seat changes: `joined`, `left`, `rejected`; backfills: `reserved`, `no_seats`,
    /// `placed`, `failed`, `pending`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PublishLabels {
    /// `assigned`, `failed`, `dead`, `session_ended`, `joined`, `left`, `rejected` or `players_dead`.
    pub kind: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TaskLabels {
    /// `consumer`, `responder`, `latency`, `seats` (join/leave consumer) or `backfill`.
    pub task: &'static str,
}

/// Messages handled by outcome, publishes, in-flight work, task restarts and the connection state.
#[derive(Clone)]
pub struct NatsMetrics {
    pub(crate) handled: Family<HandledLabels, Counter>,
    pub(crate) published: Family<PublishLabels, Counter>,
    pub(crate) in_flight: Family<TaskLabels, Gauge>,
    pub(crate) restarts: Family<TaskLabels, Counter>,
    pub(crate) connected: Gauge,
    pub(crate) connections: Counter,
    pub(crate) handle_seconds: Family<TaskLabels, Histogram>,
}

impl NatsMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Self {
            handled: Family::default(),
            published: Family::default(),
            in_flight: Family::default(),
            restarts: Family::default(),
            connected: Gauge::default(),
            connections: Counter::default(),
            handle_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            }),
        };
        registry.register(
            "nats_messages",
            "NATS door messages handled, by kind (found, request, latency, join, leave, backfill) and result",
            metrics.handled.clone(),
        );
        registry.register(
            "nats_published",
            "Results published on NATS, by kind (assigned, failed, dead, joined, left, rejected, ...) and result",
            metrics.published.clone(),
        );
        registry.register(
            "nats_in_flight",
            "NATS messages being worked on now, by task",
            metrics.in_flight.clone(),
        );
        registry.register(
            "nats_task_restarts",
            "NATS door tasks rebuilt after an error (consumer, responder, latency, seats, backfill)",
            metrics.restarts.clone(),
        );
        registry.register("nats_connected", "1 while connected to a NATS server", metrics.connected.clone());
        registry.register(
            "nats_connections",
            "Connections established to NATS (the first one and every reconnection)",
            metrics.connections.clone(),
        );
        registry.register(
            "nats_handle_duration_seconds",
            "Time from receiving a NATS message to its ack or reply, by task",
            metrics.handle_seconds.clone(),
        );
        Arc::new(metrics)
    }

    pub(crate) fn handled(&self, kind: &'static str, result: &'static str) {
        self.handled.get_or_create(&HandledLabels { kind, result }).inc();
    }

    pub(crate) fn published(&self, kind: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.published.get_or_create(&PublishLabels { kind, result }).inc();
    }

    pub(crate) fn restarted(&self, task: &'static str) {
        self.restarts.get_or_create(&TaskLabels { task }).inc();
    }

    /// Counts one message in flight until the guard drops.
    pub(crate) fn in_flight(self: &Arc<Self>, task: &'static str) -> InFlight {
        self.in_flight.get_or_create(&TaskLabels { task }).inc();
        InFlight { metrics: self.clone(), task, started: std::time::Instant::now() }
    }
}

pub(crate) struct InFlight {
    metrics: Arc<NatsMetrics>,
    task: &'static str,
    started: std::time::Instant,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let labels = TaskLabels { task: self.task };
        self.metrics.in_flight.get_or_create(&labels).dec();
        self.metrics.handle_seconds.get_or_create(&labels).observe(self.started.elapsed().as_secs_f64());
    }
}

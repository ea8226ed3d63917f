//! The engine's clock on tokio, its metrics, and the background recovery loop.

use std::sync::Arc;
use std::time::Duration;

use bridge::placement::{Engine, PlacementObserver, PlacementReport};
use bridge::ports::{Clock, SessionApi, StateStore};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// Wall-clock time and tokio timers.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    /// placed, failed, duplicate
    outcome: &'static str,
    /// Failure code, or empty.
    code: String,
    location: String,
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    outcome: &'static str,
}

/// Placements by outcome, code, location and door; placement latency; recoveries.
#[derive(Clone)]
pub struct PlacementMetrics {
    placements: Family<OutcomeLabels, Counter>,
    duration: Family<DurationLabels, Histogram>,
    takeovers: Counter,
    pub(crate) recovered: Counter,
    seat_write_failures: Counter,
}

impl PlacementMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Self {
            placements: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 16))),
            takeovers: Counter::default(),
            recovered: Counter::default(),
            seat_write_failures: Counter::default(),
        };
        registry.register(
            "seat_write_failures",
            "Placed sessions whose seat record could not be written (the reconciler adopts them)",
            metrics.seat_write_failures.clone(),
        );
        registry.register("placements", "Placements finished, by outcome", metrics.placements.clone());
        registry.register(
            "placement_duration_seconds",
            "Time from claim to recorded outcome",
            metrics.duration.clone(),
        );
        registry.register(
            "placement_takeovers",
            "Placements taken over from an owner whose lease expired",
            metrics.takeovers.clone(),
        );
        registry.register(
            "placement_recoveries",
            "Placements finished by the recovery loop",
            metrics.recovered.clone(),
        );
        Arc::new(metrics)
    }
}

impl PlacementObserver for PlacementMetrics {
    fn finished(&self, report: &PlacementReport<'_>) {
        self.placements
            .get_or_create(&OutcomeLabels {
                outcome: report.outcome,
                code: report
                    .code
                    .and_then(|code| serde_json::to_value(code).ok())
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                location: report.location.unwrap_or_default().to_owned(),
                source: report.source.to_owned(),
            })
            .inc();
        if report.outcome != "duplicate" {
            self.duration
                .get_or_create(&DurationLabels { outcome: report.outcome })
                .observe(report.elapsed.as_secs_f64());
        }
        if report.taken_over {
            self.takeovers.inc();
        }
    }

    fn seat_write_failed(&self) {
        self.seat_write_failures.inc();
    }
}

/// Finishes placements whose owner died (their lease expired), every `interval`, until `stop`.
pub async fn run_recovery<A, S, C>(
    engine: Arc<Engine<A, S, C>>,
    interval: Duration,
    metrics: Arc<PlacementMetrics>,
    stop: CancellationToken,
) where
    A: SessionApi,
    S: StateStore,
    C: Clock,
{
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        match engine.recover(100).await {
            Ok(0) => {}
            Ok(count) => {
                metrics.recovered.inc_by(count as u64);
                tracing::info!(count, "recovered placements left by stopped owners");
            }
            Err(error) => tracing::warn!(%error, "placement recovery failed; will try again"),
        }
    }
}

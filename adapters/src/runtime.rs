//! The engine's clock on tokio, its metrics, and the background loops (recovery, player sync).

use std::sync::Arc;
use std::time::Duration;

use bridge::placement::{Engine, OwedAnnouncements, PlacementObserver, PlacementReport, PlayerSyncOutcome};
use bridge::ports::{Clock, SessionApi, StateStore};
use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio::sync::Notify;
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
    owed_announcements: Family<OwedLabels, Counter>,
    owed_now: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OwedLabels {
    /// delivered, failed (due again later), given_up
    result: &'static str,
}

impl PlacementMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Self {
            placements: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 16))),
            takeovers: Counter::default(),
            recovered: Counter::default(),
            seat_write_failures: Counter::default(),
            owed_announcements: Family::default(),
            owed_now: Gauge::default(),
        };
        registry.register(
            "announcement_retries",
            "Owed announcements retried from the record by the outbox, by result",
            metrics.owed_announcements.clone(),
        );
        registry.register(
            "announcements_owed",
            "Recorded outcomes some sink has not confirmed yet (the announcement outbox; every instance reports the shared count: aggregate with max)",
            metrics.owed_now.clone(),
        );
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

impl PlacementMetrics {
    fn owed_retried(&self, round: OwedAnnouncements) {
        let results =
            [("delivered", round.delivered), ("failed", round.failed), ("given_up", round.given_up)];
        for (result, count) in results {
            if count > 0 {
                self.owed_announcements.get_or_create(&OwedLabels { result }).inc_by(count as u64);
            }
        }
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

/// Owed announcements taken per outbox round (announced concurrently).
const OWED_PER_ROUND: usize = 100;

/// Finishes placements whose owner died (their lease expired) every `interval` until
/// `stop_recovering`, and announces outcomes still owed to sinks until `stop`. Two loops, so that a
/// sink that is down (each retry round waits up to a deadline on it) does not hold up recovery. A
/// stopping instance stops taking placements over at once (`stop_recovering`, at the signal): each
/// is up to a placement deadline of work that would hold its shutdown up.
pub async fn run_recovery<A, S, C>(
    engine: Arc<Engine<A, S, C>>,
    interval: Duration,
    metrics: Arc<PlacementMetrics>,
    stop_recovering: CancellationToken,
    stop: CancellationToken,
) where
    A: SessionApi,
    S: StateStore,
    C: Clock,
{
    let recover = async {
        loop {
            tokio::select! {
                _ = stop_recovering.cancelled() => return,
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
    };
    let (engine_ref, metrics_ref) = (&engine, &metrics);
    let outbox = crate::pace::run_rounds(interval, &stop, || async move {
        let mut full = false;
        match engine_ref.announce_owed(OWED_PER_ROUND).await {
            Ok(round) => {
                full = round.claimed == OWED_PER_ROUND;
                metrics_ref.owed_retried(round);
            }
            Err(error) => tracing::warn!(%error, "announcement outbox round failed; will try again"),
        }
        if let Ok(owed) = engine_ref.store().owed_announcements().await {
            metrics_ref.owed_now.set(i64::try_from(owed).unwrap_or(i64::MAX));
        }
        full
    });
    tokio::join!(recover, outbox);
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncOutcomeLabels {
    /// in_sync, gone, retry, store_error
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncChangeLabels {
    /// join, leave
    call: &'static str,
}

/// The player-sync outbox: syncs by outcome, players sent to Gameye, sessions queued.
#[derive(Clone)]
pub struct PlayerSyncMetrics {
    syncs: Family<SyncOutcomeLabels, Counter>,
    players: Family<SyncChangeLabels, Counter>,
    queued: Gauge,
}

impl PlayerSyncMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Self { syncs: Family::default(), players: Family::default(), queued: Gauge::default() };
        registry.register(
            "player_syncs",
            "Gameye player-list syncs, by outcome (retry: Gameye failed, due again after a delay)",
            metrics.syncs.clone(),
        );
        registry.register(
            "player_sync_players",
            "Players sent to Gameye's join and leave calls by the player-sync outbox",
            metrics.players.clone(),
        );
        registry.register(
            "player_syncs_queued",
            "Sessions whose Gameye player list is not yet known to match their seats",
            metrics.queued.clone(),
        );
        Arc::new(metrics)
    }

    fn record(&self, outcome: &PlayerSyncOutcome) {
        let label = match outcome {
            PlayerSyncOutcome::InSync { joined, left } => {
                self.players.get_or_create(&SyncChangeLabels { call: "join" }).inc_by(*joined as u64);
                self.players.get_or_create(&SyncChangeLabels { call: "leave" }).inc_by(*left as u64);
                "in_sync"
            }
            PlayerSyncOutcome::Gone => "gone",
            PlayerSyncOutcome::Retry { .. } => "retry",
            PlayerSyncOutcome::Store(_) => "store_error",
        };
        self.syncs.get_or_create(&SyncOutcomeLabels { outcome: label }).inc();
    }
}

/// How many sessions one claim takes, all synced at once (claiming more than run at once would let
/// the last ones' leases run while they wait).
const PLAYER_SYNC_BATCH: usize = 16;

/// The player-sync worker: claims sessions whose players changed and syncs them to Gameye, at once
/// when `wakeup` is notified (a change on this instance), else every `poll` (changes made on other
/// instances, retries coming due, claims of stopped instances running out). Every instance runs
/// one; the store's claims keep them off each other's sessions.
pub async fn run_player_sync<A, S, C>(
    engine: Arc<Engine<A, S, C>>,
    wakeup: Arc<Notify>,
    poll: Duration,
    metrics: Arc<PlayerSyncMetrics>,
    stop: CancellationToken,
) where
    A: SessionApi,
    S: StateStore,
    C: Clock,
{
    loop {
        let claims = match engine.claim_player_syncs(PLAYER_SYNC_BATCH).await {
            Ok(claims) => claims,
            Err(error) => {
                tracing::warn!(%error, "cannot claim Gameye player syncs; will try again");
                Vec::new()
            }
        };
        let full_batch = claims.len() == PLAYER_SYNC_BATCH;
        let batch = futures::stream::iter(claims).for_each_concurrent(PLAYER_SYNC_BATCH, |claim| {
            let engine = &engine;
            let metrics = &metrics;
            async move {
                let outcome = engine.sync_players(&claim).await;
                match &outcome {
                    PlayerSyncOutcome::Retry { error } => tracing::warn!(
                        session_id = %claim.session_id, attempts = claim.attempts + 1, %error,
                        "Gameye player sync failed; will retry"
                    ),
                    PlayerSyncOutcome::Store(error) => tracing::warn!(
                        session_id = %claim.session_id, %error, "player sync: state store failed; will retry"
                    ),
                    _ => {}
                }
                metrics.record(&outcome);
            }
        });
        // Stopping drops the syncs in hand: they are idempotent, and their claims run out for
        // another instance (or the next start) to take them.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = batch => {}
        }
        if full_batch && !stop.is_cancelled() {
            continue;
        }
        if let Ok(queued) = engine.store().queued_player_syncs().await {
            metrics.queued.set(i64::try_from(queued).unwrap_or(i64::MAX));
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wakeup.notified() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

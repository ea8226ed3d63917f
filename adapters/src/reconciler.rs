//! The session reconciler (DESIGN §4 "Lifecycle"): keeps the seat records in line with what Gameye
//! runs. One instance at a time does it, holding the lease [`LEASE_NAME`] in the state store.
//!
//! Every `interval` the lease holder lists Gameye's sessions carrying the bridge's labels (a
//! [`SessionLister`] wired in `main`, so this adapter does not know the Gameye client) and compares
//! them with the live seat records:
//!
//! - a recorded session absent from Gameye's listing in two consecutive scans (each time a listing
//!   that succeeded), and then confirmed gone with `GET /session/{id}`, is ended (seats released)
//!   and announced to every session-event sink (through the session-end outbox, see
//!   [`crate::session_events`]). A record written after the listing began does
//!   not count as absent from it (the session may have been started after Gameye listed);
//! - a `created` session Gameye lists as running is marked `running`;
//! - a listed session without a record (Redis lost it, or its write failed at placement) is adopted
//!   with the `[seats]` capacity of its image (more if Gameye counts more players), its host, ports
//!   and location from the listing, and the players Gameye counts as joined;
//! - a session whose Gameye `playerCount` differs from its record's players is queued for a player
//!   sync (the safety net for a change whose sync was never queued: the bridge stopped between the
//!   two).
//!
//! Scans are paced (`reconciler.max_busy`, see [`crate::pace`]). A listing that fails (any Gameye
//! error) changes nothing. A store read that fails, a lost lease or a stop ends the scan where it
//! is: what it changed stands (records already compared, each against a listing that succeeded),
//! the rest waits for the next scan, and nothing is adopted. The absence counts live in the lease
//! holder's memory: a handover (or restart) starts them again, so a gone session is then ended two
//! scans after the handover — late, never early.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge::Port;
use bridge::placement::{SeatSettings, SessionMetadata};
use bridge::ports::{EndAnnouncementStore, Ending, LeaseStore, PlayerSyncStore, RecordedSession, SeatStore};
use bridge::seats::EndReason;

use crate::session_events::EndAnnouncer;
use bridge::seats::{NewSession, SeatError, SessionInfo, SessionStatus};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::pace::{Pace, Pacer};

/// The lease's name in the state store (`<prefix>:lease:{reconciler}` in Redis).
pub const LEASE_NAME: &str = "reconciler";

/// In how many consecutive scans' listings a recorded session must be missing to be ended.
pub const ABSENT_SCANS_TO_END: u32 = 2;
/// Scans in a row that list a session ended here before the reconciler warns (once) about it.
const ENDED_LISTED_SCANS_TO_WARN: u32 = 3;

/// Sessions marked running in one store call (one Redis pipeline of script calls), with a paced
/// step between two calls: Redis runs a pipeline's calls one after another while placements'
/// commands wait. Calls of a thousand put a burst of ~15 ms slower placements at each one
/// (bench/RESULTS.md, session 16).
const MARK_RUNNING_CHUNK: usize = 64;

/// A session Gameye runs that carries the bridge's labels, as the reconciler needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSession {
    pub session_id: Uuid,
    pub match_id: String,
    pub image: String,
    pub version: Option<String>,
    pub location: String,
    pub host: String,
    pub ports: Vec<Port>,
    /// The session's own labels (the bridge's `gameye-bridge.*` ones left out).
    pub labels: BTreeMap<String, String>,
    /// Gameye reports it running (else it is still starting).
    pub running: bool,
    /// When Gameye created it (Unix milliseconds).
    pub created_ms: i64,
    /// Gameye's `playerCount`, when the listing has it.
    pub player_count: Option<u32>,
    /// The seats its placement counted (`gameye-bridge.capacity`), when the session carries them.
    pub capacity: Option<u32>,
}

type ListFuture = Pin<Box<dyn Future<Output = Result<Vec<ListedSession>, String>> + Send>>;
/// Gameye's listing by session id.
type Listing = HashMap<Uuid, ListedSession>;
type PlayersFuture = Pin<Box<dyn Future<Output = Result<Option<Vec<String>>, String>> + Send>>;

/// Lists the bridge's sessions at Gameye: every one, or an error (the scan is then incomplete);
/// and, for adoptions, who has joined one of them.
#[derive(Clone)]
pub struct SessionLister {
    list: Arc<dyn Fn(Pace) -> ListFuture + Send + Sync>,
    players: Option<Arc<dyn Fn(Uuid) -> PlayersFuture + Send + Sync>>,
}

impl SessionLister {
    /// `list` reads and decodes the listing at the [`Pace`] it is given.
    pub fn new<F, Fut>(list: F) -> Self
    where
        F: Fn(Pace) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<ListedSession>, String>> + Send + 'static,
    {
        Self { list: Arc::new(move |pace| Box::pin(list(pace))), players: None }
    }

    /// How to ask Gameye about one session (`GET /session/{id}`): who joined it, or `None` when
    /// Gameye no longer runs it. Used for orphans' players, and to confirm that a recorded session
    /// missing from listings is really gone before it is ended (a session started by a version
    /// without the deployment label is missing from the filtered listing, yet runs). Without it,
    /// orphans are adopted with no players and absence alone ends a session.
    pub fn with_players<F, Fut>(mut self, players: F) -> Self
    where
        F: Fn(Uuid) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Vec<String>>, String>> + Send + 'static,
    {
        self.players = Some(Arc::new(move |id| Box::pin(players(id))));
        self
    }

    async fn list(&self, pace: Pace) -> Result<Listing, String> {
        let listed = (self.list)(pace).await?;
        // Hashing a hundred thousand entries is milliseconds: off the async workers too.
        crate::pace::spawn_blocking(pace, move || listed.into_iter().map(|s| (s.session_id, s)).collect())
            .await
    }

    async fn players(&self, session_id: Uuid) -> Result<Vec<String>, String> {
        match &self.players {
            Some(players) => players(session_id).await?.ok_or_else(|| "gone at Gameye".to_owned()),
            None => Ok(Vec::new()),
        }
    }

    /// Whether Gameye still runs the session (`false` without a way to ask).
    async fn still_runs(&self, session_id: Uuid) -> Result<bool, String> {
        match &self.players {
            Some(players) => Ok(players(session_id).await?.is_some()),
            None => Ok(false),
        }
    }
}

impl std::fmt::Debug for SessionLister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionLister")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScanLabels {
    /// complete, incomplete (Gameye listing failed), store_error, lease_lost
    result: &'static str,
}

/// Scans by result and how long they took, sessions listed, recorded, ended, adopted and
/// refreshed, and whether this instance holds the lease.
#[derive(Clone)]
pub struct ReconcilerMetrics {
    scans: Family<ScanLabels, Counter>,
    scan_seconds: Histogram,
    scanning: Gauge,
    listed: Gauge,
    recorded: Gauge,
    ended: Counter,
    adopted: Counter,
    refreshed: Counter,
    player_syncs_queued: Counter,
    leader: Gauge,
}

impl Default for ReconcilerMetrics {
    fn default() -> Self {
        Self {
            scans: Family::default(),
            // 10 ms to about 11 min: a paced scan of a large deployment takes tens of seconds or more.
            scan_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 17)),
            scanning: Gauge::default(),
            listed: Gauge::default(),
            recorded: Gauge::default(),
            ended: Counter::default(),
            adopted: Counter::default(),
            refreshed: Counter::default(),
            player_syncs_queued: Counter::default(),
            leader: Gauge::default(),
        }
    }
}

impl ReconcilerMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Self::default();
        registry.register(
            "reconciler_scans",
            "Reconciler scans by result (complete, incomplete: Gameye listing failed, store_error, lease_lost)",
            metrics.scans.clone(),
        );
        registry.register(
            "reconciler_scan_seconds",
            "Wall-clock time of a reconciler scan, rests included (see reconciler.max_busy)",
            metrics.scan_seconds.clone(),
        );
        registry.register(
            "reconciler_scanning",
            "1 while a reconciler scan runs (a paced scan of a large deployment takes a while)",
            metrics.scanning.clone(),
        );
        registry.register(
            "reconciler_sessions_listed",
            "Sessions with the bridge's labels in Gameye's listing at the last scan",
            metrics.listed.clone(),
        );
        registry.register(
            "reconciler_sessions_recorded",
            "Seat records not ended at the last complete scan",
            metrics.recorded.clone(),
        );
        registry.register(
            "reconciler_sessions_ended",
            "Sessions ended because Gameye no longer lists them",
            metrics.ended.clone(),
        );
        registry.register(
            "reconciler_sessions_adopted",
            "Sessions Gameye runs with the bridge's labels whose seat record was missing",
            metrics.adopted.clone(),
        );
        registry.register(
            "reconciler_status_refreshes",
            "Sessions marked running because Gameye lists them running",
            metrics.refreshed.clone(),
        );
        registry.register(
            "reconciler_player_syncs_queued",
            "Sessions queued for a Gameye player sync because Gameye counted other players than the record",
            metrics.player_syncs_queued.clone(),
        );
        registry.register(
            "reconciler_leader",
            "1 while this instance holds the reconciler lease",
            metrics.leader.clone(),
        );
        Arc::new(metrics)
    }

    fn scan(&self, result: &'static str) {
        self.scans.get_or_create(&ScanLabels { result }).inc();
    }
}

/// What the reconciler needs besides its ports.
#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    pub interval: Duration,
    /// This instance's name on the lease (unique per process).
    pub owner: String,
    /// Capacities of adopted sessions.
    pub seats: SeatSettings,
    /// How long an adopted record lives after its last change.
    pub keep_for: Duration,
    /// How a scan is spread over time.
    pub pace: Pace,
}

/// The reconciler of one instance; [`Reconciler::run`] until cancelled.
pub struct Reconciler<S> {
    store: S,
    lister: SessionLister,
    /// Announces the ends it makes (`None`: no sinks).
    announcer: Option<Arc<EndAnnouncer<S>>>,
    config: ReconcilerConfig,
    metrics: Arc<ReconcilerMetrics>,
    /// Recorded sessions missing from the last scans' listings, and how many in a row.
    absent: HashMap<Uuid, u32>,
    /// Sessions ended here that Gameye still listed, and in how many scans in a row.
    ended_listed: HashMap<Uuid, u32>,
    /// When the lease was last taken or renewed (`None` outside [`Reconciler::run`]: tests scan
    /// without one).
    lease_renewed: Option<Instant>,
    /// Cancels a scan at its next step (set by [`Reconciler::run`]).
    stop: CancellationToken,
    /// The last listing failed: the next one is decoded at the normal CPU priority, whatever the
    /// pace says, in case an idle-priority decoder was starved into a timeout by a busy machine.
    last_listing_failed: bool,
}

/// What one scan did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanReport {
    pub ended: Vec<Uuid>,
    pub adopted: Vec<Uuid>,
    pub refreshed: Vec<Uuid>,
    /// Sessions whose Gameye player count differed from their record, queued for a player sync.
    pub player_syncs_queued: Vec<Uuid>,
}

impl<S: SeatStore + LeaseStore + PlayerSyncStore + EndAnnouncementStore> Reconciler<S> {
    pub fn new(
        store: S,
        lister: SessionLister,
        announcer: Option<Arc<EndAnnouncer<S>>>,
        config: ReconcilerConfig,
        metrics: Arc<ReconcilerMetrics>,
    ) -> Self {
        Self {
            store,
            lister,
            announcer,
            config,
            metrics,
            absent: HashMap::new(),
            ended_listed: HashMap::new(),
            lease_renewed: None,
            stop: CancellationToken::new(),
            last_listing_failed: false,
        }
    }

    /// Every `interval`: take or renew the lease (three intervals long) and scan while holding it;
    /// gives the lease up when `stop` fires.
    pub async fn run(mut self, stop: CancellationToken) {
        self.stop = stop.clone();
        let ttl = self.config.interval.saturating_mul(3);
        let mut held = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(self.config.interval) => {}
            }
            match self.store.try_acquire(LEASE_NAME, &self.config.owner, ttl).await {
                Ok(true) => {
                    if !held {
                        tracing::info!(owner = %self.config.owner, "reconciler lease taken: this instance reconciles sessions");
                        self.absent.clear();
                    }
                    held = true;
                    self.metrics.leader.set(1);
                    self.lease_renewed = Some(Instant::now());
                    let _ = self.scan().await;
                }
                Ok(false) => {
                    if held {
                        tracing::info!("reconciler lease held by another instance");
                    }
                    held = false;
                    self.metrics.leader.set(0);
                    self.absent.clear();
                }
                Err(error) => {
                    // Whether we still hold it is unknown: stop counting, try again next time.
                    tracing::warn!(%error, "cannot take the reconciler lease; will try again");
                    held = false;
                    self.metrics.leader.set(0);
                    self.absent.clear();
                }
            }
        }
        if held {
            if let Err(error) = self.store.release(LEASE_NAME, &self.config.owner).await {
                tracing::warn!(%error, "cannot release the reconciler lease; it expires by itself");
            }
            self.metrics.leader.set(0);
        }
    }

    /// One scan, paced by `config.pace`. `None`: incomplete. A failed listing changes nothing. A
    /// store failure, a lost lease or a stop ends the scan where it is: the changes made so far
    /// stand (each rests on a complete listing and, for an end, on Gameye confirming the session
    /// gone), the rest waits for the next scan, and nothing is adopted.
    pub async fn scan(&mut self) -> Option<ScanReport> {
        let started = Instant::now();
        self.metrics.scanning.set(1);
        tracing::debug!("reconciler scan starts: listing Gameye's sessions");
        let report = self.scan_steps().await;
        self.metrics.scanning.set(0);
        self.metrics.scan_seconds.observe(started.elapsed().as_secs_f64());
        tracing::debug!(
            took_ms = started.elapsed().as_millis() as u64,
            complete = report.is_some(),
            "reconciler scan"
        );
        report
    }

    async fn scan_steps(&mut self) -> Option<ScanReport> {
        let stop = self.stop.clone();
        let mut listing_pace = self.config.pace;
        if self.last_listing_failed && listing_pace.idle_priority {
            listing_pace.idle_priority = false;
            tracing::info!(
                "reconciler: the last listing failed; this one is decoded at the normal CPU priority"
            );
        }
        // To the millisecond, as records are stamped. On the clock of this instance, while a record
        // carries its writer's: with skew, an absence counts one scan late or, as before, one scan
        // early (harmless: an end takes two absences and Gameye confirming the session gone).
        let listing_began = crate::store::whole_millis(OffsetDateTime::now_utc());
        // A long listing (paced, a large account's takes up to `request_timeout / max_busy`) must
        // not outlive the lease, or another instance takes it meanwhile, this scan stops at its
        // first step, and with two instances taking turns no scan ever completes: the lease is
        // renewed every interval while the listing is read.
        let lister = self.lister.clone();
        let list = lister.list(listing_pace);
        tokio::pin!(list);
        let interval = self.config.interval.max(Duration::from_millis(1));
        let mut renewals = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let listing = loop {
            tokio::select! {
                listing = &mut list => break listing,
                _ = stop.cancelled() => return None,
                _ = renewals.tick() => {
                    if !self.keep_lease().await {
                        self.metrics.scan("lease_lost");
                        return None;
                    }
                }
            }
        };
        self.last_listing_failed = listing.is_err();
        let mut listed = match listing {
            Ok(listed) => listed,
            Err(error) => {
                tracing::warn!(%error, "reconciler: Gameye listing failed; nothing changes this scan");
                self.metrics.scan("incomplete");
                return None;
            }
        };
        self.metrics.listed.set(listed.len() as i64);
        tracing::debug!(
            sessions = listed.len(),
            "reconciler: Gameye's listing read; comparing the seat records"
        );
        // Started after the listing, which paces itself: its time is not this pacer's work.
        let mut pacer = Pacer::new(self.config.pace);
        let mut report = ScanReport::default();
        let mut recorded = HashSet::new();
        let mut to_mark_running = Vec::new();
        let mut cursor = 0;
        loop {
            let now = OffsetDateTime::now_utc();
            let page = match self.store.recorded_sessions_page(cursor, now).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(%error, "reconciler: cannot read the seat records; the scan stops here");
                    self.metrics.scan("store_error");
                    return None;
                }
            };
            for record in page.sessions {
                // A page may repeat a session of an earlier one.
                if recorded.insert(record.session_id) {
                    if !self.step(&mut pacer).await {
                        return None;
                    }
                    self.compare(record, &mut listed, &mut to_mark_running, &mut report, listing_began).await;
                }
            }
            if !self.mark_running(&mut to_mark_running, &mut pacer, &mut report, now).await {
                return None;
            }
            if !self.step(&mut pacer).await {
                return None;
            }
            match page.next {
                Some(next) => cursor = next,
                None => break,
            }
        }
        self.metrics.scan("complete");
        self.metrics.recorded.set(recorded.len() as i64);
        self.absent.retain(|id, _| recorded.contains(id));

        // What is left of the listing has no live record.
        let mut ended_listed = HashMap::new();
        for (id, session) in listed {
            if !self.step(&mut pacer).await {
                break;
            }
            // A session ended here (a tombstone, out of the index) that Gameye still lists is
            // stopping, or its stop did not take: neither asked about nor adopted, every scan.
            match self.store.get_session(id, OffsetDateTime::now_utc()).await {
                Ok(None) => {}
                Ok(Some(record)) => {
                    if record.status == SessionStatus::Ended {
                        let scans = self.ended_listed.get(&id).copied().unwrap_or(0) + 1;
                        if scans == ENDED_LISTED_SCANS_TO_WARN {
                            tracing::warn!(session_id = %id, scans, "a session ended here is still listed by Gameye; is it still running? (DELETE /session/{{id}} at Gameye stops it)");
                        }
                        ended_listed.insert(id, scans);
                    }
                    continue;
                }
                Err(error) => {
                    tracing::warn!(session_id = %id, %error, "cannot read the orphan's record; next scan tries again");
                    continue;
                }
            }
            let players = match self.lister.players(id).await {
                Ok(players) => players,
                Err(error) => {
                    tracing::warn!(session_id = %id, %error, "cannot read the orphan's players; next scan tries again");
                    continue;
                }
            };
            let adoption = self.adoption(&session, players, OffsetDateTime::now_utc());
            match self.store.create_session(&adoption, self.config.keep_for).await {
                Ok(Ok(_)) => {
                    self.metrics.adopted.inc();
                    report.adopted.push(id);
                    tracing::info!(session_id = %id, match_id = %session.match_id, "orphan session adopted");
                }
                // Recorded meanwhile (a placement), or ended here while Gameye still stops it.
                Ok(Err(SeatError::AlreadyExists | SeatError::Ended)) => {}
                Ok(Err(refused)) => tracing::warn!(session_id = %id, %refused, "orphan not adopted"),
                Err(error) => {
                    tracing::warn!(session_id = %id, %error, "cannot adopt the orphan; next scan tries again")
                }
            }
        }
        self.ended_listed = ended_listed;
        Some(report)
    }

    /// Between two steps of a scan: rests when the pace says so, and says whether to go on (the
    /// lease still held, no stop).
    async fn step(&mut self, pacer: &mut Pacer) -> bool {
        let stop = self.stop.clone();
        tokio::select! {
            () = pacer.breathe() => {}
            _ = stop.cancelled() => {}
        }
        if stop.is_cancelled() {
            return false;
        }
        if !self.keep_lease().await {
            self.metrics.scan("lease_lost");
            return false;
        }
        true
    }

    /// Compares one record with the listing, taking its session out of the listing (what is left
    /// at the end has no record).
    async fn compare(
        &mut self,
        record: RecordedSession,
        listed: &mut Listing,
        to_mark_running: &mut Vec<Uuid>,
        report: &mut ScanReport,
        listing_began: OffsetDateTime,
    ) {
        let id = record.session_id;
        if let Some(session) = listed.remove(&id) {
            self.absent.remove(&id);
            if session.player_count.is_some_and(|count| count as usize != record.joined) {
                match self.store.queue_player_sync_if_absent(id).await {
                    Ok(()) => {
                        self.metrics.player_syncs_queued.inc();
                        report.player_syncs_queued.push(id);
                    }
                    Err(error) => tracing::warn!(session_id = %id, %error, "cannot queue a player sync"),
                }
            }
            if record.status == SessionStatus::Created && session.running {
                to_mark_running.push(id);
            }
            return;
        }
        if record.recorded_at >= listing_began {
            // Placed while Gameye was listing: its absence says nothing yet.
            return;
        }
        let count = self.absent.entry(id).or_insert(0);
        *count += 1;
        if *count < ABSENT_SCANS_TO_END {
            tracing::debug!(session_id = %id, "session missing from Gameye's list once");
            return;
        }
        match self.lister.still_runs(id).await {
            Ok(false) => {}
            Ok(true) => {
                // Not in the filtered listing, yet running: most likely started before sessions
                // carried the deployment label. Kept; asked again next time.
                tracing::info!(session_id = %id, "session missing from the listing still runs at Gameye; kept");
                self.absent.remove(&id);
                return;
            }
            Err(error) => {
                tracing::warn!(session_id = %id, %error, "cannot confirm the session is gone; next scan tries again");
                return;
            }
        }
        let ending = match &self.announcer {
            Some(announcer) => announcer.ending(EndReason::Gone),
            None => Ending { reason: EndReason::Gone, owe: None },
        };
        // Now, not the page's time: Gameye was asked and the scan may have rested since, and the
        // end's time is announced.
        match self.store.end_session(id, ending, OffsetDateTime::now_utc()).await {
            Ok(Ok(_)) => {
                self.absent.remove(&id);
                self.metrics.ended.inc();
                report.ended.push(id);
                tracing::info!(session_id = %id, "session gone at Gameye: ended, seats released");
                if let Some(announcer) = &self.announcer {
                    announcer.announce_soon(id);
                }
            }
            Ok(Err(SeatError::Ended | SeatError::NotFound)) => {
                // Ended meanwhile (DELETE /v1/sessions/{id}): whoever ended it said so.
                self.absent.remove(&id);
            }
            Ok(Err(refused)) => tracing::warn!(session_id = %id, %refused, "session not ended"),
            Err(error) => {
                tracing::warn!(session_id = %id, %error, "cannot end the session; next scan tries again")
            }
        }
    }

    /// In chunks, paced: right after placements Gameye lists thousands of sessions running at once.
    /// `false`: the scan stops (see [`Reconciler::step`]).
    async fn mark_running(
        &mut self,
        ids: &mut Vec<Uuid>,
        pacer: &mut Pacer,
        report: &mut ScanReport,
        now: OffsetDateTime,
    ) -> bool {
        if !ids.is_empty() {
            tracing::debug!(sessions = ids.len(), "reconciler: marking sessions running");
        }
        for (n, chunk) in ids.chunks(MARK_RUNNING_CHUNK).enumerate() {
            if n > 0 && !self.step(pacer).await {
                return false;
            }
            match self.store.mark_running_many(chunk, now).await {
                Ok(marked) => {
                    self.metrics.refreshed.inc_by(marked.len() as u64);
                    report.refreshed.extend(marked);
                }
                Err(error) => {
                    tracing::warn!(%error, sessions = chunk.len(), "cannot mark sessions running; next scan tries again")
                }
            }
        }
        ids.clear();
        true
    }

    /// Renews the lease during a long scan (it lasts three intervals). `false`: lost, or unknown.
    async fn keep_lease(&mut self) -> bool {
        let Some(renewed) = self.lease_renewed else { return true };
        if renewed.elapsed() < self.config.interval {
            return true;
        }
        let ttl = self.config.interval.saturating_mul(3);
        match self.store.try_acquire(LEASE_NAME, &self.config.owner, ttl).await {
            Ok(true) => {
                self.lease_renewed = Some(Instant::now());
                true
            }
            Ok(false) => {
                tracing::info!("reconciler lease lost during a scan; the scan stops here");
                self.absent.clear();
                false
            }
            Err(error) => {
                tracing::warn!(%error, "cannot renew the reconciler lease; the scan stops here");
                self.absent.clear();
                false
            }
        }
    }

    fn adoption(&self, session: &ListedSession, joined: Vec<String>, now: OffsetDateTime) -> NewSession {
        let metadata = SessionMetadata {
            match_id: session.match_id.clone(),
            host: session.host.clone(),
            ports: session.ports.clone(),
            placed_at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(session.created_ms) * 1_000_000)
                .unwrap_or(now),
        };
        NewSession {
            session_id: session.session_id,
            // As placed when the session says (else the image's); Gameye's players are in already,
            // so never fewer seats than them.
            capacity: session
                .capacity
                .unwrap_or_else(|| self.config.seats.capacity_for(&session.image, None))
                .max(joined.len() as u32),
            status: if session.running { SessionStatus::Running } else { SessionStatus::Created },
            info: SessionInfo {
                image: session.image.clone(),
                version: session.version.clone(),
                location: session.location.clone(),
                labels: session.labels.clone(),
                metadata: bridge::seats::JsonText::of(&metadata).unwrap_or_default(),
            },
            players: Vec::new(),
            joined,
            reservation_ttl: self.config.seats.reservation_ttl,
            now,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::store::MemoryStore;

    fn listed(id: Uuid, running: bool) -> ListedSession {
        ListedSession {
            session_id: id,
            match_id: format!("m-{id}"),
            image: "demo-game".to_owned(),
            version: None,
            location: "eu-west-1".to_owned(),
            host: "192.0.2.1".to_owned(),
            ports: Vec::new(),
            labels: BTreeMap::new(),
            running,
            created_ms: 1_700_000_000_000,
            player_count: None,
            capacity: None,
        }
    }

    type Gameye = Arc<Mutex<Result<Vec<ListedSession>, String>>>;

    fn reconciler(store: MemoryStore, gameye: Gameye) -> Reconciler<MemoryStore> {
        let lister = SessionLister::new(move |_| {
            let answer = gameye.lock().unwrap().clone();
            async move { answer }
        });
        let config = ReconcilerConfig {
            interval: Duration::from_millis(10),
            owner: "test".to_owned(),
            seats: SeatSettings::default(),
            keep_for: Duration::from_secs(600),
            pace: Pace::UNPACED,
        };
        Reconciler::new(store, lister, None, config, Arc::new(ReconcilerMetrics::default()))
    }

    /// A scan that begins in a later millisecond than anything before it, as real scans (an
    /// interval apart) do: a record stamped in the millisecond a listing began counts as written
    /// during it.
    async fn scan(r: &mut Reconciler<MemoryStore>) -> Option<ScanReport> {
        tokio::time::sleep(Duration::from_millis(2)).await;
        r.scan().await
    }

    #[tokio::test]
    async fn adopts_refreshes_and_ends_after_two_complete_scans_only() {
        let store = MemoryStore::new();
        let id = Uuid::new_v4();
        let gameye: Gameye = Arc::new(Mutex::new(Ok(vec![listed(id, false)])));
        let mut r = reconciler(store.clone(), gameye.clone());

        let report = scan(&mut r).await.unwrap();
        assert_eq!(report.adopted, vec![id]);
        let now = OffsetDateTime::now_utc();
        let seats = store.get_session(id, now).await.unwrap().unwrap();
        assert_eq!((seats.status, seats.capacity), (SessionStatus::Created, 16));

        *gameye.lock().unwrap() = Ok(vec![listed(id, true)]);
        assert_eq!(scan(&mut r).await.unwrap().refreshed, vec![id]);

        // Gone once; then a failed listing (no count); then gone again: ended on the second miss.
        *gameye.lock().unwrap() = Ok(Vec::new());
        assert_eq!(scan(&mut r).await.unwrap(), ScanReport::default());
        *gameye.lock().unwrap() = Err("503".to_owned());
        assert!(scan(&mut r).await.is_none());
        assert!(store.list_sessions(None, OffsetDateTime::now_utc()).await.unwrap().len() == 1);
        *gameye.lock().unwrap() = Ok(Vec::new());
        assert_eq!(scan(&mut r).await.unwrap().ended, vec![id]);
        let seats = store.get_session(id, OffsetDateTime::now_utc()).await.unwrap().unwrap();
        assert_eq!(seats.status, SessionStatus::Ended);
    }

    /// Two instances, and a listing longer than the lease (three intervals): the one listing
    /// renews its lease meanwhile, so it completes its scan. Before, the lease lapsed mid-listing,
    /// the other instance took it, and each then stopped the other's scan at its first step.
    #[tokio::test]
    async fn a_listing_longer_than_the_lease_keeps_it_and_completes() {
        let store = MemoryStore::new();
        let id = Uuid::new_v4();
        let stop = CancellationToken::new();
        let instances: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|owner| {
                let mut r = reconciler(store.clone(), Arc::new(Mutex::new(Ok(Vec::new()))));
                r.config.owner = owner.to_owned();
                r.config.interval = Duration::from_millis(50);
                r.lister = SessionLister::new(move |_| async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok(vec![listed(id, true)])
                });
                tokio::spawn(r.run(stop.clone()))
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.get_session(id, OffsetDateTime::now_utc()).await.unwrap().is_none() {
            assert!(Instant::now() < deadline, "no scan completed: the orphan was never adopted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        for instance in instances {
            instance.await.unwrap();
        }
    }

    #[tokio::test]
    async fn after_a_failed_listing_the_next_is_decoded_at_the_normal_priority_then_idle_again() {
        let gameye: Gameye = Arc::new(Mutex::new(Ok(Vec::new())));
        let idle_priorities = Arc::new(Mutex::new(Vec::new()));
        let mut r = reconciler(MemoryStore::new(), gameye.clone());
        r.config.pace = Pace { idle_priority: true, ..Pace::UNPACED };
        r.lister = SessionLister::new({
            let (gameye, idle_priorities) = (gameye.clone(), idle_priorities.clone());
            move |pace: Pace| {
                idle_priorities.lock().unwrap().push(pace.idle_priority);
                let answer = gameye.lock().unwrap().clone();
                async move { answer }
            }
        });
        for answer in [Ok(Vec::new()), Err("timed out".to_owned()), Ok(Vec::new()), Ok(Vec::new())] {
            let listed = answer.is_ok();
            *gameye.lock().unwrap() = answer;
            assert_eq!(scan(&mut r).await.is_some(), listed);
        }
        assert_eq!(*idle_priorities.lock().unwrap(), vec![true, true, false, true]);
    }

    #[tokio::test]
    async fn a_player_count_that_differs_from_the_record_queues_a_player_sync() {
        let store = MemoryStore::new();
        let id = Uuid::new_v4();
        let gameye: Gameye = Arc::new(Mutex::new(Ok(vec![listed(id, true)])));
        let mut r = reconciler(store.clone(), gameye.clone());
        scan(&mut r).await.unwrap();
        let now = OffsetDateTime::now_utc();
        store.join_players(id, &["a".to_owned()], now).await.unwrap().unwrap();

        // Gameye has not heard of the join: queued. Agreeing, or no count: nothing queued.
        *gameye.lock().unwrap() = Ok(vec![ListedSession { player_count: Some(0), ..listed(id, true) }]);
        assert_eq!(scan(&mut r).await.unwrap().player_syncs_queued, vec![id]);
        assert_eq!(store.queued_player_syncs().await.unwrap(), 1);
        for count in [Some(1), None] {
            *gameye.lock().unwrap() = Ok(vec![ListedSession { player_count: count, ..listed(id, true) }]);
            assert!(scan(&mut r).await.unwrap().player_syncs_queued.is_empty());
        }
    }

    #[tokio::test]
    async fn an_orphan_is_adopted_with_the_players_gameye_counts_even_beyond_capacity() {
        let store = MemoryStore::new();
        let id = Uuid::new_v4();
        let gameye: Gameye = Arc::new(Mutex::new(Ok(vec![listed(id, true)])));
        let crowd: Vec<String> = (0..20).map(|n| format!("p{n}")).collect();
        let mut r = reconciler(store.clone(), gameye.clone());
        let players = crowd.clone();
        r.lister = r.lister.clone().with_players(move |_| {
            let players = players.clone();
            async move { Ok(Some(players)) }
        });
        assert_eq!(scan(&mut r).await.unwrap().adopted, vec![id]);
        let seats = store.get_session(id, OffsetDateTime::now_utc()).await.unwrap().unwrap();
        assert_eq!(seats.joined, crowd.iter().cloned().collect());
        assert_eq!(seats.capacity, 20, "the default 16 grows to hold everyone Gameye counts");

        // Gameye cannot say who joined: no adoption this scan.
        let other = Uuid::new_v4();
        *gameye.lock().unwrap() = Ok(vec![listed(id, true), listed(other, true)]);
        r.lister = r.lister.clone().with_players(|_| async { Err("503".to_owned()) });
        assert!(scan(&mut r).await.unwrap().adopted.is_empty());
        assert!(store.get_session(other, OffsetDateTime::now_utc()).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_session_ended_here_that_gameye_still_lists_is_left_alone_without_asking_gameye() {
        let store = MemoryStore::new();
        let id = Uuid::new_v4();
        let gameye: Gameye = Arc::new(Mutex::new(Ok(vec![listed(id, true)])));
        let mut r = reconciler(store.clone(), gameye);
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = asked.clone();
        r.lister = r.lister.clone().with_players(move |_| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok(Some(Vec::new())) }
        });
        assert_eq!(scan(&mut r).await.unwrap().adopted, vec![id]);
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1, "the orphan's players");
        let now = OffsetDateTime::now_utc();
        let stopped = Ending { reason: EndReason::Stopped, owe: None };
        store.end_session(id, stopped, now).await.unwrap().unwrap();

        for scans in 1..=3 {
            let report = scan(&mut r).await.unwrap();
            assert_eq!(report, ScanReport::default(), "scan {scans}");
            assert_eq!(r.ended_listed.get(&id), Some(&scans));
        }
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1, "Gameye not asked about it again");
        let record = store.get_session(id, OffsetDateTime::now_utc()).await.unwrap().unwrap();
        assert_eq!(record.status, SessionStatus::Ended, "not revived");
    }

    #[tokio::test]
    async fn a_scan_that_outlives_its_lease_renewal_stops_when_another_instance_holds_it() {
        let store = MemoryStore::new();
        let id = Uuid::new_v4();
        let gameye: Gameye = Arc::new(Mutex::new(Ok(vec![listed(id, true)])));
        let mut r = reconciler(store.clone(), gameye);
        let long_ago = Instant::now() - Duration::from_secs(1);

        store.try_acquire(LEASE_NAME, "other", Duration::from_secs(60)).await.unwrap();
        r.lease_renewed = Some(long_ago);
        assert!(scan(&mut r).await.is_none(), "the lease went to another instance meanwhile");
        assert!(store.get_session(id, OffsetDateTime::now_utc()).await.unwrap().is_none(), "nothing adopted");

        // Its own lease, renewed on the way: the scan goes on to the end.
        store.release(LEASE_NAME, "other").await.unwrap();
        store.try_acquire(LEASE_NAME, "test", Duration::from_secs(60)).await.unwrap();
        r.lease_renewed = Some(long_ago);
        assert_eq!(scan(&mut r).await.unwrap().adopted, vec![id]);
        assert!(r.lease_renewed.unwrap() > long_ago, "renewed");
        assert!(!store.try_acquire(LEASE_NAME, "other", Duration::from_secs(60)).await.unwrap());
    }

    #[tokio::test]
    async fn a_slow_listing_is_not_rested_for_again() {
        let store = MemoryStore::new();
        let id = Uuid::new_v4();
        let mut r = reconciler(store.clone(), Arc::new(Mutex::new(Ok(vec![listed(id, true)]))));
        // Gameye answers slowly; the listing paces its own decoding.
        r.lister = SessionLister::new(move |_| async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(vec![listed(id, true)])
        });
        r.config.pace = Pace { busy: 0.1, slice: Duration::from_millis(2), idle_priority: true };
        let started = Instant::now();
        assert_eq!(scan(&mut r).await.unwrap().adopted, vec![id]);
        // Counting the listing's 300 ms as work would rest for another second.
        assert!(started.elapsed() < Duration::from_millis(900), "took {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_session_recorded_while_gameye_lists_is_not_counted_absent_from_that_listing() {
        let store = MemoryStore::new();
        let id = Uuid::new_v4();
        let mut r = reconciler(store.clone(), Arc::new(Mutex::new(Ok(Vec::new()))));
        let new = r.adoption(&listed(id, true), Vec::new(), OffsetDateTime::now_utc());
        // Each listing shows nothing; during the first, the session is placed and recorded.
        r.lister = SessionLister::new(move |_| {
            let (store, mut new) = (store.clone(), new.clone());
            async move {
                new.now = OffsetDateTime::now_utc();
                let _ = store.create_session(&new, Duration::from_secs(600)).await.unwrap();
                Ok(Vec::new())
            }
        });
        let first = scan(&mut r).await.unwrap();
        assert!(first.ended.is_empty() && r.absent.is_empty(), "not absent from the listing it raced");
        assert!(scan(&mut r).await.unwrap().ended.is_empty(), "absent once");
        assert_eq!(scan(&mut r).await.unwrap().ended, vec![id], "absent twice: ended");
    }

    #[tokio::test]
    async fn a_session_back_in_the_list_starts_counting_again() {
        let store = MemoryStore::new();
        let id = Uuid::new_v4();
        let gameye: Gameye = Arc::new(Mutex::new(Ok(vec![listed(id, true)])));
        let mut r = reconciler(store.clone(), gameye.clone());
        scan(&mut r).await.unwrap();
        for listing in [vec![], vec![listed(id, true)], vec![]] {
            *gameye.lock().unwrap() = Ok(listing);
            assert!(scan(&mut r).await.unwrap().ended.is_empty());
        }
    }
}

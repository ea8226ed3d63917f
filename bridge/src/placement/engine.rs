use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;

use super::EngineSettings;
use super::attempt::before;
use crate::ports::{
    Claim, ClaimOutcome, Clock, Completion, DeliveryError, Lease, Outcome, OutcomeSink, Owed,
    PlacementRecord, PlacementState, SessionApi, StateStore, StoreError,
};
use crate::seats::SeatError;
use crate::{FailureCode, MatchIdConflict, ValidatedMatch, session_id};

/// The engine did not take the match on. Nothing was promised to anyone and nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    /// The bridge's own state store failed: the door answers 503 / NAKs, and the source sends
    /// the match again.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The match id was first requested with another match: refused for good (HTTP 409); the
    /// first match's record, outcome and announcements are untouched.
    #[error(transparent)]
    MatchIdConflict(#[from] MatchIdConflict),
}

/// Where a match stands for the door that asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Done(Outcome),
    /// Another owner (or a background task) is still placing it.
    Pending {
        lease_until: OffsetDateTime,
    },
}

/// What [`Engine::place_answer`] answers: the progress and, when this very call placed the match,
/// the outcome's JSON as the record holds it, so that a door answering with that JSON need not
/// render it again (a few per cent of a placement's CPU).
#[derive(Debug)]
pub struct Answer {
    pub progress: Progress,
    pub outcome_json: Option<String>,
}

/// The answer to [`Engine::accept`].
#[derive(Debug)]
pub enum Accepted {
    /// The caller owns the placement: run [`Engine::finish`] with this job (in the background).
    Owned(Job),
    /// Nothing to do: it is done, or someone else is on it.
    Known(Progress),
}

/// An owned placement, ready to run.
#[derive(Debug)]
pub struct Job {
    pub(super) record: Box<PlacementRecord>,
    pub(super) lease: Lease,
    pub(super) taken_over: bool,
}

impl Job {
    pub fn match_id(&self) -> &str {
        &self.record.match_id
    }
}

/// What a finished placement looked like, for metrics and logs.
#[derive(Debug, Clone)]
pub struct PlacementReport<'a> {
    pub match_id: &'a str,
    pub source: &'a str,
    /// `placed`, `failed`, `duplicate` (answered from the record without touching Gameye), or
    /// `conflict` (the match id was first requested with another match: refused, code
    /// `MATCH_ID_CONFLICT`).
    pub outcome: &'static str,
    pub code: Option<FailureCode>,
    pub location: Option<&'a str>,
    pub elapsed: Duration,
    pub taken_over: bool,
}

/// Told about every placement the engine finishes (metrics).
pub trait PlacementObserver: Send + Sync + 'static {
    fn finished(&self, report: &PlacementReport<'_>);

    /// A placed session's seat record could not be written (the placement stands).
    fn seat_write_failed(&self) {}
}

/// What one [`Engine::announce_owed`] round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwedAnnouncements {
    /// Entries taken (a full round: more may be due).
    pub claimed: usize,
    pub delivered: usize,
    /// Tried and due again later.
    pub failed: usize,
    /// Dropped: refused for good by a sink, older than its session, or its record expired.
    pub given_up: usize,
}

/// What became of one owed announcement.
enum OwedResult {
    Delivered,
    Failed,
    GivenUp,
    /// Nothing to do now (still pending, replaced by a newer outcome, no sink here).
    NotYet,
}

/// The longest a record is kept for a long-lived session (see [`Engine::keep_for`]).
const LONGEST_KEEP: Duration = Duration::from_secs(30 * 24 * 3600);

/// Placements one recovery round finishes at once.
const RECOVERED_AT_ONCE: usize = 16;

/// Bounds of the pause before an owed announcement that failed is tried again.
const OWED_RETRY_MIN: Duration = Duration::from_secs(1);
const OWED_RETRY_MAX: Duration = Duration::from_secs(300);

/// The placement engine. Cheap to share behind an `Arc`; every method may run concurrently, on
/// any number of instances sharing the store.
pub struct Engine<A, S, C> {
    pub(super) api: A,
    pub(super) store: S,
    pub(super) clock: C,
    pub(super) settings: EngineSettings,
    pub(super) observer: Option<Arc<dyn PlacementObserver>>,
    sinks: Vec<Arc<dyn OutcomeSink>>,
    /// Doors that place a retryable failure again themselves (see
    /// [`Engine::with_door_retrying_failures`]).
    doors_retrying_failures: Vec<String>,
    /// Called after a session is queued for a Gameye player sync, so this instance's worker starts
    /// at once instead of at its next poll.
    pub(super) player_sync_wakeup: Option<Arc<dyn Fn() + Send + Sync>>,
    pub(super) backfill_cache: super::backfill_cache::BackfillCache,
    /// Claims made so far: each claim's lease names its own attempt (see [`Engine::claim_owner`]).
    claims: AtomicU64,
}

impl<A, S, C> Engine<A, S, C>
where
    A: SessionApi,
    S: StateStore,
    C: Clock,
{
    pub fn new(api: A, store: S, clock: C, settings: EngineSettings) -> Self {
        Self {
            api,
            store,
            clock,
            settings,
            observer: None,
            sinks: Vec::new(),
            doors_retrying_failures: Vec::new(),
            player_sync_wakeup: None,
            backfill_cache: Default::default(),
            claims: AtomicU64::new(0),
        }
    }

    /// The owner a new claim's lease names: this instance and the claim's number, so that two
    /// attempts of one instance never share a lease. Should Redis lose a record while an attempt
    /// is at work and this instance claim the id again, the new record's lease starts at fence 1
    /// too; only the owner then tells the attempts apart.
    fn claim_owner(&self) -> String {
        let number = self.claims.fetch_add(1, Ordering::Relaxed) + 1;
        let mut owner = String::with_capacity(self.settings.owner.len() + 12);
        owner.push_str(&self.settings.owner);
        owner.push('#');
        owner.push_str(&number.to_string());
        owner
    }

    /// Adds a place outcomes are announced to (see [`Engine::announce`]).
    pub fn with_sink(mut self, sink: Arc<dyn OutcomeSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Marks `source` as a door that places a retryable failure again itself and announces one
    /// only when it gives up (NATS: the redelivery of a JetStream message, the failure published
    /// on the last delivery). Its retryable failures are then neither owed (the outbox would
    /// announce one the redelivery is about to turn into a placement) nor announced by recovery;
    /// the door's own `announce` calls are unaffected.
    pub fn with_door_retrying_failures(mut self, source: &str) -> Self {
        self.doors_retrying_failures.push(source.to_owned());
        self
    }

    /// Whether `outcome` is a retryable failure its door will place again (see
    /// [`Engine::with_door_retrying_failures`]): not for the outbox nor recovery to announce.
    fn left_to_door(&self, source: &str, outcome: &Outcome) -> bool {
        matches!(outcome, Outcome::Failed(failure) if failure.error.retryable)
            && self.doors_retrying_failures.iter().any(|door| door == source)
    }

    /// Announces an outcome to every sink that wants placements from `source` (concurrently),
    /// retrying transient failures with backoff for up to one placement deadline per sink. Doors
    /// call this after they have the outcome (a duplicate's stored outcome too, so a lost
    /// announcement is made good by the redelivery) and acknowledge their source only when it
    /// succeeded. Once every sink has it, the outcome is no longer owed (see
    /// [`Engine::announce_owed`]). A failure is permanent only if every failing sink failed for good.
    pub async fn announce(&self, source: &str, outcome: &Outcome) -> Result<(), DeliveryError> {
        let deliveries = self.sinks.iter().filter(|sink| sink.wants(source)).map(|sink| async move {
            let delivered = self.deliver_with_retries(sink.as_ref(), source, outcome).await;
            if let Err(error) = &delivered {
                tracing::warn!(sink = sink.name(), match_id = outcome.match_id(), %error, "announcement failed");
            }
            delivered
        });
        let delivered = futures_util::future::join_all(deliveries).await;
        if delivered.is_empty() {
            return Ok(());
        }
        let mut failures = delivered.into_iter().filter_map(Result::err);
        if let Some(mut first) = failures.next() {
            first.permanent &= failures.all(|error| error.permanent);
            return Err(first);
        }
        if let Err(error) = self.store.announced(&Owed::of(outcome)).await {
            // The entry stays: the outbox announces the outcome once more, later.
            tracing::warn!(match_id = outcome.match_id(), %error, "announced, but not marked so");
        }
        Ok(())
    }

    /// Announces outcomes still owed (the outbox; DESIGN §3.4: a placement whose publish keeps
    /// failing is retried from the record, never re-created): those whose door gave up on its
    /// sinks, stopped before announcing, or is a background door that has no redelivery to lean
    /// on. Claims up to `limit` due entries and announces each from its record; a failed one is due
    /// again after a pause that grows with the match's age (a quarter of it, 1 s to 5 min). Given
    /// up when a sink refuses it for good, and once the match is older than its session's TTL (an
    /// Assignment of a server that is gone helps nobody). Every instance may run it: a claim holds
    /// an entry for one announce window, and every delivery ends within it.
    pub async fn announce_owed(&self, limit: usize) -> Result<OwedAnnouncements, PlaceError> {
        let now = self.clock.now();
        let due = self.store.claim_announcements(now, limit, self.settings.announce_window()).await?;
        let attempts = due.iter().map(|owed| self.announce_owed_one(owed));
        let mut round = OwedAnnouncements { claimed: due.len(), ..Default::default() };
        for (owed, attempt) in due.iter().zip(futures_util::future::join_all(attempts).await) {
            match attempt {
                Ok(OwedResult::Delivered) => round.delivered += 1,
                Ok(OwedResult::Failed) => round.failed += 1,
                Ok(OwedResult::GivenUp) => round.given_up += 1,
                Ok(OwedResult::NotYet) => {}
                // Held for one window, then tried again.
                Err(error) => {
                    tracing::warn!(match_id = %owed.match_id, %error, "cannot retry this announcement now");
                }
            }
        }
        Ok(round)
    }

    async fn announce_owed_one(&self, owed: &Owed) -> Result<OwedResult, StoreError> {
        let match_id = owed.match_id.as_str();
        let now = self.clock.now();
        let record = match self.store.get(match_id).await {
            Ok(Some(record)) => record,
            // Expired: nothing left to announce.
            Ok(None) => return self.store.announced(owed).await.map(|()| OwedResult::GivenUp),
            Err(error) if !error.transient => {
                // Perhaps written by a newer version during an upgrade: left to one that reads it.
                tracing::warn!(%match_id, %error, "cannot read the record of an owed announcement; leaving it");
                let due = now + OWED_RETRY_MAX;
                return self.store.defer_announcement(owed, due).await.map(|()| OwedResult::NotYet);
            }
            Err(error) => return Err(error),
        };
        let outcome = match record.state {
            PlacementState::Pending { lease_until, .. } => {
                // Its owner (or recovery, once the lease runs out) announces it when done.
                let due = lease_until.max(now) + self.settings.announce_window();
                return self.store.defer_announcement(owed, due).await.map(|()| OwedResult::NotYet);
            }
            PlacementState::Placed { assignment } => Outcome::Placed(assignment),
            PlacementState::Failed { failure } => Outcome::Failed(failure),
        };
        if Owed::of(&outcome) != *owed {
            // A newer outcome replaced this one (a retryable failure taken over); its own entry,
            // written before it, stands for it.
            return self.store.announced(owed).await.map(|()| OwedResult::NotYet);
        }
        if !self.announces(&record.source) {
            // No sink on this instance wants it (instances configured differently): left for
            // one that has them.
            let due = now + OWED_RETRY_MAX;
            return self.store.defer_announcement(owed, due).await.map(|()| OwedResult::NotYet);
        }
        let age: Duration = (now - record.accepted_at).try_into().unwrap_or_default();
        let session_ttl = self.session_ttl(&record.request);
        if age > session_ttl {
            tracing::error!(%match_id, source = %record.source, ?age, "giving up an announcement older than its session's TTL");
            return self.store.announced(owed).await.map(|()| OwedResult::GivenUp);
        }
        match self.announce(&record.source, &outcome).await {
            Ok(()) => {
                tracing::info!(%match_id, source = %record.source, "announced an owed outcome");
                Ok(OwedResult::Delivered)
            }
            Err(error) if error.permanent => {
                tracing::error!(%match_id, %error, "giving up an announcement a sink refuses for good");
                self.store.announced(owed).await.map(|()| OwedResult::GivenUp)
            }
            Err(_) => {
                let due = self.clock.now() + (age / 4).clamp(OWED_RETRY_MIN, OWED_RETRY_MAX);
                self.store.defer_announcement(owed, due).await.map(|()| OwedResult::Failed)
            }
        }
    }

    /// Whether any sink wants outcomes from `source` ([`Engine::announce`] would do nothing).
    pub fn announces(&self, source: &str) -> bool {
        self.sinks.iter().any(|sink| sink.wants(source))
    }

    async fn deliver_with_retries(
        &self,
        sink: &dyn OutcomeSink,
        source: &str,
        outcome: &Outcome,
    ) -> Result<(), DeliveryError> {
        use backon::{BackoffBuilder, ExponentialBuilder};
        let give_up = self.clock.now() + self.settings.deadline;
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(self.settings.retry_min)
            .with_max_delay(self.settings.retry_max)
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            // Bounded too, so that the announcement ends within its window (see `announce_window`).
            let delivered =
                before(&self.clock, give_up, sink.deliver(source, outcome)).await.unwrap_or_else(|| {
                    Err(DeliveryError {
                        sink: sink.name().to_owned(),
                        message: format!(
                            "no answer within the placement deadline ({:?})",
                            self.settings.deadline
                        ),
                        permanent: false,
                    })
                });
            match delivered {
                Ok(()) => return Ok(()),
                Err(error) if error.permanent => return Err(error),
                Err(error) => {
                    let pause = delays.next().unwrap_or(self.settings.retry_max);
                    if self.clock.now() + pause >= give_up {
                        return Err(error);
                    }
                    self.clock.sleep(pause).await;
                    if self.replaced(outcome).await {
                        tracing::info!(
                            sink = sink.name(),
                            match_id = outcome.match_id(),
                            "not announced again: the match has a newer outcome"
                        );
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Whether the match's record holds another outcome than `outcome` by now: a retryable failure
    /// taken over (pending again, or placed since). A late retry of the old one would reach its
    /// listeners after the new one. Asked before each retry only; a record that cannot be read
    /// or is gone says no.
    async fn replaced(&self, outcome: &Outcome) -> bool {
        let current = match self.store.get(outcome.match_id()).await {
            Ok(Some(record)) => match record.state {
                PlacementState::Pending { .. } => return true,
                PlacementState::Placed { assignment } => Outcome::Placed(assignment),
                PlacementState::Failed { failure } => Outcome::Failed(failure),
            },
            _ => return false,
        };
        Owed::of(&current) != Owed::of(outcome)
    }

    /// Sets what wakes the player-sync worker (see [`Engine::sync_players`]).
    pub fn with_player_sync_wakeup(mut self, wakeup: Arc<dyn Fn() + Send + Sync>) -> Self {
        self.player_sync_wakeup = Some(wakeup);
        self
    }

    pub fn with_observer(mut self, observer: Arc<dyn PlacementObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn api(&self) -> &A {
        &self.api
    }

    /// Places a match and waits for the outcome (up to the deadline when another owner holds it).
    pub async fn place(&self, source: &str, request: ValidatedMatch) -> Result<Progress, PlaceError> {
        self.place_answer(source, request).await.map(|answer| answer.progress)
    }

    /// [`Engine::place`], with the outcome's JSON when this call placed the match.
    pub async fn place_answer(&self, source: &str, request: ValidatedMatch) -> Result<Answer, PlaceError> {
        let claim = self.new_claim(source, request);
        let progress = match self.claim(&claim).await? {
            Accepted::Owned(job) => {
                // Not held across the placement: only a waiter needs it.
                drop(claim);
                let (outcome, outcome_json) = self.finish_rendered(job).await?;
                return Ok(Answer { progress: Progress::Done(outcome), outcome_json });
            }
            // Boxed: a duplicate's path, it need not enlarge every placement's future.
            Accepted::Known(Progress::Pending { .. }) => Box::pin(self.wait_for(&claim)).await?,
            Accepted::Known(done) => done,
        };
        Ok(Answer { progress, outcome_json: None })
    }

    /// Claims a match without placing it: the record exists (durably, with a lease) when this
    /// returns, so a door may answer "accepted" and place in the background.
    pub async fn accept(&self, source: &str, request: ValidatedMatch) -> Result<Accepted, PlaceError> {
        self.claim(&self.new_claim(source, request)).await
    }

    fn new_claim(&self, source: &str, request: ValidatedMatch) -> Claim {
        let request = request.into_request();
        Claim {
            match_id: request.match_id.clone(),
            source: source.to_owned(),
            session_id: session_id(source, &request.match_id),
            keep_for: self.keep_for(&request),
            request,
            owner: self.claim_owner(),
            now: self.clock.now(),
            lease_for: self.settings.lease_for(),
        }
    }

    async fn claim(&self, claim: &Claim) -> Result<Accepted, PlaceError> {
        Ok(match self.store.claim(claim).await? {
            ClaimOutcome::Owned { mut record, lease, taken_over } => {
                if taken_over {
                    // The stored request is the first send's: place with the figures this one has.
                    record.request.take_figures_of(&claim.request);
                }
                Accepted::Owned(Job { record, lease, taken_over })
            }
            ClaimOutcome::Placed(assignment) => {
                self.report(claim, "duplicate", Some(&assignment.location), None);
                // Placed before: make good a seat record that could not be written then.
                self.record_missing_seats(&claim.request, &assignment).await;
                Accepted::Known(Progress::Done(Outcome::Placed(assignment)))
            }
            ClaimOutcome::Failed(failure) => {
                self.report(claim, "duplicate", None, Some(failure.error.code));
                Accepted::Known(Progress::Done(Outcome::Failed(failure)))
            }
            ClaimOutcome::Held { lease_until, .. } => Accepted::Known(Progress::Pending { lease_until }),
            ClaimOutcome::Conflict(conflict) => {
                tracing::warn!(
                    match_id = %claim.match_id, source = %claim.source, differing = %conflict.differing_fields(),
                    "refused: the match id was first requested with another match"
                );
                self.report(claim, "conflict", None, Some(FailureCode::MatchIdConflict));
                return Err(conflict.into());
            }
        })
    }

    /// Runs an owned placement to its outcome and records it. If ownership was lost meanwhile
    /// (this instance stalled past its lease), the new owner's recorded outcome is returned.
    pub async fn finish(&self, job: Job) -> Result<Outcome, PlaceError> {
        self.finish_rendered(job).await.map(|(outcome, _)| outcome)
    }

    /// [`Engine::finish`], with the outcome's JSON as recorded (`None` when the recorded outcome
    /// is another owner's).
    async fn finish_rendered(&self, job: Job) -> Result<(Outcome, Option<String>), PlaceError> {
        let started = self.clock.now();
        let outcome = self.attempt(&job.record).await;
        // Rendered once, for the record and the door's answer. Should it fail, `complete` renders
        // it again and reports why.
        let outcome_json = outcome.to_json().ok();
        // The seat record is written with the outcome, not after it: one store round trip's wait
        // instead of two. That is safe whatever `complete` answers, because the session id is the
        // match's own: creating its seats is idempotent, and right even when this owner lost its
        // lease (the session exists at Gameye either way).
        let new_session = match &outcome {
            Outcome::Placed(assignment) => Some(self.new_session(&job.record.request, assignment)),
            Outcome::Failed(_) => None,
        };
        let owed = self.owed(&job.record.source, &outcome);
        let completion = Completion {
            match_id: &job.record.match_id,
            lease: &job.lease,
            outcome: &outcome,
            json: outcome_json.as_deref(),
            keep_for: self.keep_for(&job.record.request),
            owed: owed.as_ref().map(|(owed, due)| (owed, *due)),
        };
        let seats = new_session.as_ref().map(|(new, keep_for)| (new, *keep_for));
        let (written, created) = self.store.finish_placement(completion, seats).await;
        let found_a_record = matches!(created, Some(Ok(Err(SeatError::AlreadyExists))));
        let seats_to_write_again = match (&outcome, created) {
            (Outcome::Placed(_), Some(Err(error))) if error.transient => true,
            (Outcome::Placed(assignment), Some(created)) => {
                self.seats_recorded(assignment, created);
                false
            }
            _ => false,
        };
        if found_a_record && let Outcome::Placed(assignment) = &outcome {
            // Boxed: rarely run, it need not enlarge every placement's future.
            Box::pin(self.seat_in_existing_record(assignment)).await;
        }
        let written = match written {
            Ok(written) => written,
            // Boxed: rarely run, it need not enlarge every placement's future.
            Err(error) if error.transient => Box::pin(self.complete_again(&job, &outcome, error)).await?,
            Err(error) => return Err(error.into()),
        };
        if seats_to_write_again && let Outcome::Placed(assignment) = &outcome {
            // Once more now that the store answers: without the record, joins of this session are
            // refused until the reconciler adopts it, and it would not know `max_players`.
            Box::pin(self.record_seats(&job.record.request, assignment)).await;
        }
        let (outcome, outcome_json) = if written {
            (outcome, outcome_json)
        } else {
            tracing::warn!(match_id = %job.record.match_id, "lost the placement lease; using the new owner's outcome");
            let recorded = match self.store.get(&job.record.match_id).await? {
                Some(record) if MatchIdConflict::between(&record.request, &job.record.request).is_some() => {
                    self.unrecordable(&job.record, outcome)
                }
                Some(PlacementRecord { state: PlacementState::Placed { assignment }, .. }) => {
                    Outcome::Placed(assignment)
                }
                Some(PlacementRecord { state: PlacementState::Failed { failure }, .. }) => {
                    Outcome::Failed(failure)
                }
                // Still pending under the new owner: our own outcome is right too (same session id).
                Some(_) => outcome,
                // Gone (a Redis restart without persistence, a failover that lost writes): written
                // again, or pollers and duplicates would never learn the outcome.
                None => Box::pin(self.record_again(&job, outcome)).await?,
            };
            (recorded, None)
        };
        if let Some(observer) = &self.observer {
            let (label, code, location) = match &outcome {
                Outcome::Placed(a) => ("placed", None, Some(a.location.as_str())),
                Outcome::Failed(f) => ("failed", Some(f.error.code), None),
            };
            observer.finished(&PlacementReport {
                match_id: &job.record.match_id,
                source: &job.record.source,
                outcome: label,
                code,
                location,
                elapsed: (self.clock.now() - started).try_into().unwrap_or_default(),
                taken_over: job.taken_over,
            });
        }
        Ok((outcome, outcome_json))
    }

    /// Writes `outcome` under a new record for a job whose record vanished, unless someone else
    /// has written one since (their final outcome then wins; a pending one will end the same way,
    /// as the session id is the match's own).
    async fn record_again(&self, job: &Job, outcome: Outcome) -> Result<Outcome, PlaceError> {
        tracing::warn!(match_id = %job.record.match_id, "the placement record is gone; writing it again");
        let claim = self.takeover_claim((*job.record).clone());
        Ok(match self.store.claim(&claim).await? {
            ClaimOutcome::Owned { lease, .. } => {
                // Refused only if yet another claimant took it in between: it places the same session.
                self.complete_owing(&claim.match_id, &claim.source, &lease, &outcome, claim.keep_for).await?;
                outcome
            }
            ClaimOutcome::Placed(assignment) => Outcome::Placed(assignment),
            ClaimOutcome::Failed(failure) => Outcome::Failed(failure),
            ClaimOutcome::Held { .. } => outcome,
            ClaimOutcome::Conflict(_) => self.unrecordable(&job.record, outcome),
        })
    }

    /// Another match took the id since Redis lost this one's record: its record is not ours, and
    /// ours cannot be written under the id. This match's own caller still gets its outcome (its
    /// session exists, or its failure is real); pollers and duplicates will see the other match.
    fn unrecordable(&self, ours: &PlacementRecord, outcome: Outcome) -> Outcome {
        tracing::error!(
            match_id = %ours.match_id,
            source = %ours.source,
            "the placement record was lost and another match took its id since: this outcome is answered but not recorded"
        );
        outcome
    }

    /// After `complete` failed transiently: the outcome may have been written and only the answer
    /// lost (a timeout). Completing again tells which (it is refused once the first went through),
    /// so a recorded outcome is still answered and announced: nothing else would, as the recovery
    /// scan looks at pending records only. Tried until the lease runs out, then `error` stands and
    /// the record, still pending, is the recovery loop's.
    async fn complete_again(
        &self,
        job: &Job,
        outcome: &Outcome,
        mut error: StoreError,
    ) -> Result<bool, StoreError> {
        let lease_until = match job.record.state {
            PlacementState::Pending { lease_until, .. } => lease_until,
            _ => return Err(error),
        };
        let mut pause = Duration::from_millis(100);
        while self.clock.now() + pause < lease_until {
            tracing::warn!(match_id = %job.record.match_id, %error, "cannot record the outcome yet; trying again");
            self.clock.sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
            let keep_for = self.keep_for(&job.record.request);
            match self
                .complete_owing(&job.record.match_id, &job.record.source, &job.lease, outcome, keep_for)
                .await
            {
                Ok(written) => return Ok(written),
                Err(again) if again.transient => error = again,
                Err(again) => return Err(again),
            }
        }
        Err(error)
    }

    /// When sinks want outcomes from `source`: what recording `outcome` now owes them, and when
    /// the outbox takes it up should the announcement not have got through by then.
    fn owed(&self, source: &str, outcome: &Outcome) -> Option<(Owed, OffsetDateTime)> {
        (self.announces(source) && !self.left_to_door(source, outcome))
            .then(|| (Owed::of(outcome), self.clock.now() + self.settings.announce_window()))
    }

    /// [`crate::ports::PlacementStore::complete`], with the owed announcement's entry written first (as
    /// [`StateStore::finish_placement`] does).
    async fn complete_owing(
        &self,
        match_id: &str,
        source: &str,
        lease: &Lease,
        outcome: &Outcome,
        keep_for: Duration,
    ) -> Result<bool, StoreError> {
        if let Some((owed, due)) = self.owed(source, outcome) {
            self.store.owe_announcement(&owed, due, keep_for).await?;
        }
        self.store.complete(match_id, lease, outcome, keep_for).await
    }

    /// How long a match's record is kept: `placement.record_ttl`, or as long as its session may
    /// run when that is longer (up to [`LONGEST_KEEP`]). A record that expired while its session
    /// lives would let a new match under the same id be handed that session (the 409 path adopts
    /// whatever runs under the session id).
    fn keep_for(&self, request: &crate::MatchRequest) -> Duration {
        self.settings.keep_for.max(self.session_ttl(request).min(LONGEST_KEEP))
    }

    /// How long the match's Gameye session may run: the request's `ttl`, else `gameye.ttl`.
    pub(super) fn session_ttl(&self, request: &crate::MatchRequest) -> Duration {
        request.ttl.map_or(self.settings.default_ttl, |ttl| ttl.as_duration())
    }

    /// Waits for a pending placement owned elsewhere (`claim` was answered `Held`); takes it over
    /// if its owner's lease runs out, or claims it anew if its record vanished. Gives up
    /// (answering `Pending`) after one deadline.
    async fn wait_for(&self, claim: &Claim) -> Result<Progress, PlaceError> {
        let give_up = self.clock.now() + self.settings.deadline;
        let mut pause = Duration::from_millis(20);
        loop {
            let now = self.clock.now();
            let (to_claim, mut lease_until) = match self.store.get(&claim.match_id).await? {
                // Gone while its owner was at work (Redis lost it): claimed again as this send was
                // first, so that it is placed and recorded rather than answered "pending" for good.
                // Its session id is the match's own, so any session the owner started is found.
                None => (Some(Claim { owner: self.claim_owner(), now, ..claim.clone() }), now),
                Some(record) => match record.state {
                    PlacementState::Placed { assignment } => {
                        return Ok(Progress::Done(Outcome::Placed(assignment)));
                    }
                    PlacementState::Failed { failure } => {
                        return Ok(Progress::Done(Outcome::Failed(failure)));
                    }
                    // Its owner's lease ran out: taken over.
                    PlacementState::Pending { lease_until, .. } if lease_until <= now => {
                        (Some(self.takeover_claim(record)), lease_until)
                    }
                    PlacementState::Pending { lease_until, .. } => (None, lease_until),
                },
            };
            if let Some(to_claim) = to_claim {
                match self.claim(&to_claim).await? {
                    Accepted::Owned(job) => return self.finish(job).await.map(Progress::Done),
                    Accepted::Known(Progress::Done(outcome)) => return Ok(Progress::Done(outcome)),
                    // Claimed by another meanwhile: waited for like the first owner.
                    Accepted::Known(Progress::Pending { lease_until: held }) => lease_until = held,
                }
            }
            if now >= give_up {
                return Ok(Progress::Pending { lease_until });
            }
            self.clock.sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    /// Finishes placements whose owner died (lease expired while pending), several at once.
    /// Returns how many it ran. One that fails (a record that cannot be read, say written by a
    /// newer version; a store error) is logged and skipped, not allowed to hold up the others.
    pub async fn recover(&self, limit: usize) -> Result<usize, PlaceError> {
        use futures_util::stream::{self, StreamExt};
        let expired = self.store.expired_pending(self.clock.now(), limit).await?;
        // Several at once: each waits for Gameye and then for its announcement (up to a deadline
        // per sink when a sink is down), and a crashed instance may leave many behind.
        let mut results = stream::iter(expired)
            .map(|match_id| async move {
                let result = self.recover_one(&match_id).await;
                (match_id, result)
            })
            .buffer_unordered(RECOVERED_AT_ONCE);
        let mut finished = 0;
        while let Some((match_id, result)) = results.next().await {
            match result {
                Ok(true) => finished += 1,
                Ok(false) => {}
                Err(PlaceError::Store(error)) if !error.transient => {
                    tracing::warn!(%match_id, %error, "cannot recover this placement; skipping it");
                }
                // The record expired and another match took its id between reading and claiming:
                // nothing of the stopped owner's is left to finish.
                Err(PlaceError::MatchIdConflict(_)) => {}
                // The others go on; a later round tries this one again.
                Err(error) => {
                    tracing::warn!(%match_id, %error, "placement recovery failed; will try again");
                }
            }
        }
        Ok(finished)
    }

    async fn recover_one(&self, match_id: &str) -> Result<bool, PlaceError> {
        let Some(record) = self.store.get(match_id).await? else { return Ok(false) };
        if !matches!(record.state, PlacementState::Pending { .. }) {
            return Ok(false);
        }
        let Accepted::Owned(job) = self.claim(&self.takeover_claim(record)).await? else {
            return Ok(false);
        };
        tracing::info!(match_id = %job.record.match_id, "recovering a placement left by a stopped owner");
        let source = job.record.source.clone();
        let outcome = self.finish(job).await?;
        // The door that accepted it is gone: announce here, or its sinks never hear of it (unless
        // the door will place it again).
        if !self.left_to_door(&source, &outcome) {
            let _ = self.announce(&source, &outcome).await;
        }
        Ok(true)
    }

    /// The record's current state, for polling doors.
    pub async fn status(&self, match_id: &str) -> Result<Option<PlacementRecord>, PlaceError> {
        Ok(self.store.get(match_id).await?)
    }

    fn takeover_claim(&self, record: PlacementRecord) -> Claim {
        Claim {
            match_id: record.match_id,
            source: record.source,
            session_id: record.session_id,
            keep_for: self.keep_for(&record.request),
            request: record.request,
            owner: self.claim_owner(),
            now: self.clock.now(),
            lease_for: self.settings.lease_for(),
        }
    }

    /// Tells the observer of a claim answered without placing anything.
    fn report(
        &self,
        claim: &Claim,
        outcome: &'static str,
        location: Option<&str>,
        code: Option<FailureCode>,
    ) {
        if let Some(observer) = &self.observer {
            observer.finished(&PlacementReport {
                match_id: &claim.match_id,
                source: &claim.source,
                outcome,
                code,
                location,
                elapsed: Duration::ZERO,
                taken_over: false,
            });
        }
    }
}

//! The in-memory store: one process's state behind a mutex, with Redis's semantics emulated
//! (records, latencies and cool-downs expire; expired entries are invisible and pruned lazily).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::{Swept, from_millis, lease_until_millis, to_millis};
use bridge::MatchIdConflict;
use bridge::ports::{
    Claim, ClaimOutcome, CooldownStore, Delivery, DeliveryLog, LatencyStore, Lease, Outcome, PlacementRecord,
    PlacementState, PlacementStore, StateStore, StoreError, TicketStatus, TicketStore,
};

/// The embedded single-instance store. Cheap to clone: clones share the same state.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    /// Sessions' seats (`SeatStore`, in `seats_memory.rs`).
    pub(super) seats: super::seats_memory::SeatsMemory,
    /// Named leases (`LeaseStore`, in `lease_memory.rs`).
    pub(super) leases: super::lease_memory::LeasesMemory,
    /// The player-sync outbox (`PlayerSyncStore`, in `player_sync_memory.rs`).
    pub(super) player_sync: super::player_sync_memory::PlayerSyncMemory,
    /// The announcement outbox (`AnnouncementStore`, in `announce_memory.rs`).
    pub(super) announcements: super::announce_memory::AnnouncementsMemory,
}

impl fmt::Debug for MemoryStore {
    // Counts only: records hold match requests, whose `env` may carry secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("MemoryStore")
            .field("placements", &inner.placements.len())
            .field("latencies", &inner.latencies.len())
            .field("cooldowns", &inner.cooldowns.len())
            .field("seat_sessions", &self.seats.len())
            .finish()
    }
}

#[derive(Default)]
struct Inner {
    placements: Swept<String, Expiring<Placement>>,
    /// (lease end in ms, match id) of pending records, so `expired_pending` reads only the due
    /// ones. Kept like Redis's pending index: added to whenever a lease starts or moves, never
    /// removed on the way; `expired_pending` drops the entries whose record no longer matches.
    pending: BTreeSet<(i64, String)>,
    latencies: Swept<String, Expiring<BTreeMap<String, u32>>>,
    /// Location → end of its cool-down.
    cooldowns: Swept<String, Instant>,
    /// Delivery keys a door claimed (`DeliveryLog`) → whether it is done, until when.
    deliveries: Swept<String, Expiring<Delivery>>,
    tickets: Swept<String, Expiring<TicketStatus>>,
}

struct Expiring<T> {
    value: T,
    expires_at: Instant,
}

impl<T> Expiring<T> {
    fn live(&self, now: Instant) -> bool {
        self.expires_at > now
    }
}

/// A placement record plus the fence it last had: the fence outlives the `Pending` state, so a
/// takeover of a retryable failure still moves it forward.
struct Placement {
    record: PlacementRecord,
    fence: u64,
}

/// `now + duration` on the monotonic clock, saturating far in the future.
fn deadline(now: Instant, duration: Duration) -> Instant {
    now.checked_add(duration).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave an entry half-written (every change is one
        // insert or field assignment), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    /// Every write sweeps a few entries of each map (expired ones are already invisible).
    fn wrote(&mut self, now: Instant) {
        self.placements.sweep(|entry| !entry.live(now));
        self.latencies.sweep(|entry| !entry.live(now));
        self.cooldowns.sweep(|until| *until <= now);
        self.deliveries.sweep(|entry| !entry.live(now));
        self.tickets.sweep(|entry| !entry.live(now));
    }

    /// The live placement for `match_id`; an expired one is removed on the way.
    fn placement(&mut self, match_id: &str, now: Instant) -> Option<&mut Expiring<Placement>> {
        if self.placements.get(match_id).is_some_and(|entry| !entry.live(now)) {
            self.placements.remove(match_id);
        }
        self.placements.get_mut(match_id)
    }
}

/// Whether `lease` owns `state`.
fn owns(state: &PlacementState, lease: &Lease) -> bool {
    matches!(state, PlacementState::Pending { owner, fence, .. } if *owner == lease.owner && *fence == lease.fence)
}

/// Nothing to save by sending the two together: the default, concurrent calls.
impl StateStore for MemoryStore {}

impl PlacementStore for MemoryStore {
    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome, StoreError> {
        let now = Instant::now();
        let now_ms = to_millis(claim.now);
        let lease_until = from_millis(lease_until_millis(claim.now, claim.lease_for));
        let mut inner = self.lock();
        inner.wrote(now);
        let Some(entry) = inner.placement(&claim.match_id, now) else {
            let record = claim.new_record(from_millis(now_ms), lease_until);
            let lease = Lease { owner: claim.owner.clone(), fence: 1 };
            let placement = Placement { record: record.clone(), fence: 1 };
            let expires_at = deadline(now, claim.keep_for);
            inner.placements.insert(claim.match_id.clone(), Expiring { value: placement, expires_at });
            inner.pending.insert((to_millis(lease_until), claim.match_id.clone()));
            return Ok(ClaimOutcome::Owned { record: Box::new(record), lease, taken_over: false });
        };
        if let Some(conflict) = MatchIdConflict::between(&entry.value.record.request, &claim.request) {
            return Ok(ClaimOutcome::Conflict(conflict));
        }
        match &entry.value.record.state {
            PlacementState::Placed { assignment } => return Ok(ClaimOutcome::Placed(assignment.clone())),
            PlacementState::Failed { failure } if !failure.error.retryable => {
                return Ok(ClaimOutcome::Failed(failure.clone()));
            }
            PlacementState::Pending { owner, lease_until, .. } if to_millis(*lease_until) > now_ms => {
                return Ok(ClaimOutcome::Held { owner: owner.clone(), lease_until: *lease_until });
            }
            // A retryable failure or an expired lease: take it over.
            PlacementState::Failed { .. } | PlacementState::Pending { .. } => {}
        }
        let fence = entry.value.fence + 1;
        entry.value.fence = fence;
        entry.value.record.state = PlacementState::Pending { owner: claim.owner.clone(), fence, lease_until };
        entry.expires_at = deadline(now, claim.keep_for);
        let record = Box::new(entry.value.record.clone());
        inner.pending.insert((to_millis(lease_until), claim.match_id.clone()));
        Ok(ClaimOutcome::Owned {
            record,
            lease: Lease { owner: claim.owner.clone(), fence },
            taken_over: true,
        })
    }

    async fn renew(
        &self,
        match_id: &str,
        lease: &Lease,
        now: OffsetDateTime,
        lease_for: Duration,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let Some(entry) = inner.placement(match_id, Instant::now()) else { return Ok(false) };
        if !owns(&entry.value.record.state, lease) {
            return Ok(false);
        }
        let lease_until_ms = lease_until_millis(now, lease_for);
        entry.value.record.state = PlacementState::Pending {
            owner: lease.owner.clone(),
            fence: lease.fence,
            lease_until: from_millis(lease_until_ms),
        };
        inner.pending.insert((lease_until_ms, match_id.to_owned()));
        Ok(true)
    }

    async fn complete(
        &self,
        match_id: &str,
        lease: &Lease,
        outcome: &Outcome,
        keep_for: Duration,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.wrote(now);
        let Some(entry) = inner.placement(match_id, now) else { return Ok(false) };
        if !owns(&entry.value.record.state, lease) {
            return Ok(false);
        }
        entry.value.record.state = match outcome {
            Outcome::Placed(assignment) => PlacementState::Placed { assignment: assignment.clone() },
            Outcome::Failed(failure) => PlacementState::Failed { failure: failure.clone() },
        };
        entry.expires_at = deadline(now, keep_for);
        Ok(true)
    }

    async fn get(&self, match_id: &str) -> Result<Option<PlacementRecord>, StoreError> {
        let mut inner = self.lock();
        Ok(inner.placement(match_id, Instant::now()).map(|entry| entry.value.record.clone()))
    }

    async fn expired_pending(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<String>, StoreError> {
        let clock = Instant::now();
        let now_ms = to_millis(now);
        let mut inner = self.lock();
        let inner = &mut *inner;
        // Longest due first: the index is ordered by lease end.
        let mut expired = Vec::new();
        let mut stale = Vec::new();
        for entry @ (lease_until_ms, match_id) in &inner.pending {
            if *lease_until_ms > now_ms || expired.len() == limit {
                break;
            }
            let still = inner.placements.get(match_id).is_some_and(|placement| {
                placement.live(clock)
                    && matches!(&placement.value.record.state,
                        PlacementState::Pending { lease_until, .. } if to_millis(*lease_until) == *lease_until_ms)
            });
            if still {
                expired.push(match_id.clone());
            } else {
                // Done, renewed (a later entry stands for it) or expired.
                stale.push(entry.clone());
            }
        }
        for entry in stale {
            inner.pending.remove(&entry);
        }
        Ok(expired)
    }
}

impl LatencyStore for MemoryStore {
    async fn put_latencies(
        &self,
        player_id: &str,
        latencies: &BTreeMap<String, u32>,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.wrote(now);
        if latencies.is_empty() || keep_for.is_zero() {
            inner.latencies.remove(player_id);
        } else {
            let entry = Expiring { value: latencies.clone(), expires_at: deadline(now, keep_for) };
            inner.latencies.insert(player_id.to_owned(), entry);
        }
        Ok(())
    }

    async fn get_latencies(
        &self,
        player_ids: &[String],
    ) -> Result<BTreeMap<String, BTreeMap<String, u32>>, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let mut found = BTreeMap::new();
        for player_id in player_ids {
            match inner.latencies.get(player_id) {
                Some(entry) if entry.live(now) => {
                    found.insert(player_id.clone(), entry.value.clone());
                }
                Some(_) => {
                    inner.latencies.remove(player_id);
                }
                None => {}
            }
        }
        Ok(found)
    }
}

impl CooldownStore for MemoryStore {
    async fn cool_down(&self, location: &str, for_: Duration) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.wrote(now);
        if for_.is_zero() {
            inner.cooldowns.remove(location);
        } else {
            inner.cooldowns.insert(location.to_owned(), deadline(now, for_));
        }
        Ok(())
    }

    async fn cooling(&self, locations: &[String]) -> Result<BTreeSet<String>, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let mut cooling = BTreeSet::new();
        for location in locations {
            match inner.cooldowns.get(location) {
                Some(until) if *until > now => {
                    cooling.insert(location.clone());
                }
                Some(_) => {
                    inner.cooldowns.remove(location);
                }
                None => {}
            }
        }
        Ok(cooling)
    }
}

impl DeliveryLog for MemoryStore {
    fn first_delivery<'a>(
        &'a self,
        key: &'a str,
        hold: Duration,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Delivery, StoreError>> + Send + 'a>> {
        Box::pin(async move {
            let now = Instant::now();
            let mut inner = self.lock();
            inner.wrote(now);
            if let Some(entry) = inner.deliveries.get(key).filter(|entry| entry.live(now)) {
                return Ok(entry.value);
            }
            let entry = Expiring { value: Delivery::InProgress, expires_at: deadline(now, hold) };
            inner.deliveries.insert(key.to_owned(), entry);
            Ok(Delivery::First)
        })
    }

    fn keep_delivery<'a>(
        &'a self,
        key: &'a str,
        keep_for: Duration,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>> {
        Box::pin(async move {
            let now = Instant::now();
            let mut inner = self.lock();
            inner.wrote(now);
            let entry = Expiring { value: Delivery::Done, expires_at: deadline(now, keep_for) };
            inner.deliveries.insert(key.to_owned(), entry);
            Ok(())
        })
    }

    fn forget_delivery<'a>(
        &'a self,
        key: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>> {
        Box::pin(async move {
            self.lock().deliveries.remove(key);
            Ok(())
        })
    }
}

impl TicketStore for MemoryStore {
    fn put_ticket_status<'a>(
        &'a self,
        status: &'a TicketStatus,
        keep_for: Duration,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>> {
        Box::pin(async move {
            let now = Instant::now();
            let mut inner = self.lock();
            inner.wrote(now);
            if keep_for.is_zero() {
                inner.tickets.remove(&status.ticket_id);
            } else {
                let entry = Expiring { value: status.clone(), expires_at: deadline(now, keep_for) };
                inner.tickets.insert(status.ticket_id.clone(), entry);
            }
            Ok(())
        })
    }

    fn get_ticket_status<'a>(
        &'a self,
        ticket_id: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Option<TicketStatus>, StoreError>> + Send + 'a>> {
        Box::pin(async move {
            let now = Instant::now();
            let mut inner = self.lock();
            match inner.tickets.get(ticket_id) {
                Some(entry) if entry.live(now) => Ok(Some(entry.value.clone())),
                Some(_) => {
                    inner.tickets.remove(ticket_id);
                    Ok(None)
                }
                None => Ok(None),
            }
        })
    }

    fn put_unmatched_ticket_status<'a>(
        &'a self,
        status: &'a TicketStatus,
        keep_for: Duration,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<bool, StoreError>> + Send + 'a>> {
        Box::pin(async move {
            let now = Instant::now();
            let mut inner = self.lock();
            // Like ticket_unmatched.lua: only nothing or a "searching" status may be replaced.
            let settled = inner.tickets.get(&status.ticket_id).is_some_and(|entry| {
                entry.live(now) && (entry.value.match_id.is_some() || entry.value.status.is_final())
            });
            if settled {
                return Ok(false);
            }
            inner.wrote(now);
            let entry = Expiring { value: status.clone(), expires_at: deadline(now, keep_for) };
            inner.tickets.insert(status.ticket_id.clone(), entry);
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn debug_shows_counts_not_requests() {
        let store = MemoryStore::new();
        let request = bridge::MatchRequest {
            match_id: "m-1".into(),
            env: BTreeMap::from([("API_KEY".into(), "hunter2".into())]),
            ..Default::default()
        };
        let claim = Claim {
            match_id: "m-1".into(),
            source: "http".into(),
            session_id: bridge::session_id("http", "m-1"),
            request,
            owner: "alpha".into(),
            now: OffsetDateTime::UNIX_EPOCH,
            lease_for: Duration::from_secs(10),
            keep_for: Duration::from_secs(60),
        };
        assert!(matches!(store.claim(&claim).await.unwrap(), ClaimOutcome::Owned { .. }));
        let debug = format!("{store:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("placements: 1"), "{debug}");
    }
}

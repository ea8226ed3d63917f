//! State stores: placement records, reported latencies and location cool-downs (the core's
//! [`PlacementStore`], [`LatencyStore`] and [`CooldownStore`]).
//!
//! Two implementations with identical semantics, chosen at start-up and put behind the closed enum
//! [`StateStore`] so the engine stays generic over one concrete type:
//!
//! - [`MemoryStore`]: the embedded single-instance default (no Redis configured);
//! - [`RedisStore`]: shared state for any number of instances, with a Redis Cluster-ready key layout.
//!
//! Times the caller passes (`now`) are stored as whole milliseconds since the Unix epoch (rounded
//! down), so a record read back carries millisecond-precision timestamps in both stores. Durations
//! are rounded up to whole milliseconds. Expiry (`keep_for`, cool-downs) runs on the store's own
//! clock: Redis's for [`RedisStore`], the process's monotonic clock for [`MemoryStore`].

mod memory;
mod redis;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use time::OffsetDateTime;

pub use bridge::ports::{
    Claim, ClaimOutcome, CooldownStore, LatencyStore, Lease, Outcome, PlacementRecord, PlacementState,
    PlacementStore, StoreError,
};
pub use memory::MemoryStore;
pub use redis::RedisStore;

/// The bridge's state store: in memory (one instance) or in Redis (shared). A closed enum rather
/// than a trait object, because the store traits have `async` methods and the set of stores is fixed.
#[derive(Debug, Clone)]
pub enum StateStore {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl StateStore {
    /// A fresh in-memory store.
    pub fn memory() -> Self {
        Self::Memory(MemoryStore::new())
    }

    /// Connects to Redis (see [`RedisStore::connect`]).
    pub async fn redis(url: &str, prefix: &str) -> Result<Self, StoreError> {
        RedisStore::connect(url, prefix).await.map(Self::Redis)
    }

    /// Redis when `redis_url` is set, in memory when it is empty (the `[redis] url` setting).
    pub async fn from_url(redis_url: &str, prefix: &str) -> Result<Self, StoreError> {
        if redis_url.trim().is_empty() { Ok(Self::memory()) } else { Self::redis(redis_url, prefix).await }
    }

    /// `memory` or `redis`, for logs and `/readyz`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(_) => "redis",
        }
    }

    /// Whether the store answers (`/readyz`). Always true in memory.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Redis(store) => store.ping().await,
        }
    }
}

impl From<MemoryStore> for StateStore {
    fn from(store: MemoryStore) -> Self {
        Self::Memory(store)
    }
}

impl From<RedisStore> for StateStore {
    fn from(store: RedisStore) -> Self {
        Self::Redis(store)
    }
}

impl PlacementStore for StateStore {
    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome, StoreError> {
        match self {
            Self::Memory(store) => store.claim(claim).await,
            Self::Redis(store) => store.claim(claim).await,
        }
    }

    async fn renew(
        &self,
        match_id: &str,
        lease: &Lease,
        now: OffsetDateTime,
        lease_for: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Memory(store) => store.renew(match_id, lease, now, lease_for).await,
            Self::Redis(store) => store.renew(match_id, lease, now, lease_for).await,
        }
    }

    async fn complete(
        &self,
        match_id: &str,
        lease: &Lease,
        outcome: &Outcome,
        keep_for: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Memory(store) => store.complete(match_id, lease, outcome, keep_for).await,
            Self::Redis(store) => store.complete(match_id, lease, outcome, keep_for).await,
        }
    }

    async fn get(&self, match_id: &str) -> Result<Option<PlacementRecord>, StoreError> {
        match self {
            Self::Memory(store) => store.get(match_id).await,
            Self::Redis(store) => store.get(match_id).await,
        }
    }

    async fn expired_pending(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<String>, StoreError> {
        match self {
            Self::Memory(store) => store.expired_pending(now, limit).await,
            Self::Redis(store) => store.expired_pending(now, limit).await,
        }
    }
}

impl LatencyStore for StateStore {
    async fn put_latencies(
        &self,
        player_id: &str,
        latencies: &BTreeMap<String, u32>,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        match self {
            Self::Memory(store) => store.put_latencies(player_id, latencies, keep_for).await,
            Self::Redis(store) => store.put_latencies(player_id, latencies, keep_for).await,
        }
    }

    async fn get_latencies(
        &self,
        player_ids: &[String],
    ) -> Result<BTreeMap<String, BTreeMap<String, u32>>, StoreError> {
        match self {
            Self::Memory(store) => store.get_latencies(player_ids).await,
            Self::Redis(store) => store.get_latencies(player_ids).await,
        }
    }
}

impl CooldownStore for StateStore {
    async fn cool_down(&self, location: &str, for_: Duration) -> Result<(), StoreError> {
        match self {
            Self::Memory(store) => store.cool_down(location, for_).await,
            Self::Redis(store) => store.cool_down(location, for_).await,
        }
    }

    async fn cooling(&self, locations: &[String]) -> Result<BTreeSet<String>, StoreError> {
        match self {
            Self::Memory(store) => store.cooling(locations).await,
            Self::Redis(store) => store.cooling(locations).await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared by both stores, so they round and compare times identically.

/// Milliseconds since the Unix epoch, rounded down.
fn to_millis(at: OffsetDateTime) -> i64 {
    // i128 → i64 cannot overflow for any OffsetDateTime (years ±9999).
    at.unix_timestamp_nanos().div_euclid(1_000_000) as i64
}

/// The instant `ms` milliseconds after the Unix epoch (saturating at the representable range).
fn from_millis(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(if ms < 0 {
        OffsetDateTime::UNIX_EPOCH
    } else {
        time::PrimitiveDateTime::MAX.assume_utc()
    })
}

/// A duration in whole milliseconds, rounded up (so a non-zero duration never becomes 0).
fn duration_millis(duration: Duration) -> i64 {
    let ms = duration.as_nanos().div_ceil(1_000_000);
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// The lease a claim hands out: `now + lease_for`, in the stores' millisecond resolution.
fn lease_until_millis(now: OffsetDateTime, lease_for: Duration) -> i64 {
    to_millis(now).saturating_add(duration_millis(lease_for))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn millis_round_down_and_back() {
        let at = datetime!(2026-11-21 10:00:05.123_999 UTC);
        assert_eq!(to_millis(at), 1_795_255_205_123);
        assert_eq!(from_millis(to_millis(at)), datetime!(2026-11-21 10:00:05.123 UTC));
        let before_epoch = datetime!(1969-12-31 23:59:59.999_5 UTC);
        assert_eq!(to_millis(before_epoch), -1);
    }

    #[test]
    fn durations_round_up_to_whole_millis() {
        assert_eq!(duration_millis(Duration::ZERO), 0);
        assert_eq!(duration_millis(Duration::from_micros(1)), 1);
        assert_eq!(duration_millis(Duration::from_millis(1500)), 1500);
        assert_eq!(duration_millis(Duration::MAX), i64::MAX);
    }
}

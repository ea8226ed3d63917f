//! State stores: placement records, reported latencies and location cool-downs (the core's
//! [`PlacementStore`], [`LatencyStore`] and [`CooldownStore`]), and sessions' seats ([`SeatStore`],
//! in `seats_memory.rs` and `seats_redis.rs`), and the two outboxes: players to sync to Gameye
//! ([`PlayerSyncStore`]) and outcomes owed to sinks ([`AnnouncementStore`], `announce_*.rs`).
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

mod announce_memory;
mod announce_redis;
mod lease_memory;
mod lease_redis;
mod memory;
mod player_sync_memory;
mod player_sync_redis;
mod redis;
mod redis_record;
mod seats_memory;
mod seats_redis;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Bound, Deref, DerefMut};
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use bridge::ports::{Completion, Finished};

pub use bridge::ports::{
    AnnouncementStore, BackfillReserved, EndAnnouncementStore, EndOwing, EndRecord, Ending, LeaseStore, Owed,
    PlayerSyncClaim, PlayerSyncStore, RecordedPage, SeatChange, SeatStore, SessionsPage,
};
pub use bridge::ports::{
    Claim, ClaimOutcome, CooldownStore, Delivery, DeliveryLog, LatencyStore, Lease, Outcome, PlacementRecord,
    PlacementState, PlacementStore, StoreError, TicketState, TicketStatus, TicketStore,
};
pub use bridge::seats::{
    EndReason, Ended, ExpiredReservation, Joined, Left, NewSession, Reserved, SeatError, SeatResult,
    SessionEnd, SessionSeats,
};
pub use memory::MemoryStore;
pub use redis::RedisStore;

/// What a door tells its caller when the state store is down or slow (a retry may help).
pub const STORE_UNAVAILABLE_MESSAGE: &str = "the bridge's state store is unavailable; retry";
/// What a door tells its caller of a store error no retry fixes (a record the bridge cannot read,
/// a command Redis refuses).
pub const STORE_ERROR_MESSAGE: &str =
    "the bridge's state store holds data it cannot use or refused the operation; see the bridge's log";

/// The error code and message a door answers for `error` (`STORE_UNAVAILABLE`: retry;
/// `STORE_ERROR`: a retry cannot help), logged here once.
pub fn store_error_answer(error: &StoreError) -> (&'static str, &'static str) {
    if error.transient {
        tracing::error!(%error, "state store unavailable");
        ("STORE_UNAVAILABLE", STORE_UNAVAILABLE_MESSAGE)
    } else {
        tracing::error!(%error, "state store error that a retry cannot fix");
        ("STORE_ERROR", STORE_ERROR_MESSAGE)
    }
}

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

impl bridge::ports::StateStore for StateStore {
    async fn finish_placement(
        &self,
        completion: Completion<'_>,
        seats: Option<(&NewSession, Duration)>,
    ) -> Finished {
        match self {
            Self::Memory(store) => store.finish_placement(completion, seats).await,
            Self::Redis(store) => store.finish_placement(completion, seats).await,
        }
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

impl DeliveryLog for StateStore {
    fn first_delivery<'a>(
        &'a self,
        key: &'a str,
        hold: Duration,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Delivery, StoreError>> + Send + 'a>> {
        match self {
            Self::Memory(store) => store.first_delivery(key, hold),
            Self::Redis(store) => store.first_delivery(key, hold),
        }
    }

    fn keep_delivery<'a>(
        &'a self,
        key: &'a str,
        keep_for: Duration,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>> {
        match self {
            Self::Memory(store) => store.keep_delivery(key, keep_for),
            Self::Redis(store) => store.keep_delivery(key, keep_for),
        }
    }

    fn forget_delivery<'a>(
        &'a self,
        key: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>> {
        match self {
            Self::Memory(store) => store.forget_delivery(key),
            Self::Redis(store) => store.forget_delivery(key),
        }
    }
}

impl TicketStore for StateStore {
    fn put_ticket_status<'a>(
        &'a self,
        status: &'a TicketStatus,
        keep_for: Duration,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>> {
        match self {
            Self::Memory(store) => store.put_ticket_status(status, keep_for),
            Self::Redis(store) => store.put_ticket_status(status, keep_for),
        }
    }

    fn get_ticket_status<'a>(
        &'a self,
        ticket_id: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Option<TicketStatus>, StoreError>> + Send + 'a>> {
        match self {
            Self::Memory(store) => store.get_ticket_status(ticket_id),
            Self::Redis(store) => store.get_ticket_status(ticket_id),
        }
    }

    fn put_unmatched_ticket_status<'a>(
        &'a self,
        status: &'a TicketStatus,
        keep_for: Duration,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<bool, StoreError>> + Send + 'a>> {
        match self {
            Self::Memory(store) => store.put_unmatched_ticket_status(status, keep_for),
            Self::Redis(store) => store.put_unmatched_ticket_status(status, keep_for),
        }
    }
}

impl AnnouncementStore for StateStore {
    async fn owe_announcement(
        &self,
        owed: &Owed,
        due: OffsetDateTime,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        match self {
            Self::Memory(store) => store.owe_announcement(owed, due, keep_for).await,
            Self::Redis(store) => store.owe_announcement(owed, due, keep_for).await,
        }
    }

    async fn announced(&self, owed: &Owed) -> Result<(), StoreError> {
        match self {
            Self::Memory(store) => store.announced(owed).await,
            Self::Redis(store) => store.announced(owed).await,
        }
    }

    async fn claim_announcements(
        &self,
        now: OffsetDateTime,
        limit: usize,
        hold: Duration,
    ) -> Result<Vec<Owed>, StoreError> {
        match self {
            Self::Memory(store) => store.claim_announcements(now, limit, hold).await,
            Self::Redis(store) => store.claim_announcements(now, limit, hold).await,
        }
    }

    async fn defer_announcement(&self, owed: &Owed, due: OffsetDateTime) -> Result<(), StoreError> {
        match self {
            Self::Memory(store) => store.defer_announcement(owed, due).await,
            Self::Redis(store) => store.defer_announcement(owed, due).await,
        }
    }

    async fn owed_announcements(&self) -> Result<u64, StoreError> {
        match self {
            Self::Memory(store) => store.owed_announcements().await,
            Self::Redis(store) => store.owed_announcements().await,
        }
    }
}

impl PlayerSyncStore for StateStore {
    async fn queue_player_sync(&self, session_id: Uuid) -> Result<(), StoreError> {
        match self {
            Self::Memory(store) => store.queue_player_sync(session_id).await,
            Self::Redis(store) => store.queue_player_sync(session_id).await,
        }
    }

    async fn queue_player_sync_if_absent(&self, session_id: Uuid) -> Result<(), StoreError> {
        match self {
            Self::Memory(store) => store.queue_player_sync_if_absent(session_id).await,
            Self::Redis(store) => store.queue_player_sync_if_absent(session_id).await,
        }
    }

    async fn claim_player_syncs(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<PlayerSyncClaim>, StoreError> {
        match self {
            Self::Memory(store) => store.claim_player_syncs(limit, lease).await,
            Self::Redis(store) => store.claim_player_syncs(limit, lease).await,
        }
    }

    async fn finish_player_sync(&self, claim: &PlayerSyncClaim) -> Result<(), StoreError> {
        match self {
            Self::Memory(store) => store.finish_player_sync(claim).await,
            Self::Redis(store) => store.finish_player_sync(claim).await,
        }
    }

    async fn retry_player_sync(&self, claim: &PlayerSyncClaim, retry_in: Duration) -> Result<(), StoreError> {
        match self {
            Self::Memory(store) => store.retry_player_sync(claim, retry_in).await,
            Self::Redis(store) => store.retry_player_sync(claim, retry_in).await,
        }
    }

    async fn queued_player_syncs(&self) -> Result<u64, StoreError> {
        match self {
            Self::Memory(store) => store.queued_player_syncs().await,
            Self::Redis(store) => store.queued_player_syncs().await,
        }
    }
}

impl LeaseStore for StateStore {
    async fn try_acquire(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        match self {
            Self::Memory(store) => store.try_acquire(name, owner, ttl).await,
            Self::Redis(store) => store.try_acquire(name, owner, ttl).await,
        }
    }

    async fn release(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        match self {
            Self::Memory(store) => store.release(name, owner).await,
            Self::Redis(store) => store.release(name, owner).await,
        }
    }
}

impl SeatStore for StateStore {
    async fn create_session(
        &self,
        new: &NewSession,
        keep_for: Duration,
    ) -> Result<SeatResult<SessionSeats>, StoreError> {
        match self {
            Self::Memory(store) => store.create_session(new, keep_for).await,
            Self::Redis(store) => store.create_session(new, keep_for).await,
        }
    }

    async fn get_session(
        &self,
        session_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<Option<SessionSeats>, StoreError> {
        match self {
            Self::Memory(store) => store.get_session(session_id, now).await,
            Self::Redis(store) => store.get_session(session_id, now).await,
        }
    }

    async fn list_sessions(
        &self,
        image: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Vec<SessionSeats>, StoreError> {
        match self {
            Self::Memory(store) => store.list_sessions(image, now).await,
            Self::Redis(store) => store.list_sessions(image, now).await,
        }
    }

    async fn list_sessions_after(
        &self,
        image: Option<&str>,
        after: Option<Uuid>,
        count: usize,
        now: OffsetDateTime,
    ) -> Result<SessionsPage, StoreError> {
        match self {
            Self::Memory(store) => store.list_sessions_after(image, after, count, now).await,
            Self::Redis(store) => store.list_sessions_after(image, after, count, now).await,
        }
    }

    async fn sessions_holding(
        &self,
        players: &BTreeSet<String>,
        now: OffsetDateTime,
    ) -> Result<Vec<SessionSeats>, StoreError> {
        match self {
            Self::Memory(store) => store.sessions_holding(players, now).await,
            Self::Redis(store) => store.sessions_holding(players, now).await,
        }
    }

    async fn mark_running(
        &self,
        session_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<SeatResult<SessionSeats>, StoreError> {
        match self {
            Self::Memory(store) => store.mark_running(session_id, now).await,
            Self::Redis(store) => store.mark_running(session_id, now).await,
        }
    }

    async fn recorded_sessions_page(
        &self,
        cursor: u64,
        now: OffsetDateTime,
    ) -> Result<RecordedPage, StoreError> {
        match self {
            Self::Memory(store) => store.recorded_sessions_page(cursor, now).await,
            Self::Redis(store) => store.recorded_sessions_page(cursor, now).await,
        }
    }

    async fn mark_running_many(
        &self,
        session_ids: &[Uuid],
        now: OffsetDateTime,
    ) -> Result<Vec<Uuid>, StoreError> {
        match self {
            Self::Memory(store) => store.mark_running_many(session_ids, now).await,
            Self::Redis(store) => store.mark_running_many(session_ids, now).await,
        }
    }

    async fn join_players_ordered(
        &self,
        session_id: Uuid,
        players: &[String],
        order: Option<u64>,
        now: OffsetDateTime,
    ) -> Result<SeatResult<SeatChange<Joined>>, StoreError> {
        match self {
            Self::Memory(store) => store.join_players_ordered(session_id, players, order, now).await,
            Self::Redis(store) => store.join_players_ordered(session_id, players, order, now).await,
        }
    }

    async fn leave_players_ordered(
        &self,
        session_id: Uuid,
        players: &[String],
        order: Option<u64>,
        now: OffsetDateTime,
    ) -> Result<SeatResult<SeatChange<Left>>, StoreError> {
        match self {
            Self::Memory(store) => store.leave_players_ordered(session_id, players, order, now).await,
            Self::Redis(store) => store.leave_players_ordered(session_id, players, order, now).await,
        }
    }

    async fn reserve_seats(
        &self,
        session_id: Uuid,
        players: &[String],
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<SeatResult<SeatChange<Reserved>>, StoreError> {
        match self {
            Self::Memory(store) => store.reserve_seats(session_id, players, ttl, now).await,
            Self::Redis(store) => store.reserve_seats(session_id, players, ttl, now).await,
        }
    }

    async fn reserve_best(
        &self,
        candidates: &[Uuid],
        players: &[String],
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<Option<BackfillReserved>, StoreError> {
        match self {
            Self::Memory(store) => store.reserve_best(candidates, players, ttl, now).await,
            Self::Redis(store) => store.reserve_best(candidates, players, ttl, now).await,
        }
    }

    async fn expire_reservations(
        &self,
        session_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<SeatResult<SeatChange<Vec<ExpiredReservation>>>, StoreError> {
        match self {
            Self::Memory(store) => store.expire_reservations(session_id, now).await,
            Self::Redis(store) => store.expire_reservations(session_id, now).await,
        }
    }

    async fn end_session(
        &self,
        session_id: Uuid,
        ending: Ending,
        now: OffsetDateTime,
    ) -> Result<SeatResult<SeatChange<Ended>>, StoreError> {
        match self {
            Self::Memory(store) => store.end_session(session_id, ending, now).await,
            Self::Redis(store) => store.end_session(session_id, ending, now).await,
        }
    }
}

impl EndAnnouncementStore for StateStore {
    async fn session_end(&self, session_id: Uuid, now: OffsetDateTime) -> Result<EndRecord, StoreError> {
        match self {
            Self::Memory(store) => store.session_end(session_id, now).await,
            Self::Redis(store) => store.session_end(session_id, now).await,
        }
    }

    async fn claim_end_announcements(
        &self,
        now: OffsetDateTime,
        limit: usize,
        hold: Duration,
    ) -> Result<Vec<Uuid>, StoreError> {
        match self {
            Self::Memory(store) => store.claim_end_announcements(now, limit, hold).await,
            Self::Redis(store) => store.claim_end_announcements(now, limit, hold).await,
        }
    }

    async fn end_announced(&self, session_id: Uuid) -> Result<(), StoreError> {
        match self {
            Self::Memory(store) => store.end_announced(session_id).await,
            Self::Redis(store) => store.end_announced(session_id).await,
        }
    }

    async fn defer_end_announcement(&self, session_id: Uuid, due: OffsetDateTime) -> Result<(), StoreError> {
        match self {
            Self::Memory(store) => store.defer_end_announcement(session_id, due).await,
            Self::Redis(store) => store.defer_end_announcement(session_id, due).await,
        }
    }

    async fn owed_end_announcements(&self) -> Result<u64, StoreError> {
        match self {
            Self::Memory(store) => store.owed_end_announcements().await,
            Self::Redis(store) => store.owed_end_announcements().await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared by both stores, so they round and compare times identically.

/// Entries of a [`Swept`] map looked at per sweep (one sweep per write to the store).
const SWEEP_STEP: usize = 8;

/// A map of expiring entries for the memory stores: a `BTreeMap` (growing it never rehashes every
/// entry at once, as a `HashMap` does at each doubling) swept a few entries per write from where the
/// last sweep stopped, so no write pays for a sweep of the whole map. Dead entries are invisible
/// before they are swept (every read checks expiry); the sweep only gives their memory back.
struct Swept<K, V> {
    map: BTreeMap<K, V>,
    /// The last key the previous sweep looked at (`None`: start from the first).
    cursor: Option<K>,
}

impl<K, V> Default for Swept<K, V> {
    fn default() -> Self {
        Self { map: BTreeMap::new(), cursor: None }
    }
}

impl<K, V> Deref for Swept<K, V> {
    type Target = BTreeMap<K, V>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl<K, V> DerefMut for Swept<K, V> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.map
    }
}

impl<K: Ord + Clone, V> Swept<K, V> {
    /// Removes the dead among the next [`SWEEP_STEP`] entries after the cursor, starting from the
    /// first entry again once past the last.
    fn sweep(&mut self, dead: impl Fn(&V) -> bool) {
        let from = self.cursor.take().map_or(Bound::Unbounded, Bound::Excluded);
        let mut doomed = Vec::new();
        let mut looked_at = 0;
        let mut last = None;
        for (key, value) in self.map.range((from, Bound::Unbounded)).take(SWEEP_STEP) {
            looked_at += 1;
            if dead(value) {
                doomed.push(key.clone());
            }
            last = Some(key);
        }
        self.cursor = if looked_at == SWEEP_STEP { last.cloned() } else { None };
        for key in doomed {
            self.map.remove(&key);
        }
    }
}

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

/// `at` rounded down to the millisecond: the stores' resolution (Redis keeps times as ms).
pub(crate) fn whole_millis(at: OffsetDateTime) -> OffsetDateTime {
    from_millis(to_millis(at))
}

/// Appends `text` with each of `special` (ASCII bytes, `%` among them) written as `%XX`: the
/// Redis store's escaping of ids in hash tags and of owners in record headers. Runs without a
/// special byte are copied whole (ids rarely hold one; every placement escapes several). Slicing
/// at an ASCII byte always falls on a character boundary.
fn push_percent_encoded(out: &mut String, text: &str, special: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut rest = text;
    while let Some(at) = rest.bytes().position(|b| special.contains(&b)) {
        let byte = rest.as_bytes()[at];
        out.push_str(&rest[..at]);
        out.push('%');
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xF)]));
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}

/// `duration` in the stores' millisecond resolution ([`duration_millis`]), as a duration.
fn ms_duration(duration: Duration) -> Duration {
    Duration::from_millis(u64::try_from(duration_millis(duration)).unwrap_or(u64::MAX))
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
    fn percent_encoding_escapes_only_the_special_bytes_and_keeps_other_characters_whole() {
        let encode = |text: &str| {
            let mut out = String::from("k:");
            push_percent_encoded(&mut out, text, b"%{}\n");
            out
        };
        assert_eq!(encode(""), "k:");
        assert_eq!(encode("plain-id_1"), "k:plain-id_1");
        assert_eq!(encode("é{ü}%\n"), "k:é%7Bü%7D%25%0A");
        assert_eq!(encode("{{"), "k:%7B%7B");
        assert_eq!(encode("日本}"), "k:日本%7D");
    }

    #[test]
    fn millis_round_down_and_back() {
        let at = datetime!(2026-11-21 10:00:05.123_999 UTC);
        assert_eq!(to_millis(at), 1_795_255_205_123);
        assert_eq!(from_millis(to_millis(at)), datetime!(2026-11-21 10:00:05.123 UTC));
        let before_epoch = datetime!(1969-12-31 23:59:59.999_5 UTC);
        assert_eq!(to_millis(before_epoch), -1);
    }

    #[test]
    fn a_sweep_looks_at_a_few_entries_and_works_round_the_whole_map() {
        // Keys 0..100; the odd ones are dead.
        let mut map: Swept<u32, bool> = Swept::default();
        map.extend((0..100).map(|key| (key, key % 2 == 1)));
        map.sweep(|dead| *dead);
        let removed: Vec<u32> = (0..100).filter(|key| !map.contains_key(key)).collect();
        assert_eq!(removed, [1, 3, 5, 7], "one sweep: the first SWEEP_STEP entries only");

        let sweeps_for_one_round = 100usize.div_ceil(SWEEP_STEP);
        for _ in 0..sweeps_for_one_round {
            map.sweep(|dead| *dead);
        }
        assert_eq!(map.keys().copied().collect::<Vec<_>>(), (0..100).step_by(2).collect::<Vec<_>>());

        // Past the end it starts again: entries dead by now are found on the next round.
        map.values_mut().for_each(|dead| *dead = true);
        for _ in 0..=sweeps_for_one_round {
            map.sweep(|dead| *dead);
        }
        assert!(map.is_empty(), "{:?}", map.keys().collect::<Vec<_>>());
    }

    #[test]
    fn durations_round_up_to_whole_millis() {
        assert_eq!(duration_millis(Duration::ZERO), 0);
        assert_eq!(duration_millis(Duration::from_micros(1)), 1);
        assert_eq!(duration_millis(Duration::from_millis(1500)), 1500);
        assert_eq!(duration_millis(Duration::MAX), i64::MAX);
    }
}

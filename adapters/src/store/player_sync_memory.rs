//! The player-sync outbox in memory ([`PlayerSyncStore`]): the same claim/finish/retry rules as
//! Redis, on the monotonic clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bridge::ports::{PlayerSyncClaim, PlayerSyncStore, StoreError};
use uuid::Uuid;

use super::memory::MemoryStore;

/// The outbox of a [`MemoryStore`] (a field of it; clones share it).
#[derive(Clone, Default)]
pub(super) struct PlayerSyncMemory {
    inner: Arc<Mutex<Queue>>,
}

#[derive(Default)]
struct Queue {
    entries: HashMap<Uuid, Entry>,
    /// Makes every queueing and claim distinct, like the scores in Redis.
    next_token: u64,
}

struct Entry {
    due: Instant,
    token: u64,
    attempts: u32,
}

impl Queue {
    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// The entry of `claim`, if no one queued or claimed the session since.
    fn claimed(&mut self, claim: &PlayerSyncClaim) -> Option<&mut Entry> {
        self.entries.get_mut(&claim.session_id).filter(|entry| entry.token.to_string() == claim.token)
    }
}

impl PlayerSyncMemory {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Every change is a single field assignment: a poisoned lock is consistent.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn later(now: Instant, after: Duration) -> Instant {
    now.checked_add(after).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

impl PlayerSyncStore for MemoryStore {
    async fn queue_player_sync(&self, session_id: Uuid) -> Result<(), StoreError> {
        let mut queue = self.player_sync.lock();
        let token = queue.token();
        let now = Instant::now();
        queue
            .entries
            .entry(session_id)
            .and_modify(|entry| {
                entry.due = now;
                entry.token = token;
            })
            .or_insert(Entry { due: now, token, attempts: 0 });
        Ok(())
    }

    async fn claim_player_syncs(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<PlayerSyncClaim>, StoreError> {
        let mut queue = self.player_sync.lock();
        let now = Instant::now();
        let mut due: Vec<(Instant, Uuid)> =
            queue.entries.iter().filter(|(_, e)| e.due <= now).map(|(id, e)| (e.due, *id)).collect();
        due.sort();
        due.truncate(limit);
        let mut claims = Vec::with_capacity(due.len());
        for (_, session_id) in due {
            let token = queue.token();
            let entry = queue.entries.get_mut(&session_id).expect("listed above");
            entry.due = later(now, lease);
            entry.token = token;
            claims.push(PlayerSyncClaim { session_id, attempts: entry.attempts, token: token.to_string() });
        }
        Ok(claims)
    }

    async fn finish_player_sync(&self, claim: &PlayerSyncClaim) -> Result<(), StoreError> {
        let mut queue = self.player_sync.lock();
        if queue.claimed(claim).is_some() {
            queue.entries.remove(&claim.session_id);
        }
        Ok(())
    }

    async fn retry_player_sync(&self, claim: &PlayerSyncClaim, retry_in: Duration) -> Result<(), StoreError> {
        let mut queue = self.player_sync.lock();
        if let Some(entry) = queue.claimed(claim) {
            entry.due = later(Instant::now(), retry_in);
            entry.attempts = entry.attempts.saturating_add(1);
        }
        Ok(())
    }

    async fn queued_player_syncs(&self) -> Result<u64, StoreError> {
        Ok(self.player_sync.lock().entries.len() as u64)
    }
}

//! The player-sync outbox in memory ([`PlayerSyncStore`]): the same claim/finish/retry rules as
//! Redis (see `player_sync_redis.rs`), on the monotonic clock.

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
    /// Makes every claim distinct, like the scores in Redis.
    next_token: u64,
}

struct Entry {
    due: Instant,
    /// The claim in hand, if any.
    claim: Option<u64>,
    /// Queued again while claimed: due at once when the claim ends.
    changed: bool,
    attempts: u32,
}

impl Queue {
    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// The entry of `claim`, if it still holds the session.
    fn claimed(&mut self, claim: &PlayerSyncClaim) -> Option<&mut Entry> {
        self.entries
            .get_mut(&claim.session_id)
            .filter(|entry| entry.claim.is_some_and(|token| token.to_string() == claim.token))
    }

    /// Ends `claim` if it still holds the session: `retry_in` `None` = the sync succeeded.
    fn settle(&mut self, claim: &PlayerSyncClaim, retry_in: Option<Duration>) {
        let Some(entry) = self.claimed(claim) else {
            return;
        };
        entry.claim = None;
        let changed = std::mem::take(&mut entry.changed);
        let now = Instant::now();
        match (retry_in, changed) {
            (None, false) => {
                self.entries.remove(&claim.session_id);
            }
            (None, true) => {
                entry.attempts = 0;
                entry.due = now;
            }
            (Some(retry_in), changed) => {
                entry.attempts = entry.attempts.saturating_add(1);
                entry.due = if changed { now } else { later(now, retry_in) };
            }
        }
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
        let now = Instant::now();
        queue
            .entries
            .entry(session_id)
            .and_modify(|entry| match entry.claim {
                Some(_) => entry.changed = true,
                None => entry.due = now,
            })
            .or_insert(Entry { due: now, claim: None, changed: false, attempts: 0 });
        Ok(())
    }

    async fn queue_player_sync_if_absent(&self, session_id: Uuid) -> Result<(), StoreError> {
        self.player_sync.lock().entries.entry(session_id).or_insert(Entry {
            due: Instant::now(),
            claim: None,
            changed: false,
            attempts: 0,
        });
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
            entry.claim = Some(token);
            entry.changed = false;
            claims.push(PlayerSyncClaim { session_id, attempts: entry.attempts, token: token.to_string() });
        }
        Ok(claims)
    }

    async fn finish_player_sync(&self, claim: &PlayerSyncClaim) -> Result<(), StoreError> {
        self.player_sync.lock().settle(claim, None);
        Ok(())
    }

    async fn retry_player_sync(&self, claim: &PlayerSyncClaim, retry_in: Duration) -> Result<(), StoreError> {
        self.player_sync.lock().settle(claim, Some(retry_in));
        Ok(())
    }

    async fn queued_player_syncs(&self) -> Result<u64, StoreError> {
        Ok(self.player_sync.lock().entries.len() as u64)
    }
}

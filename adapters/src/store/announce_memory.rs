//! The announcement outbox in memory ([`AnnouncementStore`]): the same rules as Redis (see
//! `announce_redis.rs`), on the caller's clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bridge::ports::{AnnouncementStore, Owed, StoreError};
use time::OffsetDateTime;

use super::memory::MemoryStore;

/// The outbox of a [`MemoryStore`] (a field of it; clones share it): owed outcome → due.
#[derive(Clone, Default)]
pub(super) struct AnnouncementsMemory {
    owed: Arc<Mutex<HashMap<Owed, OffsetDateTime>>>,
}

impl AnnouncementsMemory {
    fn lock(&self) -> MutexGuard<'_, HashMap<Owed, OffsetDateTime>> {
        // Every change is one insert or removal: a poisoned map is still consistent.
        self.owed.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl AnnouncementStore for MemoryStore {
    async fn owe_announcement(
        &self,
        owed: &Owed,
        due: OffsetDateTime,
        _keep_for: Duration,
    ) -> Result<(), StoreError> {
        // Entries leave when announced or when their record is found gone, as in Redis.
        self.announcements.lock().insert(owed.clone(), due);
        Ok(())
    }

    async fn announced(&self, owed: &Owed) -> Result<(), StoreError> {
        self.announcements.lock().remove(owed);
        Ok(())
    }

    async fn claim_announcements(
        &self,
        now: OffsetDateTime,
        limit: usize,
        hold: Duration,
    ) -> Result<Vec<Owed>, StoreError> {
        let mut owed = self.announcements.lock();
        let mut due: Vec<(OffsetDateTime, Owed)> =
            owed.iter().filter(|(_, at)| **at <= now).map(|(entry, at)| (*at, entry.clone())).collect();
        due.sort_unstable();
        due.truncate(limit);
        let held_until = now + hold;
        for (_, entry) in &due {
            owed.insert(entry.clone(), held_until);
        }
        Ok(due.into_iter().map(|(_, entry)| entry).collect())
    }

    async fn defer_announcement(&self, owed: &Owed, due: OffsetDateTime) -> Result<(), StoreError> {
        if let Some(at) = self.announcements.lock().get_mut(owed) {
            *at = due;
        }
        Ok(())
    }

    async fn owed_announcements(&self) -> Result<u64, StoreError> {
        Ok(self.announcements.lock().len() as u64)
    }
}

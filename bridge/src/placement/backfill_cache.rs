//! Backfill candidates per image, reused for a moment (`seats.backfill_cache`).
//!
//! Listing an image's sessions reads every record, so it costs in proportion to the number of
//! sessions; a busy matchmaker backfills many times a second. The cache only decides which sessions
//! are *tried* and in what order: the reservation itself is an atomic script that checks the seats
//! as they are, so a stale entry can cost a refused attempt, never an overbooked session. What this
//! instance learns is written back at once: a new session empties the image's entry; joins, leaves,
//! ends and reservations update the session's open seats and reserved players; sessions that
//! refused a reservation are marked as too full for it. So one instance sees its own changes at
//! once and other instances' within `seats.backfill_cache`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::seats::BackfillCandidate;

/// At most this many images are cached; beyond it, expired entries are dropped and a new image is
/// not cached (image names come from requests).
const MAX_IMAGES: usize = 256;

#[derive(Default)]
pub(super) struct BackfillCache {
    images: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    listed_at: OffsetDateTime,
    candidates: Vec<BackfillCandidate>,
    /// Someone is listing the image again; meanwhile the others use these candidates.
    refreshing_since: Option<OffsetDateTime>,
}

/// What a change on this instance tells about one session's seats.
pub(super) struct SeatsNow {
    pub session_id: Uuid,
    pub open_seats: u32,
    pub reserved_players: BTreeSet<String>,
}

/// What [`BackfillCache::lookup`] says to do.
pub(super) enum Lookup {
    /// Use these (fresh, or stale while another request refreshes them).
    Cached(Vec<BackfillCandidate>),
    /// List the sessions and [`BackfillCache::store`] them.
    List,
}

impl BackfillCache {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // Entries are replaced whole: a poisoned lock holds consistent data.
        self.images.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn lookup(&self, image: &str, ttl: Duration, now: OffsetDateTime) -> Lookup {
        if ttl.is_zero() {
            return Lookup::List;
        }
        let mut images = self.lock();
        let Some(entry) = images.get_mut(image) else {
            return Lookup::List;
        };
        if now < entry.listed_at + ttl {
            return Lookup::Cached(entry.candidates.clone());
        }
        // While one request refreshes, the others use the entry, unless it is long out of date
        // (an image idle for hours); a refresh that never finished is taken over after a while.
        let patience = ttl.max(Duration::from_millis(100)) * 4;
        match entry.refreshing_since {
            Some(since) if now < since + patience && now < entry.listed_at + patience => {
                Lookup::Cached(entry.candidates.clone())
            }
            _ => {
                entry.refreshing_since = Some(now);
                Lookup::List
            }
        }
    }

    pub(super) fn store(
        &self,
        image: &str,
        candidates: Vec<BackfillCandidate>,
        ttl: Duration,
        now: OffsetDateTime,
    ) {
        let mut images = self.lock();
        if images.len() >= MAX_IMAGES && !images.contains_key(image) {
            images.retain(|_, entry| now < entry.listed_at + ttl);
            if images.len() >= MAX_IMAGES {
                return;
            }
        }
        images.insert(image.to_owned(), Entry { listed_at: now, candidates, refreshing_since: None });
    }

    /// A listing failed: the next request lists again.
    pub(super) fn forget(&self, image: &str) {
        self.lock().remove(image);
    }

    /// A join, leave or end on this instance: the session now stands as `seats` says.
    pub(super) fn update(&self, image: &str, seats: SeatsNow) {
        if let Some(entry) = self.lock().get_mut(image)
            && let Some(candidate) = entry.candidates.iter_mut().find(|c| c.session_id == seats.session_id)
        {
            refresh(candidate, seats);
        }
    }

    /// After an attempt: `refused` sessions could not take `needed` players; `winner` stands as
    /// it says.
    pub(super) fn learn(&self, image: &str, refused: &[Uuid], needed: u32, winner: Option<SeatsNow>) {
        let mut images = self.lock();
        let Some(entry) = images.get_mut(image) else {
            return;
        };
        for candidate in &mut entry.candidates {
            if refused.contains(&candidate.session_id) {
                candidate.open_seats = candidate.open_seats.min(needed.saturating_sub(1));
            }
        }
        if let Some(seats) = winner
            && let Some(candidate) = entry.candidates.iter_mut().find(|c| c.session_id == seats.session_id)
        {
            refresh(candidate, seats);
        }
    }
}

fn refresh(candidate: &mut BackfillCandidate, seats: SeatsNow) {
    candidate.open_seats = seats.open_seats;
    candidate.reserved_players = seats.reserved_players;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::seats::SessionStatus;

    const TTL: Duration = Duration::from_millis(250);

    fn candidate(n: u128, open_seats: u32) -> BackfillCandidate {
        BackfillCandidate {
            session_id: Uuid::from_u128(n),
            image: "game".to_owned(),
            version: None,
            location: "eu".to_owned(),
            labels: BTreeMap::new(),
            status: SessionStatus::Running,
            open_seats,
            reserved_players: Default::default(),
        }
    }

    fn t(ms: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(1_000_000 + ms)
    }

    fn cached(lookup: Lookup) -> Vec<BackfillCandidate> {
        match lookup {
            Lookup::Cached(candidates) => candidates,
            Lookup::List => panic!("expected cached candidates"),
        }
    }

    #[test]
    fn fresh_entries_are_reused_and_one_caller_refreshes_a_stale_one() {
        let cache = BackfillCache::default();
        assert!(matches!(cache.lookup("game", TTL, t(0)), Lookup::List));
        cache.store("game", vec![candidate(1, 4)], TTL, t(0));
        assert_eq!(cached(cache.lookup("game", TTL, t(249))), vec![candidate(1, 4)]);
        assert!(matches!(cache.lookup("other", TTL, t(10)), Lookup::List));

        // Stale: the first caller lists, the others keep using the old entry meanwhile.
        assert!(matches!(cache.lookup("game", TTL, t(250)), Lookup::List));
        assert_eq!(cached(cache.lookup("game", TTL, t(260))), vec![candidate(1, 4)]);
        // A refresh that never came back is taken over.
        assert!(matches!(cache.lookup("game", TTL, t(250 + 1000)), Lookup::List));
        cache.store("game", vec![candidate(2, 1)], TTL, t(1300));
        assert_eq!(cached(cache.lookup("game", TTL, t(1300))), vec![candidate(2, 1)]);
    }

    #[test]
    fn a_long_outdated_entry_is_never_served_while_refreshing() {
        let cache = BackfillCache::default();
        cache.store("game", vec![candidate(1, 4)], TTL, t(0));
        // Idle for an hour, then two requests at once: both list.
        assert!(matches!(cache.lookup("game", TTL, t(3_600_000)), Lookup::List));
        assert!(matches!(cache.lookup("game", TTL, t(3_600_001)), Lookup::List));
    }

    #[test]
    fn the_number_of_cached_images_is_bounded() {
        let cache = BackfillCache::default();
        for n in 0..MAX_IMAGES {
            cache.store(&format!("image-{n}"), Vec::new(), TTL, t(0));
        }
        cache.store("one-too-many", Vec::new(), TTL, t(1));
        assert!(matches!(cache.lookup("one-too-many", TTL, t(2)), Lookup::List));
        // Once the others expired, they make room.
        cache.store("one-too-many", vec![candidate(1, 1)], TTL, t(500));
        assert_eq!(cached(cache.lookup("one-too-many", TTL, t(501))), vec![candidate(1, 1)]);
        assert_eq!(cache.lock().len(), 1);
    }

    #[test]
    fn a_zero_ttl_always_lists_and_a_failed_listing_is_forgotten() {
        let cache = BackfillCache::default();
        cache.store("game", vec![candidate(1, 4)], TTL, t(0));
        assert!(matches!(cache.lookup("game", Duration::ZERO, t(0)), Lookup::List));
        cache.forget("game");
        assert!(matches!(cache.lookup("game", TTL, t(1)), Lookup::List));
    }

    #[test]
    fn what_this_instance_learns_is_written_back() {
        let cache = BackfillCache::default();
        cache.store("game", vec![candidate(1, 5), candidate(2, 5), candidate(3, 5)], TTL, t(0));
        // 1 refused two players, 2 took them and has 3 left; 3 was not tried.
        let seats = |n: u128, open_seats: u32, reserved: &[&str]| SeatsNow {
            session_id: Uuid::from_u128(n),
            open_seats,
            reserved_players: reserved.iter().map(|p| (*p).to_owned()).collect(),
        };
        cache.learn("game", &[Uuid::from_u128(1)], 2, Some(seats(2, 3, &["a"])));
        let open: Vec<u32> = cached(cache.lookup("game", TTL, t(1))).iter().map(|c| c.open_seats).collect();
        assert_eq!(open, vec![1, 3, 5]);
        let held: Vec<usize> =
            cached(cache.lookup("game", TTL, t(1))).iter().map(|c| c.reserved_players.len()).collect();
        assert_eq!(held, vec![0, 1, 0], "the winner's reserved players are known for a retry");
        cache.update("game", seats(3, 0, &[]));
        cache.update("game", seats(9, 7, &[]));
        let open: Vec<u32> = cached(cache.lookup("game", TTL, t(2))).iter().map(|c| c.open_seats).collect();
        assert_eq!(open, vec![1, 3, 0]);
    }
}

//! Seats in memory: the core ledger's operations applied to records behind a mutex, with the same
//! rounding (times to whole milliseconds) and expiry rules as the Redis store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use uuid::Uuid;

use super::memory::MemoryStore;
use super::{Swept, duration_millis, ms_duration, whole_millis};
use bridge::ports::{
    BackfillReserved, EndAnnouncementStore, EndRecord, Ending, RecordedPage, RecordedSession, SeatChange,
    SeatStore, StoreError,
};
use bridge::seats::{
    Ended, ExpiredReservation, Joined, Left, NewSession, Reserved, SeatError, SeatResult, SessionEnd,
    SessionSeats,
};

/// The seat records of a [`MemoryStore`] (a field of it; clones share them).
#[derive(Clone, Default)]
pub(super) struct SeatsMemory {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    sessions: Swept<Uuid, Record>,
    /// The session-end outbox: session id → due.
    ends_owed: HashMap<Uuid, OffsetDateTime>,
}

struct Record {
    seats: SessionSeats,
    /// The creating call's `now` (ms), for [`RecordedSession::recorded_at`].
    recorded_at: OffsetDateTime,
    keep_for: Duration,
    expires_at: Instant,
    /// How it ended, once it did.
    end: Option<SessionEnd>,
    /// Its end is owed to the session-event sinks.
    end_owed: bool,
}

impl SeatsMemory {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every change is applied to a copy and stored at once, so a poisoned lock is consistent.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many records are held (live or not yet swept), for `Debug`.
    pub(super) fn len(&self) -> usize {
        self.lock().sessions.len()
    }
}

fn deadline(now: Instant, duration: Duration) -> Instant {
    now.checked_add(duration).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

impl Inner {
    /// The records a listing shows at `clock`: live, and not ended.
    fn listed(&self, clock: Instant) -> impl Iterator<Item = &Record> {
        self.sessions
            .values()
            .filter(move |r| r.expires_at > clock && r.seats.status != bridge::SessionStatus::Ended)
    }

    fn live(&mut self, session_id: Uuid, clock: Instant) -> Option<&mut Record> {
        if self.sessions.get(&session_id).is_some_and(|r| r.expires_at <= clock) {
            self.sessions.remove(&session_id);
        }
        self.sessions.get_mut(&session_id)
    }

    /// Applies `change` to a copy of the session's seats at `now`; stores it (refreshing the
    /// record's time to live) only when it succeeded.
    fn change<T>(
        &mut self,
        session_id: Uuid,
        now: OffsetDateTime,
        change: impl FnOnce(&mut SessionSeats, OffsetDateTime) -> SeatResult<T>,
    ) -> SeatResult<SeatChange<T>> {
        let clock = Instant::now();
        self.sessions.sweep(|r| r.expires_at <= clock);
        let now = whole_millis(now);
        let record = self.live(session_id, clock).ok_or(SeatError::NotFound)?;
        let mut seats = record.seats.clone();
        let outcome = change(&mut seats, now)?;
        record.seats = seats.clone();
        record.expires_at = deadline(clock, record.keep_for);
        Ok(SeatChange { outcome, session: seats })
    }
}

impl SeatsMemory {
    fn create(&self, new: &NewSession, keep_for: Duration) -> SeatResult<SessionSeats> {
        let clock = Instant::now();
        let mut inner = self.lock();
        if let Some(record) = inner.live(new.session_id, clock) {
            return Err(if record.seats.status == bridge::SessionStatus::Ended {
                SeatError::Ended
            } else {
                SeatError::AlreadyExists
            });
        }
        let now = whole_millis(new.now);
        let seats = SessionSeats::create_at(new, Uuid::new_v4(), now, ms_duration(new.reservation_ttl))?;
        let keep_for = ms_duration(keep_for);
        let record = Record {
            seats: seats.clone(),
            recorded_at: now,
            keep_for,
            expires_at: deadline(clock, keep_for),
            end: None,
            end_owed: false,
        };
        inner.sessions.insert(new.session_id, record);
        // Creates sweep too: a deployment whose sessions are only ever created must still get the
        // expired records' memory back.
        inner.sessions.sweep(|r| r.expires_at <= clock);
        Ok(seats)
    }
}

impl SeatStore for MemoryStore {
    async fn create_session(
        &self,
        new: &NewSession,
        keep_for: Duration,
    ) -> Result<SeatResult<SessionSeats>, StoreError> {
        if duration_millis(keep_for) == 0 {
            return Err(StoreError::permanent("seats: a session record must be kept for more than 0 ms"));
        }
        Ok(self.seats.create(new, keep_for))
    }

    async fn get_session(
        &self,
        session_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<Option<SessionSeats>, StoreError> {
        let mut inner = self.seats.lock();
        Ok(inner.live(session_id, Instant::now()).map(|r| r.seats.at(whole_millis(now))))
    }

    async fn list_sessions(
        &self,
        image: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Vec<SessionSeats>, StoreError> {
        let clock = Instant::now();
        let now = whole_millis(now);
        let inner = self.seats.lock();
        let mut found: Vec<SessionSeats> = inner
            .listed(clock)
            .filter(|r| image.is_none_or(|image| r.seats.info.image == image))
            .map(|r| r.seats.at(now))
            .collect();
        found.sort_by_key(|s| s.session_id);
        Ok(found)
    }

    async fn mark_running(
        &self,
        session_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<SeatResult<SessionSeats>, StoreError> {
        let mut inner = self.seats.lock();
        Ok(inner
            .change(session_id, now, |s, now| {
                s.expire(now);
                s.mark_running()
            })
            .map(|c| c.session))
    }

    /// All in one page: nothing to pace in memory.
    async fn recorded_sessions_page(
        &self,
        _cursor: u64,
        _now: OffsetDateTime,
    ) -> Result<RecordedPage, StoreError> {
        let inner = self.seats.lock();
        let mut sessions: Vec<RecordedSession> = inner
            .listed(Instant::now())
            .map(|r| RecordedSession {
                session_id: r.seats.session_id,
                status: r.seats.status,
                joined: r.seats.joined.len(),
                recorded_at: r.recorded_at,
            })
            .collect();
        sessions.sort_by_key(|s| s.session_id);
        Ok(RecordedPage { sessions, next: None })
    }

    async fn mark_running_many(
        &self,
        session_ids: &[Uuid],
        now: OffsetDateTime,
    ) -> Result<Vec<Uuid>, StoreError> {
        let mut inner = self.seats.lock();
        let mut marked = Vec::new();
        for &session_id in session_ids {
            let was_created = inner
                .live(session_id, Instant::now())
                .is_some_and(|r| r.seats.status == bridge::SessionStatus::Created);
            if was_created && inner.change(session_id, now, |s, _| s.mark_running()).is_ok() {
                marked.push(session_id);
            }
        }
        Ok(marked)
    }

    async fn join_players_ordered(
        &self,
        session_id: Uuid,
        players: &[String],
        order: Option<u64>,
        now: OffsetDateTime,
    ) -> Result<SeatResult<SeatChange<Joined>>, StoreError> {
        Ok(self.seats.lock().change(session_id, now, |s, now| s.join(players, order, now)))
    }

    async fn leave_players_ordered(
        &self,
        session_id: Uuid,
        players: &[String],
        order: Option<u64>,
        now: OffsetDateTime,
    ) -> Result<SeatResult<SeatChange<Left>>, StoreError> {
        Ok(self.seats.lock().change(session_id, now, |s, now| s.leave(players, order, now)))
    }

    async fn reserve_seats(
        &self,
        session_id: Uuid,
        players: &[String],
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<SeatResult<SeatChange<Reserved>>, StoreError> {
        let ttl = ms_duration(ttl);
        Ok(self.seats.lock().change(session_id, now, |s, now| s.reserve(Uuid::new_v4(), players, ttl, now)))
    }

    async fn reserve_best(
        &self,
        candidates: &[Uuid],
        players: &[String],
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<Option<BackfillReserved>, StoreError> {
        for session_id in candidates {
            if let Ok(reserved) = self.reserve_seats(*session_id, players, ttl, now).await? {
                return Ok(Some(reserved));
            }
        }
        Ok(None)
    }

    async fn expire_reservations(
        &self,
        session_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<SeatResult<SeatChange<Vec<ExpiredReservation>>>, StoreError> {
        Ok(self.seats.lock().change(session_id, now, |s, now| {
            if s.status == bridge::SessionStatus::Ended {
                return Err(SeatError::Ended);
            }
            Ok(s.expire(now))
        }))
    }

    async fn end_session(
        &self,
        session_id: Uuid,
        ending: Ending,
        now: OffsetDateTime,
    ) -> Result<SeatResult<SeatChange<Ended>>, StoreError> {
        let mut inner = self.seats.lock();
        let mut end = None;
        let change = inner.change(session_id, now, |s, now| {
            let (ended, how) = s.end_for(ending.reason, now)?;
            end = Some(how);
            Ok(ended)
        });
        if change.is_ok()
            && let Some(record) = inner.sessions.get_mut(&session_id)
        {
            record.end = end;
            if let Some(owe) = ending.owe {
                record.end_owed = true;
                record.expires_at =
                    record.expires_at.max(deadline(Instant::now(), ms_duration(owe.keep_for)));
                inner.ends_owed.entry(session_id).or_insert(whole_millis(now + owe.window));
            }
        }
        Ok(change)
    }
}

impl EndAnnouncementStore for MemoryStore {
    async fn session_end(&self, session_id: Uuid, now: OffsetDateTime) -> Result<EndRecord, StoreError> {
        let mut inner = self.seats.lock();
        let Some(record) = inner.live(session_id, Instant::now()) else { return Ok(EndRecord::Gone) };
        Ok(match (&record.end, record.end_owed) {
            _ if record.seats.status != bridge::SessionStatus::Ended => EndRecord::NotEnded,
            (Some(end), true) => EndRecord::Owed(record.seats.at(whole_millis(now)), end.clone()),
            _ => EndRecord::Settled,
        })
    }

    async fn claim_end_announcements(
        &self,
        now: OffsetDateTime,
        limit: usize,
        hold: Duration,
    ) -> Result<Vec<Uuid>, StoreError> {
        let mut inner = self.seats.lock();
        let mut due: Vec<(OffsetDateTime, Uuid)> =
            inner.ends_owed.iter().filter(|(_, at)| **at <= now).map(|(id, at)| (*at, *id)).collect();
        due.sort_unstable();
        due.truncate(limit);
        let held_until = whole_millis(now + hold);
        for (_, id) in &due {
            inner.ends_owed.insert(*id, held_until);
        }
        Ok(due.into_iter().map(|(_, id)| id).collect())
    }

    async fn end_announced(&self, session_id: Uuid) -> Result<(), StoreError> {
        let mut inner = self.seats.lock();
        if let Some(record) = inner.sessions.get_mut(&session_id) {
            record.end_owed = false;
        }
        inner.ends_owed.remove(&session_id);
        Ok(())
    }

    async fn defer_end_announcement(&self, session_id: Uuid, due: OffsetDateTime) -> Result<(), StoreError> {
        if let Some(at) = self.seats.lock().ends_owed.get_mut(&session_id) {
            *at = whole_millis(due);
        }
        Ok(())
    }

    async fn owed_end_announcements(&self) -> Result<u64, StoreError> {
        Ok(self.seats.lock().ends_owed.len() as u64)
    }
}

//! Gameye's player lists follow the seat records (DESIGN §4): every join or leave changes Redis at
//! once and queues the session in the player-sync outbox; a worker then makes Gameye's list equal
//! to the record's joined players.
//!
//! A sync compares states instead of replaying operations: it reads the record, asks Gameye who it
//! counts (`GET /session/{id}`), and sends only the difference (join and leave are idempotent
//! there). So a change that happened during a sync, a call whose answer was lost, or two workers
//! on one session all converge on the record; order does not matter.

use std::collections::BTreeSet;

use super::engine::Engine;
use crate::ports::{
    Clock, PlayerSyncClaim, SessionApi, SessionApiError, SessionApiErrorKind, StateStore, StoreError,
};
use crate::seats::SessionStatus;

/// What one sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlayerSyncOutcome {
    /// Gameye's list equals the record now; `joined`/`left` players were sent to get there.
    InSync { joined: usize, left: usize },
    /// Nothing to sync any more: the record is gone or ended, or Gameye no longer has the session.
    Gone,
    /// Gameye failed; the session comes due again after the retry delay.
    Retry { error: SessionApiError },
    /// The store failed; the claim runs out and the session comes due again.
    Store(StoreError),
}

impl<A, S, C> Engine<A, S, C>
where
    A: SessionApi,
    S: StateStore,
    C: Clock,
{
    /// Queues `session_id` for a sync after a change to its players and wakes the worker. A store
    /// failure is logged: the change itself is made, and the reconciler queues sessions whose
    /// Gameye player count differs from the record.
    pub(super) async fn queue_player_sync(&self, session_id: uuid::Uuid) {
        match self.store.queue_player_sync(session_id).await {
            Ok(()) => {
                if let Some(wakeup) = &self.player_sync_wakeup {
                    wakeup();
                }
            }
            Err(error) => {
                tracing::warn!(%session_id, %error, "cannot queue the Gameye player sync; the reconciler will")
            }
        }
    }

    /// Claims up to `limit` due sessions for the configured lease.
    pub async fn claim_player_syncs(&self, limit: usize) -> Result<Vec<PlayerSyncClaim>, StoreError> {
        self.store.claim_player_syncs(limit, self.settings.seats.gameye_sync.lease).await
    }

    /// Brings Gameye's player list of the claimed session in line with its record, then finishes
    /// the claim (or schedules the retry).
    pub async fn sync_players(&self, claim: &PlayerSyncClaim) -> PlayerSyncOutcome {
        let outcome = self.sync_once(claim).await;
        let settled = match &outcome {
            PlayerSyncOutcome::InSync { .. } | PlayerSyncOutcome::Gone => {
                self.store.finish_player_sync(claim).await
            }
            PlayerSyncOutcome::Retry { .. } => {
                self.store.retry_player_sync(claim, self.player_sync_delay(claim.attempts)).await
            }
            // The claim's lease runs out and the session comes due again by itself.
            PlayerSyncOutcome::Store(_) => Ok(()),
        };
        match settled {
            Ok(()) => outcome,
            Err(error) => PlayerSyncOutcome::Store(error),
        }
    }

    async fn sync_once(&self, claim: &PlayerSyncClaim) -> PlayerSyncOutcome {
        let session_id = claim.session_id;
        let record = match self.store.get_session(session_id, self.clock.now()).await {
            Ok(Some(record)) if record.status != SessionStatus::Ended => record,
            Ok(_) => return PlayerSyncOutcome::Gone,
            Err(error) => return PlayerSyncOutcome::Store(error),
        };
        let at_gameye: BTreeSet<String> = match self.api.describe_session(session_id).await {
            Ok(described) => described.players.into_iter().collect(),
            Err(error) => return gameye_failed(error),
        };
        let to_join: Vec<String> = record.joined.difference(&at_gameye).cloned().collect();
        let to_leave: Vec<String> = at_gameye.difference(&record.joined).cloned().collect();
        // Both calls are tried even when one fails, so a player id Gameye refuses to add cannot
        // keep the others from leaving.
        let joined =
            if to_join.is_empty() { Ok(()) } else { self.api.join_players(session_id, &to_join).await };
        let left =
            if to_leave.is_empty() { Ok(()) } else { self.api.leave_players(session_id, &to_leave).await };
        if let Err(error) = joined.and(left) {
            return gameye_failed(error);
        }
        PlayerSyncOutcome::InSync { joined: to_join.len(), left: to_leave.len() }
    }

    /// The delay before retry number `attempts + 1`: exponential from `retry_min` to `retry_max`,
    /// plus up to 100 % jitter so sessions that failed together do not retry together.
    fn player_sync_delay(&self, attempts: u32) -> std::time::Duration {
        use backon::{BackoffBuilder, ExponentialBuilder};
        let sync = &self.settings.seats.gameye_sync;
        ExponentialBuilder::default()
            .with_min_delay(sync.retry_min)
            .with_max_delay(sync.retry_max)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(attempts.min(64) as usize)
            .unwrap_or(sync.retry_max)
    }
}

/// Gameye no longer knowing the session ends the sync (the reconciler ends the record); anything
/// else is retried, including 4xx answers, since the record stays the truth to converge on.
fn gameye_failed(error: SessionApiError) -> PlayerSyncOutcome {
    match error.kind {
        SessionApiErrorKind::NotFound => PlayerSyncOutcome::Gone,
        _ => PlayerSyncOutcome::Retry { error },
    }
}

//! The seat-store contract: one suite, run against the in-memory store and against Redis (a real
//! `redis-server` per test), both through the `StateStore` enum. Redis-only tests below check the
//! key layout, TTLs and the session indexes.
//!
//! Times: each test picks a whole-millisecond `t0` and passes `t0 + offset` as `now`, so
//! reservation expiry is exact; record expiry (`keep_for`) runs on the stores' own clocks.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use adapters::store::{MemoryStore, RedisStore, StateStore};
use bridge::ports::{
    EndAnnouncementStore, EndOwing, EndRecord, Ending, PlayerSyncClaim, PlayerSyncStore, RecordedSession,
    SeatChange, SeatStore,
};
use bridge::seats::{
    BackfillPlayer, BackfillQuery, EndReason, NewSession, SeatError, SessionInfo, SessionSeats,
    SessionStatus, choose_backfill,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::harness::RedisServer;

const KEEP: Duration = Duration::from_secs(3600);
const RESERVE: Duration = Duration::from_secs(60);
const PREFIX: &str = "it-seats";
/// An end nobody is told of.
const GONE: Ending = Ending { reason: EndReason::Gone, owe: None };
/// Ends owed to sinks, due at once.
const OWED: EndOwing = EndOwing { window: Duration::ZERO, keep_for: KEEP };

struct Fixture {
    store: StateStore,
    t0: OffsetDateTime,
    redis: Option<RedisServer>,
}

impl Fixture {
    fn memory() -> Self {
        Self { store: StateStore::Memory(MemoryStore::new()), t0: whole_ms_now(), redis: None }
    }

    async fn redis() -> Self {
        let server = RedisServer::start();
        let store = RedisStore::connect(&server.url(), PREFIX).await.expect("connect to redis");
        Self { store: StateStore::Redis(store), t0: whole_ms_now(), redis: Some(server) }
    }

    /// `t0 + ms`.
    fn at(&self, ms: i64) -> OffsetDateTime {
        self.t0 + time::Duration::milliseconds(ms)
    }

    fn new_session(&self, n: u128, capacity: u32, own: &[&str]) -> NewSession {
        NewSession {
            session_id: sid(n),
            capacity,
            status: SessionStatus::Running,
            info: info("game", "eu-west-1"),
            players: ids(own),
            joined: Vec::new(),
            reservation_ttl: RESERVE,
            now: self.t0,
        }
    }

    /// Creates session `n` (running) with `capacity` seats and its own players reserved for 60 s.
    async fn create(&self, n: u128, capacity: u32, own: &[&str]) -> SessionSeats {
        self.store.create_session(&self.new_session(n, capacity, own), KEEP).await.unwrap().unwrap()
    }

    async fn get(&self, n: u128, at_ms: i64) -> SessionSeats {
        self.store.get_session(sid(n), self.at(at_ms)).await.unwrap().expect("the session exists")
    }

    async fn join(
        &self,
        n: u128,
        players: &[&str],
        at_ms: i64,
    ) -> Result<SeatChange<bridge::seats::Joined>, SeatError> {
        self.store.join_players(sid(n), &ids(players), self.at(at_ms)).await.unwrap()
    }

    async fn leave(
        &self,
        n: u128,
        players: &[&str],
        at_ms: i64,
    ) -> Result<SeatChange<bridge::seats::Left>, SeatError> {
        self.store.leave_players(sid(n), &ids(players), self.at(at_ms)).await.unwrap()
    }

    /// A join carrying `order` (as the NATS door passes a stream sequence).
    async fn join_ordered(
        &self,
        n: u128,
        players: &[&str],
        order: u64,
    ) -> Result<SeatChange<bridge::seats::Joined>, SeatError> {
        self.store.join_players_ordered(sid(n), &ids(players), Some(order), self.t0).await.unwrap()
    }

    async fn leave_ordered(
        &self,
        n: u128,
        players: &[&str],
        order: u64,
    ) -> Result<SeatChange<bridge::seats::Left>, SeatError> {
        self.store.leave_players_ordered(sid(n), &ids(players), Some(order), self.t0).await.unwrap()
    }

    async fn reserve(
        &self,
        n: u128,
        players: &[&str],
        ttl_ms: u64,
        at_ms: i64,
    ) -> Result<SeatChange<bridge::seats::Reserved>, SeatError> {
        let ttl = Duration::from_millis(ttl_ms);
        self.store.reserve_seats(sid(n), &ids(players), ttl, self.at(at_ms)).await.unwrap()
    }
}

fn whole_ms_now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    let ms = now.unix_timestamp_nanos() / 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).unwrap()
}

fn sid(n: u128) -> Uuid {
    Uuid::from_u128(0x5ea7_0000_0000_0000_0000_0000_0000_0000 + n)
}

fn info(image: &str, location: &str) -> SessionInfo {
    SessionInfo {
        image: image.to_owned(),
        version: Some("1.10".to_owned()),
        location: location.to_owned(),
        labels: BTreeMap::from([("mode".to_owned(), "ranked".to_owned())]),
        metadata: bridge::seats::JsonText::of(
            &serde_json::json!({"host": "203.0.113.7", "ports": [{"container": 7777, "host": 20001}]}),
        )
        .unwrap(),
    }
}

fn ids(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Every player holding a live reservation.
fn reserved_players(seats: &SessionSeats) -> BTreeSet<String> {
    seats.reservations.values().flat_map(|r| r.players.iter().cloned()).collect()
}

/// Runs each contract test against both stores.
macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Fixture::memory()).await;
                }
            )*
        }

        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Fixture::redis().await).await;
                }
            )*
        }
    };
}

contract_tests!(
    sessions_holding_finds_where_the_players_sit,
    recorded_sessions_give_status_and_joined_counts,
    long_listings_hold_every_live_session_once,
    mark_running_many_moves_only_created_sessions,
    create_records_the_session_with_its_own_players_reserved,
    create_refuses_duplicates_and_too_many_own_players,
    join_beyond_capacity_is_session_full_unless_reserved,
    join_and_leave_are_idempotent,
    reservations_expire_at_their_time,
    reserve_is_all_or_nothing,
    moving_a_player_never_shortens_their_hold,
    mark_running_and_listing_by_image,
    end_releases_everything_and_refuses_everything_after,
    an_ended_record_keeps_how_it_ended,
    an_owed_end_is_claimed_once_deferred_and_settled,
    an_owed_tombstone_is_kept_as_long_as_the_owing_says,
    unknown_sessions_are_not_found,
    reserve_best_takes_the_first_candidate_that_fits,
    awkward_player_ids_round_trip,
    racing_backfills_never_overbook,
    racing_joins_never_overbook,
    a_busy_session_outlives_its_keep_for_and_stays_listed,
    a_stale_ordered_leave_after_a_newer_join_is_skipped,
    a_redelivered_older_join_after_a_newer_leave_is_skipped,
    an_equal_order_is_a_duplicate_and_skipped,
    unordered_changes_always_apply_and_keep_the_orders,
    an_ordered_batch_is_all_or_nothing_for_its_current_players,
    orders_beyond_double_precision_compare_exactly,
    player_syncs_are_claimed_once_and_finished,
    a_player_sync_queued_again_during_its_claim_is_synced_after_it,
    a_failed_player_sync_comes_due_after_its_delay_with_attempts_counted,
    an_unfinished_player_sync_comes_due_when_its_claim_runs_out,
    racing_workers_never_claim_one_player_sync_twice,
    a_suspected_difference_never_cuts_a_retry_delay_short,
);

// ---------------------------------------------------------------------------------------------
// The contract
//
// The player-sync outbox (`PlayerSyncStore`) is part of it: sessions whose players changed,
// claimed by the workers that tell Gameye.

const LONG_LEASE: Duration = Duration::from_secs(60);

async fn claim_ids(fx: &Fixture, limit: usize, lease: Duration) -> Vec<PlayerSyncClaim> {
    fx.store.claim_player_syncs(limit, lease).await.unwrap()
}

fn claimed(claims: &[PlayerSyncClaim]) -> BTreeSet<Uuid> {
    claims.iter().map(|c| c.session_id).collect()
}

async fn queued(fx: &Fixture) -> u64 {
    fx.store.queued_player_syncs().await.unwrap()
}

async fn player_syncs_are_claimed_once_and_finished(fx: Fixture) {
    assert_eq!(queued(&fx).await, 0);
    for n in 1..=3 {
        fx.store.queue_player_sync(sid(n)).await.unwrap();
    }
    fx.store.queue_player_sync(sid(1)).await.unwrap();
    assert_eq!(queued(&fx).await, 3, "queueing twice is one entry");

    let first = claim_ids(&fx, 2, LONG_LEASE).await;
    assert_eq!(first.len(), 2, "the limit holds");
    assert!(first.iter().all(|c| c.attempts == 0));
    let second = claim_ids(&fx, 10, LONG_LEASE).await;
    assert_eq!(second.len(), 1, "claimed entries are not handed out again while leased");
    assert!(claimed(&first).is_disjoint(&claimed(&second)));
    assert_eq!(claimed(&first).union(&claimed(&second)).count(), 3);
    assert!(claim_ids(&fx, 10, LONG_LEASE).await.is_empty());

    for claim in first.iter().chain(&second) {
        fx.store.finish_player_sync(claim).await.unwrap();
    }
    assert_eq!(queued(&fx).await, 0);
    // Finishing again is harmless.
    fx.store.finish_player_sync(&first[0]).await.unwrap();
    assert_eq!(queued(&fx).await, 0);
}

async fn a_player_sync_queued_again_during_its_claim_is_synced_after_it(fx: Fixture) {
    fx.store.queue_player_sync(sid(1)).await.unwrap();
    let [first] = <[PlayerSyncClaim; 1]>::try_from(claim_ids(&fx, 10, LONG_LEASE).await).unwrap();
    // Players changed while the worker was syncing: its snapshot is stale, but nobody else may
    // sync the session beside it (the two could finish in either order).
    fx.store.queue_player_sync(sid(1)).await.unwrap();
    assert!(claim_ids(&fx, 10, LONG_LEASE).await.is_empty(), "one worker per session at a time");
    fx.store.finish_player_sync(&first).await.unwrap();
    assert_eq!(queued(&fx).await, 1, "the change made meanwhile is still to be synced");

    let [second] = <[PlayerSyncClaim; 1]>::try_from(claim_ids(&fx, 10, LONG_LEASE).await)
        .expect("due at once after the first sync ended");
    assert_eq!(second.session_id, sid(1));
    assert_ne!(second.token, first.token);
    // The first claim is over: it can neither finish nor delay the second.
    fx.store.finish_player_sync(&first).await.unwrap();
    fx.store.retry_player_sync(&first, LONG_LEASE).await.unwrap();
    assert_eq!(queued(&fx).await, 1);
    fx.store.finish_player_sync(&second).await.unwrap();
    assert_eq!(queued(&fx).await, 0);

    // The same when the sync in hand fails: the change is tried at once, not after the delay.
    fx.store.queue_player_sync(sid(1)).await.unwrap();
    let [failing] = <[PlayerSyncClaim; 1]>::try_from(claim_ids(&fx, 10, LONG_LEASE).await).unwrap();
    fx.store.queue_player_sync(sid(1)).await.unwrap();
    fx.store.retry_player_sync(&failing, LONG_LEASE).await.unwrap();
    let [next] = <[PlayerSyncClaim; 1]>::try_from(claim_ids(&fx, 10, LONG_LEASE).await).unwrap();
    assert_eq!(next.attempts, 1);
}

async fn a_failed_player_sync_comes_due_after_its_delay_with_attempts_counted(fx: Fixture) {
    fx.store.queue_player_sync(sid(1)).await.unwrap();
    for attempt in 0..2 {
        let [claim] =
            <[PlayerSyncClaim; 1]>::try_from(wait_for_claim(&fx, Duration::from_secs(5)).await).unwrap();
        assert_eq!(claim.attempts, attempt);
        fx.store.retry_player_sync(&claim, Duration::from_millis(300)).await.unwrap();
        assert!(claim_ids(&fx, 10, LONG_LEASE).await.is_empty(), "not due before its delay");
        assert_eq!(queued(&fx).await, 1);
    }
    tokio::time::sleep(Duration::from_millis(350)).await;
    let [claim] = <[PlayerSyncClaim; 1]>::try_from(claim_ids(&fx, 10, LONG_LEASE).await).unwrap();
    assert_eq!(claim.attempts, 2);
    fx.store.finish_player_sync(&claim).await.unwrap();
    // A new change starts counting from zero.
    fx.store.queue_player_sync(sid(1)).await.unwrap();
    let [claim] = <[PlayerSyncClaim; 1]>::try_from(claim_ids(&fx, 10, LONG_LEASE).await).unwrap();
    assert_eq!(claim.attempts, 0);
}

/// Claims until something is due (retry delays run on the store's clock).
async fn wait_for_claim(fx: &Fixture, within: Duration) -> Vec<PlayerSyncClaim> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let claims = claim_ids(fx, 10, LONG_LEASE).await;
        if !claims.is_empty() || std::time::Instant::now() > deadline {
            return claims;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn an_unfinished_player_sync_comes_due_when_its_claim_runs_out(fx: Fixture) {
    fx.store.queue_player_sync(sid(1)).await.unwrap();
    let [crashed] =
        <[PlayerSyncClaim; 1]>::try_from(claim_ids(&fx, 10, Duration::from_millis(200)).await).unwrap();
    assert!(claim_ids(&fx, 10, LONG_LEASE).await.is_empty());
    tokio::time::sleep(Duration::from_millis(250)).await;
    let [taken_over] = <[PlayerSyncClaim; 1]>::try_from(claim_ids(&fx, 10, LONG_LEASE).await).unwrap();
    assert_eq!(taken_over.session_id, sid(1));
    // The first worker wakes up late: its claim no longer counts.
    fx.store.finish_player_sync(&crashed).await.unwrap();
    assert_eq!(queued(&fx).await, 1);
    fx.store.finish_player_sync(&taken_over).await.unwrap();
    assert_eq!(queued(&fx).await, 0);
}

async fn a_suspected_difference_never_cuts_a_retry_delay_short(fx: Fixture) {
    fx.store.queue_player_sync_if_absent(sid(1)).await.unwrap();
    let [claim] = <[PlayerSyncClaim; 1]>::try_from(claim_ids(&fx, 10, LONG_LEASE).await).unwrap();
    // Claimed: the suspicion does not mark it changed.
    fx.store.queue_player_sync_if_absent(sid(1)).await.unwrap();
    fx.store.retry_player_sync(&claim, LONG_LEASE).await.unwrap();
    // Backing off: the suspicion leaves the delay alone (a real change would not).
    fx.store.queue_player_sync_if_absent(sid(1)).await.unwrap();
    assert!(claim_ids(&fx, 10, LONG_LEASE).await.is_empty());
    assert_eq!(queued(&fx).await, 1);
    fx.store.queue_player_sync(sid(1)).await.unwrap();
    assert_eq!(claim_ids(&fx, 10, LONG_LEASE).await.len(), 1);
}

async fn racing_workers_never_claim_one_player_sync_twice(fx: Fixture) {
    for n in 0..40 {
        fx.store.queue_player_sync(sid(n)).await.unwrap();
    }
    let store = std::sync::Arc::new(fx.store.clone());
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let claims = store.claim_player_syncs(3, LONG_LEASE).await.unwrap();
                    if claims.is_empty() {
                        return mine;
                    }
                    mine.extend(claims.into_iter().map(|c| c.session_id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    let distinct: BTreeSet<Uuid> = all.iter().copied().collect();
    assert_eq!(all.len(), 40, "every session claimed exactly once");
    assert_eq!(distinct.len(), 40);
}

const NOWHERE: [Uuid; 0] = [];

/// The sessions in which any of the players is joined or holds a live reservation, by id.
async fn holding(fx: &Fixture, players: &[&str], at_ms: i64) -> Vec<Uuid> {
    let sessions = fx.store.sessions_holding(&set(players), fx.at(at_ms)).await.unwrap();
    sessions.iter().map(|s| s.session_id).collect()
}

async fn sessions_holding_finds_where_the_players_sit(fx: Fixture) {
    fx.create(1, 4, &["a", "b"]).await;
    fx.create(2, 4, &[]).await;
    fx.create(3, 4, &["c"]).await;
    fx.create(4, 4, &[]).await;
    fx.join(2, &["a", "d"], 0).await.unwrap();
    fx.reserve(3, &["e"], 120_000, 0).await.unwrap();
    assert_eq!(holding(&fx, &["a"], 0).await, [sid(1), sid(2)], "reserved in one, joined in another");
    assert_eq!(holding(&fx, &["e", "d", "c"], 0).await, [sid(2), sid(3)]);
    assert_eq!(holding(&fx, &["nobody"], 0).await, NOWHERE);
    assert_eq!(holding(&fx, &[], 0).await, NOWHERE);
    let found = fx.store.sessions_holding(&set(&["d"]), fx.t0).await.unwrap();
    assert_eq!(found, [fx.get(2, 0).await], "whole sessions, as a read gives them");

    // A reservation that ran out is no seat.
    assert_eq!(holding(&fx, &["b"], 60_000).await, NOWHERE);
    assert_eq!(holding(&fx, &["e"], 60_000).await, [sid(3)]);
    // Nor is a seat left, or a session ended; and asking again finds the same.
    fx.leave(2, &["a"], 0).await.unwrap();
    assert_eq!(holding(&fx, &["a"], 0).await, [sid(1)]);
    fx.store.end_session(sid(1), GONE, fx.t0).await.unwrap().unwrap();
    assert_eq!(holding(&fx, &["a"], 0).await, NOWHERE);
    assert_eq!(holding(&fx, &["a"], 0).await, NOWHERE);
    // Joining again finds the player again.
    fx.join(4, &["a"], 0).await.unwrap();
    fx.join(2, &["a"], 0).await.unwrap();
    assert_eq!(holding(&fx, &["a"], 0).await, [sid(2), sid(4)]);
}

async fn create_records_the_session_with_its_own_players_reserved(fx: Fixture) {
    let created = fx.create(1, 4, &["a", "b", "a"]).await;
    assert_eq!(created.session_id, sid(1));
    assert_eq!((created.capacity, created.status), (4, SessionStatus::Running));
    assert_eq!(created.info, info("game", "eu-west-1"), "info and metadata are kept as given");
    assert!(created.joined.is_empty());
    assert_eq!(created.reservations.len(), 1);
    let reservation = created.reservations.values().next().unwrap();
    assert_eq!(reservation.players, set(&["a", "b"]));
    assert_eq!(reservation.expires_at, fx.at(60_000));
    assert_eq!(created.open_seats(fx.t0), 2);
    assert_eq!(fx.get(1, 0).await, created, "get returns what create made");

    // Without own players there is no reservation.
    let empty = fx.create(2, 3, &[]).await;
    assert!(empty.reservations.is_empty());
    assert_eq!(empty.open_seats(fx.t0), 3);
}

async fn create_refuses_duplicates_and_too_many_own_players(fx: Fixture) {
    let created = fx.create(1, 2, &["a"]).await;
    let mut again = fx.new_session(1, 10, &["x", "y"]);
    again.info.image = "other".to_owned();
    let answer = fx.store.create_session(&again, KEEP).await.unwrap();
    assert_eq!(answer, Err(SeatError::AlreadyExists));
    assert_eq!(fx.get(1, 0).await, created, "a second create changes nothing");
    if let Some(redis) = &fx.redis {
        let keys = keys_and_ttls(&redis.url()).await;
        assert!(!keys.keys().any(|key| key.contains("seats-new")), "no staged record is left: {keys:?}");
    }

    let answer = fx.store.create_session(&fx.new_session(2, 1, &["a", "b"]), KEEP).await.unwrap();
    assert_eq!(answer, Err(SeatError::SessionFull { capacity: 1, open: 1, needed: 2 }));
    assert_eq!(fx.store.get_session(sid(2), fx.t0).await.unwrap(), None, "nothing was recorded");

    let keep_zero = fx.store.create_session(&fx.new_session(3, 1, &[]), Duration::ZERO).await;
    assert!(keep_zero.is_err_and(|e| !e.transient));
}

async fn join_beyond_capacity_is_session_full_unless_reserved(fx: Fixture) {
    fx.create(1, 3, &["a"]).await;
    let joined = fx.join(1, &["x", "y"], 10).await.unwrap();
    assert_eq!(joined.outcome.joined, set(&["x", "y"]));
    assert!(joined.outcome.from_reservations.is_empty());
    assert_eq!(joined.session.open_seats(fx.at(10)), 0, "a's reserved seat is not free");
    let before = fx.get(1, 20).await;
    assert_eq!(
        fx.join(1, &["z"], 20).await.unwrap_err(),
        SeatError::SessionFull { capacity: 3, open: 0, needed: 1 }
    );
    // The whole batch or nothing: a (reserved) with z (not) fails and a is not joined either.
    assert_eq!(
        fx.join(1, &["a", "z"], 20).await.unwrap_err(),
        SeatError::SessionFull { capacity: 3, open: 0, needed: 1 }
    );
    assert_eq!(fx.get(1, 20).await, before, "a refused join changes nothing");
    // The reserved player joins into their seat.
    let joined = fx.join(1, &["a"], 30).await.unwrap();
    assert_eq!(joined.outcome.joined, set(&["a"]));
    assert_eq!(joined.outcome.from_reservations, set(&["a"]));
    assert_eq!(joined.session.joined, set(&["a", "x", "y"]));
    assert!(joined.session.reservations.is_empty(), "the consumed reservation is gone");
    assert_eq!(fx.get(1, 40).await, joined.session);
}

async fn join_and_leave_are_idempotent(fx: Fixture) {
    fx.create(1, 3, &["r"]).await;
    let first = fx.join(1, &["x", "x"], 0).await.unwrap();
    assert_eq!(first.outcome.joined, set(&["x"]));
    let second = fx.join(1, &["x"], 0).await.unwrap();
    assert!(second.outcome.joined.is_empty());
    assert_eq!(second.outcome.already_joined, set(&["x"]));
    assert_eq!(second.session, first.session, "joining twice is one player");
    assert_eq!(second.session.open_seats(fx.t0), 1);

    let left = fx.leave(1, &["x", "nobody"], 0).await.unwrap();
    assert_eq!(left.outcome.left, set(&["x"]));
    assert!(left.outcome.released.is_empty());
    let again = fx.leave(1, &["x"], 0).await.unwrap();
    assert!(again.outcome.left.is_empty() && again.outcome.released.is_empty());
    assert_eq!(again.session, left.session);
    assert_eq!(again.session.open_seats(fx.t0), 2);

    // Leaving releases a reserved seat too.
    let released = fx.leave(1, &["r"], 0).await.unwrap();
    assert_eq!(released.outcome.released, set(&["r"]));
    assert!(released.session.reservations.is_empty());
    assert_eq!(released.session.open_seats(fx.t0), 3);
    assert_eq!(fx.get(1, 0).await, released.session);
}

async fn reservations_expire_at_their_time(fx: Fixture) {
    fx.create(1, 3, &["own"]).await; // own: 60 s
    fx.join(1, &["x"], 0).await.unwrap();
    let reserved = fx.reserve(1, &["p"], 1_000, 0).await.unwrap();
    assert_eq!(reserved.outcome.expires_at, fx.at(1_000));
    assert_eq!(reserved.outcome.players, set(&["p"]));
    assert_eq!(reserved.session.open_seats(fx.t0), 0);

    // Full until the reservation expires.
    assert!(matches!(fx.join(1, &["q"], 999).await, Err(SeatError::SessionFull { .. })));
    assert_eq!(fx.get(1, 999).await.reservations.len(), 2);
    let at_expiry = fx.get(1, 1_000).await;
    assert_eq!(reserved_players(&at_expiry), set(&["own"]), "expired reservations are left out");
    assert_eq!(at_expiry.open_seats(fx.at(1_000)), 1);

    // A reserved player joins before expiry; after it, p needs a free seat like anyone else.
    let joined = fx.join(1, &["q"], 1_000).await.unwrap();
    assert_eq!(joined.outcome.from_reservations, BTreeSet::new());
    assert_eq!(
        fx.join(1, &["p"], 1_001).await.unwrap_err(),
        SeatError::SessionFull { capacity: 3, open: 0, needed: 1 }
    );
    fx.join(1, &["own"], 59_999).await.unwrap();

    // expire_reservations reports exactly the expired ones.
    fx.leave(1, &["q", "own", "x"], 60_000).await.unwrap();
    let short = fx.reserve(1, &["s1", "s2"], 500, 60_000).await.unwrap().outcome;
    let long = fx.reserve(1, &["l"], 5_000, 60_000).await.unwrap().outcome;
    let expired = fx.store.expire_reservations(sid(1), fx.at(60_500)).await.unwrap().unwrap();
    assert_eq!(expired.outcome.len(), 1);
    assert_eq!(expired.outcome[0].reservation_id, short.reservation_id);
    assert_eq!(expired.outcome[0].reservation.players, set(&["s1", "s2"]));
    assert_eq!(expired.outcome[0].reservation.expires_at, fx.at(60_500));
    assert_eq!(expired.session.reservations.keys().copied().collect::<Vec<_>>(), [long.reservation_id]);
    let again = fx.store.expire_reservations(sid(1), fx.at(60_500)).await.unwrap().unwrap();
    assert!(again.outcome.is_empty(), "expired once");
    // Ended sessions refuse.
    fx.store.end_session(sid(1), GONE, fx.at(61_000)).await.unwrap().unwrap();
    assert_eq!(
        fx.store.expire_reservations(sid(1), fx.at(61_000)).await.unwrap().unwrap_err(),
        SeatError::Ended
    );
}

/// A backfill naming a player who holds a longer reservation (a match's own players hold theirs
/// for 60 s here) moves them without cutting their hold short; with a shorter old hold the new
/// TTL stands.
async fn moving_a_player_never_shortens_their_hold(fx: Fixture) {
    fx.create(1, 4, &["own"]).await; // own: 60 s
    let moved = fx.reserve(1, &["own", "friend"], 10_000, 1_000).await.unwrap().outcome;
    assert_eq!(moved.moved, set(&["own"]));
    assert_eq!(moved.expires_at, fx.at(60_000), "the match's hold is kept");
    let later = fx.get(1, 30_000).await;
    assert_eq!(reserved_players(&later), set(&["own", "friend"]), "still held after the new TTL");
    assert_eq!(later.reservations[&moved.reservation_id].expires_at, fx.at(60_000));
    assert!(reserved_players(&fx.get(1, 60_000).await).is_empty());

    // A longer new hold wins over a shorter old one.
    let short = fx.reserve(1, &["p"], 1_000, 60_000).await.unwrap().outcome;
    let long = fx.reserve(1, &["p"], 30_000, 60_500).await.unwrap().outcome;
    assert_eq!(short.expires_at, fx.at(61_000));
    assert_eq!(long.expires_at, fx.at(90_500));
}

async fn reserve_is_all_or_nothing(fx: Fixture) {
    fx.create(1, 4, &["a", "b"]).await;
    fx.join(1, &["b"], 0).await.unwrap();
    let before = fx.get(1, 0).await;
    assert_eq!(
        fx.reserve(1, &["c", "d", "e"], 10_000, 0).await.unwrap_err(),
        SeatError::NoSeats { open: 2, needed: 3 }
    );
    assert_eq!(
        fx.reserve(1, &["b", "c"], 10_000, 0).await.unwrap_err(),
        SeatError::AlreadyJoined { players: set(&["b"]) }
    );
    assert_eq!(fx.reserve(1, &[], 10_000, 0).await.unwrap_err(), SeatError::NoPlayers);
    assert_eq!(fx.get(1, 0).await, before, "refused reservations change nothing");

    // a moves from the placement reservation into the new one; c takes the last seat.
    let reserved = fx.reserve(1, &["a", "c", "c"], 10_000, 0).await.unwrap();
    assert_eq!(reserved.outcome.players, set(&["a", "c"]));
    assert_eq!(reserved.outcome.moved, set(&["a"]));
    let session = reserved.session;
    assert_eq!(session.reservations.len(), 1, "the emptied placement reservation is gone");
    assert_eq!(session.reservations[&reserved.outcome.reservation_id].players, set(&["a", "c"]));
    assert_eq!(session.open_seats(fx.t0), 1);
    assert_eq!(fx.get(1, 0).await, session);
    // The last seat.
    fx.reserve(1, &["d"], 10_000, 0).await.unwrap();
    assert_eq!(
        fx.reserve(1, &["e"], 10_000, 0).await.unwrap_err(),
        SeatError::NoSeats { open: 0, needed: 1 }
    );
}

async fn mark_running_and_listing_by_image(fx: Fixture) {
    let mut new = fx.new_session(1, 4, &[]);
    new.status = SessionStatus::Created;
    assert_eq!(fx.store.create_session(&new, KEEP).await.unwrap().unwrap().status, SessionStatus::Created);
    let mut other = fx.new_session(2, 4, &[]);
    other.info.image = "other".to_owned();
    fx.store.create_session(&other, KEEP).await.unwrap().unwrap();
    fx.create(3, 2, &["a"]).await;

    let running = fx.store.mark_running(sid(1), fx.t0).await.unwrap().unwrap();
    assert_eq!(running.status, SessionStatus::Running);
    assert_eq!(fx.store.mark_running(sid(1), fx.t0).await.unwrap().unwrap(), running, "idempotent");
    assert_eq!(fx.get(1, 0).await.status, SessionStatus::Running);

    let listed = |sessions: Vec<SessionSeats>| sessions.iter().map(|s| s.session_id).collect::<Vec<_>>();
    let game = fx.store.list_sessions(Some("game"), fx.t0).await.unwrap();
    assert_eq!(listed(game.clone()), [sid(1), sid(3)]);
    assert_eq!(game[1], fx.get(3, 0).await);
    assert_eq!(listed(fx.store.list_sessions(Some("other"), fx.t0).await.unwrap()), [sid(2)]);
    assert_eq!(listed(fx.store.list_sessions(None, fx.t0).await.unwrap()), [sid(1), sid(2), sid(3)]);
    assert!(fx.store.list_sessions(Some("nothing"), fx.t0).await.unwrap().is_empty());
    // Listed at `now`: the expired reservation is left out.
    let later = fx.store.list_sessions(Some("game"), fx.at(60_000)).await.unwrap();
    assert!(later[1].reservations.is_empty());

    // A page at a time, in id order: `next` only while sessions follow.
    let page = fx.store.list_sessions_after(None, None, 2, fx.t0).await.unwrap();
    assert_eq!((listed(page.sessions), page.next), (vec![sid(1), sid(2)], Some(sid(2))));
    let page = fx.store.list_sessions_after(None, Some(sid(2)), 2, fx.t0).await.unwrap();
    assert_eq!((listed(page.sessions), page.next), (vec![sid(3)], None));
    let page = fx.store.list_sessions_after(Some("game"), Some(sid(1)), 5, fx.t0).await.unwrap();
    assert_eq!((listed(page.sessions), page.next), (vec![sid(3)], None));
    let page = fx.store.list_sessions_after(Some("game"), None, 5, fx.at(60_000)).await.unwrap();
    assert!(page.sessions[1].reservations.is_empty(), "listed at `now`");
    // An ended session is not listed, and is not a page's end.
    fx.store.end_session(sid(1), GONE, fx.t0).await.unwrap().unwrap();
    let page = fx.store.list_sessions_after(None, None, 1, fx.t0).await.unwrap();
    assert_eq!((listed(page.sessions), page.next), (vec![sid(2)], Some(sid(2))));
}

/// More sessions than one index scan page and one record round trip hold (Redis reads both in
/// pages), some ended and some marked running in bulk: every live one listed exactly once.
async fn long_listings_hold_every_live_session_once(fx: Fixture) {
    const SESSIONS: u128 = 1_300;
    let store = &fx.store;
    let creates = (1..=SESSIONS).map(|n| {
        let mut new = fx.new_session(n, 4, &[]);
        new.status = SessionStatus::Created;
        async move { store.create_session(&new, KEEP).await.unwrap().unwrap() }
    });
    futures::future::join_all(creates).await;
    for n in (7..=SESSIONS).step_by(100) {
        fx.store.end_session(sid(n), GONE, fx.t0).await.unwrap().unwrap();
    }
    let all: Vec<Uuid> = (1..=SESSIONS).map(sid).collect();
    let marked = fx.store.mark_running_many(&all, fx.t0).await.unwrap();
    assert_eq!(marked.len(), SESSIONS as usize - 13, "every live one, across chunks");

    let listed = fx.store.list_sessions(None, fx.t0).await.unwrap();
    let ids: Vec<Uuid> = listed.iter().map(|s| s.session_id).collect();
    let expected: Vec<Uuid> = (1..=SESSIONS).filter(|n| n % 100 != 7).map(sid).collect();
    assert_eq!(ids, expected, "each live session once, in id order");
    let recorded: Vec<Uuid> =
        fx.store.recorded_sessions(fx.t0).await.unwrap().iter().map(|s| s.session_id).collect();
    assert_eq!(recorded, expected, "the reconciler's view too");

    // Page by page (how the reconciler paces its read): together, every live session.
    let (mut paged, mut pages, mut cursor) = (Vec::new(), 0, 0);
    loop {
        let page = fx.store.recorded_sessions_page(cursor, fx.t0).await.unwrap();
        pages += 1;
        paged.extend(page.sessions.iter().map(|s| s.session_id));
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    paged.sort();
    paged.dedup();
    assert_eq!(paged, expected, "the pages together hold each live session");
    if fx.redis.is_some() {
        assert!(pages > 1, "Redis reads an index this long in more than one page");
    }
    assert!(listed.iter().all(|s| s.status == SessionStatus::Running));
    assert_eq!(fx.store.list_sessions(Some("game"), fx.t0).await.unwrap().len(), expected.len());
}

/// The reconciler's view: every live session with its status, how many joined (reserved seats
/// and ended sessions left out) and when it was recorded (the creating call's `now`), in session
/// id order.
async fn recorded_sessions_give_status_and_joined_counts(fx: Fixture) {
    let mut created = fx.new_session(1, 4, &[]);
    created.status = SessionStatus::Created;
    created.now = fx.at(5);
    fx.store.create_session(&created, KEEP).await.unwrap().unwrap();
    fx.create(2, 8, &["own"]).await;
    fx.join(2, &["a", "b", "j:c"], 0).await.unwrap();
    fx.reserve(2, &["r"], 10_000, 0).await.unwrap();
    fx.create(3, 4, &[]).await;
    fx.store.end_session(sid(3), GONE, fx.t0).await.unwrap().unwrap();
    fx.create(4, 4, &[]).await;
    fx.join(4, &["x"], 0).await.unwrap();
    fx.leave(4, &["x"], 0).await.unwrap();

    let recorded = fx.store.recorded_sessions(fx.t0).await.unwrap();
    let expected = [
        RecordedSession {
            session_id: sid(1),
            status: SessionStatus::Created,
            joined: 0,
            recorded_at: fx.at(5),
        },
        RecordedSession { session_id: sid(2), status: SessionStatus::Running, joined: 3, recorded_at: fx.t0 },
        RecordedSession { session_id: sid(4), status: SessionStatus::Running, joined: 0, recorded_at: fx.t0 },
    ];
    assert_eq!(recorded, expected);
    // The same sessions list_sessions gives, with the same counts.
    let listed = fx.store.list_sessions(None, fx.t0).await.unwrap();
    let from_listing: Vec<(Uuid, SessionStatus, usize)> =
        listed.iter().map(|s| (s.session_id, s.status, s.joined.len())).collect();
    let expected: Vec<(Uuid, SessionStatus, usize)> =
        expected.iter().map(|r| (r.session_id, r.status, r.joined)).collect();
    assert_eq!(from_listing, expected);
}

async fn mark_running_many_moves_only_created_sessions(fx: Fixture) {
    for n in [1, 2, 4] {
        let mut new = fx.new_session(n, 4, &[]);
        new.status = SessionStatus::Created;
        fx.store.create_session(&new, KEEP).await.unwrap().unwrap();
    }
    fx.create(3, 4, &["a"]).await; // running already
    fx.store.end_session(sid(2), GONE, fx.t0).await.unwrap().unwrap();
    let before_3 = fx.get(3, 0).await;

    let asked = [sid(1), sid(2), sid(3), sid(9), sid(4)];
    let marked = fx.store.mark_running_many(&asked, fx.t0).await.unwrap();
    assert_eq!(marked, [sid(1), sid(4)], "only the created ones, in the order asked");
    assert_eq!(fx.get(1, 0).await.status, SessionStatus::Running);
    assert_eq!(fx.get(4, 0).await.status, SessionStatus::Running);
    assert_eq!(fx.get(2, 0).await.status, SessionStatus::Ended, "an ended session stays ended");
    assert_eq!(fx.get(3, 0).await, before_3, "a running session is untouched");
    assert_eq!(fx.store.get_session(sid(9), fx.t0).await.unwrap(), None, "nothing created");
    assert!(fx.store.mark_running_many(&asked, fx.t0).await.unwrap().is_empty(), "idempotent");
    assert!(fx.store.mark_running_many(&[], fx.t0).await.unwrap().is_empty());
    // The records still serve every operation.
    fx.join(1, &["x"], 0).await.unwrap();
    assert_eq!(fx.get(1, 0).await.joined, set(&["x"]));
}

async fn end_releases_everything_and_refuses_everything_after(fx: Fixture) {
    fx.create(1, 5, &["own"]).await;
    fx.create(2, 4, &[]).await;
    fx.join(1, &["x", "y"], 0).await.unwrap();
    let reserved = fx.reserve(1, &["r"], 10_000, 0).await.unwrap().outcome;
    let short = fx.reserve(1, &["gone"], 100, 0).await.unwrap().outcome;
    let own = fx
        .get(1, 0)
        .await
        .reservations
        .into_keys()
        .find(|id| *id != reserved.reservation_id && *id != short.reservation_id)
        .unwrap();

    let ended = fx.store.end_session(sid(1), GONE, fx.at(1_000)).await.unwrap().unwrap();
    assert_eq!(ended.outcome.players, set(&["x", "y"]));
    assert_eq!(ended.outcome.reservations, BTreeSet::from([reserved.reservation_id, own]), "only live ones");
    assert_eq!(ended.session.status, SessionStatus::Ended);
    assert!(ended.session.joined.is_empty() && ended.session.reservations.is_empty());
    assert_eq!(ended.session.open_seats(fx.at(1_000)), 0);

    let stored = fx.get(1, 1_000).await;
    assert_eq!(stored.status, SessionStatus::Ended);
    assert!(stored.joined.is_empty() && stored.reservations.is_empty());
    let all = fx.store.list_sessions(None, fx.at(1_000)).await.unwrap();
    assert_eq!(all.iter().map(|s| s.session_id).collect::<Vec<_>>(), [sid(2)], "no longer listed");
    assert!(
        fx.store
            .list_sessions(Some("game"), fx.at(1_000))
            .await
            .unwrap()
            .iter()
            .all(|s| s.session_id != sid(1))
    );

    let now = fx.at(2_000);
    assert_eq!(fx.join(1, &["x"], 2_000).await.unwrap_err(), SeatError::Ended);
    assert_eq!(fx.leave(1, &["x"], 2_000).await.unwrap_err(), SeatError::Ended);
    assert_eq!(fx.reserve(1, &["z"], 1_000, 2_000).await.unwrap_err(), SeatError::Ended);
    assert_eq!(fx.store.mark_running(sid(1), now).await.unwrap().unwrap_err(), SeatError::Ended);
    assert_eq!(fx.store.end_session(sid(1), GONE, now).await.unwrap().unwrap_err(), SeatError::Ended);
    let reborn = fx.store.create_session(&fx.new_session(1, 4, &[]), KEEP).await.unwrap();
    assert_eq!(reborn, Err(SeatError::Ended), "an ended session cannot be created again");
    let best = fx.store.reserve_best(&[sid(1)], &ids(&["z"]), RESERVE, now).await.unwrap();
    assert_eq!(best, None);
    assert_eq!(fx.get(1, 2_000).await, stored, "nothing changed");
    // The other session is untouched.
    fx.join(2, &["x"], 2_000).await.unwrap();
}

async fn unknown_sessions_are_not_found(fx: Fixture) {
    fx.create(1, 4, &[]).await;
    let now = fx.t0;
    assert_eq!(fx.store.get_session(sid(9), now).await.unwrap(), None);
    assert_eq!(fx.join(9, &["x"], 0).await.unwrap_err(), SeatError::NotFound);
    assert_eq!(fx.leave(9, &["x"], 0).await.unwrap_err(), SeatError::NotFound);
    assert_eq!(fx.reserve(9, &["x"], 1_000, 0).await.unwrap_err(), SeatError::NotFound);
    assert_eq!(fx.store.mark_running(sid(9), now).await.unwrap().unwrap_err(), SeatError::NotFound);
    assert_eq!(fx.store.expire_reservations(sid(9), now).await.unwrap().unwrap_err(), SeatError::NotFound);
    assert_eq!(fx.store.end_session(sid(9), GONE, now).await.unwrap().unwrap_err(), SeatError::NotFound);
    assert_eq!(fx.store.get_session(sid(9), now).await.unwrap(), None, "nothing was created");
    assert_eq!(fx.store.list_sessions(None, now).await.unwrap().len(), 1);

    // Records expire after keep_for without changes.
    let short = Duration::from_millis(300);
    fx.store.create_session(&fx.new_session(5, 4, &["a"]), short).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    fx.join(5, &["a"], 0).await.unwrap(); // a change refreshes the time to live
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(fx.store.get_session(sid(5), now).await.unwrap().is_some(), "refreshed by the join");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(fx.store.get_session(sid(5), now).await.unwrap(), None, "expired");
    assert_eq!(fx.join(5, &["b"], 0).await.unwrap_err(), SeatError::NotFound);
    let listed = fx.store.list_sessions(None, now).await.unwrap();
    assert_eq!(listed.iter().map(|s| s.session_id).collect::<Vec<_>>(), [sid(1)]);
}

async fn reserve_best_takes_the_first_candidate_that_fits(fx: Fixture) {
    fx.create(1, 2, &["a", "b"]).await; // full
    fx.create(2, 4, &[]).await;
    fx.store.end_session(sid(2), GONE, fx.t0).await.unwrap().unwrap(); // ended
    fx.create(3, 4, &["x"]).await; // x is reserved here: moves
    fx.create(4, 4, &[]).await;
    fx.join(4, &["y"], 0).await.unwrap(); // y joined here: refused
    fx.create(5, 4, &[]).await;

    let candidates = [sid(9), sid(1), sid(2), sid(4), sid(3), sid(5)];
    let players = ids(&["x", "y"]);
    let best = fx.store.reserve_best(&candidates, &players, RESERVE, fx.t0).await.unwrap().unwrap();
    assert_eq!(best.session.session_id, sid(3), "unknown, full, ended and already-joined skipped");
    assert_eq!(best.outcome.players, set(&["x", "y"]));
    assert_eq!(best.outcome.moved, set(&["x"]));
    assert_eq!(best.outcome.expires_at, fx.at(60_000));
    assert_eq!(best.session, fx.get(3, 0).await);
    for n in [1, 4, 5] {
        assert!(!reserved_players(&fx.get(n, 0).await).contains("y"), "only one session reserved");
    }

    let nobody_fits = ids(&["p", "q", "r", "s", "t"]);
    assert_eq!(fx.store.reserve_best(&candidates, &nobody_fits, RESERVE, fx.t0).await.unwrap(), None);
    assert_eq!(fx.store.reserve_best(&[], &players, RESERVE, fx.t0).await.unwrap(), None);
}

async fn awkward_player_ids_round_trip(fx: Fixture) {
    let players = ["j:x", "r:1|2", "", "\"quoted\"", "a/b\\c", "ünïcødé 🎮", "{tag}", "1e3", "%"];
    fx.create(1, 20, &players[..3]).await;
    let reserved = fx.reserve(1, &players[3..6], 10_000, 0).await.unwrap();
    assert_eq!(reserved.outcome.players, set(&players[3..6]));
    let joined = fx.join(1, &players, 0).await.unwrap();
    assert_eq!(joined.outcome.joined, set(&players));
    assert_eq!(joined.outcome.from_reservations, set(&players[..6]));
    let stored = fx.get(1, 0).await;
    assert_eq!(stored.joined, set(&players));
    assert!(stored.reservations.is_empty());
    assert_eq!(stored.open_seats(fx.t0), 20 - players.len() as u32);
    let left = fx.leave(1, &players[..4], 0).await.unwrap();
    assert_eq!(left.outcome.left, set(&players[..4]));
    assert_eq!(fx.get(1, 0).await.joined, set(&players[4..]));
}

/// 200 backfill requests (one player each) race for 50 seats across 10 sessions of 5 seats:
/// exactly 50 are granted, and no session holds more than its capacity.
async fn racing_backfills_never_overbook(fx: Fixture) {
    for n in 0..10 {
        fx.create(n, 5, &[]).await;
    }
    let now = fx.at(1);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = fx.store.clone();
            tokio::spawn(async move {
                let player = BackfillPlayer {
                    id: format!("p{i}"),
                    latencies: BTreeMap::from([("eu-west-1".to_owned(), 20 + (i % 7))]),
                };
                let sessions = store.list_sessions(Some("game"), now).await.unwrap();
                let candidates: Vec<_> = sessions.iter().map(|s| s.backfill_candidate(now)).collect();
                let labels = BTreeMap::new();
                let query = BackfillQuery {
                    image: "game",
                    version: None,
                    labels: &labels,
                    locations: None,
                    players: std::slice::from_ref(&player),
                    latency_cap_ms: 100,
                };
                let mut ranked: Vec<Uuid> =
                    choose_backfill(&query, &candidates).iter().map(|r| r.session_id).collect();
                // Spread the starting point so requests collide on every session.
                let len = ranked.len();
                if len > 0 {
                    ranked.rotate_left(i as usize % len);
                }
                let granted = store
                    .reserve_best(&ranked, std::slice::from_ref(&player.id), RESERVE, now)
                    .await
                    .unwrap();
                granted.map(|g| (player.id.clone(), g.session.session_id, g.outcome.reservation_id))
            })
        })
        .collect();
    let outcomes = futures::future::try_join_all(tasks).await.unwrap();
    let granted: Vec<_> = outcomes.into_iter().flatten().collect();
    assert_eq!(granted.len(), 50, "exactly 50 seats granted");
    let distinct: BTreeSet<&String> = granted.iter().map(|(p, _, _)| p).collect();
    assert_eq!(distinct.len(), 50, "each to a different player");
    let mut total = 0;
    for n in 0..10 {
        let seats = fx.get(n, 1).await;
        let holders = reserved_players(&seats);
        assert_eq!(holders.len(), 5, "session {n} is exactly full, not overbooked: {seats:?}");
        assert_eq!(seats.open_seats(now), 0);
        let expected: BTreeSet<String> =
            granted.iter().filter(|(_, s, _)| *s == sid(n)).map(|(p, _, _)| p.clone()).collect();
        assert_eq!(holders, expected, "session {n} holds exactly the players granted there");
        for (_, session, reservation) in granted.iter().filter(|(_, s, _)| *s == sid(n)) {
            assert!(seats.reservations.contains_key(reservation), "{session}: {reservation} recorded");
        }
        total += holders.len();
    }
    assert_eq!(total, 50);
    // No candidate left: a new request finds nothing.
    let all: Vec<Uuid> = (0..10).map(sid).collect();
    assert_eq!(fx.store.reserve_best(&all, &ids(&["late"]), RESERVE, now).await.unwrap(), None);
}

/// 100 players race to join a session with 5 seats, 2 of them reserved for players who join in the
/// same race: the reserved players always get in, and exactly 3 others.
async fn racing_joins_never_overbook(fx: Fixture) {
    fx.create(1, 5, &["own-1", "own-2"]).await;
    let mut players: Vec<String> = (0..98).map(|i| format!("j{i}")).collect();
    players.insert(37, "own-1".to_owned());
    players.insert(71, "own-2".to_owned());
    let now = fx.at(5);
    let tasks: Vec<_> = players
        .into_iter()
        .map(|player| {
            let store = fx.store.clone();
            tokio::spawn(async move {
                let answer = store.join_players(sid(1), std::slice::from_ref(&player), now).await.unwrap();
                (player, answer.is_ok())
            })
        })
        .collect();
    let outcomes = futures::future::try_join_all(tasks).await.unwrap();
    let joined: BTreeSet<String> = outcomes.iter().filter(|(_, ok)| *ok).map(|(p, _)| p.clone()).collect();
    assert_eq!(joined.len(), 5, "{joined:?}");
    assert!(joined.contains("own-1") && joined.contains("own-2"), "reserved players always get in");
    let seats = fx.get(1, 5).await;
    assert_eq!(seats.joined, joined);
    assert!(seats.reservations.is_empty());
}

/// Every change refreshes the record's time to live, and the session stays listed (in Redis: the
/// indexes are refreshed as the record outlives them).
async fn a_busy_session_outlives_its_keep_for_and_stays_listed(fx: Fixture) {
    let keep = Duration::from_millis(400);
    fx.store.create_session(&fx.new_session(1, 4, &[]), keep).await.unwrap().unwrap();
    for round in 0..8 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let player = format!("p{round}");
        fx.store.join_players(sid(1), std::slice::from_ref(&player), fx.t0).await.unwrap().unwrap();
        fx.store.leave_players(sid(1), std::slice::from_ref(&player), fx.t0).await.unwrap().unwrap();
    }
    // 1.2 s after creation, three times keep_for.
    let listed = fx.store.list_sessions(Some("game"), fx.t0).await.unwrap();
    assert_eq!(listed.iter().map(|s| s.session_id).collect::<Vec<_>>(), [sid(1)]);
    assert_eq!(fx.store.list_sessions(None, fx.t0).await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(fx.store.get_session(sid(1), fx.t0).await.unwrap(), None, "idle for longer than keep_for");
    assert!(fx.store.list_sessions(Some("game"), fx.t0).await.unwrap().is_empty());
}

// Ordered joins and leaves (the NATS door passes stream sequences): per player, the newest wins.

async fn a_stale_ordered_leave_after_a_newer_join_is_skipped(fx: Fixture) {
    fx.create(1, 4, &[]).await;
    fx.join_ordered(1, &["x"], 20).await.unwrap();
    let late = fx.leave_ordered(1, &["x"], 19).await.unwrap();
    assert_eq!(late.outcome.stale, set(&["x"]));
    assert!(late.outcome.left.is_empty() && late.outcome.duplicate.is_empty());
    assert_eq!(late.session.joined, set(&["x"]), "the older leave does not undo the newer join");
    assert_eq!(late.session.last_order, BTreeMap::from([("x".to_owned(), 20)]));
    assert_eq!(fx.get(1, 0).await, late.session);
}

/// Scenario: join x applied, its outcome lost (NAK); leave x applied; the join redelivered.
async fn a_redelivered_older_join_after_a_newer_leave_is_skipped(fx: Fixture) {
    fx.create(1, 4, &["x"]).await;
    let joined = fx.join_ordered(1, &["x", "y"], 7).await.unwrap();
    assert_eq!(joined.outcome.joined, set(&["x", "y"]));
    let left = fx.leave_ordered(1, &["x"], 8).await.unwrap();
    assert_eq!(left.outcome.left, set(&["x"]));
    let redelivered = fx.join_ordered(1, &["x", "y"], 7).await.unwrap();
    assert_eq!(redelivered.outcome.stale, set(&["x"]));
    assert_eq!(redelivered.outcome.duplicate, set(&["y"]));
    assert!(redelivered.outcome.joined.is_empty() && redelivered.outcome.already_joined.is_empty());
    assert_eq!(redelivered.session.joined, set(&["y"]), "x stays out, as the newest message says");
    assert_eq!(redelivered.session.open_seats(fx.t0), 3);
    // A leave that overtook its join: the join, older, arrives later and is skipped too.
    fx.leave_ordered(1, &["z"], 12).await.unwrap();
    assert_eq!(fx.join_ordered(1, &["z"], 11).await.unwrap().outcome.stale, set(&["z"]));
    let seats = fx.get(1, 0).await;
    assert_eq!(seats.joined, set(&["y"]));
    assert_eq!(
        seats.last_order,
        BTreeMap::from([("x".to_owned(), 8), ("y".to_owned(), 7), ("z".to_owned(), 12)])
    );
}

async fn an_equal_order_is_a_duplicate_and_skipped(fx: Fixture) {
    fx.create(1, 4, &[]).await;
    let first = fx.join_ordered(1, &["x"], 5).await.unwrap();
    let again = fx.join_ordered(1, &["x"], 5).await.unwrap();
    assert_eq!(again.outcome.duplicate, set(&["x"]));
    assert!(again.outcome.already_joined.is_empty() && again.outcome.stale.is_empty());
    assert_eq!(again.session, first.session);
    fx.leave_ordered(1, &["x"], 6).await.unwrap();
    let left_again = fx.leave_ordered(1, &["x"], 6).await.unwrap();
    assert_eq!(left_again.outcome.duplicate, set(&["x"]));
    assert!(left_again.outcome.left.is_empty() && left_again.outcome.released.is_empty());
    // Newer than what was applied: applied.
    assert_eq!(fx.join_ordered(1, &["x"], 9).await.unwrap().outcome.joined, set(&["x"]));
}

/// HTTP and Nakama changes carry no order: applied as they come, stored orders untouched.
async fn unordered_changes_always_apply_and_keep_the_orders(fx: Fixture) {
    fx.create(1, 4, &[]).await;
    fx.leave_ordered(1, &["x"], 30).await.unwrap();
    let joined = fx.join(1, &["x"], 0).await.unwrap();
    assert_eq!(joined.outcome.joined, set(&["x"]), "an unordered join is not held to any order");
    assert!(joined.outcome.stale.is_empty() && joined.outcome.duplicate.is_empty());
    assert_eq!(joined.session.last_order, BTreeMap::from([("x".to_owned(), 30)]));
    let left = fx.leave(1, &["x", "w"], 0).await.unwrap();
    assert_eq!(left.outcome.left, set(&["x"]));
    assert_eq!(left.session.last_order, BTreeMap::from([("x".to_owned(), 30)]), "nothing recorded for w");
    // The stored order still judges later ordered changes.
    assert_eq!(fx.join_ordered(1, &["x"], 29).await.unwrap().outcome.stale, set(&["x"]));
    assert_eq!(fx.join_ordered(1, &["w"], 1).await.unwrap().outcome.joined, set(&["w"]));
}

async fn an_ordered_batch_is_all_or_nothing_for_its_current_players(fx: Fixture) {
    fx.create(1, 2, &[]).await;
    fx.join_ordered(1, &["a"], 10).await.unwrap();
    fx.leave_ordered(1, &["b"], 10).await.unwrap();
    fx.join_ordered(1, &["c"], 3).await.unwrap();
    // One seat open: b is stale and needs none, but d and e need two.
    let before = fx.get(1, 0).await;
    assert_eq!(
        fx.join_ordered(1, &["b", "d", "e"], 4).await.unwrap_err(),
        SeatError::SessionFull { capacity: 2, open: 0, needed: 2 }
    );
    assert_eq!(fx.get(1, 0).await, before, "a refused change records no order either");
    fx.leave_ordered(1, &["c"], 4).await.unwrap();
    let joined = fx.join_ordered(1, &["b", "d"], 5).await.unwrap();
    assert_eq!((joined.outcome.joined, joined.outcome.stale), (set(&["d"]), set(&["b"])));
    assert_eq!(joined.session.joined, set(&["a", "d"]));
}

/// Stream sequences are 64 bits; 2^53 + 1 and 2^53 are one double apart from nothing.
async fn orders_beyond_double_precision_compare_exactly(fx: Fixture) {
    fx.create(1, 4, &[]).await;
    let big = 1u64 << 53;
    fx.join_ordered(1, &["x"], big + 1).await.unwrap();
    assert_eq!(fx.leave_ordered(1, &["x"], big).await.unwrap().outcome.stale, set(&["x"]));
    assert_eq!(fx.leave_ordered(1, &["x"], big + 1).await.unwrap().outcome.duplicate, set(&["x"]));
    let left = fx.leave_ordered(1, &["x"], u64::MAX).await.unwrap();
    assert_eq!(left.outcome.left, set(&["x"]));
    assert_eq!(fx.join_ordered(1, &["x"], u64::MAX - 1).await.unwrap().outcome.stale, set(&["x"]));
    assert_eq!(fx.get(1, 0).await.last_order, BTreeMap::from([("x".to_owned(), u64::MAX)]));
}

// ---------------------------------------------------------------------------------------------
// Redis only

async fn keys_and_ttls(url: &str) -> BTreeMap<String, i64> {
    let client = ::redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = ::redis::cmd("KEYS").arg("*").query_async(&mut connection).await.unwrap();
    let mut ttls = BTreeMap::new();
    for key in keys {
        let ttl: i64 = ::redis::cmd("PTTL").arg(&key).query_async(&mut connection).await.unwrap();
        ttls.insert(key, ttl);
    }
    ttls
}

/// A seat change that refreshes the indexes gives them the same long horizon a creation does: an
/// index recreated by a short session's refresh must not expire under longer sessions it lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_an_index_refreshed_by_a_seat_change_keeps_the_long_horizon() {
    let fx = Fixture::redis().await;
    let client = ::redis::Client::open(fx.redis.as_ref().unwrap().url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let indexes = ["it-seats:{seats}:sessions", "it-seats:seats-image:{game}"];
    let keep = Duration::from_millis(1_500);
    fx.store.create_session(&fx.new_session(1, 8, &[]), keep).await.unwrap().unwrap();
    // The indexes vanish (their last entries removed, a restart without persistence).
    let () = ::redis::cmd("DEL").arg(&indexes[..]).query_async(&mut connection).await.unwrap();

    // Changes keep the record alive; once it could outlive its index entries, one refreshes them.
    let started = Instant::now();
    for player in ["p0", "p1", "p2", "p3", "p4", "p5", "p6"] {
        tokio::time::sleep(Duration::from_millis(200)).await;
        fx.join(1, &[player], started.elapsed().as_millis() as i64).await.unwrap();
        let exists: i64 = ::redis::cmd("EXISTS").arg(indexes[1]).query_async(&mut connection).await.unwrap();
        if exists == 1 {
            break;
        }
    }
    for index in indexes {
        let ttl: i64 = ::redis::cmd("PTTL").arg(index).query_async(&mut connection).await.unwrap();
        assert!(ttl > 30 * 24 * 3600 * 1000, "{index} expires in {ttl} ms");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_seat_keys_are_prefixed_tagged_and_all_expire() {
    let fx = Fixture::redis().await;
    let url = fx.redis.as_ref().unwrap().url();
    let mut new = fx.new_session(1, 4, &["a"]);
    new.info.image = "game{1}".to_owned();
    fx.store.create_session(&new, KEEP).await.unwrap().unwrap();
    fx.create(2, 4, &[]).await;
    fx.join(1, &["a"], 0).await.unwrap();

    let ttls = keys_and_ttls(&url).await;
    let keys: BTreeSet<&str> = ttls.keys().map(String::as_str).collect();
    let expected: BTreeSet<String> = BTreeSet::from([
        format!("it-seats:seats:{{{}}}", sid(1)),
        format!("it-seats:seats:{{{}}}", sid(2)),
        "it-seats:{seats}:sessions".to_owned(),
        "it-seats:seats-image:{game%7B1%7D}".to_owned(),
        "it-seats:seats-image:{game}".to_owned(),
        // Where player `a` has a seat (reserved at creation, then joined).
        "it-seats:player:{a}".to_owned(),
    ]);
    assert_eq!(keys, expected.iter().map(String::as_str).collect());
    for (key, ttl) in &ttls {
        assert!(*ttl > 0, "{key} has no TTL ({ttl})");
        assert_eq!(key.matches('{').count() + key.matches('}').count(), 2, "{key}: exactly one tag");
    }
    let record = &ttls[&format!("it-seats:seats:{{{}}}", sid(1))];
    assert!(*record <= KEEP.as_millis() as i64 && *record > KEEP.as_millis() as i64 - 60_000);
    // The indexes outlive the records they list.
    for index in ["it-seats:{seats}:sessions", "it-seats:seats-image:{game}"] {
        assert!(ttls[index] >= *record, "{index}: {ttls:?}");
    }
    // The session record is one HASH holding everything.
    let client = ::redis::Client::open(url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let fields: BTreeMap<String, String> = ::redis::cmd("HGETALL")
        .arg(format!("it-seats:seats:{{{}}}", sid(1)))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(fields["j:a"], "1");
    assert_eq!(fields["status"], "running");
    assert_eq!(fields["capacity"], "4");
    assert!(!fields.keys().any(|f| f.starts_with("r:")), "the consumed reservation is gone: {fields:?}");
    assert!(!fields.keys().any(|f| f.starts_with("q:")), "an unordered join stores no order: {fields:?}");
    // A new record holds its fields and nothing else, and remembers that its indexes live two
    // keep_for from its creation, less half a keep_for for clock skew (the store's clock writes
    // it), so a change soon after need not refresh them.
    let fresh: BTreeMap<String, String> = ::redis::cmd("HGETALL")
        .arg(format!("it-seats:seats:{{{}}}", sid(2)))
        .query_async(&mut connection)
        .await
        .unwrap();
    let names: Vec<&str> = fresh.keys().map(String::as_str).collect();
    let expected_names = [
        "capacity",
        "image",
        "indexed_until_ms",
        "keep_ms",
        "labels",
        "location",
        "metadata",
        "session_id",
        "status",
        "version",
    ];
    assert_eq!(names, expected_names, "{fresh:?}");
    let (seconds, micros): (i64, i64) = ::redis::cmd("TIME").query_async(&mut connection).await.unwrap();
    let clock_ms = seconds * 1000 + micros / 1000;
    let indexed_until: i64 = fresh["indexed_until_ms"].parse().unwrap();
    let keep = KEEP.as_millis() as i64;
    assert!((clock_ms + 2 * keep - keep / 2 - indexed_until).abs() < 60_000, "{indexed_until} vs {clock_ms}");
    // An ordered change stores its order in the same HASH (one key, one slot), kept after leaving.
    fx.join_ordered(1, &["b"], 41).await.unwrap();
    fx.leave_ordered(1, &["b"], 42).await.unwrap();
    let fields: BTreeMap<String, String> = ::redis::cmd("HGETALL")
        .arg(format!("it-seats:seats:{{{}}}", sid(1)))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(fields["q:b"], "42");
    assert!(!fields.contains_key("j:b"));
    assert_eq!(keys_and_ttls(&url).await.len(), expected.len() + 1, "no other key but player b's");

    // Scripts Redis lost (restart, failover) are loaded again, and the new session is indexed.
    let () = ::redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut connection).await.unwrap();
    fx.create(3, 4, &[]).await;
    let listed = fx.store.list_sessions(Some("game"), fx.t0).await.unwrap();
    assert_eq!(listed.iter().map(|s| s.session_id).collect::<Vec<_>>(), [sid(2), sid(3)]);
    let ttls = keys_and_ttls(&url).await;
    assert!(
        ttls["it-seats:seats-image:{game}"] >= ttls[&format!("it-seats:seats:{{{}}}", sid(3))],
        "{ttls:?}"
    );
}

/// Where a player sits is read from their index entry: only the sessions it names are read.
/// Entries of sessions that ended are dropped by the read that finds them so; entries of live
/// sessions the player left stay (they may sit there again at any moment, and a removal racing
/// that would leave them unindexed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sessions_holding_reads_only_the_sessions_the_player_index_names() {
    let fx = Fixture::redis().await;
    for n in 1..=30 {
        fx.create(n, 4, &[]).await;
    }
    fx.join(7, &["a"], 0).await.unwrap();
    fx.join(9, &["a"], 0).await.unwrap();
    fx.leave(9, &["a"], 0).await.unwrap();
    let client = ::redis::Client::open(fx.redis.as_ref().unwrap().url().as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let () = ::redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut connection).await.unwrap();
    assert_eq!(holding(&fx, &["a"], 0).await, [sid(7)]);
    let stats: String = ::redis::cmd("INFO").arg("commandstats").query_async(&mut connection).await.unwrap();
    let reads = stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_hgetall:calls="))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse::<u64>().unwrap());
    assert_eq!(reads, 2, "sessions 7 and 9, not all 30: {stats}");
    let named = || async {
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        ::redis::cmd("SMEMBERS")
            .arg("it-seats:player:{a}")
            .query_async::<BTreeSet<String>>(&mut connection)
            .await
            .unwrap()
    };
    assert_eq!(
        named().await,
        BTreeSet::from([sid(7).to_string(), sid(9).to_string()]),
        "a live session's entry stays"
    );
    // Seated again at 9: found, whatever the read before found.
    fx.join(9, &["a"], 0).await.unwrap();
    assert_eq!(holding(&fx, &["a"], 0).await, [sid(7), sid(9)]);
    // Ended: its entry goes with the next read.
    fx.store.end_session(sid(9), GONE, fx.at(0)).await.unwrap().unwrap();
    assert_eq!(holding(&fx, &["a"], 0).await, [sid(7)]);
    assert_eq!(named().await, BTreeSet::from([sid(7).to_string()]), "the ended session's entry is gone");
}

/// Two instances with their own memory of index expiries, and sessions of different TTLs: an
/// image's index that emptied (its last session ended, so Redis dropped the key) and was made
/// again by one instance for a short session still lives as long as the longer sessions the
/// other adds to it next. It expired with the short one, and the long ones fell out of backfill,
/// the listing and the reconciler's view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_an_index_recreated_by_another_instance_lives_as_long_as_its_sessions_need() {
    let fx = Fixture::redis().await;
    let url = fx.redis.as_ref().unwrap().url();
    let other = StateStore::Redis(RedisStore::connect(&url, PREFIX).await.unwrap());
    let week = Duration::from_secs(7 * 24 * 3600);
    fx.store.create_session(&fx.new_session(1, 4, &[]), week).await.unwrap().unwrap();
    fx.store.end_session(sid(1), GONE, fx.at(0)).await.unwrap().unwrap();
    other.create_session(&fx.new_session(2, 4, &[]), Duration::from_secs(1)).await.unwrap().unwrap();
    fx.store
        .create_session(&fx.new_session(3, 4, &[]), Duration::from_secs(24 * 3600))
        .await
        .unwrap()
        .unwrap();
    let ttls = keys_and_ttls(&url).await;
    for index in [format!("{PREFIX}:{{seats}}:sessions"), format!("{PREFIX}:seats-image:{{game}}")] {
        assert!(ttls[&index] >= 2 * 24 * 3600 * 1000, "{index} would expire before session 3: {ttls:?}");
    }
}

/// A Redis fixture with sessions 1 and 2 created, and a connection of the test's own.
async fn two_sessions_in_redis() -> (Fixture, ::redis::aio::MultiplexedConnection) {
    let fx = Fixture::redis().await;
    fx.create(1, 4, &[]).await;
    fx.create(2, 4, &[]).await;
    let client = ::redis::Client::open(fx.redis.as_ref().unwrap().url().as_str()).unwrap();
    let connection = client.get_multiplexed_async_connection().await.unwrap();
    (fx, connection)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_indexes_drop_sessions_whose_records_are_gone() {
    let (fx, mut connection) = two_sessions_in_redis().await;
    let url = fx.redis.as_ref().unwrap().url();
    let _: () = ::redis::cmd("DEL")
        .arg(format!("it-seats:seats:{{{}}}", sid(1)))
        .query_async(&mut connection)
        .await
        .unwrap();
    let members = async |index: &str| -> Vec<String> {
        let client = ::redis::Client::open(url.as_str()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        ::redis::cmd("ZRANGE").arg(index).arg(0).arg(-1).query_async(&mut connection).await.unwrap()
    };
    assert_eq!(members("it-seats:seats-image:{game}").await.len(), 2);
    let listed = fx.store.list_sessions(Some("game"), fx.t0).await.unwrap();
    assert_eq!(listed.iter().map(|s| s.session_id).collect::<Vec<_>>(), [sid(2)]);
    assert_eq!(members("it-seats:seats-image:{game}").await, [sid(2).to_string()], "stale entry dropped");
    fx.store.list_sessions(None, fx.t0).await.unwrap();
    assert_eq!(members("it-seats:{seats}:sessions").await, [sid(2).to_string()]);
    fx.store.end_session(sid(2), GONE, fx.t0).await.unwrap().unwrap();
    assert!(members("it-seats:seats-image:{game}").await.is_empty(), "ended: removed at once");
    assert!(members("it-seats:{seats}:sessions").await.is_empty());
}

/// A record the bridge cannot read (a newer version's, say) is skipped by listings, which still
/// answer with the rest, and kept in the indexes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_seat_record_that_cannot_be_read_is_skipped_not_fatal() {
    let (fx, mut connection) = two_sessions_in_redis().await;
    let key = format!("it-seats:seats:{{{}}}", sid(1));
    let _: () = ::redis::cmd("HSET")
        .arg(&key)
        .arg("capacity")
        .arg("not a number")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(fx.store.get_session(sid(1), fx.t0).await.is_err(), "the record is unreadable");
    let listed = fx.store.list_sessions(Some("game"), fx.t0).await.unwrap();
    assert_eq!(listed.iter().map(|s| s.session_id).collect::<Vec<_>>(), [sid(2)]);
    let listed = fx.store.list_sessions(None, fx.t0).await.unwrap();
    assert_eq!(listed.iter().map(|s| s.session_id).collect::<Vec<_>>(), [sid(2)]);
    let members: Vec<String> = ::redis::cmd("ZRANGE")
        .arg("it-seats:seats-image:{game}")
        .arg(0)
        .arg(-1)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(members.len(), 2, "kept in the index");
}

/// Bulk marking after Redis lost its scripts, for records whose index entries ran out: the records
/// are marked and the indexes hold them again, with an expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_bulk_marking_loads_its_script_and_refreshes_the_indexes() {
    let fx = Fixture::redis().await;
    let url = fx.redis.as_ref().unwrap().url();
    for n in [1, 2] {
        let mut new = fx.new_session(n, 4, &[]);
        new.status = SessionStatus::Created;
        fx.store.create_session(&new, KEEP).await.unwrap().unwrap();
    }
    let client = ::redis::Client::open(url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    for n in [1, 2] {
        let key = format!("it-seats:seats:{{{}}}", sid(n));
        let () = ::redis::cmd("HSET")
            .arg(&key)
            .arg("indexed_until_ms")
            .arg(0)
            .query_async(&mut connection)
            .await
            .unwrap();
    }
    for index in ["it-seats:{seats}:sessions", "it-seats:seats-image:{game}"] {
        let () = ::redis::cmd("DEL").arg(index).query_async(&mut connection).await.unwrap();
    }
    let () = ::redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut connection).await.unwrap();

    let marked = fx.store.mark_running_many(&[sid(1), sid(2)], fx.t0).await.unwrap();
    assert_eq!(marked, [sid(1), sid(2)]);
    let listed = fx.store.list_sessions(Some("game"), fx.t0).await.unwrap();
    assert_eq!(listed.iter().map(|s| s.session_id).collect::<Vec<_>>(), [sid(1), sid(2)], "indexed again");
    let ttls = keys_and_ttls(&url).await;
    for index in ["it-seats:{seats}:sessions", "it-seats:seats-image:{game}"] {
        assert!(ttls[index] > KEEP.as_millis() as i64, "{index} expires after its records: {ttls:?}");
    }
}

/// Redis's scripts and the in-memory store (the core ledger itself, property-tested) answer every
/// operation alike: long random sequences run against both side by side, compared after each step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_agrees_with_memory_on_random_operations() {
    let redis = Fixture::redis().await;
    let memory = Fixture { t0: redis.t0, ..Fixture::memory() };
    const PLAYERS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h|j:x"];
    // How often each kind of answer came up, so the comparison is known to cover them.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for seed in 1..=6u64 {
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut next = move |n: u64| {
            // xorshift64
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let base = (seed as u128) * 100;
        let capacities = [0u32, 2, 3, 5];
        for (i, capacity) in capacities.iter().enumerate() {
            let own: Vec<&str> =
                PLAYERS.iter().copied().filter(|_| next(4) == 0).take(*capacity as usize).collect();
            let mut new = redis.new_session(base + i as u128, *capacity, &own);
            new.reservation_ttl = Duration::from_millis(500 + next(3_000));
            for fx in [&redis, &memory] {
                fx.store.create_session(&new, KEEP).await.unwrap().unwrap();
            }
        }
        let mut clock = 0i64;
        for step in 0..250 {
            clock += next(400) as i64;
            let now = redis.at(clock);
            let session = sid(base + next(capacities.len() as u64 + 1) as u128); // sometimes unknown
            let players: Vec<String> =
                (0..next(4)).map(|_| PLAYERS[next(PLAYERS.len() as u64) as usize].to_owned()).collect();
            let ttl = Duration::from_millis(1 + next(3_000));
            let op = next(100);
            // Joins and leaves: half unordered, half with orders that often repeat or go back.
            let order = (next(2) == 0).then(|| next(12));
            let mut answers = Vec::new();
            for fx in [&redis, &memory] {
                let store = &fx.store;
                let answer = match op {
                    0..30 => describe(
                        store.join_players_ordered(session, &players, order, now).await.unwrap(),
                        |j| format!("{j:?}"),
                    ),
                    30..45 => describe(
                        store.leave_players_ordered(session, &players, order, now).await.unwrap(),
                        |l| format!("{l:?}"),
                    ),
                    45..75 => {
                        describe(store.reserve_seats(session, &players, ttl, now).await.unwrap(), |r| {
                            format!("{:?} {} {:?}", r.players, r.expires_at, r.moved)
                        })
                    }
                    75..85 => {
                        let candidates: Vec<Uuid> =
                            (0..=capacities.len() as u128).map(|i| sid(base + i)).collect();
                        match store.reserve_best(&candidates, &players, ttl, now).await.unwrap() {
                            None => "none".to_owned(),
                            Some(g) => {
                                describe(Ok(g), |r| format!("{:?} {} {:?}", r.players, r.expires_at, r.moved))
                            }
                        }
                    }
                    85..92 => describe(store.expire_reservations(session, now).await.unwrap(), |expired| {
                        let mut list: Vec<String> = expired
                            .iter()
                            .map(|e| format!("{:?}@{}", e.reservation.players, e.reservation.expires_at))
                            .collect();
                        list.sort();
                        list.join(",")
                    }),
                    92..93 => describe(store.end_session(session, GONE, now).await.unwrap(), |e| {
                        format!("{:?} {}", e.players, e.reservations.len())
                    }),
                    93..97 => match store.mark_running(session, now).await.unwrap() {
                        Ok(seats) => normalized(&seats),
                        Err(error) => format!("{error:?}"),
                    },
                    _ => {
                        let listed = store.list_sessions(Some("game"), now).await.unwrap();
                        listed.iter().map(normalized).collect::<Vec<_>>().join("\n")
                    }
                };
                let state = match store.get_session(session, now).await.unwrap() {
                    Some(seats) => normalized(&seats),
                    None => "absent".to_owned(),
                };
                answers.push((answer, state));
            }
            assert_eq!(
                answers[0], answers[1],
                "seed {seed}, step {step}, op {op}: redis (left) vs memory (right)"
            );
            let kind = answers[0].0.split([' ', '{']).next().unwrap_or_default().to_owned();
            *seen.entry(kind).or_default() += 1;
            for skipped in ["duplicate", "stale"] {
                if answers[0].0.contains(&format!("{skipped}: {{\"")) {
                    *seen.entry(skipped.to_owned()).or_default() += 1;
                }
            }
        }
    }
    for kind in
        ["ok", "none", "SessionFull", "NoSeats", "AlreadyJoined", "NotFound", "Ended", "duplicate", "stale"]
    {
        assert!(seen.get(kind).copied().unwrap_or(0) >= 5, "{kind} came up too rarely to compare: {seen:?}");
    }
}

/// A seat change's answer with reservation ids left out (each store makes its own).
fn describe<T>(answer: Result<SeatChange<T>, SeatError>, outcome: impl Fn(&T) -> String) -> String {
    match answer {
        Ok(change) => format!("ok {} | {}", outcome(&change.outcome), normalized(&change.session)),
        Err(error) => format!("{error:?}"),
    }
}

/// A session's seats with reservation ids left out.
fn normalized(seats: &SessionSeats) -> String {
    let mut reservations: Vec<String> =
        seats.reservations.values().map(|r| format!("{:?}@{}", r.players, r.expires_at)).collect();
    reservations.sort();
    format!(
        "{} cap {} {:?} {:?} joined {:?} reserved {:?} orders {:?}",
        seats.session_id,
        seats.capacity,
        seats.status,
        seats.info,
        seats.joined,
        reservations,
        seats.last_order
    )
}

async fn an_ended_record_keeps_how_it_ended(fx: Fixture) {
    fx.create(1, 4, &["x", "y", "z|é:"]).await;
    fx.join(1, &["x", "wé|:"], 0).await.unwrap();
    fx.create(2, 4, &[]).await;
    assert_eq!(fx.store.session_end(sid(1), fx.t0).await.unwrap(), EndRecord::NotEnded);
    assert_eq!(fx.store.session_end(sid(9), fx.t0).await.unwrap(), EndRecord::Gone);

    fx.store.end_session(sid(1), OWED.ending(EndReason::Stopped), fx.at(1_000)).await.unwrap().unwrap();
    let EndRecord::Owed(session, end) = fx.store.session_end(sid(1), fx.at(2_000)).await.unwrap() else {
        panic!("owed")
    };
    assert_eq!(session.session_id, sid(1));
    assert_eq!(session.status, SessionStatus::Ended);
    assert_eq!(session.info, info("game", "eu-west-1"));
    assert_eq!(end.reason, EndReason::Stopped);
    assert_eq!(end.ended_at, fx.at(1_000));
    assert_eq!(end.players, set(&["wé|:", "x"]));
    assert_eq!(end.reserved_players, set(&["y", "z|é:"]), "x's seat was used, not reserved");

    // Announced: the record no longer owes it, and ending it again is refused and owes nothing.
    fx.store.end_announced(sid(1)).await.unwrap();
    assert_eq!(fx.store.session_end(sid(1), fx.at(2_000)).await.unwrap(), EndRecord::Settled);
    let again = fx.store.end_session(sid(1), OWED.ending(EndReason::Gone), fx.at(3_000)).await.unwrap();
    assert_eq!(again.unwrap_err(), SeatError::Ended);
    assert_eq!(fx.store.session_end(sid(1), fx.at(3_000)).await.unwrap(), EndRecord::Settled);

    // Ended without owing: settled from the start.
    fx.store.end_session(sid(2), GONE, fx.at(61_000)).await.unwrap().unwrap();
    assert_eq!(fx.store.session_end(sid(2), fx.at(61_000)).await.unwrap(), EndRecord::Settled);

    // An unknown session's refused end owes nothing either.
    let unknown = fx.store.end_session(sid(9), OWED.ending(EndReason::Gone), fx.t0).await.unwrap();
    assert_eq!(unknown.unwrap_err(), SeatError::NotFound);
    let due = fx.store.claim_end_announcements(fx.at(3_600_000), 10, Duration::ZERO).await.unwrap();
    assert!(!due.contains(&sid(9)), "{due:?}");
}

async fn an_owed_end_is_claimed_once_deferred_and_settled(fx: Fixture) {
    for n in 1..=2 {
        fx.create(n, 4, &[]).await;
    }
    let owed_after = |ms: u64| EndOwing { window: Duration::from_millis(ms), keep_for: KEEP };
    fx.store.end_session(sid(1), owed_after(10_000).ending(EndReason::Gone), fx.t0).await.unwrap().unwrap();
    fx.store.end_session(sid(2), owed_after(5_000).ending(EndReason::Gone), fx.t0).await.unwrap().unwrap();
    assert_eq!(fx.store.owed_end_announcements().await.unwrap(), 2);

    let hold = Duration::from_secs(15);
    let claim = |ms: i64, limit: usize| fx.store.claim_end_announcements(fx.at(ms), limit, hold);
    assert!(claim(4_999, 10).await.unwrap().is_empty(), "nothing due yet");
    assert_eq!(claim(10_000, 10).await.unwrap(), [sid(2), sid(1)], "earliest first");
    assert!(claim(20_000, 10).await.unwrap().is_empty(), "held by the claim");
    let due_again = claim(25_000, 1).await.unwrap();
    assert_eq!(due_again, [sid(1)], "due again when the hold ran out (ties by id); limit kept");

    fx.store.defer_end_announcement(sid(1), fx.at(60_000)).await.unwrap();
    assert_eq!(claim(40_000, 10).await.unwrap(), [sid(2)]);
    fx.store.end_announced(sid(2)).await.unwrap();
    assert_eq!(claim(60_000, 10).await.unwrap(), [sid(1)]);
    fx.store.end_announced(sid(1)).await.unwrap();
    fx.store.defer_end_announcement(sid(1), fx.at(70_000)).await.unwrap();
    assert!(claim(100_000, 10).await.unwrap().is_empty(), "a deferral of a settled end owes nothing");
    assert_eq!(fx.store.owed_end_announcements().await.unwrap(), 0);
}

/// An owed end outlives the record's own `keep_for` by the owing's, so a late retry can read it.
async fn an_owed_tombstone_is_kept_as_long_as_the_owing_says(fx: Fixture) {
    let short = Duration::from_millis(300);
    for n in 1..=2 {
        fx.store.create_session(&fx.new_session(n, 4, &[]), short).await.unwrap().unwrap();
    }
    let owing = EndOwing { window: Duration::ZERO, keep_for: Duration::from_secs(60) };
    fx.store.end_session(sid(1), owing.ending(EndReason::Gone), fx.t0).await.unwrap().unwrap();
    fx.store.end_session(sid(2), GONE, fx.t0).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(matches!(fx.store.session_end(sid(1), fx.t0).await.unwrap(), EndRecord::Owed(..)));
    assert_eq!(fx.store.session_end(sid(2), fx.t0).await.unwrap(), EndRecord::Gone, "kept its own keep_for");
}

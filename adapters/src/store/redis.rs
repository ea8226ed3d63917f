//! The Redis store: state shared by any number of bridge instances.
//!
//! # Key layout (ready for Redis Cluster; the client connects to one node today)
//!
//! | key | type | contents | expires |
//! | --- | --- | --- | --- |
//! | `<prefix>:match:{<match_id>}` | STRING | one placement record ([`redis_record`] has the format) | `keep_for` after its claim, takeover or completion |
//! | `<prefix>:{matches}:pending` | ZSET | match id → `lease_until_ms` of pending records | as late as its longest-lived record |
//! | `<prefix>:{matches}:announce` | ZSET | `<outcome>\|<match id>` → when that outcome is due to be announced ([`AnnouncementStore`], `announce_redis.rs`) | as late as its longest-lived record |
//! | `<prefix>:latency:{<player_id>}` | STRING | the player's latencies as JSON (`{"eu-west-1": 32}`) | `keep_for` |
//! | `<prefix>:cooldown:{<location>}` | STRING | `1` | after the cool-down |
//! | `<prefix>:delivery:{<key>}` | STRING | `1`: a door acted on this delivery (SNS `MessageId`) | `keep_for` |
//! | `<prefix>:ticket:{<ticket_id>}` | STRING | a matchmaking ticket's status as JSON | `keep_for` |
//! | `<prefix>:{seats}:end-announce` | ZSET | session id → when its owed end is due to be announced ([`bridge::ports::EndAnnouncementStore`], `announce_redis.rs`) | never: entries leave when announced, given up or found settled |
//!
//! Seat records and their indexes (`seats_redis.rs`) and the player-sync outbox
//! (`player_sync_redis.rs`) have their own tables.
//!
//! A record holds the match id, source, session id, request and acceptance time, its state
//! (`pending` / `placed` / `failed`), its fence (kept across states, so a takeover of a retryable
//! failure still raises it), while pending its owner and lease, and when done the outcome (the
//! Assignment or Failure, which says whether a failure is retryable). Times are ms since the Unix epoch,
//! taken from the caller's `now` (never Redis's `TIME`). Until session 11 records were HASHes
//! under `<prefix>:placement:{…}` with the index `<prefix>:{placements}:pending`; the new names keep
//! an old and a new instance from reading each other's records (README, upgrading).
//!
//! **Hash tags.** Every key carries exactly one well-formed hash tag `{…}` so Redis Cluster places
//! it by the id alone. Ids are arbitrary strings, so the tag holds the id with `%`, `{` and `}`
//! percent-encoded (`%25`, `%7B`, `%7D`) — a tag then never contains a brace and decodes
//! unambiguously; the empty id is written as a lone `%` (which no encoded id can be) so a tag is
//! never empty (Redis would hash the whole key). The prefix may not contain braces at all. Members of
//! the pending index are raw match ids (members are not keys).
//!
//! **Atomicity.** A claim that finds no record creates it with one plain `SET … NX PX … GET`, which
//! answers the record there instead when there is one; every other change to a record is one Lua
//! script (`EVALSHA`, loaded again automatically after a Redis restart) on that one key: the
//! takeover (a compare-and-set against the value the claim read), renewal and completion (both
//! checked against the owner's header prefix). The pending index lives in another slot, so it is kept
//! *outside* those scripts, with plain commands (`ZADD` and `PEXPIRE NX|GT`, Redis ≥ 7, probed on
//! connect; the expiry set a minute longer than needed and then skipped for that minute, see
//! [`IndexExpiries`]): an entry is added (if missing) just before a claim, in the
//! claim's own pipeline, set to the real lease after it when it was not new, moved on renewal and
//! removed after a final completion (in batches, see [`remove_in_batches`]). A stale entry is harmless — `expired_pending`
//! checks each record and drops (or re-scores) entries whose record is gone, done or renewed, and the
//! engine checks the record again before taking anything over. Reads across slots (latencies,
//! cool-downs, index checks) are pipelines of single-key commands, never `MGET`.
//!
//! **Failures.** A [`ConnectionManager`] reconnects by itself; connection and response timeouts of 1 s
//! and an overall 2 s bound per operation make a dead Redis an error (transient) rather than a hang.
//! Connection, I/O and timeout errors are transient; script, type and data errors are permanent.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, Script, ServerErrorKind};
use time::OffsetDateTime;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::announce_redis::OweExpiry;
use super::redis_record::{self, Stored};
use super::{duration_millis, from_millis, lease_until_millis, push_percent_encoded, to_millis};
use bridge::MatchIdConflict;
use bridge::ports::{
    AnnouncementStore, Claim, ClaimOutcome, Completion, CooldownStore, Delivery, DeliveryLog, Finished,
    LatencyStore, Lease, Outcome, Owed, PlacementRecord, PlacementState, PlacementStore, StateStore,
    StoreError, TicketStatus, TicketStore, finish_concurrently,
};
use bridge::seats::{NewSession, SeatResult, SessionSeats};

/// How long one connection attempt may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// How long Redis may take to answer one command.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The bound on one store operation as a whole (several round trips, reconnecting included).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);
/// Index entries checked per round of `expired_pending`, at least.
const MIN_SCAN: usize = 16;
/// Rounds of `expired_pending` (each drops stale entries, so the next may find more).
const SCAN_ROUNDS: usize = 4;
/// How long a final outcome's pending-index removal waits for others to share its `ZREM`.
const REMOVAL_WINDOW: Duration = Duration::from_millis(10);
/// Members removed by one `ZREM` at most.
const REMOVAL_BATCH: usize = 1024;
/// Removals waiting at most; more are dropped (their entries stay for `expired_pending`).
const REMOVAL_QUEUE: usize = 65_536;
/// Rounds of a claim whose takeover found the record changed since it was read.
const TAKEOVER_ROUNDS: usize = 4;
/// How late a removal may still be sent: well within any record's life (see `remove_in_batches`).
const REMOVAL_MAX_DELAY: Duration = Duration::from_secs(1);

struct Scripts {
    takeover: Script,
    renew: Script,
    complete: Script,
    index_remove: Script,
    ticket_unmatched: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    takeover: Script::new(include_str!("scripts/takeover.lua")),
    renew: Script::new(include_str!("scripts/renew.lua")),
    complete: Script::new(include_str!("scripts/complete.lua")),
    index_remove: Script::new(include_str!("scripts/index_remove.lua")),
    ticket_unmatched: Script::new(include_str!("scripts/ticket_unmatched.lua")),
});

/// Refuses a server without `PEXPIRE … NX` (Redis < 7.0) with a clear error, instead of failing
/// on the first placement. A probe of the capability itself, not a version string: `INFO` may be
/// denied on managed Redis, and compatible servers report versions of their own. On a key that does
/// not exist the probe changes nothing.
async fn check_version(connection: &ConnectionManager, prefix: &str) -> Result<(), StoreError> {
    let mut connection = connection.clone();
    let probe = redis::cmd("PEXPIRE").arg(format!("{prefix}:{{probe}}")).arg(1).arg("NX").to_owned();
    match bounded("connect", probe.query_async::<i64>(&mut connection)).await {
        Ok(_) => Ok(()),
        Err(error) if error.transient => Err(error),
        Err(error) => Err(StoreError::permanent(format!(
            "this Redis does not support PEXPIRE NX (Redis 7.0 or newer is needed): {error}"
        ))),
    }
}

/// The answer of one [`queue_index_add`]'s `ZADD`: how many entries it added (0 or 1).
pub(super) type IndexAdded = i64;

/// A pipeline answer read and dropped. Pipelines here read every answer rather than marking
/// commands `ignore()`d: redis-rs keeps ignored positions in a `HashSet` and hashes every
/// position of the answer to filter them (~1 % of the bridge's instructions per placement).
pub(super) type Skipped = redis::RedisResult<()>;

/// Queues on `pipe` the commands that add `member` to the sorted set `index` at `score` (only if
/// missing when `only_new`) and, with `expire_ms` (> 0), make the index live at least that long:
/// `ZADD`, then `PEXPIRE … NX` (a new index's first expiry) and `PEXPIRE … GT` (only ever later);
/// Redis ≥ 7. Plain single-key commands rather than a script because a Lua call costs Redis several
/// times more, and every placement and seat record maintains indexes; no `MULTI`, so a Cluster
/// client can route them as they are. Not atomic, and need not be: other writers only add entries
/// or extend the expiry, and the commands of one pipeline reach Redis together (an index idle for
/// `keep_for` expiring between them is the only gap, and costs one entry that `expired_pending` or
/// the next listing makes good). They add one answer to the pipeline's, `ZADD`'s ([`IndexAdded`]),
/// and with `expire_ms` two more, the `PEXPIRE`s' (read as `()` or [`Skipped`]). The hot paths ask
/// [`IndexExpiries`] for `expire_ms` and send none while an earlier refresh covers the add.
pub(super) fn queue_index_add(
    pipe: &mut redis::Pipeline,
    index: &str,
    member: &str,
    score: i64,
    expire_ms: Option<i64>,
    only_new: bool,
) {
    // Sized up front: grown argument by argument, the buffers were reallocated ~20 times a call.
    let mut zadd = redis::Cmd::with_capacity(5, index.len() + member.len() + 32);
    zadd.arg("ZADD").arg(index);
    if only_new {
        zadd.arg("NX");
    }
    zadd.arg(score).arg(member);
    pipe.add_command(zadd);
    let Some(expire_ms) = expire_ms else { return };
    // Refreshes as well as the hot paths: one horizon for every index (see `IndexExpiries`).
    let expire_ms = expire_ms.max(INDEX_TTL_FLOOR_MS);
    for condition in ["NX", "GT"] {
        let mut pexpire = redis::Cmd::with_capacity(4, index.len() + 32);
        pexpire.arg("PEXPIRE").arg(index).arg(expire_ms).arg(condition);
        pipe.add_command(pexpire);
    }
}

/// How much longer than asked the hot paths make an index live, so that the adds of the next
/// minute need not extend it again: one pair of `PEXPIRE`s per index and minute from each
/// process instead of one per add (6 of the 15 commands of a placement). The cost is an index
/// that outlives its last entry's record by up to this much more.
const INDEX_EXPIRY_SLACK_MS: i64 = 60_000;
/// Indexes remembered at most (one per image for the seats); beyond it the memory starts over.
const INDEX_EXPIRIES_HELD: usize = 1024;
/// The shortest life an index is given, whatever its entries need: one horizon for every
/// instance and request (see [`IndexExpiries`]). A month and a day: longer than any placement
/// record is kept (30 days at most).
const INDEX_TTL_FLOOR_MS: i64 = 31 * 24 * 3600 * 1000;

/// When this process last made sure each index lives until at least some instant.
///
/// Skipping the `PEXPIRE`s is safe because an index's expiry only ever moves later (`GT`) while
/// the key exists. If the key vanishes meanwhile (its last entry removed, a `FLUSHALL`, a
/// restart without persistence), the next `ZADD` creates it *without* an expiry, which lives
/// longer, not shorter, until this process's next refresh sets one again (`NX`). Another instance
/// recreating a vanished index sets the expiry *it* needs, though, and how long entries must live
/// differs per request (a session's TTL): an index recreated for a 10-minute session, then added
/// to for 2-hour ones by a process that remembers a long expiry, would expire with their sessions
/// still listed in it. So every index is asked to live at least [`INDEX_TTL_FLOOR_MS`] whatever
/// its entries need: with one horizon everywhere, an expiry set later is never the earlier one.
/// (Only entries needing more than the floor, sessions of a TTL beyond two weeks, can still meet it.)
#[derive(Default)]
pub(super) struct IndexExpiries(Mutex<HashMap<String, Instant>>);

impl IndexExpiries {
    /// The expiry to send with adds that need each of `indexes` to live `ttl_ms` (> 0) from `now`
    /// (one for all, so a pipeline's answer has one of two shapes), or `None` when refreshes this
    /// process made cover them all.
    pub(super) fn needed<S: AsRef<str>>(&self, indexes: &[S], ttl_ms: i64, now: Instant) -> Option<i64> {
        let ttl_ms = ttl_ms.max(INDEX_TTL_FLOOR_MS);
        let covered = now.checked_add(millis(ttl_ms)).is_some_and(|needed_until| {
            let known = self.0.lock().expect("index expiries poisoned");
            indexes.iter().all(|index| known.get(index.as_ref()).is_some_and(|until| *until >= needed_until))
        });
        (!covered).then(|| ttl_ms.saturating_add(INDEX_EXPIRY_SLACK_MS))
    }

    /// Records that Redis accepted `expire_ms` for `index` in commands sent at `sent_at` (or
    /// later: the expiry runs from when Redis ran them, so this errs early).
    pub(super) fn remember(&self, index: &str, sent_at: Instant, expire_ms: i64) {
        let Some(until) = sent_at.checked_add(millis(expire_ms)) else { return };
        let mut known = self.0.lock().expect("index expiries poisoned");
        if let Some(entry) = known.get_mut(index) {
            *entry = until;
            return;
        }
        if known.len() >= INDEX_EXPIRIES_HELD {
            known.clear();
        }
        known.insert(index.to_owned(), until);
    }
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The Redis-backed store. Cheap to clone: clones share one multiplexed, self-healing connection
/// per lane ([`crate::lanes`]).
#[derive(Clone)]
pub struct RedisStore {
    /// Indexed by lane: each lane's commands go through a connection its own thread drives.
    connections: Arc<[ConnectionManager]>,
    keys: Keys,
    cooldowns: Arc<CooldownCache>,
    pub(super) index_expiries: Arc<IndexExpiries>,
    /// Final outcomes whose pending-index entry [`remove_in_batches`] is to drop.
    done_pending: mpsc::Sender<DonePending>,
}

impl fmt::Debug for RedisStore {
    // The connection's Debug would show the URL, which may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore").field("prefix", &self.keys.prefix).finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://[user:password@]host:port[/db]`; not `rediss://`: redis-rs is
    /// built without TLS) and writes every key under `prefix` (non-empty, no `{` or `}`). Fails if
    /// Redis cannot be reached now; once connected, the store reconnects by itself whenever the
    /// connection is lost.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        Self::connect_lanes(url, prefix, &[]).await
    }

    /// [`RedisStore::connect`] with one more connection for each of `lanes` (the runtimes of lanes
    /// 1 and up), each driven by its lane's runtime.
    pub async fn connect_lanes(url: &str, prefix: &str, lanes: &[Handle]) -> Result<Self, StoreError> {
        if prefix.is_empty() || prefix.contains(['{', '}']) {
            return Err(StoreError::permanent(format!(
                "Redis key prefix {prefix:?} must be non-empty and contain no `{{` or `}}` (they would \
                 break the keys' hash tags)"
            )));
        }
        let client =
            redis::Client::open(url).map_err(|e| StoreError::permanent(format!("invalid Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let connection =
            bounded("connect", ConnectionManager::new_with_config(client.clone(), config.clone())).await?;
        check_version(&connection, prefix).await?;
        let mut connections = vec![connection.clone()];
        for lane in lanes {
            // The manager spawns the task that drives its connection where it is created.
            let connect = ConnectionManager::new_with_config(client.clone(), config.clone());
            let created = lane.spawn(bounded("connect", connect));
            let lane_connection = created
                .await
                .map_err(|e| StoreError::permanent(format!("connecting a lane to Redis: {e}")))??;
            connections.push(lane_connection);
        }
        let keys = Keys { prefix: prefix.to_owned() };
        let (done_pending, removals) = mpsc::channel(REMOVAL_QUEUE);
        tokio::spawn(remove_in_batches(connection, keys.pending(), removals));
        Ok(Self {
            connections: connections.into(),
            keys,
            cooldowns: Arc::default(),
            index_expiries: Arc::default(),
            done_pending,
        })
    }

    /// This lane's connection (a cheap clone).
    pub(super) fn connection(&self) -> ConnectionManager {
        self.connections[crate::lanes::current() % self.connections.len()].clone()
    }

    /// Whether Redis answers (`PING`) on every lane's connection, for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        for connection in self.connections.iter() {
            let mut connection = connection.clone();
            let pong: String = bounded("ping", redis::cmd("PING").query_async(&mut connection)).await?;
            if pong != "PONG" {
                return Err(StoreError::permanent(format!("redis ping: unexpected answer {pong:?}")));
            }
        }
        Ok(())
    }

    pub(super) fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The prefix of every key this store writes.
    pub fn prefix(&self) -> &str {
        &self.keys.prefix
    }

    /// Puts `match_id` into the pending index at `lease_until_ms` (only if missing when `only_new`),
    /// making the index live at least `ttl_ms`. Returns whether the entry was new.
    async fn index_add(
        &self,
        match_id: &str,
        lease_until_ms: i64,
        ttl_ms: i64,
        only_new: bool,
    ) -> Result<bool, RedisError> {
        if ttl_ms <= 0 {
            return Ok(false);
        }
        let mut pipe = redis::pipe();
        queue_index_add(&mut pipe, &self.keys.pending(), match_id, lease_until_ms, Some(ttl_ms), only_new);
        let mut connection = self.connection();
        let (added, (), ()): (IndexAdded, (), ()) = pipe.query_async(&mut connection).await?;
        Ok(added > 0)
    }

    /// Removes `match_id` from the pending index if its entry still has `score` (as Redis formats it).
    async fn index_remove(&self, match_id: &str, score: &str) -> Result<(), RedisError> {
        let mut connection = self.connection();
        let _: i64 = SCRIPTS
            .index_remove
            .key(self.keys.pending())
            .arg(match_id)
            .arg(score)
            .invoke_async(&mut connection)
            .await?;
        Ok(())
    }

    async fn claim_inner(&self, claim: &Claim) -> Result<ClaimOutcome, StoreError> {
        // A takeover that lost a race to another claimant reads the record again; a few rounds
        // settle any contention (each round someone wins).
        for _ in 0..TAKEOVER_ROUNDS {
            if let Some(outcome) = self.claim_round(claim).await? {
                return Ok(outcome);
            }
        }
        Err(StoreError::transient("redis claim: the record kept changing under the takeover"))
    }

    /// One claim: `None` when a takeover found the record changed since it was read.
    async fn claim_round(&self, claim: &Claim) -> Result<Option<ClaimOutcome>, StoreError> {
        let now_ms = to_millis(claim.now);
        let lease_until_ms = lease_until_millis(claim.now, claim.lease_for);
        let keep_ms = duration_millis(claim.keep_for);
        let key = self.keys.placement(&claim.match_id);
        let value = redis_record::new_value(claim, now_ms, lease_until_ms)?;

        // Index first, in the same round trip (a pipeline runs in order): a claimant that dies right
        // after its claim still leaves an entry to recover. Then one plain command creates the
        // record or answers the one there, unchanged.
        let mut pipe = redis::Pipeline::with_capacity(4);
        let index_first = keep_ms > 0;
        let pending = self.keys.pending();
        let sent_at = Instant::now();
        let expire_ms =
            if index_first { self.index_expiries.needed(&[&pending], keep_ms, sent_at) } else { None };
        if index_first {
            queue_index_add(&mut pipe, &pending, &claim.match_id, lease_until_ms, expire_ms, true);
        }
        let mut set = redis::Cmd::with_capacity(7, key.len() + value.len() + 48);
        set.arg("SET").arg(&key).arg(&value).arg("NX").arg("PX").arg(keep_ms.max(1)).arg("GET");
        pipe.add_command(set);
        // Each command's own answer: the commands before a failed one ran all the same.
        pipe.ignore_errors();
        let mut connection = self.connection();
        type Answer = redis::RedisResult<Option<String>>;
        let (index_answer, claim_answer) = match (index_first, expire_ms) {
            (true, Some(expire_ms)) => pipe
                .query_async::<(redis::RedisResult<IndexAdded>, Skipped, Skipped, Answer)>(&mut connection)
                .await
                .map(|(index, nx, gt, claim)| {
                    if nx.and(gt).is_ok() {
                        self.index_expiries.remember(&pending, sent_at, expire_ms);
                    }
                    (Some(index), claim)
                }),
            (true, None) => pipe
                .query_async::<(redis::RedisResult<IndexAdded>, Answer)>(&mut connection)
                .await
                .map(|(index, claim)| (Some(index), claim)),
            (false, _) => pipe.query_async::<(Answer,)>(&mut connection).await.map(|(claim,)| (None, claim)),
        }
        .map_err(err("claim"))?;
        let existing = claim_answer.map_err(|error| store_error("claim", &error))?;
        // "Not added" when the index write failed: the entry is then written again below for
        // an owned claim (or the claim fails), so no owned record goes unindexed.
        let indexed = match index_answer {
            Some(Ok(added)) => added > 0,
            Some(Err(error)) => {
                tracing::warn!(error = %store_error("claim", &error), "pending index not written with the claim; trying again");
                false
            }
            None => false,
        };

        let Some(existing) = existing else {
            // Created: exactly what was written, without reading it back.
            if !indexed {
                self.index_add(&claim.match_id, lease_until_ms, keep_ms, false)
                    .await
                    .map_err(err("claim"))?;
            }
            let record = claim.new_record(from_millis(now_ms), from_millis(lease_until_ms));
            let lease = Lease { owner: claim.owner.clone(), fence: 1 };
            return Ok(Some(ClaimOutcome::Owned { record: Box::new(record), lease, taken_over: false }));
        };
        let Stored { record, fence } = redis_record::parse(&existing)?;
        if let Some(conflict) = MatchIdConflict::between(&record.request, &claim.request) {
            // Refused: the record stays as it is, and so does the pending index.
            match record.state {
                PlacementState::Pending { lease_until, .. } => {
                    self.index_add(&claim.match_id, to_millis(lease_until), keep_ms, false)
                        .await
                        .map_err(err("claim"))?;
                }
                PlacementState::Placed { .. } | PlacementState::Failed { .. } => {
                    self.drop_own_entry(claim, indexed, lease_until_ms).await?;
                }
            }
            return Ok(Some(ClaimOutcome::Conflict(conflict)));
        }
        let outcome = match record.state {
            PlacementState::Pending { owner, lease_until, .. } if to_millis(lease_until) > now_ms => {
                // Someone holds it: make sure the index shows their lease, not ours.
                self.index_add(&claim.match_id, to_millis(lease_until), keep_ms, false)
                    .await
                    .map_err(err("claim"))?;
                ClaimOutcome::Held { owner, lease_until }
            }
            PlacementState::Placed { assignment } => {
                self.drop_own_entry(claim, indexed, lease_until_ms).await?;
                ClaimOutcome::Placed(assignment)
            }
            PlacementState::Failed { failure } if !failure.error.retryable => {
                self.drop_own_entry(claim, indexed, lease_until_ms).await?;
                ClaimOutcome::Failed(failure)
            }
            _ => {
                // A retryable failure or an expired lease: take it over if it is still what was
                // read, keeping what was first accepted.
                let fence = fence + 1;
                let taken = redis_record::taken_over_value(&existing, fence, &claim.owner, lease_until_ms)
                    .ok_or_else(|| StoreError::permanent("redis claim: a record without its meta line"))?;
                let swapped: bool = SCRIPTS
                    .takeover
                    .key(&key)
                    .arg(&existing)
                    .arg(&taken)
                    .arg(keep_ms.max(1))
                    .invoke_async(&mut connection)
                    .await
                    .map_err(err("claim"))?;
                if !swapped {
                    return Ok(None);
                }
                self.index_add(&claim.match_id, lease_until_ms, keep_ms, false)
                    .await
                    .map_err(err("claim"))?;
                let record = PlacementRecord {
                    state: PlacementState::Pending {
                        owner: claim.owner.clone(),
                        fence,
                        lease_until: from_millis(lease_until_ms),
                    },
                    ..record
                };
                let lease = Lease { owner: claim.owner.clone(), fence };
                ClaimOutcome::Owned { record: Box::new(record), lease, taken_over: true }
            }
        };
        Ok(Some(outcome))
    }

    /// Takes back the index entry this claim added for a record that turned out to be done.
    async fn drop_own_entry(&self, claim: &Claim, indexed: bool, score: i64) -> Result<(), StoreError> {
        if indexed {
            let score = score.to_string();
            self.index_remove(&claim.match_id, &score).await.map_err(err("claim"))?;
        }
        Ok(())
    }

    async fn renew_inner(
        &self,
        match_id: &str,
        lease: &Lease,
        now: OffsetDateTime,
        lease_for: Duration,
    ) -> Result<bool, StoreError> {
        let lease_until_ms = lease_until_millis(now, lease_for);
        let mut connection = self.connection();
        let (renewed, pttl): (bool, i64) = SCRIPTS
            .renew
            .key(self.keys.placement(match_id))
            .arg(redis_record::owner_prefix(lease.fence, &lease.owner))
            .arg(redis_record::pending_header(lease.fence, &lease.owner, lease_until_ms))
            .invoke_async(&mut connection)
            .await
            .map_err(err("renew"))?;
        if renewed {
            self.index_add(match_id, lease_until_ms, pttl, false).await.map_err(err("renew"))?;
        }
        Ok(renewed)
    }

    /// Writes the outcome.
    async fn complete_inner(&self, rendered: Rendered<'_>) -> Result<bool, StoreError> {
        let mut connection = self.connection();
        let written: bool = self
            .complete_invocation(rendered)
            .invoke_async(&mut connection)
            .await
            .map_err(err("complete"))?;
        self.completed(rendered, written);
        Ok(written)
    }

    /// The complete script's call for the outcome.
    fn complete_invocation(&self, rendered: Rendered<'_>) -> redis::ScriptInvocation<'static> {
        let Rendered { match_id, lease, outcome, json, keep_for, .. } = rendered;
        let state = match outcome {
            Outcome::Placed(_) => "placed",
            Outcome::Failed(_) => "failed",
        };
        let mut invocation = SCRIPTS.complete.key(self.keys.placement(match_id));
        invocation
            .arg(redis_record::owner_prefix(lease.fence, &lease.owner))
            .arg(redis_record::done_header(state, lease.fence))
            .arg(json)
            .arg(duration_millis(keep_for).max(1));
        invocation
    }

    /// After the complete script answered `written`.
    fn completed(&self, rendered: Rendered<'_>, written: bool) {
        let Rendered { match_id, outcome, keep_for, .. } = rendered;
        let retryable = matches!(outcome, Outcome::Failed(failure) if failure.error.retryable);
        // A final outcome's entry is dropped, off the answer's path and batched with others (one
        // round trip per batch rather than per placement): a stale entry is harmless
        // (expired_pending re-checks the record and drops it), a slower answer is not. A retryable
        // failure's is left to expired_pending: another instance may take the match over at any
        // moment and move the entry to its own lease, and an unconditional removal landing after
        // that would lose the new owner's entry (its crash would then go unrecovered). A final
        // outcome is not claimed again while its record lives, so an unconditional removal is
        // safe until the record expires: it must be sent by then (see `remove_in_batches`).
        if written && !retryable {
            let done = DonePending {
                match_id: match_id.to_owned(),
                send_by: Instant::now() + REMOVAL_MAX_DELAY.min(keep_for / 2),
            };
            // Full (Redis too slow to keep up) or gone (shutting down): the entry stays for
            // expired_pending.
            let _ = self.done_pending.try_send(done);
        }
    }

    /// An outcome with what must go with it, in one pipeline: the owed announcement's entry first
    /// (so a recorded outcome never lacks it), then the complete script's call, then the seat
    /// record's creation. Only the script's answer is the complete's; should Redis have lost the
    /// script (a restart, `SCRIPT FLUSH`), that one call is made again the usual way, which loads it.
    async fn finish_pipelined(
        &self,
        rendered: Rendered<'_>,
        seats: Option<(&NewSession, Duration)>,
    ) -> Finished {
        let mut pipe = redis::Pipeline::with_capacity(13);
        pipe.ignore_errors();
        let owe = rendered.owed.map(|(owed, due)| {
            self.queue_owe(&mut pipe, owed, to_millis(due), duration_millis(rendered.keep_for))
        });
        pipe.invoke_script(&self.complete_invocation(rendered));
        let creation = seats.map(|(new, seats_keep_for)| {
            match self.queue_create_session(&mut pipe, new, seats_keep_for) {
                Ok(Ok(creation)) => Creation::Queued(new, creation),
                Ok(Err(refused)) => Creation::Answered(Ok(Err(refused))),
                Err(error) => Creation::Answered(Err(error)),
            }
        });
        let mut connection = self.connection();
        let answers: Vec<redis::Value> = match pipe.query_async(&mut connection).await {
            Ok(answers) => answers,
            Err(error) => {
                let created = creation.map(|creation| match creation {
                    Creation::Queued(..) => Err(store_error("create_session", &error)),
                    Creation::Answered(answer) => answer,
                });
                return (Err(store_error("complete", &error)), created);
            }
        };
        let mut answers = answers.into_iter();
        let owed = match owe {
            Some((count, expiry)) => {
                let owe_answers: Vec<redis::Value> = answers.by_ref().take(count).collect();
                self.check_owed(rendered, owe_answers, expiry).await
            }
            None => Ok(()),
        };
        let written = match answers.next().map(redis::from_redis_value::<redis::RedisResult<bool>>) {
            Some(Ok(Ok(written))) => {
                self.completed(rendered, written);
                Ok(written)
            }
            Some(Ok(Err(error))) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.complete_inner(rendered).await
            }
            Some(Ok(Err(error))) => Err(store_error("complete", &error)),
            Some(Err(error)) => Err(store_error("complete", &error.into())),
            None => Err(StoreError::transient("redis complete: no answer")),
        };
        // Recorded but not owed: reported as not known to be written, so the engine completes
        // again, owing first (the repeat is refused, and the record then answers).
        let written = match (written, owed) {
            (Ok(true), Err(error)) => Err(error),
            (written, _) => written,
        };
        let created = match creation {
            Some(Creation::Queued(new, creation)) => {
                Some(self.session_created(new, creation, answers.collect()).await)
            }
            Some(Creation::Answered(answer)) => Some(answer),
            None => None,
        };
        (written, created)
    }

    /// After the owed entry's commands answered: a `ZADD` that failed (which the outcome's script
    /// after it need not have) is sent once more on its own; `Err` when that failed too.
    async fn check_owed(
        &self,
        rendered: Rendered<'_>,
        answers: Vec<redis::Value>,
        expiry: Option<OweExpiry>,
    ) -> Result<(), StoreError> {
        let mut answers = answers.into_iter().map(redis::from_redis_value::<redis::RedisResult<IndexAdded>>);
        let added = matches!(answers.next(), Some(Ok(Ok(_))));
        let expired = answers.all(|answer| matches!(answer, Ok(Ok(_))));
        if let Some(expiry) = expiry
            && added
            && expired
        {
            self.owed(expiry);
        }
        match rendered.owed {
            Some((owed, due)) if !added => self.owe_announcement(owed, due, rendered.keep_for).await,
            _ => Ok(()),
        }
    }

    async fn get_inner(&self, match_id: &str) -> Result<Option<PlacementRecord>, StoreError> {
        let mut connection = self.connection();
        let value: Option<String> = redis::cmd("GET")
            .arg(self.keys.placement(match_id))
            .query_async(&mut connection)
            .await
            .map_err(err("get"))?;
        value.map(|value| redis_record::parse(&value).map(|stored| stored.record)).transpose()
    }

    async fn expired_pending_inner(
        &self,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let now_ms = to_millis(now);
        let mut connection = self.connection();
        let mut found: Vec<(i64, String)> = Vec::new();
        let mut seen = HashSet::new();
        for _ in 0..SCAN_ROUNDS {
            if found.len() >= limit {
                break;
            }
            let want = (limit - found.len()).max(MIN_SCAN);
            let entries: Vec<(String, String)> = redis::cmd("ZRANGEBYSCORE")
                .arg(self.keys.pending())
                .arg("-inf")
                .arg(now_ms)
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(found.len())
                .arg(want)
                .query_async(&mut connection)
                .await
                .map_err(err("expired_pending"))?;
            let mut pipe = redis::pipe();
            for (match_id, _) in &entries {
                pipe.cmd("GET").arg(self.keys.placement(match_id));
            }
            let values: Vec<Option<String>> = if entries.is_empty() {
                Vec::new()
            } else {
                pipe.query_async(&mut connection).await.map_err(err("expired_pending"))?
            };
            for ((match_id, score), value) in entries.iter().zip(values) {
                match value.as_deref().and_then(redis_record::pending_lease) {
                    Some(lease_until_ms) if lease_until_ms <= now_ms => {
                        if seen.insert(match_id.clone()) {
                            found.push((lease_until_ms, match_id.clone()));
                        }
                    }
                    Some(lease_until_ms) => {
                        // Renewed since the entry was written: move it to its real lease.
                        let () = redis::cmd("ZADD")
                            .arg(self.keys.pending())
                            .arg("XX")
                            .arg(lease_until_ms)
                            .arg(match_id)
                            .exec_async(&mut connection)
                            .await
                            .map_err(err("expired_pending"))?;
                    }
                    _ => {
                        // Gone (expired) or done: the entry is stale.
                        self.index_remove(match_id, score).await.map_err(err("expired_pending"))?;
                    }
                }
            }
            if entries.len() < want {
                break; // the range is exhausted
            }
            // Otherwise the stale entries just dropped made room: the next round starts after the
            // live ones (which stay in range) and may find more.
        }
        found.sort_unstable();
        Ok(found.into_iter().take(limit).map(|(_, match_id)| match_id).collect())
    }

    async fn put_latencies_inner(
        &self,
        player_id: &str,
        latencies: &BTreeMap<String, u32>,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        let key = self.keys.latency(player_id);
        let keep_ms = duration_millis(keep_for);
        let mut connection = self.connection();
        let command = if latencies.is_empty() || keep_ms == 0 {
            redis::cmd("DEL").arg(key).to_owned()
        } else {
            let json = serde_json::to_string(latencies)
                .map_err(|e| StoreError::permanent(format!("cannot encode latencies: {e}")))?;
            redis::cmd("SET").arg(key).arg(json).arg("PX").arg(keep_ms).to_owned()
        };
        command.exec_async(&mut connection).await.map_err(err("put_latencies"))
    }

    async fn get_latencies_inner(
        &self,
        player_ids: &[String],
    ) -> Result<BTreeMap<String, BTreeMap<String, u32>>, StoreError> {
        let players: BTreeSet<&String> = player_ids.iter().collect();
        if players.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut pipe = redis::pipe();
        for player_id in &players {
            pipe.cmd("GET").arg(self.keys.latency(player_id));
        }
        let mut connection = self.connection();
        let values: Vec<Option<String>> =
            pipe.query_async(&mut connection).await.map_err(err("get_latencies"))?;
        let mut found = BTreeMap::new();
        for (player_id, value) in players.into_iter().zip(values) {
            let Some(json) = value else { continue };
            let latencies: BTreeMap<String, u32> = serde_json::from_str(&json).map_err(|e| {
                StoreError::permanent(format!("unreadable latencies stored for player {player_id:?}: {e}"))
            })?;
            if !latencies.is_empty() {
                found.insert(player_id.clone(), latencies);
            }
        }
        Ok(found)
    }

    async fn cool_down_inner(&self, location: &str, for_: Duration) -> Result<(), StoreError> {
        let key = self.keys.cooldown(location);
        let ms = duration_millis(for_);
        let mut connection = self.connection();
        let command = if ms == 0 {
            redis::cmd("DEL").arg(key).to_owned()
        } else {
            redis::cmd("SET").arg(key).arg(1).arg("PX").arg(ms).to_owned()
        };
        command.exec_async(&mut connection).await.map_err(err("cool_down"))?;
        self.cooldowns.remember(location, (ms > 0).then(|| Instant::now() + for_));
        Ok(())
    }

    async fn cooling_inner(&self, locations: &[String]) -> Result<BTreeSet<String>, StoreError> {
        let locations: BTreeSet<&String> = locations.iter().collect();
        let (mut cooling, unknown) = self.cooldowns.lookup(&locations);
        if unknown.is_empty() {
            return Ok(cooling);
        }
        let mut pipe = redis::pipe();
        for location in &unknown {
            pipe.cmd("PTTL").arg(self.keys.cooldown(location));
        }
        let mut connection = self.connection();
        let remaining_ms: Vec<i64> = pipe.query_async(&mut connection).await.map_err(err("cooling"))?;
        let now = Instant::now();
        for (location, ms) in unknown.into_iter().zip(remaining_ms) {
            // PTTL: -2 no key, -1 no expiry (never written by us), otherwise milliseconds left.
            let until = match ms {
                -2 => None,
                -1 => Some(now + COOLDOWN_CACHE),
                ms => Some(now + Duration::from_millis(ms.max(0) as u64)),
            };
            self.cooldowns.remember(location, until);
            if until.is_some_and(|until| until > now) {
                cooling.insert(location.clone());
            }
        }
        Ok(cooling)
    }
}

/// How long this process trusts what it last read (or wrote) about a location's cool-down. Every
/// placement asks; with the cache a busy instance reads Redis about once a second per location,
/// and another instance's new cool-down reaches it at most this late.
const COOLDOWN_CACHE: Duration = Duration::from_secs(1);

#[derive(Default)]
struct CooldownCache(Mutex<HashMap<String, CachedCooldown>>);

struct CachedCooldown {
    checked: Instant,
    cooling_until: Option<Instant>,
}

impl CooldownCache {
    fn remember(&self, location: &str, cooling_until: Option<Instant>) {
        let entry = CachedCooldown { checked: Instant::now(), cooling_until };
        self.0.lock().expect("cooldown cache poisoned").insert(location.to_owned(), entry);
    }

    /// The cached cooling locations among `locations`, and those not known freshly enough.
    fn lookup<'a>(&self, locations: &BTreeSet<&'a String>) -> (BTreeSet<String>, Vec<&'a String>) {
        let now = Instant::now();
        let cache = self.0.lock().expect("cooldown cache poisoned");
        let mut cooling = BTreeSet::new();
        let mut unknown = Vec::new();
        for location in locations {
            match cache.get(location.as_str()) {
                Some(entry) if now.duration_since(entry.checked) < COOLDOWN_CACHE => {
                    if entry.cooling_until.is_some_and(|until| until > now) {
                        cooling.insert((*location).clone());
                    }
                }
                _ => unknown.push(*location),
            }
        }
        (cooling, unknown)
    }
}

/// A seat record's creation in a finishing pipeline: its commands queued, or its answer known
/// without them (refused or failed before anything was sent).
enum Creation<'a> {
    Queued(&'a NewSession, super::seats_redis::SessionCreation),
    Answered(Result<SeatResult<SessionSeats>, StoreError>),
}

/// A [`Completion`] whose outcome's JSON ([`Outcome::to_json`]) is in hand: what the complete
/// script is called with.
#[derive(Clone, Copy)]
struct Rendered<'a> {
    match_id: &'a str,
    lease: &'a Lease,
    outcome: &'a Outcome,
    json: &'a str,
    keep_for: Duration,
    owed: Option<(&'a Owed, OffsetDateTime)>,
}

impl<'a> Rendered<'a> {
    /// `None` when the outcome did not render.
    fn of(completion: Completion<'a>) -> Option<Self> {
        let Completion { match_id, lease, outcome, json, keep_for, owed } = completion;
        Some(Self { match_id, lease, outcome, json: json?, keep_for, owed })
    }
}

impl StateStore for RedisStore {
    async fn finish_placement(
        &self,
        completion: Completion<'_>,
        seats: Option<(&NewSession, Duration)>,
    ) -> Finished {
        match (seats, Rendered::of(completion)) {
            (seats, Some(rendered)) if seats.is_some() || rendered.owed.is_some() => {
                let finished = self.finish_pipelined(rendered, seats);
                tokio::time::timeout(OPERATION_TIMEOUT, finished).await.unwrap_or_else(|_| {
                    let late = |operation| {
                        StoreError::transient(format!(
                            "redis {operation}: no answer within {OPERATION_TIMEOUT:?}"
                        ))
                    };
                    (Err(late("complete")), seats.map(|_| Err(late("create_session"))))
                })
            }
            // A failure: its outcome alone, with the text already rendered.
            (None, Some(rendered)) => (bounded_store("complete", self.complete_inner(rendered)).await, None),
            // The outcome did not render: `complete` renders it again and says why.
            _ => finish_concurrently(self, completion, seats).await,
        }
    }
}

impl PlacementStore for RedisStore {
    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome, StoreError> {
        bounded_store("claim", self.claim_inner(claim)).await
    }

    async fn renew(
        &self,
        match_id: &str,
        lease: &Lease,
        now: OffsetDateTime,
        lease_for: Duration,
    ) -> Result<bool, StoreError> {
        bounded_store("renew", self.renew_inner(match_id, lease, now, lease_for)).await
    }

    async fn complete(
        &self,
        match_id: &str,
        lease: &Lease,
        outcome: &Outcome,
        keep_for: Duration,
    ) -> Result<bool, StoreError> {
        let json = outcome
            .to_json()
            .map_err(|e| StoreError::permanent(format!("cannot encode the outcome: {e}")))?;
        let rendered = Rendered { match_id, lease, outcome, json: &json, keep_for, owed: None };
        bounded_store("complete", self.complete_inner(rendered)).await
    }

    async fn get(&self, match_id: &str) -> Result<Option<PlacementRecord>, StoreError> {
        bounded_store("get", self.get_inner(match_id)).await
    }

    async fn expired_pending(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<String>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        bounded_store("expired_pending", self.expired_pending_inner(now, limit)).await
    }
}

impl LatencyStore for RedisStore {
    async fn put_latencies(
        &self,
        player_id: &str,
        latencies: &BTreeMap<String, u32>,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        bounded_store("put_latencies", self.put_latencies_inner(player_id, latencies, keep_for)).await
    }

    async fn get_latencies(
        &self,
        player_ids: &[String],
    ) -> Result<BTreeMap<String, BTreeMap<String, u32>>, StoreError> {
        bounded_store("get_latencies", self.get_latencies_inner(player_ids)).await
    }
}

impl CooldownStore for RedisStore {
    async fn cool_down(&self, location: &str, for_: Duration) -> Result<(), StoreError> {
        bounded_store("cool_down", self.cool_down_inner(location, for_)).await
    }

    async fn cooling(&self, locations: &[String]) -> Result<BTreeSet<String>, StoreError> {
        bounded_store("cooling", self.cooling_inner(locations)).await
    }
}

/// The values of a delivery record: claimed and in progress, or acted on. Earlier versions wrote
/// `1` for both; it reads as done, as it did then.
const DELIVERY_IN_PROGRESS: &str = "p";
const DELIVERY_DONE: &str = "d";

impl DeliveryLog for RedisStore {
    fn first_delivery<'a>(
        &'a self,
        key: &'a str,
        hold: Duration,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Delivery, StoreError>> + Send + 'a>> {
        let mut connection = self.connection();
        let key = self.keys.delivery(key);
        let ms = duration_millis(hold).max(1);
        Box::pin(bounded("first_delivery", async move {
            // SET NX GET answers nil when it wrote, and the value it left when the key existed.
            let earlier: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg(DELIVERY_IN_PROGRESS)
                .arg("NX")
                .arg("PX")
                .arg(ms)
                .arg("GET")
                .query_async(&mut connection)
                .await?;
            Ok(match earlier.as_deref() {
                None => Delivery::First,
                Some(DELIVERY_IN_PROGRESS) => Delivery::InProgress,
                Some(_) => Delivery::Done,
            })
        }))
    }

    fn keep_delivery<'a>(
        &'a self,
        key: &'a str,
        keep_for: Duration,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>> {
        let mut connection = self.connection();
        let key = self.keys.delivery(key);
        let ms = duration_millis(keep_for).max(1);
        Box::pin(bounded("keep_delivery", async move {
            redis::cmd("SET").arg(key).arg(DELIVERY_DONE).arg("PX").arg(ms).exec_async(&mut connection).await
        }))
    }

    fn forget_delivery<'a>(
        &'a self,
        key: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>> {
        let mut connection = self.connection();
        let key = self.keys.delivery(key);
        Box::pin(bounded("forget_delivery", async move {
            redis::cmd("DEL").arg(key).exec_async(&mut connection).await
        }))
    }
}

fn ticket_json(status: &TicketStatus) -> Result<String, StoreError> {
    serde_json::to_string(status)
        .map_err(|e| StoreError::permanent(format!("cannot encode a ticket status: {e}")))
}

impl TicketStore for RedisStore {
    fn put_ticket_status<'a>(
        &'a self,
        status: &'a TicketStatus,
        keep_for: Duration,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>> {
        let mut connection = self.connection();
        let key = self.keys.ticket(&status.ticket_id);
        let ms = duration_millis(keep_for);
        Box::pin(bounded_store("put_ticket_status", async move {
            let command = if ms == 0 {
                redis::cmd("DEL").arg(key).to_owned()
            } else {
                redis::cmd("SET").arg(key).arg(ticket_json(status)?).arg("PX").arg(ms).to_owned()
            };
            command.exec_async(&mut connection).await.map_err(err("put_ticket_status"))
        }))
    }

    fn get_ticket_status<'a>(
        &'a self,
        ticket_id: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Option<TicketStatus>, StoreError>> + Send + 'a>> {
        let mut connection = self.connection();
        let key = self.keys.ticket(ticket_id);
        Box::pin(bounded_store("get_ticket_status", async move {
            let json: Option<String> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut connection)
                .await
                .map_err(err("get_ticket_status"))?;
            json.map(|json| {
                serde_json::from_str(&json).map_err(|e| {
                    StoreError::permanent(format!("unreadable status stored for ticket {ticket_id:?}: {e}"))
                })
            })
            .transpose()
        }))
    }

    fn put_unmatched_ticket_status<'a>(
        &'a self,
        status: &'a TicketStatus,
        keep_for: Duration,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<bool, StoreError>> + Send + 'a>> {
        let mut connection = self.connection();
        let key = self.keys.ticket(&status.ticket_id);
        let ms = duration_millis(keep_for).max(1);
        Box::pin(bounded_store("put_unmatched_ticket_status", async move {
            SCRIPTS
                .ticket_unmatched
                .key(key)
                .arg(ticket_json(status)?)
                .arg(ms)
                .invoke_async(&mut connection)
                .await
                .map_err(err("put_unmatched_ticket_status"))
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// Keys

#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    fn placement(&self, match_id: &str) -> String {
        tagged_key(&self.prefix, "match", match_id)
    }

    fn pending(&self) -> String {
        [&self.prefix, ":{matches}:pending"].concat()
    }

    /// The announcement outbox (`announce_redis.rs`), in the pending index's slot.
    pub(super) fn announcements(&self) -> String {
        [&self.prefix, ":{matches}:announce"].concat()
    }

    /// The session-end outbox (`announce_redis.rs`), in the seats indexes' slot.
    pub(super) fn end_announcements(&self) -> String {
        [&self.prefix, ":{seats}:end-announce"].concat()
    }

    fn latency(&self, player_id: &str) -> String {
        tagged_key(&self.prefix, "latency", player_id)
    }

    fn cooldown(&self, location: &str) -> String {
        tagged_key(&self.prefix, "cooldown", location)
    }

    fn delivery(&self, key: &str) -> String {
        tagged_key(&self.prefix, "delivery", key)
    }

    fn ticket(&self, ticket_id: &str) -> String {
        tagged_key(&self.prefix, "ticket", ticket_id)
    }
}

/// `<prefix>:<kind>:{<hash tag of id>}`. Built by hand, not with `format!`: keys are made several
/// times per placement, and the formatting machinery costs more than the copying.
pub(super) fn tagged_key(prefix: &str, kind: &str, id: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + kind.len() + id.len() + 4);
    key.push_str(prefix);
    key.push(':');
    key.push_str(kind);
    key.push_str(":{");
    push_hash_tag(&mut key, id);
    key.push('}');
    key
}

/// Appends the contents of an id's hash tag: the id with `%`, `{` and `}` percent-encoded, so the
/// tag is closed by the one `}` that follows it; the empty id becomes `%` so the tag is never empty.
fn push_hash_tag(out: &mut String, id: &str) {
    if id.is_empty() {
        out.push('%');
    } else {
        push_percent_encoded(out, id, b"%{}");
    }
}

// ---------------------------------------------------------------------------------------------
// Records

// ---------------------------------------------------------------------------------------------
// Errors and time bounds

/// Maps a Redis error to the core's terms: connection trouble and timeouts may pass (transient);
/// script, type and data errors will not (permanent).
pub(super) fn store_error(operation: &str, error: &RedisError) -> StoreError {
    let transient = error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_cluster_error()
        || matches!(
            error.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                )
        )
        || refused_for_now(error);
    let message = format!("redis {operation}: {error}");
    if transient { StoreError::transient(message) } else { StoreError::permanent(message) }
}

/// Refusals that clear up by themselves, which redis-rs has no kind for: out of memory under
/// `noeviction` (until keys expire), another client's slow script, too few replicas, a failing
/// snapshot disk, and too many clients. A pipeline's error carries no code, so its text is read.
fn refused_for_now(error: &RedisError) -> bool {
    const CODES: [&str; 4] = ["OOM", "BUSY", "NOREPLICAS", "MISCONF"];
    if error.code().is_some_and(|code| CODES.contains(&code)) {
        return true;
    }
    let text = error.to_string();
    text.contains("max number of clients reached")
        || CODES.iter().any(|code| text.split(|c: char| !c.is_ascii_alphanumeric()).any(|word| word == *code))
}

pub(super) fn err(operation: &'static str) -> impl Fn(RedisError) -> StoreError {
    move |error| store_error(operation, &error)
}

/// Runs one Redis call within [`OPERATION_TIMEOUT`].
pub(super) async fn bounded<T>(
    operation: &'static str,
    call: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, StoreError> {
    bounded_store(operation, async { call.await.map_err(err(operation)) }).await
}

/// A final outcome whose pending-index entry is to go, and the latest moment to send its removal.
struct DonePending {
    match_id: String,
    send_by: Instant,
}

/// Removes final outcomes' entries from the pending index at `index`: each removal waits up to
/// [`REMOVAL_WINDOW`] for others, so the removals cost about one `ZREM` per window (up to
/// [`REMOVAL_BATCH`] entries each). The `ZREM` is unconditional, which is safe only while the
/// completed record lives (a new claim of the match would add a new entry after it expires): a
/// removal not sent by its `send_by` (half the record's life, at most [`REMOVAL_MAX_DELAY`]) is
/// skipped, as is a batch that fails. Skipped entries stay for `expired_pending` to drop. Ends when
/// every store clone (every sender) is gone.
async fn remove_in_batches(
    connection: ConnectionManager,
    index: String,
    mut done: mpsc::Receiver<DonePending>,
) {
    let mut batch = Vec::new();
    while let Some(first) = done.recv().await {
        batch.push(first);
        tokio::time::sleep(REMOVAL_WINDOW).await;
        while batch.len() < REMOVAL_BATCH
            && let Ok(next) = done.try_recv()
        {
            batch.push(next);
        }
        let now = Instant::now();
        let match_ids: Vec<String> =
            batch.drain(..).filter(|done| done.send_by > now).map(|done| done.match_id).collect();
        if match_ids.is_empty() {
            continue;
        }
        let mut connection = connection.clone();
        let removal = redis::cmd("ZREM").arg(&index).arg(&match_ids).to_owned();
        if let Err(error) = bounded("index_remove", removal.query_async::<i64>(&mut connection)).await {
            tracing::debug!(%error, entries = match_ids.len(), "pending index entries left for expired_pending to drop");
        }
    }
}

/// Runs one store operation within [`OPERATION_TIMEOUT`]; running out of time is transient.
pub(super) async fn bounded_store<T>(
    operation: &'static str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(OPERATION_TIMEOUT, call).await.unwrap_or_else(|_| {
        Err(StoreError::transient(format!("redis {operation}: no answer within {OPERATION_TIMEOUT:?}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_tag(id: &str) -> String {
        let mut tag = String::new();
        push_hash_tag(&mut tag, id);
        tag
    }

    #[test]
    fn index_expiries_skip_refreshes_only_while_one_covers_the_add() {
        let expiries = IndexExpiries::default();
        let t0 = Instant::now();
        let ttl = INDEX_TTL_FLOOR_MS + 3_600_000;
        assert_eq!(expiries.needed(&["a"], ttl, t0), Some(ttl + INDEX_EXPIRY_SLACK_MS), "nothing known yet");
        // A shorter need is asked for the floor: one horizon for every request and instance.
        assert_eq!(expiries.needed(&["c"], 1_000, t0), Some(INDEX_TTL_FLOOR_MS + INDEX_EXPIRY_SLACK_MS));
        expiries.remember("a", t0, ttl + INDEX_EXPIRY_SLACK_MS);
        let within = t0 + Duration::from_millis(INDEX_EXPIRY_SLACK_MS as u64);
        assert_eq!(expiries.needed(&["a"], ttl, within), None, "covered until the slack is used up");
        assert!(expiries.needed(&["a"], ttl, within + Duration::from_millis(1)).is_some(), "one ms past it");
        assert!(expiries.needed(&["a"], ttl + INDEX_EXPIRY_SLACK_MS + 1, t0).is_some(), "a longer need");
        assert!(expiries.needed(&["b"], ttl, t0).is_some(), "another index");
        assert!(expiries.needed(&["a", "b"], ttl, t0).is_some(), "one of two not covered");
    }

    #[test]
    fn hash_tags_never_contain_braces_and_never_collide() {
        let ids = ["m-1", "{m}", "a}b{c", "%7B", "{", "}", "%", "", "a:b:{c}", "{}"];
        let tags: Vec<String> = ids.iter().map(|id| hash_tag(id)).collect();
        for tag in &tags {
            assert!(!tag.is_empty() && !tag.contains(['{', '}']), "{tag:?}");
        }
        let distinct: HashSet<&String> = tags.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "{tags:?}");
        assert_eq!(hash_tag("a}b{c%"), "a%7Db%7Bc%25");
    }

    #[test]
    fn keys_carry_the_prefix_and_one_hash_tag() {
        let keys = Keys { prefix: "gb".to_owned() };
        assert_eq!(keys.placement("x{y}:z"), "gb:match:{x%7By%7D:z}");
        assert_eq!(keys.pending(), "gb:{matches}:pending");
        assert_eq!(keys.latency("p"), "gb:latency:{p}");
        assert_eq!(keys.cooldown("eu-west-1"), "gb:cooldown:{eu-west-1}");
        assert_eq!(keys.delivery("sns:m{1}"), "gb:delivery:{sns:m%7B1%7D}");
        assert_eq!(keys.ticket("t-1"), "gb:ticket:{t-1}");
    }

    #[test]
    fn connection_errors_are_transient_and_script_errors_permanent() {
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(store_error("get", &refused).transient);
        let timeout = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(store_error("get", &timeout).transient);
        let wrong_type = RedisError::from((ErrorKind::UnexpectedReturnType, "wrong type"));
        assert!(!store_error("get", &wrong_type).transient);
    }
}

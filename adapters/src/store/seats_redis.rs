//! Seats in Redis: one HASH per session, changed only by single-key Lua scripts that apply the
//! core ledger's rules (`bridge::seats`), plus two indexes for listing.
//!
//! # Keys
//!
//! | key | type | contents | expires |
//! | --- | --- | --- | --- |
//! | `<prefix>:seats:{<session_id>}` | HASH | the session's seats (fields below) | `keep_for` after its last change |
//! | `<prefix>:{seats}:sessions` | ZSET | session id → first-indexed ms, every session | at least 2 × `keep_for` past its last refresh |
//! | `<prefix>:seats-image:{<image>}` | ZSET | the same, per image (backfill candidates) | likewise |
//! | `<prefix>:player:{<player_id>}` | SET | ids of sessions where the player got a seat | 2 days after their last seat |
//!
//! Record fields: `session_id`, `capacity`, `status` (`created`/`running`/`ended`), `image`,
//! `version` (JSON: `null` or a string), `location`, `labels` and `metadata` (JSON), `keep_ms`,
//! `indexed_until_ms`; one `j:<player>` = `1` per joined player; one `r:<reservation_id>` =
//! `<expires_ms>|<players as a JSON array>` per reservation; one `q:<player>` = the decimal order
//! of the last ordered join or leave applied to the player (`SessionSeats::last_order`, kept after
//! they leave; stored with the change it orders, in the same script). Times are ms since the Unix
//! epoch from the caller's `now`. Every script first treats reservations with `expires_ms <= now`
//! as gone (and deletes them when it changes the record), so expiry needs no timer.
//!
//! **Atomicity.** Each operation is one script on the one session key (so one cluster slot), except
//! creation: the new record is written under a staging key in the same slot
//! (`<prefix>:seats-new:{<session_id>}:<random>`, with the record's expiry) and moved into place
//! with `RENAMENX`, which refuses when a record exists; then the create script answers and deletes
//! the staged copy. A staging key outlives its creation only if that is cut short, and expires with
//! the record's life.
//! `reserve_best` tries the ranked candidates one script at a time; each attempt is atomic in its
//! session, which is what "never more players + reservations than capacity" needs.
//!
//! **Indexes** live in other slots, so they are maintained beside the scripts, with plain commands
//! (per index `ZADD NX` and `PEXPIRE NX|GT`, the expiries at most once a minute per process on
//! creation, see `IndexExpiries`): a session is added just before its record is
//! created (same pipeline), and again whenever a script reports that the record could outlive the
//! indexes. The record remembers `indexed_until_ms` = the last refresh + 2 × `keep_ms`, on Redis's
//! clock like the TTLs (at creation on this host's clock, less half a `keep_ms` for skew), so this
//! costs a round trip about once per `keep_for`, not per operation. A session is removed from the
//! indexes when it ends, and `list_sessions` re-reads every listed record and drops entries whose
//! record is gone or ended. A failed index refresh after a change is logged, not reported (the
//! change is made).
//!
//! **Players** are indexed so that where a player sits can be found without reading every
//! session (`sessions_holding`, for Nakama's `session_end`, which names no match). The index is a
//! hint, written just before the change that seats a player (a creation's players, a join, a
//! reservation; the same pipeline or alongside), never removed by one: a read checks every
//! session it names and drops the entries that no longer hold a seat (the player left, the
//! session ended or is gone). So it may name too much, never too little, unless its own write
//! failed (logged) or the player's last seat change is more than two days old.
//!
//! **Ended sessions** keep their record as a tombstone (`status` `ended`, no seats) for `keep_for`,
//! so a late create cannot bring them back; every operation on them answers `Ended`. The tombstone
//! keeps how the session ended for its announcement: `ended_reason`, `ended_ms`, `ej:<player>` per
//! player who was joined and `er:<player>` per player who held a live reservation, and `ended_owed`
//! = `1` while the end is owed to the session-event sinks (the session-end outbox,
//! `announce_redis.rs`; an owed tombstone is kept at least as long as the outbox retries).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use redis::Script;
use time::OffsetDateTime;
use uuid::Uuid;

use super::redis::{
    IndexAdded, RedisStore, Skipped, bounded, bounded_store, err, queue_index_add, store_error, tagged_key,
};
use super::{duration_millis, from_millis, ms_duration, to_millis, whole_millis};
use bridge::ports::{
    BackfillReserved, EndRecord, Ending, RecordedPage, RecordedSession, SeatChange, SeatStore, SessionsPage,
    StoreError,
};
use bridge::seats::{
    EndReason, Ended, ExpiredReservation, Joined, JsonText, Left, NewSession, Reservation, Reserved,
    SeatError, SeatResult, SessionEnd, SessionInfo, SessionSeats, SessionStatus,
};

macro_rules! seat_script {
    ($file:literal) => {
        Script::new(concat!(include_str!("scripts/seats_lib.lua"), include_str!($file)))
    };
}

struct SeatScripts {
    create: Script,
    join: Script,
    leave: Script,
    reserve: Script,
    expire: Script,
    running: Script,
    end: Script,
    running_light: Script,
}

static SCRIPTS: LazyLock<SeatScripts> = LazyLock::new(|| SeatScripts {
    // Standalone: it needs none of the library.
    create: Script::new(include_str!("scripts/seats_create.lua")),
    join: seat_script!("scripts/seats_join.lua"),
    leave: seat_script!("scripts/seats_leave.lua"),
    reserve: seat_script!("scripts/seats_reserve.lua"),
    expire: seat_script!("scripts/seats_expire.lua"),
    running: seat_script!("scripts/seats_running.lua"),
    end: seat_script!("scripts/seats_end.lua"),
    running_light: seat_script!("scripts/seats_running_light.lua"),
});

/// How long a player's index entry lives after their last seat change (see "Players").
const PLAYER_INDEX_LIFE_MS: i64 = 2 * 24 * 60 * 60 * 1000;

/// Records read per round trip when listing.
const LIST_CHUNK: usize = 256;
/// Index entries asked for per `ZSCAN` call when listing.
const SCAN_COUNT: usize = 1024;

/// A script's answer: tag (`ok` or why nothing changed), detail, the record after a change, and how
/// long the indexes must live from now (0: no refresh needed).
type Reply = (String, Vec<String>, HashMap<String, String>, i64);

/// A seat record's creation queued on a pipeline, waiting for its commands' answers.
pub(super) struct SessionCreation {
    /// Commands queued first to index the session's players; their answers come first.
    player_index_commands: usize,
    seats: SessionSeats,
    now: OffsetDateTime,
    now_ms: i64,
    keep_ms: i64,
    index_ttl: i64,
    staged: String,
    indexes: [String; 2],
    sent_at: Instant,
    expire_ms: Option<i64>,
}

// ---------------------------------------------------------------------------------------------
// Keys

pub(super) fn seats_key(prefix: &str, session_id: Uuid) -> String {
    tagged_key(prefix, "seats", session_id.as_hyphenated().encode_lower(&mut Uuid::encode_buffer()))
}

pub(super) fn player_key(prefix: &str, player: &str) -> String {
    tagged_key(prefix, "player", player)
}

pub(super) fn all_index(prefix: &str) -> String {
    [prefix, ":{seats}:sessions"].concat()
}

pub(super) fn image_index(prefix: &str, image: &str) -> String {
    tagged_key(prefix, "seats-image", image)
}

// ---------------------------------------------------------------------------------------------
// Records

fn corrupt(session: &str, what: &str) -> StoreError {
    StoreError::permanent(format!("seats record {session:?}: {what}"))
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::permanent(format!("cannot encode seats: {e}")))
}

/// This host's clock in milliseconds since the Unix epoch (the caller's `now` may be a test's
/// fixed time; the record's index bookkeeping is about Redis's real clock).
fn system_millis() -> i64 {
    to_millis(OffsetDateTime::now_utc())
}

/// A reservation's stored value `<expires_ms>|<players JSON>`.
fn parse_reservation(session: &str, value: &str) -> Result<Reservation, StoreError> {
    let (expires, players) =
        value.split_once('|').ok_or_else(|| corrupt(session, "a reservation without expiry"))?;
    let expires: i64 =
        expires.parse().map_err(|_| corrupt(session, "a reservation expiry is not a number"))?;
    let players: BTreeSet<String> = serde_json::from_str(players)
        .map_err(|e| corrupt(session, &format!("unreadable reservation players: {e}")))?;
    Ok(Reservation { players, expires_at: from_millis(expires) })
}

fn reservation_value(reservation: &Reservation) -> Result<String, StoreError> {
    // Pushed, not `format!`ed: every new session's record has one (~900 instructions less each).
    let players = json(&reservation.players)?;
    let mut value = to_millis(reservation.expires_at).to_string();
    value.reserve(1 + players.len());
    value.push('|');
    value.push_str(&players);
    Ok(value)
}

/// A record field's name: `prefix` (`j:`, `r:`, `q:`) then `name`.
fn field_name(prefix: &str, name: &str) -> String {
    let mut field = String::with_capacity(prefix.len() + name.len());
    field.push_str(prefix);
    field.push_str(name);
    field
}

/// The record's fields for a new session, each handed to `field` as (name, value): written
/// straight into the script's arguments, without a list of owned strings between.
fn record_fields(
    seats: &SessionSeats,
    keep_ms: i64,
    mut field: impl FnMut(&str, &str),
) -> Result<(), StoreError> {
    field("session_id", seats.session_id.as_hyphenated().encode_lower(&mut Uuid::encode_buffer()));
    field("capacity", &seats.capacity.to_string());
    field("status", seats.status.as_str());
    field("image", &seats.info.image);
    field("version", &json(&seats.info.version)?);
    field("location", &seats.info.location);
    field("labels", &json(&seats.info.labels)?);
    field("metadata", seats.info.metadata.as_str());
    field("keep_ms", &keep_ms.to_string());
    for player in &seats.joined {
        field(&field_name("j:", player), "1");
    }
    for (id, reservation) in &seats.reservations {
        let mut buffer = Uuid::encode_buffer();
        field(
            &field_name("r:", id.as_hyphenated().encode_lower(&mut buffer)),
            &reservation_value(reservation)?,
        );
    }
    for (player, order) in &seats.last_order {
        field(&field_name("q:", player), &order.to_string());
    }
    Ok(())
}

/// A session's seats from its HASH fields (`None` for an absent key).
fn parse_seats(mut fields: HashMap<String, String>) -> Result<Option<SessionSeats>, StoreError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let session = fields.get("session_id").cloned().unwrap_or_default();
    let mut take =
        |name: &str| fields.remove(name).ok_or_else(|| corrupt(&session, &format!("no field `{name}`")));
    let session_id =
        Uuid::parse_str(&take("session_id")?).map_err(|_| corrupt(&session, "bad session id"))?;
    let capacity = take("capacity")?.parse().map_err(|_| corrupt(&session, "capacity is not a number"))?;
    let status = SessionStatus::parse(&take("status")?).ok_or_else(|| corrupt(&session, "unknown status"))?;
    let image = take("image")?;
    let location = take("location")?;
    let unreadable = |what: &str, e: serde_json::Error| corrupt(&session, &format!("unreadable {what}: {e}"));
    let version = serde_json::from_str(&take("version")?).map_err(|e| unreadable("version", e))?;
    let labels = serde_json::from_str(&take("labels")?).map_err(|e| unreadable("labels", e))?;
    let metadata = JsonText::parse(take("metadata")?).map_err(|e| unreadable("metadata", e))?;
    let mut seats = SessionSeats {
        session_id,
        capacity,
        status,
        info: SessionInfo { image, version, location, labels, metadata },
        joined: BTreeSet::new(),
        reservations: BTreeMap::new(),
        last_order: BTreeMap::new(),
    };
    for (field, value) in fields {
        if let Some(player) = field.strip_prefix("j:") {
            seats.joined.insert(player.to_owned());
        } else if let Some(id) = field.strip_prefix("r:") {
            let id = Uuid::parse_str(id).map_err(|_| corrupt(&session, "bad reservation id"))?;
            seats.reservations.insert(id, parse_reservation(&session, &value)?);
        } else if let Some(player) = field.strip_prefix("q:") {
            let order = value.parse().map_err(|_| corrupt(&session, "an order is not a number"))?;
            seats.last_order.insert(player.to_owned(), order);
        }
    }
    Ok(Some(seats))
}

/// Players with a one-letter kind prefix (`n:alice`), grouped by kind.
fn by_kind(detail: &[String]) -> HashMap<char, BTreeSet<String>> {
    let mut kinds: HashMap<char, BTreeSet<String>> = HashMap::new();
    for entry in detail {
        let mut chars = entry.chars();
        if let (Some(kind), Some(':')) = (chars.next(), chars.next()) {
            kinds.entry(kind).or_default().insert(chars.as_str().to_owned());
        }
    }
    kinds
}

fn number(detail: &[String], index: usize) -> u32 {
    detail.get(index).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// The refusal a script's tag stands for.
fn refusal(tag: &str, detail: &[String]) -> Result<SeatError, StoreError> {
    Ok(match tag {
        "not_found" => SeatError::NotFound,
        "ended" => SeatError::Ended,
        "exists" => SeatError::AlreadyExists,
        "full" => SeatError::SessionFull {
            open: number(detail, 0),
            needed: number(detail, 1),
            capacity: number(detail, 2),
        },
        "no_seats" => SeatError::NoSeats { open: number(detail, 0), needed: number(detail, 1) },
        "already_joined" => SeatError::AlreadyJoined { players: detail.iter().cloned().collect() },
        "no_players" => SeatError::NoPlayers,
        other => {
            return Err(StoreError::permanent(format!("redis seats: unexpected script answer {other:?}")));
        }
    })
}

fn distinct(players: &[String]) -> BTreeSet<&String> {
    players.iter().collect()
}

/// A join's or leave's script arguments after `now_ms`: the order (`''` = unordered), then the
/// distinct players.
fn ordered_args(players: &[String], order: Option<u64>) -> Vec<String> {
    let mut args = vec![order.map(|order| order.to_string()).unwrap_or_default()];
    args.extend(distinct(players).into_iter().cloned());
    args
}

fn positive_keep(keep_for: Duration) -> Result<i64, StoreError> {
    match duration_millis(keep_for) {
        0 => Err(StoreError::permanent("seats: a session record must be kept for more than 0 ms")),
        ms => Ok(ms),
    }
}

// ---------------------------------------------------------------------------------------------
// Operations

impl RedisStore {
    /// Runs `script` on the session's record with `args`; on success parses the record, refreshes
    /// the indexes when asked to, and hands the detail to `outcome`.
    async fn seat_op<T>(
        &self,
        operation: &'static str,
        script: &Script,
        session_id: Uuid,
        args: Vec<String>,
        now_ms: i64,
        outcome: impl FnOnce(&[String]) -> Result<T, StoreError>,
    ) -> Result<SeatResult<SeatChange<T>>, StoreError> {
        let mut invocation = script.key(seats_key(self.prefix(), session_id));
        invocation.arg(now_ms);
        for arg in args {
            invocation.arg(arg);
        }
        let mut connection = self.connection();
        let (tag, detail, fields, index_ttl): Reply =
            invocation.invoke_async(&mut connection).await.map_err(err(operation))?;
        if tag != "ok" {
            return Ok(Err(refusal(&tag, &detail)?));
        }
        let session = parse_seats(fields)?.ok_or_else(|| {
            StoreError::permanent(format!("redis {operation}: the script returned no record"))
        })?;
        // The change is made: an index that could not be updated is logged, not failed (the
        // indexes are re-checked on every read, and refreshed again within `keep_for`).
        if index_ttl > 0
            && let Err(error) = self.index_session(session_id, &session.info.image, now_ms, index_ttl).await
        {
            tracing::warn!(%session_id, error = %store_error(operation, &error), "seats index not refreshed");
        }
        if session.status == SessionStatus::Ended
            && let Err(error) = self.unindex_session(&session).await
        {
            tracing::warn!(%session_id, error = %store_error(operation, &error), "ended session left in the index");
        }
        let outcome = outcome(&detail)?;
        Ok(Ok(SeatChange { outcome, session: session.into_at(from_millis(now_ms)) }))
    }

    /// Adds the session to both indexes (if missing) and makes them live at least `ttl_ms`.
    async fn index_session(
        &self,
        session_id: Uuid,
        image: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> redis::RedisResult<()> {
        let member = session_id.to_string();
        let mut pipe = redis::pipe();
        for index in [all_index(self.prefix()), image_index(self.prefix(), image)] {
            queue_index_add(&mut pipe, &index, &member, now_ms, Some(ttl_ms), true);
        }
        let mut connection = self.connection();
        let _: (IndexAdded, (), (), IndexAdded, (), ()) = pipe.query_async(&mut connection).await?;
        Ok(())
    }

    async fn unindex_session(&self, session: &SessionSeats) -> redis::RedisResult<()> {
        let member = session.session_id.to_string();
        let mut pipe = redis::pipe();
        pipe.cmd("ZREM").arg(all_index(self.prefix())).arg(&member);
        pipe.cmd("ZREM").arg(image_index(self.prefix(), &session.info.image)).arg(&member);
        let mut connection = self.connection();
        pipe.exec_async(&mut connection).await
    }

    /// Queues, per player, the session's id into their index entry and the entry's new life;
    /// answers how many commands it queued.
    fn queue_player_index<'p>(
        &self,
        pipe: &mut redis::Pipeline,
        session_id: Uuid,
        players: impl IntoIterator<Item = &'p str>,
    ) -> usize {
        let member = session_id.to_string();
        let mut queued = 0;
        for player in players {
            let key = player_key(self.prefix(), player);
            pipe.cmd("SADD").arg(&key).arg(&member);
            pipe.cmd("PEXPIRE").arg(key).arg(PLAYER_INDEX_LIFE_MS);
            queued += 2;
        }
        queued
    }

    /// The commands that index `players` under the session (see "Players").
    fn player_index<'p>(
        &self,
        session_id: Uuid,
        players: impl IntoIterator<Item = &'p str>,
    ) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        self.queue_player_index(&mut pipe, session_id, players);
        pipe
    }

    /// Sends [`RedisStore::player_index`]'s commands; a failure is logged.
    async fn send_player_index(&self, session_id: Uuid, pipe: redis::Pipeline) {
        let mut connection = self.connection();
        if let Err(error) = pipe.exec_async(&mut connection).await {
            tracing::warn!(%session_id, error = %store_error("index_players", &error), "players not indexed; a Nakama session_end may miss them");
        }
    }

    async fn create_session_inner(
        &self,
        new: &NewSession,
        keep_for: Duration,
    ) -> Result<SeatResult<SessionSeats>, StoreError> {
        let mut pipe = redis::Pipeline::with_capacity(9);
        let creation = match self.queue_create_session(&mut pipe, new, keep_for)? {
            Ok(creation) => creation,
            Err(refused) => return Ok(Err(refused)),
        };
        let mut connection = self.connection();
        let answers: Vec<redis::Value> =
            pipe.query_async(&mut connection).await.map_err(err("create_session"))?;
        self.session_created(new, creation, answers).await
    }

    /// Queues the commands that create `new`'s record on `pipe` (which must ignore errors: each
    /// command's own answer counts), or refuses it at once. [`RedisStore::session_created`] reads
    /// their answers.
    pub(super) fn queue_create_session(
        &self,
        pipe: &mut redis::Pipeline,
        new: &NewSession,
        keep_for: Duration,
    ) -> Result<SeatResult<SessionCreation>, StoreError> {
        let keep_ms = positive_keep(keep_for)?;
        let now_ms = to_millis(new.now);
        // Times as Redis keeps them (milliseconds), so the answer is what a read returns.
        let now = from_millis(now_ms);
        let seats = match SessionSeats::create_at(new, Uuid::new_v4(), now, ms_duration(new.reservation_ttl))
        {
            Ok(seats) => seats,
            Err(refused) => return Ok(Err(refused)),
        };
        let index_ttl = keep_ms.saturating_mul(2);
        let member = new.session_id.to_string();
        // The new record is written under a staging name of its own in the record's slot, then
        // renamed into place only if no record is there (`RENAMENX` is atomic, and the expiry moves
        // with the value): plain commands, which cost Redis about half what the create script does
        // (a Lua call of a wide `HSET` costs twice the command). A refused rename (a duplicate, a
        // tombstone) leaves the answer to the create script, which also drops the staged copy.
        let mut staged = tagged_key(self.prefix(), "seats-new", &member);
        staged.push(':');
        staged.push_str(Uuid::new_v4().as_simple().encode_lower(&mut Uuid::encode_buffer()));
        let mut hset = redis::Cmd::with_capacity(24, 512);
        hset.arg("HSET").arg(&staged);
        record_fields(&seats, keep_ms, |name, value| {
            hset.arg(name).arg(value);
        })?;
        // Scripts keep `indexed_until_ms` on Redis's clock; here it is this host's, less half a
        // keep: a clock up to that far ahead of Redis's still cannot let the record outlive its
        // indexes (the first change after half a keep refreshes them, rather than after one).
        hset.arg("indexed_until_ms").arg(system_millis() + index_ttl - keep_ms / 2);
        // Index first: a session created but never indexed would be missed by backfill (an entry
        // left by a refused create is dropped by the next listing). One round trip: the pipeline
        // runs in order.
        let player_index_commands = self.queue_player_index(pipe, new.session_id, seats.seated_players());
        let indexes = [all_index(self.prefix()), image_index(self.prefix(), &new.info.image)];
        let sent_at = Instant::now();
        let expire_ms = self.index_expiries.needed(&indexes, index_ttl, sent_at);
        for index in &indexes {
            queue_index_add(pipe, index, &member, now_ms, expire_ms, true);
        }
        pipe.add_command(hset);
        pipe.cmd("PEXPIRE").arg(&staged).arg(keep_ms);
        pipe.cmd("RENAMENX").arg(&staged).arg(seats_key(self.prefix(), new.session_id));
        Ok(Ok(SessionCreation {
            player_index_commands,
            seats,
            now,
            now_ms,
            keep_ms,
            index_ttl,
            staged,
            indexes,
            sent_at,
            expire_ms,
        }))
    }

    /// The answer of a creation [`RedisStore::queue_create_session`] queued, from its commands'
    /// answers (`answers`, in order, nothing else).
    pub(super) async fn session_created(
        &self,
        new: &NewSession,
        creation: SessionCreation,
        mut answers: Vec<redis::Value>,
    ) -> Result<SeatResult<SessionSeats>, StoreError> {
        let player_index = answers.drain(..creation.player_index_commands.min(answers.len()));
        if player_index.as_slice().iter().any(|answer| matches!(answer, redis::Value::ServerError(_))) {
            tracing::warn!(session_id = %new.session_id, "players not indexed with the seat record; a Nakama session_end may miss them");
        }
        drop(player_index);
        let answers = redis::Value::Array(answers);
        // Both indexes' answers (`ZADD`'s, and the `PEXPIRE`s' when sent), then HSET, PEXPIRE and
        // RENAMENX.
        type Index = redis::RedisResult<IndexAdded>;
        type Renamed = redis::RedisResult<i64>;
        let (index_all, index_image, renamed) = if let Some(expire_ms) = creation.expire_ms {
            type Answers = (Index, Skipped, Skipped, Index, Skipped, Skipped, Skipped, Skipped, Renamed);
            let (index_all, all_nx, all_gt, index_image, image_nx, image_gt, _, _, renamed): Answers =
                redis::from_redis_value(answers).map_err(|e| err("create_session")(e.into()))?;
            for (index, expired) in creation.indexes.iter().zip([all_nx.and(all_gt), image_nx.and(image_gt)])
            {
                if expired.is_ok() {
                    self.index_expiries.remember(index, creation.sent_at, expire_ms);
                }
            }
            (index_all, index_image, renamed)
        } else {
            type Answers = (Index, Index, Skipped, Skipped, Renamed);
            let (index_all, index_image, _, _, renamed): Answers =
                redis::from_redis_value(answers).map_err(|e| err("create_session")(e.into()))?;
            (index_all, index_image, renamed)
        };
        let (tag, detail) = match renamed {
            Ok(1) => ("ok".to_owned(), Vec::new()),
            // A record is there: the script says which kind (or creates over a hash that is not
            // the bridge's, as it always did).
            Ok(_) => {
                let mut create = SCRIPTS.create.key(seats_key(self.prefix(), new.session_id));
                create.key(&creation.staged);
                create.arg(creation.now_ms).arg(creation.keep_ms);
                record_fields(&creation.seats, creation.keep_ms, |name, value| {
                    create.arg(name).arg(value);
                })?;
                let mut connection = self.connection();
                let (tag, detail, _, _): Reply =
                    create.invoke_async(&mut connection).await.map_err(err("create_session"))?;
                (tag, detail)
            }
            Err(error) => return Err(store_error("create_session", &error)),
        };
        if let Err(error) = index_all.and(index_image) {
            // The record may exist unindexed: index it again; should that fail too, the
            // reconciler's next scan finds the session unrecorded and its create re-indexes it.
            tracing::warn!(error = %store_error("create_session", &error), "seats index not written with the record; trying again");
            if let Err(error) =
                self.index_session(new.session_id, &new.info.image, creation.now_ms, creation.index_ttl).await
            {
                tracing::warn!(session_id = %new.session_id, error = %store_error("create_session", &error), "seats index not written");
            }
        }
        if tag != "ok" {
            return Ok(Err(refusal(&tag, &detail)?));
        }
        Ok(Ok(creation.seats.into_at(creation.now)))
    }

    async fn get_session_inner(
        &self,
        session_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<Option<SessionSeats>, StoreError> {
        let fields = self.record_fields("get_session", session_id).await?;
        Ok(parse_seats(fields)?.map(|seats| seats.into_at(whole_millis(now))))
    }

    /// Every field of the session's record (none when it is absent).
    async fn record_fields(
        &self,
        operation: &'static str,
        session_id: Uuid,
    ) -> Result<HashMap<String, String>, StoreError> {
        let mut connection = self.connection();
        redis::cmd("HGETALL")
            .arg(seats_key(self.prefix(), session_id))
            .query_async(&mut connection)
            .await
            .map_err(err(operation))
    }

    /// Every member of a seats index, each with its session id when it parses as one. `ZSCAN`, not
    /// one `ZRANGE`: the reconciler lists every session, and one reply of a hundred-thousand-entry
    /// index holds Redis (single-threaded) for tens of milliseconds. A `ZSCAN` returns every entry
    /// present throughout at least once; duplicates are dropped.
    async fn index_members(
        &self,
        index: &str,
        operation: &'static str,
    ) -> Result<Vec<(String, Option<Uuid>)>, StoreError> {
        let mut connection = self.connection();
        let mut members = BTreeSet::new();
        let mut cursor: u64 = 0;
        loop {
            let scan = redis::cmd("ZSCAN").arg(index).arg(cursor).arg("COUNT").arg(SCAN_COUNT).to_owned();
            let (next, page): (u64, Vec<(String, String)>) =
                bounded(operation, scan.query_async(&mut connection)).await?;
            members.extend(page.into_iter().map(|(member, _score)| member));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(members.into_iter().map(|m| (m.clone(), Uuid::parse_str(&m).ok())).collect())
    }

    /// Drops index entries whose record is gone or ended.
    async fn drop_stale(
        &self,
        index: &str,
        stale: &[String],
        operation: &'static str,
    ) -> Result<(), StoreError> {
        if stale.is_empty() {
            return Ok(());
        }
        let mut connection = self.connection();
        let zrem = redis::cmd("ZREM").arg(index).arg(stale).to_owned();
        bounded(operation, zrem.exec_async(&mut connection)).await
    }

    /// One `ZSCAN` step of the index, and the status and field names of its members (one
    /// `j:<player>` per joined player): no values, no JSON.
    async fn recorded_sessions_page_inner(&self, cursor: u64) -> Result<RecordedPage, StoreError> {
        let index = all_index(self.prefix());
        let mut connection = self.connection();
        // One record pipeline per page: a caller pacing its read rests between pages.
        let scan = redis::cmd("ZSCAN").arg(&index).arg(cursor).arg("COUNT").arg(LIST_CHUNK).to_owned();
        let (next, members): (u64, Vec<(String, String)>) =
            bounded("recorded_sessions", scan.query_async(&mut connection)).await?;
        // The score: when the session was first indexed, just before its record was created.
        let members: Vec<(String, Option<Uuid>, OffsetDateTime)> = members
            .into_iter()
            .map(|(member, score)| {
                let id = Uuid::parse_str(&member).ok();
                let indexed_at =
                    score.parse::<f64>().map_or(OffsetDateTime::UNIX_EPOCH, |ms| from_millis(ms as i64));
                (member, id, indexed_at)
            })
            .collect();
        let mut found = Vec::with_capacity(members.len());
        let mut stale = Vec::new();
        for chunk in members.chunks(LIST_CHUNK) {
            let mut pipe = redis::pipe();
            for (_, id, _) in chunk {
                let key = id.map(|id| seats_key(self.prefix(), id)).unwrap_or_default();
                pipe.cmd("HGET").arg(&key).arg("status");
                pipe.cmd("HKEYS").arg(&key);
            }
            let replies: Vec<redis::Value> =
                bounded("recorded_sessions", pipe.query_async(&mut connection)).await?;
            let mut replies = replies.into_iter();
            for (member, id, recorded_at) in chunk {
                let (Some(status), Some(fields)) = (replies.next(), replies.next()) else {
                    return Err(StoreError::permanent("redis recorded_sessions: a reply is missing"));
                };
                let status: Option<String> = redis::from_redis_value(status).map_err(|e| {
                    StoreError::permanent(format!("redis recorded_sessions: unreadable status: {e}"))
                })?;
                let fields: Vec<String> = redis::from_redis_value(fields).map_err(|e| {
                    StoreError::permanent(format!("redis recorded_sessions: unreadable fields: {e}"))
                })?;
                match (id, status.as_deref().and_then(SessionStatus::parse)) {
                    (Some(session_id), Some(status)) if status != SessionStatus::Ended => {
                        let joined = fields.iter().filter(|field| field.starts_with("j:")).count();
                        found.push(RecordedSession {
                            session_id: *session_id,
                            status,
                            joined,
                            recorded_at: *recorded_at,
                        });
                    }
                    _ => stale.push(member.clone()),
                }
            }
        }
        self.drop_stale(&index, &stale, "recorded_sessions").await?;
        Ok(RecordedPage { sessions: found, next: (next != 0).then_some(next) })
    }

    async fn list_sessions_inner(
        &self,
        image: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Vec<SessionSeats>, StoreError> {
        let now = whole_millis(now);
        let index = match image {
            Some(image) => image_index(self.prefix(), image),
            None => all_index(self.prefix()),
        };
        let mut connection = self.connection();
        let ids = self.index_members(&index, "list_sessions").await?;
        // In chunks: one pipeline of every record would hold Redis (single-threaded) for all of
        // them at once, stalling every other client while the reconciler lists thousands.
        let mut found = Vec::new();
        let mut stale = Vec::new();
        for chunk in ids.chunks(LIST_CHUNK) {
            self.read_listed(&mut connection, chunk, image, now, &mut found, &mut stale).await?;
            // Long listings: let the placements sharing this worker thread run between chunks.
            tokio::task::yield_now().await;
        }
        self.drop_stale(&index, &stale, "list_sessions").await?;
        found.sort_by_key(|seats| seats.session_id);
        Ok(found)
    }

    /// Reads the seat records of index `members` in one round trip: live ones (of `image`, at
    /// `now`) into `found`, gone or ended ones into `stale` (their index entries are to go).
    async fn read_listed(
        &self,
        connection: &mut redis::aio::ConnectionManager,
        members: &[(String, Option<Uuid>)],
        image: Option<&str>,
        now: OffsetDateTime,
        found: &mut Vec<SessionSeats>,
        stale: &mut Vec<String>,
    ) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        for (_, id) in members {
            pipe.cmd("HGETALL").arg(id.map(|id| seats_key(self.prefix(), id)).unwrap_or_default());
        }
        let records: Vec<HashMap<String, String>> =
            bounded("list_sessions", pipe.query_async(connection)).await?;
        for ((member, _), fields) in members.iter().zip(records) {
            match parse_seats(fields) {
                Ok(Some(seats))
                    if seats.status != SessionStatus::Ended
                        && image.is_none_or(|image| seats.info.image == image) =>
                {
                    found.push(seats.into_at(now));
                }
                Ok(_) => stale.push(member.clone()),
                // Skipped, not dropped (a newer version's record, say): one record the bridge
                // cannot read must not take every listing and backfill down with it.
                Err(error) => {
                    tracing::warn!(session = %member, %error, "skipping a seat record that cannot be read");
                }
            }
        }
        Ok(())
    }

    async fn sessions_holding_inner(
        &self,
        players: &BTreeSet<String>,
        now: OffsetDateTime,
    ) -> Result<Vec<SessionSeats>, StoreError> {
        if players.is_empty() {
            return Ok(Vec::new());
        }
        let now = whole_millis(now);
        let mut connection = self.connection();
        let mut pipe = redis::pipe();
        for player in players {
            pipe.cmd("SMEMBERS").arg(player_key(self.prefix(), player));
        }
        let entries: Vec<Vec<String>> =
            pipe.query_async(&mut connection).await.map_err(err("sessions_holding"))?;
        // Session → the players whose entries name it; entries that are no session id go.
        let mut naming: BTreeMap<Uuid, Vec<&str>> = BTreeMap::new();
        let mut prune: Vec<(&str, String)> = Vec::new();
        for (player, members) in players.iter().zip(entries) {
            for member in members {
                match Uuid::parse_str(&member) {
                    Ok(session_id) => naming.entry(session_id).or_default().push(player),
                    Err(_) => prune.push((player, member)),
                }
            }
        }
        let named: Vec<(String, Option<Uuid>)> =
            naming.keys().map(|id| (id.to_string(), Some(*id))).collect();
        let mut found = Vec::new();
        let mut gone = Vec::new();
        for chunk in named.chunks(LIST_CHUNK) {
            self.read_listed(&mut connection, chunk, None, now, &mut found, &mut gone).await?;
        }
        for member in gone {
            let session_id = Uuid::parse_str(&member).expect("listed from parsed ids");
            prune.extend(naming[&session_id].iter().map(|player| (*player, member.clone())));
        }
        // Seats given up since (a leave, an expired reservation): the session is not answered
        // unless another of the players still sits there. Its entry stays, though: the player
        // may take a seat there again between this read and a removal (a join whose own `SADD`
        // found the entry present), which would then leave them seated but unindexed. Entries of
        // ended and vanished sessions, which seat nobody again, are what goes; the rest ends
        // with the key's TTL.
        found.retain(|session| naming[&session.session_id].iter().any(|player| session.holds(player)));
        if !prune.is_empty() {
            let mut pipe = redis::pipe();
            for (player, member) in &prune {
                pipe.cmd("SREM").arg(player_key(self.prefix(), player)).arg(member);
            }
            if let Err(error) = pipe.exec_async(&mut connection).await {
                tracing::debug!(error = %store_error("sessions_holding", &error), "stale player index entries left for the next read");
            }
        }
        Ok(found)
    }

    async fn mark_running_inner(
        &self,
        session_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<SeatResult<SessionSeats>, StoreError> {
        let change = self
            .seat_op("mark_running", &SCRIPTS.running, session_id, Vec::new(), to_millis(now), |_| Ok(()))
            .await?;
        Ok(change.map(|change| change.session))
    }

    /// One pipelined round trip of `seats_running_light.lua`, which answers only whether it changed
    /// the record (parsing every record back would cost more than the change).
    async fn mark_running_chunk(&self, session_ids: &[Uuid], now_ms: i64) -> Result<Vec<Uuid>, StoreError> {
        let invocations: Vec<_> = session_ids
            .iter()
            .map(|&id| {
                let mut invocation = SCRIPTS.running_light.key(seats_key(self.prefix(), id));
                invocation.arg(now_ms);
                invocation
            })
            .collect();
        let mut pipe = redis::pipe();
        for invocation in &invocations {
            pipe.invoke_script(invocation);
        }
        let mut connection = self.connection();
        let replies: Vec<(i64, i64, String)> = match pipe.query_async(&mut connection).await {
            Ok(replies) => replies,
            Err(error) if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // Redis lost the script, so none of the calls ran: load it and send them again.
                SCRIPTS.running_light.load_async(&mut connection).await.map_err(err("mark_running"))?;
                pipe.query_async(&mut connection).await.map_err(err("mark_running"))?
            }
            Err(error) => return Err(store_error("mark_running", &error)),
        };
        let mut marked = Vec::new();
        // Records that could outlive their index entries: refreshed together, one round trip.
        let mut refresh = redis::pipe();
        let mut refreshing = 0;
        for (&session_id, (changed, index_ttl, image)) in session_ids.iter().zip(replies) {
            if changed == 1 {
                marked.push(session_id);
            }
            if index_ttl > 0 {
                let member = session_id.to_string();
                for index in [all_index(self.prefix()), image_index(self.prefix(), &image)] {
                    queue_index_add(&mut refresh, &index, &member, now_ms, Some(index_ttl), true);
                }
                refreshing += 1;
            }
        }
        if refreshing > 0
            && let Err(error) = refresh.exec_async(&mut connection).await
        {
            tracing::warn!(sessions = refreshing, error = %store_error("mark_running", &error), "seats indexes not refreshed");
        }
        Ok(marked)
    }

    async fn join_players_inner(
        &self,
        session_id: Uuid,
        players: &[String],
        order: Option<u64>,
        now: OffsetDateTime,
    ) -> Result<SeatResult<SeatChange<Joined>>, StoreError> {
        let args = ordered_args(players, order);
        let index = self
            .send_player_index(session_id, self.player_index(session_id, players.iter().map(String::as_str)));
        let join = self.seat_op("join_players", &SCRIPTS.join, session_id, args, to_millis(now), |detail| {
            let mut kinds = by_kind(detail);
            let from_reservations = kinds.remove(&'r').unwrap_or_default();
            let mut joined = kinds.remove(&'n').unwrap_or_default();
            joined.extend(from_reservations.iter().cloned());
            Ok(Joined {
                joined,
                from_reservations,
                already_joined: kinds.remove(&'a').unwrap_or_default(),
                duplicate: kinds.remove(&'d').unwrap_or_default(),
                stale: kinds.remove(&'s').unwrap_or_default(),
            })
        });
        // Sent first, on the same connection: the index names the session before it seats them.
        tokio::join!(index, join).1
    }

    async fn leave_players_inner(
        &self,
        session_id: Uuid,
        players: &[String],
        order: Option<u64>,
        now: OffsetDateTime,
    ) -> Result<SeatResult<SeatChange<Left>>, StoreError> {
        let args = ordered_args(players, order);
        self.seat_op("leave_players", &SCRIPTS.leave, session_id, args, to_millis(now), |detail| {
            let mut kinds = by_kind(detail);
            Ok(Left {
                left: kinds.remove(&'l').unwrap_or_default(),
                released: kinds.remove(&'x').unwrap_or_default(),
                duplicate: kinds.remove(&'d').unwrap_or_default(),
                stale: kinds.remove(&'s').unwrap_or_default(),
            })
        })
        .await
    }

    async fn reserve_seats_inner(
        &self,
        session_id: Uuid,
        players: &[String],
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<SeatResult<SeatChange<Reserved>>, StoreError> {
        let players: BTreeSet<String> = players.iter().cloned().collect();
        let now_ms = to_millis(now);
        let expires_ms = now_ms.saturating_add(duration_millis(ttl));
        let reservation_id = Uuid::new_v4();
        let mut args = vec![reservation_id.to_string(), expires_ms.to_string()];
        args.extend(players.iter().cloned());
        let index = self
            .send_player_index(session_id, self.player_index(session_id, players.iter().map(String::as_str)));
        let reserve = self.seat_op("reserve_seats", &SCRIPTS.reserve, session_id, args, now_ms, |detail| {
            let mut kinds = by_kind(detail);
            // A longer hold kept from a moved player's reservation.
            let kept = kinds.remove(&'e').and_then(|e| e.first().and_then(|ms| ms.parse().ok()));
            Ok(Reserved {
                reservation_id,
                players,
                expires_at: from_millis(kept.unwrap_or(expires_ms)),
                moved: kinds.remove(&'m').unwrap_or_default(),
            })
        });
        tokio::join!(index, reserve).1
    }

    async fn expire_reservations_inner(
        &self,
        session_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<SeatResult<SeatChange<Vec<ExpiredReservation>>>, StoreError> {
        let session = session_id.to_string();
        self.seat_op(
            "expire_reservations",
            &SCRIPTS.expire,
            session_id,
            Vec::new(),
            to_millis(now),
            |detail| {
                let mut expired = detail
                    .chunks(2)
                    .map(|pair| {
                        let [id, value] = pair else { return Err(corrupt(&session, "odd expiry answer")) };
                        Ok(ExpiredReservation {
                            reservation_id: Uuid::parse_str(id)
                                .map_err(|_| corrupt(&session, "bad reservation id"))?,
                            reservation: parse_reservation(&session, value)?,
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                // In reservation id order, like the core's answer.
                expired.sort_by_key(|e| e.reservation_id);
                Ok(expired)
            },
        )
        .await
    }

    async fn end_session_inner(
        &self,
        session_id: Uuid,
        ending: Ending,
        now: OffsetDateTime,
    ) -> Result<SeatResult<SeatChange<Ended>>, StoreError> {
        // Indexed before the end, so no owed end lacks its entry. The record decides: an entry
        // of an end that did not happen (or lost a race to another end) is dropped by the outbox.
        let added = match ending.owe {
            Some(owe) => self.owe_end(session_id, now + owe.window).await?,
            None => false,
        };
        let session = session_id.to_string();
        let keep_owed = ending.owe.map(|owe| duration_millis(owe.keep_for).to_string()).unwrap_or_default();
        let args = vec![ending.reason.as_str().to_owned(), keep_owed];
        let ended = self
            .seat_op("end_session", &SCRIPTS.end, session_id, args, to_millis(now), |detail| {
                let mut kinds = by_kind(detail);
                let reservations = kinds
                    .remove(&'r')
                    .unwrap_or_default()
                    .iter()
                    .map(|id| Uuid::parse_str(id).map_err(|_| corrupt(&session, "bad reservation id")))
                    .collect::<Result<_, _>>()?;
                Ok(Ended { players: kinds.remove(&'j').unwrap_or_default(), reservations })
            })
            .await?;
        // No record, so no other end can need the entry this call added.
        if added && matches!(ended, Err(SeatError::NotFound)) {
            self.unowe_end(session_id).await?;
        }
        Ok(ended)
    }
}

impl SeatStore for RedisStore {
    async fn create_session(
        &self,
        new: &NewSession,
        keep_for: Duration,
    ) -> Result<SeatResult<SessionSeats>, StoreError> {
        bounded_store("create_session", self.create_session_inner(new, keep_for)).await
    }

    async fn get_session(
        &self,
        session_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<Option<SessionSeats>, StoreError> {
        bounded_store("get_session", self.get_session_inner(session_id, now)).await
    }

    async fn list_sessions(
        &self,
        image: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Vec<SessionSeats>, StoreError> {
        // Each round trip is bounded, not the whole: the reconciler lists every session, which at
        // a hundred thousand takes longer than one operation's bound while Redis answers fine.
        self.list_sessions_inner(image, now).await
    }

    /// Reads only the records a page needs: the index's ids (cheap) in order, then the records
    /// after `after` a chunk at a time until `count` live ones are found.
    async fn list_sessions_after(
        &self,
        image: Option<&str>,
        after: Option<Uuid>,
        count: usize,
        now: OffsetDateTime,
    ) -> Result<SessionsPage, StoreError> {
        let count = count.max(1);
        let now = whole_millis(now);
        let index = match image {
            Some(image) => image_index(self.prefix(), image),
            None => all_index(self.prefix()),
        };
        let mut ids = Vec::new();
        let mut stale = Vec::new();
        for (member, id) in self.index_members(&index, "list_sessions").await? {
            match id {
                Some(id) if after.is_none_or(|after| id > after) => ids.push((member, Some(id))),
                Some(_) => {}
                None => stale.push(member),
            }
        }
        // The index's members are ids as text, in text order; the page's order is the ids'.
        ids.sort_unstable_by_key(|(_, id)| *id);
        let mut connection = self.connection();
        let mut found = Vec::new();
        let mut unread = ids.as_slice();
        while found.len() < count && !unread.is_empty() {
            let (chunk, rest) = unread.split_at(unread.len().min(count - found.len()).min(LIST_CHUNK));
            unread = rest;
            self.read_listed(&mut connection, chunk, image, now, &mut found, &mut stale).await?;
        }
        self.drop_stale(&index, &stale, "list_sessions").await?;
        let next = found.last().map(|s| s.session_id).filter(|_| !unread.is_empty());
        Ok(SessionsPage { sessions: found, next })
    }

    /// Reads the players' index entries, then only the sessions they name.
    async fn sessions_holding(
        &self,
        players: &BTreeSet<String>,
        now: OffsetDateTime,
    ) -> Result<Vec<SessionSeats>, StoreError> {
        bounded_store("sessions_holding", self.sessions_holding_inner(players, now)).await
    }

    async fn mark_running(
        &self,
        session_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<SeatResult<SessionSeats>, StoreError> {
        bounded_store("mark_running", self.mark_running_inner(session_id, now)).await
    }

    async fn recorded_sessions_page(
        &self,
        cursor: u64,
        _now: OffsetDateTime,
    ) -> Result<RecordedPage, StoreError> {
        // Each round trip is bounded, not the whole (see `list_sessions`).
        self.recorded_sessions_page_inner(cursor).await
    }

    async fn mark_running_many(
        &self,
        session_ids: &[Uuid],
        now: OffsetDateTime,
    ) -> Result<Vec<Uuid>, StoreError> {
        let mut marked = Vec::new();
        let mut first_error = None;
        // One bound per chunk (the whole list may be long); a failed chunk does not stop the rest.
        for chunk in session_ids.chunks(LIST_CHUNK) {
            match bounded_store("mark_running", self.mark_running_chunk(chunk, to_millis(now))).await {
                Ok(chunk_marked) => marked.extend(chunk_marked),
                Err(error) => {
                    tracing::warn!(sessions = chunk.len(), %error, "sessions not marked running; the next scan tries again");
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) if marked.is_empty() => Err(error),
            _ => Ok(marked),
        }
    }

    async fn join_players_ordered(
        &self,
        session_id: Uuid,
        players: &[String],
        order: Option<u64>,
        now: OffsetDateTime,
    ) -> Result<SeatResult<SeatChange<Joined>>, StoreError> {
        bounded_store("join_players", self.join_players_inner(session_id, players, order, now)).await
    }

    async fn leave_players_ordered(
        &self,
        session_id: Uuid,
        players: &[String],
        order: Option<u64>,
        now: OffsetDateTime,
    ) -> Result<SeatResult<SeatChange<Left>>, StoreError> {
        bounded_store("leave_players", self.leave_players_inner(session_id, players, order, now)).await
    }

    async fn reserve_seats(
        &self,
        session_id: Uuid,
        players: &[String],
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<SeatResult<SeatChange<Reserved>>, StoreError> {
        bounded_store("reserve_seats", self.reserve_seats_inner(session_id, players, ttl, now)).await
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
        bounded_store("expire_reservations", self.expire_reservations_inner(session_id, now)).await
    }

    async fn end_session(
        &self,
        session_id: Uuid,
        ending: Ending,
        now: OffsetDateTime,
    ) -> Result<SeatResult<SeatChange<Ended>>, StoreError> {
        bounded_store("end_session", self.end_session_inner(session_id, ending, now)).await
    }
}

impl RedisStore {
    /// What the session's record says about its end (see `seats_end.lua`).
    pub(super) async fn session_end_inner(
        &self,
        session_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<EndRecord, StoreError> {
        let mut fields = self.record_fields("session_end", session_id).await?;
        let owed = fields.remove("ended_owed").is_some();
        let end = parse_end(&mut fields);
        let Some(seats) = parse_seats(fields)? else { return Ok(EndRecord::Gone) };
        Ok(match end {
            _ if seats.status != SessionStatus::Ended => EndRecord::NotEnded,
            Some(end) if owed => EndRecord::Owed(seats.into_at(whole_millis(now)), end),
            _ => EndRecord::Settled,
        })
    }
}

/// Takes how the session ended out of its record's fields; `None` when it has not (or was ended
/// by a version that did not keep it).
fn parse_end(fields: &mut HashMap<String, String>) -> Option<SessionEnd> {
    let reason = EndReason::parse(&fields.remove("ended_reason")?)?;
    let ended_at = from_millis(fields.remove("ended_ms")?.parse().ok()?);
    let mut end =
        SessionEnd { reason, ended_at, players: BTreeSet::new(), reserved_players: BTreeSet::new() };
    fields.retain(|field, _| {
        if let Some(player) = field.strip_prefix("ej:") {
            end.players.insert(player.to_owned());
        } else if let Some(player) = field.strip_prefix("er:") {
            end.reserved_players.insert(player.to_owned());
        } else {
            return true;
        }
        false
    });
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_prefix_and_one_hash_tag() {
        let id = Uuid::from_u128(1);
        assert_eq!(seats_key("gb", id), format!("gb:seats:{{{id}}}"));
        assert_eq!(all_index("gb"), "gb:{seats}:sessions");
        assert_eq!(image_index("gb", "game{1}"), "gb:seats-image:{game%7B1%7D}");
    }

    #[test]
    fn records_round_trip_through_their_fields() {
        let mut seats = SessionSeats {
            session_id: Uuid::from_u128(7),
            capacity: 8,
            status: SessionStatus::Running,
            info: SessionInfo {
                image: "game".into(),
                version: Some("1.10".into()),
                location: "eu".into(),
                labels: BTreeMap::from([("mode".into(), "x|y".into())]),
                metadata: JsonText::of(&serde_json::json!({"host": "203.0.113.7", "ports": [7777]})).unwrap(),
            },
            joined: BTreeSet::from(["j:odd|name".to_owned(), String::new()]),
            reservations: BTreeMap::new(),
            last_order: BTreeMap::new(),
        };
        let reservation = Reservation {
            players: BTreeSet::from(["a/b".to_owned(), "\"q\"".to_owned()]),
            expires_at: from_millis(1_795_255_205_123),
        };
        seats.reservations.insert(Uuid::from_u128(9), reservation);
        seats.last_order = BTreeMap::from([("q:odd".to_owned(), u64::MAX), ("gone".to_owned(), 1)]);
        let mut map = HashMap::new();
        record_fields(&seats, 60_000, |name, value| {
            map.insert(name.to_owned(), value.to_owned());
        })
        .unwrap();
        assert_eq!(parse_seats(map).unwrap(), Some(seats));
        assert_eq!(parse_seats(HashMap::new()).unwrap(), None);
    }
}

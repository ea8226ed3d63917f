//! The player-sync outbox in Redis ([`PlayerSyncStore`]).
//!
//! | key | type | contents |
//! | --- | --- | --- |
//! | `<prefix>:{seats}:player-sync` | ZSET | session id → due time (ms, Redis clock) |
//! | `<prefix>:{seats}:player-sync-state` | HASH | `c:<id>` claim token while claimed, `d:<id>` = 1 when queued again during the claim, `a:<id>` failed attempts |
//!
//! Both share the `{seats}` slot, so every script is atomic on Redis Cluster too. A session is
//! synced by one worker at a time: queueing a claimed session only marks it changed (`d:`), and
//! the claim's finish or retry then makes it due at once instead of dequeuing it, so the change
//! is synced next, after the sync in hand. A claim moves the score to now + lease and hands out
//! that score as its token; a worker that outlives its lease loses the claim (finish and retry
//! check the token). Neither key expires: entries leave when their sync finishes (a session whose
//! record is gone finishes at once).

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use uuid::Uuid;

use super::duration_millis;
use super::redis::{RedisStore, bounded_store, err};
use bridge::ports::{PlayerSyncClaim, PlayerSyncStore, StoreError};

const CLOCK: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function ms(n) return string.format('%.0f', n) end
";

// ARGV 1 id
static QUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{CLOCK}
if redis.call('HEXISTS', KEYS[2], 'c:' .. ARGV[1]) == 1 then
  redis.call('HSET', KEYS[2], 'd:' .. ARGV[1], '1')
else
  redis.call('ZADD', KEYS[1], ms(now), ARGV[1])
end
return 1
"
    ))
});

// ARGV 1 id
static QUEUE_IF_ABSENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{CLOCK}
redis.call('ZADD', KEYS[1], 'NX', ms(now), ARGV[1])
return 1
"
    ))
});

// ARGV 1 limit, 2 lease_ms. Returns a flat list: id, token, attempts, ...
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{CLOCK}
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ms(now), 'LIMIT', 0, tonumber(ARGV[1]))
local out = {{}}
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], ms(now + tonumber(ARGV[2])), id)
  local token = redis.call('ZSCORE', KEYS[1], id)
  redis.call('HSET', KEYS[2], 'c:' .. id, token)
  redis.call('HDEL', KEYS[2], 'd:' .. id)
  table.insert(out, id)
  table.insert(out, token)
  table.insert(out, redis.call('HGET', KEYS[2], 'a:' .. id) or '0')
end
return out
"
    ))
});

// ARGV 1 id, 2 token, 3 retry_ms (0: the sync succeeded). Ends a claim still held: changed
// meanwhile → due now (attempts kept on failure); else finished → dequeued, or failed → due later.
static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{CLOCK}
local id = ARGV[1]
if redis.call('HGET', KEYS[2], 'c:' .. id) ~= ARGV[2] then
  return 0
end
redis.call('HDEL', KEYS[2], 'c:' .. id)
local changed = redis.call('HDEL', KEYS[2], 'd:' .. id) == 1
local retry = tonumber(ARGV[3])
if retry > 0 then
  redis.call('HINCRBY', KEYS[2], 'a:' .. id, 1)
elseif not changed then
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], 'a:' .. id)
  return 1
else
  redis.call('HDEL', KEYS[2], 'a:' .. id)
end
if changed then
  redis.call('ZADD', KEYS[1], ms(now), id)
else
  redis.call('ZADD', KEYS[1], ms(now + retry), id)
end
return 1
"
    ))
});

fn queue_key(prefix: &str) -> String {
    format!("{prefix}:{{seats}}:player-sync")
}

fn state_key(prefix: &str) -> String {
    format!("{prefix}:{{seats}}:player-sync-state")
}

impl RedisStore {
    async fn run_player_sync_script<T: redis::FromRedisValue>(
        &self,
        operation: &'static str,
        script: &Script,
        args: &[String],
    ) -> Result<T, StoreError> {
        let mut invocation = script.key(queue_key(self.prefix()));
        invocation.key(state_key(self.prefix()));
        for arg in args {
            invocation.arg(arg);
        }
        let mut connection = self.connection();
        bounded_store(operation, async {
            invocation.invoke_async(&mut connection).await.map_err(err(operation))
        })
        .await
    }

    async fn settle_player_sync(&self, claim: &PlayerSyncClaim, retry_ms: i64) -> Result<(), StoreError> {
        let args = [claim.session_id.to_string(), claim.token.clone(), retry_ms.to_string()];
        let _: i64 = self.run_player_sync_script("player sync settle", &SETTLE, &args).await?;
        Ok(())
    }
}

impl PlayerSyncStore for RedisStore {
    async fn queue_player_sync(&self, session_id: Uuid) -> Result<(), StoreError> {
        let _: i64 =
            self.run_player_sync_script("player sync queue", &QUEUE, &[session_id.to_string()]).await?;
        Ok(())
    }

    async fn queue_player_sync_if_absent(&self, session_id: Uuid) -> Result<(), StoreError> {
        let _: i64 = self
            .run_player_sync_script("player sync queue", &QUEUE_IF_ABSENT, &[session_id.to_string()])
            .await?;
        Ok(())
    }

    async fn claim_player_syncs(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<PlayerSyncClaim>, StoreError> {
        let flat: Vec<String> = self
            .run_player_sync_script(
                "player sync claim",
                &CLAIM,
                &[limit.to_string(), duration_millis(lease).max(1).to_string()],
            )
            .await?;
        flat.chunks_exact(3)
            .map(|entry| {
                let session_id = Uuid::parse_str(&entry[0]).map_err(|_| {
                    StoreError::permanent(format!("player sync queue: {:?} is not a session id", entry[0]))
                })?;
                Ok(PlayerSyncClaim {
                    session_id,
                    token: entry[1].clone(),
                    attempts: entry[2].parse().unwrap_or(0),
                })
            })
            .collect()
    }

    async fn finish_player_sync(&self, claim: &PlayerSyncClaim) -> Result<(), StoreError> {
        self.settle_player_sync(claim, 0).await
    }

    async fn retry_player_sync(&self, claim: &PlayerSyncClaim, retry_in: Duration) -> Result<(), StoreError> {
        self.settle_player_sync(claim, duration_millis(retry_in).max(1)).await
    }

    async fn queued_player_syncs(&self) -> Result<u64, StoreError> {
        let mut connection = self.connection();
        bounded_store("player sync count", async {
            redis::cmd("ZCARD")
                .arg(queue_key(self.prefix()))
                .query_async(&mut connection)
                .await
                .map_err(err("player sync count"))
        })
        .await
    }
}

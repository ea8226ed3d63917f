//! The announcement outbox in Redis ([`AnnouncementStore`]).
//!
//! | key | type | contents | expires |
//! | --- | --- | --- | --- |
//! | `<prefix>:{matches}:announce` | ZSET | `<outcome>\|<match id>` (an [`Owed`]: `placed\|m-1`, `failed:NO_CAPACITY\|m-2`) → when it is due to be announced (ms, the callers' clock) | as late as its longest-lived record |
//!
//! An entry is written with the placement's outcome, in the outcome's own pipeline and before
//! it (`RedisStore::finish_placement`), so a recorded outcome never lacks its entry; it is removed
//! when an announcement got through. A claim moves the due entries it takes to now + hold in one
//! script, so concurrent retriers on several instances never take the same entry. The key shares
//! the pending index's slot and is kept alive like it (see `queue_index_add`).
//!
//! The session-end outbox ([`EndAnnouncementStore`]) works the same way on its own key:
//!
//! | key | type | contents | expires |
//! | --- | --- | --- | --- |
//! | `<prefix>:{seats}:end-announce` | ZSET | session id → when its end is due to be announced (ms, the callers' clock) | never: entries leave when announced, given up, or found without an ended record |
//!
//! An entry is added (`ZADD NX`) just before the end script runs (`end_session`), so an owed end
//! never lacks it. The ended record decides (`seats_redis.rs`): its `ended_owed` field is set by the
//! end script itself and cleared (before the entry is removed) once the end was announced, so an
//! entry whose end did not happen, lost a race to another end, or was announced already is dropped
//! without announcing.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use redis::Script;
use time::OffsetDateTime;

use super::redis::{IndexAdded, RedisStore, Skipped, bounded, bounded_store, err, queue_index_add};
use super::{duration_millis, to_millis};
use bridge::ports::{AnnouncementStore, EndAnnouncementStore, EndRecord, Owed, StoreError};
use uuid::Uuid;

// ARGV 1 now (ms), 2 limit, 3 held until (ms). The due members, earliest first.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], 'XX', ARGV[3], id) end
return ids
",
    )
});

impl RedisStore {
    /// Queues on `pipe` the commands that owe `owed` at `due_ms`, the entry living
    /// at least `keep_ms`. Returns how many answers they add (the first is the `ZADD`'s, an
    /// [`IndexAdded`]; the others, if any, are [`Skipped`]) and, when an expiry is sent, what
    /// to [`RedisStore::owed`] about it once it was accepted.
    pub(super) fn queue_owe(
        &self,
        pipe: &mut redis::Pipeline,
        owed: &Owed,
        due_ms: i64,
        keep_ms: i64,
    ) -> (usize, Option<OweExpiry>) {
        let key = self.keys().announcements();
        let sent_at = Instant::now();
        let expire_ms =
            if keep_ms > 0 { self.index_expiries.needed(&[&key], keep_ms, sent_at) } else { None };
        queue_index_add(pipe, &key, &member(owed), due_ms, expire_ms, false);
        match expire_ms {
            Some(expire_ms) => (3, Some(OweExpiry { key, sent_at, expire_ms })),
            None => (1, None),
        }
    }

    /// One command on the outbox, bounded like every store operation.
    async fn outbox_command<T: redis::FromRedisValue>(
        &self,
        operation: &'static str,
        command: &redis::Cmd,
    ) -> Result<T, StoreError> {
        let mut connection = self.connection();
        bounded(operation, command.query_async(&mut connection)).await
    }

    /// Claims up to `limit` members of the outbox `key` due by `now` (see [`CLAIM`]).
    async fn claim_due(
        &self,
        operation: &'static str,
        key: String,
        now: OffsetDateTime,
        limit: usize,
        hold: Duration,
    ) -> Result<Vec<String>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut connection = self.connection();
        let mut invocation = CLAIM.key(key);
        invocation.arg(to_millis(now)).arg(limit).arg(to_millis(now + hold));
        bounded_store(operation, async move {
            invocation.invoke_async(&mut connection).await.map_err(err(operation))
        })
        .await
    }

    /// Remembers an expiry that [`RedisStore::queue_owe`] sent and Redis accepted.
    pub(super) fn owed(&self, expiry: OweExpiry) {
        self.index_expiries.remember(&expiry.key, expiry.sent_at, expiry.expire_ms);
    }

    async fn owe_inner(
        &self,
        owed: &Owed,
        due: OffsetDateTime,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        let mut pipe = redis::Pipeline::with_capacity(3);
        let (_, expiry) = self.queue_owe(&mut pipe, owed, to_millis(due), duration_millis(keep_for));
        let mut connection = self.connection();
        match expiry {
            Some(expiry) => {
                let (_, nx, gt): (IndexAdded, Skipped, Skipped) =
                    pipe.query_async(&mut connection).await.map_err(err("owe_announcement"))?;
                if nx.and(gt).is_ok() {
                    self.owed(expiry);
                }
            }
            None => {
                let (_,): (IndexAdded,) =
                    pipe.query_async(&mut connection).await.map_err(err("owe_announcement"))?;
            }
        }
        Ok(())
    }
}

/// An owed outcome as a member of the outbox: the outcome's kind holds no `|`, the match id
/// may hold anything.
fn member(owed: &Owed) -> String {
    [owed.outcome.as_str(), "|", owed.match_id.as_str()].concat()
}

fn parse_member(member: &str) -> Option<Owed> {
    let (outcome, match_id) = member.split_once('|')?;
    Some(Owed { match_id: match_id.to_owned(), outcome: outcome.to_owned() })
}

/// An expiry sent with an owed entry, to remember once Redis accepted it.
pub(super) struct OweExpiry {
    key: String,
    sent_at: Instant,
    expire_ms: i64,
}

impl AnnouncementStore for RedisStore {
    async fn owe_announcement(
        &self,
        owed: &Owed,
        due: OffsetDateTime,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        bounded_store("owe_announcement", self.owe_inner(owed, due, keep_for)).await
    }

    async fn announced(&self, owed: &Owed) -> Result<(), StoreError> {
        let remove = redis::cmd("ZREM").arg(self.keys().announcements()).arg(member(owed)).to_owned();
        self.outbox_command("announced", &remove).await
    }

    async fn claim_announcements(
        &self,
        now: OffsetDateTime,
        limit: usize,
        hold: Duration,
    ) -> Result<Vec<Owed>, StoreError> {
        let members =
            self.claim_due("claim_announcements", self.keys().announcements(), now, limit, hold).await?;
        let mut claimed = Vec::with_capacity(members.len());
        for member in members {
            match parse_member(&member) {
                Some(owed) => claimed.push(owed),
                None => {
                    // Not written by the bridge: it would come round every hold.
                    tracing::warn!(%member, "dropping an unreadable announcement outbox entry");
                    let remove = redis::cmd("ZREM").arg(self.keys().announcements()).arg(&member).to_owned();
                    self.outbox_command::<()>("claim_announcements", &remove).await?;
                }
            }
        }
        Ok(claimed)
    }

    async fn defer_announcement(&self, owed: &Owed, due: OffsetDateTime) -> Result<(), StoreError> {
        let key = self.keys().announcements();
        let defer = redis::cmd("ZADD").arg(key).arg("XX").arg(to_millis(due)).arg(member(owed)).to_owned();
        self.outbox_command("defer_announcement", &defer).await
    }

    async fn owed_announcements(&self) -> Result<u64, StoreError> {
        let count = redis::cmd("ZCARD").arg(self.keys().announcements()).to_owned();
        self.outbox_command("owed_announcements", &count).await
    }
}

impl RedisStore {
    /// Indexes the owed end of `session_id`, due at `due`, unless it is indexed already. Whether
    /// this call added it.
    pub(super) async fn owe_end(&self, session_id: Uuid, due: OffsetDateTime) -> Result<bool, StoreError> {
        let owe = redis::cmd("ZADD")
            .arg(self.keys().end_announcements())
            .arg("NX")
            .arg(to_millis(due))
            .arg(session_id.to_string())
            .to_owned();
        let added: i64 = self.outbox_command("owe_end", &owe).await?;
        Ok(added == 1)
    }

    /// Takes the end of `session_id` out of the index.
    pub(super) async fn unowe_end(&self, session_id: Uuid) -> Result<(), StoreError> {
        let remove =
            redis::cmd("ZREM").arg(self.keys().end_announcements()).arg(session_id.to_string()).to_owned();
        self.outbox_command("end_announced", &remove).await
    }
}

impl EndAnnouncementStore for RedisStore {
    async fn session_end(&self, session_id: Uuid, now: OffsetDateTime) -> Result<EndRecord, StoreError> {
        bounded_store("session_end", self.session_end_inner(session_id, now)).await
    }

    async fn claim_end_announcements(
        &self,
        now: OffsetDateTime,
        limit: usize,
        hold: Duration,
    ) -> Result<Vec<Uuid>, StoreError> {
        let key = self.keys().end_announcements();
        let members = self.claim_due("claim_end_announcements", key, now, limit, hold).await?;
        let mut claimed = Vec::with_capacity(members.len());
        for member in members {
            match Uuid::parse_str(&member) {
                Ok(session_id) => claimed.push(session_id),
                Err(_) => {
                    tracing::warn!(%member, "dropping an unreadable session-end outbox entry");
                    let remove =
                        redis::cmd("ZREM").arg(self.keys().end_announcements()).arg(&member).to_owned();
                    self.outbox_command::<()>("claim_end_announcements", &remove).await?;
                }
            }
        }
        Ok(claimed)
    }

    async fn end_announced(&self, session_id: Uuid) -> Result<(), StoreError> {
        // The record first: an entry left by a cut-short call is then dropped as settled, where
        // the other order could leave an owed record without an entry.
        let settle = redis::cmd("HDEL")
            .arg(super::seats_redis::seats_key(self.prefix(), session_id))
            .arg("ended_owed")
            .to_owned();
        self.outbox_command::<()>("end_announced", &settle).await?;
        self.unowe_end(session_id).await
    }

    async fn defer_end_announcement(&self, session_id: Uuid, due: OffsetDateTime) -> Result<(), StoreError> {
        let defer = redis::cmd("ZADD")
            .arg(self.keys().end_announcements())
            .arg("XX")
            .arg(to_millis(due))
            .arg(session_id.to_string())
            .to_owned();
        self.outbox_command("defer_end_announcement", &defer).await
    }

    async fn owed_end_announcements(&self) -> Result<u64, StoreError> {
        let count = redis::cmd("ZCARD").arg(self.keys().end_announcements()).to_owned();
        self.outbox_command("owed_end_announcements", &count).await
    }
}

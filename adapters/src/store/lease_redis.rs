//! Named leases in Redis ([`LeaseStore`]): `<prefix>:lease:{<name>}` holds the owner, with a
//! `PX` expiry. Acquire is `SET NX PX` or, for the holder, a renewal; both and release are one
//! Lua script each, so a holder never extends or deletes a lease someone else took meanwhile.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::duration_millis;
use super::redis::{RedisStore, bounded_store, err, tagged_key};
use bridge::ports::{LeaseStore, StoreError};

static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
",
    )
});

static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
",
    )
});

fn lease_key(prefix: &str, name: &str) -> String {
    tagged_key(prefix, "lease", name)
}

impl LeaseStore for RedisStore {
    async fn try_acquire(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut connection = self.connection();
        let mut invocation = ACQUIRE.key(lease_key(self.prefix(), name));
        invocation.arg(owner).arg(duration_millis(ttl).max(1));
        let acquired: i64 = bounded_store("lease acquire", async {
            invocation.invoke_async(&mut connection).await.map_err(err("lease acquire"))
        })
        .await?;
        Ok(acquired == 1)
    }

    async fn release(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        let mut connection = self.connection();
        let mut invocation = RELEASE.key(lease_key(self.prefix(), name));
        invocation.arg(owner);
        let _: i64 = bounded_store("lease release", async {
            invocation.invoke_async(&mut connection).await.map_err(err("lease release"))
        })
        .await?;
        Ok(())
    }
}

//! Named leases in memory ([`LeaseStore`]): one process, so the lease only matters for tests and
//! for symmetry with Redis; expiry on the monotonic clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge::ports::{LeaseStore, StoreError};

use super::memory::MemoryStore;

/// The leases of a [`MemoryStore`] (a field of it; clones share them).
#[derive(Clone, Default)]
pub(super) struct LeasesMemory {
    inner: Arc<Mutex<HashMap<String, (String, Instant)>>>,
}

impl LeasesMemory {
    fn try_acquire(&self, name: &str, owner: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut leases = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match leases.get(name) {
            Some((holder, until)) if holder != owner && *until > now => false,
            _ => {
                let until = now.checked_add(ttl).unwrap_or(now + Duration::from_secs(100 * 365 * 24 * 3600));
                leases.insert(name.to_owned(), (owner.to_owned(), until));
                true
            }
        }
    }

    fn release(&self, name: &str, owner: &str) {
        let mut leases = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if leases.get(name).is_some_and(|(holder, _)| holder == owner) {
            leases.remove(name);
        }
    }
}

impl LeaseStore for MemoryStore {
    async fn try_acquire(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.leases.try_acquire(name, owner, ttl))
    }

    async fn release(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        self.leases.release(name, owner);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_at_a_time_until_it_expires_or_is_released() {
        let store = MemoryStore::new();
        let ttl = Duration::from_millis(50);
        assert!(store.try_acquire("r", "a", ttl).await.unwrap());
        assert!(!store.try_acquire("r", "b", ttl).await.unwrap());
        assert!(store.try_acquire("r", "a", ttl).await.unwrap(), "the holder renews");
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(store.try_acquire("r", "b", ttl).await.unwrap(), "expired: taken over");
        store.release("r", "a").await.unwrap();
        assert!(!store.try_acquire("r", "a", ttl).await.unwrap(), "a non-holder's release is a no-op");
        store.release("r", "b").await.unwrap();
        assert!(store.try_acquire("r", "a", ttl).await.unwrap());
    }
}

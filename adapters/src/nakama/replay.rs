//! Refusing a signed request the second time. A signature is valid for `nakama.signature_max_age`
//! either side of its timestamp, so whoever captures a signed `POST /v1/nakama/events` could send
//! it again within that window: a replayed leave would remove a player who has since rejoined.
//!
//! Each signature an events request is applied under is recorded in the state store (the SNS
//! door's [`DeliveryLog`], under its own key prefix), so every bridge instance sharing the store
//! refuses it, until no instance would accept the signature any more. Two records per signature:
//! - "applying", held (briefly) while one copy applies the events, so that a copy arriving then
//!   is told to come back ([`Claimed::InFlight`]), not that it was applied: the first may still
//!   fail;
//! - "applied", written before the events are applied and forgotten again when applying them
//!   fails, so the sender's retry of a failed delivery (the same signature) is applied, not
//!   refused.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use bridge::ports::{Delivery, DeliveryLog, StoreError};
use sha2::{Digest, Sha256};

use super::SignedRequest;

/// Kept beyond the signature's window, for clocks of bridge instances that disagree: each checks
/// timestamps against its own.
const CLOCK_SKEW_MARGIN: Duration = Duration::from_secs(60);

/// Prefix of the replay guard's keys in the delivery log (the SNS door's are `sns:`).
const KEY_PREFIX: &str = "nakama-signed:";
/// Prefix of the "applying" records.
const APPLYING_PREFIX: &str = "nakama-applying:";
/// How long an "applying" record may outlive a copy that died while applying: longer than any
/// application (its store calls are bounded at a few seconds each).
const APPLYING_HOLD: Duration = Duration::from_secs(30);

/// What the guard answers to a signed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// The first time: apply it, then [`ReplayGuard::applied`] or [`ReplayGuard::release`].
    First,
    /// Another copy is being applied right now: come back later (it may still fail).
    InFlight,
    /// Applied already.
    Replay,
}

/// Remembers the signatures of applied requests, shared by every instance through the store.
#[derive(Clone)]
pub struct ReplayGuard {
    seen: Arc<dyn DeliveryLog>,
}

impl ReplayGuard {
    pub fn new(seen: Arc<dyn DeliveryLog>) -> Self {
        Self { seen }
    }

    /// Records `signed` at Unix time `now` (seconds), atomically: of two concurrent claims of one
    /// signature, at any instances, exactly one is [`Claimed::First`]. Kept until no instance
    /// accepts the signature any more.
    pub async fn claim(&self, signed: &SignedRequest, now: i64) -> Result<Claimed, StoreError> {
        let applying = key(APPLYING_PREFIX, signed);
        if !self.seen.first_delivery(&applying, APPLYING_HOLD).await?.is_first() {
            return Ok(Claimed::InFlight);
        }
        match self.seen.first_delivery(&key(KEY_PREFIX, signed), keep_for(signed, now)).await {
            Ok(Delivery::First) => Ok(Claimed::First),
            Ok(Delivery::InProgress | Delivery::Done) => {
                self.forget(&applying).await;
                Ok(Claimed::Replay)
            }
            Err(error) => {
                self.forget(&applying).await;
                Err(error)
            }
        }
    }

    /// After the events were applied: the next copy is a replay.
    pub async fn applied(&self, signed: &SignedRequest) {
        self.forget(&key(APPLYING_PREFIX, signed)).await;
    }

    /// Forgets `signed` after applying it failed, so the sender's retry is applied. A release that
    /// fails leaves the records to their expiry: the retry is refused until then, and says so.
    pub async fn release(&self, signed: &SignedRequest) {
        self.forget(&key(KEY_PREFIX, signed)).await;
        self.forget(&key(APPLYING_PREFIX, signed)).await;
    }

    async fn forget(&self, key: &str) {
        if let Err(error) = self.seen.forget_delivery(key).await {
            tracing::warn!(%error, "could not forget a Nakama request's signature record");
        }
    }
}

/// A hash of the MAC, not the MAC itself: whoever reads the store learns nothing they could sign
/// with.
fn key(prefix: &str, signed: &SignedRequest) -> String {
    let digest = Sha256::digest(signed.mac());
    let mut key = String::with_capacity(prefix.len() + 2 * digest.len());
    key.push_str(prefix);
    for byte in digest {
        let _ = write!(key, "{byte:02x}");
    }
    key
}

/// The rest of the signature's window from `now`, and the clock margin.
fn keep_for(signed: &SignedRequest, now: i64) -> Duration {
    let remaining = signed.accepted_until().saturating_sub(now).max(0);
    Duration::from_secs(remaining.unsigned_abs()) + CLOCK_SKEW_MARGIN
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Secret;
    use crate::nakama::{SignatureVerifier, sign};
    use crate::store::MemoryStore;

    fn signed(timestamp: i64, body: &[u8], now: i64) -> SignedRequest {
        let verifier = SignatureVerifier::new(&Secret::new("s3cret"), Duration::from_secs(300)).unwrap();
        verifier.verify(&timestamp.to_string(), &sign("s3cret", timestamp, body), body, now).unwrap()
    }

    #[tokio::test]
    async fn a_signature_is_claimed_once_until_released() {
        let guard = ReplayGuard::new(Arc::new(MemoryStore::default()));
        let request = signed(1_000, b"[]", 1_000);
        assert_eq!(guard.claim(&request, 1_000).await.unwrap(), Claimed::First);
        assert_eq!(guard.claim(&request, 1_005).await.unwrap(), Claimed::InFlight, "while it applies");
        guard.applied(&request).await;
        assert_eq!(guard.claim(&request, 1_010).await.unwrap(), Claimed::Replay);
        // Another body or timestamp is another request.
        assert_eq!(guard.claim(&signed(1_001, b"[]", 1_001), 1_001).await.unwrap(), Claimed::First);
        assert_eq!(guard.claim(&signed(1_000, b"{}", 1_000), 1_000).await.unwrap(), Claimed::First);
        guard.release(&request).await;
        assert_eq!(guard.claim(&request, 1_020).await.unwrap(), Claimed::First, "a retry after a failure");
        assert_eq!(guard.claim(&request, 1_021).await.unwrap(), Claimed::InFlight, "while it applies");
        guard.applied(&request).await;
        assert_eq!(guard.claim(&request, 1_022).await.unwrap(), Claimed::Replay, "once applied");
        assert_eq!(guard.claim(&request, 1_023).await.unwrap(), Claimed::Replay, "and again");
    }

    #[test]
    fn kept_while_any_instance_accepts_the_signature() {
        // Signed at 1000 with a 300 s window: accepted until 1300 (a timestamp up to 300 s ahead
        // is accepted too, so a fresh one can need twice the window).
        let request = signed(1_000, b"[]", 1_000);
        assert_eq!(keep_for(&request, 1_000), Duration::from_secs(300) + CLOCK_SKEW_MARGIN);
        assert_eq!(keep_for(&request, 1_250), Duration::from_secs(50) + CLOCK_SKEW_MARGIN);
        assert_eq!(
            keep_for(&signed(1_300, b"[]", 1_000), 1_000),
            Duration::from_secs(600) + CLOCK_SKEW_MARGIN
        );
        assert_eq!(keep_for(&request, 1_400), CLOCK_SKEW_MARGIN, "never negative");
    }

    #[test]
    fn keys_are_a_hash_of_the_mac_under_their_own_prefix() {
        let request = signed(1_000, b"[]", 1_000);
        let key = key(KEY_PREFIX, &request);
        assert!(key.starts_with("nakama-signed:"), "{key}");
        assert_eq!(key.len(), "nakama-signed:".len() + 64);
        let mac_hex: String = request.mac().iter().map(|b| format!("{b:02x}")).collect();
        assert!(!key.contains(&mac_hex), "the MAC itself is not stored");
    }
}

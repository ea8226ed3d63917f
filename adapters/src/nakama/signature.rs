//! The hook's alternative to a bearer token: an HMAC-SHA256 signature over a timestamp and the body,
//! which a Nakama TS/Lua module can compute with `nk.hmacSha256Hash` and `nk.base16Encode`.
//!
//! `X-Bridge-Timestamp: <unix seconds>`, `X-Bridge-Signature: sha256=<hex of HMAC-SHA256(secret,
//! "<timestamp>.<body>")>`. The timestamp is signed too and must be recent, so a captured request
//! cannot be replayed later; within the window, [`super::ReplayGuard`] refuses it the second time.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::NakamaError;
use crate::config::Secret;

pub const TIMESTAMP_HEADER: &str = "x-bridge-timestamp";
pub const SIGNATURE_HEADER: &str = "x-bridge-signature";
const SCHEME: &str = "sha256=";

type HmacSha256 = Hmac<Sha256>;

/// A request whose signature verified: the MAC it carried and until when its timestamp is accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRequest {
    /// The MAC's bytes, decoded: the same however it was presented (with or without `sha256=`,
    /// either hex case), so re-spelling a captured signature does not make it a new request.
    mac: Vec<u8>,
    /// The last Unix second at which this signature is accepted (its timestamp + the max age).
    accepted_until: i64,
}

impl SignedRequest {
    pub fn mac(&self) -> &[u8] {
        &self.mac
    }

    pub fn accepted_until(&self) -> i64 {
        self.accepted_until
    }
}

/// Checks hook signatures against the configured secret.
#[derive(Clone)]
pub struct SignatureVerifier {
    secret: Secret,
    max_age: Duration,
}

impl SignatureVerifier {
    /// `None` when no secret is configured: signatures are then never accepted.
    pub fn new(secret: &Secret, max_age: Duration) -> Option<Self> {
        (!secret.is_empty()).then(|| Self { secret: secret.clone(), max_age })
    }

    /// Verifies `signature` over `timestamp` and `body` at Unix time `now` (seconds).
    pub fn verify(
        &self,
        timestamp: &str,
        signature: &str,
        body: &[u8],
        now: i64,
    ) -> Result<SignedRequest, NakamaError> {
        let signed_at: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| NakamaError::BadSignature("the timestamp header is not Unix seconds"))?;
        if signed_at.abs_diff(now) > self.max_age.as_secs() {
            return Err(NakamaError::BadSignature("the timestamp is outside the accepted window"));
        }
        let signature = signature.trim();
        let hex = signature.strip_prefix(SCHEME).unwrap_or(signature);
        let presented =
            decode_hex(hex).ok_or(NakamaError::BadSignature("the signature is not sha256=<hex>"))?;
        let mut mac = self.mac();
        mac.update(timestamp.trim().as_bytes());
        mac.update(b".");
        mac.update(body);
        // Constant-time comparison, inside the hmac crate; it refuses a truncated MAC.
        mac.verify_slice(&presented)
            .map_err(|_| NakamaError::BadSignature("the signature does not match"))?;
        let max_age = i64::try_from(self.max_age.as_secs()).unwrap_or(i64::MAX);
        Ok(SignedRequest { mac: presented, accepted_until: signed_at.saturating_add(max_age) })
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(self.secret.expose().as_bytes()).expect("HMAC takes keys of any length")
    }
}

/// The signature header value for `body` at `timestamp` (for clients and tests).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{SCHEME}{hex}")
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> SignatureVerifier {
        SignatureVerifier::new(&Secret::new("s3cret"), Duration::from_secs(300)).unwrap()
    }

    #[test]
    fn accepts_its_own_signature_and_nothing_else() {
        let body = br#"[{"presence":{"user_id":"u"}}]"#;
        let signature = sign("s3cret", 1_000, body);
        assert!(verifier().verify("1000", &signature, body, 1_100).is_ok());
        assert!(verifier().verify("1000", signature.trim_start_matches("sha256="), body, 1_100).is_ok());
        assert!(verifier().verify("1000", &signature, b"[]", 1_100).is_err(), "other body");
        assert!(verifier().verify("1001", &signature, body, 1_100).is_err(), "other timestamp");
        assert!(verifier().verify("1000", &sign("other", 1_000, body), body, 1_100).is_err(), "other key");
        assert!(verifier().verify("1000", &signature, body, 1_301).is_err(), "too old");
        assert!(verifier().verify("soon", &signature, body, 1_100).is_err());
        assert!(verifier().verify("1000", "sha256=zz", body, 1_100).is_err());
        let truncated = &signature[..signature.len() - 2];
        assert!(verifier().verify("1000", truncated, body, 1_100).is_err(), "truncated");
    }

    #[test]
    fn a_signature_is_one_request_however_it_is_spelled() {
        let body = br#"{"name":"session_end","user_id":"u"}"#;
        let signature = sign("s3cret", 1_000, body);
        let signed = verifier().verify("1000", &signature, body, 1_100).unwrap();
        assert_eq!(signed.accepted_until(), 1_300, "the timestamp + max age");
        for spelling in [
            signature.trim_start_matches("sha256=").to_owned(),
            signature.to_ascii_uppercase().replace("SHA256=", "sha256="),
            format!("  {signature} "),
        ] {
            assert_eq!(verifier().verify("1000", &spelling, body, 1_100).unwrap(), signed, "{spelling}");
        }
        let later = sign("s3cret", 1_001, body);
        assert_ne!(verifier().verify("1001", &later, body, 1_100).unwrap(), signed, "signed anew");
    }

    #[test]
    fn no_secret_no_verifier() {
        assert!(SignatureVerifier::new(&Secret::default(), Duration::from_secs(1)).is_none());
    }

    #[test]
    fn matches_a_known_hmac_sha256_vector() {
        // RFC 4231 test case 2, so the primitive itself is known to be HMAC-SHA256 as Nakama computes it.
        let mut mac = HmacSha256::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}

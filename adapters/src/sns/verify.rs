//! `Unverified → Verified`: topic allowlist, message age, SigningCertURL rule, certificate validity
//! and the RSA signature (SignatureVersion 1 = SHA1withRSA, 2 = SHA256withRSA).

use std::collections::BTreeSet;
use std::time::Duration;

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::Engine as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::certs::{CertCache, CertError};
use super::message::{Unverified, Verified};

/// How far in the future a message's timestamp may lie (clock skew).
const FUTURE_SKEW: Duration = Duration::from_secs(300);

/// Why a message was not accepted as genuine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("topic {0:?} is not in sns.topics")]
    TopicNotAllowed(String),
    #[error("`Timestamp` {0:?} is not an RFC 3339 time")]
    BadTimestamp(String),
    #[error("the message is {age_s} s old, more than sns.max_age ({max_s} s)")]
    Stale { age_s: i64, max_s: u64 },
    #[error("the message's timestamp lies {0} s in the future")]
    FromTheFuture(i64),
    #[error("unsupported SignatureVersion {0:?} (1 and 2 are known)")]
    UnsupportedVersion(String),
    #[error("`Signature` is not base64")]
    SignatureNotBase64,
    #[error("the signature does not match the message")]
    BadSignature,
    #[error("the signing certificate is not valid at the message's arrival ({0})")]
    CertificateExpired(String),
    #[error(transparent)]
    Cert(#[from] CertError),
}

impl VerifyError {
    /// Worth a retry by SNS (the certificate could not be fetched just now).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Cert(CertError::Unavailable { .. }))
    }
}

/// Checks messages against the configured topics, age and AWS's signature.
pub struct Verifier {
    topics: BTreeSet<String>,
    max_age: Duration,
    certs: CertCache,
    /// Skips certificate and signature checks (topic and age still apply). Off unless configured.
    insecure_skip_verify: bool,
}

impl Verifier {
    pub fn new(topics: impl IntoIterator<Item = String>, max_age: Duration, certs: CertCache) -> Self {
        Self { topics: topics.into_iter().collect(), max_age, certs, insecure_skip_verify: false }
    }

    /// `sns.insecure_skip_verify`: accept unsigned or badly signed messages. Never in production.
    pub fn skipping_signatures(mut self, skip: bool) -> Self {
        self.insecure_skip_verify = skip;
        self
    }

    pub fn certs(&self) -> &CertCache {
        &self.certs
    }

    /// Verifies `message` as of `now`. The cheap checks (topic, age) come first, so a message for an
    /// unknown topic never makes the bridge fetch anything.
    pub async fn verify(&self, message: Unverified, now: OffsetDateTime) -> Result<Verified, VerifyError> {
        let m = message.peek();
        if !self.topics.contains(&m.topic_arn) {
            return Err(VerifyError::TopicNotAllowed(m.topic_arn.clone()));
        }
        let sent = OffsetDateTime::parse(&m.timestamp, &Rfc3339)
            .map_err(|_| VerifyError::BadTimestamp(m.timestamp.clone()))?;
        let age = now - sent;
        if age > self.max_age {
            return Err(VerifyError::Stale { age_s: age.whole_seconds(), max_s: self.max_age.as_secs() });
        }
        if -age > FUTURE_SKEW {
            return Err(VerifyError::FromTheFuture((-age).whole_seconds()));
        }
        if self.insecure_skip_verify {
            return Ok(Verified::new(message.into_inner()));
        }
        let algorithm: &'static dyn signature::VerificationAlgorithm = match m.signature_version.as_str() {
            "1" => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            "2" => &signature::RSA_PKCS1_2048_8192_SHA256,
            other => return Err(VerifyError::UnsupportedVersion(other.to_owned())),
        };
        let signature = base64::engine::general_purpose::STANDARD
            .decode(m.signature.as_bytes())
            .map_err(|_| VerifyError::SignatureNotBase64)?;
        let cert = self.certs.get(&m.signing_cert_url).await?;
        if now < cert.not_before || now > cert.not_after {
            return Err(VerifyError::CertificateExpired(format!(
                "valid {} to {}",
                cert.not_before.format(&Rfc3339).unwrap_or_default(),
                cert.not_after.format(&Rfc3339).unwrap_or_default()
            )));
        }
        UnparsedPublicKey::new(algorithm, &cert.rsa_public_key)
            .verify(m.string_to_sign().as_bytes(), &signature)
            .map_err(|_| VerifyError::BadSignature)?;
        Ok(Verified::new(message.into_inner()))
    }
}

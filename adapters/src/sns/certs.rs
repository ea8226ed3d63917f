//! SNS signing certificates: which URLs may be fetched at all, a pinned-certificate directory, and a
//! cache by URL with a TTL (a rotated certificate gets a new URL, so caching by URL is safe).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use base64::Engine as _;
use reqwest::Url;
use time::OffsetDateTime;
use x509_cert::Certificate;
use x509_cert::der::Decode;

/// Largest certificate document accepted from the network.
const MAX_CERT_BYTES: usize = 64 * 1024;
/// rsaEncryption.
const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";

/// Which URLs the bridge may visit on a message's behalf (SigningCertURL, SubscribeURL). Anything
/// else is a server-side request forgery hole: `http://169.254.169.254/…`, `localhost`, other hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlPolicy {
    /// Production and the only policy configuration can produce: `https`, host
    /// `sns.<region>.amazonaws.com[.cn]`, default port, no credentials.
    Aws,
    /// Unit tests only: SubscribeURL may be `http://127.0.0.1:<port>` (a local fake SNS);
    /// certificate URLs still follow [`UrlPolicy::Aws`]. Not constructible outside this crate's tests.
    #[cfg(test)]
    LoopbackForTests { port: u16 },
}

/// Why a URL may not be visited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {url:?} is not an Amazon SNS URL: {reason}")]
pub struct UrlRejected {
    pub what: &'static str,
    pub url: String,
    pub reason: &'static str,
}

impl UrlPolicy {
    /// Checks a SigningCertURL (`.pem` path required).
    pub fn check_cert_url(&self, url: &str) -> Result<Url, UrlRejected> {
        let reject = |reason| UrlRejected { what: "SigningCertURL", url: url.to_owned(), reason };
        // Checked before anything is fetched or cached, and keyed as sent: a long URL, or one
        // spelt differently (`/x/../`, an upper-case host) that parses to the same certificate,
        // would each be one more cache entry and fetch that anyone knowing a subscribed topic
        // could cause, signature or not.
        if url.len() > MAX_CERT_URL_LEN {
            return Err(reject("too long"));
        }
        let parsed = UrlPolicy::Aws.check(url, "SigningCertURL")?;
        if parsed.as_str() != url {
            return Err(reject("not in its normal form"));
        }
        if !is_cert_path(parsed.path()) {
            return Err(reject("path must be /SimpleNotificationService-<id>.pem"));
        }
        // AWS's certificate URLs have neither; allowed, each `?n=<i>` would be one more fetch
        // (and cache entry) anyone who knows a subscribed topic could cause, before any signature
        // is checked.
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(reject("no query or fragment allowed"));
        }
        Ok(parsed)
    }

    /// Checks a SubscribeURL before it is visited.
    pub fn check_subscribe_url(&self, url: &str) -> Result<Url, UrlRejected> {
        self.check(url, "SubscribeURL")
    }

    fn check(&self, url: &str, what: &'static str) -> Result<Url, UrlRejected> {
        let reject = |reason| UrlRejected { what, url: url.to_owned(), reason };
        let parsed = Url::parse(url).map_err(|_| reject("not a URL"))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(reject("credentials in the URL"));
        }
        match self {
            Self::Aws => {
                if parsed.scheme() != "https" {
                    return Err(reject("scheme must be https"));
                }
                if parsed.port().is_some() {
                    return Err(reject("no explicit port allowed"));
                }
                // An IP address (169.254.169.254, [::1]) can never match the name rule.
                if !parsed.host_str().is_some_and(is_sns_host) {
                    return Err(reject("host must be sns.<region>.amazonaws.com[.cn]"));
                }
            }
            #[cfg(test)]
            Self::LoopbackForTests { port } => {
                if parsed.scheme() != "http"
                    || parsed.host_str() != Some("127.0.0.1")
                    || parsed.port() != Some(*port)
                {
                    return Err(reject("not the test's fake SNS"));
                }
            }
        }
        Ok(parsed)
    }
}

/// Longer than any certificate URL AWS sends (~100 characters).
const MAX_CERT_URL_LEN: usize = 256;

/// `^sns\.<region>\.amazonaws\.com(\.cn)?$`, `<region>` shaped like an AWS region
/// (`us-east-1`, `us-gov-west-1`, `cn-north-1`): `[a-z]{2}(-[a-z]+)+-[0-9]+`. Stricter than the
/// `[a-z0-9-]+` AWS's own samples use, which admits `sns.s3.amazonaws.com` and
/// `sns.s3-external-1.amazonaws.com`: an S3 bucket named `sns`, whose owner could serve a
/// certificate of their own and sign any message.
pub fn is_sns_host(host: &str) -> bool {
    let Some(rest) = host.strip_prefix("sns.") else { return false };
    let region = rest
        .strip_suffix(".amazonaws.com")
        .or_else(|| rest.strip_suffix(".amazonaws.com.cn"))
        .unwrap_or_default();
    is_region(region)
}

fn is_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    let [first, middle @ .., last] = parts.as_slice() else { return false };
    first.len() == 2
        && first.bytes().all(|b| b.is_ascii_lowercase())
        && !middle.is_empty()
        && middle.iter().all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase()))
        && !last.is_empty()
        && last.bytes().all(|b| b.is_ascii_digit())
}

/// `/SimpleNotificationService-<id>.pem`, `<id>` letters, digits and `-` (AWS's are hex).
fn is_cert_path(path: &str) -> bool {
    path.strip_prefix("/SimpleNotificationService-")
        .and_then(|rest| rest.strip_suffix(".pem"))
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// What verification needs of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningCert {
    /// PKCS#1 `RSAPublicKey`, DER.
    pub rsa_public_key: Vec<u8>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl SigningCert {
    /// Reads the first certificate of a PEM document.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(pem).map_err(|_| "not PEM text".to_owned())?;
        let begin = "-----BEGIN CERTIFICATE-----";
        let end = "-----END CERTIFICATE-----";
        let start = text.find(begin).ok_or("no BEGIN CERTIFICATE line")? + begin.len();
        let stop = text[start..].find(end).ok_or("no END CERTIFICATE line")? + start;
        let body: String = text[start..stop].chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| format!("certificate is not base64: {e}"))?;
        Self::from_der(&der)
    }

    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let cert = Certificate::from_der(der).map_err(|e| format!("unreadable certificate: {e}"))?;
        let tbs = &cert.tbs_certificate;
        let spki = &tbs.subject_public_key_info;
        if spki.algorithm.oid.to_string() != RSA_ENCRYPTION {
            return Err(format!("certificate key is not RSA ({})", spki.algorithm.oid));
        }
        let key = spki.subject_public_key.as_bytes().ok_or("certificate key has unused bits")?;
        let time = |t: x509_cert::time::Time| {
            let since_epoch = t.to_unix_duration();
            OffsetDateTime::from_unix_timestamp(since_epoch.as_secs() as i64)
                .map_err(|_| "certificate validity out of range".to_owned())
        };
        Ok(Self {
            rsa_public_key: key.to_vec(),
            not_before: time(tbs.validity.not_before)?,
            not_after: time(tbs.validity.not_after)?,
        })
    }
}

/// Why a certificate could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error(transparent)]
    Rejected(#[from] UrlRejected),
    /// The network or AWS failed: worth SNS's retry.
    #[error("cannot fetch the signing certificate {url}: {message}")]
    Unavailable { url: String, message: String },
    #[error("the signing certificate {url} is unusable: {message}")]
    Invalid { url: String, message: String },
}

/// Certificates by URL: the pinned directory first (a file named like the URL's last path
/// segment), then the network; kept for `ttl`. Concurrent first requests for one URL share one
/// load (and its failure: nothing failed is kept, so the next request loads again).
pub struct CertCache {
    policy: UrlPolicy,
    pinned_dir: Option<PathBuf>,
    ttl: Duration,
    client: reqwest::Client,
    state: Mutex<CertState>,
    /// Tests only: fetch from this origin (`http://127.0.0.1:<port>`) instead of the URL's own,
    /// after the URL passed the policy.
    #[cfg(test)]
    pub(super) fetch_origin: Option<String>,
}

type Loading = Shared<BoxFuture<'static, Result<Arc<SigningCert>, CertError>>>;

#[derive(Default)]
struct CertState {
    ready: HashMap<String, (Instant, Arc<SigningCert>)>,
    loading: HashMap<String, Loading>,
}

impl CertCache {
    pub fn new(
        policy: UrlPolicy,
        pinned_dir: Option<PathBuf>,
        ttl: Duration,
        fetch_timeout: Duration,
    ) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(fetch_timeout)
            .build()
            .unwrap_or_default();
        Self {
            policy,
            pinned_dir,
            ttl,
            client,
            state: Mutex::default(),
            #[cfg(test)]
            fetch_origin: None,
        }
    }

    pub fn policy(&self) -> &UrlPolicy {
        &self.policy
    }

    /// The certificate at `url`, after checking `url` against the policy (before any fetch).
    pub async fn get(&self, url: &str) -> Result<Arc<SigningCert>, CertError> {
        let parsed = self.policy.check_cert_url(url)?;
        let loading = {
            let mut state = self.lock();
            if let Some((at, cert)) = state.ready.get(url)
                && at.elapsed() < self.ttl
            {
                return Ok(cert.clone());
            }
            state
                .loading
                .entry(url.to_owned())
                .or_insert_with(|| self.load(url, parsed).boxed().shared())
                .clone()
        };
        let loaded = loading.clone().await;
        // The first waiter back files the answer; the others find it filed.
        let mut state = self.lock();
        if state.loading.get(url).is_some_and(|current| current.ptr_eq(&loading)) {
            state.loading.remove(url);
            if let Ok(cert) = &loaded {
                state.ready.insert(url.to_owned(), (Instant::now(), cert.clone()));
            }
        }
        loaded
    }

    /// Reads the pinned file or fetches `parsed`, and parses the certificate: owned, so that
    /// every request waiting for it can drive it.
    fn load(
        &self,
        url: &str,
        parsed: Url,
    ) -> impl Future<Output = Result<Arc<SigningCert>, CertError>> + 'static {
        let url = url.to_owned();
        let pinned = self.pinned(&parsed);
        let client = self.client.clone();
        #[cfg(test)]
        let parsed = match &self.fetch_origin {
            Some(origin) => {
                Url::parse(origin).and_then(|origin| origin.join(parsed.path())).unwrap_or(parsed)
            }
            None => parsed,
        };
        async move {
            let invalid = |message: String| CertError::Invalid { url: url.clone(), message };
            let pem = match pinned {
                Some(path) => std::fs::read(&path)
                    .map_err(|e| invalid(format!("pinned file {}: {e}", path.display())))?,
                None => fetch(&client, parsed, &url).await?,
            };
            SigningCert::from_pem(&pem).map(Arc::new).map_err(invalid)
        }
    }

    /// The pinned file for this URL, if the directory has one.
    fn pinned(&self, url: &Url) -> Option<PathBuf> {
        let dir = self.pinned_dir.as_ref()?;
        let name = url.path_segments()?.next_back()?;
        if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) {
            return None;
        }
        let path = dir.join(name);
        path.is_file().then_some(path)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CertState> {
        // Every change is one insert or removal: a poisoned map is still consistent.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Fetches the certificate at `url` (reported as `shown`: the URL the message named).
async fn fetch(client: &reqwest::Client, url: Url, shown: &str) -> Result<Vec<u8>, CertError> {
    let unavailable = |message: String| CertError::Unavailable { url: shown.to_owned(), message };
    tracing::info!(url = %shown, "fetching an SNS signing certificate");
    let mut response = client.get(url).send().await.map_err(|e| unavailable(e.to_string()))?;
    if !response.status().is_success() {
        return Err(unavailable(format!("HTTP {}", response.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| unavailable(e.to_string()))? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_CERT_BYTES {
            return Err(CertError::Invalid { url: shown.to_owned(), message: "larger than 64 KiB".into() });
        }
    }
    Ok(body)
}

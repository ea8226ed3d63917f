//! A string that must never reach a log line or a printed configuration.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret value (API token, HMAC key). `Debug` and `Serialize` print `<redacted>` (or an empty
/// string when unset), so a derived `Debug` of a settings struct or `check-config` cannot leak it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

const REDACTED: &str = "<redacted>";

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() { f.write_str("\"\"") } else { f.write_str(REDACTED) }
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.0.is_empty() { "" } else { REDACTED })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        super::lenient::string(deserializer).map(Secret)
    }
}

/// A service URL (Redis, NATS; comma-separated lists too) that may carry a password: `Debug` and
/// `Serialize` hide the password, [`ServiceUrl::expose`] gives the real one.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ServiceUrl(String);

impl ServiceUrl {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn redacted(&self) -> String {
        self.0.split(',').map(redact_url).collect::<Vec<_>>().join(",")
    }
}

impl fmt::Debug for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl Serialize for ServiceUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for ServiceUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        super::lenient::string(deserializer).map(ServiceUrl)
    }
}

/// Hides the password of a URL such as `redis://user:pass@host:6379`, and the values of its query
/// (`redis+unix:///run/redis.sock?pass=…`, a webhook's `?token=…`): the keys stay, to be told apart.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url.trim()) {
        Ok(mut parsed) if parsed.password().is_some() || parsed.query().is_some() => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("redacted"));
            }
            if parsed.query().is_some() {
                let keys: Vec<String> = parsed.query_pairs().map(|(key, _)| key.into_owned()).collect();
                let mut query = parsed.query_pairs_mut();
                query.clear();
                for key in keys {
                    query.append_pair(&key, "redacted");
                }
            }
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        // Not a URL we can read: it may still hold a secret, so say nothing of it.
        Err(_) if url.is_empty() => String::new(),
        Err(_) => REDACTED.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_serialize_hide_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"<redacted>\"");
        assert_eq!(secret.expose(), "hunter2");
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
    }

    #[test]
    fn url_passwords_are_hidden() {
        assert_eq!(redact_url("redis://user:pw@127.0.0.1:6379/0"), "redis://user:redacted@127.0.0.1:6379/0");
        assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact_url(""), "");
        // Passwords in the query, as redis-rs reads them (`pass`), and tokens in webhook URLs.
        assert_eq!(
            redact_url("redis+unix:///run/redis.sock?pass=hunter2&db=2"),
            "redis+unix:///run/redis.sock?pass=redacted&db=redacted"
        );
        assert_eq!(
            redact_url("https://u:pw@hooks.example.com/x?token=s3cret"),
            "https://u:redacted@hooks.example.com/x?token=redacted"
        );
    }
}

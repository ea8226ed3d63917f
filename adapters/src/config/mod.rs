//! Configuration: compiled-in `config/default.toml` ← `--config` file ← Gameye's own `GAMEYE_API_*`
//! variables ← `BRIDGE_<SECTION>__<KEY>` variables, merged by figment, validated once.
//! Unknown keys anywhere are errors that name the key.

mod lenient;
mod secret;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bridge::{CapExceeded, LatencyCap, MissingLatency, Objective, RegionPolicy};
use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

pub use lenient::duration::parse as parse_duration;
pub use secret::{Secret, ServiceUrl, redact_url};

/// The compiled-in defaults; also the reference documentation of every key.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Prefix of the bridge's own environment variables (`BRIDGE_HTTP__LISTEN`).
pub const ENV_PREFIX: &str = "BRIDGE_";

/// Gameye's env names, as its Nakama plugin reads them, and the keys they set.
const GAMEYE_ENV: [(&str, &str); 6] = [
    ("GAMEYE_API_URL", "url"),
    ("GAMEYE_API_TOKEN", "token"),
    ("GAMEYE_API_IMAGE", "image"),
    ("GAMEYE_API_IMAGE_VERSION", "version"),
    ("GAMEYE_API_REGION", "region"),
    ("GAMEYE_API_TTL", "ttl"),
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid configuration: `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

impl ConfigError {
    fn invalid(key: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid { key, message: message.into() }
    }
}

/// The whole effective configuration. `Debug` and `Serialize` never show secrets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    pub gameye: GameyeSettings,
    pub redis: RedisSettings,
    pub nats: NatsSettings,
    pub placement: PlacementSettings,
    pub seats: SeatsSettings,
    pub reconciler: ReconcilerSettings,
    pub sns: SnsSettings,
    pub nakama: NakamaSettings,
    pub log: LogSettings,
    pub runtime: RuntimeSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    pub tokens: Vec<Secret>,
    pub body_limit: usize,
    #[serde(with = "lenient::duration")]
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GameyeSettings {
    #[serde(deserialize_with = "lenient::string")]
    pub url: String,
    pub token: Secret,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emulate: Option<bool>,
    #[serde(deserialize_with = "lenient::string")]
    pub emulator_world: String,
    #[serde(deserialize_with = "lenient::string")]
    pub image: String,
    #[serde(deserialize_with = "lenient::string")]
    pub version: String,
    #[serde(deserialize_with = "lenient::string")]
    pub region: String,
    #[serde(with = "lenient::duration")]
    pub ttl: Duration,
    #[serde(with = "lenient::duration")]
    pub connect_timeout: Duration,
    #[serde(with = "lenient::duration")]
    pub request_timeout: Duration,
    pub pool_max_idle: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: ServiceUrl,
    #[serde(deserialize_with = "lenient::string")]
    pub prefix: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSettings {
    pub url: ServiceUrl,
    #[serde(deserialize_with = "lenient::string")]
    pub prefix: String,
    #[serde(deserialize_with = "lenient::string")]
    pub stream: String,
    #[serde(deserialize_with = "lenient::string")]
    pub consumer: String,
    #[serde(deserialize_with = "lenient::string")]
    pub credentials_file: String,
    /// NKey seed (`SU…`) to authenticate with.
    pub nkey: Secret,
    pub token: Secret,
    #[serde(deserialize_with = "lenient::string")]
    pub user: String,
    pub password: Secret,
    pub tls_required: bool,
    #[serde(deserialize_with = "lenient::string")]
    pub tls_ca_file: String,
    #[serde(deserialize_with = "lenient::string")]
    pub tls_cert_file: String,
    #[serde(deserialize_with = "lenient::string")]
    pub tls_key_file: String,
    /// Stream capturing `<prefix>.match.assigned.>` and `.failed.>`; empty: results on core NATS only.
    #[serde(deserialize_with = "lenient::string")]
    pub results_stream: String,
    #[serde(with = "lenient::duration")]
    pub results_max_age: Duration,
    pub max_deliver: i64,
    #[serde(with = "lenient::duration")]
    pub ack_wait: Duration,
    #[serde(with = "lenient::duration")]
    pub nak_delay: Duration,
    /// Messages (and requests) one instance works on at once.
    pub concurrency: usize,
    #[serde(deserialize_with = "lenient::string")]
    pub request_queue_group: String,
    /// Doors whose outcomes are announced on NATS (`*`: all); the NATS door's own always are.
    pub announce_sources: Vec<String>,
}

impl NatsSettings {
    /// Doors `announce_sources` may name (plus `*`).
    pub const SOURCES: [&'static str; 4] = ["http", "nats", "sns", "nakama"];

    fn validate(&self) -> Result<(), ConfigError> {
        // JetStream names become subject tokens of its API: no dots, spaces or wildcards.
        let bad_name = |name: &str| name.is_empty() || name.contains(['.', ' ', '*', '>', '/', '\\']);
        if bad_name(&self.stream) {
            return Err(ConfigError::invalid(
                "nats.stream",
                "must be a non-empty name without . * > / \\ or spaces",
            ));
        }
        if bad_name(&self.consumer) {
            return Err(ConfigError::invalid(
                "nats.consumer",
                "must be a non-empty name without . * > / \\ or spaces",
            ));
        }
        if !self.results_stream.is_empty() && bad_name(&self.results_stream) {
            return Err(ConfigError::invalid(
                "nats.results_stream",
                "must be empty or a name without . * > / \\ or spaces",
            ));
        }
        if !self.results_stream.is_empty() && self.results_stream == self.stream {
            return Err(ConfigError::invalid("nats.results_stream", "must differ from nats.stream"));
        }
        if self.request_queue_group.is_empty() || self.request_queue_group.contains([' ', '*', '>']) {
            return Err(ConfigError::invalid(
                "nats.request_queue_group",
                "must be a non-empty subject token",
            ));
        }
        if self.max_deliver < 1 {
            return Err(ConfigError::invalid("nats.max_deliver", "must be at least 1"));
        }
        if self.ack_wait < Duration::from_secs(1) {
            return Err(ConfigError::invalid("nats.ack_wait", "must be at least 1s"));
        }
        if self.concurrency == 0 || self.concurrency > 10_000 {
            return Err(ConfigError::invalid("nats.concurrency", "must be from 1 to 10000"));
        }
        if self.results_max_age.is_zero() {
            return Err(ConfigError::invalid("nats.results_max_age", "must be greater than zero"));
        }
        if let Some(unknown) =
            self.announce_sources.iter().find(|s| *s != "*" && !Self::SOURCES.contains(&s.as_str()))
        {
            return Err(ConfigError::invalid(
                "nats.announce_sources",
                format!("unknown door `{unknown}` (known: *, {})", Self::SOURCES.join(", ")),
            ));
        }
        if self.tls_cert_file.is_empty() != self.tls_key_file.is_empty() {
            return Err(ConfigError::invalid(
                "nats.tls_cert_file",
                "tls_cert_file and tls_key_file go together",
            ));
        }
        if self.password.is_empty() != self.user.is_empty() {
            return Err(ConfigError::invalid("nats.user", "user and password go together"));
        }
        let methods = [
            !self.credentials_file.is_empty(),
            !self.nkey.is_empty(),
            !self.token.is_empty(),
            !self.user.is_empty(),
        ];
        if methods.iter().filter(|set| **set).count() > 1 {
            return Err(ConfigError::invalid(
                "nats.credentials_file",
                "set at most one of credentials_file, nkey, token, user/password",
            ));
        }
        for (key, path) in [
            ("nats.credentials_file", &self.credentials_file),
            ("nats.tls_ca_file", &self.tls_ca_file),
            ("nats.tls_cert_file", &self.tls_cert_file),
            ("nats.tls_key_file", &self.tls_key_file),
        ] {
            if !self.url.is_empty() && !path.is_empty() && !Path::new(path).is_file() {
                return Err(ConfigError::invalid(key, format!("{path} is not a readable file")));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementSettings {
    pub objective: Objective,
    pub default_order: Vec<String>,
    pub preference_order: Vec<String>,
    pub caps: Vec<LatencyCap>,
    pub missing_latency: MissingLatency,
    pub on_cap_exceeded: CapExceeded,
    pub aliases: BTreeMap<String, String>,
    #[serde(with = "lenient::duration")]
    pub cooldown: Duration,
    #[serde(with = "lenient::duration")]
    pub deadline: Duration,
    #[serde(with = "lenient::duration")]
    pub locations_cache: Duration,
    #[serde(with = "lenient::duration")]
    pub latency_ttl: Duration,
    #[serde(with = "lenient::duration")]
    pub record_ttl: Duration,
    #[serde(with = "lenient::duration")]
    pub recovery_interval: Duration,
}

impl PlacementSettings {
    /// The chooser's policy; `first_region` (`gameye.region`) leads the default order.
    pub fn region_policy(&self, first_region: &str) -> RegionPolicy {
        let mut default_order = Vec::with_capacity(self.default_order.len() + 1);
        for location in std::iter::once(first_region).chain(self.default_order.iter().map(String::as_str)) {
            if !location.is_empty() && !default_order.iter().any(|known| known == location) {
                default_order.push(location.to_owned());
            }
        }
        RegionPolicy {
            objective: self.objective,
            caps: self.caps.clone(),
            missing_latency: self.missing_latency,
            on_cap_exceeded: self.on_cap_exceeded,
            preference_order: self.preference_order.clone(),
            default_order,
        }
    }
}

/// The session reconciler (`[reconciler]`): compares Gameye's sessions with the seat records.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcilerSettings {
    /// Whether this instance takes part (one instance at a time reconciles, under a store lease).
    pub enabled: bool,
    /// Time between two scans; the lease lasts three intervals (renewed at every scan).
    #[serde(with = "lenient::duration")]
    pub interval: Duration,
    /// The largest share of wall-clock time a scan spends working, in [0.01, 1]: it rests in between,
    /// so that a scan of a large deployment does not show in placements' latency. 1: never rests.
    pub max_busy: f64,
    /// Decode Gameye's listing at the idle CPU priority (Linux `SCHED_IDLE`), so that its slices
    /// never keep a request's thread from a core. False: the normal priority, for a machine kept so
    /// busy that a scan would never finish.
    pub idle_priority: bool,
}

impl ReconcilerSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.interval < Duration::from_millis(100) {
            return Err(ConfigError::invalid("reconciler.interval", "must be at least 100ms"));
        }
        // Also refuses NaN.
        if !(0.01..=1.0).contains(&self.max_busy) {
            return Err(ConfigError::invalid("reconciler.max_busy", "must be within 0.01 and 1"));
        }
        Ok(())
    }

    /// How a scan is paced: slices of 2 ms, each followed by its rest.
    pub fn pace(&self) -> crate::pace::Pace {
        crate::pace::Pace {
            busy: self.max_busy,
            slice: Duration::from_millis(2),
            idle_priority: self.idle_priority,
        }
    }
}

/// Seats of placed sessions, and backfill reservations (`[seats]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeatsSettings {
    /// Seats of a session whose match names no `max_players` and whose image is not in `capacity`.
    pub default_capacity: u32,
    /// Seats per image, e.g. `{ "demo-game" = 10 }`.
    pub capacity: BTreeMap<String, u32>,
    /// How long a backfill's reserved seats are held for their players' join.
    #[serde(with = "lenient::duration")]
    pub reservation_ttl: Duration,
    /// How long a placed match's own players' seats are held for their join: longer, as their server
    /// may still be starting (and backfill must not take their seats meanwhile).
    #[serde(with = "lenient::duration")]
    pub match_reservation_ttl: Duration,
    /// How long an image's backfill candidates are reused before its sessions are listed again.
    #[serde(with = "lenient::duration")]
    pub backfill_cache: Duration,
    /// How joins and leaves reach Gameye's player list (`[seats.gameye_sync]`).
    pub gameye_sync: GameyeSyncSettings,
    /// Where the end of every session is POSTed, signed (`[seats.ended_webhook]`).
    pub ended_webhook: EndedWebhookSettings,
}

/// The player-sync outbox's worker (`[seats.gameye_sync]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GameyeSyncSettings {
    /// How often queued syncs are looked for (besides at once after a change on this instance).
    #[serde(with = "lenient::duration")]
    pub poll: Duration,
    /// The first retry delay after a failed sync; doubles up to `retry_max`.
    #[serde(with = "lenient::duration")]
    pub retry_min: Duration,
    #[serde(with = "lenient::duration")]
    pub retry_max: Duration,
    /// How long a claimed session is left to its worker.
    #[serde(with = "lenient::duration")]
    pub lease: Duration,
}

impl GameyeSyncSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.poll < Duration::from_millis(10) {
            return Err(ConfigError::invalid("seats.gameye_sync.poll", "must be at least 10ms"));
        }
        if self.retry_min < Duration::from_millis(10) {
            return Err(ConfigError::invalid("seats.gameye_sync.retry_min", "must be at least 10ms"));
        }
        if self.retry_max < self.retry_min {
            return Err(ConfigError::invalid("seats.gameye_sync.retry_max", "must be at least retry_min"));
        }
        if self.lease < Duration::from_secs(1) {
            return Err(ConfigError::invalid("seats.gameye_sync.lease", "must be at least 1s"));
        }
        Ok(())
    }
}

/// The session-ended webhook: one signed `session.ended` event per session, however it ended
/// (the reconciler finding it gone at Gameye, or `DELETE /v1/sessions/{id}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndedWebhookSettings {
    /// Empty: no webhook.
    pub url: ServiceUrl,
    /// `whsec_<base64>` or any string; signs `webhook-signature`.
    pub secret: Secret,
    /// Bound on one attempt.
    #[serde(with = "lenient::duration")]
    pub timeout: Duration,
    /// How long after a session ended a failing announcement of it (5xx, 408, 429, timeout,
    /// unreachable; NATS too) is retried from the session-end outbox before it is given up.
    #[serde(with = "lenient::duration")]
    pub retry_for: Duration,
}

impl EndedWebhookSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.timeout.is_zero() {
            return Err(ConfigError::invalid("seats.ended_webhook.timeout", "must be greater than zero"));
        }
        if let Some(encoded) = self.secret.expose().strip_prefix("whsec_") {
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::STANDARD.decode(encoded);
            if !decoded.is_ok_and(|key| !key.is_empty()) {
                return Err(ConfigError::invalid(
                    "seats.ended_webhook.secret",
                    "a whsec_ secret must be non-empty base64 after the prefix",
                ));
            }
        }
        if self.url.is_empty() {
            return Ok(());
        }
        let url = reqwest::Url::parse(self.url.expose())
            .map_err(|e| ConfigError::invalid("seats.ended_webhook.url", e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConfigError::invalid("seats.ended_webhook.url", "must be an http(s) URL"));
        }
        if self.secret.is_empty() {
            return Err(ConfigError::invalid(
                "seats.ended_webhook.secret",
                "the session-ended webhook needs a signing secret (whsec_<base64> or any string)",
            ));
        }
        Ok(())
    }
}

impl SeatsSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        self.ended_webhook.validate()?;
        self.gameye_sync.validate()?;
        if self.default_capacity == 0 {
            return Err(ConfigError::invalid("seats.default_capacity", "must be at least 1"));
        }
        if let Some((image, _)) = self.capacity.iter().find(|(_, seats)| **seats == 0) {
            return Err(ConfigError::invalid("seats.capacity", format!("`{image}`: must be at least 1")));
        }
        if self.capacity.keys().any(String::is_empty) {
            return Err(ConfigError::invalid("seats.capacity", "image names must not be empty"));
        }
        if self.backfill_cache > Duration::from_secs(10) {
            return Err(ConfigError::invalid("seats.backfill_cache", "must be at most 10s (0 turns it off)"));
        }
        if self.reservation_ttl < Duration::from_secs(1) {
            return Err(ConfigError::invalid("seats.reservation_ttl", "must be at least 1s"));
        }
        if self.match_reservation_ttl < Duration::from_secs(1) {
            return Err(ConfigError::invalid("seats.match_reservation_ttl", "must be at least 1s"));
        }
        Ok(())
    }
}

/// The Nakama door: how hook calls are read and authenticated, and where results are pushed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NakamaSettings {
    /// Nakama's base URL for the push path (`http://nakama:7350`). Empty: no push, the hook's
    /// HTTP response is the only answer.
    pub rpc_url: ServiceUrl,
    /// The module RPC the push calls (`POST <rpc_url>/v2/rpc/<rpc_id>?unwrap`).
    #[serde(deserialize_with = "lenient::string")]
    pub rpc_id: String,
    /// Nakama's `runtime.http_key`, sent as Basic auth on the push.
    pub http_key: Secret,
    /// Shared secret of the hook's HMAC signature header (the alternative to a bearer token).
    pub hmac_secret: Secret,
    /// How far a signed request's timestamp may be from now (replay window).
    #[serde(with = "lenient::duration")]
    pub signature_max_age: Duration,
    /// Name of the numeric entry properties holding latencies; `{location}` stands for the location.
    #[serde(deserialize_with = "lenient::string")]
    pub latency_property_pattern: String,
    /// String entry property naming the player's team (the party id is used when it is absent).
    #[serde(deserialize_with = "lenient::string")]
    pub team_property: String,
    /// String entry properties copied into the session's labels (`nakama_<key>`).
    pub label_allowlist: Vec<String>,
    /// Seats per Nakama session when the hook names none. Unset: the per-image default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_players: Option<u32>,
    /// Timeout of one push to Nakama.
    #[serde(with = "lenient::duration")]
    pub request_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    #[serde(deserialize_with = "lenient::string")]
    pub level: String,
}

/// The async runtime (`[runtime]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSettings {
    /// Threads that run requests and background work; 0: Tokio's default, one per core this
    /// process may use (`TOKIO_WORKER_THREADS` overrides it).
    pub worker_threads: usize,
    /// 1: one multi-threaded runtime (`worker_threads`). 2 or more: that many single-threaded
    /// runtimes on threads of their own ([`crate::lanes`]), each serving a share of the HTTP
    /// connections with its own Redis connection and Gameye pool; the first also runs the
    /// background work and the NATS door. 0: one lane per core this process may use.
    pub lanes: usize,
    /// Whether the process may use transparent huge pages (Linux). Off by default: the first touch
    /// of a huge page zeroes 2 MiB on the thread that touched it, a stall in the middle of a request.
    pub transparent_huge_pages: bool,
}

/// Where the Gameye API comes from, decided once from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GameyeBackend {
    /// The configured `gameye.url`.
    Remote,
    /// The emulator embedded in this process.
    Emulated,
}

impl Settings {
    /// Loads defaults ← `file` ← process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// Same as [`Settings::load`] with an explicit environment, so tests need not touch the process's.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            // Figment treats a missing file as empty; a named file that is not there is a mistake.
            std::fs::File::open(path)
                .map_err(|e| ConfigError::File { path: path.to_owned(), message: e.to_string() })?;
            figment = figment.merge(Toml::file_exact(path));
        }
        let env: Vec<(String, String)> = env.into_iter().collect();
        figment = figment.merge(gameye_env(&env)).merge(bridge_env(&env));
        let settings: Settings =
            figment.extract().map_err(|e| ConfigError::Parse(describe_figment_error(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Whether the embedded emulator answers instead of a real Gameye.
    pub fn gameye_backend(&self) -> GameyeBackend {
        match self.gameye.emulate {
            Some(true) => GameyeBackend::Emulated,
            Some(false) => GameyeBackend::Remote,
            None if self.gameye.url.is_empty() => GameyeBackend::Emulated,
            None => GameyeBackend::Remote,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let production_like = !self.redis.url.is_empty() || !self.nats.url.is_empty();
        match (self.gameye.emulate, self.gameye.url.is_empty()) {
            (Some(false), true) => {
                return Err(ConfigError::invalid(
                    "gameye.url",
                    "gameye.emulate = false needs a Gameye URL (GAMEYE_API_URL)",
                ));
            }
            (None, true) if production_like => {
                return Err(ConfigError::invalid(
                    "gameye.url",
                    "Redis or NATS is configured but no Gameye URL: set GAMEYE_API_URL, or \
                     gameye.emulate = true to run against the emulator on purpose",
                ));
            }
            _ => {}
        }
        if !self.gameye.url.is_empty() {
            let url = reqwest::Url::parse(&self.gameye.url)
                .map_err(|e| ConfigError::invalid("gameye.url", e.to_string()))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::invalid("gameye.url", "must be an http(s) URL"));
            }
            if self.gameye_backend() == GameyeBackend::Remote && self.gameye.token.is_empty() {
                return Err(ConfigError::invalid(
                    "gameye.token",
                    "a Gameye URL needs an API token (GAMEYE_API_TOKEN)",
                ));
            }
        }
        if self.gameye.image.is_empty() {
            return Err(ConfigError::invalid("gameye.image", "must not be empty"));
        }
        if self.gameye.ttl < Duration::from_secs(60) {
            return Err(ConfigError::invalid(
                "gameye.ttl",
                "must be at least 1m (Gameye rounds up to minutes)",
            ));
        }
        for (key, value) in [
            ("gameye.connect_timeout", self.gameye.connect_timeout),
            ("gameye.request_timeout", self.gameye.request_timeout),
            ("placement.deadline", self.placement.deadline),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(key, "must be greater than zero"));
            }
        }
        if self.http.tokens.iter().any(Secret::is_empty) {
            return Err(ConfigError::invalid("http.tokens", "tokens must not be empty strings"));
        }
        if self.http.tokens.is_empty() && !self.http.listen.ip().is_loopback() {
            return Err(ConfigError::invalid(
                "http.listen",
                format!(
                    "{} is not a loopback address and no http.tokens are configured: \
                     refusing to serve an open API to the network",
                    self.http.listen
                ),
            ));
        }
        if self.http.body_limit < 1024 {
            return Err(ConfigError::invalid("http.body_limit", "must be at least 1024 bytes"));
        }
        if self.redis.prefix.is_empty() {
            return Err(ConfigError::invalid("redis.prefix", "must not be empty"));
        }
        if self.nats.prefix.is_empty() || self.nats.prefix.contains([' ', '*', '>']) {
            return Err(ConfigError::invalid("nats.prefix", "must be a non-empty subject token"));
        }
        self.nats.validate()?;
        if let Err(invalid) = self.placement.region_policy(&self.gameye.region).validate() {
            return Err(ConfigError::Invalid {
                key: "placement",
                message: format!("placement.{}: {}", invalid.field, invalid.message),
            });
        }
        self.nakama.validate()?;
        self.seats.validate()?;
        // A sync makes up to three Gameye calls; a claim that ran out mid-sync would let a second
        // worker sync the same session beside the first.
        let slowest_sync = self.gameye.request_timeout.saturating_mul(3) + Duration::from_secs(5);
        if self.seats.gameye_sync.lease < slowest_sync {
            return Err(ConfigError::invalid(
                "seats.gameye_sync.lease",
                format!("must be at least 3 × gameye.request_timeout + 5s ({slowest_sync:?})"),
            ));
        }
        // A pending record must outlive its lease (deadline + 5 s), or a crashed owner's match
        // would expire before recovery could take it over.
        let lease = self.placement.deadline + bridge::placement::LEASE_MARGIN;
        if self.placement.record_ttl <= lease {
            return Err(ConfigError::invalid(
                "placement.record_ttl",
                format!("must be longer than placement.deadline + 5s ({lease:?})"),
            ));
        }
        self.reconciler.validate()?;
        self.sns.validate(self.http.listen)?;
        for (key, value) in [
            ("placement.cooldown", self.placement.cooldown),
            ("placement.latency_ttl", self.placement.latency_ttl),
            ("placement.record_ttl", self.placement.record_ttl),
            ("placement.recovery_interval", self.placement.recovery_interval),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(key, "must be greater than zero"));
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets redacted (for `check-config`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }
}

impl NakamaSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if !self.rpc_url.is_empty() {
            let url = reqwest::Url::parse(self.rpc_url.expose())
                .map_err(|e| ConfigError::invalid("nakama.rpc_url", e.to_string()))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::invalid("nakama.rpc_url", "must be an http(s) URL"));
            }
            if self.rpc_id.is_empty() || self.rpc_id.contains(['/', '?', '#', ' ']) {
                return Err(ConfigError::invalid("nakama.rpc_id", "must be a non-empty RPC id"));
            }
            if self.http_key.is_empty() {
                return Err(ConfigError::invalid(
                    "nakama.http_key",
                    "nakama.rpc_url needs Nakama's runtime.http_key",
                ));
            }
        }
        if self.latency_property_pattern.matches("{location}").count() != 1 {
            return Err(ConfigError::invalid(
                "nakama.latency_property_pattern",
                "must contain `{location}` exactly once, e.g. \"latency_{location}\"",
            ));
        }
        if self.team_property.is_empty() {
            return Err(ConfigError::invalid("nakama.team_property", "must not be empty"));
        }
        if self.label_allowlist.iter().any(|key| key.is_empty() || key.len() > 64) {
            return Err(ConfigError::invalid("nakama.label_allowlist", "keys must be 1-64 characters"));
        }
        if self.max_players == Some(0) {
            return Err(ConfigError::invalid("nakama.max_players", "must be at least 1 when set"));
        }
        for (key, value) in [
            ("nakama.signature_max_age", self.signature_max_age),
            ("nakama.request_timeout", self.request_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(key, "must be greater than zero"));
            }
        }
        Ok(())
    }
}

/// Gameye's env names, taken as raw strings: GAMEYE_API_IMAGE_VERSION=1.10 must stay "1.10".
fn gameye_env(env: &[(String, String)]) -> EnvProvider {
    let mut dict = Dict::new();
    for (name, key) in GAMEYE_ENV {
        if let Some((_, value)) = env.iter().find(|(k, _)| k == name) {
            insert_path(&mut dict, &["gameye", key], Value::from(value.clone()));
        }
    }
    EnvProvider { name: "GAMEYE_API_* environment variables", dict }
}

/// `BRIDGE_HTTP__LISTEN=…` → `http.listen`; values parsed like figment's own `Env` provider
/// (`true`, `8080`, `["a","b"]`, `"quoted strings"`).
fn bridge_env(env: &[(String, String)]) -> EnvProvider {
    let mut dict = Dict::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else { continue };
        if kubernetes_service_link(rest) {
            continue;
        }
        let key = rest.to_ascii_lowercase().replace("__", ".");
        if key.is_empty() || key.split('.').any(str::is_empty) {
            continue;
        }
        let parsed: Value = value.parse().unwrap_or_else(|_| Value::from(value.clone()));
        let path: Vec<&str> = key.split('.').collect();
        insert_path(&mut dict, &path, parsed);
    }
    EnvProvider { name: "BRIDGE_* environment variables", dict }
}

/// Whether `BRIDGE_<rest>` is one of the variables Kubernetes gives every pod for a Service named
/// `bridge` or `bridge-…` (`BRIDGE_SERVICE_HOST`, `BRIDGE_PORT_8080_TCP_ADDR`, …). Every setting's
/// name has a `__`, so these can never be one; read as settings they stopped the bridge at start.
/// Any other name without `__` is still an error (a misspelt setting).
fn kubernetes_service_link(rest: &str) -> bool {
    if rest.contains("__") {
        return false;
    }
    let words: Vec<&str> = rest.split('_').collect();
    words.windows(2).any(|pair| pair == ["SERVICE", "HOST"] || pair == ["SERVICE", "PORT"])
        || words.last() == Some(&"PORT")
        || words.windows(3).any(|triple| {
            triple[0] == "PORT"
                && triple[1].bytes().all(|b| b.is_ascii_digit())
                && matches!(triple[2], "TCP" | "UDP" | "SCTP")
        })
}

fn insert_path(dict: &mut Dict, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert((*last).to_owned(), value);
        }
        [first, rest @ ..] => {
            let entry = dict.entry((*first).to_owned()).or_insert_with(|| Value::from(Dict::new()));
            if entry.as_dict().is_none() {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// Environment variables handed in explicitly, so tests need not change the process's own.
struct EnvProvider {
    name: &'static str,
    dict: Dict,
}

impl Provider for EnvProvider {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name).interpolater(|_profile, keys| {
            if keys.len() == 2
                && keys[0] == "gameye"
                && let Some((name, _)) = GAMEYE_ENV.iter().find(|(_, key)| *key == keys[1])
            {
                return format!("{name} or {ENV_PREFIX}GAMEYE__{}", keys[1].to_ascii_uppercase());
            }
            let joined: Vec<String> = keys.iter().map(|k| k.to_ascii_uppercase()).collect();
            format!("{ENV_PREFIX}{}", joined.join("__"))
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

fn describe_figment_error(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let profile = e.profile.clone().unwrap_or_default();
            let source = e
                .metadata
                .as_ref()
                .map(|m| match m.source {
                    Some(ref source) => format!(" (in {source})"),
                    None => format!(" (from {})", m.interpolate(&profile, &e.path)),
                })
                .unwrap_or_default();
            if key.is_empty() {
                format!("{}{source}", e.kind)
            } else {
                format!("`{key}`: {}{source}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The SNS door (AWS GameLift FlexMatch events over Amazon SNS).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnsSettings {
    /// TopicArns whose messages are accepted; empty: every SNS message is refused.
    pub topics: Vec<String>,
    /// Directory of pinned signing certificates, each named like the last path segment of its
    /// SigningCertURL (`SimpleNotificationService-<hash>.pem`). Empty: none; fetched from AWS.
    #[serde(deserialize_with = "lenient::string")]
    pub pinned_cert_dir: String,
    /// How long a fetched certificate is reused.
    #[serde(with = "lenient::duration")]
    pub cert_cache_ttl: Duration,
    /// Messages older than this (by their `Timestamp`) are refused.
    #[serde(with = "lenient::duration")]
    pub max_age: Duration,
    /// Confirm subscriptions by visiting SubscribeURL; off: log the URL for an operator.
    pub auto_confirm: bool,
    /// Accept messages without checking signatures. Loopback `http.listen` only; loudly logged.
    pub insecure_skip_verify: bool,
    /// Bound on a certificate fetch or a subscription confirmation.
    #[serde(with = "lenient::duration")]
    pub fetch_timeout: Duration,
    pub results_webhook: ResultsWebhookSettings,
    /// Image (and version) per matchmaking configuration ARN; others use `gameye.image`/`version`.
    pub configurations: BTreeMap<String, SnsImage>,
}

/// Where SNS placements' outcomes are POSTed (Standard Webhooks signing).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsWebhookSettings {
    /// Empty: no webhook.
    pub url: ServiceUrl,
    /// `whsec_<base64>` or any string; signs `webhook-signature`.
    pub secret: Secret,
    #[serde(with = "lenient::duration")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnsImage {
    #[serde(deserialize_with = "lenient::string")]
    pub image: String,
    #[serde(default, deserialize_with = "lenient::string")]
    pub version: String,
}

impl SnsSettings {
    fn validate(&self, listen: SocketAddr) -> Result<(), ConfigError> {
        for topic in &self.topics {
            let parts: Vec<&str> = topic.splitn(6, ':').collect();
            let well_formed = parts.len() == 6
                && parts[0] == "arn"
                && parts[1].starts_with("aws")
                && parts[2] == "sns"
                && parts.iter().skip(3).all(|p| !p.is_empty() && !p.contains(char::is_whitespace));
            if !well_formed {
                return Err(ConfigError::invalid(
                    "sns.topics",
                    format!("{topic:?} is not an SNS topic ARN (arn:aws:sns:<region>:<account>:<name>)"),
                ));
            }
        }
        if !self.pinned_cert_dir.is_empty() && !Path::new(&self.pinned_cert_dir).is_dir() {
            return Err(ConfigError::invalid(
                "sns.pinned_cert_dir",
                format!("{} is not a directory", self.pinned_cert_dir),
            ));
        }
        for (key, value) in [
            ("sns.cert_cache_ttl", self.cert_cache_ttl),
            ("sns.max_age", self.max_age),
            ("sns.fetch_timeout", self.fetch_timeout),
            ("sns.results_webhook.timeout", self.results_webhook.timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(key, "must be greater than zero"));
            }
        }
        if self.insecure_skip_verify && !listen.ip().is_loopback() {
            return Err(ConfigError::invalid(
                "sns.insecure_skip_verify",
                format!(
                    "refusing to accept unsigned SNS messages on {listen}, which is not a loopback \
                     address: anyone could start game servers"
                ),
            ));
        }
        let webhook = &self.results_webhook;
        if !webhook.url.is_empty() {
            let url = reqwest::Url::parse(webhook.url.expose())
                .map_err(|e| ConfigError::invalid("sns.results_webhook.url", e.to_string()))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::invalid("sns.results_webhook.url", "must be an http(s) URL"));
            }
            if webhook.secret.is_empty() {
                return Err(ConfigError::invalid(
                    "sns.results_webhook.secret",
                    "a results webhook needs a signing secret (whsec_<base64> or any string)",
                ));
            }
        }
        if let Some(encoded) = webhook.secret.expose().strip_prefix("whsec_") {
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::STANDARD.decode(encoded);
            if !decoded.is_ok_and(|key| !key.is_empty()) {
                return Err(ConfigError::invalid(
                    "sns.results_webhook.secret",
                    "a whsec_ secret must be non-empty base64 after the prefix",
                ));
            }
        }
        for (arn, choice) in &self.configurations {
            if !arn.starts_with("arn:") {
                return Err(ConfigError::invalid(
                    "sns.configurations",
                    format!("{arn:?} is not a matchmaking configuration ARN"),
                ));
            }
            if choice.image.is_empty() {
                return Err(ConfigError::invalid(
                    "sns.configurations",
                    format!("{arn:?}: image must not be empty"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

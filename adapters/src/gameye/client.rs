use std::fmt;
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;

use super::error::GameyeError;
use super::metrics::{CallLabels, GameyeMetrics, OperationLabels};
use super::types::*;
use crate::config::{GameyeSettings, Secret};
use crate::pace::{Pace, Pacer};

/// How to reach Gameye.
#[derive(Clone, Debug)]
pub struct GameyeClientConfig {
    pub base_url: String,
    pub token: Secret,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub pool_max_idle: usize,
}

impl GameyeClientConfig {
    pub fn from_settings(settings: &GameyeSettings) -> Self {
        Self {
            base_url: settings.url.clone(),
            token: settings.token.clone(),
            connect_timeout: settings.connect_timeout,
            request_timeout: settings.request_timeout,
            pool_max_idle: settings.pool_max_idle,
        }
    }
}

/// Typed client of the Gameye Session API: one pooled HTTP client, a timeout on every request,
/// and the token only ever in the (sensitive-marked) Authorization header.
#[derive(Clone)]
pub struct GameyeClient {
    http: reqwest::Client,
    base: Url,
    auth: HeaderValue,
    request_timeout: Duration,
    metrics: Option<GameyeMetrics>,
}

impl fmt::Debug for GameyeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GameyeClient").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

/// What `DELETE /session/{id}` achieved. Both mean the session no longer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    Stopped,
    /// 404 or 409: it was unknown or already terminated.
    AlreadyGone,
}

impl GameyeClient {
    pub fn new(config: &GameyeClientConfig, metrics: Option<GameyeMetrics>) -> Result<Self, GameyeError> {
        let mut base = Url::parse(&config.base_url)
            .map_err(|e| GameyeError::Config(format!("gameye url `{}`: {e}", config.base_url)))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(GameyeError::Config("gameye url must be http(s)".into()));
        }
        // Joining relative paths onto ".../api" would drop "api" without the trailing slash.
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", config.token.expose()))
            .map_err(|_| GameyeError::Config("gameye token contains invalid characters".into()))?;
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(config.pool_max_idle)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(concat!("gameye-bridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GameyeError::Config(e.to_string()))?;
        Ok(Self { http, base, auth, request_timeout: config.request_timeout, metrics })
    }

    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// `POST /session` (session-run).
    pub async fn create_session(&self, body: &CreateSession) -> Result<SessionCreated, GameyeError> {
        let request = self.request(Method::POST, &["session"]).json(body);
        self.call_json("session-run", request).await
    }

    /// `GET /session/{id}` (describe-session). 404 when unknown or stopped.
    pub async fn describe_session(&self, id: &str) -> Result<DescribedSession, GameyeError> {
        let request = self.request(Method::GET, &["session", id]);
        self.call_json("describe-session", request).await
    }

    /// `GET /session` (session-list) with filters.
    pub async fn list_sessions(&self, filter: &ListFilter) -> Result<Vec<SessionSummary>, GameyeError> {
        self.list_sessions_paced(filter, Pace::UNPACED).await
    }

    /// [`GameyeClient::list_sessions`], with decoding the listing paced (the reconciler's background
    /// scans: a listing of a large deployment is tens of megabytes). Reading it is not paced: that
    /// is mostly waiting, and its rests would count against the request timeout.
    pub async fn list_sessions_paced(
        &self,
        filter: &ListFilter,
        pace: Pace,
    ) -> Result<Vec<SessionSummary>, GameyeError> {
        let operation = "session-list";
        let request = self.request(Method::GET, &["session"]).query(&filter.query_pairs());
        let body = self.call(operation, request).await?;
        // No pagination: a listing holds every matching session of the account, possibly megabytes.
        // Decoded off the async workers, which would otherwise stall every request they serve.
        let decoded = tokio::task::spawn_blocking(move || {
            let mut pacer = Pacer::new(pace);
            let mut decoder = serde_json::Deserializer::from_slice(&body);
            let list = serde::de::DeserializeSeed::deserialize(PacedSessionList(&mut pacer), &mut decoder)?;
            decoder.end().map(|()| list)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|decoded| decoded.map_err(|e| e.to_string()));
        decoded.map_err(|message| {
            self.count(operation, "undecodable".to_owned());
            GameyeError::Decode { operation, message }
        })
    }

    /// `DELETE /session/{id}` (session-stop). 404 and 409 mean it is already gone: success.
    pub async fn stop_session(&self, id: &str) -> Result<StopOutcome, GameyeError> {
        let request = self.request(Method::DELETE, &["session", id]);
        match self.call("session-stop", request).await {
            Ok(_) => Ok(StopOutcome::Stopped),
            Err(error) if matches!(error.status(), Some(404 | 409)) => Ok(StopOutcome::AlreadyGone),
            Err(error) => Err(error),
        }
    }

    /// `PUT /session/player/join`. Idempotent.
    pub async fn join_players(&self, session: &str, players: &[String]) -> Result<PlayerCount, GameyeError> {
        let request =
            self.request(Method::PUT, &["session", "player", "join"]).json(&PlayersBody { session, players });
        self.call_json("join-session", request).await
    }

    /// `DELETE /session/player/leave`, always with `session` in the body (the live API needs it).
    pub async fn leave_players(&self, session: &str, players: &[String]) -> Result<PlayerCount, GameyeError> {
        let request = self
            .request(Method::DELETE, &["session", "player", "leave"])
            .json(&PlayersBody { session, players });
        self.call_json("leave-session", request).await
    }

    /// `GET /available-location/{image}`: where the image can run now, with ping addresses.
    pub async fn available_locations(&self, image: &str) -> Result<Vec<AvailableLocation>, GameyeError> {
        let request = self.request(Method::GET, &["available-location", image]);
        let answer: AvailableLocations = self.call_json("get-available-locations", request).await?;
        Ok(answer.locations)
    }

    /// `GET /tag/{region}/{image}/{version}`. A 404 also means "not there" (seen live).
    pub async fn tag_exists(&self, region: &str, image: &str, version: &str) -> Result<bool, GameyeError> {
        let request = self.request(Method::GET, &["tag", region, image, version]);
        match self.call_json::<TagExists>("tag-exists", request).await {
            Ok(answer) => Ok(answer.exists),
            Err(error) if error.status() == Some(404) => Ok(false),
            Err(error) => Err(error),
        }
    }

    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let mut url = self.base.clone();
        {
            // Segments are percent-encoded one by one: a session id can never reach another path.
            let mut path = url.path_segments_mut().expect("http(s) URLs have paths");
            path.pop_if_empty();
            path.extend(segments);
        }
        self.http.request(method, url).header(AUTHORIZATION, self.auth.clone()).timeout(self.request_timeout)
    }

    async fn call_json<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        request: RequestBuilder,
    ) -> Result<T, GameyeError> {
        let bytes = self.call(operation, request).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            self.count(operation, "undecodable".to_owned());
            GameyeError::Decode { operation, message: e.to_string() }
        })
    }

    async fn call(&self, operation: &'static str, request: RequestBuilder) -> Result<Vec<u8>, GameyeError> {
        let started = Instant::now();
        let result = self.send(operation, request).await;
        let elapsed = started.elapsed();
        if let Some(metrics) = &self.metrics {
            metrics.duration.get_or_create(&OperationLabels { operation }).observe(elapsed.as_secs_f64());
        }
        let status_label = match &result {
            Ok((status, _)) => status.as_u16().to_string(),
            Err(GameyeError::Status { status, .. }) => status.to_string(),
            Err(GameyeError::Timeout { .. }) => "timeout".to_owned(),
            Err(_) => "unreachable".to_owned(),
        };
        tracing::debug!(operation, status = %status_label, elapsed_ms = elapsed.as_millis() as u64, "gameye call");
        self.count(operation, status_label);
        result.map(|(_, body)| body)
    }

    async fn send(
        &self,
        operation: &'static str,
        request: RequestBuilder,
    ) -> Result<(StatusCode, Vec<u8>), GameyeError> {
        let response = request.send().await.map_err(|e| self.transport_error(operation, e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.transport_error(operation, e))?.to_vec();
        if status.is_success() {
            return Ok((status, body));
        }
        let parsed = serde_json::from_slice::<ErrorResponse>(&body).ok().map(Box::new);
        let raw = if parsed.is_some() { String::new() } else { preview(&body) };
        Err(GameyeError::Status { operation, status: status.as_u16(), body: parsed, raw })
    }

    fn transport_error(&self, operation: &'static str, error: reqwest::Error) -> GameyeError {
        if error.is_timeout() {
            GameyeError::Timeout { operation, timeout: self.request_timeout }
        } else {
            // reqwest's error text names the URL but never headers, so the token cannot leak here.
            GameyeError::Unreachable { operation, message: error_chain(&error) }
        }
    }

    fn count(&self, operation: &'static str, status: String) {
        if let Some(metrics) = &self.metrics {
            metrics.calls.get_or_create(&CallLabels { operation, status }).inc();
        }
    }
}

fn preview(body: &[u8]) -> String {
    const LIMIT: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(LIMIT)]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

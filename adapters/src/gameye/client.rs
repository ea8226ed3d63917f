use std::fmt;
use std::sync::Arc;
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
    /// Indexed by lane ([`crate::lanes`]): a lane's calls reuse connections its own thread drives.
    http: Arc<[reqwest::Client]>,
    base: Url,
    /// `{base}session`, built once: every placement posts there.
    session_url: Url,
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
        Self::for_lanes(config, metrics, 1)
    }

    /// [`GameyeClient::new`] with a connection pool for each of `lanes` lanes ([`crate::lanes`]).
    pub fn for_lanes(
        config: &GameyeClientConfig,
        metrics: Option<GameyeMetrics>,
        lanes: usize,
    ) -> Result<Self, GameyeError> {
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
        // A pool's connection is driven by the runtime that opened it; one pool per lane keeps each
        // lane's calls on its own thread.
        let http = (0..lanes.max(1))
            .map(|_| {
                reqwest::Client::builder()
                    .connect_timeout(config.connect_timeout)
                    .pool_max_idle_per_host(config.pool_max_idle)
                    .pool_idle_timeout(Duration::from_secs(60))
                    .tcp_nodelay(true)
                    .user_agent(concat!("gameye-bridge/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| GameyeError::Config(e.to_string()))
            })
            .collect::<Result<Arc<[_]>, _>>()?;
        let session_url = url_with(&base, &["session"]);
        Ok(Self { http, base, session_url, auth, request_timeout: config.request_timeout, metrics })
    }

    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// `POST /session` (session-run).
    pub async fn create_session(&self, body: &CreateSession<'_>) -> Result<SessionCreated, GameyeError> {
        self.create_session_within(body, self.request_timeout).await
    }

    /// [`GameyeClient::create_session`], given up after `within` when that is sooner than the
    /// request timeout (a placement's deadline).
    pub async fn create_session_within(
        &self,
        body: &CreateSession<'_>,
        within: Duration,
    ) -> Result<SessionCreated, GameyeError> {
        let request = self.request_to(Method::POST, self.session_url.clone()).json(body);
        let bytes = self.observed("session-run", self.send("session-run", request, within)).await?;
        self.decoded("session-run", &bytes)
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

    /// [`GameyeClient::list_sessions`], with decoding paced (the reconciler's background scans: a
    /// listing of a large deployment is tens of megabytes). The body is decoded as it arrives, on
    /// a blocking thread, and read only as fast as the decoding goes: never held whole, and no
    /// burst of reading and copying it at full speed. So the request may take `1 / pace.busy` times
    /// the request timeout.
    pub async fn list_sessions_paced(
        &self,
        filter: &ListFilter,
        pace: Pace,
    ) -> Result<Vec<SessionSummary>, GameyeError> {
        let operation = "session-list";
        let timeout = listing_timeout(self.request_timeout, pace);
        let request = self.request(Method::GET, &["session"]).query(&filter.query_pairs()).timeout(timeout);
        let decoded = self.observed(operation, self.send_listing(operation, request, timeout, pace)).await?;
        decoded.map_err(|message| {
            self.count(operation, "undecodable".to_owned());
            GameyeError::Decode { operation, message }
        })
    }

    /// Streams a listing's body into [`decode_listing`] on a blocking thread. `Ok` with the
    /// decoder's answer once the status said success; a transport error that cut the body short
    /// wins over the decoder's complaint about it.
    async fn send_listing(
        &self,
        operation: &'static str,
        request: RequestBuilder,
        timeout: Duration,
        pace: Pace,
    ) -> Result<(StatusCode, Result<Vec<SessionSummary>, String>), GameyeError> {
        let mut response = self.send_checked(operation, request, timeout).await?;
        let status = response.status();
        let (chunks, arriving) = tokio::sync::mpsc::channel(LISTING_CHUNKS_AHEAD);
        let decoding =
            crate::pace::spawn_blocking(pace, move || decode_listing(ChunkReader::new(arriving), pace));
        let mut cut_short = None;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    // Closed: the decoder gave up on what it has; its answer says why.
                    if chunks.send(chunk).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    cut_short = Some(self.transport_error(operation, error, timeout));
                    break;
                }
            }
        }
        drop(chunks);
        let decoded = decoding.await.and_then(|decoded| decoded);
        match cut_short {
            Some(error) => Err(error),
            None => Ok((status, decoded)),
        }
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
        self.request_to(method, url_with(&self.base, segments))
    }

    fn request_to(&self, method: Method, url: Url) -> RequestBuilder {
        self.http[crate::lanes::current() % self.http.len()]
            .request(method, url)
            .header(AUTHORIZATION, self.auth.clone())
            .timeout(self.request_timeout)
    }

    async fn call_json<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        request: RequestBuilder,
    ) -> Result<T, GameyeError> {
        let bytes = self.call(operation, request).await?;
        self.decoded(operation, &bytes)
    }

    fn decoded<T: DeserializeOwned>(&self, operation: &'static str, bytes: &[u8]) -> Result<T, GameyeError> {
        serde_json::from_slice(bytes).map_err(|e| {
            self.count(operation, "undecodable".to_owned());
            GameyeError::Decode { operation, message: e.to_string() }
        })
    }

    async fn call(&self, operation: &'static str, request: RequestBuilder) -> Result<Vec<u8>, GameyeError> {
        self.observed(operation, self.send(operation, request, self.request_timeout)).await
    }

    /// Runs one call, timing and counting it by operation and status.
    async fn observed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<(StatusCode, T), GameyeError>>,
    ) -> Result<T, GameyeError> {
        let started = Instant::now();
        let result = call.await;
        let elapsed = started.elapsed();
        if let Some(metrics) = &self.metrics {
            metrics.duration.get_or_create(&OperationLabels { operation }).observe(elapsed.as_secs_f64());
        }
        let status_label = match &result {
            Ok((status, _)) => status.as_str().to_owned(),
            Err(GameyeError::Status { status, .. }) => status.to_string(),
            Err(GameyeError::Timeout { .. }) => "timeout".to_owned(),
            Err(_) => "unreachable".to_owned(),
        };
        tracing::debug!(operation, status = %status_label, elapsed_ms = elapsed.as_millis() as u64, "gameye call");
        self.count(operation, status_label);
        result.map(|(_, body)| body)
    }

    /// Sends `request`, given up after `timeout` at most (never later than the request timeout).
    async fn send(
        &self,
        operation: &'static str,
        request: RequestBuilder,
        timeout: Duration,
    ) -> Result<(StatusCode, Vec<u8>), GameyeError> {
        let timeout = timeout.min(self.request_timeout);
        let response = self.send_checked(operation, request.timeout(timeout), timeout).await?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.transport_error(operation, e, timeout))?.to_vec();
        Ok((status, body))
    }

    /// Sends `request`; a success status gives the response with its body still to read, any other
    /// status the error its (whole, small) body describes.
    async fn send_checked(
        &self,
        operation: &'static str,
        request: RequestBuilder,
        timeout: Duration,
    ) -> Result<reqwest::Response, GameyeError> {
        let response = request.send().await.map_err(|e| self.transport_error(operation, e, timeout))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.map_err(|e| self.transport_error(operation, e, timeout))?;
        Err(status_error(operation, status, &body))
    }

    fn transport_error(
        &self,
        operation: &'static str,
        error: reqwest::Error,
        timeout: Duration,
    ) -> GameyeError {
        if error.is_timeout() {
            GameyeError::Timeout { operation, timeout }
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

/// `base` with `segments` appended, each percent-encoded on its own: a session id can never reach
/// another path.
fn url_with(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    {
        let mut path = url.path_segments_mut().expect("http(s) URLs have paths");
        path.pop_if_empty();
        path.extend(segments);
    }
    url
}

/// A non-success answer: Gameye's error body when it is one, else the start of whatever came.
fn status_error(operation: &'static str, status: StatusCode, body: &[u8]) -> GameyeError {
    let parsed = serde_json::from_slice::<ErrorResponse>(body).ok().map(Box::new);
    let raw = if parsed.is_some() { String::new() } else { preview(body) };
    GameyeError::Status { operation, status: status.as_u16(), body: parsed, raw }
}

/// Chunks of a listing read ahead of its decoding: enough that the decoder rarely waits for the
/// network, few enough that a listing never sits in memory whole.
const LISTING_CHUNKS_AHEAD: usize = 8;

/// How long a listing may take: the request timeout, stretched by the pace (paced work takes at
/// most `busy` of the wall clock).
fn listing_timeout(request_timeout: Duration, pace: Pace) -> Duration {
    if pace.busy > 0.0 && pace.busy < 1.0 { request_timeout.div_f64(pace.busy) } else { request_timeout }
}

/// Decodes a listing from `body`, paced (see [`PacedSessionList`]).
fn decode_listing(body: impl std::io::Read, pace: Pace) -> Result<Vec<SessionSummary>, String> {
    let mut pacer = Pacer::new(pace);
    // serde_json reads a reader byte by byte: a buffer makes that cheap.
    let mut decoder =
        serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(64 * 1024, body));
    let list = serde::de::DeserializeSeed::deserialize(PacedSessionList(&mut pacer), &mut decoder)
        .map_err(|e| e.to_string())?;
    decoder.end().map_err(|e| e.to_string())?;
    Ok(list)
}

/// A blocking [`std::io::Read`] over body chunks arriving on a channel; the channel's end is the
/// body's end.
struct ChunkReader {
    arriving: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    current: bytes::Bytes,
}

impl ChunkReader {
    fn new(arriving: tokio::sync::mpsc::Receiver<bytes::Bytes>) -> Self {
        Self { arriving, current: bytes::Bytes::new() }
    }
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.arriving.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paced_listing_may_take_as_much_longer_as_its_pace_rests() {
        let timeout = Duration::from_secs(10);
        let paced = |busy| Pace { busy, ..Pace::UNPACED };
        assert_eq!(listing_timeout(timeout, paced(0.1)), Duration::from_secs(100));
        assert_eq!(listing_timeout(timeout, paced(0.5)), Duration::from_secs(20));
        assert_eq!(listing_timeout(timeout, Pace::UNPACED), timeout);
        assert_eq!(listing_timeout(timeout, paced(0.0)), timeout, "never rests (see Pace)");
    }

    #[test]
    fn the_chunk_reader_reads_every_chunk_in_order_then_ends() {
        let (chunks, arriving) = tokio::sync::mpsc::channel(4);
        for chunk in ["{\"ses", "", "sions\":[", "]}"] {
            chunks.try_send(bytes::Bytes::from(chunk)).unwrap();
        }
        drop(chunks);
        let mut text = String::new();
        std::io::Read::read_to_string(&mut ChunkReader::new(arriving), &mut text).unwrap();
        assert_eq!(text, "{\"sessions\":[]}");
    }
}

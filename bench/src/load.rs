//! Load generators: closed loop (N workers back to back), open loop (fixed rate, latency measured from
//! the scheduled send time), and a burst (N requests released together). Every loop is bounded in
//! count and in time and stops by itself.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use reqwest::{Client, RequestBuilder, StatusCode};
use tokio::sync::{Barrier, Semaphore};
use tokio::time::Instant;

/// The image and location every request uses (the emulator's default image; the bench world's big location).
pub const IMAGE: &str = "demo-game";
pub const LOCATION: &str = "eu-west-1";

/// Where requests go and what they look like.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// `POST {url}/session` on the emulator, shaped like the bridge's own call (fixed id, labels, ttl).
    Emulator { url: String, token: String },
    /// `POST {url}/v1/matches` on the bridge, one player with a latency to [`LOCATION`].
    Bridge { url: String, token: String, prefix: String },
}

impl Endpoint {
    /// The `n`th request (each `n` is a distinct session / match).
    pub fn request(&self, client: &Client, n: u64) -> RequestBuilder {
        match self {
            Endpoint::Emulator { url, token } => {
                let id = uuid::Uuid::new_v4().to_string();
                let body = serde_json::json!({
                    "id": id,
                    "location": LOCATION,
                    "image": IMAGE,
                    "ttl": "30m",
                    // The bridge's label shape and size, not its keys: the bridge's reconciler would
                    // otherwise take these sessions for orphans of its own and adopt every one.
                    "labels": { "gameye-raw-bn.match": format!("raw-{n}"), "gameye-raw-bn.source": "bench" },
                });
                client.post(format!("{url}/session")).bearer_auth(token).json(&body)
            }
            Endpoint::Bridge { url, token, prefix } => {
                let body = serde_json::json!({
                    "match_id": format!("{prefix}-{n}"),
                    "players": [{ "id": format!("p-{prefix}-{n}"), "latencies": { LOCATION: 20 } }],
                });
                client.post(format!("{url}/v1/matches")).bearer_auth(token).json(&body)
            }
        }
    }

    /// The status of a success.
    pub fn success(&self) -> StatusCode {
        match self {
            Endpoint::Emulator { .. } => StatusCode::CREATED,
            Endpoint::Bridge { .. } => StatusCode::OK,
        }
    }
}

/// Sends one request and reads the whole answer (so the connection goes back to the pool).
/// `Ok(body)` on the expected status, else a short name of what went wrong.
async fn send(endpoint: &Endpoint, client: &Client, n: u64) -> Result<Vec<u8>, String> {
    let response = endpoint.request(client, n).send().await.map_err(transport_error)?;
    let status = response.status();
    let body = response.bytes().await.map_err(transport_error)?;
    if status == endpoint.success() { Ok(body.to_vec()) } else { Err(format!("HTTP {}", status.as_u16())) }
}

pub fn transport_error(error: reqwest::Error) -> String {
    if error.is_timeout() {
        "timeout".to_owned()
    } else if error.is_connect() {
        "connect error".to_owned()
    } else {
        "transport error".to_owned()
    }
}

pub fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static histogram bounds")
}

pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// What a measured phase produced.
#[derive(Clone, Debug)]
pub struct Stats {
    /// Latencies of successful requests, µs.
    pub latency: Histogram<u64>,
    pub ok: u64,
    /// Failed requests by kind (`HTTP 503`, `timeout`, …).
    pub errors: BTreeMap<String, u64>,
    /// The measured window (or, for a burst, release to last answer).
    pub elapsed: Duration,
}

impl Stats {
    pub fn new() -> Self {
        Self { latency: histogram(), ok: 0, errors: BTreeMap::new(), elapsed: Duration::ZERO }
    }

    pub fn record<T>(&mut self, result: &Result<T, String>, latency: Duration) {
        match result {
            Ok(_) => {
                self.ok += 1;
                self.latency.saturating_record(micros(latency));
            }
            Err(kind) => *self.errors.entry(kind.clone()).or_default() += 1,
        }
    }

    pub fn merge(&mut self, other: &Stats) {
        self.latency.add(&other.latency).expect("histograms with the same bounds");
        self.ok += other.ok;
        for (kind, count) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += count;
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Successful requests per second over the window.
    pub fn rate(&self) -> f64 {
        if self.elapsed.is_zero() { 0.0 } else { self.ok as f64 / self.elapsed.as_secs_f64() }
    }

    /// A latency quantile (0.5, 0.99) of successful requests.
    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_micros(self.latency.value_at_quantile(q))
    }

    pub fn max(&self) -> Duration {
        Duration::from_micros(self.latency.max())
    }

    /// `HTTP 503: 3, timeout: 1`, or `none`.
    pub fn error_summary(&self) -> String {
        if self.errors.is_empty() {
            return "none".to_owned();
        }
        self.errors.iter().map(|(kind, count)| format!("{kind}: {count}")).collect::<Vec<_>>().join(", ")
    }
}

/// `workers` tasks send back to back for `warmup + duration`; only requests that start and finish
/// inside the measured window (after the warm-up) count. Stops by itself.
pub async fn closed_loop(
    client: &Client,
    endpoint: &Endpoint,
    workers: usize,
    warmup: Duration,
    duration: Duration,
) -> Stats {
    let next = Arc::new(AtomicU64::new(0));
    let measure_from = Instant::now() + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (client, endpoint, next) = (client.clone(), endpoint.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats::new();
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                let result = send(&endpoint, &client, n).await;
                let finished = Instant::now();
                if started >= measure_from && finished <= end {
                    stats.record(&result, finished - started);
                }
            }
            stats
        }));
    }
    let mut total = Stats::new();
    for task in tasks {
        if let Ok(stats) = task.await {
            total.merge(&stats);
        }
    }
    total.elapsed = duration;
    total
}

/// An open-loop phase: [`Stats`] with latency measured from each request's scheduled send time, plus
/// how the generator kept up.
#[derive(Clone, Debug)]
pub struct OpenStats {
    pub stats: Stats,
    /// Latency from the actual send (what a closed-loop client would see), µs.
    pub service: Histogram<u64>,
    /// Actual send time − scheduled send time, µs (timer granularity, and waiting for the in-flight bound).
    pub lag: Histogram<u64>,
    /// Requests scheduled in the measured window.
    pub scheduled: u64,
    /// Scheduled but never sent, because the generator ran past its time limit.
    pub not_sent: u64,
    /// Every measured request: (scheduled time after the measured start, latency), for
    /// [`OpenStats::slow_windows`].
    pub timeline: Vec<(Duration, Duration)>,
    /// The measured start on the wall clock, so a tail window can be found in logs and profiles.
    pub measured_from: SystemTime,
}

impl OpenStats {
    pub fn service_quantile(&self, q: f64) -> Duration {
        Duration::from_micros(self.service.value_at_quantile(q))
    }

    pub fn lag_quantile(&self, q: f64) -> Duration {
        Duration::from_micros(self.lag.value_at_quantile(q))
    }

    /// Where the tail sits: the `count` windows of `width` (by scheduled time) holding the most
    /// requests slower than `over`, busiest first, as (window start, such requests, the slowest).
    pub fn slow_windows(
        &self,
        over: Duration,
        width: Duration,
        count: usize,
    ) -> Vec<(Duration, u64, Duration)> {
        let mut windows: BTreeMap<u128, (u64, Duration)> = BTreeMap::new();
        for &(at, latency) in self.timeline.iter().filter(|(_, latency)| *latency > over) {
            let window = windows.entry(at.as_nanos() / width.as_nanos().max(1)).or_default();
            window.0 += 1;
            window.1 = window.1.max(latency);
        }
        let mut busiest: Vec<_> = windows
            .into_iter()
            .map(|(n, (slow, slowest))| (width * u32::try_from(n).unwrap_or(u32::MAX), slow, slowest))
            .collect();
        busiest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        busiest.truncate(count);
        busiest
    }
}

struct OpenShared {
    stats: Stats,
    service: Histogram<u64>,
    lag: Histogram<u64>,
    timeline: Vec<(Duration, Duration)>,
}

/// The bench's HTTP client: keep-alive connections (up to `pool` idle), no Nagle delay, `timeout`
/// per request.
pub fn client(pool: usize, timeout: Duration) -> anyhow::Result<Client> {
    Ok(Client::builder()
        .pool_max_idle_per_host(pool)
        .pool_idle_timeout(Duration::from_secs(120))
        .tcp_nodelay(true)
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .build()?)
}

/// Runs an open-loop `phase` on a thread of its own, with a one-thread runtime and a [`client`] of
/// its own (`pool`, `timeout`). The generator shares the two cores with what it measures: on the
/// closed loop's multi-thread runtime each batch of requests released by the timer woke the other
/// worker, and the generator spent about a fifth of its CPU switching threads (bench/RESULTS.md,
/// session 17). One thread needs a few tenths of a core at the rates measured here.
pub async fn on_own_thread<T, F>(
    pool: usize,
    timeout: Duration,
    phase: impl FnOnce(Client) -> F + Send + 'static,
) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
{
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("open-loop".to_owned()).spawn(move || {
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| Ok(runtime.block_on(phase(client(pool, timeout)?))));
        let _ = done.send(result);
    })?;
    result.await.map_err(|_| anyhow::anyhow!("the open-loop thread ended without its figures"))?
}

/// Sends at `rate` per second for `warmup + duration` at fixed scheduled times, at most
/// `max_in_flight` at once; only requests scheduled after the warm-up are recorded. A request's
/// latency runs from its scheduled time, so a stalled server is charged for the requests it delayed
/// (no coordinated omission). The generator gives up sending 10 s past the schedule's end.
pub async fn open_loop(
    client: &Client,
    endpoint: &Endpoint,
    rate: f64,
    warmup: Duration,
    duration: Duration,
    max_in_flight: usize,
) -> OpenStats {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = ((warmup + duration).as_secs_f64() * rate).round() as u64;
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + warmup;
    let measured_from_wall = wall_clock_at(measure_from);
    let give_up = start + warmup + duration + Duration::from_secs(10);
    let limit = Arc::new(Semaphore::new(max_in_flight));
    let shared = Arc::new(Mutex::new(OpenShared {
        stats: Stats::new(),
        service: histogram(),
        lag: histogram(),
        timeline: Vec::new(),
    }));
    let scheduled = count_measured(0, total, start, interval, measure_from);
    let mut not_sent = 0;
    for n in 0..total {
        let at = start + interval.mul_f64(n as f64);
        let measured = at >= measure_from;
        tokio::time::sleep_until(at).await;
        if Instant::now() >= give_up {
            not_sent = count_measured(n, total, start, interval, measure_from);
            break;
        }
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => permit.expect("semaphore never closed"),
            () = tokio::time::sleep_until(give_up) => {
                not_sent = count_measured(n, total, start, interval, measure_from);
                break;
            }
        };
        let sent_at = Instant::now();
        let (client, endpoint, shared) = (client.clone(), endpoint.clone(), shared.clone());
        tokio::spawn(async move {
            let result = send(&endpoint, &client, n).await;
            let done = Instant::now();
            drop(permit);
            if measured {
                let mut shared = shared.lock().expect("stats lock");
                shared.stats.record(&result, done - at);
                if result.is_ok() {
                    shared.service.saturating_record(micros(done - sent_at));
                }
                shared.lag.saturating_record(micros(sent_at - at));
                shared.timeline.push((at - measure_from, done - at));
            }
        });
    }
    // Every request has the client's timeout, so this ends; the bound is a second safety net.
    let _ = tokio::time::timeout(
        Duration::from_secs(60),
        limit.acquire_many(u32::try_from(max_in_flight).unwrap_or(u32::MAX)),
    )
    .await;
    let shared = shared.lock().expect("stats lock");
    let mut stats = shared.stats.clone();
    stats.elapsed = duration;
    OpenStats {
        stats,
        service: shared.service.clone(),
        lag: shared.lag.clone(),
        scheduled,
        not_sent,
        timeline: shared.timeline.clone(),
        measured_from: measured_from_wall,
    }
}

/// `at` (now or later) on the wall clock.
pub fn wall_clock_at(at: Instant) -> SystemTime {
    SystemTime::now() + at.saturating_duration_since(Instant::now())
}

/// How many requests from `from` on (of `total`) were scheduled inside the measured window.
fn count_measured(from: u64, total: u64, start: Instant, interval: Duration, measure_from: Instant) -> u64 {
    (from..total).filter(|&n| start + interval.mul_f64(n as f64) >= measure_from).count() as u64
}

/// What a burst produced.
#[derive(Clone, Debug)]
pub struct BurstStats {
    /// `elapsed`: from the release to the last answer.
    pub stats: Stats,
    /// Distinct `session_id`s in the successful answers (each match should have its own).
    pub distinct_sessions: usize,
}

/// Releases `count` requests together (each its own task and connection) and waits for every answer;
/// bounded by the client's per-request timeout.
pub async fn burst(client: &Client, endpoint: &Endpoint, count: usize) -> BurstStats {
    let barrier = Arc::new(Barrier::new(count + 1));
    let mut tasks = Vec::with_capacity(count);
    for n in 0..count {
        let (client, endpoint, barrier) = (client.clone(), endpoint.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let started = Instant::now();
            let result = send(&endpoint, &client, n as u64).await;
            (result, started.elapsed(), Instant::now())
        }));
    }
    barrier.wait().await;
    let released = Instant::now();
    let mut stats = Stats::new();
    let mut sessions = HashSet::new();
    let mut last = released;
    for task in tasks {
        let Ok((result, latency, done)) = task.await else {
            *stats.errors.entry("task panicked".to_owned()).or_default() += 1;
            continue;
        };
        last = last.max(done);
        if let Ok(body) = &result
            && let Ok(assignment) = serde_json::from_slice::<serde_json::Value>(body)
            && let Some(id) = assignment.get("session_id").and_then(|v| v.as_str())
        {
            sessions.insert(id.to_owned());
        }
        stats.record(&result, latency);
    }
    stats.elapsed = last - released;
    BurstStats { stats, distinct_sessions: sessions.len() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn slow_windows_count_only_requests_over_the_bar_and_rank_the_busiest_first() {
        let mut stats = OpenStats {
            stats: Stats::new(),
            service: histogram(),
            lag: histogram(),
            scheduled: 0,
            not_sent: 0,
            timeline: Vec::new(),
            measured_from: SystemTime::UNIX_EPOCH,
        };
        // 250 ms windows: two slow requests in the one starting at 500 ms, one at 0, one at 1 s;
        // fast requests everywhere, and one exactly at the bar (not over it).
        stats.timeline = vec![
            (ms(10), ms(30)),
            (ms(20), ms(1)),
            (ms(510), ms(40)),
            (ms(740), ms(90)),
            (ms(600), ms(2)),
            (ms(1_000), ms(25)),
            (ms(1_100), ms(20)),
        ];
        let windows = stats.slow_windows(ms(20), ms(250), 2);
        assert_eq!(windows, vec![(ms(500), 2, ms(90)), (ms(0), 1, ms(30))]);
        assert_eq!(stats.slow_windows(ms(100), ms(250), 3), vec![]);
    }
}

//! `gameye-bench seats` (issue 7): seat operations against the bench's own Redis.
//!
//! Set-up: `sessions` matches are placed through `POST /v1/matches`, each with `max_players` =
//! `capacity`; each match's own player then gives up its reserved seat, so every session starts
//! with no players and no reservations. Then four phases, each with its CPU accounted:
//! - 5a. closed loop: each worker sends `POST /v1/backfill` for a fresh player (one latency, to the
//!   bench's location). Each reservation is released right after with
//!   `DELETE /v1/sessions/{id}/players` (timed apart, not in the rate or latency), so the seat
//!   records keep their size and seats never run out: the rate is a steady state, not a fill-up.
//! - 5b. open loop of the same at a fraction (½) of 5a's rate, latency from the scheduled time.
//! - 6a. closed loop: each worker joins a fresh player to one of the sessions (round robin) and then
//!   makes it leave; every join and every leave is one operation.
//! - 6b. open loop of join+leave pairs at the same fraction of 6a's operation rate: a pair is
//!   scheduled every 2 ÷ rate, the join timed from its scheduled time, the leave (sent when the
//!   join answers) from its send.
//!
//! Every answer is checked: a status other than 200, an undecodable body, or an answer that does
//! not show the change (the reservation, the player joined, left or released) is an error, counted
//! by kind. After each phase the sessions are read back: no player or reservation may be left.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use hdrhistogram::Histogram;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::cpu::{CpuSnapshot, CpuUsage};
use crate::load::{self, IMAGE, LOCATION, OpenStats, Stats};
use crate::procs::Stack;
use crate::report::{self, Machine, ms};

/// The latency every benchmark player reports to [`LOCATION`] (under the bridge's default cap).
const PLAYER_LATENCY_MS: u32 = 20;
/// Placements in flight at once during the set-up.
const SETUP_CONCURRENCY: usize = 16;

/// How the seats scenario runs.
#[derive(Clone, Debug)]
pub struct SeatOptions {
    /// Sessions placed before measuring (every backfill considers all of them).
    pub sessions: usize,
    /// Seats of each session (`max_players` of its match).
    pub capacity: u32,
    /// Closed-loop workers.
    pub workers: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Fraction of each closed-loop rate offered in the open loop.
    pub load_fraction: f64,
    /// Most cycles (backfill + release, join + leave) in flight in the open loop.
    pub max_in_flight: usize,
    /// Each request's time limit.
    pub request_timeout: Duration,
}

/// What was left in the sessions after a phase (all zero when every release and leave worked).
#[derive(Clone, Copy, Debug, Default)]
pub struct Leftover {
    pub sessions: usize,
    pub players: usize,
    pub reserved: usize,
}

/// A closed-loop phase: the measured step (backfill; join) and the step after it (release; leave).
pub struct Closed {
    pub first: Stats,
    pub second: Stats,
}

/// An open-loop phase: cycles per second offered, the first step timed from its scheduled time,
/// the second from its own send.
pub struct Open {
    pub cycle_rate: f64,
    pub first: OpenStats,
    pub second: Stats,
}

/// Everything measured, printable as Markdown.
#[derive(Default)]
pub struct SeatReport {
    pub sessions: usize,
    pub capacity: u32,
    pub load_fraction: f64,
    pub backfill: Option<Closed>,
    pub backfill_open: Option<Open>,
    pub join_leave: Option<Closed>,
    pub join_leave_open: Option<Open>,
    cpu: Vec<(&'static str, CpuUsage)>,
    leftovers: Vec<(&'static str, Leftover)>,
    /// Per phase: the bridge's Gameye calls (by operation) during it and the second after it.
    gameye: Vec<(&'static str, String)>,
}

/// The bridge's HTTP API, with the bench's token.
#[derive(Clone)]
struct Api {
    http: Client,
    url: String,
    token: String,
}

impl Api {
    /// One call; `Ok(answer)` on 200 with a JSON body, else a short name of what went wrong
    /// (`HTTP 409 SESSION_FULL`, `timeout`, …).
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let mut request = self.http.request(method, format!("{}{path}", self.url)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(load::transport_error)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(load::transport_error)?;
        let answer = serde_json::from_slice::<Value>(&bytes).ok();
        if status != StatusCode::OK {
            let code = answer
                .as_ref()
                .and_then(|a| a["error"]["code"].as_str())
                .map(|code| format!(" {code}"))
                .unwrap_or_default();
            return Err(format!("HTTP {}{code}", status.as_u16()));
        }
        answer.ok_or_else(|| "undecodable answer".to_owned())
    }
}

/// Whether `answer[field]` is a list naming `player`.
fn lists(answer: &Value, field: &str, player: &str) -> bool {
    answer[field].as_array().is_some_and(|list| list.iter().any(|p| p.as_str() == Some(player)))
}

/// What a loop drives.
#[derive(Clone)]
enum Workload {
    /// Backfill one fresh player, then release the reservation.
    Backfill,
    /// Join a fresh player to `sessions[n % len]`, then leave.
    JoinLeave(Arc<Vec<String>>),
}

/// One request of a cycle.
struct Step {
    result: Result<(), String>,
    sent: Instant,
    done: Instant,
}

/// A cycle's first request, and the second one when the first succeeded.
struct Cycle {
    first: Step,
    second: Option<Step>,
}

/// Runs `call` and times it; its `Ok` value is passed on.
async fn timed<T, F>(call: F) -> (Step, Option<T>)
where
    F: Future<Output = Result<T, String>>,
{
    let sent = Instant::now();
    let result = call.await;
    let done = Instant::now();
    match result {
        Ok(value) => (Step { result: Ok(()), sent, done }, Some(value)),
        Err(kind) => (Step { result: Err(kind), sent, done }, None),
    }
}

impl Workload {
    /// The `n`th cycle; player ids start with `tag` (distinct per phase).
    async fn cycle(&self, api: &Api, tag: &str, n: u64) -> Cycle {
        let player = format!("{tag}-{n}");
        match self {
            Workload::Backfill => {
                let body = json!({
                    "image": IMAGE,
                    "players": [{ "id": player, "latencies": { LOCATION: PLAYER_LATENCY_MS } }],
                });
                let (first, session) = timed(async {
                    let answer = api.call(Method::POST, "/v1/backfill", Some(&body)).await?;
                    let session = answer["session_id"].as_str().map(str::to_owned);
                    match session {
                        Some(session)
                            if answer["reservation_id"].is_string() && lists(&answer, "players", &player) =>
                        {
                            Ok(session)
                        }
                        _ => Err("backfill answer without the reservation".to_owned()),
                    }
                })
                .await;
                let Some(session) = session else { return Cycle { first, second: None } };
                let (second, _) = timed(async {
                    let path = format!("/v1/sessions/{session}/players");
                    let answer =
                        api.call(Method::DELETE, &path, Some(&json!({ "players": [player] }))).await?;
                    if lists(&answer, "released", &player) {
                        Ok(())
                    } else {
                        Err("release answer without the player released".to_owned())
                    }
                })
                .await;
                Cycle { first, second: Some(second) }
            }
            Workload::JoinLeave(sessions) => {
                let session = &sessions[(n % sessions.len() as u64) as usize];
                let path = format!("/v1/sessions/{session}/players");
                let body = json!({ "players": [player] });
                let (first, joined) = timed(async {
                    let answer = api.call(Method::POST, &path, Some(&body)).await?;
                    if lists(&answer, "joined", &player) {
                        Ok(())
                    } else {
                        Err("join answer without the player joined".to_owned())
                    }
                })
                .await;
                if joined.is_none() {
                    return Cycle { first, second: None };
                }
                let (second, _) = timed(async {
                    let answer = api.call(Method::DELETE, &path, Some(&body)).await?;
                    if lists(&answer, "left", &player) {
                        Ok(())
                    } else {
                        Err("leave answer without the player left".to_owned())
                    }
                })
                .await;
                Cycle { first, second: Some(second) }
            }
        }
    }
}

/// `workers` tasks run cycles back to back for `warmup + duration`; a request counts when it starts
/// and finishes inside the measured window (as in [`load::closed_loop`]).
async fn closed_loop(
    api: &Api,
    workload: &Workload,
    tag: &'static str,
    workers: usize,
    warmup: Duration,
    duration: Duration,
) -> Closed {
    let next = Arc::new(AtomicU64::new(0));
    let measure_from = Instant::now() + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (api, workload, next) = (api.clone(), workload.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let (mut first, mut second) = (Stats::new(), Stats::new());
            let inside = |step: &Step| step.sent >= measure_from && step.done <= end;
            while Instant::now() < end {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let cycle = workload.cycle(&api, tag, n).await;
                if inside(&cycle.first) {
                    first.record(&cycle.first.result, cycle.first.done - cycle.first.sent);
                }
                if let Some(step) = cycle.second.as_ref().filter(|s| inside(s)) {
                    second.record(&step.result, step.done - step.sent);
                }
            }
            (first, second)
        }));
    }
    let (mut first, mut second) = (Stats::new(), Stats::new());
    for task in tasks {
        match task.await {
            Ok((f, s)) => {
                first.merge(&f);
                second.merge(&s);
            }
            Err(_) => *first.errors.entry("worker panicked".to_owned()).or_default() += 1,
        }
    }
    first.elapsed = duration;
    second.elapsed = duration;
    Closed { first, second }
}

struct OpenShared {
    first: Stats,
    second: Stats,
    service: Histogram<u64>,
    lag: Histogram<u64>,
    /// Measured cycles' first steps: (scheduled time after the measured start, latency).
    timeline: Vec<(Duration, Duration)>,
}

/// [`open_loop`] on a thread and with a client of its own ([`load::on_own_thread`]).
async fn open_loop_alone(
    api: &Api,
    workload: &Workload,
    tag: &'static str,
    rate: f64,
    options: &SeatOptions,
) -> Result<Open> {
    let (api, workload) = (api.clone(), workload.clone());
    let (warmup, duration, in_flight) = (options.warmup, options.duration, options.max_in_flight);
    load::on_own_thread(in_flight, options.request_timeout, move |http| async move {
        let api = Api { http, ..api };
        open_loop(&api, &workload, tag, rate, warmup, duration, in_flight).await
    })
    .await
}

/// Starts a cycle at `rate` per second for `warmup + duration` at fixed scheduled times, at most
/// `max_in_flight` cycles at once (as [`load::open_loop`] does for single requests): the first
/// request is timed from its scheduled time (no coordinated omission), the second, which depends
/// on the first's answer, from its own send. Only cycles scheduled after the warm-up are recorded;
/// the generator gives up sending 10 s past the schedule's end.
async fn open_loop(
    api: &Api,
    workload: &Workload,
    tag: &'static str,
    rate: f64,
    warmup: Duration,
    duration: Duration,
    max_in_flight: usize,
) -> Open {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = ((warmup + duration).as_secs_f64() * rate).round() as u64;
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + warmup;
    let measured_from_wall = load::wall_clock_at(measure_from);
    let give_up = start + warmup + duration + Duration::from_secs(10);
    let scheduled_at = |n: u64| start + interval.mul_f64(n as f64);
    let measured_from = |from: u64| (from..total).filter(|&n| scheduled_at(n) >= measure_from).count() as u64;
    let limit = Arc::new(Semaphore::new(max_in_flight));
    let shared = Arc::new(Mutex::new(OpenShared {
        first: Stats::new(),
        second: Stats::new(),
        service: load::histogram(),
        lag: load::histogram(),
        timeline: Vec::new(),
    }));
    let scheduled = measured_from(0);
    let mut not_sent = 0;
    for n in 0..total {
        let at = scheduled_at(n);
        let measured = at >= measure_from;
        tokio::time::sleep_until(at).await;
        if Instant::now() >= give_up {
            not_sent = measured_from(n);
            break;
        }
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => permit.expect("semaphore never closed"),
            () = tokio::time::sleep_until(give_up) => {
                not_sent = measured_from(n);
                break;
            }
        };
        let (api, workload, shared) = (api.clone(), workload.clone(), shared.clone());
        tokio::spawn(async move {
            let cycle = workload.cycle(&api, tag, n).await;
            drop(permit);
            if measured {
                let mut shared = shared.lock().expect("stats lock");
                let first = &cycle.first;
                shared.first.record(&first.result, first.done - at);
                shared.timeline.push((at - measure_from, first.done - at));
                if first.result.is_ok() {
                    shared.service.saturating_record(load::micros(first.done - first.sent));
                }
                shared.lag.saturating_record(load::micros(first.sent.saturating_duration_since(at)));
                if let Some(second) = &cycle.second {
                    shared.second.record(&second.result, second.done - second.sent);
                }
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
    let (mut first, mut second) = (shared.first.clone(), shared.second.clone());
    first.elapsed = duration;
    second.elapsed = duration;
    Open {
        cycle_rate: rate,
        first: OpenStats {
            stats: first,
            service: shared.service.clone(),
            lag: shared.lag.clone(),
            scheduled,
            not_sent,
            timeline: shared.timeline.clone(),
            measured_from: measured_from_wall,
        },
        second,
    }
}

/// Places `options.sessions` matches and releases each match's own reserved seat; returns the
/// session ids. Refuses to go on unless the bridge then lists exactly those sessions, all empty.
async fn set_up(api: &Api, options: &SeatOptions) -> Result<Vec<String>> {
    let capacity = options.capacity;
    let placed: Vec<Result<String, String>> = futures::stream::iter(0..options.sessions)
        .map(|i| {
            let api = api.clone();
            async move {
                let owner = format!("seats-owner-{i}");
                let body = json!({
                    "match_id": format!("bench-seats-{i}"),
                    "players": [{ "id": owner, "latencies": { LOCATION: PLAYER_LATENCY_MS } }],
                    "max_players": capacity,
                });
                let assignment = api.call(Method::POST, "/v1/matches", Some(&body)).await?;
                let session = assignment["session_id"]
                    .as_str()
                    .ok_or_else(|| format!("an assignment without session_id: {assignment}"))?
                    .to_owned();
                let path = format!("/v1/sessions/{session}/players");
                let released = api.call(Method::DELETE, &path, Some(&json!({ "players": [owner] }))).await?;
                if !lists(&released, "released", &owner) {
                    return Err(format!("the match's own player's seat was not released: {released}"));
                }
                Ok(session)
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    let sessions = placed
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("setting up the sessions: {e}"))?;
    let listed = list_sessions(api).await?;
    let empty = listed.iter().all(|s| {
        s["capacity"].as_u64() == Some(u64::from(capacity))
            && s["open_seats"].as_u64() == Some(u64::from(capacity))
    });
    if listed.len() != sessions.len() || !empty {
        bail!(
            "after the set-up the bridge lists {} sessions of {IMAGE} ({} expected, each with {capacity} open seats)",
            listed.len(),
            sessions.len()
        );
    }
    Ok(sessions)
}

/// Every session of [`IMAGE`], page by page (`--seat-sessions` goes beyond one page).
async fn list_sessions(api: &Api) -> Result<Vec<Value>> {
    let mut sessions = Vec::new();
    let mut after = String::new();
    loop {
        let mut page = api
            .call(Method::GET, &format!("/v1/sessions?image={IMAGE}&limit=1000{after}"), None)
            .await
            .map_err(|e| anyhow::anyhow!("GET /v1/sessions: {e}"))?;
        let listed = page["sessions"].as_array_mut().context("GET /v1/sessions: no `sessions` list")?;
        sessions.append(listed);
        match page["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => return Ok(sessions),
        }
    }
}

/// Players and reservations left in the bridge's sessions.
async fn leftover(api: &Api) -> Result<Leftover> {
    let listed = list_sessions(api).await?;
    let count = |session: &Value, field: &str| session[field].as_array().map_or(0, Vec::len);
    Ok(Leftover {
        sessions: listed.len(),
        players: listed.iter().map(|s| count(s, "players")).sum(),
        reserved: listed
            .iter()
            .flat_map(|s| s["reservations"].as_array().cloned().unwrap_or_default())
            .map(|r| count(&r, "players"))
            .sum(),
    })
}

/// The bridge's Gameye call counters from `/metrics`: operation → (calls, calls not answered 2xx).
async fn gameye_calls(http: &Client, bridge_url: &str) -> Result<BTreeMap<String, (f64, f64)>> {
    let text = http
        .get(format!("{bridge_url}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await?
        .text()
        .await
        .context("reading the bridge's /metrics")?;
    let label = |line: &str, name: &str| {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        line[start..].split('"').next().map(str::to_owned)
    };
    let mut calls: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("gameye_bridge_gameye_calls_total{")) {
        let (Some(operation), Some(status)) = (label(line, "operation"), label(line, "status")) else {
            continue;
        };
        let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else { continue };
        let entry = calls.entry(operation).or_default();
        entry.0 += value;
        if !status.starts_with('2') {
            entry.1 += value;
        }
    }
    Ok(calls)
}

/// `join-session 1234 (0 failed), …` for the counters that moved, or `none`.
fn calls_between(before: &BTreeMap<String, (f64, f64)>, after: &BTreeMap<String, (f64, f64)>) -> String {
    let moved: Vec<String> = after
        .iter()
        .filter_map(|(operation, (calls, failed))| {
            let (calls0, failed0) = before.get(operation).copied().unwrap_or_default();
            let calls = calls - calls0;
            (calls > 0.0).then(|| format!("{operation} {calls:.0} ({:.0} failed)", failed - failed0))
        })
        .collect();
    if moved.is_empty() { "none".to_owned() } else { moved.join(", ") }
}

/// Runs the set-up and the four phases on a freshly started stack, filling `report` as it goes.
pub async fn run(
    options: &SeatOptions,
    stack: &mut Stack,
    http: &Client,
    report: &mut SeatReport,
) -> Result<()> {
    let api = Api {
        http: http.clone(),
        url: stack.bridge_url.clone(),
        token: crate::procs::BRIDGE_TOKEN.to_owned(),
    };
    report.sessions = options.sessions;
    report.capacity = options.capacity;
    report.load_fraction = options.load_fraction;
    eprintln!("seats: placing {} sessions of {} seats", options.sessions, options.capacity);
    let sessions = Arc::new(set_up(&api, options).await?);
    settle().await;

    let tracked = stack.tracked();
    let cpu = || CpuSnapshot::take(&tracked);
    let (workers, warmup, duration) = (options.workers, options.warmup, options.duration);

    // Runs one phase: CPU, the Gameye calls it caused, and what it left behind.
    macro_rules! phase {
        ($id:literal, $run:expr) => {{
            let (before, calls) = (cpu(), gameye_calls(http, &stack.bridge_url).await?);
            let measured = $run.await;
            report.cpu.push(($id, before.usage_until(&cpu())));
            stack.check_alive()?;
            settle().await;
            let after = gameye_calls(http, &stack.bridge_url).await?;
            report.gameye.push(($id, calls_between(&calls, &after)));
            report.leftovers.push(($id, leftover(&api).await?));
            measured
        }};
    }

    let backfill = Workload::Backfill;
    eprintln!("5a. backfill: {workers} workers for {duration:?}");
    let closed = phase!("5a", closed_loop(&api, &backfill, "bf-a", workers, warmup, duration));
    let rate = closed.first.rate() * options.load_fraction;
    eprintln!("   {:.0} reservations/s", closed.first.rate());
    report.backfill = Some(closed);
    if rate <= 0.0 {
        bail!("no backfill succeeded in 5a; no rate for the open loop");
    }
    eprintln!("5b. backfill: open loop at {rate:.0}/s for {duration:?}");
    let open = phase!("5b", open_loop_alone(&api, &backfill, "bf-b", rate, options))?;
    eprintln!("   p99 {:?}", open.first.stats.quantile(0.99));
    report.backfill_open = Some(open);

    let join_leave = Workload::JoinLeave(sessions);
    eprintln!("6a. join + leave: {workers} workers for {duration:?}");
    let closed = phase!("6a", closed_loop(&api, &join_leave, "jl-a", workers, warmup, duration));
    let ops = closed.first.rate() + closed.second.rate();
    eprintln!("   {ops:.0} operations/s");
    report.join_leave = Some(closed);
    if ops <= 0.0 {
        bail!("no join or leave succeeded in 6a; no rate for the open loop");
    }
    // A pair is two operations.
    let pairs = ops * options.load_fraction / 2.0;
    eprintln!("6b. join + leave: open loop at {:.0} operations/s for {duration:?}", pairs * 2.0);
    let open = phase!("6b", open_loop_alone(&api, &join_leave, "jl-b", pairs, options))?;
    eprintln!("   p99 {:?}", open.first.stats.quantile(0.99));
    report.join_leave_open = Some(open);
    Ok(())
}

/// A short pause between phases, so one phase's stragglers do not land in the next.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Both steps of a phase as one: the operations of a join+leave phase.
fn merged(first: &Stats, second: &Stats) -> Stats {
    let mut all = first.clone();
    all.merge(second);
    all
}

fn quantiles(s: &Stats) -> String {
    format!("p50 {} / p99 {} / max {}", ms(s.quantile(0.5)), ms(s.quantile(0.99)), ms(s.max()))
}

impl SeatReport {
    pub fn is_empty(&self) -> bool {
        self.backfill.is_none() && self.join_leave.is_none()
    }

    /// Operations per second of a phase (reservations for 5, joins + leaves for 6).
    fn phase_rate(&self, phase: &str) -> Option<f64> {
        match phase {
            "5a" => self.backfill.as_ref().map(|c| c.first.rate()),
            "5b" => self.backfill_open.as_ref().map(|o| o.first.stats.rate()),
            "6a" => self.join_leave.as_ref().map(|c| c.first.rate() + c.second.rate()),
            "6b" => self.join_leave_open.as_ref().map(|o| o.first.stats.rate() + o.second.rate()),
            _ => None,
        }
    }

    pub fn markdown(&self, command: &str, machine: &Machine, settings: &[String]) -> String {
        let mut out = report::preamble("gameye-bench seats results", command, machine, settings);
        let _ = writeln!(out, "| scenario | ok | errors | rate | p50 | p99 | max |");
        let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        let row = |out: &mut String, name: &str, s: &Stats, errors: u64, rate: String| {
            let _ = writeln!(
                out,
                "| {name} | {} | {errors} | {rate} | {} | {} | {} |",
                s.ok,
                ms(s.quantile(0.5)),
                ms(s.quantile(0.99)),
                ms(s.max())
            );
        };
        let half = self.load_fraction;
        if let Some(c) = &self.backfill {
            let errors = c.first.error_count() + c.second.error_count();
            row(
                &mut out,
                "5a. `POST /v1/backfill`, closed loop",
                &c.first,
                errors,
                format!("{:.0}/s", c.first.rate()),
            );
        }
        if let Some(o) = &self.backfill_open {
            let errors = o.first.stats.error_count() + o.second.error_count();
            let name = format!("5b. `POST /v1/backfill`, open loop at {half} of 5a");
            row(&mut out, &name, &o.first.stats, errors, format!("{:.0}/s", o.cycle_rate));
        }
        if let Some(c) = &self.join_leave {
            let all = merged(&c.first, &c.second);
            let rate = format!("{:.0}/s", c.first.rate() + c.second.rate());
            row(
                &mut out,
                "6a. join + leave (`POST`/`DELETE /v1/sessions/{id}/players`), closed loop",
                &all,
                all.error_count(),
                rate,
            );
        }
        if let Some(o) = &self.join_leave_open {
            let all = merged(&o.first.stats, &o.second);
            let name = format!("6b. join + leave, open loop at {half} of 6a");
            row(&mut out, &name, &all, all.error_count(), format!("{:.0}/s", o.cycle_rate * 2.0));
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Rates: 5 counts reservations (`POST /v1/backfill` answered 200 with a reservation), 6 counts \
             operations (a join or a leave answered 200 showing the change); open-loop rates are the offered rates. \
             Each backfill is for one fresh player with a {PLAYER_LATENCY_MS} ms latency to {LOCATION} and considers all \
             {} sessions; each reservation is released right after by `DELETE /v1/sessions/{{id}}/players` (its \
             timing is listed apart, not in the rate or the latencies; its errors are in the errors column), so \
             the seat records keep their size and seats never run out. In 6 each worker joins a fresh player to \
             one of the sessions (round robin) and then makes it leave; in 6b a join+leave pair is scheduled at \
             half the offered rate, the join timed from its scheduled time, the leave from its send (right after \
             the join's answer). Joins and leaves also make the bridge tell Gameye (here the emulator) the \
             session's players; that sync runs in the background, so these figures are the HTTP operations \
             against Redis (the Gameye calls made are listed below).\n",
            self.sessions
        );
        self.details(&mut out, machine.cpus);
        out
    }

    fn details(&self, out: &mut String, cpus: usize) {
        let _ = writeln!(out, "Details:");
        if let Some(c) = &self.backfill {
            let _ = writeln!(
                out,
                "- 5a: backfills errors: {}; releases {} ok, {}, errors: {}",
                c.first.error_summary(),
                c.second.ok,
                quantiles(&c.second),
                c.second.error_summary()
            );
        }
        if let Some(o) = &self.backfill_open {
            open_details(out, "5b", "backfill", "releases", o);
        }
        if let Some(c) = &self.join_leave {
            let _ = writeln!(
                out,
                "- 6a: joins {} ok, {}, errors: {}; leaves {} ok, {}, errors: {}",
                c.first.ok,
                quantiles(&c.first),
                c.first.error_summary(),
                c.second.ok,
                quantiles(&c.second),
                c.second.error_summary()
            );
        }
        if let Some(o) = &self.join_leave_open {
            open_details(out, "6b", "join", "leaves", o);
        }
        for (phase, calls) in &self.gameye {
            let _ = writeln!(
                out,
                "- {phase}, the bridge's Gameye calls during the phase and the second after it: {calls}"
            );
        }
        for (phase, left) in &self.leftovers {
            let _ = writeln!(
                out,
                "- after {phase}: {} sessions listed, {} players joined, {} seats reserved",
                left.sessions, left.players, left.reserved
            );
        }
        for (phase, usage) in &self.cpu {
            let per_op = self
                .phase_rate(phase)
                .filter(|rate| *rate > 0.0)
                .map(|rate| {
                    let unit = if phase.starts_with('5') {
                        "reservation (its release included)"
                    } else {
                        "operation"
                    };
                    format!("; {:.0} µs of CPU per {unit} (ours + irq)", usage.ours() / rate * 1e6)
                })
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "- {phase}, CPU cores used on average (of {}): {}{per_op}",
                cpus,
                usage.summary()
            );
        }
    }
}

fn open_details(out: &mut String, phase: &str, first: &str, second: &str, o: &Open) {
    let f = &o.first;
    let _ = writeln!(
        out,
        "- {phase}: {} {first}s scheduled, {} not sent; {first} errors: {}; {first} latency from the scheduled time \
         p50 {} / p99 {}, from the actual send p50 {} / p99 {}; send lag behind schedule p50 {} / p99 {}; \
         {second} {} ok, {}, errors: {}",
        f.scheduled,
        f.not_sent,
        f.stats.error_summary(),
        ms(f.stats.quantile(0.5)),
        ms(f.stats.quantile(0.99)),
        ms(f.service_quantile(0.5)),
        ms(f.service_quantile(0.99)),
        ms(f.lag_quantile(0.5)),
        ms(f.lag_quantile(0.99)),
        o.second.ok,
        quantiles(&o.second),
        o.second.error_summary()
    );
    crate::report::tail_windows(out, &format!("{phase} ({first})"), f, &[], &[]);
}

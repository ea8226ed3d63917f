//! The NATS door benchmark (issue 4): end-to-end matches/s from a JetStream publish on
//! `gameye.match.found` to the `gameye.match.assigned.<id>` message, with one bridge instance and
//! with several sharing the durable consumer, against the raw emulator rate measured in the same run;
//! then publish→assigned latency (p50/p99) in an open loop at a fraction of each maximum.
//!
//! Self-contained: it starts its own `gameye-emulator`, and per instance count a fresh `nats-server -js`,
//! `redis-server` and the bridges, so runs do not share state. Everything listens on 127.0.0.1.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::procs::{binary, free_port, spawn_logged, world_toml};

const EMULATOR_TOKEN: &str = "emulator-token";
const LOCATION: &str = "eu-west-1";
const FOUND: &str = "gameye.match.found";
const ASSIGNED: &str = "gameye.match.assigned.>";

/// How the NATS scenario runs.
#[derive(Clone, Debug)]
pub struct NatsBenchOptions {
    /// Where `gameye-bridge` and `gameye-emulator` are.
    pub bin_dir: PathBuf,
    pub nats_server: PathBuf,
    pub redis_server: PathBuf,
    /// Instance counts to measure, e.g. `[1, 3]`.
    pub instances: Vec<usize>,
    /// Matches outstanding (published, not yet assigned) in the closed loop; also the raw emulator's workers.
    pub window: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Fraction of each measured maximum used for the latency run.
    pub load_fraction: f64,
    /// `nats.concurrency` of each bridge.
    pub bridge_concurrency: usize,
}

/// Rates and latencies, printable as Markdown.
#[derive(Debug)]
pub struct NatsReport {
    pub raw_rate: f64,
    pub window: usize,
    pub runs: Vec<InstanceRun>,
}

#[derive(Debug)]
pub struct InstanceRun {
    pub instances: usize,
    /// Closed loop: assignments per second.
    pub max_rate: f64,
    pub publish_errors: u64,
    pub latency: OpenLoop,
}

#[derive(Debug)]
pub struct OpenLoop {
    pub rate: f64,
    pub published: u64,
    pub received: u64,
    /// Microseconds from the scheduled publish to the assignment's arrival.
    pub latency: Histogram<u64>,
}

pub async fn run(options: &NatsBenchOptions) -> Result<NatsReport> {
    if options.instances.is_empty() || options.window == 0 {
        bail!("the NATS scenario needs at least one instance count and a window of at least 1");
    }
    let dir = tempfile::tempdir()?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(options.window).tcp_nodelay(true).build()?;
    // Every phase gets a fresh emulator: the raw phase alone can fill a location.
    let (emulator, emulator_url) = start_emulator(options, &http, &dir.path().join("emulator-raw")).await?;
    eprintln!("nats 0. raw emulator: {} workers for {:?}", options.window, options.duration);
    let raw_rate = raw_emulator_rate(&http, &emulator_url, options).await;
    eprintln!("   {raw_rate:.0}/s");
    stop(emulator).await;

    let mut runs = Vec::new();
    for &instances in &options.instances {
        eprintln!("nats {instances}: {instances} bridge instance(s), window {}", options.window);
        let (emulator, emulator_url) =
            start_emulator(options, &http, &dir.path().join(format!("emulator-{instances}"))).await?;
        let stack = NatsStack::start(options, &emulator_url, instances, dir.path()).await?;
        let (max_rate, publish_errors) = closed_loop(&stack.jetstream, &stack.client, options).await?;
        eprintln!("   max {max_rate:.0}/s");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rate = (max_rate * options.load_fraction).max(1.0);
        let latency = open_loop(&stack.jetstream, &stack.client, rate, options).await?;
        eprintln!(
            "   at {rate:.0}/s: p50 {:.1} ms, p99 {:.1} ms, {}/{} received",
            latency.latency.value_at_quantile(0.5) as f64 / 1000.0,
            latency.latency.value_at_quantile(0.99) as f64 / 1000.0,
            latency.received,
            latency.published
        );
        stack.stop().await;
        stop(emulator).await;
        runs.push(InstanceRun { instances, max_rate, publish_errors, latency });
    }
    Ok(NatsReport { raw_rate, window: options.window, runs })
}

impl NatsReport {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ =
            writeln!(out, "\n## NATS door: publish on `{FOUND}` → `gameye.match.assigned.<id>` received\n");
        let _ = writeln!(out, "| | matches/s | vs raw emulator |\n| --- | ---: | ---: |");
        let _ = writeln!(
            out,
            "| raw emulator (`POST /session`, {} workers) | {:.0} | 1.00 |",
            self.window, self.raw_rate
        );
        for run in &self.runs {
            let ratio = if self.raw_rate > 0.0 { run.max_rate / self.raw_rate } else { 0.0 };
            let _ = writeln!(
                out,
                "| {} bridge instance(s), {} matches outstanding{} | {:.0} | {ratio:.2} |",
                run.instances,
                self.window,
                if run.publish_errors > 0 {
                    format!(", {} publish errors", run.publish_errors)
                } else {
                    String::new()
                },
                run.max_rate
            );
        }
        let _ = writeln!(out, "\n| instances | offered rate | p50 | p99 | max | assigned / published |");
        let _ = writeln!(out, "| ---: | ---: | ---: | ---: | ---: | ---: |");
        for run in &self.runs {
            let ms = |q: f64| run.latency.latency.value_at_quantile(q) as f64 / 1000.0;
            let _ = writeln!(
                out,
                "| {} | {:.0}/s | {:.1} ms | {:.1} ms | {:.1} ms | {} / {} |",
                run.instances,
                run.latency.rate,
                ms(0.5),
                ms(0.99),
                run.latency.latency.max() as f64 / 1000.0,
                run.latency.received,
                run.latency.published
            );
        }
        out
    }
}

/// A `gameye-emulator` with the bench world; `base` names its world and log files.
async fn start_emulator(
    options: &NatsBenchOptions,
    http: &reqwest::Client,
    base: &Path,
) -> Result<(Child, String)> {
    let port = free_port()?;
    let world = base.with_extension("toml");
    std::fs::write(&world, world_toml(40))?;
    let mut command = Command::new(binary(&options.bin_dir, "gameye-emulator")?);
    command.args(["--listen", &format!("127.0.0.1:{port}"), "--config"]).arg(&world).env("RUST_LOG", "warn");
    let child = spawn_logged("gameye-emulator", command, &base.with_extension("log"))?;
    let url = format!("http://127.0.0.1:{port}");
    wait_until(Duration::from_secs(20), "gameye-emulator", || async {
        http.get(format!("{url}/available-location/demo-game"))
            .bearer_auth(EMULATOR_TOKEN)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await?;
    Ok((child, url))
}

/// Closed loop of `window` workers creating sessions straight at the emulator.
async fn raw_emulator_rate(http: &reqwest::Client, emulator_url: &str, options: &NatsBenchOptions) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + options.warmup;
    let end = measure_from + options.duration;
    let mut workers = Vec::new();
    for worker in 0..options.window {
        let (http, url, done) = (http.clone(), emulator_url.to_owned(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < end {
                n += 1;
                let body = serde_json::json!({"location": LOCATION, "image": "demo-game", "ttl": "10m",
                                              "labels": {"bench": format!("raw-{worker}-{n}")}});
                let ok = http
                    .post(format!("{url}/session"))
                    .bearer_auth(EMULATOR_TOKEN)
                    .json(&body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                let now = Instant::now();
                if ok && now >= measure_from && now < end {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
    done.load(Ordering::Relaxed) as f64 / options.duration.as_secs_f64()
}

/// Keeps `window` matches outstanding; returns (assignments/s after the warm-up, publish errors).
async fn closed_loop(
    jetstream: &async_nats::jetstream::Context,
    client: &async_nats::Client,
    options: &NatsBenchOptions,
) -> Result<(f64, u64)> {
    let mut assigned = client.subscribe(ASSIGNED).await?;
    client.flush().await?;
    let window = Arc::new(Semaphore::new(options.window));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + options.warmup;
    let end = measure_from + options.duration;
    let publisher = {
        let (jetstream, window, errors) = (jetstream.clone(), window.clone(), errors.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < end {
                let Ok(permit) = window.acquire().await else { return };
                permit.forget();
                n += 1;
                publish(&jetstream, &format!("max-{n}"), &errors).await;
            }
        })
    };
    let mut counted = 0u64;
    loop {
        let remaining = end.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        match tokio::time::timeout(remaining, assigned.next()).await {
            Ok(Some(_)) => {
                window.add_permits(1);
                let now = Instant::now();
                if now >= measure_from && now < end {
                    counted += 1;
                }
            }
            Ok(None) => bail!("the assigned subscription ended"),
            Err(_) => break,
        }
    }
    window.close();
    publisher.abort();
    // Let the outstanding window drain so the latency run starts from an idle bridge.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let mut left = options.window;
        while left > 0 && assigned.next().await.is_some() {
            left -= 1;
        }
    })
    .await;
    Ok((counted as f64 / options.duration.as_secs_f64(), errors.load(Ordering::Relaxed)))
}

/// Publishes at `rate`/s for the duration (after the warm-up); latency counts from the scheduled time.
async fn open_loop(
    jetstream: &async_nats::jetstream::Context,
    client: &async_nats::Client,
    rate: f64,
    options: &NatsBenchOptions,
) -> Result<OpenLoop> {
    let mut assigned = client.subscribe(ASSIGNED).await?;
    client.flush().await?;
    let scheduled: Arc<Mutex<HashMap<String, (Instant, bool)>>> = Arc::default();
    let errors = Arc::new(AtomicU64::new(0));
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let measure_from = start + options.warmup;
    let end = measure_from + options.duration;
    let publisher = {
        let (jetstream, scheduled, errors) = (jetstream.clone(), scheduled.clone(), errors.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                let at = start + interval.mul_f64(n as f64);
                if at >= end {
                    return;
                }
                tokio::time::sleep_until(at).await;
                let id = format!("lat-{rate:.0}-{n}");
                scheduled.lock().unwrap().insert(id.clone(), (at, at >= measure_from));
                let (jetstream, errors) = (jetstream.clone(), errors.clone());
                // Not awaited in line: a slow ack must not delay the next scheduled publish.
                tokio::spawn(async move { publish(&jetstream, &id, &errors).await });
                n += 1;
            }
        })
    };
    let mut latency = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut received = 0u64;
    let stragglers_until = end + Duration::from_secs(10);
    loop {
        let published = scheduled.lock().unwrap().values().filter(|(_, measured)| *measured).count() as u64;
        if Instant::now() >= end && received >= published {
            break;
        }
        let remaining = stragglers_until.saturating_duration_since(Instant::now());
        let Ok(Some(message)) = tokio::time::timeout(remaining, assigned.next()).await else { break };
        let arrived = Instant::now();
        let id =
            message.headers.as_ref().and_then(|h| h.get("Gameye-Match-Id")).map(|v| v.as_str().to_owned());
        let Some((at, measured)) = id.and_then(|id| scheduled.lock().unwrap().get(&id).copied()) else {
            continue;
        };
        if measured {
            received += 1;
            let micros = u64::try_from(arrived.duration_since(at).as_micros()).unwrap_or(u64::MAX);
            latency.saturating_record(micros.max(1));
        }
    }
    publisher.abort();
    let published = scheduled.lock().unwrap().values().filter(|(_, measured)| *measured).count() as u64;
    Ok(OpenLoop { rate, published, received, latency })
}

async fn publish(jetstream: &async_nats::jetstream::Context, match_id: &str, errors: &AtomicU64) {
    let body =
        serde_json::json!({"match_id": match_id, "players": [{"id": format!("p-{match_id}")}]}).to_string();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", match_id);
    let acked = match jetstream.publish_with_headers(FOUND, headers, body.into()).await {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    if !acked {
        errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// nats-server, redis-server and `instances` bridges for one run.
struct NatsStack {
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    procs: Vec<Child>,
}

impl NatsStack {
    async fn start(
        options: &NatsBenchOptions,
        emulator_url: &str,
        instances: usize,
        logs: &Path,
    ) -> Result<Self> {
        let mut procs = Vec::new();
        let nats_port = free_port()?;
        let store = logs.join(format!("jetstream-{instances}"));
        let mut nats = Command::new(&options.nats_server);
        nats.args(["-a", "127.0.0.1", "-p", &nats_port.to_string(), "-js", "-sd"]).arg(&store);
        procs.push(spawn_logged("nats-server", nats, &logs.join(format!("nats-{instances}.log")))?);
        let redis_port = free_port()?;
        let mut redis = Command::new(&options.redis_server);
        redis.args([
            "--bind",
            "127.0.0.1",
            "--port",
            &redis_port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        procs.push(spawn_logged("redis-server", redis, &logs.join(format!("redis-{instances}.log")))?);
        let nats_url = format!("nats://127.0.0.1:{nats_port}");
        let http = reqwest::Client::new();
        let bridge_bin = binary(&options.bin_dir, "gameye-bridge")?;
        for i in 0..instances {
            let port = free_port()?;
            let mut bridge = Command::new(&bridge_bin);
            bridge
                .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("GAMEYE_API_URL", emulator_url)
                .env("GAMEYE_API_TOKEN", EMULATOR_TOKEN)
                .env("BRIDGE_REDIS__URL", format!("redis://127.0.0.1:{redis_port}/"))
                .env("BRIDGE_NATS__URL", &nats_url)
                .env("BRIDGE_NATS__CONCURRENCY", options.bridge_concurrency.to_string())
                .env("BRIDGE_GAMEYE__POOL_MAX_IDLE", options.bridge_concurrency.max(64).to_string())
                .env("BRIDGE_LOG__LEVEL", "warn");
            procs.push(spawn_logged(
                "gameye-bridge",
                bridge,
                &logs.join(format!("bridge-{instances}-{i}.log")),
            )?);
            let ready = format!("http://127.0.0.1:{port}/readyz");
            wait_until(Duration::from_secs(30), "gameye-bridge (readyz)", || async {
                http.get(&ready).send().await.is_ok_and(|r| r.status().is_success())
            })
            .await?;
        }
        let client = async_nats::connect(&nats_url).await.context("connecting to the bench's nats-server")?;
        let jetstream = async_nats::jetstream::new(client.clone());
        Ok(Self { client, jetstream, procs })
    }

    async fn stop(self) {
        let _ = self.client.drain().await;
        for child in self.procs.into_iter().rev() {
            stop(child).await;
        }
    }
}

/// SIGTERM, then SIGKILL after 5 s.
async fn stop(mut child: Child) {
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

async fn wait_until<F, Fut>(within: Duration, what: &str, mut ready: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up = Instant::now() + within;
    while !ready().await {
        if Instant::now() >= give_up {
            bail!("{what} did not become ready within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

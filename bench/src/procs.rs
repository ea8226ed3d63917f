//! The processes under test: a private `redis-server`, `gameye-emulator` and `gameye-bridge`, each on a
//! free loopback port, with logs in a temp dir. Stopped with SIGTERM (then SIGKILL) when the bench
//! ends, and killed on drop if it fails half-way.

use std::fmt::Write as _;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::load::LOCATION;

/// The emulator's token (its default world).
pub const EMULATOR_TOKEN: &str = "emulator-token";
/// The bridge's API token in the bench.
pub const BRIDGE_TOKEN: &str = "bench-token";

/// How the stack is started.
#[derive(Clone, Debug)]
pub struct StackOptions {
    /// Where `gameye-bridge` and `gameye-emulator` are.
    pub bin_dir: PathBuf,
    pub redis_server: PathBuf,
    /// Host machines of the bench's location in the emulator (each holds 5,000 two-port sessions).
    pub emulator_hosts: usize,
    /// `BRIDGE_*` settings passed to the bridge (name, value).
    pub bridge_env: Vec<(String, String)>,
    /// Keys written into Redis before the bridge starts (see [`fill_redis`]).
    pub redis_filler: u64,
}

/// The bridge stopped by [`Stack::pause_bridge`]; continued when dropped (on error paths too).
pub struct PausedBridge(libc::pid_t);

impl Drop for PausedBridge {
    fn drop(&mut self) {
        if let Err(error) = signal(self.0, libc::SIGCONT) {
            eprintln!("cannot continue the bridge: {error:#}");
        }
    }
}

fn pause(proc: &Proc) -> Result<PausedBridge> {
    let pid = proc.child.id().context("the bridge has exited")? as libc::pid_t;
    signal(pid, libc::SIGSTOP)?;
    Ok(PausedBridge(pid))
}

/// Starts `bridge_bin` on a free port with the bench's settings (the emulator at `emulator_url`,
/// Redis database 0 on `redis_port`, its token, log level warn, then `env`) and waits until it is
/// ready and wired to that emulator.
async fn start_bridge(
    name: &'static str,
    bridge_bin: &Path,
    log: &Path,
    (emulator_url, redis_port, env): (&str, u16, &[(String, String)]),
    http: &reqwest::Client,
) -> Result<Extra> {
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let mut command = clean_command(bridge_bin);
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("GAMEYE_API_URL", emulator_url)
        .env("GAMEYE_API_TOKEN", EMULATOR_TOKEN)
        .env("BRIDGE_REDIS__URL", format!("redis://127.0.0.1:{redis_port}/0"))
        .env("BRIDGE_HTTP__TOKENS", format!("[\"{BRIDGE_TOKEN}\"]"))
        .env("BRIDGE_LOG__LEVEL", "warn");
    for (key, value) in env {
        command.env(key, value);
    }
    let mut bridge = Proc::spawn(name, command, log.to_path_buf())?;
    let probe = format!("{url}/readyz");
    bridge.wait_ready(Duration::from_secs(15), || http_ok(http, &probe, None)).await?;
    check_bridge_wiring(http, &probe, emulator_url).await?;
    Ok(Extra { url, proc: bridge })
}

fn signal(pid: libc::pid_t, signal: libc::c_int) -> Result<()> {
    // SAFETY: kill(2) with our own child's pid and a valid signal number touches no memory.
    if unsafe { libc::kill(pid, signal) } != 0 {
        bail!("cannot signal the bridge: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// One child process and its log file.
pub struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, command: Command, log: PathBuf) -> Result<Self> {
        let child = spawn_logged(name, command, &log)?;
        Ok(Self { name, child, log })
    }

    /// An error naming the process and the end of its log if it has exited.
    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}); the end of its log:\n{}", self.name, tail(&self.log, 20));
        }
        Ok(())
    }

    /// Polls `ready` until it says yes, for up to `within`.
    async fn wait_ready<F, Fut>(&mut self, within: Duration, mut ready: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let give_up = Instant::now() + within;
        loop {
            self.check_alive()?;
            if ready().await {
                return Ok(());
            }
            if Instant::now() >= give_up {
                bail!(
                    "{} did not become ready within {within:?}; the end of its log:\n{}",
                    self.name,
                    tail(&self.log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then SIGKILL after 5 s.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|pid| i32::try_from(pid).ok()) {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            if tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await.is_ok() {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}

/// Starts `command` with its output in `log`. The child is killed when the bench drops it, and by
/// the kernel when the bench itself dies without running destructors (SIGTERM, SIGKILL), so that no
/// Redis, emulator or bridge (perhaps still SIGSTOPped for phase 3b) outlives an interrupted run.
pub fn spawn_logged(name: &str, mut command: Command, log: &Path) -> Result<Child> {
    let file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    command.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file).kill_on_drop(true);
    // SAFETY: runs in the forked child before exec; prctl is async-signal-safe and touches no memory.
    // The "parent" whose death it watches is the spawning thread: a runtime worker, which lives as
    // long as the bench.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().with_context(|| format!("starting {name}"))
}

/// A command with a clean environment: no RUST_LOG, BRIDGE_* or GAMEYE_* of the caller's leaks in.
fn clean_command(program: &Path) -> Command {
    let mut command = Command::new(program);
    command.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A free TCP port on 127.0.0.1 (free when asked; the child binds it right after).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The binary `name` in `bin_dir`, or a clear error saying how to build it.
pub fn binary(bin_dir: &Path, name: &str) -> Result<PathBuf> {
    let path = bin_dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        bail!(
            "{} not found; build the release binaries first: \
             cargo build --release -p bench -p gameye-bridge -p gameye-emulator (or pass --bin-dir)",
            path.display()
        )
    }
}

/// The bench's emulator world: the default image and token, one location ([`LOCATION`]) big enough
/// for every session a run creates, sessions running at once.
pub fn world_toml(hosts: usize) -> String {
    let mut ips = Vec::with_capacity(hosts);
    for i in 0..hosts {
        // Documentation ranges (RFC 5737), never routed: 203.0.113.0/24 and then 198.51.100.0/24.
        let (net, host) = if i < 254 { ("203.0.113", i + 1) } else { ("198.51.100", i - 253) };
        ips.push(format!("\"{net}.{host}\""));
    }
    let mut toml = String::new();
    let _ = writeln!(toml, "# Written by gameye-bench.\nstart_delay = \"0s\"\nseed = 1\n");
    let _ = writeln!(toml, "[[locations]]\nid = \"{LOCATION}\"\nping_ips = [\"192.0.2.10\"]");
    let _ = writeln!(toml, "host_ips = [{}]", ips.join(", "));
    let _ = writeln!(toml, "capacity = {}", hosts * 5_000);
    toml
}

/// The floor's Redis database: its keys do not grow the bridge's key tables (database 0).
const FLOOR_DB: u8 = 1;

/// A service started beside the stack's own bridge, on its emulator and Redis: the
/// `gameye-bench-floor` yardstick, or a baseline build of the bridge (scenario `compare`).
pub struct Extra {
    pub url: String,
    proc: Proc,
}

impl Extra {
    pub fn check_alive(&mut self) -> Result<()> {
        self.proc.check_alive()
    }

    /// Stops it (SIGSTOP) until the returned guard is dropped.
    pub fn pause(&self) -> Result<PausedBridge> {
        pause(&self.proc)
    }

    pub async fn stop(self) {
        self.proc.stop().await;
    }
}

/// Redis, emulator and bridge, running.
pub struct Stack {
    pub emulator_url: String,
    pub bridge_url: String,
    /// Sessions the emulator's location holds.
    pub emulator_capacity: usize,
    pub dir: tempfile::TempDir,
    redis_port: u16,
    bridge_env: Vec<(String, String)>,
    redis: Proc,
    emulator: Proc,
    bridge: Proc,
}

impl Stack {
    pub async fn start(options: &StackOptions, http: &reqwest::Client) -> Result<Stack> {
        let bridge_bin = binary(&options.bin_dir, "gameye-bridge")?;
        let emulator_bin = binary(&options.bin_dir, "gameye-emulator")?;
        if options.emulator_hosts == 0 || options.emulator_hosts > 508 {
            bail!("--emulator-hosts must be within 1..=508");
        }
        let dir = tempfile::Builder::new().prefix("gameye-bench-").tempdir()?;

        let redis_port = free_port()?;
        let mut command = clean_command(&options.redis_server);
        command
            .args(["--bind", "127.0.0.1", "--port", &redis_port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(dir.path());
        let mut redis =
            Proc::spawn("redis-server", command, dir.path().join("redis.log")).with_context(|| {
                format!("{} (install redis-server or pass --redis-server)", options.redis_server.display())
            })?;
        redis.wait_ready(Duration::from_secs(10), || redis_ping(redis_port)).await?;
        if options.redis_filler > 0 {
            fill_redis(redis_port, 0, options.redis_filler)
                .await
                .context("filling Redis (--redis-filler)")?;
        }

        let world = dir.path().join("world.toml");
        std::fs::write(&world, world_toml(options.emulator_hosts))?;
        let emulator_port = free_port()?;
        let emulator_url = format!("http://127.0.0.1:{emulator_port}");
        let mut command = clean_command(&emulator_bin);
        command.arg("--listen").arg(format!("127.0.0.1:{emulator_port}")).arg("--config").arg(&world);
        command.env("RUST_LOG", "warn");
        let mut emulator = Proc::spawn("gameye-emulator", command, dir.path().join("emulator.log"))?;
        let probe = format!("{emulator_url}/available-location/demo-game");
        emulator.wait_ready(Duration::from_secs(10), || http_ok(http, &probe, Some(EMULATOR_TOKEN))).await?;

        let Extra { url: bridge_url, proc: bridge } = start_bridge(
            "gameye-bridge",
            &bridge_bin,
            &dir.path().join("bridge.log"),
            (&emulator_url, redis_port, &options.bridge_env),
            http,
        )
        .await?;

        Ok(Stack {
            emulator_url,
            bridge_url,
            emulator_capacity: options.emulator_hosts * 5_000,
            dir,
            redis_port,
            bridge_env: options.bridge_env.clone(),
            redis,
            emulator,
            bridge,
        })
    }

    /// Starts `bridge_bin` (another build of the bridge) on this stack's emulator and Redis, with
    /// the same settings as the stack's own bridge.
    pub async fn start_baseline_bridge(&self, bridge_bin: &Path, http: &reqwest::Client) -> Result<Extra> {
        if !bridge_bin.is_file() {
            bail!("--baseline-bridge {}: no such file", bridge_bin.display());
        }
        start_bridge(
            "baseline gameye-bridge",
            bridge_bin,
            &self.dir.path().join("baseline.log"),
            (&self.emulator_url, self.redis_port, &self.bridge_env),
            http,
        )
        .await
    }

    /// The processes whose CPU time is accounted per phase (the bench itself first).
    pub fn tracked(&self) -> Vec<crate::cpu::Tracked> {
        vec![
            ("bench", None),
            ("bridge", self.bridge.child.id()),
            ("emulator", self.emulator.child.id()),
            ("redis", self.redis.child.id()),
        ]
    }

    /// Stops the bridge (SIGSTOP) until the returned guard is dropped (SIGCONT): the emulator's
    /// reference phase runs with the bridge's background work (its reconciler's scans) out of the way.
    pub fn pause_bridge(&self) -> Result<PausedBridge> {
        pause(&self.bridge)
    }

    /// Starts the `gameye-bench-floor` yardstick against this stack's emulator (and, with 2 round
    /// trips, its Redis).
    pub async fn start_floor(
        &self,
        bin_dir: &Path,
        redis_round_trips: u8,
        worker_threads: usize,
        http: &reqwest::Client,
    ) -> Result<Extra> {
        let floor_bin = binary(bin_dir, "gameye-bench-floor")?;
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let mut command = clean_command(&floor_bin);
        command
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--gameye-url",
                &self.emulator_url,
                "--gameye-token",
                EMULATOR_TOKEN,
                "--token",
                BRIDGE_TOKEN,
            ])
            .args(["--redis-url", &format!("redis://127.0.0.1:{}/{FLOOR_DB}", self.redis_port)])
            .args(["--redis-round-trips", &redis_round_trips.to_string()])
            .args(["--worker-threads", &worker_threads.to_string()]);
        let log = self.dir.path().join(format!("floor-{redis_round_trips}.log"));
        let mut floor = Proc::spawn("gameye-bench-floor", command, log)?;
        let probe = format!("{url}/healthz");
        floor.wait_ready(Duration::from_secs(10), || http_ok(http, &probe, None)).await?;
        Ok(Extra { url, proc: floor })
    }

    /// Fills the floor's Redis database as `--redis-filler` filled the bridge's, so that its key
    /// tables do not double during its phases either.
    pub async fn fill_floor_database(&self, count: u64) -> Result<()> {
        fill_redis(self.redis_port, FLOOR_DB, count).await.context("filling the floor's Redis database")
    }

    /// [`Stack::tracked`] with `extra` (named `name`) in the bridge's place.
    pub fn tracked_with(&self, name: &'static str, extra: &Extra) -> Vec<crate::cpu::Tracked> {
        vec![
            ("bench", None),
            (name, extra.proc.child.id()),
            ("emulator", self.emulator.child.id()),
            ("redis", self.redis.child.id()),
        ]
    }

    /// How many keys Redis holds (`INFO keyspace`, database 0).
    pub async fn redis_keys(&self) -> Result<u64> {
        let info = redis_command(self.redis_port, "INFO keyspace").await?;
        Ok(keyspace_keys(&info))
    }

    /// Whether all three still run.
    pub fn check_alive(&mut self) -> Result<()> {
        self.redis.check_alive()?;
        self.emulator.check_alive()?;
        self.bridge.check_alive()
    }

    /// Stops the bridge, then the emulator and Redis. With `keep_logs`, the logs stay and their
    /// directory is returned.
    pub async fn stop(self, keep_logs: bool) -> Option<PathBuf> {
        self.bridge.stop().await;
        self.emulator.stop().await;
        self.redis.stop().await;
        keep_logs.then(|| self.dir.keep())
    }
}

/// `/readyz` must show the bench's emulator as a remote Gameye and a Redis check: a bridge that fell
/// back to its embedded emulator or in-memory state would measure something else.
async fn check_bridge_wiring(http: &reqwest::Client, readyz: &str, emulator_url: &str) -> Result<()> {
    let report: serde_json::Value = http
        .get(readyz)
        .timeout(Duration::from_secs(5))
        .send()
        .await?
        .json()
        .await
        .context("reading /readyz")?;
    let backend = report["gameye"]["backend"].as_str().unwrap_or_default();
    let url = report["gameye"]["url"].as_str().unwrap_or_default();
    let checks = report["checks"].as_array().cloned().unwrap_or_default();
    let has_redis = checks.iter().any(|c| c["name"].as_str().is_some_and(|n| n.contains("redis")));
    if backend != "remote" || !url.starts_with(emulator_url) || !has_redis {
        bail!("the bridge is not wired to the bench's emulator and Redis; its /readyz: {report}");
    }
    Ok(())
}

/// Filler keys and how long they live: longer than any run.
const FILLER_PREFIX: &str = "gameye-bench-filler:";
const FILLER_TTL_MS: u64 = 6 * 3_600_000;

/// Writes `count` filler keys (each with a time to live, like every key the bridge writes), then
/// touches each once more. Redis keeps its keys in a hash table (and those with an expiry in a second
/// one) that doubles when full, rehashing every key — hundreds of milliseconds of its single thread
/// at a few hundred thousand keys. A bench whose store grows by hundreds of thousands of keys a minute
/// meets those doublings inside its phases; a long-running deployment seldom does. Filling first lets
/// a run measure a Redis that has already grown: past 2^k keys the tables are 2^(k+1) entries, and the
/// second pass drives the rehash to its end (every command on a rehashing table moves one bucket).
async fn fill_redis(port: u16, db: u8, count: u64) -> Result<()> {
    const BATCH: u64 = 10_000;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let db = db.to_string();
    stream.write_all(format!("*2\r\n$6\r\nSELECT\r\n${}\r\n{db}\r\n", db.len()).as_bytes()).await?;
    read_simple_replies(&mut stream, 1).await?;
    for pass in ["SET", "PEXPIRE"] {
        let mut next = 0;
        while next < count {
            let end = (next + BATCH).min(count);
            let mut commands = String::new();
            for i in next..end {
                let key = format!("{FILLER_PREFIX}{i}");
                let ttl = FILLER_TTL_MS.to_string();
                let args: &[&str] =
                    if pass == "SET" { &["SET", &key, "1", "PX", &ttl] } else { &["PEXPIRE", &key, &ttl] };
                let _ = write!(commands, "*{}\r\n", args.len());
                for arg in args {
                    let _ = write!(commands, "${}\r\n{arg}\r\n", arg.len());
                }
            }
            stream.write_all(commands.as_bytes()).await?;
            read_simple_replies(&mut stream, (end - next) as usize).await?;
            next = end;
        }
    }
    Ok(())
}

/// Reads `count` one-line replies (`+OK`, `:1`), failing on an error reply.
async fn read_simple_replies(stream: &mut tokio::net::TcpStream, count: usize) -> Result<()> {
    let mut seen = 0;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut line_start = true;
    while seen < count {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            bail!("Redis closed the connection");
        }
        for &byte in &buffer[..n] {
            if line_start && byte == b'-' {
                bail!("Redis refused a filler command");
            }
            line_start = byte == b'\n';
            seen += usize::from(line_start);
        }
    }
    Ok(())
}

/// One inline command's bulk-string reply (e.g. `INFO`), as text.
async fn redis_command(port: u16, command: &str) -> Result<String> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(format!("{command}\r\n").as_bytes()).await?;
        let mut reply = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let n = stream.read(&mut buffer).await?;
            if n == 0 {
                bail!("Redis closed the connection");
            }
            reply.extend_from_slice(&buffer[..n]);
            // `$<length>\r\n<text>\r\n`: complete once the announced length has arrived.
            let text = String::from_utf8_lossy(&reply);
            if let Some((header, body)) = text.strip_prefix('$').and_then(|rest| rest.split_once("\r\n")) {
                let length: usize = header.parse().context("an unreadable Redis reply")?;
                if body.len() >= length {
                    return Ok(body[..length].to_owned());
                }
            } else if !text.starts_with('$') {
                bail!("unexpected Redis reply: {}", text.trim());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), attempt).await.context("Redis did not answer")?
}

/// `keys=` of `db0` in an `INFO keyspace` answer (0 when the database is empty).
fn keyspace_keys(info: &str) -> u64 {
    info.lines()
        .find_map(|line| line.strip_prefix("db0:"))
        .and_then(|fields| fields.split(',').find_map(|field| field.strip_prefix("keys=")))
        .and_then(|keys| keys.trim().parse().ok())
        .unwrap_or(0)
}

/// The largest size at which Redis's key table doubled while the key count went from `before` to
/// `after` (tables are powers of two, at least 4, and double when a key is added to a full one).
pub fn table_doubled(before: u64, after: u64) -> Option<u64> {
    let first = before.max(4).next_power_of_two();
    if first >= after {
        return None;
    }
    // The largest power of two below `after`: at least `first`, which is one.
    Some(1 << (u64::BITS - 1 - (after - 1).leading_zeros()))
}

async fn redis_ping(port: u16) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut answer = [0u8; 7];
        stream.read_exact(&mut answer).await?;
        Ok::<_, std::io::Error>(&answer == b"+PONG\r\n")
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), attempt).await, Ok(Ok(true)))
}

async fn http_ok(http: &reqwest::Client, url: &str, token: Option<&str>) -> bool {
    let mut request = http.get(url).timeout(Duration::from_secs(1));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    matches!(request.send().await, Ok(response) if response.status().is_success())
}

/// `PUT /_emulator/faults` (`rules` a JSON list) or, with `None`, `DELETE /_emulator/faults`.
pub async fn set_faults(
    http: &reqwest::Client,
    emulator_url: &str,
    rules: Option<serde_json::Value>,
) -> Result<()> {
    let url = format!("{emulator_url}/_emulator/faults");
    let request = match rules {
        Some(rules) => http.put(url).json(&rules),
        None => http.delete(url),
    };
    let response = request.timeout(Duration::from_secs(5)).send().await.context("setting emulator faults")?;
    if !response.status().is_success() {
        bail!("the emulator refused the fault rules: HTTP {}", response.status());
    }
    Ok(())
}

/// Sums and counts of two of the bridge's histograms, from `GET /metrics`: Gameye `session-run` call
/// latency and placement duration (claim to recorded outcome, `placed`).
#[derive(Clone, Copy, Debug, Default)]
pub struct BridgeTimes {
    pub gameye_run: (f64, f64),
    pub placement: (f64, f64),
}

impl BridgeTimes {
    pub async fn scrape(http: &reqwest::Client, bridge_url: &str) -> Result<Self> {
        let text = http
            .get(format!("{bridge_url}/metrics"))
            .timeout(Duration::from_secs(5))
            .send()
            .await?
            .text()
            .await
            .context("reading the bridge's /metrics")?;
        let value = |name: &str, label: &str| {
            text.lines()
                .find(|line| line.starts_with(name) && line.contains(label))
                .and_then(|line| line.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let run = "gameye_bridge_gameye_call_duration_seconds";
        let placement = "gameye_bridge_placement_duration_seconds";
        let (run_label, placed_label) = ("operation=\"session-run\"", "outcome=\"placed\"");
        Ok(Self {
            gameye_run: (value(&format!("{run}_sum"), run_label), value(&format!("{run}_count"), run_label)),
            placement: (
                value(&format!("{placement}_sum"), placed_label),
                value(&format!("{placement}_count"), placed_label),
            ),
        })
    }

    /// Mean Gameye call and placement durations between `self` (earlier) and `later`.
    pub fn means_until(&self, later: &BridgeTimes) -> (Duration, Duration) {
        let mean = |(s0, c0): (f64, f64), (s1, c1): (f64, f64)| {
            if c1 > c0 { Duration::from_secs_f64(((s1 - s0) / (c1 - c0)).max(0.0)) } else { Duration::ZERO }
        };
        (mean(self.gameye_run, later.gameye_run), mean(self.placement, later.placement))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_doubling_is_seen_only_when_the_key_count_passes_a_full_table() {
        assert_eq!(table_doubled(100_000, 131_072), None, "a full table doubles on the next key");
        assert_eq!(table_doubled(100_000, 131_073), Some(131_072));
        assert_eq!(table_doubled(131_072, 131_073), Some(131_072));
        assert_eq!(table_doubled(131_073, 262_144), None);
        assert_eq!(table_doubled(530_000, 900_000), None);
        assert_eq!(table_doubled(0, 5), Some(4));
        assert_eq!(table_doubled(0, 196_470), Some(131_072), "the largest of several");
        assert_eq!(table_doubled(1_000, 262_145), Some(262_144));
        assert_eq!(table_doubled(500, 400), None, "keys that expired double nothing");
    }

    #[test]
    fn the_key_count_is_read_from_database_zero() {
        let info = "# Keyspace\r\ndb0:keys=262145,expires=262100,avg_ttl=3599000\r\ndb1:keys=7,expires=0\r\n";
        assert_eq!(keyspace_keys(info), 262_145);
        assert_eq!(keyspace_keys("# Keyspace\r\n"), 0);
    }
}

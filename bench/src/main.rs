//! `gameye-bench`: starts its own redis-server, gameye-emulator and gameye-bridge on loopback ports,
//! drives load and prints the results as Markdown (progress goes to stderr).
//!
//! Scenarios (all by default):
//! 1. `raw`: closed loop, C workers `POST /session` straight at the emulator.
//! 2. `bridge`: closed loop, C workers `POST /v1/matches` (distinct matches) at the bridge; its ratio to (1).
//! 3. `latency`: open loop at a fraction (½) of the bridge's rate from (2), at the bridge and then at the
//!    emulator; the difference of the p99s is the latency the bridge adds.
//! 4. `slow`: the emulator answers `POST /session` after 500 ms; N (5,000) placements released together.
//!
//! Not in `all`: `nats` (the NATS door), `seats` (backfill and join/leave against Redis, on a
//! stack of its own so earlier scenarios' sessions do not count among the backfill candidates) and
//! `floor` (raw, then the `gameye-bench-floor` yardstick with 0 and 2 Redis round trips, then bridge:
//! how much of the raw rate the least possible placement service reaches on this machine).

mod cpu;
mod load;
mod nats;
mod procs;
mod report;
mod seats;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};

use cpu::CpuWatch;
use load::Endpoint;
use procs::{BRIDGE_TOKEN, BridgeTimes, EMULATOR_TOKEN, Stack, StackOptions};
use report::{Machine, Report};

/// Benchmarks gameye-bridge against the Gameye emulator (all traffic on 127.0.0.1).
#[derive(Parser, Debug)]
#[command(name = "gameye-bench", version)]
struct Cli {
    /// Which scenario to run.
    #[arg(value_enum, default_value_t = Scenario::All)]
    scenario: Scenario,
    /// Closed-loop workers (scenarios raw, bridge and seats).
    #[arg(short, long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    concurrency: u16,
    /// Measured time of each phase.
    #[arg(short, long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured warm-up before each phase.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Fixed rate (requests/s) of the latency scenario; default: --load-fraction of the bridge's rate
    /// measured in this run (the bridge scenario runs first when needed).
    #[arg(long)]
    rate: Option<f64>,
    /// Fraction of the bridge's measured maximum rate used by the latency scenario (and of each
    /// closed-loop rate by the seats scenario's open loops).
    #[arg(long, default_value_t = 0.5)]
    load_fraction: f64,
    /// Most requests in flight in the open loop (the generator waits beyond it; latency still counts
    /// from the scheduled time).
    #[arg(long, default_value_t = 512)]
    max_in_flight: usize,
    /// Placements released together in the slow scenario.
    #[arg(long, default_value_t = 5000)]
    burst: usize,
    /// Delay the emulator adds to POST /session in the slow scenario.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    slow_delay: Duration,
    /// Client timeout of each request (the slow scenario's included).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    /// Host machines of the emulator's location (5,000 sessions each).
    #[arg(long, default_value_t = 400)]
    emulator_hosts: usize,
    /// Directory of gameye-bridge and gameye-emulator (default: next to this binary, else target/release).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The redis-server binary.
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
    /// The nats-server binary (the `nats` scenario).
    #[arg(long, default_value = "/usr/sbin/nats-server")]
    nats_server: PathBuf,
    /// Sessions the seats scenario places before measuring (every backfill considers them all).
    #[arg(long, default_value_t = 100)]
    seat_sessions: usize,
    /// Seats of each of those sessions (the `max_players` of its match).
    #[arg(long, default_value_t = 1000)]
    seat_capacity: u32,
    /// Keys written into Redis before the bridge starts, so the run meets a Redis that has grown
    /// already: its key tables double (rehashing every key, on its one thread) each time the key count
    /// passes a power of two, and a run adds hundreds of thousands of keys. 1100000 leaves room for
    /// about 1,000,000 more before the next doubling (filling takes ~5 s); 0 starts with an empty
    /// Redis. The report says when a phase met a doubling.
    #[arg(long, default_value_t = 1_100_000)]
    redis_filler: u64,
    /// Tokio worker threads of the floor yardstick (scenario `floor`); 0: one per core, as the bridge's default.
    #[arg(long, default_value_t = 0)]
    floor_worker_threads: usize,
    /// The baseline bridge binary of scenario `compare` (e.g. a copy of target/release/gameye-bridge
    /// built from another commit).
    #[arg(long)]
    baseline_bridge: Option<PathBuf>,
    /// Pairs of phases of scenario `compare`.
    #[arg(long, default_value_t = 5)]
    pairs: usize,
    /// Keep the processes' logs (their directory is printed).
    #[arg(long)]
    keep_logs: bool,
    /// More environment for the bridge, `NAME=VALUE` (repeatable), e.g.
    /// `--bridge-env BRIDGE_RECONCILER__ENABLED=false`; shown in the report.
    #[arg(long = "bridge-env", value_parser = parse_env_pair)]
    bridge_env: Vec<(String, String)>,
}

fn parse_env_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("`{text}`: expected NAME=VALUE")),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Every scenario, in order.
    All,
    /// (1) Raw emulator rate.
    Raw,
    /// (2) Bridge rate (with the ratio to raw when raw runs too).
    Bridge,
    /// (3) Added latency at half load (runs bridge first unless --rate is given).
    Latency,
    /// (4) 5,000 placements at once against a slow Gameye.
    Slow,
    /// The NATS door: publish → assigned rate with 1 and 3 instances, and latency at half load
    /// (not part of `all`: it starts its own servers per instance count).
    Nats,
    /// (1), the least possible placement service (`gameye-bench-floor`) without and with its two Redis
    /// writes, then (2): what share of the raw rate any bridge could reach on this machine.
    Floor,
    /// Seats against Redis: backfill reservations/s and join+leave operations/s (closed loop), then
    /// p99 at half each rate (open loop); not part of `all`: it needs a stack of its own.
    Seats,
    /// The bridge built here against `--baseline-bridge` (another build of it) on one stack:
    /// `--pairs` pairs of closed-loop phases, one of each (the other paused), their order
    /// alternating; rates, CPU per placement and their ratios within pairs. Not part of `all`.
    Compare,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    validate(&cli)?;
    let nofile = raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(cli, nofile))
}

fn validate(cli: &Cli) -> Result<()> {
    if cli.duration.is_zero() || cli.duration > Duration::from_secs(600) {
        bail!("--duration must be within (0, 10 min]");
    }
    if cli.warmup > Duration::from_secs(60) {
        bail!("--warmup must be at most 1 min");
    }
    if cli.rate.is_some_and(|rate| !(rate > 0.0 && rate <= 1_000_000.0)) {
        bail!("--rate must be within (0, 1e6]");
    }
    if !(cli.load_fraction > 0.0 && cli.load_fraction <= 1.0) {
        bail!("--load-fraction must be within (0, 1]");
    }
    if cli.burst == 0 || cli.burst > 50_000 {
        bail!("--burst must be within 1..=50000");
    }
    if cli.max_in_flight == 0 || cli.max_in_flight > 50_000 {
        bail!("--max-in-flight must be within 1..=50000");
    }
    if cli.slow_delay > Duration::from_secs(30) {
        bail!("--slow-delay must be at most 30 s");
    }
    if cli.scenario == Scenario::Compare && cli.baseline_bridge.is_none() {
        bail!("scenario compare needs --baseline-bridge <another build of gameye-bridge>");
    }
    if cli.pairs == 0 || cli.pairs > 100 {
        bail!("--pairs must be within 1..=100");
    }
    if cli.seat_sessions == 0 || cli.seat_sessions > 10_000 {
        bail!("--seat-sessions must be within 1..=10000");
    }
    if cli.seat_capacity == 0 || cli.seat_capacity > 1_000_000 {
        bail!("--seat-capacity must be within 1..=1000000");
    }
    // Any one session can then hold every player in flight: seats never run out.
    let in_flight = cli.max_in_flight.max(usize::from(cli.concurrency));
    if cli.scenario == Scenario::Seats && (cli.seat_capacity as usize) < in_flight {
        bail!(
            "--seat-capacity must be at least --max-in-flight and --concurrency ({in_flight}), so seats never run out"
        );
    }
    Ok(())
}

/// Raises the soft limit of open files to the hard limit (children inherit it); returns (soft, hard).
fn raise_open_files_limit() -> (u64, u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return (0, 0);
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    (limit.rlim_cur, limit.rlim_max)
}

fn bin_dir(cli: &Cli) -> PathBuf {
    if let Some(dir) = &cli.bin_dir {
        return dir.clone();
    }
    let beside = std::env::current_exe().ok().and_then(|exe| exe.parent().map(PathBuf::from));
    match beside {
        Some(dir) if dir.join("gameye-bridge").is_file() => dir,
        _ => PathBuf::from("target/release"),
    }
}

/// An open-loop phase at `rate` with the run's settings, on a thread and with a client of its own
/// ([`load::on_own_thread`]).
async fn open_loop(cli: &Cli, endpoint: &Endpoint, rate: f64) -> Result<load::OpenStats> {
    let (endpoint, warmup, duration, in_flight) =
        (endpoint.clone(), cli.warmup, cli.duration, cli.max_in_flight);
    load::on_own_thread(in_flight, cli.request_timeout, move |http| async move {
        load::open_loop(&http, &endpoint, rate, warmup, duration, in_flight).await
    })
    .await
}

async fn run(cli: Cli, nofile: (u64, u64)) -> Result<()> {
    let scenario = cli.scenario;
    if scenario == Scenario::Nats {
        let report = nats::run(&nats::NatsBenchOptions {
            bin_dir: bin_dir(&cli),
            nats_server: cli.nats_server.clone(),
            redis_server: cli.redis_server.clone(),
            instances: vec![1, 3],
            window: usize::from(cli.concurrency),
            duration: cli.duration,
            warmup: cli.warmup,
            load_fraction: cli.load_fraction,
            bridge_concurrency: 64,
        })
        .await?;
        print!("{}", report.markdown());
        return Ok(());
    }
    if scenario == Scenario::Seats {
        return run_seats(&cli, nofile).await;
    }
    let run_raw = matches!(scenario, Scenario::All | Scenario::Raw | Scenario::Floor);
    let run_floor = scenario == Scenario::Floor;
    let run_bridge = matches!(scenario, Scenario::All | Scenario::Bridge | Scenario::Floor)
        || (scenario == Scenario::Latency && cli.rate.is_none());
    let run_latency = matches!(scenario, Scenario::All | Scenario::Latency | Scenario::Floor);
    let run_slow = matches!(scenario, Scenario::All | Scenario::Slow);
    let run_compare = scenario == Scenario::Compare;

    // Open files: the slow scenario's client holds `burst` connections, the bridge twice that.
    let needed = 2 * cli.burst as u64 + 1_000;
    if run_slow && nofile.0 < needed {
        eprintln!(
            "warning: open-files limit {} is below the {needed} the slow scenario needs (raise `ulimit -n` or lower --burst)",
            nofile.0
        );
    }

    let concurrency = usize::from(cli.concurrency);
    let mut bridge_env = vec![
        // Keep every connection the burst opens to Gameye (the default keeps 64 idle).
        ("BRIDGE_GAMEYE__POOL_MAX_IDLE".to_owned(), cli.burst.max(concurrency).to_string()),
    ];
    bridge_env.extend(cli.bridge_env.iter().cloned());
    let options = StackOptions {
        bin_dir: bin_dir(&cli),
        redis_server: cli.redis_server.clone(),
        emulator_hosts: cli.emulator_hosts,
        bridge_env: bridge_env.clone(),
        redis_filler: cli.redis_filler,
    };
    let http = load::client(cli.max_in_flight.max(concurrency), cli.request_timeout)?;

    eprintln!("starting redis-server, gameye-emulator and gameye-bridge from {}", options.bin_dir.display());
    let mut stack = Stack::start(&options, &http).await?;
    eprintln!(
        "emulator {}, bridge {}, logs in {}",
        stack.emulator_url,
        stack.bridge_url,
        stack.dir.path().display()
    );

    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let mut report = Report::new(command, Machine::detect(nofile), &cli_settings(&cli, &bridge_env, &stack));
    let outcome = tokio::select! {
        outcome = scenarios(&cli, &mut stack, &http, &mut report, [run_raw, run_floor, run_bridge, run_latency, run_slow, run_compare]) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let alive = stack.check_alive();
    let logs = stack.stop(cli.keep_logs || outcome.is_err()).await;
    if let Some(dir) = logs {
        eprintln!("process logs kept in {}", dir.display());
    }
    // Whatever was measured is printed, even when a later phase failed.
    if !report.is_empty() {
        print!("{}", report.markdown());
    }
    outcome?;
    alive.context("a process under test died during the run")?;
    Ok(())
}

/// Scenario `compare`: the baseline bridge beside the stack's own, each run alone in turn.
async fn compare(cli: &Cli, stack: &mut Stack, http: &reqwest::Client, report: &mut Report) -> Result<()> {
    let baseline_bin = cli.baseline_bridge.as_deref().context("--baseline-bridge")?;
    let mut baseline = stack.start_baseline_bridge(baseline_bin, http).await?;
    // Settle the start-up work of both (first reconciler scans) before measuring.
    settle().await;
    let concurrency = usize::from(cli.concurrency);
    for pair in 1..=cli.pairs {
        // Alternating which goes first cancels a steady drift within pairs.
        let order = if pair % 2 == 1 { [true, false] } else { [false, true] };
        for is_baseline in order {
            let name = if is_baseline { "baseline" } else { "candidate" };
            eprintln!("C{pair}. {name} bridge: {concurrency} workers for {:?}", cli.duration);
            let (paused, url, tracked) = if is_baseline {
                (stack.pause_bridge()?, baseline.url.clone(), stack.tracked_with("bridge", &baseline))
            } else {
                (baseline.pause()?, stack.bridge_url.clone(), stack.tracked())
            };
            let endpoint = Endpoint::Bridge {
                url,
                token: BRIDGE_TOKEN.to_owned(),
                prefix: format!("bench-compare-{pair}-{name}"),
            };
            let before = CpuWatch::start(&tracked);
            let stats = load::closed_loop(http, &endpoint, concurrency, cli.warmup, cli.duration).await;
            let cores = before.finish().ours();
            drop(paused);
            eprintln!("   {:.0}/s", stats.rate());
            report.compare.push(report::ComparePhase { pair, baseline: is_baseline, stats, cores });
            stack.check_alive()?;
            baseline.check_alive()?;
            settle().await;
        }
    }
    baseline.stop().await;
    Ok(())
}

fn cli_settings(cli: &Cli, bridge_env: &[(String, String)], stack: &Stack) -> Vec<String> {
    let mut settings = vec![
        format!(
            "closed loop: {} workers, {} measured after a {} warm-up",
            cli.concurrency,
            humantime::format_duration(cli.duration),
            humantime::format_duration(cli.warmup)
        ),
        format!(
            "open loop: {} of the bridge's rate{}, at most {} in flight",
            cli.load_fraction,
            cli.rate.map(|r| format!(" (fixed: {r}/s)")).unwrap_or_default(),
            cli.max_in_flight
        ),
        format!(
            "slow Gameye: {} placements at once, POST /session delayed {}, client timeout {}",
            cli.burst,
            humantime::format_duration(cli.slow_delay),
            humantime::format_duration(cli.request_timeout)
        ),
        format!(
            "emulator world: one location ({}) of {} hosts, capacity {} sessions, sessions running at once",
            load::LOCATION,
            cli.emulator_hosts,
            stack.emulator_capacity
        ),
    ];
    if cli.redis_filler > 0 {
        settings.push(format!(
            "Redis filled with {} keys (6 h to live) before the bridge started (`--redis-filler`)",
            cli.redis_filler
        ));
    }
    if cli.scenario == Scenario::Floor {
        settings.push(format!(
            "floor yardstick: worker threads {}",
            match cli.floor_worker_threads {
                0 => "one per core".to_owned(),
                n => n.to_string(),
            }
        ));
    }
    if let (Scenario::Compare, Some(baseline)) = (cli.scenario, &cli.baseline_bridge) {
        settings.push(format!(
            "compare: baseline `{}` against the bridge built here, {} pairs, the same settings for both",
            baseline.display(),
            cli.pairs
        ));
    }
    let env: Vec<String> = bridge_env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    settings.push(format!(
        "bridge: Redis store, Gameye = the emulator, log level warn, {} (other settings default)",
        env.join(" ")
    ));
    settings
}

async fn scenarios(
    cli: &Cli,
    stack: &mut Stack,
    http: &reqwest::Client,
    report: &mut Report,
    [run_raw, run_floor, run_bridge, run_latency, run_slow, run_compare]: [bool; 6],
) -> Result<()> {
    let concurrency = usize::from(cli.concurrency);
    let emulator = Endpoint::Emulator { url: stack.emulator_url.clone(), token: EMULATOR_TOKEN.to_owned() };
    let bridge_url = stack.bridge_url.clone();
    let bridge = |prefix: &str| Endpoint::Bridge {
        url: bridge_url.clone(),
        token: BRIDGE_TOKEN.to_owned(),
        prefix: format!("bench-{prefix}"),
    };

    let tracked = stack.tracked();
    let cpu = || CpuWatch::start(&tracked);

    if run_compare {
        compare(cli, stack, http, report).await?;
    }
    if run_raw {
        eprintln!("1. raw emulator: {concurrency} workers for {:?}", cli.duration);
        let before = cpu();
        let stats = load::closed_loop(http, &emulator, concurrency, cli.warmup, cli.duration).await;
        report.cpu("1", before.finish());
        eprintln!("   {:.0}/s", stats.rate());
        report.raw = Some(stats);
        stack.check_alive()?;
        settle().await;
    }
    if run_floor {
        if cli.redis_filler > 0 {
            stack.fill_floor_database(cli.redis_filler).await?;
        }
        // The bridge is paused: its background work would slow the yardstick.
        let paused = stack.pause_bridge()?;
        for (phase, round_trips) in [("F0", 0u8), ("F2", 2)] {
            eprintln!(
                "{phase}. floor, {round_trips} Redis round trips: {concurrency} workers for {:?}",
                cli.duration
            );
            let mut floor =
                stack.start_floor(&bin_dir(cli), round_trips, cli.floor_worker_threads, http).await?;
            let endpoint = Endpoint::Bridge {
                url: floor.url.clone(),
                token: BRIDGE_TOKEN.to_owned(),
                prefix: format!("bench-floor{round_trips}"),
            };
            let before = CpuWatch::start(&stack.tracked_with("floor", &floor));
            let stats = load::closed_loop(http, &endpoint, concurrency, cli.warmup, cli.duration).await;
            report.cpu(phase, before.finish());
            eprintln!("   {:.0}/s", stats.rate());
            let rate = cli.rate.unwrap_or(stats.rate() * cli.load_fraction);
            report.floor.push(report::Floor { phase, round_trips, stats });
            if round_trips == 2 && rate > 0.0 {
                settle().await;
                eprintln!(
                    "F2 added latency: open loop at {rate:.0}/s for {:?}, floor then emulator",
                    cli.duration
                );
                let before = CpuWatch::start(&stack.tracked_with("floor", &floor));
                let open = Endpoint::Bridge {
                    url: floor.url.clone(),
                    token: BRIDGE_TOKEN.to_owned(),
                    prefix: "bench-floor2-latency".to_owned(),
                };
                let through_floor = open_loop(cli, &open, rate).await?;
                report.cpu("F2a", before.finish());
                settle().await;
                let before = CpuWatch::start(&stack.tracked_with("floor", &floor));
                let direct = open_loop(cli, &emulator, rate).await?;
                report.cpu("F2b", before.finish());
                eprintln!(
                    "   p99 floor {:?}, emulator {:?}",
                    through_floor.stats.quantile(0.99),
                    direct.stats.quantile(0.99)
                );
                report.floor_latency =
                    Some(report::Latency { rate, bridge: through_floor, emulator: direct });
            }
            floor.check_alive()?;
            floor.stop().await;
            settle().await;
        }
        drop(paused);
        stack.check_alive()?;
    }
    if run_bridge {
        eprintln!("2. bridge: {concurrency} workers for {:?}", cli.duration);
        let (before, inside) = (cpu(), BridgeTimes::scrape(http, &bridge_url).await?);
        let keys = stack.redis_keys().await?;
        let stats = load::closed_loop(http, &bridge("rate"), concurrency, cli.warmup, cli.duration).await;
        report.cpu("2", before.finish());
        report.redis_keys("2", keys, stack.redis_keys().await?);
        report.bridge_side("2", inside.means_until(&BridgeTimes::scrape(http, &bridge_url).await?));
        eprintln!("   {:.0}/s", stats.rate());
        report.bridge = Some(stats);
        stack.check_alive()?;
        settle().await;
    }
    if run_latency {
        let rate = match (cli.rate, &report.bridge) {
            (Some(rate), _) => rate,
            (None, Some(bridge)) if bridge.rate() > 0.0 => bridge.rate() * cli.load_fraction,
            (None, bridge) => bail!(
                "the bridge placed nothing in the bridge scenario (errors: {}); no rate for the latency scenario",
                bridge.as_ref().map(|b| b.error_summary()).unwrap_or_default()
            ),
        };
        eprintln!("3. added latency: open loop at {rate:.0}/s for {:?}, bridge then emulator", cli.duration);
        let (before, inside) = (cpu(), BridgeTimes::scrape(http, &bridge_url).await?);
        let keys = stack.redis_keys().await?;
        let through_bridge = open_loop(cli, &bridge("latency"), rate).await?;
        report.cpu("3a", before.finish());
        report.redis_keys("3a", keys, stack.redis_keys().await?);
        report.bridge_side("3a", inside.means_until(&BridgeTimes::scrape(http, &bridge_url).await?));
        stack.check_alive()?;
        settle().await;
        // The reference is the emulator alone: the idle bridge's background work (a reconciler scan
        // of every session placed so far) would otherwise slow it, and flatter the difference.
        let paused = stack.pause_bridge()?;
        let before = cpu();
        let direct = open_loop(cli, &emulator, rate).await?;
        report.cpu("3b", before.finish());
        drop(paused);
        eprintln!(
            "   p99 bridge {:?}, emulator {:?}",
            through_bridge.stats.quantile(0.99),
            direct.stats.quantile(0.99)
        );
        report.latency = Some(report::Latency { rate, bridge: through_bridge, emulator: direct });
        stack.check_alive()?;
        settle().await;
    }
    if run_slow {
        eprintln!(
            "4. slow Gameye: {} placements at once, POST /session after {:?}",
            cli.burst, cli.slow_delay
        );
        let delay_ms = u64::try_from(cli.slow_delay.as_millis()).unwrap_or(u64::MAX);
        let rules =
            serde_json::json!([{ "operation": "session-run", "probability": 1.0, "delay_ms": delay_ms }]);
        procs::set_faults(http, &stack.emulator_url, Some(rules)).await?;
        // Its own client: one connection per request, all opened at once.
        let burst_client = load::client(cli.burst, cli.request_timeout)?;
        let (before, inside) = (cpu(), BridgeTimes::scrape(http, &bridge_url).await?);
        let keys = stack.redis_keys().await?;
        let stats = load::burst(&burst_client, &bridge("slow"), cli.burst).await;
        report.cpu("4", before.finish());
        report.redis_keys("4", keys, stack.redis_keys().await?);
        report.bridge_side("4", inside.means_until(&BridgeTimes::scrape(http, &bridge_url).await?));
        procs::set_faults(http, &stack.emulator_url, None).await?;
        eprintln!("   {} ok of {} in {:?}", stats.stats.ok, cli.burst, stats.stats.elapsed);
        report.slow = Some(report::Slow { count: cli.burst, delay: cli.slow_delay, stats });
        stack.check_alive()?;
    }
    Ok(())
}

/// The seats scenario on a stack of its own (no sessions from other scenarios).
async fn run_seats(cli: &Cli, nofile: (u64, u64)) -> Result<()> {
    let concurrency = usize::from(cli.concurrency);
    let in_flight = cli.max_in_flight.max(concurrency);
    // Joins and leaves tell Gameye too: keep as many connections to it as requests can be in flight.
    let mut bridge_env = vec![("BRIDGE_GAMEYE__POOL_MAX_IDLE".to_owned(), in_flight.to_string())];
    bridge_env.extend(cli.bridge_env.iter().cloned());
    let options = StackOptions {
        bin_dir: bin_dir(cli),
        redis_server: cli.redis_server.clone(),
        emulator_hosts: cli.emulator_hosts,
        bridge_env: bridge_env.clone(),
        redis_filler: cli.redis_filler,
    };
    let http = load::client(in_flight, cli.request_timeout)?;
    eprintln!("starting redis-server, gameye-emulator and gameye-bridge from {}", options.bin_dir.display());
    let mut stack = Stack::start(&options, &http).await?;
    eprintln!(
        "emulator {}, bridge {}, logs in {}",
        stack.emulator_url,
        stack.bridge_url,
        stack.dir.path().display()
    );

    let env: Vec<String> = bridge_env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let settings = vec![
        format!(
            "closed loop: {} workers, {} measured after a {} warm-up",
            cli.concurrency,
            humantime::format_duration(cli.duration),
            humantime::format_duration(cli.warmup)
        ),
        format!(
            "open loop: {} of the closed loop's rate, at most {} cycles (backfill + release, join + leave) in flight",
            cli.load_fraction, cli.max_in_flight
        ),
        format!(
            "seats: {} sessions placed through `POST /v1/matches` with `max_players` = {}, each match's own \
             player's reserved seat released before measuring (all start empty); reservation TTL the default",
            cli.seat_sessions, cli.seat_capacity
        ),
        format!(
            "emulator world: one location ({}) of {} hosts, capacity {} sessions, sessions running at once",
            load::LOCATION,
            cli.emulator_hosts,
            stack.emulator_capacity
        ),
        format!(
            "bridge: Redis store, Gameye = the emulator, log level warn, {} (other settings default, the \
             session reconciler included)",
            env.join(" ")
        ),
    ];
    let seat_options = seats::SeatOptions {
        sessions: cli.seat_sessions,
        capacity: cli.seat_capacity,
        workers: concurrency,
        warmup: cli.warmup,
        duration: cli.duration,
        load_fraction: cli.load_fraction,
        max_in_flight: cli.max_in_flight,
        request_timeout: cli.request_timeout,
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let machine = Machine::detect(nofile);
    let mut report = seats::SeatReport::default();
    let outcome = tokio::select! {
        outcome = seats::run(&seat_options, &mut stack, &http, &mut report) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let alive = stack.check_alive();
    let logs = stack.stop(cli.keep_logs || outcome.is_err()).await;
    if let Some(dir) = logs {
        eprintln!("process logs kept in {}", dir.display());
    }
    if !report.is_empty() {
        print!("{}", report.markdown(&command, &machine, &settings));
    }
    outcome?;
    alive.context("a process under test died during the run")?;
    Ok(())
}

/// A short pause between phases, so one phase's stragglers do not land in the next.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

//! The Markdown results block.

use std::fmt::Write as _;
use std::time::Duration;

use crate::cpu::{CpuUsage, OutsideLoad, OwnLoad};
use crate::load::{BurstStats, OpenStats, Stats};

/// The bridge should sustain at least this share of the raw emulator rate.
const RATE_TARGET: f64 = 0.40;
/// The bridge should add less than this to the p99 at half load.
const ADDED_LATENCY_TARGET: Duration = Duration::from_millis(2);

/// Where the numbers were taken.
pub struct Machine {
    pub date: String,
    pub cpus: usize,
    pub model: String,
    /// Open-files limit (soft, hard) of the bench and its children.
    pub nofile: (u64, u64),
    /// /proc/loadavg's 1, 5 and 15 minute averages when the bench started.
    pub loadavg: String,
}

impl Machine {
    pub fn detect(nofile: (u64, u64)) -> Self {
        let date = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| "unknown".to_owned());
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let loadavg = std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        Self { date, cpus, model, nofile, loadavg }
    }
}

pub struct Latency {
    pub rate: f64,
    pub bridge: OpenStats,
    pub emulator: OpenStats,
}

pub struct Slow {
    pub count: usize,
    pub delay: Duration,
    pub stats: BurstStats,
}

/// A closed-loop phase of the `gameye-bench-floor` yardstick.
pub struct Floor {
    pub phase: &'static str,
    pub round_trips: u8,
    pub stats: Stats,
}

/// A closed-loop phase of scenario `compare`: one of the two bridge builds, in one pair.
pub struct ComparePhase {
    /// From 1.
    pub pair: usize,
    /// The `--baseline-bridge` build (else the one built here).
    pub baseline: bool,
    pub stats: Stats,
    /// Cores used meanwhile by the bench, the running bridge, the emulator and Redis, plus irq.
    pub cores: f64,
}

impl ComparePhase {
    fn cpu_per_request(&self) -> Option<f64> {
        let rate = self.stats.rate();
        (rate > 0.0).then(|| self.cores / rate)
    }
}

pub struct Report {
    command: String,
    machine: Machine,
    settings: Vec<String>,
    pub raw: Option<Stats>,
    pub bridge: Option<Stats>,
    pub latency: Option<Latency>,
    pub slow: Option<Slow>,
    pub floor: Vec<Floor>,
    /// The floor with its two Redis writes in an open loop (the pair's `bridge` side), and the emulator alone.
    pub floor_latency: Option<Latency>,
    /// Scenario `compare`, in the order run.
    pub compare: Vec<ComparePhase>,
    /// Per bridge phase: mean Gameye `session-run` call and mean placement duration, from the bridge's metrics.
    bridge_side: Vec<(&'static str, Duration, Duration)>,
    /// Per phase: cores used by each process and by the rest of the machine.
    cpu: Vec<(&'static str, CpuUsage)>,
    /// Per phase: Redis's key count before and after.
    redis_keys: Vec<(&'static str, u64, u64)>,
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn signed_ms(later: Duration, earlier: Duration) -> String {
    let diff = later.as_secs_f64() - earlier.as_secs_f64();
    format!("{:+.2} ms", diff * 1000.0)
}

fn verdict(met: bool) -> &'static str {
    if met { "**met**" } else { "**missed**" }
}

impl Report {
    pub fn new(command: String, machine: Machine, settings: &[String]) -> Self {
        Self {
            command,
            machine,
            settings: settings.to_vec(),
            raw: None,
            bridge: None,
            latency: None,
            slow: None,
            floor: Vec::new(),
            floor_latency: None,
            compare: Vec::new(),
            bridge_side: Vec::new(),
            cpu: Vec::new(),
            redis_keys: Vec::new(),
        }
    }

    pub fn bridge_side(&mut self, phase: &'static str, (gameye, placement): (Duration, Duration)) {
        self.bridge_side.push((phase, gameye, placement));
    }

    pub fn redis_keys(&mut self, phase: &'static str, before: u64, after: u64) {
        self.redis_keys.push((phase, before, after));
    }

    pub fn cpu(&mut self, phase: &'static str, usage: CpuUsage) {
        self.cpu.push((phase, usage));
    }

    /// Successful requests per second of a phase.
    fn phase_rate(&self, phase: &str) -> Option<f64> {
        match phase {
            "1" => self.raw.as_ref().map(Stats::rate),
            "2" => self.bridge.as_ref().map(Stats::rate),
            "3a" => self.latency.as_ref().map(|l| l.bridge.stats.rate()),
            "3b" => self.latency.as_ref().map(|l| l.emulator.stats.rate()),
            "F2a" => self.floor_latency.as_ref().map(|l| l.bridge.stats.rate()),
            "F2b" => self.floor_latency.as_ref().map(|l| l.emulator.stats.rate()),
            _ => self.floor.iter().find(|f| f.phase == phase).map(|f| f.stats.rate()),
        }
    }

    /// CPU per request of phase 1 over phase 2: the bridge's share of the raw rate if each phase had
    /// the machine to itself (other processes' load cancels out).
    fn cpu_normalised_ratio(&self) -> Option<f64> {
        Some(self.cpu_per_request("1")? / self.cpu_per_request("2")?)
    }

    /// CPU seconds (ours + irq) per successful request of a phase.
    fn cpu_per_request(&self, phase: &str) -> Option<f64> {
        let usage = self.cpu.iter().find(|(p, _)| *p == phase).map(|(_, u)| u.ours())?;
        let rate = self.phase_rate(phase).filter(|r| *r > 0.0)?;
        Some(usage / rate)
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_none()
            && self.bridge.is_none()
            && self.latency.is_none()
            && self.slow.is_none()
            && self.floor.is_empty()
            && self.compare.is_empty()
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(out, "### gameye-bench results\n");
        let _ = writeln!(out, "- command: `{}`", self.command);
        let _ = writeln!(out, "- date: {}", m.date);
        let _ = writeln!(
            out,
            "- machine: {} CPUs ({}), open files {} (hard {}); load generator, bridge, emulator and Redis share them; \
             load average at start {}",
            m.cpus, m.model, m.nofile.0, m.nofile.1, m.loadavg
        );
        for setting in &self.settings {
            let _ = writeln!(out, "- {setting}");
        }
        let _ = writeln!(out);
        // Scenario `compare` alone has its own table.
        if self.raw.is_some() || self.bridge.is_some() || self.latency.is_some() || self.slow.is_some() {
            let _ = writeln!(out, "| scenario | ok | errors | rate | p50 | p99 | max | target | result |");
            let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |");
        }
        let row = |out: &mut String, name: &str, s: &Stats, rate: String, target: &str, result: &str| {
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {rate} | {} | {} | {} | {target} | {result} |",
                s.ok,
                s.error_count(),
                ms(s.quantile(0.5)),
                ms(s.quantile(0.99)),
                ms(s.max())
            );
        };
        if let Some(raw) = &self.raw {
            row(
                &mut out,
                "1. emulator `POST /session`, closed loop",
                raw,
                format!("{:.0}/s", raw.rate()),
                "—",
                "—",
            );
        }
        for floor in &self.floor {
            let name = match floor.round_trips {
                0 => format!("{}. floor: token, decode, Gameye call, answer; closed loop", floor.phase),
                n => format!("{}. floor + {n} Redis round trips (claim, record); closed loop", floor.phase),
            };
            let rate = match &self.raw {
                Some(raw) if raw.rate() > 0.0 => {
                    format!(
                        "{:.0}/s ({:.1}% of 1)",
                        floor.stats.rate(),
                        floor.stats.rate() / raw.rate() * 100.0
                    )
                }
                _ => format!("{:.0}/s", floor.stats.rate()),
            };
            row(&mut out, &name, &floor.stats, rate, "", "");
            if let (2, Some(latency)) = (floor.round_trips, &self.floor_latency) {
                let rate = format!("{:.0}/s", latency.rate);
                row(
                    &mut out,
                    "F2a. floor + 2 Redis round trips, open loop",
                    &latency.bridge.stats,
                    rate.clone(),
                    "",
                    "",
                );
                row(&mut out, "F2b. emulator, open loop (floor idle)", &latency.emulator.stats, rate, "", "");
                let (f, e) = (&latency.bridge.stats, &latency.emulator.stats);
                let _ = writeln!(
                    out,
                    "| F2. added latency (F2a − F2b) | | | | {} | {} | | | |",
                    signed_ms(f.quantile(0.5), e.quantile(0.5)),
                    signed_ms(f.quantile(0.99), e.quantile(0.99)),
                );
            }
        }
        if let Some(bridge) = &self.bridge {
            let rate = format!("{:.0}/s", bridge.rate());
            match &self.raw {
                Some(raw) if raw.rate() > 0.0 => {
                    let ratio = bridge.rate() / raw.rate();
                    row(
                        &mut out,
                        "2. bridge `POST /v1/matches`, closed loop",
                        bridge,
                        format!("{rate} ({:.1}% of 1)", ratio * 100.0),
                        "≥ 40% of 1",
                        verdict(ratio >= RATE_TARGET),
                    );
                }
                _ => row(
                    &mut out,
                    "2. bridge `POST /v1/matches`, closed loop",
                    bridge,
                    rate,
                    "≥ 40% of 1",
                    "raw not run",
                ),
            }
        }
        if let Some(latency) = &self.latency {
            let rate = format!("{:.0}/s", latency.rate);
            row(&mut out, "3a. bridge, open loop", &latency.bridge.stats, rate.clone(), "", "");
            row(&mut out, "3b. emulator, open loop (bridge paused)", &latency.emulator.stats, rate, "", "");
            let (b, e) = (&latency.bridge.stats, &latency.emulator.stats);
            let added = b.quantile(0.99).saturating_sub(e.quantile(0.99));
            let _ = writeln!(
                out,
                "| 3. added latency (3a − 3b) | | | | {} | {} | | p99 < 2 ms | {} |",
                signed_ms(b.quantile(0.5), e.quantile(0.5)),
                signed_ms(b.quantile(0.99), e.quantile(0.99)),
                // Through the bridge cannot be faster than the emulator alone: a negative difference
                // means the reference phase met a stall, and says nothing about the bridge.
                if e.quantile(0.99) > b.quantile(0.99) {
                    "**inconclusive** (3b's tail above 3a's)"
                } else {
                    verdict(added < ADDED_LATENCY_TARGET && b.error_count() == 0)
                }
            );
        }
        if let Some(slow) = &self.slow {
            let s = &slow.stats.stats;
            row(
                &mut out,
                &format!(
                    "4. bridge, {} at once, Gameye +{}",
                    slow.count,
                    humantime::format_duration(slow.delay)
                ),
                s,
                format!("all in {:.2} s", s.elapsed.as_secs_f64()),
                &format!("all {} succeed", slow.count),
                verdict(s.ok == slow.count as u64),
            );
        }
        let _ = writeln!(out);
        if let Some(ratio) = self.cpu_normalised_ratio() {
            let _ = writeln!(
                out,
                "CPU-normalised bridge/raw ratio (CPU per request of 1 ÷ that of 2, so other load cancels out): \
                 {:.1}%\n",
                ratio * 100.0
            );
        }
        for floor in &self.floor {
            if let (Some(raw), Some(this)) = (self.cpu_per_request("1"), self.cpu_per_request(floor.phase)) {
                let _ = writeln!(
                    out,
                    "CPU-normalised {}/raw ratio: {:.1}% ({:.0} µs of CPU per request against {:.0})\n",
                    floor.phase,
                    raw / this * 100.0,
                    this * 1e6,
                    raw * 1e6
                );
            }
        }
        self.compare_markdown(&mut out);
        self.details(&mut out);
        out
    }

    /// Scenario `compare`: each pair's rates and CPU per placement, and the candidate's ratios to the
    /// baseline within pairs (drift of the machine between pairs cancels out of them).
    fn compare_markdown(&self, out: &mut String) {
        let pairs: Vec<(&ComparePhase, &ComparePhase)> =
            (1..=self.compare.iter().map(|p| p.pair).max().unwrap_or(0))
                .filter_map(|pair| {
                    let side =
                        |baseline| self.compare.iter().find(|p| p.pair == pair && p.baseline == baseline);
                    Some((side(true)?, side(false)?))
                })
                .collect();
        if pairs.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "Compare (`--baseline-bridge` = baseline, the bridge built here = candidate; each pair's order alternates):\n"
        );
        let _ = writeln!(
            out,
            "| pair | baseline rate | candidate rate | rate ratio | baseline CPU per placement | candidate CPU per placement | CPU ratio | errors |"
        );
        let _ = writeln!(out, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        let mut rate_ratios = Vec::new();
        let mut cpu_ratios = Vec::new();
        let micros = |cpu: Option<f64>| cpu.map_or("—".to_owned(), |c| format!("{:.0} µs", c * 1e6));
        for (baseline, candidate) in &pairs {
            let rate_ratio = candidate.stats.rate() / baseline.stats.rate();
            let cpu_ratio = candidate.cpu_per_request().zip(baseline.cpu_per_request()).map(|(c, b)| c / b);
            if rate_ratio.is_finite() {
                rate_ratios.push(rate_ratio);
            }
            cpu_ratios.extend(cpu_ratio);
            let _ = writeln!(
                out,
                "| {} | {:.0}/s | {:.0}/s | {:.3} | {} | {} | {} | {} |",
                baseline.pair,
                baseline.stats.rate(),
                candidate.stats.rate(),
                rate_ratio,
                micros(baseline.cpu_per_request()),
                micros(candidate.cpu_per_request()),
                cpu_ratio.map_or("—".to_owned(), |r| format!("{r:.3}")),
                baseline.stats.error_count() + candidate.stats.error_count(),
            );
        }
        let summary = |ratios: &[f64]| {
            if ratios.is_empty() {
                return "—".to_owned();
            }
            let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
            let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let max = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let above = ratios.iter().filter(|r| **r > 1.0).count();
            format!("mean {mean:.3} (range {min:.3}–{max:.3}; above 1 in {above} of {})", ratios.len())
        };
        let _ = writeln!(
            out,
            "\ncandidate ÷ baseline within pairs: rate {}; CPU per placement {}\n",
            summary(&rate_ratios),
            summary(&cpu_ratios)
        );
    }

    fn details(&self, out: &mut String) {
        let _ = writeln!(out, "Details:");
        if let Some(raw) = &self.raw {
            let _ = writeln!(out, "- 1: errors: {}", raw.error_summary());
        }
        for floor in &self.floor {
            let _ = writeln!(out, "- {}: errors: {}", floor.phase, floor.stats.error_summary());
        }
        if let Some(bridge) = &self.bridge {
            let _ = writeln!(out, "- 2: errors: {}", bridge.error_summary());
        }
        let open_loops = self
            .floor_latency
            .iter()
            .flat_map(|l| [("F2a (floor)", &l.bridge), ("F2b (emulator)", &l.emulator)])
            .chain(
                self.latency
                    .iter()
                    .flat_map(|l| [("3a (bridge)", &l.bridge), ("3b (emulator)", &l.emulator)]),
            );
        for (name, o) in open_loops {
            let _ = writeln!(
                out,
                "- {name}: {} scheduled, {} not sent; errors: {}; latency from the scheduled time p50 {} / p99 {}; \
                 from the actual send p50 {} / p99 {}; send lag behind schedule p50 {} / p99 {}",
                o.scheduled,
                o.not_sent,
                o.stats.error_summary(),
                ms(o.stats.quantile(0.5)),
                ms(o.stats.quantile(0.99)),
                ms(o.service_quantile(0.5)),
                ms(o.service_quantile(0.99)),
                ms(o.lag_quantile(0.5)),
                ms(o.lag_quantile(0.99)),
            );
            // The phase's own key ("3a" of "3a (bridge)"), under which its CPU use was recorded.
            let phase = name.split(' ').next().unwrap_or(name);
            let usage = self.cpu.iter().find(|(p, _)| *p == phase).map(|(_, u)| u);
            let (outside, own) = usage.map_or((&[][..], &[][..]), |u| (&u.outside[..], &u.own[..]));
            tail_windows(out, name, o, outside, own);
        }
        if let Some(slow) = &self.slow {
            let s = &slow.stats.stats;
            let _ = writeln!(
                out,
                "- 4: {} of {} placed, {} distinct sessions; errors/timeouts: {}; release to last answer {:.2} s; \
                 latency min {} / p10 {} / p50 {} / p90 {} / max {}",
                s.ok,
                slow.count,
                slow.stats.distinct_sessions,
                s.error_summary(),
                s.elapsed.as_secs_f64(),
                ms(s.quantile(0.0)),
                ms(s.quantile(0.1)),
                ms(s.quantile(0.5)),
                ms(s.quantile(0.9)),
                ms(s.max()),
            );
        }
        for (phase, gameye, placement) in &self.bridge_side {
            let _ = writeln!(
                out,
                "- {phase}, inside the bridge (its /metrics, means): Gameye `POST /session` call {}, \
                 placement after its claim (choose, Gameye call, record the outcome) {}",
                ms(*gameye),
                ms(*placement)
            );
        }
        for (phase, usage) in &self.cpu {
            let per_request = self
                .phase_rate(phase)
                .filter(|rate| *rate > 0.0)
                .map(|rate| format!("; {:.0} µs of CPU per request (ours + irq)", usage.ours() / rate * 1e6))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "- {phase}, CPU cores used on average (of {}): {}{per_request}",
                self.machine.cpus,
                usage.summary()
            );
        }
        for &(phase, before, after) in &self.redis_keys {
            let doubled = crate::procs::table_doubled(before, after)
                .map(|size| {
                    format!(
                        " — **its key tables doubled during this phase or its warm-up** (past {size} keys: a rehash of every key on \
                         Redis's one thread; see bench/README, `--redis-filler`)"
                    )
                })
                .unwrap_or_default();
            let _ = writeln!(out, "- {phase}, Redis keys {before} → {after}{doubled}");
        }
    }
}

/// Where an open-loop phase's tail sits: the three 250 ms windows (by scheduled time) holding the
/// most requests slower than its p99, as one detail line (none when it kept no timeline). Each
/// names the outside load around it, when the phase's CPU watch saw some (`outside`), and the most
/// each of the bench's own processes used around it (`own`).
pub fn tail_windows(out: &mut String, name: &str, o: &OpenStats, outside: &[OutsideLoad], own: &[OwnLoad]) {
    let p99 = o.stats.quantile(0.99);
    let width = Duration::from_millis(250);
    let windows: Vec<String> = o
        .slow_windows(p99, width, 3)
        .into_iter()
        .map(|(at, slow, slowest)| {
            let from = o.measured_from + at;
            // A request scheduled in the window waited for whatever ran from its schedule until its
            // answer: the slowest one's latency past the window's end.
            let until = from + width + slowest;
            let ours = listed("; ours at most ", &OwnLoad::most_within(own, from, until));
            let load = OutsideLoad::most_within(outside, from, until)
                .map(|load| {
                    format!("; outside load {:.2} cores{}", load.cores, listed(": ", &load.processes))
                })
                .unwrap_or_default();
            format!(
                "+{:.2} s ({}): {slow} (max {}{load}{ours})",
                at.as_secs_f64(),
                utc_time_of_day(from),
                ms(slowest)
            )
        })
        .collect();
    if !windows.is_empty() {
        let _ = writeln!(
            out,
            "- {name}, where its tail sits: requests slower than its p99 by 250 ms window of \
             scheduled time (from the measured start; UTC), busiest first: {}",
            windows.join(", ")
        );
    }
}

/// `lead` then the processes with the cores each used (`bridge 0.82, redis 0.35`); nothing for none.
fn listed<N: std::fmt::Display>(lead: &str, processes: &[(N, f64)]) -> String {
    if processes.is_empty() {
        return String::new();
    }
    let each: Vec<String> = processes.iter().map(|(name, cores)| format!("{name} {cores:.2}")).collect();
    format!("{lead}{}", each.join(", "))
}

/// `HH:MM:SS.mmmZ`: to find a window in the processes' logs or a `perf` profile of the run.
fn utc_time_of_day(at: std::time::SystemTime) -> String {
    let at = time::OffsetDateTime::from(at);
    format!("{:02}:{:02}:{:02}.{:03}Z", at.hour(), at.minute(), at.second(), at.millisecond())
}

/// The block's title and its "where and how" list (command, date, machine, settings), as
/// [`Report::markdown`] writes them; for scenarios that print their own tables.
pub fn preamble(title: &str, command: &str, machine: &Machine, settings: &[String]) -> String {
    let mut out = String::new();
    let m = machine;
    let _ = writeln!(out, "### {title}\n");
    let _ = writeln!(out, "- command: `{command}`");
    let _ = writeln!(out, "- date: {}", m.date);
    let _ = writeln!(
        out,
        "- machine: {} CPUs ({}), open files {} (hard {}); load generator, bridge, emulator and Redis share them; \
         load average at start {}",
        m.cpus, m.model, m.nofile.0, m.nofile.1, m.loadavg
    );
    for setting in settings {
        let _ = writeln!(out, "- {setting}");
    }
    let _ = writeln!(out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(ok: u64, seconds: u64) -> Stats {
        let mut stats = Stats::new();
        for _ in 0..ok {
            stats.record(&Ok::<(), String>(()), Duration::from_millis(1));
        }
        stats.elapsed = Duration::from_secs(seconds);
        stats
    }

    fn machine() -> Machine {
        Machine { date: "now".into(), cpus: 2, model: "test".into(), nofile: (1, 1), loadavg: String::new() }
    }

    #[test]
    fn a_tail_window_names_the_load_around_it_and_only_that() {
        let start = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_623_188);
        let ms = Duration::from_millis;
        let mut stats = Stats::new();
        let mut timeline = Vec::new();
        // 997 fast requests spread over 10 s, and 3 slow ones scheduled at 500-520 ms.
        for n in 0..997u64 {
            stats.record(&Ok::<(), String>(()), ms(1));
            timeline.push((ms(n * 10), ms(1)));
        }
        for n in 0..3u64 {
            stats.record(&Ok::<(), String>(()), ms(30));
            timeline.push((ms(500 + n * 10), ms(30)));
        }
        let open = OpenStats {
            stats,
            service: crate::load::histogram(),
            lag: crate::load::histogram(),
            scheduled: 1_000,
            not_sent: 0,
            timeline,
            measured_from: start,
        };
        let load = |from: u64, cores: f64| OutsideLoad {
            from: start + ms(from),
            to: start + ms(from + 200),
            cores,
            processes: vec![("beam.smp".to_owned(), cores - 0.1)],
        };
        let mut out = String::new();
        tail_windows(&mut out, "3a (bridge)", &open, &[load(0, 0.3), load(600, 0.74), load(2_000, 0.9)], &[]);
        assert!(
            out.contains("+0.50 s (05:59:48.500Z): 3 (max 30.00 ms; outside load 0.74 cores: beam.smp 0.64)"),
            "{out}"
        );

        let mut out = String::new();
        tail_windows(&mut out, "3a (bridge)", &open, &[load(0, 0.3), load(2_000, 0.9)], &[]);
        assert!(out.contains("+0.50 s (05:59:48.500Z): 3 (max 30.00 ms)"), "{out}");

        // The bench's own processes: per process the most of any window around the tail window.
        let own = |from: u64, bridge: f64, redis: f64| OwnLoad {
            from: start + ms(from),
            to: start + ms(from + 200),
            processes: vec![("bridge", bridge), ("redis", redis), ("irq", 0.1)],
        };
        let mut out = String::new();
        tail_windows(
            &mut out,
            "3a (bridge)",
            &open,
            &[],
            &[own(0, 1.9, 0.1), own(400, 0.9, 0.2), own(600, 0.5, 1.0)],
        );
        assert!(
            out.contains(
                "+0.50 s (05:59:48.500Z): 3 (max 30.00 ms; ours at most bridge 0.90, redis 1.00, irq 0.10)"
            ),
            "{out}"
        );
    }

    #[test]
    fn a_floor_phase_is_reported_as_its_share_of_the_raw_rate() {
        let mut report = Report::new("bench floor".into(), machine(), &[]);
        report.raw = Some(stats(400, 1));
        report.floor.push(Floor { phase: "F2", round_trips: 2, stats: stats(100, 1) });
        let markdown = report.markdown();
        assert!(
            markdown.contains("| F2. floor + 2 Redis round trips (claim, record); closed loop | 100 | 0 | 100/s (25.0% of 1) |"),
            "{markdown}"
        );
        assert!(markdown.contains("- F2: errors: none"), "{markdown}");
        assert!(!report.is_empty());
    }

    #[test]
    fn compare_reports_the_ratios_within_pairs() {
        let mut report = Report::new("bench compare".into(), machine(), &[]);
        // Pair 1: candidate 10 % faster and 20 % cheaper; pair 2: 5 % slower, 4 % cheaper.
        for (pair, baseline, ok, cores) in
            [(1, true, 1000, 1.0), (1, false, 1100, 0.88), (2, false, 950, 1.0), (2, true, 1000, 1.1)]
        {
            report.compare.push(ComparePhase { pair, baseline, stats: stats(ok, 1), cores });
        }
        let markdown = report.markdown();
        assert!(
            markdown.contains("| 1 | 1000/s | 1100/s | 1.100 | 1000 µs | 800 µs | 0.800 | 0 |"),
            "{markdown}"
        );
        assert!(
            markdown.contains("| 2 | 1000/s | 950/s | 0.950 | 1100 µs | 1053 µs | 0.957 | 0 |"),
            "{markdown}"
        );
        assert!(
            markdown.contains(
                "rate mean 1.025 (range 0.950–1.100; above 1 in 1 of 2); CPU per placement mean 0.878 (range 0.800–0.957; above 1 in 0 of 2)"
            ),
            "{markdown}"
        );
        assert!(!report.is_empty());
        assert!(!markdown.contains("| scenario |"), "no empty scenario table: {markdown}");
    }
}

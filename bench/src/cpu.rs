//! Where the CPU went during a phase: each process's user+system time from `/proc/<pid>/stat`, and
//! the whole machine's busy time from `/proc/stat` (so load from outside the bench shows up too).

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// A process to account for: a name and a pid (`None`: this process).
pub type Tracked = (&'static str, Option<u32>);

/// CPU time counters at one moment.
#[derive(Clone, Debug)]
pub struct CpuSnapshot {
    at: Instant,
    /// Per tracked process, clock ticks of user+system time.
    processes: Vec<(&'static str, u64)>,
    /// Machine-wide busy ticks (every CPU), and of those, interrupt and softirq ticks (loopback
    /// networking is largely softirq work that no process is charged for).
    busy: u64,
    irq: u64,
    steal: u64,
}

/// Cores used on average during a phase, per process and by everything else on the machine.
#[derive(Clone, Debug)]
pub struct CpuUsage {
    pub processes: Vec<(&'static str, f64)>,
    /// Interrupt and softirq time (mostly the loopback network stack).
    pub irq: f64,
    /// Everything else: other processes on the machine.
    pub other: f64,
    /// The most cores everything else used in one [`WATCH_WINDOW`] of the phase (as `other` when
    /// the phase was not watched): a short burst from another process — a service spawning a
    /// program every minute — barely moves the average but stalls a 2-core machine for its length.
    /// Its noise floor is ~0.1–0.15 cores: counters of 10 ms ticks read at slightly different moments.
    pub other_peak: f64,
    /// When that window was and what it held (watched phases only).
    pub peak: Option<OtherPeak>,
    /// Every window in which everything else used at least [`OUTSIDE_NOISE`] cores (watched phases
    /// only), so a tail window of slow requests can be checked for outside load.
    pub outside: Vec<OutsideLoad>,
    /// Every window's use by the bench's own processes and interrupts (watched phases only), so a
    /// tail window without outside load still says which of them was busy, or that none was.
    pub own: Vec<OwnLoad>,
}

/// One [`WATCH_WINDOW`]'s use by the tracked processes (and `irq`), on the wall clock.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnLoad {
    pub from: SystemTime,
    pub to: SystemTime,
    /// Cores per tracked process, then `irq`.
    pub processes: Vec<(&'static str, f64)>,
}

impl OwnLoad {
    /// Per process, the most cores it used in any window overlapping `from..to`, in tracking order.
    pub fn most_within(windows: &[OwnLoad], from: SystemTime, to: SystemTime) -> Vec<(&'static str, f64)> {
        let mut most: Vec<(&'static str, f64)> = Vec::new();
        for window in windows.iter().filter(|w| w.from < to && w.to > from) {
            for &(name, cores) in &window.processes {
                match most.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, m)) => *m = m.max(cores),
                    None => most.push((name, cores)),
                }
            }
        }
        most
    }
}

/// One [`WATCH_WINDOW`] with load from outside the bench, on the wall clock.
#[derive(Clone, Debug, PartialEq)]
pub struct OutsideLoad {
    pub from: SystemTime,
    pub to: SystemTime,
    /// Cores everything else used (steal included).
    pub cores: f64,
    /// The busiest other processes in it (at least 0.05 cores each), busiest first.
    pub processes: Vec<(String, f64)>,
}

/// Other processes' use below this, in one window, is the counters' noise (see `other_peak`).
pub const OUTSIDE_NOISE: f64 = 0.15;

impl OutsideLoad {
    /// The most cores outside load took in a window overlapping `from..to`, and who took them.
    pub fn most_within(windows: &[OutsideLoad], from: SystemTime, to: SystemTime) -> Option<&OutsideLoad> {
        windows.iter().filter(|w| w.from < to && w.to > from).max_by(|a, b| a.cores.total_cmp(&b.cores))
    }
}

/// The [`WATCH_WINDOW`] in which everything else used the most CPU.
#[derive(Clone, Debug)]
pub struct OtherPeak {
    /// The window's start, from the watch's start.
    pub at: Duration,
    /// Cores the hypervisor took (steal).
    pub steal: f64,
    /// The busiest other processes in it (at least 0.05 cores each), busiest first.
    pub processes: Vec<(String, f64)>,
}

impl CpuUsage {
    /// Cores used by the bench's own processes and the kernel's interrupt work.
    pub fn ours(&self) -> f64 {
        self.processes.iter().map(|(_, c)| c).sum::<f64>() + self.irq
    }
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// utime + stime of a process, in ticks (0 when unreadable).
fn process_ticks(pid: Option<u32>) -> u64 {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let Ok(stat) = std::fs::read_to_string(path) else { return 0 };
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, i.e. 12 and 13 after the state (field 3).
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// (busy, irq + softirq, steal) ticks of the whole machine: the `cpu` line of /proc/stat. Busy
/// includes steal: time the hypervisor gave this machine's CPUs to another.
fn machine_ticks() -> (u64, u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else { return (0, 0, 0) };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else { return (0, 0, 0) };
    let values: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let value = |i: usize| values.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = values.iter().take(8).sum();
    (total.saturating_sub(value(3) + value(4)), value(5) + value(6), value(7))
}

/// Every process's name and utime + stime ticks, by pid: who the "other processes" were.
fn all_process_ticks() -> HashMap<u32, (String, u64)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return HashMap::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1.to_owned();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            Some((pid, (name, field(11) + field(12))))
        })
        .collect()
}

impl CpuSnapshot {
    pub fn take(tracked: &[Tracked]) -> Self {
        let (busy, irq, steal) = machine_ticks();
        Self {
            at: Instant::now(),
            processes: tracked.iter().map(|&(name, pid)| (name, process_ticks(pid))).collect(),
            busy,
            irq,
            steal,
        }
    }

    /// Average cores used from `self` until `later`.
    pub fn usage_until(&self, later: &CpuSnapshot) -> CpuUsage {
        let seconds = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let hz = ticks_per_second();
        let cores = |ticks: u64| ticks as f64 / hz / seconds;
        let mut ours = 0;
        let processes = self
            .processes
            .iter()
            .zip(&later.processes)
            .map(|(&(name, before), &(_, after))| {
                let used = after.saturating_sub(before);
                ours += used;
                (name, cores(used))
            })
            .collect();
        let irq = later.irq.saturating_sub(self.irq);
        let other = cores(later.busy.saturating_sub(self.busy).saturating_sub(ours).saturating_sub(irq));
        CpuUsage {
            processes,
            irq: cores(irq),
            other,
            other_peak: other,
            peak: None,
            outside: Vec::new(),
            own: Vec::new(),
        }
    }
}

/// How finely a [`CpuWatch`] looks for bursts of other processes' load.
const WATCH_WINDOW: Duration = Duration::from_millis(200);

/// Takes a [`CpuSnapshot`] every [`WATCH_WINDOW`] on a thread of its own while a phase runs.
pub struct CpuWatch {
    tracked: Vec<Tracked>,
    first: CpuSnapshot,
    /// Dropping it (in `finish`, or with an unfinished watch) ends the sampler at once.
    stop: mpsc::Sender<()>,
    sampler: JoinHandle<Watched>,
}

/// What a [`CpuWatch`]'s sampler saw, window by window (the fields of [`CpuUsage`] of those names).
struct Watched {
    other_peak: f64,
    peak: Option<OtherPeak>,
    outside: Vec<OutsideLoad>,
    own: Vec<OwnLoad>,
}

impl CpuWatch {
    pub fn start(tracked: &[Tracked]) -> Self {
        let first = CpuSnapshot::take(tracked);
        let first_at = first.at;
        let (stop, stopped) = mpsc::channel::<()>();
        let sampler = {
            let (tracked, mut last) = (tracked.to_vec(), first.clone());
            let ours: HashSet<u32> =
                tracked.iter().map(|(_, pid)| pid.unwrap_or_else(std::process::id)).collect();
            std::thread::spawn(move || {
                let mut peak: (f64, Option<OtherPeak>) = (0.0, None);
                let (mut outside, mut own) = (Vec::new(), Vec::new());
                let mut others = all_process_ticks();
                let mut last_wall = SystemTime::now();
                // Whole windows only: a partial one is a few ticks, too coarse to say anything.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(WATCH_WINDOW) {
                    let now = CpuSnapshot::take(&tracked);
                    let now_wall = SystemTime::now();
                    let now_others = all_process_ticks();
                    let usage = last.usage_until(&now);
                    let mut processes = usage.processes;
                    processes.push(("irq", usage.irq));
                    own.push(OwnLoad { from: last_wall, to: now_wall, processes });
                    let other = usage.other;
                    if other > peak.0 || other >= OUTSIDE_NOISE {
                        let seconds = now.at.duration_since(last.at).as_secs_f64().max(1e-9);
                        let cores = |ticks: u64| ticks as f64 / ticks_per_second() / seconds;
                        let mut processes: Vec<(String, f64)> = now_others
                            .iter()
                            .filter(|(pid, _)| !ours.contains(pid))
                            .map(|(pid, (name, after))| {
                                let before = others.get(pid).map_or(0, |(_, ticks)| *ticks);
                                (name.clone(), cores(after.saturating_sub(before)))
                            })
                            .filter(|(_, used)| *used >= 0.05)
                            .collect();
                        processes.sort_by(|a, b| b.1.total_cmp(&a.1));
                        processes.truncate(3);
                        if other >= OUTSIDE_NOISE {
                            outside.push(OutsideLoad {
                                from: last_wall,
                                to: now_wall,
                                cores: other,
                                processes: processes.clone(),
                            });
                        }
                        if other > peak.0 {
                            let at = last.at.duration_since(first_at);
                            let steal = cores(now.steal.saturating_sub(last.steal));
                            peak = (other, Some(OtherPeak { at, steal, processes }));
                        }
                    }
                    last = now;
                    last_wall = now_wall;
                    others = now_others;
                }
                Watched { other_peak: peak.0, peak: peak.1, outside, own }
            })
        };
        Self { tracked: tracked.to_vec(), first, stop, sampler }
    }

    /// The phase's average use until now, with the peak of other processes' use in any one window.
    pub fn finish(self) -> CpuUsage {
        let last = CpuSnapshot::take(&self.tracked);
        drop(self.stop);
        let Watched { other_peak, peak, outside, own } =
            self.sampler.join().expect("the CPU sampler panicked");
        CpuUsage { other_peak, peak, outside, own, ..self.first.usage_until(&last) }
    }
}

impl CpuUsage {
    /// `bench 0.71, bridge 0.80, emulator 0.31, redis 0.12, other 0.02`
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self.processes.iter().map(|(n, c)| format!("{n} {c:.2}")).collect();
        parts.push(format!("irq/softirq {:.2}", self.irq));
        let peak = match &self.peak {
            // Below the noise floor nothing is worth naming.
            Some(peak) if self.other_peak >= OUTSIDE_NOISE => {
                let mut who = vec![format!("steal {:.2}", peak.steal)];
                who.extend(peak.processes.iter().map(|(name, cores)| format!("{name} {cores:.2}")));
                format!(
                    ", at +{:.1} s of the phase with its warm-up: {}",
                    peak.at.as_secs_f64(),
                    who.join(", ")
                )
            }
            _ => String::new(),
        };
        parts.push(format!(
            "other processes {:.2} (at most {:.2} in any {} ms{peak})",
            self.other,
            self.other_peak,
            WATCH_WINDOW.as_millis()
        ));
        parts.join(", ")
    }
}

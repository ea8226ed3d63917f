//! Pacing for background work (the reconciler's scans), shared by the adapters that do it (not an
//! adapter itself).
//!
//! A scan of a large deployment is seconds of work — decoding Gameye's listing, reading every seat
//! record — on the same cores, Redis and Gameye connection that placements use. Done in one go it
//! shows up as a burst in the placements' latency. A [`Pacer`] spreads it instead: after each
//! `slice` of wall-clock time spent working it rests long enough that work takes at most `busy` of
//! the time. Wall-clock, not CPU time: waiting for Redis or Gameye is load there too.
//!
//! Its blocking work (decoding a listing) can also run at the idle CPU priority ([`spawn_blocking`]):
//! resting spreads the work out, but a slice still takes a core from whatever request wanted it.
//!
//! Outboxes drain in rounds instead ([`run_rounds`]): one every interval, and the next at once
//! after a full one.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

/// Runs `round` every `interval` until `stop`, and the next one at once after a round that says
/// it was full (`true`: more may be due). A round under way is dropped at `stop`: an outbox's
/// entries in hand stay held for their window, then any instance takes them again.
pub async fn run_rounds<Round>(
    interval: Duration,
    stop: &tokio_util::sync::CancellationToken,
    mut round: impl FnMut() -> Round,
) where
    Round: Future<Output = bool>,
{
    let mut full = false;
    loop {
        if !full {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
        full = tokio::select! {
            _ = stop.cancelled() => return,
            full = round() => full,
        };
    }
}

/// The longest single rest.
const MAX_REST: Duration = Duration::from_secs(1);

/// How much of the wall clock background work may take, and in what slices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// Share of the time spent working, in (0, 1]; 1 never rests. Each rest lasts at most 1 s.
    pub busy: f64,
    /// Work done before resting. Short slices keep each interruption of the foreground short.
    pub slice: Duration,
    /// Blocking work runs on a thread of its own at the idle CPU priority (Linux `SCHED_IDLE`): the
    /// kernel gives it a core only when no other thread wants one, and takes it back the moment a
    /// request's thread wakes, instead of letting the request wait for the slice to end.
    pub idle_priority: bool,
}

impl Pace {
    /// Never rests.
    pub const UNPACED: Pace = Pace { busy: 1.0, slice: Duration::from_millis(2), idle_priority: false };

    fn rest_after(&self, worked: Duration) -> Duration {
        if self.busy >= 1.0 || self.busy <= 0.0 {
            return Duration::ZERO;
        }
        // Capped: a long wait or a stopped process (SIGSTOP, a paused VM) counts as work too, and
        // must not turn into minutes of rest.
        worked.min(MAX_REST).mul_f64((1.0 - self.busy) / self.busy).min(MAX_REST)
    }
}

/// One piece of paced work: call [`Pacer::breathe`] (async) or [`Pacer::breathe_blocking`] (on a
/// blocking thread) often, between small steps; it rests once a slice is used up.
#[derive(Debug)]
pub struct Pacer {
    pace: Pace,
    since: Instant,
    rested: Duration,
}

impl Pacer {
    pub fn new(pace: Pace) -> Self {
        Self { pace, since: Instant::now(), rested: Duration::ZERO }
    }

    /// How long it has rested so far.
    pub fn rested(&self) -> Duration {
        self.rested
    }

    /// The rest due now, if the slice is used up (and starts the next slice).
    fn due(&mut self) -> Option<Duration> {
        let worked = self.since.elapsed();
        if worked < self.pace.slice {
            return None;
        }
        let rest = self.pace.rest_after(worked);
        self.rested += rest;
        self.since = Instant::now() + rest;
        (!rest.is_zero()).then_some(rest)
    }

    pub async fn breathe(&mut self) {
        match self.due() {
            Some(rest) => tokio::time::sleep(rest).await,
            // Long loops without a rest still let the tasks sharing this worker thread run.
            None => tokio::task::yield_now().await,
        }
    }

    pub fn breathe_blocking(&mut self) {
        if let Some(rest) = self.due() {
            std::thread::sleep(rest);
        }
    }
}

/// Blocking work of a paced task, started at once and off the async workers: on a thread of its
/// own at the idle CPU priority when `pace.idle_priority` (a new thread each time: background
/// work is seconds apart, and a thread cannot raise its priority again once lowered), else on
/// tokio's blocking pool. `Err` says why there is no answer (the work panicked).
pub fn spawn_blocking<T, F>(pace: Pace, work: F) -> Pin<Box<dyn Future<Output = Result<T, String>> + Send>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if !pace.idle_priority {
        let task = tokio::task::spawn_blocking(work);
        return Box::pin(async move { task.await.map_err(|error| error.to_string()) });
    }
    let (done, answer) = tokio::sync::oneshot::channel();
    let started = std::thread::Builder::new().name("bridge-background".to_owned()).spawn(move || {
        lower_to_idle_priority();
        let _ = done.send(work());
    });
    Box::pin(async move {
        started.map_err(|error| format!("starting a background thread: {error}"))?;
        answer.await.map_err(|_| "the background work panicked".to_owned())
    })
}

/// The calling thread's CPU priority to idle; where that is refused (or not Linux) the work runs at
/// the normal priority, paced all the same.
fn lower_to_idle_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` outlives the call.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
            // Once per process, not at every scan: the answer will not change.
            static WARNED: std::sync::Once = std::sync::Once::new();
            let error = std::io::Error::last_os_error();
            WARNED.call_once(|| {
                tracing::warn!(%error, "background work runs at the normal CPU priority: SCHED_IDLE refused")
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(for_: Duration) {
        let start = Instant::now();
        while start.elapsed() < for_ {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn work_takes_at_most_its_share_of_the_time() {
        let pace = Pace { busy: 0.25, ..Pace::UNPACED };
        let mut pacer = Pacer::new(pace);
        let start = Instant::now();
        for _ in 0..20 {
            spin(Duration::from_millis(1));
            pacer.breathe_blocking();
        }
        let total = start.elapsed();
        // 20 ms of work at a quarter of the time: at least 60 ms of rest.
        assert!(pacer.rested() >= Duration::from_millis(60), "rested {:?}", pacer.rested());
        assert!(total >= Duration::from_millis(80), "took {total:?}");
    }

    #[test]
    fn unpaced_work_never_rests_and_short_work_does_not_rest_either() {
        let mut pacer = Pacer::new(Pace::UNPACED);
        spin(Duration::from_millis(5));
        pacer.breathe_blocking();
        assert_eq!(pacer.rested(), Duration::ZERO);

        let mut pacer = Pacer::new(Pace { busy: 0.1, slice: Duration::from_secs(10), idle_priority: false });
        spin(Duration::from_millis(1));
        pacer.breathe_blocking();
        assert_eq!(pacer.rested(), Duration::ZERO, "the slice is not used up yet");
    }

    #[test]
    fn a_long_step_rests_at_most_a_second() {
        let pace = Pace { busy: 0.01, slice: Duration::from_millis(1), idle_priority: false };
        assert_eq!(pace.rest_after(Duration::from_secs(30)), MAX_REST);
        assert_eq!(pace.rest_after(Duration::from_millis(2)), Duration::from_millis(198));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn idle_paced_blocking_work_runs_at_the_idle_priority_and_other_work_does_not() {
        let policy = || unsafe { libc::sched_getscheduler(0) };
        let idle = Pace { idle_priority: true, ..Pace::UNPACED };
        assert_eq!(spawn_blocking(idle, policy).await, Ok(libc::SCHED_IDLE));
        assert_eq!(spawn_blocking(Pace::UNPACED, policy).await, Ok(libc::SCHED_OTHER));
        assert_eq!(policy(), libc::SCHED_OTHER, "the caller's thread keeps its priority");
    }

    #[tokio::test]
    async fn background_work_that_panics_is_an_error_not_a_hang() {
        for idle_priority in [true, false] {
            let pace = Pace { idle_priority, ..Pace::UNPACED };
            let answer = spawn_blocking(pace, || -> u8 { panic!("decoding failed") }).await;
            assert!(answer.is_err(), "idle_priority {idle_priority}: {answer:?}");
        }
    }

    #[tokio::test]
    async fn async_rests_are_slept() {
        let mut pacer = Pacer::new(Pace { busy: 0.5, slice: Duration::from_millis(1), idle_priority: false });
        spin(Duration::from_millis(3));
        let start = Instant::now();
        pacer.breathe().await;
        assert!(start.elapsed() >= Duration::from_millis(3), "slept {:?}", start.elapsed());
    }
}

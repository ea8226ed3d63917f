//! Lanes: single-threaded Tokio runtimes, one per thread, that each serve their share of the HTTP
//! connections with I/O clients of their own (`runtime.lanes`).
//!
//! On one multi-threaded runtime, every Redis reply, Gameye answer and request may wake a parked
//! worker on the other core, and a task often runs on another thread than the connection task it
//! waits for; on a small machine those wake-ups and migrations are a large part of a placement's
//! CPU (bench/RESULTS.md, session 18). In a lane, a request, its Redis connection and its Gameye
//! connections are all driven by one thread, so none of them wakes another.
//!
//! Lane 0 is the runtime `main` runs on: it also runs every background task (recovery, the
//! reconciler, the outboxes, the NATS door). [`current`] tells the I/O clients which lane they are
//! called on, so each lane uses its own connection; on any thread that is not a lane (the
//! multi-threaded runtime, blocking threads) it is 0.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;

use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

thread_local! {
    static LANE: Cell<usize> = const { Cell::new(0) };
}

/// The lane this thread runs: 0 unless it is one of the threads [`Lanes::start`] made.
pub fn current() -> usize {
    LANE.with(Cell::get)
}

type Work = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The lanes besides lane 0, each a thread with a single-threaded runtime. A lane runs what
/// [`Lanes::run`] gives it, and its runtime lives until [`Lanes::stop`], so tasks it spawned
/// (a placement whose caller hung up, a connection's driver) keep running after that work ends.
pub struct Lanes {
    lanes: Vec<Lane>,
    stop: CancellationToken,
}

struct Lane {
    handle: Handle,
    work: Option<oneshot::Sender<Work>>,
    thread: std::thread::JoinHandle<()>,
}

impl Lanes {
    /// Starts lanes `1..count` (lane 0 is the caller's runtime). Each waits for its work.
    pub fn start(count: usize) -> std::io::Result<Self> {
        let mut lanes = Vec::with_capacity(count.saturating_sub(1));
        let stop = CancellationToken::new();
        for index in 1..count {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let handle = runtime.handle().clone();
            let (work_tx, work_rx) = oneshot::channel::<Work>();
            let stopped = stop.clone();
            let thread = std::thread::Builder::new().name(format!("lane-{index}")).spawn(move || {
                LANE.with(|lane| lane.set(index));
                runtime.block_on(async move {
                    if let Ok(work) = work_rx.await {
                        work.await;
                    }
                    stopped.cancelled().await;
                });
                // Not waiting long for a blocking task still at work (a DNS lookup).
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
            lanes.push(Lane { handle, work: Some(work_tx), thread });
        }
        Ok(Self { lanes, stop })
    }

    /// How many lanes there are, lane 0 included.
    pub fn count(&self) -> usize {
        self.lanes.len() + 1
    }

    /// Runtimes of lanes `1..`, in order: what a client spawns a connection's task on to drive it there.
    pub fn handles(&self) -> Vec<Handle> {
        self.lanes.iter().map(|lane| lane.handle.clone()).collect()
    }

    /// Gives lane `index` (from 1) its work; it ends the lane's thread once the work is done and
    /// [`Lanes::stop`] has been called. At most once per lane.
    pub fn run(&mut self, index: usize, work: impl Future<Output = ()> + Send + 'static) {
        let lane = &mut self.lanes[index - 1];
        if let Some(sender) = lane.work.take() {
            let _ = sender.send(Box::pin(work));
        }
    }

    /// Ends every lane: lanes without work end at once, the others when their work is done, and
    /// each lane's remaining tasks are dropped with its runtime. Blocks until the threads are gone.
    pub fn stop(mut self) {
        self.stop.cancel();
        for lane in std::mem::take(&mut self.lanes) {
            drop(lane.work);
            let _ = lane.thread.join();
        }
    }
}

impl Drop for Lanes {
    // Without `stop` (serving failed early): lanes end once their work does, unwaited for.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

//! The shared state of one emulator instance.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    faults::FaultInjector,
    sessions::Registry,
    world::{Application, Location, Quirks, Scope, World},
};

/// Everything a request handler may read or change.
pub struct AppState {
    /// Token → scopes.
    pub tokens: HashMap<String, HashSet<Scope>>,
    /// Location id → location, plus the world's order for stable listings.
    pub locations: HashMap<String, Location>,
    /// The world's location order.
    pub location_order: Vec<String>,
    /// Image → application.
    pub applications: HashMap<String, Application>,
    /// `created` → `running` delay.
    pub start_delay: Duration,
    /// Pace of followed logs.
    pub log_interval: Duration,
    /// The world as loaded, for `GET /_emulator/world`.
    pub world: World,
    /// Sessions.
    pub registry: Mutex<Registry>,
    /// Fault rules and dice.
    pub faults: Mutex<FaultInjector>,
    /// Quirks in force (changeable at run time).
    pub quirks: Mutex<Quirks>,
    /// Cancelled at shutdown: ends hanging requests and followed logs so shutdown never waits on them.
    pub shutdown: CancellationToken,
}

/// Shared handle to the state.
pub type SharedState = Arc<AppState>;

impl AppState {
    /// Indexes a world.
    pub fn new(world: World, shutdown: CancellationToken) -> Self {
        let tokens =
            world.tokens.iter().map(|t| (t.token.clone(), t.scopes.iter().copied().collect())).collect();
        let locations = world.locations.iter().map(|l| (l.id.clone(), l.clone())).collect();
        let applications = world.applications.iter().map(|a| (a.image.clone(), a.clone())).collect();
        AppState {
            tokens,
            locations,
            location_order: world.locations.iter().map(|l| l.id.clone()).collect(),
            applications,
            start_delay: world.start_delay,
            log_interval: world.log_interval,
            registry: Mutex::new(Registry::default()),
            faults: Mutex::new(FaultInjector::new(world.faults.clone(), world.seed)),
            quirks: Mutex::new(world.quirks.clone()),
            world,
            shutdown,
        }
    }

    /// The registry with expired sessions already stopped.
    pub fn sessions(&self) -> MutexGuard<'_, Registry> {
        let mut registry = lock(&self.registry);
        registry.reap(Instant::now());
        registry
    }
}

/// Locks a mutex, ignoring poisoning: the guarded data stays consistent because no handler panics
/// half-way through an update, and one panicking request must not take the emulator down.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

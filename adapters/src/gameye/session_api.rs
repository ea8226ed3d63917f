//! The core's `SessionApi` port over the Gameye client, with the short per-image cache of
//! available locations (one request in flight per image).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge::ports::{AvailableLocation, SessionApi, SessionApiError, SessionSpec, StartedSession};
use uuid::Uuid;

use super::{CreateSession, GameyeClient, GameyeError, Port, Protocol};

/// Gameye as the placement engine sees it.
#[derive(Clone, Debug)]
pub struct GameyeSessionApi {
    client: GameyeClient,
    locations: Arc<LocationCache>,
}

impl GameyeSessionApi {
    /// `cache_for`: how long an available-locations answer is reused (zero: never, but concurrent
    /// callers still share one request).
    pub fn new(client: GameyeClient, cache_for: Duration) -> Self {
        Self { client, locations: Arc::new(LocationCache { ttl: cache_for, entries: Mutex::default() }) }
    }

    pub fn client(&self) -> &GameyeClient {
        &self.client
    }
}

impl SessionApi for GameyeSessionApi {
    async fn available_locations(&self, image: &str) -> Result<Vec<AvailableLocation>, SessionApiError> {
        let entry = self.locations.entry(image);
        let seen = {
            let state = entry.state();
            if let Some(fresh) = state.fresh(self.locations.ttl) {
                return Ok(fresh);
            }
            (state.fetches, state.invalidations)
        };
        let _only_fetcher = entry.fetching.lock().await;
        let invalidations = {
            let state = entry.state();
            // A fetch finished while this call queued behind it: its answer (or its error) is
            // shared, whatever the TTL, unless the cache was invalidated since this call began.
            if state.fetches != seen.0
                && state.invalidations == seen.1
                && let Some(last) = &state.last
            {
                return last.clone();
            }
            state.invalidations
        };
        let fetched: Result<Vec<AvailableLocation>, SessionApiError> =
            self.client.available_locations(image).await.map_err(port_error).map(|locations| {
                locations
                    .into_iter()
                    .map(|location| AvailableLocation { id: location.id, ping_ips: location.ips })
                    .collect()
            });
        let mut state = entry.state();
        state.fetches += 1;
        state.last = Some(fetched.clone());
        // Fetched before an invalidation that came while it was in flight (a 404 or 420 elsewhere):
        // answered, not kept.
        if let Ok(locations) = &fetched
            && state.invalidations == invalidations
        {
            state.cached = Some((Instant::now(), locations.clone()));
        }
        fetched
    }

    fn invalidate_locations(&self, image: &str) {
        let entry = self.locations.entry(image);
        let mut state = entry.state();
        state.cached = None;
        state.invalidations += 1;
    }

    async fn create_session(&self, spec: &SessionSpec<'_>) -> Result<StartedSession, SessionApiError> {
        let body = CreateSession {
            // Encoded directly: `to_string` goes through the formatting machinery (every placement).
            id: Some(spec.session_id.hyphenated().encode_lower(&mut Uuid::encode_buffer()).to_owned()),
            location: spec.location.into(),
            image: spec.image.into(),
            tag: spec.version.map(Cow::Borrowed),
            env: Cow::Borrowed(spec.env),
            args: Cow::Borrowed(spec.args),
            labels: Cow::Borrowed(&spec.labels),
            restart: None,
            ttl: Some(spec.ttl),
            external_id: None,
        };
        let created =
            self.client.create_session_within(&body, spec.answer_within).await.map_err(port_error)?;
        Ok(StartedSession {
            location: spec.location.to_owned(),
            host: created.host,
            ports: created.ports.into_iter().map(core_port).collect(),
            players: Vec::new(),
        })
    }

    async fn describe_session(&self, session_id: Uuid) -> Result<StartedSession, SessionApiError> {
        let described = self.client.describe_session(&session_id.to_string()).await.map_err(port_error)?;
        Ok(StartedSession {
            location: described.session.location,
            host: described.session.host,
            ports: described.session.ports.into_iter().map(core_port).collect(),
            players: described.players.joined,
        })
    }

    async fn stop_session(&self, session_id: Uuid) -> Result<bool, SessionApiError> {
        match self.client.stop_session(&session_id.to_string()).await.map_err(port_error)? {
            super::StopOutcome::Stopped => Ok(true),
            super::StopOutcome::AlreadyGone => Ok(false),
        }
    }

    async fn join_players(&self, session_id: Uuid, players: &[String]) -> Result<(), SessionApiError> {
        self.client.join_players(&session_id.to_string(), players).await.map_err(port_error)?;
        Ok(())
    }

    async fn leave_players(&self, session_id: Uuid, players: &[String]) -> Result<(), SessionApiError> {
        self.client.leave_players(&session_id.to_string(), players).await.map_err(port_error)?;
        Ok(())
    }
}

fn core_port(port: Port) -> bridge::Port {
    bridge::Port {
        protocol: match port.protocol {
            Protocol::Tcp => bridge::PortProtocol::Tcp,
            Protocol::Udp => bridge::PortProtocol::Udp,
        },
        container: port.container,
        host: port.host,
    }
}

fn port_error(error: GameyeError) -> SessionApiError {
    SessionApiError { kind: error.class(), status: error.status(), message: error.to_string() }
}

#[derive(Debug)]
struct LocationCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, Arc<CacheEntry>>>,
}

#[derive(Debug, Default)]
struct CacheEntry {
    state: Mutex<EntryState>,
    /// Held while fetching, so concurrent misses for one image make one request.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct EntryState {
    /// The answer reused for the TTL, and when it was fetched.
    cached: Option<(Instant, Vec<AvailableLocation>)>,
    /// Fetches finished, and the last one's result, for the calls that queued behind it.
    fetches: u64,
    last: Option<Result<Vec<AvailableLocation>, SessionApiError>>,
    /// Invalidations so far: a fetch that one overtook is not kept.
    invalidations: u64,
}

impl LocationCache {
    fn entry(&self, image: &str) -> Arc<CacheEntry> {
        self.entries.lock().expect("location cache poisoned").entry(image.to_owned()).or_default().clone()
    }
}

impl CacheEntry {
    fn state(&self) -> std::sync::MutexGuard<'_, EntryState> {
        self.state.lock().expect("location cache poisoned")
    }
}

impl EntryState {
    fn fresh(&self, ttl: Duration) -> Option<Vec<AvailableLocation>> {
        match &self.cached {
            Some((fetched, locations)) if fetched.elapsed() < ttl => Some(locations.clone()),
            _ => None,
        }
    }
}

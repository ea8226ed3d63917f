//! The sessions the emulator runs: creation, placement, lifecycle, players.
//!
//! Every session ever created is kept (stopped ones too, for `/_emulator/sessions`); the active ones
//! are indexed separately so a request never scans the stopped ones, and per-location counts and
//! per-host port sets keep POST /session O(1) in the number of sessions.

use std::{
    borrow::Borrow,
    collections::{BTreeMap, BTreeSet, HashMap, hash_map, hash_map::RandomState},
    hash::{BuildHasher, Hash},
    net::IpAddr,
    time::Duration,
};

use serde::Serialize;
use tokio::time::Instant;

use crate::{
    ports::HostPorts,
    world::{Application, Location, Protocol},
};

/// The runtime status of a session, as the spec's `SessionStatus` spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Allocated; the game server is not listening yet.
    Created,
    /// The game server is up.
    Running,
    /// Stopped, by DELETE or TTL.
    Exited,
}

/// Why a session stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// DELETE /session/{id}.
    Requested,
    /// Its `ttl` ran out.
    TtlExpired,
}

/// A container port mapped to a host port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PortMapping {
    /// `udp` or `tcp` (`type` on the wire).
    #[serde(rename = "type")]
    pub protocol: Protocol,
    /// Port inside the container.
    pub container: u16,
    /// Port on the host machine.
    pub host: u16,
}

/// The validated content of a POST /session body, resolved against the world.
#[derive(Debug, Default)]
pub struct NewSession {
    /// Caller-chosen id, or `None` for a fresh UUIDv4.
    pub id: Option<String>,
    /// The tag to run (already resolved: exists for the image).
    pub tag: String,
    /// Extra container environment.
    pub env: BTreeMap<String, String>,
    /// Program arguments.
    pub args: Vec<String>,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// Restart on failure (recorded only).
    pub restart: bool,
    /// Lifetime; forever when absent.
    pub ttl: Option<Duration>,
    /// Customer-provided identifier (recorded only).
    pub external_id: Option<String>,
}

/// The `labels` map as the live API returns it: JSON documents encoded in strings.
#[derive(Debug, Clone, Serialize)]
pub struct Labels {
    /// The container environment (user env plus GAMEYE_* variables).
    pub env: String,
    /// The user's labels.
    pub tags: String,
    /// Gameye's own metadata.
    pub gameye: String,
}

/// One session, active or stopped.
#[derive(Debug)]
pub struct Session {
    /// Its id.
    pub id: String,
    /// Region.
    pub location: String,
    /// Image.
    pub image: String,
    /// Tag of the image.
    pub tag: String,
    /// Host machine.
    pub host: IpAddr,
    /// The host's position in its location's `host_ips` (its key in the load index).
    host_slot: usize,
    /// Mapped ports, in the image's order.
    pub ports: Vec<PortMapping>,
    /// Unix milliseconds of creation.
    pub created_ms: i64,
    /// Monotonic time of creation (wall-clock stop times are derived from it).
    pub created_at: Instant,
    /// When the status turns `running`.
    pub running_at: Instant,
    /// When the TTL stops it.
    pub expires_at: Option<Instant>,
    /// Unix milliseconds of the stop, once stopped.
    pub stopped_at_ms: Option<i64>,
    /// Why it stopped, once stopped.
    pub stop_reason: Option<StopReason>,
    /// User labels, for filters.
    pub user_labels: BTreeMap<String, String>,
    /// Labels as served (pre-encoded once: listing is frequent).
    pub labels: Labels,
    /// Program arguments (shown in the logs).
    pub args: Vec<String>,
    /// Joined players in joining order.
    pub players: Vec<String>,
    /// What happened since start, for the logs: (Unix ms, line).
    pub events: Vec<(i64, String)>,
}

impl Session {
    /// The status at `now`.
    pub fn status(&self, now: Instant) -> Status {
        if self.stopped_at_ms.is_some() {
            Status::Exited
        } else if now >= self.running_at {
            Status::Running
        } else {
            Status::Created
        }
    }

    /// Whether it is still active (not stopped).
    pub fn is_active(&self) -> bool {
        self.stopped_at_ms.is_none()
    }
}

/// Why a session could not be created (the world lookups that answer 404 happen before).
#[derive(Debug, PartialEq, Eq)]
pub enum CreateError {
    /// The id was used by a session before, stopped or not (409).
    IdInUse,
    /// The location is full, or its hosts ran out of ports (420).
    NoCapacity,
}

/// Why a session could not be stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum StopError {
    /// Never existed (404).
    NotFound,
    /// Already stopped (409).
    AlreadyStopped,
}

/// All sessions and the indexes that keep requests cheap.
#[derive(Default)]
pub struct Registry {
    /// Every session ever, indexed by creation order.
    sessions: Chunked<Session>,
    by_id: ShardedMap<String, usize>,
    /// Active sessions, in creation order.
    active: BTreeSet<usize>,
    /// TTL deadlines of active sessions, earliest first.
    expiries: BTreeSet<(Instant, usize)>,
    per_location: HashMap<String, usize>,
    hosts: HashMap<IpAddr, HostPorts>,
    /// Per location, its hosts as (active sessions, position in `host_ips`), least loaded first:
    /// picking a host stays O(log hosts) however many hosts a world has.
    by_load: HashMap<String, BTreeSet<(usize, usize)>>,
    /// Active sessions by user label (key, value), in creation order: a listing filtered by a label
    /// reads only the sessions carrying it, however many others run.
    by_label: ShardedMap<(String, String), BTreeSet<usize>>,
}

/// Shards of the maps that hold an entry per session. One `HashMap` rehashes every entry at once
/// when it grows: ~210 ms at 458,752 sessions (twice that at the next doubling), with the registry
/// locked, which the bench then charged to whichever phase (bridge or raw) was running. With 256
/// shards each grows on its own, in ~1/256 of that.
const SHARDS: usize = 256;

/// A `HashMap` split in [`SHARDS`] by the key's hash, so no insert ever rehashes all of it.
struct ShardedMap<K, V> {
    hasher: RandomState,
    shards: Vec<HashMap<K, V>>,
}

impl<K, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        ShardedMap { hasher: RandomState::new(), shards: (0..SHARDS).map(|_| HashMap::new()).collect() }
    }
}

impl<K: Hash + Eq, V> ShardedMap<K, V> {
    // `Borrow` promises `key` hashes as its owned form does, so lookups find the shard inserts chose.
    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        (self.hasher.hash_one(key) % SHARDS as u64) as usize
    }

    fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.shards[self.shard(key)].get(key)
    }

    fn get_mut<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        let shard = self.shard(key);
        self.shards[shard].get_mut(key)
    }

    fn contains_key<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.get(key).is_some()
    }

    fn insert(&mut self, key: K, value: V) {
        let shard = self.shard(&key);
        self.shards[shard].insert(key, value);
    }

    fn entry(&mut self, key: K) -> hash_map::Entry<'_, K, V> {
        let shard = self.shard(&key);
        self.shards[shard].entry(key)
    }

    fn remove<Q: Hash + Eq + ?Sized>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
    {
        let shard = self.shard(key);
        self.shards[shard].remove(key);
    }
}

/// A `Vec` that grows by whole chunks, so that growing never moves what it holds. One `Vec` of
/// sessions copied every session when it doubled, with the registry locked: at 32,768 sessions
/// ~10 MB copied and faulted in, a stall of tens of milliseconds in every request in flight,
/// which the bench charged to whichever phase was running.
struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

/// Entries per chunk of a [`Chunked`].
const CHUNK: usize = 4096;

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Self { chunks: Vec::new(), len: 0 }
    }
}

impl<T> Chunked<T> {
    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, value: T) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(value),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(value);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }
}

impl<T> std::ops::Index<usize> for Chunked<T> {
    type Output = T;

    fn index(&self, index: usize) -> &T {
        &self.chunks[index / CHUNK][index % CHUNK]
    }
}

impl<T> std::ops::IndexMut<usize> for Chunked<T> {
    fn index_mut(&mut self, index: usize) -> &mut T {
        &mut self.chunks[index / CHUNK][index % CHUNK]
    }
}

impl Registry {
    /// Stops every session whose TTL ran out by `now`; called before every read or write so that
    /// no timer task per session is needed.
    pub fn reap(&mut self, now: Instant) {
        while let Some(&(deadline, idx)) = self.expiries.first() {
            if deadline > now {
                break;
            }
            self.stop_idx(idx, StopReason::TtlExpired, now);
        }
    }

    /// Number of active sessions in a location.
    pub fn active_in(&self, location: &str) -> usize {
        self.per_location.get(location).copied().unwrap_or(0)
    }

    /// Places and records a new session.
    pub fn create(
        &mut self,
        location: &Location,
        app: &Application,
        mut req: NewSession,
        now: Instant,
        start_delay: Duration,
        now_ms: i64,
    ) -> Result<&Session, CreateError> {
        let id = req.id.take().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if self.by_id.contains_key(&id) {
            return Err(CreateError::IdInUse);
        }
        if self.active_in(&location.id) >= location.capacity {
            return Err(CreateError::NoCapacity);
        }
        // Least-loaded host that still has enough free ports; ties go to the first listed.
        let n = app.ports.len();
        let (host, host_slot) = self.least_loaded_host(location, n).ok_or(CreateError::NoCapacity)?;
        let usage = self.hosts.entry(host).or_default();
        let host_ports = usage.allocate(n).ok_or(CreateError::NoCapacity)?;
        self.set_host_sessions(&location.id, host, host_slot, |sessions| sessions + 1);
        let ports: Vec<PortMapping> = app
            .ports
            .iter()
            .zip(host_ports)
            .map(|(p, host)| PortMapping { protocol: p.protocol, container: p.container, host })
            .collect();

        let labels = encode_labels(&id, host, location, app, &req, &ports);
        let idx = self.sessions.len();
        let expires_at = req.ttl.map(|ttl| now + ttl);
        self.sessions.push(Session {
            id: id.clone(),
            location: location.id.clone(),
            image: app.image.clone(),
            tag: req.tag,
            host,
            host_slot,
            ports,
            created_ms: now_ms,
            created_at: now,
            running_at: now + start_delay,
            expires_at,
            stopped_at_ms: None,
            stop_reason: None,
            user_labels: req.labels,
            labels,
            args: req.args,
            players: Vec::new(),
            events: Vec::new(),
        });
        for label in &self.sessions[idx].user_labels {
            self.by_label.entry((label.0.clone(), label.1.clone())).or_default().insert(idx);
        }
        self.by_id.insert(id, idx);
        self.active.insert(idx);
        if let Some(deadline) = expires_at {
            self.expiries.insert((deadline, idx));
        }
        *self.per_location.entry(location.id.clone()).or_default() += 1;
        Ok(&self.sessions[idx])
    }

    /// Any session ever created with this id, stopped or not.
    pub fn get(&self, id: &str) -> Option<&Session> {
        self.by_id.get(id).map(|&i| &self.sessions[i])
    }

    /// The session with this id if it is still active.
    pub fn get_active(&self, id: &str) -> Option<&Session> {
        self.get(id).filter(|s| s.is_active())
    }

    /// Active sessions from creation index `from` on, with their indexes, in creation order; with
    /// `label`, only those carrying it.
    pub fn active_from(
        &self,
        from: usize,
        label: Option<&(String, String)>,
    ) -> Box<dyn Iterator<Item = (usize, &Session)> + '_> {
        let indexes = match label {
            None => &self.active,
            Some(label) => match self.by_label.get(label) {
                Some(indexes) => indexes,
                None => return Box::new(std::iter::empty()),
            },
        };
        Box::new(indexes.range(from..).map(|&i| (i, &self.sessions[i])))
    }

    /// Every session ever, in creation order.
    pub fn all(&self) -> impl Iterator<Item = &Session> {
        self.sessions.iter()
    }

    /// Stops an active session at the caller's request.
    pub fn stop(&mut self, id: &str, now: Instant) -> Result<(), StopError> {
        let &idx = self.by_id.get(id).ok_or(StopError::NotFound)?;
        if !self.sessions[idx].is_active() {
            return Err(StopError::AlreadyStopped);
        }
        self.stop_idx(idx, StopReason::Requested, now);
        Ok(())
    }

    /// Adds players (once each) to an active session; `None` when it is not active.
    pub fn join(&mut self, id: &str, players: Vec<String>, now_ms: i64) -> Option<&[String]> {
        let session = self.active_mut(id)?;
        for p in players {
            if !session.players.contains(&p) {
                session.events.push((now_ms, format!("player {p} joined")));
                session.players.push(p);
            }
        }
        Some(&session.players)
    }

    /// Removes players from an active session (absent ones are ignored); `None` when it is not active.
    pub fn leave(&mut self, id: &str, players: &[String], now_ms: i64) -> Option<&[String]> {
        let session = self.active_mut(id)?;
        session.players.retain(|p| {
            let leaving = players.contains(p);
            if leaving {
                session.events.push((now_ms, format!("player {p} left")));
            }
            !leaving
        });
        Some(&session.players)
    }

    fn active_mut(&mut self, id: &str) -> Option<&mut Session> {
        let &idx = self.by_id.get(id)?;
        Some(&mut self.sessions[idx]).filter(|s| s.is_active())
    }

    fn stop_idx(&mut self, idx: usize, reason: StopReason, now: Instant) {
        let s = &mut self.sessions[idx];
        // A TTL stop happened at the deadline, which may be earlier than the request that noticed it.
        let at = match (reason, s.expires_at) {
            (StopReason::TtlExpired, Some(deadline)) => deadline.min(now),
            _ => now,
        };
        let stopped_at_ms = s.created_ms + at.saturating_duration_since(s.created_at).as_millis() as i64;
        s.stopped_at_ms = Some(stopped_at_ms);
        s.stop_reason = Some(reason);
        let line = match reason {
            StopReason::Requested => "received SIGTERM, shutting down",
            StopReason::TtlExpired => "ttl expired, container killed",
        };
        s.events.push((stopped_at_ms, line.to_owned()));
        if let Some(deadline) = s.expires_at {
            self.expiries.remove(&(deadline, idx));
        }
        self.active.remove(&idx);
        for label in &self.sessions[idx].user_labels {
            let key = (label.0.clone(), label.1.clone());
            if let Some(indexes) = self.by_label.get_mut(&key) {
                indexes.remove(&idx);
                if indexes.is_empty() {
                    self.by_label.remove(&key);
                }
            }
        }
        let s = &self.sessions[idx];
        if let Some(n) = self.per_location.get_mut(&s.location) {
            *n -= 1;
        }
        let (location, host, slot) = (s.location.clone(), s.host, s.host_slot);
        if let Some(h) = self.hosts.get_mut(&host) {
            h.release(self.sessions[idx].ports.iter().map(|p| p.host));
        }
        self.set_host_sessions(&location, host, slot, |sessions| sessions.saturating_sub(1));
    }

    /// The least-loaded host of `location` with room for `n` ports (ties: first listed), and its
    /// position in `host_ips`. A host is in one location only (the world is validated so), so the
    /// location's index sees every change of its hosts' loads.
    fn least_loaded_host(&mut self, location: &Location, n: usize) -> Option<(IpAddr, usize)> {
        let hosts = &self.hosts;
        let loads = self.by_load.entry(location.id.clone()).or_insert_with(|| {
            let sessions_on = |ip: &IpAddr| hosts.get(ip).map_or(0, |h| h.sessions);
            location.host_ips.iter().enumerate().map(|(slot, ip)| (sessions_on(ip), slot)).collect()
        });
        loads
            .iter()
            .filter_map(|&(_, slot)| location.host_ips.get(slot).map(|ip| (*ip, slot)))
            .find(|(ip, _)| hosts.get(ip).is_none_or(|h| h.has_room_for(n)))
    }

    /// Changes a host's session count and keeps the load index of `location` in step.
    fn set_host_sessions(
        &mut self,
        location: &str,
        host: IpAddr,
        slot: usize,
        change: impl Fn(usize) -> usize,
    ) {
        let usage = self.hosts.entry(host).or_default();
        let before = usage.sessions;
        usage.sessions = change(before);
        if let Some(loads) = self.by_load.get_mut(location)
            && loads.remove(&(before, slot))
        {
            loads.insert((usage.sessions, slot));
        }
    }
}

fn encode_labels(
    id: &str,
    host: IpAddr,
    location: &Location,
    app: &Application,
    req: &NewSession,
    ports: &[PortMapping],
) -> Labels {
    let mut env = req.env.clone();
    // Gameye's own variables win over the caller's, as in the real container.
    env.insert("GAMEYE_SESSION_ID".to_owned(), id.to_owned());
    env.insert("GAMEYE_HOST".to_owned(), host.to_string());
    for p in ports {
        env.insert(
            format!("GAMEYE_PORT_{}_{}", p.protocol.as_str().to_uppercase(), p.container),
            p.host.to_string(),
        );
    }
    let mut gameye = serde_json::json!({
        "image": app.image,
        "tag": req.tag,
        "location": location.id,
        "restart": req.restart,
    });
    if let Some(ext) = &req.external_id {
        gameye["external_id"] = ext.clone().into();
    }
    Labels {
        env: serde_json::to_string(&env).unwrap_or_default(),
        tags: serde_json::to_string(&req.labels).unwrap_or_default(),
        gameye: gameye.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::{ContainerPort, ImageTag, Protocol};

    fn world() -> (Location, Application) {
        let location = Location {
            id: "eu".to_owned(),
            ping_ips: Vec::new(),
            host_ips: ["10.0.0.1", "10.0.0.2", "10.0.0.3"].map(|ip| ip.parse().unwrap()).to_vec(),
            capacity: 100,
        };
        let app = Application {
            image: "game".to_owned(),
            tags: vec![ImageTag { name: "1".to_owned(), priority: 0 }],
            ports: vec![ContainerPort { container: 7777, protocol: Protocol::Udp }],
        };
        (location, app)
    }

    fn create(registry: &mut Registry, location: &Location, app: &Application, id: &str) -> IpAddr {
        let request = NewSession { id: Some(id.to_owned()), tag: "1".to_owned(), ..NewSession::default() };
        let now = Instant::now();
        registry.create(location, app, request, now, Duration::ZERO, 0).unwrap().host
    }

    #[test]
    fn sessions_go_to_the_least_loaded_host_first_listed_on_ties() {
        let (location, app) = world();
        let mut registry = Registry::default();
        let hosts: Vec<String> =
            (0..6).map(|i| create(&mut registry, &location, &app, &format!("s{i}")).to_string()).collect();
        assert_eq!(hosts, ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.1", "10.0.0.2", "10.0.0.3"]);

        // Freeing a seat on the second host makes it the least loaded.
        registry.stop("s4", Instant::now()).unwrap();
        assert_eq!(create(&mut registry, &location, &app, "s6").to_string(), "10.0.0.2");
        assert_eq!(create(&mut registry, &location, &app, "s7").to_string(), "10.0.0.1");
    }

    #[test]
    fn chunked_storage_never_moves_what_it_holds() {
        let mut values = Chunked::default();
        values.push(0usize);
        let first: *const usize = &values[0];
        for n in 1..2 * CHUNK + 3 {
            values.push(n);
        }
        assert!(std::ptr::eq(first, &values[0]), "growing moved the first entry");
        assert_eq!(values.len(), 2 * CHUNK + 3);
        assert_eq!(
            (values[CHUNK - 1], values[CHUNK], values[2 * CHUNK + 2]),
            (CHUNK - 1, CHUNK, 2 * CHUNK + 2)
        );
        values[CHUNK] = 7;
        assert_eq!(values[CHUNK], 7);
        assert!(values.iter().copied().eq((0..2 * CHUNK + 3).map(|n| if n == CHUNK { 7 } else { n })));
    }
}

//! The JSON shapes sessions are served in (borrowed, so listing allocates little).

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Serialize, Serializer, ser::SerializeMap};
use tokio::time::Instant;

use crate::sessions::{Labels, PortMapping, Session, Status, StopReason};

/// The `port` record of list and describe: `{"7777/udp": 20001}` (POST /session uses an array instead).
pub struct PortMap<'a>(pub &'a [PortMapping]);

impl Serialize for PortMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for p in self.0 {
            map.serialize_entry(&format!("{}/{}", p.container, p.protocol.as_str()), &p.host)?;
        }
        map.end()
    }
}

/// A `SessionListEntry` of GET /session.
#[derive(Serialize)]
pub struct ListEntry<'a> {
    id: &'a str,
    image: &'a str,
    tag: &'a str,
    location: &'a str,
    host: IpAddr,
    /// Unix milliseconds.
    created: i64,
    port: PortMap<'a>,
    status: Status,
    labels: &'a Labels,
    #[serde(rename = "playerCount")]
    player_count: usize,
}

impl<'a> ListEntry<'a> {
    /// The entry of `s` at `now`.
    pub fn new(s: &'a Session, now: Instant) -> Self {
        ListEntry {
            id: &s.id,
            image: &s.image,
            tag: &s.tag,
            location: &s.location,
            host: s.host,
            created: s.created_ms,
            port: PortMap(&s.ports),
            status: s.status(now),
            labels: &s.labels,
            player_count: s.players.len(),
        }
    }
}

/// The `DescribedSession` of GET /session/{id}: a list entry plus its players.
#[derive(Serialize)]
pub struct Described<'a> {
    #[serde(flatten)]
    entry: ListEntry<'a>,
    players: Players<'a>,
}

#[derive(Serialize)]
struct Players<'a> {
    joined: &'a [String],
    #[serde(rename = "joinedCount")]
    joined_count: usize,
}

impl<'a> Described<'a> {
    /// The description of `s` at `now`.
    pub fn new(s: &'a Session, now: Instant) -> Self {
        Described {
            entry: ListEntry::new(s, now),
            players: Players { joined: &s.players, joined_count: s.players.len() },
        }
    }
}

/// An entry of `GET /_emulator/sessions`: what a test wants to assert on, stopped sessions included.
#[derive(Serialize)]
pub struct EmulatorEntry<'a> {
    id: &'a str,
    location: &'a str,
    image: &'a str,
    tag: &'a str,
    host: IpAddr,
    ports: &'a [PortMapping],
    status: Status,
    /// Unix milliseconds.
    created: i64,
    /// Unix milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_reason: Option<StopReason>,
    players: &'a [String],
    labels: &'a BTreeMap<String, String>,
    args: &'a [String],
}

impl<'a> EmulatorEntry<'a> {
    /// The control view of `s` at `now`.
    pub fn new(s: &'a Session, now: Instant) -> Self {
        EmulatorEntry {
            id: &s.id,
            location: &s.location,
            image: &s.image,
            tag: &s.tag,
            host: s.host,
            ports: &s.ports,
            status: s.status(now),
            created: s.created_ms,
            stopped_at: s.stopped_at_ms,
            stop_reason: s.stop_reason,
            players: &s.players,
            labels: &s.user_labels,
            args: &s.args,
        }
    }
}

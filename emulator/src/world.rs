//! The emulated world: who may call, which games exist, where they can run, and how the service misbehaves.

use std::{collections::HashSet, net::IpAddr, path::Path, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{DEFAULT_TOKEN, Error, faults::FaultRule};

/// Everything the emulator knows before its first request.
///
/// Every field has a default: a TOML file only needs the keys it changes, the rest comes from
/// [`World::default`]. Unknown keys are errors, so a typo never silently falls back to a default.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct World {
    /// API tokens and what each may do.
    pub tokens: Vec<Token>,
    /// The images (games) sessions can be started from.
    pub applications: Vec<Application>,
    /// The regions sessions can be placed in.
    pub locations: Vec<Location>,
    /// Time a session stays `created` before it is `running` (`"1s"` by default; `"0s"` allowed).
    #[serde(with = "crate::duration::human")]
    pub start_delay: Duration,
    /// Time between two lines of a followed log stream.
    #[serde(with = "crate::duration::human")]
    pub log_interval: Duration,
    /// Seed of the fault-injection dice; random when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Fault rules in force at start (replaceable at run time through `/_emulator/faults`).
    pub faults: Vec<FaultRule>,
    /// Behaviours of the live API that differ from the spec, off by default.
    pub quirks: Quirks,
}

/// One API token.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// The bearer token itself.
    pub token: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
}

/// A permission of an API token, spelled as in the spec's `security` sections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum Scope {
    /// POST /session.
    #[serde(rename = "session:start")]
    SessionStart,
    /// GET /session and GET /session/{id}.
    #[serde(rename = "session:read")]
    SessionRead,
    /// DELETE /session/{id}.
    #[serde(rename = "session:stop")]
    SessionStop,
    /// GET /available-location/{image} and GET /tag/….
    #[serde(rename = "regions:read")]
    RegionsRead,
    /// GET /logs.
    #[serde(rename = "logs:read")]
    LogsRead,
    /// GET /artifacts.
    #[serde(rename = "artifact:read")]
    ArtifactRead,
}

impl Scope {
    /// Every scope, for tokens that may do anything.
    pub const ALL: [Scope; 6] = [
        Scope::SessionStart,
        Scope::SessionRead,
        Scope::SessionStop,
        Scope::RegionsRead,
        Scope::LogsRead,
        Scope::ArtifactRead,
    ];

    /// The scope as the spec spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::SessionStart => "session:start",
            Scope::SessionRead => "session:read",
            Scope::SessionStop => "session:stop",
            Scope::RegionsRead => "regions:read",
            Scope::LogsRead => "logs:read",
            Scope::ArtifactRead => "artifact:read",
        }
    }
}

/// A game image and its tags.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Application {
    /// The image name (`image` in POST /session).
    pub image: String,
    /// The tags (`version` in POST /session); the highest priority is used when none is asked for.
    pub tags: Vec<ImageTag>,
    /// The container ports each session exposes; each gets a host port.
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
}

/// One tag of an image.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImageTag {
    /// The tag, e.g. `1.0.0`.
    pub name: String,
    /// Higher wins when POST /session names no version.
    #[serde(default)]
    pub priority: i64,
}

/// A port the game server listens on inside its container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerPort {
    /// The port inside the container.
    pub container: u16,
    /// `udp` or `tcp`.
    pub protocol: Protocol,
}

/// A transport protocol, spelled in lower case as the API does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

impl Protocol {
    /// `"udp"` or `"tcp"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
        }
    }
}

/// A region sessions can run in.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// The region id, e.g. `eu-west-1` (`location` in POST /session).
    pub id: String,
    /// Addresses clients ping to measure latency (GET /available-location).
    #[serde(default)]
    pub ping_ips: Vec<IpAddr>,
    /// Machines sessions are placed on (`host` of a session).
    pub host_ips: Vec<IpAddr>,
    /// Most sessions active at once; POST /session answers 420 beyond it.
    #[serde(default = "default_capacity")]
    pub capacity: usize,
}

fn default_capacity() -> usize {
    1000
}

/// Live-API behaviours that differ from the spec; each can be switched on to test a client against it.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quirks {
    /// POST /session answers 201 without `id` and with `ports: []`, as a recorded live response did.
    pub run_response_minimal: bool,
    /// GET /tag/… answers 404 instead of `{"exists": false}` for a tag that is not there, as seen live.
    pub tag_missing_404: bool,
}

impl Default for World {
    /// The world of DESIGN.md §5: token `emulator-token` with every scope, image `demo-game`
    /// (tags `1.0.0` then `latest`, ports 7777/udp and 7778/tcp) and five locations of 1,000 sessions.
    fn default() -> Self {
        let location = |id: &str, ping: [u8; 4], host: [u8; 4]| Location {
            id: id.to_owned(),
            ping_ips: vec![IpAddr::from(ping)],
            host_ips: vec![IpAddr::from(host)],
            capacity: default_capacity(),
        };
        World {
            tokens: vec![Token { token: DEFAULT_TOKEN.to_owned(), scopes: Scope::ALL.to_vec() }],
            applications: vec![Application {
                image: "demo-game".to_owned(),
                tags: vec![
                    ImageTag { name: "1.0.0".to_owned(), priority: 10 },
                    ImageTag { name: "latest".to_owned(), priority: 0 },
                ],
                ports: vec![
                    ContainerPort { container: 7777, protocol: Protocol::Udp },
                    ContainerPort { container: 7778, protocol: Protocol::Tcp },
                ],
            }],
            // TEST-NET addresses (RFC 5737): documentation only, never routed.
            locations: vec![
                location("eu-west-1", [192, 0, 2, 10], [203, 0, 113, 10]),
                location("eu-central-1", [192, 0, 2, 20], [203, 0, 113, 20]),
                location("us-east-1", [192, 0, 2, 30], [198, 51, 100, 30]),
                location("us-west-2", [192, 0, 2, 40], [198, 51, 100, 40]),
                location("ap-northeast-1", [192, 0, 2, 50], [198, 51, 100, 50]),
            ],
            start_delay: Duration::from_secs(1),
            log_interval: Duration::from_secs(1),
            seed: None,
            faults: Vec::new(),
            quirks: Quirks::default(),
        }
    }
}

impl World {
    /// Parses and validates a world written in TOML; missing keys keep their default value.
    pub fn from_toml_str(s: &str) -> Result<World, Error> {
        let world: World = toml::from_str(s)?;
        world.validate()?;
        Ok(world)
    }

    /// Reads, parses and validates a world file.
    pub fn from_file(path: &Path) -> Result<World, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::ReadWorld { path: path.to_owned(), source })?;
        World::from_toml_str(&text)
    }

    /// Checks what serde cannot: uniqueness, non-empty lists, fault rules in range.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |msg: String| Err(Error::InvalidWorld(msg));
        let mut seen = HashSet::new();
        for t in &self.tokens {
            if t.token.is_empty() || !seen.insert(t.token.as_str()) {
                return invalid(format!("token {:?} is empty or listed twice", t.token));
            }
        }
        let mut seen = HashSet::new();
        for app in &self.applications {
            if app.image.is_empty() || !seen.insert(app.image.as_str()) {
                return invalid(format!("image {:?} is empty or listed twice", app.image));
            }
            if app.tags.is_empty() {
                return invalid(format!("image {:?} has no tags", app.image));
            }
            let mut tags = HashSet::new();
            if let Some(t) = app.tags.iter().find(|t| !tags.insert(t.name.as_str())) {
                return invalid(format!("image {:?} lists tag {:?} twice", app.image, t.name));
            }
            let mut ports = HashSet::new();
            if let Some(p) = app.ports.iter().find(|p| p.container == 0 || !ports.insert(**p)) {
                return invalid(format!(
                    "image {:?}: port {}/{} is 0 or listed twice",
                    app.image,
                    p.container,
                    p.protocol.as_str()
                ));
            }
        }
        let mut seen = HashSet::new();
        let mut hosts = HashSet::new();
        for loc in &self.locations {
            if loc.id.is_empty() || !seen.insert(loc.id.as_str()) {
                return invalid(format!("location {:?} is empty or listed twice", loc.id));
            }
            if loc.host_ips.is_empty() {
                return invalid(format!("location {:?} has no host_ips", loc.id));
            }
            // A machine is in one location, once (host load is accounted per location).
            if let Some(ip) = loc.host_ips.iter().find(|ip| !hosts.insert(**ip)) {
                return invalid(format!("host {ip} is listed twice (location {:?})", loc.id));
            }
        }
        for rule in &self.faults {
            rule.validate().map_err(Error::InvalidWorld)?;
        }
        Ok(())
    }
}

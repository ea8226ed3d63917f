//! Gameye Session API wire types, as the official OpenAPI document (v1.2.1) and the live API's
//! observed quirks have them. Field names are Gameye's; Rust names explain them.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Body of `POST /session`. Empty optional fields are omitted: the API rejects unknown fields
/// and empty env values or args. Borrowed or owned (`Cow`): the placement path serializes the
/// request's own values without copying them.
#[derive(Clone, Default, Serialize)]
pub struct CreateSession<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub location: Cow<'a, str>,
    pub image: Cow<'a, str>,
    #[serde(rename = "version", skip_serializing_if = "Option::is_none")]
    pub tag: Option<Cow<'a, str>>,
    /// Container environment. A secret: `Debug` shows only its keys.
    #[serde(skip_serializing_if = "is_empty_map")]
    pub env: Cow<'a, BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub args: Cow<'a, [String]>,
    #[serde(skip_serializing_if = "is_empty_map")]
    pub labels: Cow<'a, BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<bool>,
    #[serde(serialize_with = "serialize_ttl", skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

fn is_empty_map(map: &BTreeMap<String, String>) -> bool {
    map.is_empty()
}

impl fmt::Debug for CreateSession<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateSession")
            .field("id", &self.id)
            .field("location", &self.location)
            .field("image", &self.image)
            .field("tag", &self.tag)
            .field("env_keys", &self.env.keys().collect::<Vec<_>>())
            .field("args", &self.args)
            .field("labels", &self.labels)
            .field("restart", &self.restart)
            .field("ttl", &self.ttl)
            .field("external_id", &self.external_id)
            .finish()
    }
}

/// Gameye's TTL form: whole hours and minutes ("2h30m"), rounded up to a minute as Gameye does.
pub fn format_ttl(ttl: Duration) -> String {
    let minutes = ttl.as_secs().div_ceil(60).max(1);
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h{m}m"),
    }
}

fn serialize_ttl<S: Serializer>(ttl: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    match ttl {
        Some(ttl) => serializer.serialize_str(&format_ttl(*ttl)),
        None => serializer.serialize_none(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One mapped port: the game server's container port and the host port players connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Port {
    #[serde(rename = "type")]
    pub protocol: Protocol,
    pub container: u16,
    pub host: u16,
}

/// Answer to `POST /session`. The live API has been seen to omit `id` and send `ports: []`:
/// the id the bridge sent is authoritative.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SessionCreated {
    #[serde(default)]
    pub id: Option<String>,
    pub host: String,
    #[serde(default)]
    pub ports: Vec<Port>,
}

/// Container status of a session. Values Gameye adds later are kept as `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SessionStatus {
    Created,
    Running,
    Restarting,
    Exited,
    Dead,
    Draining,
    ShuttingDown,
    ServerUnreachable,
    Other(String),
}

impl SessionStatus {
    pub fn as_str(&self) -> &str {
        match self {
            SessionStatus::Created => "created",
            SessionStatus::Running => "running",
            SessionStatus::Restarting => "restarting",
            SessionStatus::Exited => "exited",
            SessionStatus::Dead => "dead",
            SessionStatus::Draining => "draining",
            SessionStatus::ShuttingDown => "shuttingdown",
            SessionStatus::ServerUnreachable => "server_unreachable",
            SessionStatus::Other(other) => other,
        }
    }
}

impl<'de> Deserialize<'de> for SessionStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(match text.as_str() {
            "created" => SessionStatus::Created,
            "running" => SessionStatus::Running,
            "restarting" => SessionStatus::Restarting,
            "exited" => SessionStatus::Exited,
            "dead" => SessionStatus::Dead,
            "draining" => SessionStatus::Draining,
            "shuttingdown" => SessionStatus::ShuttingDown,
            "server_unreachable" => SessionStatus::ServerUnreachable,
            _ => SessionStatus::Other(text),
        })
    }
}

impl Serialize for SessionStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A session as `GET /session` lists it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SessionSummary {
    pub id: String,
    pub image: String,
    #[serde(default)]
    pub tag: Option<String>,
    pub location: String,
    pub host: String,
    /// Unix milliseconds.
    #[serde(deserialize_with = "millis")]
    pub created: i64,
    /// Gameye sends a `{"7777/udp": 20001}` map here, unlike the array POST returns.
    #[serde(rename = "port", deserialize_with = "port_map", default)]
    pub ports: Vec<Port>,
    #[serde(default)]
    pub status: Option<SessionStatus>,
    #[serde(default)]
    pub labels: SessionLabels,
    #[serde(rename = "playerCount", default)]
    pub player_count: Option<u32>,
}

/// `GET /session/{id}`: the summary plus who has joined.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DescribedSession {
    #[serde(flatten)]
    pub session: SessionSummary,
    #[serde(default)]
    pub players: JoinedPlayers,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct JoinedPlayers {
    #[serde(default)]
    pub joined: Vec<String>,
    #[serde(rename = "joinedCount", default)]
    pub joined_count: u32,
}

/// A session's labels as the live API returns them: the user's labels JSON-encoded under `tags`,
/// Gameye's metadata under `gameye`, and the container environment under `env`. The environment
/// holds secrets, so it is dropped while parsing and never kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionLabels {
    /// The labels the session was started with.
    pub user: BTreeMap<String, String>,
    /// Gameye's own metadata (`gameye` label), when it is a JSON object of strings.
    pub gameye: BTreeMap<String, String>,
}

impl<'de> Deserialize<'de> for SessionLabels {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Option::<BTreeMap<String, String>>::deserialize(deserializer)?.unwrap_or_default();
        let mut labels = SessionLabels::default();
        for (key, value) in raw {
            match key.as_str() {
                "env" => {}
                "tags" => match serde_json::from_str::<BTreeMap<String, serde_json::Value>>(&value) {
                    Ok(tags) => labels.user.extend(tags.into_iter().map(|(k, v)| (k, json_text(v)))),
                    // A flat label that happens to be called "tags".
                    Err(_) => {
                        labels.user.insert(key, value);
                    }
                },
                "gameye" => {
                    if let Ok(meta) = serde_json::from_str::<BTreeMap<String, serde_json::Value>>(&value) {
                        labels.gameye = meta.into_iter().map(|(k, v)| (k, json_text(v))).collect();
                    }
                }
                // Older or other shapes: labels sent flat.
                _ => {
                    labels.user.insert(key, value);
                }
            }
        }
        Ok(labels)
    }
}

fn json_text(value: serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

fn millis<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    // The spec types `created` as a number; accept a float without losing whole milliseconds.
    let value = f64::deserialize(deserializer)?;
    Ok(value as i64)
}

fn port_map<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Port>, D::Error> {
    use serde::de::Error;
    let raw = Option::<BTreeMap<String, f64>>::deserialize(deserializer)?.unwrap_or_default();
    let mut ports = Vec::with_capacity(raw.len());
    for (key, host) in raw {
        let (container, protocol) = key.split_once('/').unwrap_or((key.as_str(), "udp"));
        let protocol = match protocol.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => return Err(D::Error::custom(format!("unknown port protocol `{other}` in `{key}`"))),
        };
        let container =
            container.parse().map_err(|_| D::Error::custom(format!("bad container port in `{key}`")))?;
        ports.push(Port { protocol, container, host: host as u16 });
    }
    ports.sort_by_key(|p| (p.container, p.protocol as u8));
    Ok(ports)
}

/// Filters of `GET /session`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Every status, not only running sessions.
    pub all: bool,
    pub location: Option<String>,
    pub image: Option<String>,
    pub tag: Option<String>,
    pub host: Option<String>,
    pub player_count_lt: Option<u32>,
    pub player_count_gt: Option<u32>,
    /// `filter[key]=value`: exact label matches.
    pub labels: BTreeMap<String, String>,
    /// `filterNot[key]=value`: sessions carrying this label value are left out.
    pub labels_not: BTreeMap<String, String>,
}

impl ListFilter {
    pub(crate) fn query_pairs(&self) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        if self.all {
            pairs.push(("all".to_owned(), "true".to_owned()));
        }
        for (name, value) in
            [("location", &self.location), ("image", &self.image), ("tag", &self.tag), ("host", &self.host)]
        {
            if let Some(value) = value {
                pairs.push((name.to_owned(), value.clone()));
            }
        }
        if let Some(lt) = self.player_count_lt {
            pairs.push(("playerCount[lt]".to_owned(), lt.to_string()));
        }
        if let Some(gt) = self.player_count_gt {
            pairs.push(("playerCount[gt]".to_owned(), gt.to_string()));
        }
        for (key, value) in &self.labels {
            pairs.push((format!("filter[{key}]"), value.clone()));
        }
        for (key, value) in &self.labels_not {
            pairs.push((format!("filterNot[{key}]"), value.clone()));
        }
        pairs
    }
}

/// Decodes a listing (`{"sessions": [...]}`, other fields ignored) into its sessions one at a
/// time, breathing in between: a listing of a large deployment takes a core for a good while.
pub(crate) struct PacedSessionList<'p>(pub &'p mut crate::pace::Pacer);

impl<'de> serde::de::DeserializeSeed<'de> for PacedSessionList<'_> {
    type Value = Vec<SessionSummary>;

    fn deserialize<D: serde::Deserializer<'de>>(self, decoder: D) -> Result<Self::Value, D::Error> {
        decoder.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for PacedSessionList<'_> {
    type Value = Vec<SessionSummary>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a session list")
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut sessions = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "sessions" {
                if sessions.is_some() {
                    return Err(serde::de::Error::duplicate_field("sessions"));
                }
                sessions = Some(map.next_value_seed(PacedSessions(&mut *self.0))?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        sessions.ok_or_else(|| serde::de::Error::missing_field("sessions"))
    }
}

struct PacedSessions<'p>(&'p mut crate::pace::Pacer);

impl<'de> serde::de::DeserializeSeed<'de> for PacedSessions<'_> {
    type Value = Vec<SessionSummary>;

    fn deserialize<D: serde::Deserializer<'de>>(self, decoder: D) -> Result<Self::Value, D::Error> {
        decoder.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for PacedSessions<'_> {
    type Value = Vec<SessionSummary>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of sessions")
    }

    fn visit_seq<S: serde::de::SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
        let mut sessions = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(session) = seq.next_element::<SessionSummary>()? {
            sessions.push(session);
            if sessions.len() % 64 == 0 {
                self.0.breathe_blocking();
            }
        }
        Ok(sessions)
    }
}

/// Body of join and leave. `session` is always sent: the live leave endpoint needs it.
#[derive(Debug, Serialize)]
pub(crate) struct PlayersBody<'a> {
    pub session: &'a str,
    pub players: &'a [String],
}

/// Answer to join and leave: the session's player count and ids after the change.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PlayerCount {
    pub count: u32,
    #[serde(default)]
    pub players: Vec<String>,
}

/// A location that can host an image now, with addresses clients can ping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvailableLocation {
    pub id: String,
    #[serde(default)]
    pub ips: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct AvailableLocations {
    pub locations: Vec<AvailableLocation>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TagExists {
    pub exists: bool,
}

/// Gameye's error body. Every field is optional here: a proxy's answer may carry none of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ErrorResponse {
    #[serde(rename = "statusCode", default)]
    pub status_code: Option<u16>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub details: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    /// Gameye's correlation id: quote it to their support.
    #[serde(default)]
    pub identifier: Option<String>,
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub violations: Vec<FieldViolation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_uses_gameyes_hour_minute_form() {
        assert_eq!(format_ttl(Duration::from_secs(3600)), "1h");
        assert_eq!(format_ttl(Duration::from_secs(9000)), "2h30m");
        assert_eq!(format_ttl(Duration::from_secs(61)), "2m");
        assert_eq!(format_ttl(Duration::from_secs(5)), "1m");
    }

    #[test]
    fn create_session_omits_empty_fields_and_hides_env() {
        let mut body = CreateSession {
            location: "eu-west-1".into(),
            image: "demo-game".into(),
            ttl: Some(Duration::from_secs(5400)),
            ..Default::default()
        };
        body.env.to_mut().insert("SECRET".into(), "hunter2".into());
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"location": "eu-west-1", "image": "demo-game", "ttl": "1h30m",
                               "env": {"SECRET": "hunter2"}})
        );
        assert!(!format!("{body:?}").contains("hunter2"));
    }

    #[test]
    fn list_entry_reads_port_map_ms_and_json_labels() {
        let entry: SessionSummary = serde_json::from_value(serde_json::json!({
            "id": "s1", "image": "demo-game", "tag": "1.0.0", "location": "eu-west-1",
            "host": "203.0.113.1", "created": 1648472895000_i64,
            "port": {"7778/tcp": 20002, "7777/udp": 20001},
            "status": "running", "playerCount": 2,
            "labels": {"env": "{\"TOKEN\":\"hunter2\"}", "tags": "{\"match\":\"m-1\"}",
                       "gameye": "{\"image\":\"demo-game\"}"}
        }))
        .unwrap();
        assert_eq!(entry.created, 1648472895000);
        assert_eq!(
            entry.ports,
            vec![
                Port { protocol: Protocol::Udp, container: 7777, host: 20001 },
                Port { protocol: Protocol::Tcp, container: 7778, host: 20002 },
            ]
        );
        assert_eq!(entry.labels.user.get("match").map(String::as_str), Some("m-1"));
        assert_eq!(entry.labels.gameye.get("image").map(String::as_str), Some("demo-game"));
        assert!(!format!("{entry:?}").contains("hunter2"));
        assert_eq!(entry.status, Some(SessionStatus::Running));
    }

    #[test]
    fn a_paced_listing_decodes_like_a_plain_one_and_refuses_what_is_not_a_listing() {
        let entry = |n: u32| {
            serde_json::json!({"id": format!("s{n}"), "image": "demo-game", "location": "eu-west-1",
                               "host": "203.0.113.1", "created": 1648472895000_i64, "port": {"7777/udp": 20001}})
        };
        let sessions: Vec<_> = (0..200).map(entry).collect();
        let body = serde_json::to_vec(&serde_json::json!({"before": [1, {"x": 2}], "sessions": sessions,
                                                          "after": null}))
        .unwrap();
        let paced = |body: &[u8]| {
            let mut pacer = crate::pace::Pacer::new(crate::pace::Pace {
                busy: 0.5,
                slice: std::time::Duration::from_micros(1),
                idle_priority: false,
            });
            let mut decoder = serde_json::Deserializer::from_slice(body);
            serde::de::DeserializeSeed::deserialize(PacedSessionList(&mut pacer), &mut decoder)
                .and_then(|list| decoder.end().map(|()| list))
        };
        let decoded = paced(&body).unwrap();
        let plain: Vec<SessionSummary> = serde_json::from_value(serde_json::Value::Array(sessions)).unwrap();
        assert_eq!(decoded, plain);

        for bad in [
            &b"{}"[..],
            b"[]",
            b"{\"sessions\": {}}",
            b"{\"sessions\": [{\"id\": 1}]}",
            b"{\"sessions\": []} x",
            b"{\"sessions\": [], \"sessions\": []}",
        ] {
            assert!(paced(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn unknown_status_is_kept() {
        let status: SessionStatus = serde_json::from_str("\"hibernating\"").unwrap();
        assert_eq!(status, SessionStatus::Other("hibernating".into()));
    }

    #[test]
    fn list_filter_builds_deep_object_query() {
        let mut filter = ListFilter { all: true, player_count_lt: Some(8), ..Default::default() };
        filter.labels.insert("bridge".into(), "gameye-bridge".into());
        filter.labels_not.insert("mode".into(), "casual".into());
        let pairs = filter.query_pairs();
        assert!(pairs.contains(&("all".into(), "true".into())));
        assert!(pairs.contains(&("playerCount[lt]".into(), "8".into())));
        assert!(pairs.contains(&("filter[bridge]".into(), "gameye-bridge".into())));
        assert!(pairs.contains(&("filterNot[mode]".into(), "casual".into())));
    }
}

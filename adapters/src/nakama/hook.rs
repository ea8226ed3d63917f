//! What a matchmaker-matched hook sends, in every shape Nakama's runtimes produce, turned into a
//! [`MatchRequest`]: players from presences, teams from a property or the party, latencies from an
//! explicit list or from numeric properties, allowlisted string properties as session labels, and a
//! match id derived from the tickets when the hook names none.

use std::collections::{BTreeMap, BTreeSet};

use bridge::request::RESERVED_LABEL_KEYS;
use bridge::{InvalidRequest, InvalidRequestKind, MatchRequest, Player, Ttl, ValidatedMatch};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::config::NakamaSettings;

/// Prefix of every derived match id, so a Nakama match never collides with another door's ids.
pub const DERIVED_MATCH_ID_PREFIX: &str = "nakama-";
/// Label keys taken from entry properties are written under this prefix.
pub const PROPERTY_LABEL_PREFIX: &str = "nakama_";
/// Longest label value copied from a property; longer values are cut (labels are for filtering).
pub const MAX_PROPERTY_LABEL_CHARS: usize = 128;

/// How hook bodies are read, taken from `[nakama]`.
#[derive(Debug, Clone)]
pub struct HookRules {
    latency_prefix: String,
    latency_suffix: String,
    team_property: String,
    label_allowlist: Vec<String>,
    max_players: Option<u32>,
}

impl HookRules {
    pub fn from_settings(settings: &NakamaSettings) -> Self {
        // Validated to contain `{location}` exactly once; a bad pattern matches nothing.
        let (prefix, suffix) =
            settings.latency_property_pattern.split_once("{location}").unwrap_or(("\u{0}", "\u{0}"));
        Self {
            latency_prefix: prefix.to_owned(),
            latency_suffix: suffix.to_owned(),
            team_property: settings.team_property.clone(),
            label_allowlist: settings.label_allowlist.clone(),
            max_players: settings.max_players,
        }
    }

    /// The location a property name carries a latency for, if it matches the pattern.
    fn latency_location<'a>(&self, property: &'a str) -> Option<&'a str> {
        let location = property
            .strip_prefix(self.latency_prefix.as_str())?
            .strip_suffix(self.latency_suffix.as_str())?;
        (!location.is_empty()).then_some(location)
    }
}

impl Default for HookRules {
    fn default() -> Self {
        Self {
            latency_prefix: "latency_".to_owned(),
            latency_suffix: String::new(),
            team_property: "team".to_owned(),
            label_allowlist: Vec::new(),
            max_players: None,
        }
    }
}

/// One matched user, whatever runtime serialized it.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchedEntry {
    pub ticket: Option<String>,
    pub user_id: String,
    pub session_id: Option<String>,
    pub party_id: Option<String>,
    pub properties: Map<String, Value>,
    /// When the ticket was made, if the runtime says (Go: Unix nanoseconds).
    pub created_at: Option<OffsetDateTime>,
}

/// One figure of the envelope's explicit latency list (the shape of Nakama's `FleetUserLatencies`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplicitLatency {
    #[serde(alias = "userId", alias = "UserId")]
    pub user_id: String,
    #[serde(alias = "location", alias = "RegionIdentifier")]
    pub region: String,
    #[serde(alias = "latencyMs", alias = "LatencyInMilliseconds")]
    pub latency_ms: f64,
}

/// The envelope form: entries plus what only the game knows.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    entries: Vec<Value>,
    #[serde(default)]
    match_id: Option<String>,
    #[serde(default)]
    latencies: Vec<ExplicitLatency>,
    #[serde(default)]
    max_players: Option<u32>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    locations: Option<Vec<String>>,
    #[serde(default)]
    ttl: Option<Ttl>,
}

// `env` may carry secrets: never let a derived Debug print it.
impl std::fmt::Debug for MatchedHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatchedHook")
            .field("entries", &self.entries)
            .field("match_id", &self.match_id)
            .field("latencies", &self.latencies)
            .field("env_keys", &self.env.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A hook call, read but not yet turned into a match.
#[derive(Clone, PartialEq)]
pub struct MatchedHook {
    pub entries: Vec<MatchedEntry>,
    pub match_id: Option<String>,
    pub latencies: Vec<ExplicitLatency>,
    pub max_players: Option<u32>,
    pub image: Option<String>,
    pub version: Option<String>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub locations: Option<Vec<String>>,
    pub ttl: Option<Ttl>,
}

/// Reads a hook body: a JSON list of entries (Go, JS or Lua runtime shape) or the envelope
/// `{"entries": [...], "match_id"?, "latencies"?, ...}`, and builds the match it describes.
pub fn parse_matched(body: &[u8], rules: &HookRules) -> Result<ValidatedMatch, InvalidRequest> {
    read_hook(body)?.into_match(rules)
}

/// Reads a hook body without building the match (see [`parse_matched`]).
pub fn read_hook(body: &[u8]) -> Result<MatchedHook, InvalidRequest> {
    let value: Value = serde_json::from_slice(body).map_err(|e| InvalidRequest {
        kind: InvalidRequestKind::Malformed,
        field: None,
        message: format!("not JSON: {e}"),
    })?;
    let envelope = match value {
        Value::Array(entries) => Envelope { entries, ..Envelope::default() },
        // Read again from the bytes, so an error can name its field.
        Value::Object(ref object) if object.contains_key("entries") => {
            serde_json::from_slice(body).map_err(|e| InvalidRequest::from_json(body, &e))?
        }
        _ => {
            return Err(body_error(
                "must be the list of matchmaker entries, or an object {\"entries\": [...]}".to_owned(),
            ));
        }
    };
    if envelope.entries.is_empty() {
        return Err(InvalidRequest::invalid("entries", "must hold at least one matched user"));
    }
    let entries = envelope
        .entries
        .iter()
        .enumerate()
        .map(|(index, entry)| read_entry(index, entry))
        .collect::<Result<_, _>>()?;
    Ok(MatchedHook {
        entries,
        match_id: envelope.match_id,
        latencies: envelope.latencies,
        max_players: envelope.max_players,
        image: envelope.image,
        version: envelope.version,
        env: envelope.env,
        labels: envelope.labels,
        locations: envelope.locations,
        ttl: envelope.ttl,
    })
}

fn body_error(message: String) -> InvalidRequest {
    InvalidRequest { kind: InvalidRequestKind::Invalid, field: None, message }
}

/// The first of `names` present in `object` (Go writes snake_case, the JS runtime camelCase).
fn field<'a>(object: &'a Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    names.iter().find_map(|name| object.get(*name))
}

/// An optional string field: absent, `null` and `""` mean none; anything else but a string is an error.
fn optional_string(
    object: &Map<String, Value>,
    names: &[&str],
    path: &str,
) -> Result<Option<String>, InvalidRequest> {
    match field(object, names) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.is_empty() => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(InvalidRequest::invalid(format!("{path}.{}", names[0]), "must be a string")),
    }
}

fn read_entry(index: usize, value: &Value) -> Result<MatchedEntry, InvalidRequest> {
    let path = format!("entries[{index}]");
    let entry = value.as_object().ok_or_else(|| InvalidRequest::invalid(&path, "must be an object"))?;
    let presence = match entry.get("presence") {
        Some(Value::Object(presence)) => presence,
        Some(_) => return Err(InvalidRequest::invalid(format!("{path}.presence"), "must be an object")),
        None => return Err(InvalidRequest::invalid(format!("{path}.presence"), "is required")),
    };
    let presence_path = format!("{path}.presence");
    let user_id = optional_string(presence, &["user_id", "userId"], &presence_path)?
        .ok_or_else(|| InvalidRequest::invalid(format!("{presence_path}.user_id"), "is required"))?;
    let properties = match field(entry, &["properties"]) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(properties)) => properties.clone(),
        Some(_) => return Err(InvalidRequest::invalid(format!("{path}.properties"), "must be an object")),
    };
    for (name, value) in &properties {
        if !matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
            return Err(InvalidRequest::invalid(
                format!("{path}.properties.{name}"),
                "must be a string or a number",
            ));
        }
    }
    Ok(MatchedEntry {
        ticket: optional_string(entry, &["ticket"], &path)?,
        user_id,
        session_id: optional_string(presence, &["session_id", "sessionId"], &presence_path)?,
        party_id: optional_string(entry, &["party_id", "partyId"], &path)?,
        properties,
        created_at: read_create_time(entry, &path)?,
    })
}

/// Go writes `create_time` as Unix nanoseconds; seconds and milliseconds are recognised by size.
fn read_create_time(
    entry: &Map<String, Value>,
    path: &str,
) -> Result<Option<OffsetDateTime>, InvalidRequest> {
    let Some(value) = field(entry, &["create_time", "createTime"]) else { return Ok(None) };
    if value.is_null() {
        return Ok(None);
    }
    let number = value
        .as_f64()
        .filter(|n| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| InvalidRequest::invalid(format!("{path}.create_time"), "must be a Unix time"))?;
    // Zero is how Go writes a time nobody set.
    if number == 0.0 {
        return Ok(None);
    }
    let nanos = if number < 1e11 {
        number * 1e9
    } else if number < 1e14 {
        number * 1e6
    } else {
        number
    };
    Ok(OffsetDateTime::from_unix_timestamp_nanos(nanos as i128).ok())
}

impl MatchedHook {
    /// The match id: the hook's own, or one derived from the sorted ticket ids, so the same hook
    /// call retried yields the same id (and so the same session). Entries without a ticket
    /// contribute their session id, user id and creation time instead. An entry with neither a
    /// ticket nor a creation time (the JS runtime's shape) leaves nothing that tells this match
    /// from the next one of the same players on the same sockets, which would get this match's
    /// server: the hook must then name the match.
    pub fn match_id(&self) -> Result<String, InvalidRequest> {
        if let Some(match_id) = self.match_id.as_ref().filter(|id| !id.is_empty()) {
            return Ok(match_id.clone());
        }
        if let Some(index) = self.entries.iter().position(|e| e.ticket.is_none() && e.created_at.is_none()) {
            return Err(InvalidRequest::invalid(
                "match_id",
                format!(
                    "required: entries[{index}] has no ticket and no create_time (the JS runtime's shape), so \
                     a rematch of the same players could not be told from this match; send the envelope \
                     {{\"match_id\": <an id made once per matched call>, \"entries\": [...]}}"
                ),
            ));
        }
        let mut keys: Vec<String> = self
            .entries
            .iter()
            .map(|entry| match &entry.ticket {
                Some(ticket) => format!("ticket:{ticket}"),
                None => format!(
                    "presence:{}/{}/{}",
                    entry.session_id.as_deref().unwrap_or(""),
                    entry.user_id,
                    entry.created_at.map(|t| t.unix_timestamp_nanos()).unwrap_or_default()
                ),
            })
            .collect();
        keys.sort();
        keys.dedup();
        let digest = Sha256::digest(keys.join("\n").as_bytes());
        let hex: String = digest[..16].iter().map(|byte| format!("{byte:02x}")).collect();
        Ok(format!("{DERIVED_MATCH_ID_PREFIX}{hex}"))
    }

    /// The user ids, in entry order.
    pub fn user_ids(&self) -> Vec<String> {
        self.entries.iter().map(|entry| entry.user_id.clone()).collect()
    }

    /// Builds and validates the match request.
    pub fn into_match(self, rules: &HookRules) -> Result<ValidatedMatch, InvalidRequest> {
        // A missing match id is reported after the request's own rules (below), so a malformed
        // entry is named first.
        let match_id = self.match_id();
        let users: BTreeSet<&str> = self.entries.iter().map(|entry| entry.user_id.as_str()).collect();
        let mut explicit: BTreeMap<&str, BTreeMap<String, u32>> = BTreeMap::new();
        for (index, figure) in self.latencies.iter().enumerate() {
            let path = format!("latencies[{index}]");
            if !users.contains(figure.user_id.as_str()) {
                return Err(InvalidRequest::invalid(
                    format!("{path}.user_id"),
                    format!("{:?} is not one of the matched users", figure.user_id),
                ));
            }
            let ms = whole_ms(figure.latency_ms).ok_or_else(|| {
                InvalidRequest::invalid(format!("{path}.latency_ms"), "must be a non-negative number")
            })?;
            explicit.entry(figure.user_id.as_str()).or_default().insert(figure.region.clone(), ms);
        }
        let mut players = Vec::with_capacity(self.entries.len());
        for (index, entry) in self.entries.iter().enumerate() {
            let latencies = match explicit.remove(entry.user_id.as_str()) {
                Some(latencies) => latencies,
                None => property_latencies(index, entry, rules)?,
            };
            let team = match entry.properties.get(&rules.team_property) {
                Some(Value::String(team)) if !team.is_empty() => Some(team.clone()),
                _ => entry.party_id.clone(),
            };
            players.push(Player { id: entry.user_id.clone(), latencies, team });
        }
        let mut labels = property_labels(&self.entries, rules);
        // The hook's own labels win over copied properties.
        labels.extend(self.labels);
        let requested_at = self.entries.iter().filter_map(|entry| entry.created_at).min();
        let validated = MatchRequest {
            match_id: match_id.clone().unwrap_or_else(|_| format!("{DERIVED_MATCH_ID_PREFIX}unnamed")),
            image: self.image,
            version: self.version,
            players,
            locations: self.locations,
            max_players: self.max_players.or(rules.max_players),
            env: self.env,
            args: Vec::new(),
            labels,
            ttl: self.ttl,
            requested_at,
        }
        .validate()?;
        match_id.map(|_| validated)
    }
}

/// Latencies from numeric properties named by the pattern (`latency_eu-west-1: 34`).
fn property_latencies(
    index: usize,
    entry: &MatchedEntry,
    rules: &HookRules,
) -> Result<BTreeMap<String, u32>, InvalidRequest> {
    let mut latencies = BTreeMap::new();
    for (name, value) in &entry.properties {
        let Some(location) = rules.latency_location(name) else { continue };
        // Nakama merges string and numeric properties; a string of that name is not a figure.
        let Value::Number(number) = value else { continue };
        let ms = number.as_f64().and_then(whole_ms).ok_or_else(|| {
            InvalidRequest::invalid(
                format!("entries[{index}].properties.{name}"),
                "must be a non-negative number",
            )
        })?;
        latencies.insert(location.to_owned(), ms);
    }
    Ok(latencies)
}

/// Rounded up, so a cap is never met by rounding down; out-of-range figures are refused later.
fn whole_ms(ms: f64) -> Option<u32> {
    (ms.is_finite() && ms >= 0.0).then(|| ms.ceil().min(f64::from(u32::MAX)) as u32)
}

/// Allowlisted string properties as `nakama_<key>` labels. Players may differ: the distinct values
/// are joined with `,` in sorted order, so the label is the same however the entries were ordered.
fn property_labels(entries: &[MatchedEntry], rules: &HookRules) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    for key in &rules.label_allowlist {
        let values: BTreeSet<String> = entries
            .iter()
            .filter_map(|entry| entry.properties.get(key))
            .filter_map(|value| match value {
                Value::String(text) => Some(clean_label_value(text)),
                _ => None,
            })
            .filter(|text| !text.is_empty())
            .collect();
        if values.is_empty() {
            continue;
        }
        let label_key = format!("{PROPERTY_LABEL_PREFIX}{}", clean_label_key(key));
        if RESERVED_LABEL_KEYS.contains(&label_key.as_str()) {
            continue;
        }
        let joined: String = values.into_iter().collect::<Vec<_>>().join(",");
        labels.insert(label_key, joined.chars().take(MAX_PROPERTY_LABEL_CHARS).collect());
    }
    labels
}

/// Keeps letters, digits, `_`, `-` and `.`, so the key is safe in Gameye's label filters.
fn clean_label_key(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') { c } else { '_' })
        .collect()
}

fn clean_label_value(value: &str) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_PROPERTY_LABEL_CHARS)
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn go_entry(ticket: &str, user: &str, properties: Value) -> Value {
        json!({"ticket": ticket, "presence": {"user_id": user, "session_id": format!("s-{user}"),
               "username": user, "node": "nakama1"},
               "properties": properties, "party_id": "", "create_time": 1_763_700_000_000_000_000_i64})
    }

    fn js_entry(user: &str, properties: Value) -> Value {
        json!({"presence": {"userId": user, "sessionId": format!("s-{user}"), "username": user, "node": "nakama1"},
               "properties": properties})
    }

    fn parse(body: &Value) -> Result<ValidatedMatch, InvalidRequest> {
        parse_matched(body.to_string().as_bytes(), &HookRules::default())
    }

    #[test]
    fn go_and_js_shapes_give_the_same_players() {
        let go =
            parse(&json!([go_entry("t1", "u1", json!({"team": "red"})), go_entry("t2", "u2", json!({}))]))
                .unwrap();
        let js = parse(&json!({"match_id": go.match_id.clone(),
            "entries": [js_entry("u1", json!({"team": "red"})), js_entry("u2", json!({}))]}))
        .unwrap();
        assert_eq!(go.players, js.players);
        assert_eq!(go.players[0].team.as_deref(), Some("red"));
        assert!(go.match_id.starts_with(DERIVED_MATCH_ID_PREFIX));
        assert!(go.requested_at.is_some(), "create_time becomes requested_at");
    }

    #[test]
    fn derived_match_id_ignores_entry_order_and_depends_on_tickets() {
        let a = parse(&json!([go_entry("t1", "u1", json!({})), go_entry("t2", "u2", json!({}))])).unwrap();
        let b = parse(&json!([go_entry("t2", "u2", json!({})), go_entry("t1", "u1", json!({}))])).unwrap();
        let c = parse(&json!([go_entry("t3", "u1", json!({})), go_entry("t2", "u2", json!({}))])).unwrap();
        assert_eq!(a.match_id, b.match_id);
        assert_ne!(a.match_id, c.match_id);
        assert_eq!(a.match_id.len(), DERIVED_MATCH_ID_PREFIX.len() + 32);
    }

    #[test]
    fn entries_without_ticket_or_creation_time_need_the_hooks_match_id() {
        let bare = json!([js_entry("u1", json!({})), js_entry("u2", json!({}))]);
        let refused = parse(&bare).unwrap_err();
        assert_eq!(refused.field.as_deref(), Some("match_id"), "{refused:?}");
        let named = parse(&json!({"match_id": "m-1", "entries": bare})).unwrap();
        assert_eq!(named.match_id, "m-1");
        // A creation time tells one queueing of the same players from the next.
        let mut timed = js_entry("u1", json!({}));
        timed["create_time"] = json!(1_763_700_000_000_000_000_i64);
        assert!(parse(&json!([timed])).unwrap().match_id.starts_with(DERIVED_MATCH_ID_PREFIX));
    }

    #[test]
    fn a_wrongly_typed_envelope_field_is_named() {
        let body = json!({"entries": [go_entry("t1", "u1", json!({}))], "max_players": "eight"});
        let refused = parse(&body).unwrap_err();
        assert_eq!(refused.field.as_deref(), Some("max_players"), "{refused:?}");
        assert_eq!(refused.kind, InvalidRequestKind::Invalid);
    }

    #[test]
    fn the_hooks_match_id_is_held_to_the_match_id_rules() {
        let entries = json!([go_entry("t1", "u1", json!({}))]);
        for dotted in ["m.", ".m", "a..b"] {
            let refused = parse(&json!({"match_id": dotted, "entries": entries})).unwrap_err();
            assert_eq!(refused.field.as_deref(), Some("match_id"), "{dotted:?}: {refused:?}");
        }
        assert_eq!(parse(&json!({"match_id": "a.b", "entries": entries})).unwrap().match_id, "a.b");
    }

    #[test]
    fn explicit_latencies_win_over_properties() {
        let body = json!({"entries": [go_entry("t1", "u1", json!({"latency_eu-west-1": 80, "latency_us-east-1": 20.2})),
                                      go_entry("t2", "u2", json!({"latency_us-east-1": 30}))],
                          "latencies": [{"user_id": "u1", "region": "eu-west-1", "latency_ms": 10}]});
        let request = parse(&body).unwrap();
        assert_eq!(request.players[0].latencies, BTreeMap::from([("eu-west-1".to_owned(), 10)]));
        assert_eq!(request.players[1].latencies, BTreeMap::from([("us-east-1".to_owned(), 30)]));
    }

    #[test]
    fn latency_properties_follow_the_configured_pattern() {
        let settings_pattern = HookRules {
            latency_prefix: "ping.".into(),
            latency_suffix: ".ms".into(),
            ..HookRules::default()
        };
        let body = json!([go_entry(
            "t1",
            "u1",
            json!({"ping.eu-central-1.ms": 12.1, "latency_eu-west-1": 3, "ping.x.ms": "fast"})
        )]);
        let request = parse_matched(body.to_string().as_bytes(), &settings_pattern).unwrap();
        assert_eq!(request.players[0].latencies, BTreeMap::from([("eu-central-1".to_owned(), 13)]));
    }

    #[test]
    fn party_is_the_team_when_no_team_property_and_labels_are_allowlisted() {
        let rules =
            HookRules { label_allowlist: vec!["mode".into(), "secret".into()], ..HookRules::default() };
        let mut first = go_entry("t1", "u1", json!({"mode": "ranked", "secret": ""}));
        first["party_id"] = json!("party-9");
        let body = json!({"entries": [first, go_entry("t2", "u2", json!({"mode": "casual", "other": "x"}))],
                          "labels": {"season": "4"}});
        let request = parse_matched(body.to_string().as_bytes(), &rules).unwrap();
        assert_eq!(request.players[0].team.as_deref(), Some("party-9"));
        assert_eq!(request.players[1].team, None);
        assert_eq!(
            request.labels,
            BTreeMap::from([
                ("nakama_mode".to_owned(), "casual,ranked".to_owned()),
                ("season".to_owned(), "4".to_owned())
            ])
        );
    }

    #[test]
    fn malformed_hooks_name_the_problem() {
        let cases = [
            (json!([]), "entries"),
            (json!([{"properties": {}}]), "entries[0].presence"),
            (json!([{"presence": {"username": "x"}}]), "entries[0].presence.user_id"),
            (json!([{"presence": "u1"}]), "entries[0].presence"),
            (json!([{"presence": {"user_id": 7}}]), "entries[0].presence.user_id"),
            (json!([{"presence": {"user_id": "u"}, "properties": {"a": [1]}}]), "entries[0].properties.a"),
            (
                json!([{"presence": {"user_id": "u"}, "properties": {"latency_x": -3}}]),
                "entries[0].properties.latency_x",
            ),
            (
                json!({"entries": [js_entry("u", json!({}))], "latencies": [{"user_id": "v", "region": "r", "latency_ms": 1}]}),
                "latencies[0].user_id",
            ),
            (json!([js_entry("u", json!({})), js_entry("u", json!({}))]), "players[1].id"),
        ];
        for (body, field) in cases {
            let error = parse(&body).expect_err(&body.to_string());
            assert_eq!(error.field.as_deref(), Some(field), "{body}: {error}");
            assert_eq!(error.kind, InvalidRequestKind::Invalid);
        }
        assert_eq!(
            parse_matched(b"{nope", &HookRules::default()).unwrap_err().kind,
            InvalidRequestKind::Malformed
        );
        assert!(parse(&json!({"entries": [js_entry("u", json!({}))], "surprise": 1})).is_err());
        assert!(parse(&json!({"players": []})).unwrap_err().field.is_none());
    }
}

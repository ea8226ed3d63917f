//! `POST /v1/nakama/events`: Nakama telling the bridge that users left (session end) or other
//! custom events. Seats are not tracked yet (that lands with the players issue), so events are read,
//! checked, counted and logged; nothing else changes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use bridge::{InvalidRequest, InvalidRequestKind};

/// Most events one request may carry.
pub const MAX_EVENTS_PER_REQUEST: usize = 1_000;
/// Longest accepted event name.
const MAX_EVENT_NAME_CHARS: usize = 64;

/// One event, as the example module sends it (also Nakama's own `nkruntime.Event` with a user id).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NakamaEvent {
    /// `session_end`, or any custom event name.
    #[serde(alias = "type")]
    pub name: String,
    #[serde(default, alias = "userId")]
    pub user_id: Option<String>,
    #[serde(default, alias = "userIds")]
    pub user_ids: Vec<String>,
    #[serde(default, alias = "sessionId")]
    pub session_id: Option<String>,
    #[serde(default)]
    pub match_id: Option<String>,
    #[serde(default)]
    pub properties: Map<String, Value>,
}

impl NakamaEvent {
    /// Every user the event concerns.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.user_id.iter().chain(self.user_ids.iter()).map(String::as_str)
    }

    /// The event name as a metric label: known names as they are, the rest as `custom`, so
    /// arbitrary names cannot grow the metric without bound.
    pub fn kind(&self) -> &'static str {
        match self.name.as_str() {
            "session_end" | "sessionEnd" => "session_end",
            "session_start" | "sessionStart" => "session_start",
            "match_leave" | "matchLeave" | "leave" => "leave",
            _ => "custom",
        }
    }
}

/// The answer: how many events were taken, and that they changed nothing yet.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventsAccepted {
    pub accepted: usize,
    /// Users named by the accepted events.
    pub users: usize,
    /// False until seat tracking lands: events are recorded (log, metric), not applied.
    pub applied: bool,
}

/// Reads `{"events": [...]}`, a list of events, or a single event.
pub fn parse_events(body: &[u8]) -> Result<Vec<NakamaEvent>, InvalidRequest> {
    let value: Value = serde_json::from_slice(body).map_err(|e| InvalidRequest {
        kind: InvalidRequestKind::Malformed,
        field: None,
        message: format!("not JSON: {e}"),
    })?;
    let (list, prefix) = match value {
        Value::Object(mut object) if object.contains_key("events") => match object.remove("events") {
            Some(Value::Array(list)) => (list, "events"),
            _ => return Err(InvalidRequest::invalid("events", "must be a list")),
        },
        Value::Array(list) => (list, "events"),
        single @ Value::Object(_) => (vec![single], "event"),
        _ => return Err(InvalidRequest::invalid("events", "must be an event or a list of events")),
    };
    if list.is_empty() {
        return Err(InvalidRequest::invalid("events", "must hold at least one event"));
    }
    if list.len() > MAX_EVENTS_PER_REQUEST {
        return Err(InvalidRequest::invalid("events", format!("must hold at most {MAX_EVENTS_PER_REQUEST}")));
    }
    list.into_iter()
        .enumerate()
        .map(|(index, value)| {
            let path = if prefix == "event" { prefix.to_owned() } else { format!("{prefix}[{index}]") };
            let event: NakamaEvent =
                serde_json::from_value(value).map_err(|e| InvalidRequest::invalid(&path, e.to_string()))?;
            if event.name.is_empty() || event.name.chars().count() > MAX_EVENT_NAME_CHARS {
                return Err(InvalidRequest::invalid(
                    format!("{path}.name"),
                    format!("must be 1-{MAX_EVENT_NAME_CHARS} characters"),
                ));
            }
            if event.users().next().is_none() || event.users().any(str::is_empty) {
                return Err(InvalidRequest::invalid(
                    format!("{path}.user_id"),
                    "must name the user(s) concerned",
                ));
            }
            Ok(event)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_every_accepted_form() {
        let one = json!({"name": "session_end", "user_id": "u1"});
        assert_eq!(parse_events(one.to_string().as_bytes()).unwrap().len(), 1);
        let list =
            json!([{"type": "sessionEnd", "userId": "u1"}, {"name": "rage_quit", "user_ids": ["u2", "u3"]}]);
        let events = parse_events(list.to_string().as_bytes()).unwrap();
        assert_eq!(events[0].kind(), "session_end");
        assert_eq!(events[1].kind(), "custom");
        assert_eq!(events[1].users().count(), 2);
        let wrapped = json!({"events": [one]});
        assert_eq!(parse_events(wrapped.to_string().as_bytes()).unwrap().len(), 1);
    }

    #[test]
    fn refuses_events_without_users_or_names() {
        for body in
            [json!({"events": []}), json!({"name": "session_end"}), json!([{"user_id": "u"}]), json!(3)]
        {
            assert!(parse_events(body.to_string().as_bytes()).is_err(), "{body}");
        }
    }
}

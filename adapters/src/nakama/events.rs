//! `POST /v1/nakama/events`: Nakama telling the bridge that users left (session end, match leave)
//! or other custom events. Reading and checking the events, and working out which sessions the
//! leaving users are removed from, are pure functions here; the HTTP handler applies the plan
//! through the `SeatService`.
//!
//! Where a leaving user sits: an event naming a `match_id` means the session the Nakama door placed
//! for that match (`bridge::session_id("nakama", match_id)`, as for placements); an event without
//! one means every live session in which the user is joined or holds a reservation, found with one
//! look-up per request (`SeatService::sessions_holding`, which reads only the sessions the players'
//! index names).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use bridge::request::MAX_MATCH_ID_CHARS;
use bridge::seats::SessionSeats;
use bridge::{InvalidRequest, InvalidRequestKind};

/// Most events one request may carry.
pub const MAX_EVENTS_PER_REQUEST: usize = 1_000;
/// Most users one request may name, over all its events.
pub const MAX_USERS_PER_REQUEST: usize = 1_000;
/// Longest accepted event name.
const MAX_EVENT_NAME_CHARS: usize = 64;

/// One event, as the example module sends it (also Nakama's own `nkruntime.Event` with a user id).
#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
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
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
}

/// What `POST /v1/nakama/events` reads, in any of its three shapes (for the OpenAPI document;
/// [`parse_events`] does the reading).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum EventsBody {
    Envelope { events: Vec<NakamaEvent> },
    List(Vec<NakamaEvent>),
    One(NakamaEvent),
}

impl NakamaEvent {
    /// Every user the event concerns.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.user_id.iter().chain(self.user_ids.iter()).map(String::as_str)
    }

    /// The match the event concerns, when it names one (an empty string, Nakama's "none", does not).
    pub fn match_id(&self) -> Option<&str> {
        self.match_id.as_deref().filter(|id| !id.is_empty())
    }

    /// Whether the event takes its users' seats away: the end of their Nakama session, or leaving
    /// the match. Other events are recorded only.
    pub fn removes_players(&self) -> bool {
        matches!(self.kind(), "session_end" | "leave")
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

/// The answer: how many events were taken, and what they changed.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventsAccepted {
    pub accepted: usize,
    /// Users named by the accepted events.
    pub users: usize,
    /// True: leave events were applied to the seats (events of other kinds are recorded only).
    pub applied: bool,
    /// Sessions whose seats changed, in session id order; users who held no seat appear nowhere.
    pub sessions: Vec<SeatsReleased>,
}

/// What the events took away in one session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SeatsReleased {
    pub session_id: Uuid,
    /// Joined players who left.
    pub left: Vec<String>,
    /// Players whose reserved seat was released.
    pub released: Vec<String>,
}

/// Which users leave which sessions, as far as the events tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeavePlan {
    /// Users to remove per session (sessions named through a match id, and those found holding
    /// unlocated users).
    pub by_session: BTreeMap<Uuid, BTreeSet<String>>,
    /// Users of events without a match id: removed wherever they hold a seat.
    pub unlocated: BTreeSet<String>,
}

impl LeavePlan {
    /// The plan of the events that remove players (see [`NakamaEvent::removes_players`]).
    pub fn of(events: &[NakamaEvent]) -> Self {
        let mut plan = Self::default();
        for event in events.iter().filter(|e| e.removes_players()) {
            let users = event.users().map(str::to_owned);
            match event.match_id() {
                Some(match_id) => plan
                    .by_session
                    .entry(bridge::session_id(super::SOURCE, match_id))
                    .or_default()
                    .extend(users),
                None => plan.unlocated.extend(users),
            }
        }
        plan
    }

    /// Assigns the unlocated users to every one of `sessions` in which they are joined or hold a
    /// reservation (expired ones included: leaving releases them too). Users found nowhere hold no
    /// seat, and are dropped.
    pub fn locate(&mut self, sessions: &[SessionSeats]) {
        let unlocated = std::mem::take(&mut self.unlocated);
        for session in sessions {
            let holders: Vec<String> = unlocated.iter().filter(|user| session.holds(user)).cloned().collect();
            if !holders.is_empty() {
                self.by_session.entry(session.session_id).or_default().extend(holders);
            }
        }
    }
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
    let events: Vec<NakamaEvent> = list
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            let path = if prefix == "event" { prefix.to_owned() } else { format!("{prefix}[{index}]") };
            // From bytes, not the value, so an error can name the field inside the event.
            let bytes = value.to_string();
            let event: NakamaEvent = serde_json::from_str(&bytes).map_err(|e| {
                let inner = InvalidRequest::from_json(bytes.as_bytes(), &e);
                let field = match inner.field {
                    Some(field) if field.starts_with('[') => format!("{path}{field}"),
                    Some(field) => format!("{path}.{field}"),
                    None => path.clone(),
                };
                InvalidRequest::invalid(field, inner.message)
            })?;
            if event.name.is_empty() || event.name.chars().count() > MAX_EVENT_NAME_CHARS {
                return Err(InvalidRequest::invalid(
                    format!("{path}.name"),
                    format!("must be 1-{MAX_EVENT_NAME_CHARS} characters"),
                ));
            }
            if event.users().next().is_none() {
                return Err(InvalidRequest::invalid(
                    format!("{path}.user_id"),
                    "must name the user(s) concerned",
                ));
            }
            if event.users().any(|user| user.is_empty() || user.chars().count() > MAX_MATCH_ID_CHARS) {
                return Err(InvalidRequest::invalid(
                    format!("{path}.user_id"),
                    format!("user ids must be 1-{MAX_MATCH_ID_CHARS} characters"),
                ));
            }
            if event.match_id().is_some_and(|id| id.chars().count() > MAX_MATCH_ID_CHARS) {
                return Err(InvalidRequest::invalid(
                    format!("{path}.match_id"),
                    format!("must be at most {MAX_MATCH_ID_CHARS} characters"),
                ));
            }
            Ok(event)
        })
        .collect::<Result<_, _>>()?;
    if events.iter().map(|e| e.users().count()).sum::<usize>() > MAX_USERS_PER_REQUEST {
        return Err(InvalidRequest::invalid(
            "events",
            format!("must name at most {MAX_USERS_PER_REQUEST} users in all"),
        ));
    }
    Ok(events)
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
        let long = "u".repeat(MAX_MATCH_ID_CHARS + 1);
        let many: Vec<String> = (0..=MAX_USERS_PER_REQUEST).map(|i| format!("u{i}")).collect();
        for body in [
            json!({"events": []}),
            json!({"name": "session_end"}),
            json!([{"user_id": "u"}]),
            json!(3),
            json!({"name": "session_end", "user_id": ""}),
            json!({"name": "session_end", "user_id": long}),
            json!({"name": "session_end", "user_id": "u", "match_id": long}),
            json!({"name": "session_end", "user_id": 7}),
            json!({"name": "session_end", "user_ids": many}),
        ] {
            assert!(parse_events(body.to_string().as_bytes()).is_err(), "{body}");
        }
    }

    #[test]
    fn a_wrongly_typed_field_is_named() {
        let error =
            parse_events(br#"{"events": [{"name": "x", "user_id": "u"}, {"name": "y", "user_id": 7}]}"#)
                .unwrap_err();
        assert_eq!(error.field.as_deref(), Some("events[1].user_id"), "{error:?}");
        let error = parse_events(br#"{"name": "x", "user_ids": ["u", 3]}"#).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("event.user_ids[1]"), "{error:?}");
    }

    fn event(name: &str, users: &[&str], match_id: Option<&str>) -> NakamaEvent {
        let body = json!({"name": name, "user_ids": users, "match_id": match_id});
        parse_events(body.to_string().as_bytes()).unwrap().remove(0)
    }

    fn seats(id: u128, joined: &[&str], reserved: &[&str]) -> SessionSeats {
        let reservation = bridge::Reservation {
            players: reserved.iter().map(|p| (*p).to_owned()).collect(),
            expires_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        SessionSeats {
            session_id: Uuid::from_u128(id),
            capacity: 8,
            status: bridge::SessionStatus::Running,
            info: bridge::SessionInfo::default(),
            joined: joined.iter().map(|p| (*p).to_owned()).collect(),
            reservations: [(Uuid::from_u128(id + 100), reservation)].into(),
            last_order: Default::default(),
        }
    }

    #[test]
    fn leaves_go_to_the_match_session_or_wherever_the_user_sits() {
        let events = [
            event("session_end", &["a", "b"], Some("m-1")),
            event("match_leave", &["c"], None),
            event("session_end", &["d", "e"], Some("")),
            event("session_start", &["f"], None),
            event("rage_quit", &["g"], Some("m-2")),
        ];
        let mut plan = LeavePlan::of(&events);
        let m1 = bridge::session_id("nakama", "m-1");
        assert_eq!(plan.by_session.keys().collect::<Vec<_>>(), vec![&m1], "only leave events count");
        assert_eq!(plan.unlocated, ["c", "d", "e"].map(str::to_owned).into());

        plan.locate(&[seats(1, &["c", "x"], &["d"]), seats(2, &["y"], &[]), seats(3, &["d"], &[])]);
        assert!(plan.unlocated.is_empty());
        let users = |id: Uuid| plan.by_session.get(&id).map(|u| u.iter().cloned().collect::<Vec<_>>());
        assert_eq!(users(m1), Some(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(users(Uuid::from_u128(1)), Some(vec!["c".to_owned(), "d".to_owned()]));
        assert_eq!(users(Uuid::from_u128(2)), None, "nobody leaving sits there");
        assert_eq!(users(Uuid::from_u128(3)), Some(vec!["d".to_owned()]));
        // "e" sits nowhere: no session.
        assert_eq!(plan.by_session.len(), 3);
    }
}

//! The answer to a placed match (DESIGN §2): where the players connect.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// A placed match, as published on `gameye.match.assigned.<match_id>` and returned by the
/// synchronous doors.
///
/// Unknown fields are ignored when reading one back, so stored assignments survive the
/// addition of fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Assignment {
    /// The match this answers.
    pub match_id: String,
    /// The Gameye session id (see [`crate::session_id()`]).
    pub session_id: Uuid,
    /// The image the session runs.
    pub image: String,
    /// The Gameye location id the session runs in.
    pub location: String,
    /// The address players connect to.
    pub host: String,
    /// Port mappings, as Gameye returned them (possibly empty: Gameye sometimes omits them).
    pub ports: Vec<Port>,
    /// The ids of the match's players, in request order.
    pub players: Vec<String>,
    /// Each player's reported latency to `location`; a player with no figure for it is absent
    /// rather than reported as 0.
    pub latency_ms: BTreeMap<String, u32>,
    /// When the session was created (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub placed_at: OffsetDateTime,
    /// True when no location met the latency cap and the best one was taken anyway
    /// (`best_effort`). Written only when true, so the usual answer is exactly DESIGN §2's shape.
    #[serde(default, skip_serializing_if = "is_false")]
    pub latency_cap_exceeded: bool,
}

/// One port mapping of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Port {
    /// The transport protocol.
    #[serde(rename = "type")]
    pub protocol: PortProtocol,
    /// The port the game server listens on inside its container.
    pub container: u16,
    /// The port players connect to on `host`.
    pub host: u16,
}

/// The transport protocol of a [`Port`], written in lower case as Gameye does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

// serde's skip_serializing_if takes a function of a reference.
fn is_false(value: &bool) -> bool {
    !*value
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    fn assignment(latency_cap_exceeded: bool) -> Assignment {
        Assignment {
            match_id: "m-123".into(),
            session_id: Uuid::parse_str("6f1c0000-0000-5000-8000-000000000000").unwrap(),
            image: "my-game".into(),
            location: "eu-west-1".into(),
            host: "203.0.113.42".into(),
            ports: vec![Port { protocol: PortProtocol::Udp, container: 7777, host: 20001 }],
            players: vec!["p1".into(), "p2".into()],
            latency_ms: BTreeMap::from([("p1".into(), 32), ("p2".into(), 41)]),
            placed_at: datetime!(2026-11-21 10:00:05 UTC),
            latency_cap_exceeded,
        }
    }

    #[test]
    fn serializes_to_the_design_shape() {
        let value = serde_json::to_value(assignment(false)).unwrap();
        assert_eq!(
            value,
            json!({
                "match_id": "m-123",
                "session_id": "6f1c0000-0000-5000-8000-000000000000",
                "image": "my-game",
                "location": "eu-west-1",
                "host": "203.0.113.42",
                "ports": [{"type": "udp", "container": 7777, "host": 20001}],
                "players": ["p1", "p2"],
                "latency_ms": {"p1": 32, "p2": 41},
                "placed_at": "2026-11-21T10:00:05Z"
            })
        );
    }

    #[test]
    fn cap_exceeded_is_written_only_when_true() {
        let value = serde_json::to_value(assignment(true)).unwrap();
        assert_eq!(value["latency_cap_exceeded"], json!(true));
    }

    #[test]
    fn round_trips_and_tolerates_unknown_fields() {
        let mut value = serde_json::to_value(assignment(true)).unwrap();
        value["added_later"] = json!("ignored");
        let back: Assignment = serde_json::from_value(value).unwrap();
        assert_eq!(back, assignment(true));
    }
}

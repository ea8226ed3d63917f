//! The normalized match request every door produces (DESIGN §2), its wire form and its validation.

mod json_path;
mod latency;
mod parse;
mod sameness;
mod timestamp;
mod ttl;
mod validate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use parse::parse_match_request;
pub use sameness::{MatchField, MatchIdConflict};
pub use ttl::{ParseTtlError, Ttl};
pub use validate::{
    InvalidRequest, InvalidRequestKind, MAX_LATENCY_MS, MAX_MATCH_ID_CHARS, MAX_PLAYERS_PER_MATCH,
    RESERVED_LABEL_KEYS, ValidatedMatch, check_match_id,
};

/// A match to place, as accepted by `POST /v1/matches` and `gameye.match.found`, and as built by
/// the other doors. Only `match_id` and `players` are required.
///
/// The match id is an idempotency key: a request whose id was seen before is answered with the
/// first request's outcome if it is the same match ([`MatchRequest::differences`]: same image,
/// version, players and teams, locations, seats, env, args, labels, ttl; latencies and
/// `requested_at` may differ), and refused ([`MatchIdConflict`]) if not.
///
/// Unknown fields are rejected, so a misspelt optional field (`"locaitons"`) is an error naming
/// it rather than a silently ignored setting. Nothing here is checked beyond types: call
/// [`MatchRequest::validate`] (or [`parse_match_request`]) to get a [`ValidatedMatch`].
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MatchRequest {
    /// The matchmaker's id for the match; with the door, it determines the session id. It ends
    /// NATS subjects, so its rules are a subject token's ([`check_match_id`]).
    pub match_id: String,
    /// The Gameye image; the configured `gameye.image` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The image tag; the configured `gameye.version` (or Gameye's highest-priority tag) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The match's players, at least one.
    pub players: Vec<Player>,
    /// Locations the match may go to; any available location when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locations: Option<Vec<String>>,
    /// Seats in the session; the per-image configuration when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_players: Option<u32>,
    /// Container environment. May hold secrets: never log it. Absent and `{}` mean the same.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Game server arguments. Absent and `[]` mean the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra Gameye session labels. Absent and `{}` mean the same.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Session lifetime: `"1h"`, `"90m"`, `"2h30m"` or integer seconds; the configured
    /// `gameye.ttl` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "1h30m"))]
    pub ttl: Option<Ttl>,
    /// When matchmaking started (RFC 3339); drives latency-cap relaxation. Absent: the match is
    /// treated as new.
    #[serde(default, with = "timestamp", skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<OffsetDateTime>,
}

impl MatchRequest {
    /// Takes `resend`'s latencies and `requested_at`: a resend of the same match (everything else
    /// equal, see [`MatchIdConflict::between`]) may carry fresher figures than the first send.
    pub fn take_figures_of(&mut self, resend: &MatchRequest) {
        for player in &mut self.players {
            if let Some(fresh) = resend.players.iter().find(|p| p.id == player.id) {
                player.latencies.clone_from(&fresh.latencies);
            }
        }
        if resend.requested_at.is_some() {
            self.requested_at = resend.requested_at;
        }
    }
}

// `env` may hold secrets: Debug shows its keys only, so a logged request cannot leak them.
impl std::fmt::Debug for MatchRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatchRequest")
            .field("match_id", &self.match_id)
            .field("image", &self.image)
            .field("version", &self.version)
            .field("players", &self.players)
            .field("locations", &self.locations)
            .field("max_players", &self.max_players)
            .field("env_keys", &self.env.keys().collect::<Vec<_>>())
            .field("args", &self.args)
            .field("labels", &self.labels)
            .field("ttl", &self.ttl)
            .field("requested_at", &self.requested_at)
            .finish()
    }
}

/// One player of a match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Player {
    /// The player's id, unique within the match.
    pub id: String,
    /// Latency in ms to each location the player measured, keyed by the reported name (see
    /// [`crate::LocationAliases`]). Any non-negative JSON number is accepted and rounded up to
    /// whole milliseconds, so a cap is never met by rounding down. Absent and `{}` mean the same:
    /// the player reported nothing.
    #[serde(
        default,
        deserialize_with = "latency::deserialize_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub latencies: BTreeMap<String, u32>,
    /// The player's team, if the matchmaker formed teams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

#[cfg(test)]
mod tests;

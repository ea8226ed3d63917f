//! The rules a match request must meet before the engine sees it, and the type that proves it did.

use std::collections::HashSet;
use std::ops::Deref;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use time::OffsetDateTime;

use super::MatchRequest;
use super::json_path::key_segment;

/// Longest accepted `match_id` and player id, in characters.
pub const MAX_MATCH_ID_CHARS: usize = 128;
/// Most players a single match may have.
pub const MAX_PLAYERS_PER_MATCH: usize = 200;
/// Highest accepted latency, ms: beyond a minute a figure is a measuring error, not a latency.
pub const MAX_LATENCY_MS: u32 = 60_000;
/// Label keys a request may not set: Gameye reports its own data under them.
pub const RESERVED_LABEL_KEYS: [&str; 3] = ["env", "tags", "gameye"];

// Longest accepted text in the other identifying fields (image, version, team, location).
const MAX_NAME_CHARS: usize = 256;

/// A request the bridge refuses, naming the offending field.
///
/// Displays as `players[1].id: must not be empty`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", field.as_deref().unwrap_or("request body"))]
pub struct InvalidRequest {
    /// Whether the body could not be read at all or was read and broke a rule.
    pub kind: InvalidRequestKind,
    /// JSON-path-like name of the field, e.g. `players[1].latencies.eu-west-1`; `None` when the
    /// problem is the body as a whole.
    pub field: Option<String>,
    /// What is wrong, for humans.
    pub message: String,
}

/// The two ways a request is refused, which HTTP doors answer with different statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvalidRequestKind {
    /// Not JSON, or cut short: HTTP 400.
    Malformed,
    /// JSON, but of the wrong shape or breaking a rule: HTTP 422.
    Invalid,
}

impl InvalidRequest {
    /// A rule broken by a field (HTTP 422).
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { kind: InvalidRequestKind::Invalid, field: Some(field.into()), message: message.into() }
    }
}

/// A [`MatchRequest`] that passed [`MatchRequest::validate`]: the only form the engine accepts.
///
/// Reads like the request (it dereferences to it) but cannot be changed; deserializing one
/// validates again, so a stored request cannot skip the rules.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "MatchRequest")]
pub struct ValidatedMatch(MatchRequest);

impl ValidatedMatch {
    /// The request.
    pub fn request(&self) -> &MatchRequest {
        &self.0
    }

    /// The request, taken out (and no longer known to be valid once changed).
    pub fn into_request(self) -> MatchRequest {
        self.0
    }

    /// How long matchmaking has been going on at `now`, for the latency caps: zero when
    /// `requested_at` is absent or in the future (clock skew must not make a match look older).
    pub fn age(&self, now: OffsetDateTime) -> Duration {
        self.0
            .requested_at
            .and_then(|requested_at| Duration::try_from(now - requested_at).ok())
            .unwrap_or(Duration::ZERO)
    }
}

impl Deref for ValidatedMatch {
    type Target = MatchRequest;

    fn deref(&self) -> &MatchRequest {
        &self.0
    }
}

impl Serialize for ValidatedMatch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl TryFrom<MatchRequest> for ValidatedMatch {
    type Error = InvalidRequest;

    fn try_from(request: MatchRequest) -> Result<Self, InvalidRequest> {
        request.validate()
    }
}

impl MatchRequest {
    /// Checks every rule and, when all hold, vouches for the request. The first broken rule is
    /// reported, in field order:
    ///
    /// - `match_id`: see [`check_match_id`].
    /// - `image`, `version`, `players[i].team`, location names: non-empty when given, at most 256
    ///   characters, no control characters.
    /// - `players`: 1–200; ids 1–128 characters without control characters, unique.
    /// - `players[i].latencies`: at most 60 000 ms each.
    /// - `locations`: when given, at least one, no duplicates.
    /// - `max_players`: at least the number of players.
    /// - `env`: keys non-empty without `=` or NUL, values non-empty (Gameye rejects empty ones)
    ///   without NUL; `args`: non-empty without NUL; `labels`: keys non-empty and not one of
    ///   [`RESERVED_LABEL_KEYS`].
    pub fn validate(self) -> Result<ValidatedMatch, InvalidRequest> {
        self.check()?;
        Ok(ValidatedMatch(self))
    }

    fn check(&self) -> Result<(), InvalidRequest> {
        check_match_id(&self.match_id)?;
        if let Some(image) = &self.image {
            check_text(|| "image".into(), image, MAX_NAME_CHARS)?;
        }
        if let Some(version) = &self.version {
            check_text(|| "version".into(), version, MAX_NAME_CHARS)?;
        }
        self.check_players()?;
        if let Some(locations) = &self.locations {
            check_locations(locations)?;
        }
        if let Some(max_players) = self.max_players
            && (max_players as usize) < self.players.len()
        {
            return Err(InvalidRequest::invalid(
                "max_players",
                format!("is {max_players} but the match has {} players", self.players.len()),
            ));
        }
        self.check_container_settings()
    }

    fn check_players(&self) -> Result<(), InvalidRequest> {
        if self.players.is_empty() {
            return Err(InvalidRequest::invalid("players", "must name at least one player"));
        }
        if self.players.len() > MAX_PLAYERS_PER_MATCH {
            return Err(InvalidRequest::invalid(
                "players",
                format!("must name at most {MAX_PLAYERS_PER_MATCH} players"),
            ));
        }
        let mut seen = HashSet::new();
        // Field paths are built only for an error: formatting them is most of a valid request's
        // validation cost.
        for (index, player) in self.players.iter().enumerate() {
            let field = |rest: &str| format!("players[{index}]{rest}");
            check_text(|| field(".id"), &player.id, MAX_MATCH_ID_CHARS)?;
            if !seen.insert(player.id.as_str()) {
                return Err(InvalidRequest::invalid(
                    field(".id"),
                    format!("player {:?} is listed twice", player.id),
                ));
            }
            if let Some(team) = &player.team {
                check_text(|| field(".team"), team, MAX_NAME_CHARS)?;
            }
            for (location, &ms) in &player.latencies {
                let latency_field = || field(&format!(".latencies{}", key_segment(location, false)));
                check_text(latency_field, location, MAX_NAME_CHARS)?;
                if ms > MAX_LATENCY_MS {
                    return Err(InvalidRequest::invalid(
                        latency_field(),
                        format!("must be at most {MAX_LATENCY_MS} ms"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_container_settings(&self) -> Result<(), InvalidRequest> {
        for (key, value) in &self.env {
            let field = || format!("env{}", key_segment(key, false));
            if key.is_empty() || key.contains(['=', '\0']) {
                return Err(InvalidRequest::invalid(field(), "names must be non-empty, without '=' or NUL"));
            }
            if value.is_empty() || value.contains('\0') {
                return Err(InvalidRequest::invalid(field(), "values must be non-empty, without NUL"));
            }
        }
        for (index, arg) in self.args.iter().enumerate() {
            if arg.is_empty() || arg.contains('\0') {
                return Err(InvalidRequest::invalid(
                    format!("args[{index}]"),
                    "must be non-empty, without NUL",
                ));
            }
        }
        for key in self.labels.keys() {
            let field = || format!("labels{}", key_segment(key, false));
            if key.is_empty() {
                return Err(InvalidRequest::invalid(field(), "names must be non-empty"));
            }
            if RESERVED_LABEL_KEYS.contains(&key.as_str()) {
                return Err(InvalidRequest::invalid(
                    field(),
                    "is reserved: Gameye reports its own data under this label",
                ));
            }
        }
        Ok(())
    }
}

fn check_locations(locations: &[String]) -> Result<(), InvalidRequest> {
    if locations.is_empty() {
        return Err(InvalidRequest::invalid(
            "locations",
            "must name at least one location; leave it out to allow all",
        ));
    }
    let mut seen = HashSet::new();
    for (index, location) in locations.iter().enumerate() {
        let field = || format!("locations[{index}]");
        check_text(field, location, MAX_NAME_CHARS)?;
        if !seen.insert(location.as_str()) {
            return Err(InvalidRequest::invalid(field(), format!("lists {location:?} twice")));
        }
    }
    Ok(())
}

/// Checks a match id: 1–128 characters; no control characters, whitespace, `*` or `>`; no `.`
/// at either end and no `..`. It ends NATS subjects (`gameye.match.assigned.<match_id>`), where a
/// dot separates tokens: a subject with an empty token reaches no subscriber, and one with a
/// wildcard token reaches other matches' subscribers. Other dots are allowed (`a.b`).
///
/// Refusals name the field `match_id`. The NATS door uses this too, to decide whether an id from
/// a refused payload is safe to answer on.
pub fn check_match_id(match_id: &str) -> Result<(), InvalidRequest> {
    check_text(|| "match_id".into(), match_id, MAX_MATCH_ID_CHARS)?;
    if match_id.chars().any(|c| c.is_whitespace() || c == '*' || c == '>') {
        return Err(InvalidRequest::invalid(
            "match_id",
            "must not contain whitespace, '*' or '>' (it is part of NATS subjects)",
        ));
    }
    if match_id.starts_with('.') || match_id.ends_with('.') || match_id.contains("..") {
        return Err(InvalidRequest::invalid(
            "match_id",
            "must not start or end with '.' or contain '..' (it is part of NATS subjects, where a dot \
             separates tokens and a subject with an empty token reaches no subscriber)",
        ));
    }
    Ok(())
}

/// Non-empty, at most `max_chars` characters, no control characters. `field` names the value in
/// the error.
fn check_text(field: impl FnOnce() -> String, value: &str, max_chars: usize) -> Result<(), InvalidRequest> {
    let problem = if value.is_empty() {
        "must not be empty".to_owned()
    } else if value.chars().count() > max_chars {
        format!("must be at most {max_chars} characters")
    } else if value.chars().any(char::is_control) {
        "must not contain control characters".to_owned()
    } else {
        return Ok(());
    };
    Err(InvalidRequest::invalid(field(), problem))
}

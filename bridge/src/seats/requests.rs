//! Join, leave and backfill requests as every door takes them (DESIGN §4): read from JSON at a
//! trust boundary, one function per body, each answering a checked value or an
//! [`InvalidRequest`] naming the field, like [`crate::parse_match_request`] for matches. And the
//! one way a door answers a backfill: reserve seats, or place a new match when asked to.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::BackfillPlayer;
use crate::placement::{
    BackfillAnswer, BackfillRequest, PlacementService, Progress, SeatService, SeatServiceError,
};
use crate::request::{InvalidRequest, InvalidRequestKind, MAX_MATCH_ID_CHARS};
use crate::{Assignment, MatchRequest, Player, ValidatedMatch};

/// The most players one join, leave or backfill may name.
pub const MAX_PLAYERS_PER_CHANGE: usize = 1000;

/// The body of a join or a leave over HTTP (the session is in the path).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PlayersBody {
    /// Player ids.
    pub players: Vec<String>,
}

/// The body of a join or a leave on NATS, where the subject names no session.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionPlayersBody {
    /// The Gameye session id (a UUID).
    pub session_id: String,
    pub players: Vec<String>,
}

/// A checked join or leave: a session id and 1–1000 distinct player ids, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPlayers {
    pub session_id: Uuid,
    pub players: Vec<String>,
}

/// A backfill request, as `POST /v1/backfill` and `<prefix>.backfill.request` take it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BackfillBody {
    /// Only sessions of this image.
    pub image: String,
    /// Only sessions of this tag, when given.
    #[serde(default)]
    pub version: Option<String>,
    /// The players needing seats, with their latencies (ms by location); all go to one session.
    pub players: Vec<Player>,
    /// Only sessions in these locations, when given.
    #[serde(default)]
    pub locations: Option<Vec<String>>,
    /// Only sessions carrying all these labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// No session fits: place a new match (id `backfill-<uuid>`) instead of answering NO_SEATS.
    #[serde(default)]
    pub create_if_none: bool,
    /// With `create_if_none`: the new match is `backfill-<request_id>`, so a request sent again
    /// (after a timeout, say) gets the same match and session rather than a second one. 1–119
    /// characters, no whitespace, control characters, `*` or `>`, no `.` at the end and no `..`
    /// (the match id's rules, [`crate::request::check_match_id`]).
    #[serde(default)]
    pub request_id: Option<String>,
}

/// A backfill request that passed every rule, ready for [`backfill_or_place`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedBackfill {
    pub request: BackfillRequest,
    pub create_if_none: bool,
    /// The match a `create_if_none` places; validated with its own id when the request names one
    /// (`request_id`), else with a placeholder id of the same shape.
    new_match: MatchRequest,
    named: bool,
}

impl CheckedBackfill {
    /// The match to place when no session fits: `backfill-<request_id>`, else `backfill-<id>`; the
    /// request's image, version, players, locations and labels.
    pub fn new_match(&self, id: Uuid) -> ValidatedMatch {
        let new_match = self.new_match.clone();
        if self.named {
            return new_match.validate().expect("validated as it is");
        }
        MatchRequest { match_id: new_match_id(id), ..new_match }
            .validate()
            .expect("the request was validated with a match id of the same shape")
    }
}

/// Seats reserved by a backfill, as every door answers it: the Assignment (the session's match
/// id, the requesting players, their latencies to its location) plus the reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BackfillResult {
    #[serde(flatten)]
    pub assignment: Assignment,
    pub reservation_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl From<BackfillAnswer> for BackfillResult {
    fn from(answer: BackfillAnswer) -> Self {
        Self {
            assignment: answer.assignment,
            reservation_id: answer.reserved.reservation_id,
            expires_at: answer.reserved.expires_at,
        }
    }
}

/// Reads `{"players": [...]}`: 1–1000 player ids of 1–128 characters without control
/// characters. Duplicates are dropped (a player joins or leaves once), request order kept.
pub fn parse_players_body(body: &[u8]) -> Result<Vec<String>, InvalidRequest> {
    let parsed: PlayersBody = read_json(body)?;
    check_player_ids(parsed.players)
}

/// Reads `{"session_id": "<uuid>", "players": [...]}`, the NATS form of a join or leave: the
/// players as [`parse_players_body`] checks them, the session id a UUID.
pub fn parse_session_players(body: &[u8]) -> Result<SessionPlayers, InvalidRequest> {
    let parsed: SessionPlayersBody = read_json(body)?;
    let session_id = Uuid::parse_str(&parsed.session_id)
        .map_err(|_| InvalidRequest::invalid("session_id", "must be a Gameye session id (a UUID)"))?;
    Ok(SessionPlayers { session_id, players: check_player_ids(parsed.players)? })
}

/// Reads a backfill request: a non-empty image, at most 1000 players, then every rule a match
/// request shares (ids, latencies, locations, labels; see [`MatchRequest::validate`]).
pub fn parse_backfill_request(body: &[u8]) -> Result<CheckedBackfill, InvalidRequest> {
    let parsed: BackfillBody = read_json(body)?;
    if parsed.image.trim().is_empty() {
        return Err(InvalidRequest::invalid("image", "must not be empty"));
    }
    if parsed.players.len() > MAX_PLAYERS_PER_CHANGE {
        return Err(InvalidRequest::invalid("players", format!("at most {MAX_PLAYERS_PER_CHANGE}")));
    }
    // One validation for everything a match request shares: ids, latencies, locations, labels.
    if parsed.request_id.as_deref() == Some("") {
        return Err(InvalidRequest::invalid("request_id", "must not be empty"));
    }
    let named = parsed.request_id.is_some();
    let new_match = MatchRequest {
        match_id: match parsed.request_id {
            Some(request_id) => format!("backfill-{request_id}"),
            None => new_match_id(Uuid::nil()),
        },
        image: Some(parsed.image.clone()),
        version: parsed.version.clone(),
        players: parsed.players.clone(),
        locations: parsed.locations.clone(),
        labels: parsed.labels.clone(),
        ..MatchRequest::default()
    };
    let new_match = new_match
        .validate()
        .map_err(|mut invalid| {
            // The request names the id's part after `backfill-`.
            if invalid.field.as_deref() == Some("match_id") {
                invalid.field = Some("request_id".into());
                invalid.message = format!("{} (as the match id `backfill-<request_id>`)", invalid.message);
            }
            invalid
        })?
        .into_request();
    let request = BackfillRequest {
        image: parsed.image,
        version: parsed.version,
        players: parsed
            .players
            .into_iter()
            .map(|p| BackfillPlayer { id: p.id, latencies: p.latencies })
            .collect(),
        locations: parsed.locations,
        labels: parsed.labels,
    };
    Ok(CheckedBackfill { request, create_if_none: parsed.create_if_none, new_match, named })
}

/// What a backfill came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackfillOutcome {
    /// Seats reserved in an eligible session.
    Reserved(BackfillResult),
    /// Nothing fitted and the request asked for a new match: its placement, which the door
    /// answers (and announces) like any match of its own.
    Placed { match_id: String, progress: Progress },
    /// Nothing fitted (NO_SEATS).
    NoSeats,
}

/// What a backfill comes to before anything is placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackfillChoice {
    /// Seats reserved in an eligible session.
    Reserved(BackfillResult),
    /// Nothing fitted and the request asked for a new match: this one, for the door to place.
    NewMatch(ValidatedMatch),
    /// Nothing fitted (NO_SEATS).
    NoSeats,
}

/// The first half of a backfill, the same at every door: reserve seats in the best eligible
/// session; if none fits and `create_if_none` is set, the new match `backfill-<new_match_id>` to
/// place. Doors that must not place in line (HTTP places where a caller's hang-up cannot cancel
/// it) take it from here; the others call [`backfill_or_place`].
pub async fn reserve_or_new_match(
    seats: &dyn SeatService,
    request: &CheckedBackfill,
    new_match_id: Uuid,
) -> Result<BackfillChoice, SeatServiceError> {
    if let Some(answer) = seats.backfill(&request.request).await? {
        return Ok(BackfillChoice::Reserved(answer.into()));
    }
    if !request.create_if_none {
        return Ok(BackfillChoice::NoSeats);
    }
    Ok(BackfillChoice::NewMatch(request.new_match(new_match_id)))
}

/// Answers a backfill: [`reserve_or_new_match`], then the new match placed through `placement`
/// under the door's `source`, in line.
pub async fn backfill_or_place(
    seats: &dyn SeatService,
    placement: &dyn PlacementService,
    source: &str,
    request: &CheckedBackfill,
    new_match_id: Uuid,
) -> Result<BackfillOutcome, SeatServiceError> {
    match reserve_or_new_match(seats, request, new_match_id).await? {
        BackfillChoice::Reserved(result) => Ok(BackfillOutcome::Reserved(result)),
        BackfillChoice::NoSeats => Ok(BackfillOutcome::NoSeats),
        BackfillChoice::NewMatch(new_match) => {
            let match_id = new_match.match_id.clone();
            let progress = placement.place(source, new_match).await?;
            Ok(BackfillOutcome::Placed { match_id, progress })
        }
    }
}

fn new_match_id(id: Uuid) -> String {
    format!("backfill-{id}")
}

/// Reads a JSON object; errors name the field (see [`InvalidRequest::from_json`]).
fn read_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, InvalidRequest> {
    // serde would also read a struct from an array of its fields in order; nobody means that.
    if body.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'[') {
        return Err(InvalidRequest {
            kind: InvalidRequestKind::Invalid,
            field: None,
            message: "must be a JSON object, not an array".into(),
        });
    }
    serde_json::from_slice(body).map_err(|error| InvalidRequest::from_json(body, &error))
}

fn check_player_ids(players: Vec<String>) -> Result<Vec<String>, InvalidRequest> {
    if players.is_empty() {
        return Err(InvalidRequest::invalid("players", "must name at least one player"));
    }
    if players.len() > MAX_PLAYERS_PER_CHANGE {
        return Err(InvalidRequest::invalid("players", format!("at most {MAX_PLAYERS_PER_CHANGE}")));
    }
    for (index, player) in players.iter().enumerate() {
        if player.is_empty()
            || player.chars().count() > MAX_MATCH_ID_CHARS
            || player.chars().any(char::is_control)
        {
            return Err(InvalidRequest::invalid(
                format!("players[{index}]"),
                format!("must be 1 to {MAX_MATCH_ID_CHARS} characters without control characters"),
            ));
        }
    }
    let mut seen = BTreeSet::new();
    Ok(players.into_iter().filter(|p| seen.insert(p.clone())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(error: InvalidRequest) -> String {
        error.field.unwrap_or_default()
    }

    #[test]
    fn player_lists_are_checked_and_deduplicated() {
        assert_eq!(parse_players_body(br#"{"players": ["b", "a", "b"]}"#).unwrap(), ["b", "a"]);
        let cases: [(&[u8], &str); 6] = [
            (br#"{"players": []}"#, "players"),
            (br#"{"players": ["a", ""]}"#, "players[1]"),
            (br#"{"players": ["a\u0007"]}"#, "players[0]"),
            (br#"{"players": ["a"], "extra": 1}"#, ""),
            (br#"{"players": [1]}"#, "players[0]"),
            (br#"{"player": ["a"]}"#, ""),
        ];
        for (body, field) in cases {
            let error = parse_players_body(body).unwrap_err();
            assert_eq!(error.kind, InvalidRequestKind::Invalid, "{}", String::from_utf8_lossy(body));
            assert!(field_of(error.clone()).starts_with(field), "{error:?}");
        }
        let too_many = serde_json::json!({"players": (0..1001).map(|i| i.to_string()).collect::<Vec<_>>()});
        assert_eq!(field_of(parse_players_body(too_many.to_string().as_bytes()).unwrap_err()), "players");
        assert_eq!(parse_players_body(b"{not json").unwrap_err().kind, InvalidRequestKind::Malformed);
        assert!(parse_players_body(br#"[["a"]]"#).is_err());
    }

    #[test]
    fn nats_bodies_need_a_uuid_session_id() {
        let id = Uuid::new_v4();
        let body = format!(r#"{{"session_id": "{id}", "players": ["p1", "p1"]}}"#);
        assert_eq!(
            parse_session_players(body.as_bytes()).unwrap(),
            SessionPlayers { session_id: id, players: vec!["p1".into()] }
        );
        let error = parse_session_players(br#"{"session_id": "nope", "players": ["p1"]}"#).unwrap_err();
        assert_eq!(field_of(error), "session_id");
        let error = parse_session_players(br#"{"players": ["p1"]}"#).unwrap_err();
        assert_eq!(field_of(error), "session_id");
        let body = format!(r#"{{"session_id": "{id}", "players": []}}"#);
        assert_eq!(field_of(parse_session_players(body.as_bytes()).unwrap_err()), "players");
    }

    #[test]
    fn backfill_requests_name_the_field() {
        let checked = parse_backfill_request(
            br#"{"image": "g", "version": "1", "players": [{"id": "p", "latencies": {"eu": 9.2}}],
                 "locations": ["eu"], "labels": {"mode": "x"}, "create_if_none": true}"#,
        )
        .unwrap();
        assert!(checked.create_if_none);
        assert_eq!(checked.request.players[0].latencies["eu"], 10);
        let id = Uuid::new_v4();
        let new_match = checked.new_match(id);
        assert_eq!(new_match.match_id, format!("backfill-{id}"));
        assert_eq!(new_match.image.as_deref(), Some("g"));
        assert_eq!(new_match.labels["mode"], "x");

        // A request id names the new match, whatever the door's own id.
        let named = parse_backfill_request(
            br#"{"image": "g", "players": [{"id": "p"}], "create_if_none": true, "request_id": "r-1"}"#,
        )
        .unwrap();
        assert_eq!(named.new_match(id).match_id, "backfill-r-1");
        assert_eq!(named.new_match(Uuid::new_v4()).match_id, "backfill-r-1");
        let long =
            format!(r#"{{"image": "g", "players": [{{"id": "p"}}], "request_id": "{}"}}"#, "r".repeat(120));

        let cases: [(&[u8], &str); 11] = [
            (br#"{"image": "g", "players": [{"id": "p"}], "request_id": "a b"}"#, "request_id"),
            // `backfill-r.` and `backfill-a..b` would end subjects with an empty token.
            (br#"{"image": "g", "players": [{"id": "p"}], "request_id": "r."}"#, "request_id"),
            (br#"{"image": "g", "players": [{"id": "p"}], "request_id": "a..b"}"#, "request_id"),
            (br#"{"image": "g", "players": [{"id": "p"}], "request_id": ""}"#, "request_id"),
            (long.as_bytes(), "request_id"),
            (br#"{"players": [{"id": "p"}]}"#, "image"),
            (br#"{"image": " ", "players": [{"id": "p"}]}"#, "image"),
            (br#"{"image": "g", "players": []}"#, "players"),
            (br#"{"image": "g", "players": [{"id": "p", "latencies": {"eu": -3}}]}"#, "players[0].latencies"),
            (br#"{"image": "g", "players": [{"id": "p"}], "locations": []}"#, "locations"),
            (br#"{"image": "g", "players": [{"id": "p"}], "labels": {"env": "x"}}"#, "labels.env"),
        ];
        for (body, field) in cases {
            let error = parse_backfill_request(body).unwrap_err();
            assert!(field_of(error.clone()).starts_with(field), "{field}: {error:?}");
            assert!(error.to_string().contains(field), "{error}");
        }
    }
}

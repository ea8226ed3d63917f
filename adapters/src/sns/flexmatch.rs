//! GameLift FlexMatch events (the `Message` of an SNS Notification) and the MatchRequest a
//! `MatchmakingSucceeded` becomes. Every field is optional on the wire and unknown ones are ignored;
//! what placement cannot do without is checked here, naming the field.

use std::collections::{BTreeMap, BTreeSet};

use bridge::{MatchRequest, Player};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `detail-type` of every FlexMatch event.
pub const DETAIL_TYPE: &str = "GameLift Matchmaking Event";

/// The EventBridge-style envelope FlexMatch publishes.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    #[serde(rename = "detail-type")]
    pub detail_type: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    /// The matchmaking configuration's ARN first.
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub time: Option<String>,
    pub detail: Option<Detail>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Detail {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub match_id: Option<String>,
    #[serde(default)]
    pub tickets: Vec<Ticket>,
    #[serde(default)]
    pub game_session_info: Option<GameSessionInfo>,
    /// `MatchmakingFailed`/`TimedOut`/`Cancelled`: FlexMatch's reason.
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    pub ticket_id: Option<String>,
    #[serde(default)]
    pub start_time: Option<String>,
    #[serde(default)]
    pub players: Vec<EventPlayer>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GameSessionInfo {
    #[serde(default)]
    pub players: Vec<EventPlayer>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventPlayer {
    pub player_id: Option<String>,
    #[serde(default)]
    pub team: Option<String>,
}

/// A FlexMatch event, read from an SNS `Message`.
#[derive(Debug, Clone)]
pub struct Event {
    /// `detail.type`: `MatchmakingSucceeded`, `MatchmakingTimedOut`, …
    pub kind: String,
    /// `resources[0]`: the matchmaking configuration ARN, when given.
    pub configuration: Option<String>,
    pub detail: Detail,
}

/// Why a Notification is not a usable FlexMatch event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("not a GameLift FlexMatch event: {0}")]
    NotFlexMatch(String),
    #[error("FlexMatch event: `{0}` is missing")]
    Missing(String),
    #[error("FlexMatch event: `{field}`: {message}")]
    Invalid { field: String, message: String },
}

impl Event {
    pub fn parse(message: &str) -> Result<Self, EventError> {
        let envelope: Envelope = serde_json::from_str(message)
            .map_err(|e| EventError::NotFlexMatch(format!("the message is not a JSON event ({e})")))?;
        match envelope.detail_type.as_deref() {
            Some(DETAIL_TYPE) => {}
            Some(other) => return Err(EventError::NotFlexMatch(format!("detail-type is {other:?}"))),
            None => return Err(EventError::NotFlexMatch("no detail-type".into())),
        }
        let detail = envelope.detail.ok_or_else(|| EventError::Missing("detail".into()))?;
        let kind = detail.kind.clone().ok_or_else(|| EventError::Missing("detail.type".into()))?;
        Ok(Self { kind, configuration: envelope.resources.into_iter().next(), detail })
    }

    /// The match FlexMatch made, when the event names one.
    pub fn match_id(&self) -> Option<&str> {
        self.detail.match_id.as_deref().filter(|id| !id.is_empty())
    }

    /// The ticket ids the event names.
    pub fn ticket_ids(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        self.detail
            .tickets
            .iter()
            .filter_map(|t| t.ticket_id.clone())
            .filter(|id| !id.is_empty() && seen.insert(id.clone()))
            .collect()
    }

    /// The reason FlexMatch gave, if any (`reason`, else `message`).
    pub fn reason(&self) -> Option<String> {
        self.detail.reason.clone().or_else(|| self.detail.message.clone())
    }

    /// The MatchRequest of a `MatchmakingSucceeded`: players from the tickets (else from
    /// `gameSessionInfo`), `requested_at` = the earliest ticket start, image and version per
    /// configuration ARN. No latencies: the engine takes them from the latency store.
    pub fn to_match_request(
        &self,
        images: &BTreeMap<String, ImageChoice>,
    ) -> Result<MatchRequest, EventError> {
        let match_id = self
            .detail
            .match_id
            .clone()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| EventError::Missing("detail.matchId".into()))?;
        let mut players: Vec<Player> = Vec::new();
        let mut requested_at: Option<OffsetDateTime> = None;
        for (t, ticket) in self.detail.tickets.iter().enumerate() {
            if let Some(start) = &ticket.start_time {
                let at = OffsetDateTime::parse(start, &Rfc3339).map_err(|_| EventError::Invalid {
                    field: format!("detail.tickets[{t}].startTime"),
                    message: format!("{start:?} is not an RFC 3339 time"),
                })?;
                requested_at = Some(requested_at.map_or(at, |earliest| earliest.min(at)));
            }
            for (p, player) in ticket.players.iter().enumerate() {
                let field = || format!("detail.tickets[{t}].players[{p}].playerId");
                add_player(&mut players, player, field)?;
            }
        }
        if players.is_empty()
            && let Some(info) = &self.detail.game_session_info
        {
            for (p, player) in info.players.iter().enumerate() {
                add_player(&mut players, player, || format!("detail.gameSessionInfo.players[{p}].playerId"))?;
            }
        }
        if players.is_empty() {
            return Err(EventError::Missing("detail.tickets[].players".into()));
        }
        let choice = self.configuration.as_ref().and_then(|arn| images.get(arn));
        Ok(MatchRequest {
            match_id,
            image: choice.map(|c| c.image.clone()),
            version: choice.and_then(|c| c.version.clone()),
            players,
            requested_at,
            ..MatchRequest::default()
        })
    }
}

fn add_player(
    players: &mut Vec<Player>,
    player: &EventPlayer,
    field: impl Fn() -> String,
) -> Result<(), EventError> {
    let id =
        player.player_id.clone().filter(|id| !id.is_empty()).ok_or_else(|| EventError::Missing(field()))?;
    if !players.iter().any(|known| known.id == id) {
        players.push(Player {
            id,
            latencies: BTreeMap::new(),
            team: player.team.clone().filter(|t| !t.is_empty()),
        });
    }
    Ok(())
}

/// Image and tag for a matchmaking configuration (`sns.configurations`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageChoice {
    pub image: String,
    pub version: Option<String>,
}

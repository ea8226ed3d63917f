//! When two requests for one match id are the same match. A match id is an idempotency key: a
//! resend of the match gets the first send's outcome, but a *different* match under a reused id
//! must be refused, or its players are handed the first match's server (the practice of Stripe's
//! and the IETF draft's `Idempotency-Key`: a reused key with another payload is an error).

use std::collections::BTreeSet;
use std::fmt;

use super::{MatchRequest, Player};

/// A field of a [`MatchRequest`] that decides which server the players get, and so must agree
/// between two requests of one match id (see [`MatchRequest::differences`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MatchField {
    Image,
    Version,
    Players,
    Locations,
    MaxPlayers,
    Env,
    Args,
    Labels,
    Ttl,
}

impl MatchField {
    /// The field's name in the request's JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Version => "version",
            Self::Players => "players",
            Self::Locations => "locations",
            Self::MaxPlayers => "max_players",
            Self::Env => "env",
            Self::Args => "args",
            Self::Labels => "labels",
            Self::Ttl => "ttl",
        }
    }
}

impl fmt::Display for MatchField {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl MatchRequest {
    /// The fields in which `self` and `other`, two requests of one match id, are not the same
    /// match; empty when they are. In field order.
    ///
    /// The same match means the same server for the same players, so compared are exactly the
    /// fields that decide it, **as the matchmaker sent them**:
    ///
    /// - `image`, `version`, `max_players`, `ttl`: equal, absent only with absent. Configured
    ///   defaults (`gameye.image`, `gameye.version`, `gameye.ttl`, seats per image) are filled
    ///   in when the match is placed, never into the request, so a configuration change between
    ///   two sends neither makes nor hides a difference. `ttl` compares the duration (`"1h"` is
    ///   `3600`).
    /// - `players`: the same set of (id, team) pairs, in any order.
    /// - `locations`: the same set, in any order; absent (anywhere) differs from any list.
    /// - `env`, `labels`: the same maps (absent is `{}`). `args`: the same list, in order (a
    ///   game server reads its arguments in order).
    ///
    /// Not compared: players' `latencies` and `requested_at`. A retry may carry fresh
    /// measurements or a new timestamp; they only steer the region choice, and a resent match
    /// gets the first send's outcome anyway. `match_id` is the key both share.
    pub fn differences(&self, other: &MatchRequest) -> Vec<MatchField> {
        let checks = [
            (MatchField::Image, self.image == other.image),
            (MatchField::Version, self.version == other.version),
            (MatchField::Players, same_players(&self.players, &other.players)),
            (MatchField::Locations, same_locations(self.locations.as_deref(), other.locations.as_deref())),
            (MatchField::MaxPlayers, self.max_players == other.max_players),
            (MatchField::Env, self.env == other.env),
            (MatchField::Args, self.args == other.args),
            (MatchField::Labels, self.labels == other.labels),
            (MatchField::Ttl, self.ttl == other.ttl),
        ];
        checks.into_iter().filter(|(_, same)| !same).map(|(field, _)| field).collect()
    }

    /// Whether `other` is the same match as `self` ([`MatchRequest::differences`] is empty).
    pub fn is_same_match(&self, other: &MatchRequest) -> bool {
        self.differences(other).is_empty()
    }
}

fn same_players(first: &[Player], again: &[Player]) -> bool {
    fn key(player: &Player) -> (&str, Option<&str>) {
        (player.id.as_str(), player.team.as_deref())
    }
    if first.len() != again.len() {
        return false;
    }
    // A resend usually keeps the order: compare without building sets then.
    first.iter().map(key).eq(again.iter().map(key))
        || first.iter().map(key).collect::<BTreeSet<_>>() == again.iter().map(key).collect::<BTreeSet<_>>()
}

fn same_locations(first: Option<&[String]>, again: Option<&[String]>) -> bool {
    match (first, again) {
        (None, None) => true,
        (Some(first), Some(again)) => {
            first.iter().collect::<BTreeSet<_>>() == again.iter().collect::<BTreeSet<_>>()
        }
        _ => false,
    }
}

/// A request refused because its match id was first requested with a different match (see
/// [`MatchRequest::differences`]): answering it with the first match's outcome would send its
/// players to another match's server. Nothing was changed by it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "match_id {match_id:?} was first requested with different {}: a match id names one match, so \
     send a new match_id for a new match, or the first request again to get its outcome",
    FieldList(.differing)
)]
pub struct MatchIdConflict {
    pub match_id: String,
    /// What differs from the first request, in field order; never empty.
    pub differing: Vec<MatchField>,
}

impl MatchIdConflict {
    /// The conflict of `again` with `first`, two requests of one match id; `None` when they are
    /// the same match.
    pub fn between(first: &MatchRequest, again: &MatchRequest) -> Option<Self> {
        let differing = first.differences(again);
        (!differing.is_empty()).then(|| Self { match_id: again.match_id.clone(), differing })
    }

    /// The differing fields' names, `players, env`.
    pub fn differing_fields(&self) -> String {
        FieldList(&self.differing).to_string()
    }
}

/// `players, env`.
struct FieldList<'a>(&'a [MatchField]);

impl fmt::Display for FieldList<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, field) in self.0.iter().enumerate() {
            if index > 0 {
                formatter.write_str(", ")?;
            }
            formatter.write_str(field.name())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn player(id: &str, team: Option<&str>, latency: u32) -> Player {
        Player {
            id: id.to_owned(),
            latencies: BTreeMap::from([("eu-west-1".to_owned(), latency)]),
            team: team.map(str::to_owned),
        }
    }

    fn first() -> MatchRequest {
        serde_json::from_value(serde_json::json!({
            "match_id": "m-1", "image": "my-game", "version": "1.4.2",
            "players": [{"id": "p1", "latencies": {"eu-west-1": 32}, "team": "red"},
                        {"id": "p2", "latencies": {"eu-west-1": 41}}],
            "locations": ["eu-west-1", "eu-central-1"], "max_players": 10,
            "env": {"MODE": "ranked"}, "args": ["--a", "--b"], "labels": {"mode": "ranked"},
            "ttl": "1h", "requested_at": "2026-11-21T10:00:00Z"
        }))
        .unwrap()
    }

    /// A change to the first request, for one test case.
    type Change = Box<dyn FnOnce(&mut MatchRequest)>;

    fn differences(change: impl FnOnce(&mut MatchRequest)) -> Vec<MatchField> {
        let mut again = first();
        change(&mut again);
        first().differences(&again)
    }

    #[test]
    fn a_resend_with_fresh_latencies_timestamp_and_order_is_the_same_match() {
        let same = differences(|again| {
            again.players = vec![player("p2", None, 90), player("p1", Some("red"), 5)];
            again.locations = Some(vec!["eu-central-1".into(), "eu-west-1".into()]);
            again.requested_at = None;
            again.ttl = "3600".parse().ok();
        });
        assert_eq!(same, []);
        assert!(first().is_same_match(&first()));
    }

    #[test]
    fn every_deciding_field_is_named_when_it_differs() {
        use MatchField::*;
        let cases: [(MatchField, Change); 9] = [
            (Image, Box::new(|r| r.image = None)),
            (Version, Box::new(|r| r.version = Some("1.4.3".into()))),
            (Players, Box::new(|r| r.players[1].id = "p3".into())),
            (Locations, Box::new(|r| r.locations = None)),
            (MaxPlayers, Box::new(|r| r.max_players = Some(12))),
            (Env, Box::new(|r| r.env.clear())),
            (Args, Box::new(|r| r.args.reverse())),
            (Labels, Box::new(|r| drop(r.labels.insert("extra".into(), "x".into())))),
            (Ttl, Box::new(|r| r.ttl = "2h".parse().ok())),
        ];
        for (field, change) in cases {
            assert_eq!(differences(change), [field], "{field}");
        }
    }

    #[test]
    fn players_differ_by_set_and_by_team() {
        use MatchField::Players;
        assert_eq!(differences(|r| r.players[0].team = Some("blue".into())), [Players], "another team");
        assert_eq!(differences(|r| r.players[1].team = Some("red".into())), [Players], "a team given");
        assert_eq!(differences(|r| r.players.push(player("p3", None, 1))), [Players], "one more");
        assert_eq!(differences(|r| drop(r.players.pop())), [Players], "one fewer");
    }

    #[test]
    fn locations_are_a_set_and_absent_differs_from_any_list() {
        use MatchField::Locations;
        assert_eq!(differences(|r| r.locations = Some(vec!["eu-west-1".into()])), [Locations]);
        let mut all_absent = first();
        all_absent.locations = None;
        let mut every_one = all_absent.clone();
        every_one.locations = Some(vec!["eu-west-1".into(), "eu-central-1".into(), "us-east-1".into()]);
        assert_eq!(all_absent.differences(&every_one), [Locations]);
        assert_eq!(every_one.differences(&all_absent), [Locations]);
    }

    #[test]
    fn a_conflict_names_the_fields_and_no_values() {
        let mut again = first();
        again.players.push(player("p3", None, 1));
        again.env.insert("SECRET".into(), "hunter2".into());
        let conflict = MatchIdConflict::between(&first(), &again).expect("a conflict");
        assert_eq!(conflict.differing, [MatchField::Players, MatchField::Env]);
        let message = conflict.to_string();
        assert!(
            message.starts_with(r#"match_id "m-1" was first requested with different players, env:"#),
            "{message}"
        );
        assert!(!message.contains("hunter2") && !message.contains("SECRET"), "{message}");
        assert_eq!(MatchIdConflict::between(&first(), &first()), None);
    }
}

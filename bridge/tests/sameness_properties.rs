//! Properties of "the same match" (`MatchRequest::differences`): what a resend may change
//! without becoming another match, and that any change to a deciding field is seen.

use std::collections::BTreeMap;

use bridge::{MatchField, MatchRequest, Player, Ttl};
use proptest::prelude::*;
use proptest::sample::subsequence;

const LOCATIONS: [&str; 5] = ["ap", "eu-c", "eu-w", "us-e", "us-w"];

fn player() -> impl Strategy<Value = (Option<String>, BTreeMap<String, u32>)> {
    let team = proptest::option::of(prop_oneof![Just("red".to_owned()), Just("blue".to_owned())]);
    let latencies = proptest::collection::btree_map(
        proptest::sample::select(&LOCATIONS[..]).prop_map(str::to_owned),
        0u32..500,
        0..3,
    );
    (team, latencies)
}

prop_compose! {
    fn request()(
        players in proptest::collection::vec(player(), 1..6),
        image in proptest::option::of(Just("my-game".to_owned())),
        version in proptest::option::of(prop_oneof![Just("1.0".to_owned()), Just("1.1".to_owned())]),
        locations in proptest::option::of(subsequence(&LOCATIONS[..], 1..=LOCATIONS.len())),
        max_players in proptest::option::of(6u32..12),
        env in proptest::collection::btree_map("[A-Z]{1,3}", "[a-z]{1,3}", 0..3),
        args in proptest::collection::vec("--[a-z]{1,3}", 0..3),
        labels in proptest::collection::btree_map("[a-z]{1,2}", "[a-z]{1,2}", 0..3),
        ttl in proptest::option::of(60u64..7200),
    ) -> MatchRequest {
        MatchRequest {
            match_id: "m-1".to_owned(),
            image,
            version,
            players: players
                .into_iter()
                .enumerate()
                .map(|(index, (team, latencies))| Player { id: format!("p{index}"), latencies, team })
                .collect(),
            locations: locations.map(|chosen| chosen.into_iter().map(str::to_owned).collect()),
            max_players,
            env,
            args,
            labels,
            ttl: ttl.and_then(Ttl::from_secs),
            ..MatchRequest::default()
        }
    }
}

proptest! {
    /// A resend may reorder players and locations, carry other latencies and a timestamp.
    #[test]
    fn reordering_and_new_measurements_keep_the_same_match(
        first in request(),
        player_rotation in 0usize..6,
        location_rotation in 0usize..5,
        new_latency in 0u32..500,
        requested_at in proptest::option::of(0i64..2_000_000_000),
    ) {
        let mut again = first.clone();
        let players = again.players.len();
        again.players.rotate_left(player_rotation % players);
        again.players.reverse();
        for player in &mut again.players {
            player.latencies.insert("eu-w".to_owned(), new_latency);
        }
        if let Some(locations) = &mut again.locations {
            let count = locations.len();
            locations.rotate_left(location_rotation % count);
        }
        again.requested_at = requested_at.map(|s| time::OffsetDateTime::from_unix_timestamp(s).unwrap());
        prop_assert!(first.differences(&again).is_empty(), "{:?}", first.differences(&again));
        prop_assert!(again.differences(&first).is_empty());
    }

    /// Another player set (one more, one fewer, one renamed, one on another team) is another match.
    #[test]
    fn another_player_set_is_another_match(first in request(), which in 0usize..6, change in 0u8..4) {
        let mut again = first.clone();
        let index = which % again.players.len();
        match change {
            0 => again.players.push(Player { id: "newcomer".to_owned(), ..Player::default() }),
            1 if again.players.len() > 1 => drop(again.players.remove(index)),
            1 | 2 => again.players[index].id.push('x'),
            _ => {
                let team = &mut again.players[index].team;
                *team = if team.as_deref() == Some("red") { Some("blue".to_owned()) } else { Some("red".to_owned()) };
            }
        }
        prop_assert_eq!(first.differences(&again), vec![MatchField::Players]);
    }

    /// Differences are symmetric, and exactly the deciding fields that changed are named.
    #[test]
    fn exactly_the_changed_deciding_fields_are_named(first in request(), second in request()) {
        let mut expected = Vec::new();
        let players = |r: &MatchRequest| {
            let mut set: Vec<_> = r.players.iter().map(|p| (p.id.clone(), p.team.clone())).collect();
            set.sort();
            set
        };
        let locations = |r: &MatchRequest| r.locations.clone().map(|mut l| { l.sort(); l });
        if first.image != second.image { expected.push(MatchField::Image); }
        if first.version != second.version { expected.push(MatchField::Version); }
        if players(&first) != players(&second) { expected.push(MatchField::Players); }
        if locations(&first) != locations(&second) { expected.push(MatchField::Locations); }
        if first.max_players != second.max_players { expected.push(MatchField::MaxPlayers); }
        if first.env != second.env { expected.push(MatchField::Env); }
        if first.args != second.args { expected.push(MatchField::Args); }
        if first.labels != second.labels { expected.push(MatchField::Labels); }
        if first.ttl != second.ttl { expected.push(MatchField::Ttl); }
        prop_assert_eq!(first.differences(&second), expected.clone());
        prop_assert_eq!(second.differences(&first), expected);
    }
}

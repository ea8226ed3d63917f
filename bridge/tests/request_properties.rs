//! Properties of reading match requests: what is written can be read back, and refusals name
//! the field wherever it is.

use std::collections::{BTreeMap, BTreeSet};

use bridge::{InvalidRequestKind, Ttl, parse_match_request};
use proptest::prelude::*;
use serde_json::{Value, json};

/// A valid request as JSON, with float latencies.
fn request() -> impl Strategy<Value = Value> {
    let ids = prop::collection::btree_set("[a-zA-Z0-9_-]{1,12}", 1..6);
    let latencies = prop::collection::btree_map("[a-z]{2}-[a-z]{1,6}-[0-9]", 0.0f64..2000.0, 0..4);
    // Match ids: dot-separated tokens, none empty (each becomes a NATS subject token).
    let match_id = "[a-zA-Z0-9:_-]{1,12}(\\.[a-zA-Z0-9:_-]{1,12}){0,3}";
    (match_id, ids, prop::collection::vec(latencies, 6), prop::option::of(1u64..100_000)).prop_map(
        |(match_id, ids, latencies, ttl): (_, BTreeSet<String>, Vec<BTreeMap<String, f64>>, _)| {
            let players: Vec<Value> = ids
                .iter()
                .zip(latencies)
                .map(|(id, latencies)| json!({"id": id, "latencies": latencies}))
                .collect();
            let mut value = json!({"match_id": match_id, "players": players});
            if let Some(ttl) = ttl {
                value["ttl"] = json!(ttl);
            }
            value
        },
    )
}

proptest! {
    #[test]
    fn ttls_round_trip_and_round_up_to_minutes_for_gameye(seconds in 1u64..10_000_000) {
        let ttl = Ttl::from_secs(seconds).unwrap();
        prop_assert_eq!(ttl.to_string().parse::<Ttl>(), Ok(ttl));
        let for_gameye = ttl.to_gameye().parse::<Ttl>().unwrap().as_secs();
        prop_assert!(for_gameye >= seconds && for_gameye < seconds + 60 && for_gameye % 60 == 0);
    }

    #[test]
    fn valid_requests_read_back_what_they_wrote(value in request()) {
        let request = parse_match_request(value.to_string().as_bytes()).unwrap();
        for (player, written) in request.players.iter().zip(value["players"].as_array().unwrap()) {
            for (location, &ms) in &player.latencies {
                let written = written["latencies"][location].as_f64().unwrap();
                prop_assert!(f64::from(ms) >= written && f64::from(ms) < written + 1.0);
            }
        }
        let again = parse_match_request(serde_json::to_string(&request).unwrap().as_bytes()).unwrap();
        prop_assert_eq!(again, request);
    }

    #[test]
    fn a_wrongly_typed_player_field_is_named(value in request(), pick in any::<prop::sample::Index>(), which in 0usize..3) {
        let mut value = value;
        let players = value["players"].as_array_mut().unwrap();
        let index = pick.index(players.len());
        let player = &mut players[index];
        let latency_key = player["latencies"].as_object().unwrap().keys().next().cloned();
        let expected = match (which, latency_key) {
            (0, _) => { player["id"] = json!(true); format!("players[{index}].id") }
            (1, _) => { player["team"] = json!(["red"]); format!("players[{index}].team") }
            (_, Some(key)) => { player["latencies"][&key] = json!(null); format!("players[{index}].latencies.{key}") }
            (_, None) => { player["latencies"] = json!(7); format!("players[{index}].latencies") }
        };
        let text = if index % 2 == 0 { value.to_string() } else { serde_json::to_string_pretty(&value).unwrap() };
        let error = parse_match_request(text.as_bytes()).unwrap_err();
        prop_assert_eq!(error.kind, InvalidRequestKind::Invalid);
        prop_assert_eq!(error.field, Some(expected));
    }
}

//! Reading and validating match requests: every refusal names its field.

use serde_json::{Value, json};
use time::macros::datetime;

use super::*;

fn design_example() -> Value {
    json!({ "match_id": "m-123",
      "image": "my-game", "version": "1.4.2",
      "players": [ {"id": "p1", "latencies": {"eu-west-1": 32, "us-east-1": 95}, "team": "red"},
                   {"id": "p2", "latencies": {"eu-west-1": 41}} ],
      "locations": ["eu-west-1", "eu-central-1"],
      "max_players": 10,
      "env": {"MODE": "ranked"}, "args": ["--max-players=10"], "labels": {"mode": "ranked"},
      "ttl": "1h", "requested_at": "2026-11-21T10:00:00Z" })
}

fn parse(value: &Value) -> Result<ValidatedMatch, InvalidRequest> {
    parse_match_request(value.to_string().as_bytes())
}

/// The design example with one change at a JSON pointer, parsed; the refusal's field.
fn refused_field(pointer: &str, replacement: Value) -> Option<String> {
    let mut value = design_example();
    *value.pointer_mut(pointer).expect("pointer into the example") = replacement;
    parse(&value).expect_err("should be refused").field
}

fn refused_field_of_text(text: &str) -> (InvalidRequestKind, Option<String>) {
    let error = parse_match_request(text.as_bytes()).expect_err("should be refused");
    (error.kind, error.field)
}

#[test]
fn the_design_example_reads_with_every_field() {
    let request = parse(&design_example()).unwrap();
    assert_eq!(request.match_id, "m-123");
    assert_eq!(request.players[0].latencies["us-east-1"], 95);
    assert_eq!(request.players[0].team.as_deref(), Some("red"));
    assert_eq!(request.ttl.map(Ttl::as_secs), Some(3600));
    assert_eq!(request.requested_at, Some(datetime!(2026-11-21 10:00:00 UTC)));
    assert_eq!(request.env["MODE"], "ranked");
    assert_eq!(serde_json::to_value(&request).unwrap(), design_example());
}

#[test]
fn only_match_id_and_players_are_required() {
    let request = parse(&json!({"match_id": "m", "players": [{"id": "p"}]})).unwrap();
    assert!(request.players[0].latencies.is_empty());
    assert_eq!(request.locations, None);
    assert_eq!(serde_json::to_value(&request).unwrap(), json!({"match_id": "m", "players": [{"id": "p"}]}));
}

#[test]
fn float_latencies_are_rounded_up_and_integer_ttls_are_seconds() {
    let mut value = design_example();
    value["players"][0]["latencies"]["eu-west-1"] = json!(31.2);
    value["players"][1]["latencies"]["eu-west-1"] = json!(41.0);
    value["ttl"] = json!(5400);
    let request = parse(&value).unwrap();
    assert_eq!(request.players[0].latencies["eu-west-1"], 32);
    assert_eq!(request.players[1].latencies["eu-west-1"], 41);
    assert_eq!(request.ttl.map(Ttl::to_gameye).as_deref(), Some("1h30m"));
}

#[test]
fn type_errors_name_the_nested_field() {
    let cases: [(&str, Value, &str); 10] = [
        ("/match_id", json!(5), "match_id"),
        ("/players/1/id", json!(7), "players[1].id"),
        ("/players/1/latencies/eu-west-1", json!(-1), "players[1].latencies.eu-west-1"),
        ("/players/1/latencies/eu-west-1", json!(-0.5), "players[1].latencies.eu-west-1"),
        ("/players/1/latencies/eu-west-1", json!("41"), "players[1].latencies.eu-west-1"),
        ("/players/0/latencies/us-east-1", json!(60000.5), "players[0].latencies.us-east-1"),
        ("/max_players", json!(-3), "max_players"),
        ("/args/0", json!(true), "args[0]"),
        ("/ttl", json!("1 hour"), "ttl"),
        ("/requested_at", json!("yesterday"), "requested_at"),
    ];
    for (pointer, replacement, field) in cases {
        assert_eq!(
            refused_field(pointer, replacement.clone()).as_deref(),
            Some(field),
            "{pointer} = {replacement}"
        );
    }
}

#[test]
fn unknown_and_missing_fields_are_named() {
    let mut typo = design_example();
    typo["locaitons"] = json!(["eu-west-1"]);
    assert_eq!(parse(&typo).unwrap_err().field.as_deref(), Some("locaitons"));

    let mut nested_typo = design_example();
    nested_typo["players"][1]["tema"] = json!("blue");
    assert_eq!(parse(&nested_typo).unwrap_err().field.as_deref(), Some("players[1].tema"));

    let mut no_id = design_example();
    no_id["players"][1].as_object_mut().unwrap().remove("id");
    let error = parse(&no_id).unwrap_err();
    assert_eq!(error.field.as_deref(), Some("players[1].id"));
    assert_eq!(error.kind, InvalidRequestKind::Invalid);
    assert_eq!(error.message, "missing field `id`");

    let mut no_match_id = design_example();
    no_match_id.as_object_mut().unwrap().remove("match_id");
    assert_eq!(parse(&no_match_id).unwrap_err().field.as_deref(), Some("match_id"));
}

#[test]
fn fields_are_found_across_lines_of_pretty_json() {
    let mut value = design_example();
    value["players"][1]["team"] = json!(3);
    let text = serde_json::to_string_pretty(&value).unwrap();
    let (kind, field) = refused_field_of_text(&text);
    assert_eq!(kind, InvalidRequestKind::Invalid);
    assert_eq!(field.as_deref(), Some("players[1].team"));
}

#[test]
fn a_body_that_is_not_a_json_object_is_refused_as_a_whole() {
    assert_eq!(refused_field_of_text("not json"), (InvalidRequestKind::Malformed, None));
    assert_eq!(refused_field_of_text(""), (InvalidRequestKind::Malformed, None));
    assert_eq!(refused_field_of_text("[]"), (InvalidRequestKind::Invalid, None));
    // serde alone would read this array as the struct's fields in order.
    let positional = r#" ["m", null, null, [{"id": "p"}]]"#;
    assert!(serde_json::from_str::<MatchRequest>(positional).is_ok());
    assert_eq!(refused_field_of_text(positional), (InvalidRequestKind::Invalid, None));
    let (kind, field) = refused_field_of_text(r#"{"match_id": "m", "players": [{"id": "p"}"#);
    assert_eq!(kind, InvalidRequestKind::Malformed);
    assert_eq!(field.as_deref(), Some("players[0]"));
}

#[test]
fn rule_breaks_name_the_field() {
    let long_id = "m".repeat(MAX_MATCH_ID_CHARS + 1);
    let too_many: Vec<Value> = (0..=MAX_PLAYERS_PER_MATCH).map(|i| json!({"id": format!("p{i}")})).collect();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/match_id", json!(""), "match_id"),
        ("/match_id", json!(long_id), "match_id"),
        ("/match_id", json!("m\u{7}1"), "match_id"),
        ("/match_id", json!("m 1"), "match_id"),
        ("/match_id", json!("m.>"), "match_id"),
        ("/match_id", json!("m."), "match_id"),
        ("/match_id", json!(".m"), "match_id"),
        ("/match_id", json!("a..b"), "match_id"),
        ("/image", json!(""), "image"),
        ("/version", json!(""), "version"),
        ("/players", json!([]), "players"),
        ("/players", Value::Array(too_many), "players"),
        ("/players/1/id", json!(""), "players[1].id"),
        ("/players/1/id", json!("p1"), "players[1].id"),
        ("/players/0/team", json!(""), "players[0].team"),
        ("/players/1/latencies", json!({"": 10}), r#"players[1].latencies[""]"#),
        ("/players/1/latencies/eu-west-1", json!(60_001), "players[1].latencies.eu-west-1"),
        ("/locations", json!([]), "locations"),
        ("/locations/1", json!("eu-west-1"), "locations[1]"),
        ("/locations/1", json!(""), "locations[1]"),
        ("/max_players", json!(1), "max_players"),
        ("/env/MODE", json!(""), "env.MODE"),
        ("/env", json!({"A=B": "x"}), r#"env["A=B"]"#),
        ("/env", json!({"": "x"}), r#"env[""]"#),
        ("/args/0", json!(""), "args[0]"),
        ("/labels", json!({"": "x"}), r#"labels[""]"#),
        ("/labels", json!({"env": "x"}), "labels.env"),
    ];
    for (pointer, replacement, field) in cases {
        let mut value = design_example();
        *value.pointer_mut(pointer).unwrap() = replacement.clone();
        let error = parse(&value).expect_err(pointer);
        assert_eq!(error.field.as_deref(), Some(field), "{pointer} = {replacement}");
        assert_eq!(error.kind, InvalidRequestKind::Invalid, "{pointer}");
    }
}

#[test]
fn match_ids_leave_no_subject_token_empty() {
    // Each part between dots is a NATS subject token: an empty one makes a subject nobody hears.
    for bad in ["m.", ".m", "a..b", ".", "..", "a.b.", "..a"] {
        let error = check_match_id(bad).expect_err(bad);
        assert_eq!(error.field.as_deref(), Some("match_id"), "{bad:?}");
        assert!(error.message.contains("'.'"), "{bad:?}: {error}");
    }
    for good in ["m-123", "a.b", "a.b.c", "fm.7f3c-1", "nakama-0123456789abcdef0123456789abcdef"] {
        assert_eq!(check_match_id(good), Ok(()), "{good:?}");
    }
    // The rule is the request's: a request with such an id is refused as a whole.
    let mut value = design_example();
    value["match_id"] = json!("a..b");
    assert_eq!(parse(&value).unwrap_err().field.as_deref(), Some("match_id"));
}

#[test]
fn limits_are_inclusive() {
    let mut value = design_example();
    value["match_id"] = json!("m".repeat(MAX_MATCH_ID_CHARS));
    value["players"][1]["latencies"]["eu-west-1"] = json!(MAX_LATENCY_MS);
    value["max_players"] = json!(2);
    assert!(parse(&value).is_ok());
}

#[test]
fn direct_construction_is_held_to_the_same_rules() {
    let mut request = MatchRequest {
        match_id: "m".into(),
        players: vec![Player { id: "p".into(), ..Player::default() }],
        ..MatchRequest::default()
    };
    request.players[0].latencies.insert("eu-west-1".into(), MAX_LATENCY_MS + 1);
    let error = request.validate().unwrap_err();
    assert_eq!(error.field.as_deref(), Some("players[0].latencies.eu-west-1"));
    assert_eq!(error.to_string(), "players[0].latencies.eu-west-1: must be at most 60000 ms");
}

#[test]
fn a_stored_request_is_validated_again_when_read_back() {
    let stored = json!({"match_id": "m", "players": []});
    let error = serde_json::from_value::<ValidatedMatch>(stored).unwrap_err();
    assert!(error.to_string().contains("players"), "{error}");
    let valid: ValidatedMatch = serde_json::from_value(design_example()).unwrap();
    assert_eq!(serde_json::to_value(&valid).unwrap(), design_example());
}

#[test]
fn age_counts_from_requested_at_and_never_goes_negative() {
    let request = parse(&design_example()).unwrap();
    let now = datetime!(2026-11-21 10:00:20.5 UTC);
    assert_eq!(request.age(now).as_millis(), 20_500);
    assert_eq!(request.age(datetime!(2026-11-21 09:59:00 UTC)).as_secs(), 0);
    let mut undated = design_example();
    undated.as_object_mut().unwrap().remove("requested_at");
    assert_eq!(parse(&undated).unwrap().age(now).as_secs(), 0);
}

#[test]
fn debug_output_hides_env_values() {
    let request = MatchRequest {
        match_id: "m".into(),
        env: [("API_KEY".to_owned(), "hunter2".to_owned())].into(),
        ..Default::default()
    };
    let shown = format!("{request:?}");
    assert!(shown.contains("API_KEY"));
    assert!(!shown.contains("hunter2"));
}

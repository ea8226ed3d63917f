//! The Nakama door end to end: hook bodies in every runtime's shape → the real bridge → Redis and
//! the Gameye emulator over HTTP; signatures; the push to a fake Nakama RPC server.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, Uri};
use futures::future::join_all;
use serde_json::{Value, json};

use crate::harness::run_bridge;
use crate::stack::{API_TOKEN, Stack};

const HMAC_SECRET: &str = "hook-signing-secret";
const HTTP_KEY: &str = "nakama-http-key";

fn session_id(match_id: &str) -> String {
    bridge::session_id("nakama", match_id).to_string()
}

fn unix_now() -> Duration {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap()
}

fn now_nanos() -> i64 {
    unix_now().as_nanos() as i64
}

/// An entry as Nakama's Go runtime serializes a `runtime.MatchmakerEntry`.
fn go_entry(ticket: &str, user: &str, properties: Value) -> Value {
    json!({"ticket": ticket,
           "presence": {"user_id": user, "session_id": format!("sess-{user}"), "username": format!("name-{user}"), "node": "nakama1"},
           "properties": properties, "party_id": "", "create_time": now_nanos()})
}

/// An entry as the JS runtime hands it to a TypeScript hook (`nkruntime.MatchmakerResult`).
fn js_entry(user: &str, properties: Value) -> Value {
    json!({"presence": {"userId": user, "sessionId": format!("sess-{user}"), "username": format!("name-{user}"), "node": "nakama1"},
           "properties": properties})
}

async fn post_hook(stack: &Stack, path: &str, body: &Value) -> (u16, Value) {
    let response = stack.http.post(stack.url(path)).bearer_auth(API_TOKEN).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post_with_headers(
    stack: &Stack,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (u16, Value) {
    let mut request = stack.http.post(stack.url(path)).header("content-type", "application/json").body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn signed_headers(secret: &str, timestamp: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("x-bridge-timestamp", timestamp.to_string()),
        ("x-bridge-signature", adapters::nakama::sign(secret, timestamp, body)),
    ]
}

#[tokio::test]
async fn go_js_and_envelope_shapes_are_placed_alike() {
    let stack = Stack::start().await;
    let properties = json!({"team": "blue", "latency_eu-central-1": 20, "latency_eu-west-1": 45});

    let go = json!([
        go_entry("ticket-a", "u-a", properties.clone()),
        go_entry("ticket-b", "u-b", properties.clone())
    ]);
    let (status, go_assignment) = post_hook(&stack, "/v1/nakama/matched", &go).await;
    assert_eq!(status, 200, "{go_assignment}");
    let go_match = go_assignment["match_id"].as_str().unwrap().to_owned();
    assert!(go_match.starts_with("nakama-"), "derived from the tickets: {go_match}");
    assert_eq!(go_assignment["session_id"], session_id(&go_match));
    assert_eq!(go_assignment["location"], "eu-central-1", "latencies from the entries' properties");
    assert_eq!(go_assignment["players"], json!(["u-a", "u-b"]));

    // The JS runtime's shape (camelCase, no ticket, so the hook names the match) for other
    // users: placed the same way.
    let js = json!({"match_id": "nk-js-1", "entries": [js_entry("u-c", properties.clone()), js_entry("u-d", properties.clone())]});
    let (status, js_assignment) = post_hook(&stack, "/v1/nakama/matched", &js).await;
    assert_eq!(status, 200, "{js_assignment}");
    assert_eq!(js_assignment["location"], go_assignment["location"]);
    assert_eq!(js_assignment["latency_ms"], json!({"u-c": 20, "u-d": 20}));
    assert_ne!(js_assignment["match_id"], go_assignment["match_id"]);

    // The same users in the JS shape, named as the Go call's match: the very same Assignment.
    let same = json!({"match_id": go_match, "entries": [js_entry("u-a", properties.clone()), js_entry("u-b", properties.clone())]});
    let (status, same_assignment) = post_hook(&stack, "/v1/nakama/matched", &same).await;
    assert_eq!(status, 200);
    assert_eq!(same_assignment, go_assignment);

    // The envelope, with the game's own match id, image, labels and max_players.
    let envelope = json!({"match_id": "nk-envelope-1", "entries": [js_entry("u-e", json!({}))],
                          "max_players": 4, "image": "demo-game", "labels": {"mode": "duel"}});
    let (status, envelope_assignment) = post_hook(&stack, "/v1/nakama/matched", &envelope).await;
    assert_eq!(status, 200, "{envelope_assignment}");
    assert_eq!(envelope_assignment["match_id"], "nk-envelope-1");
    assert_eq!(envelope_assignment["session_id"], session_id("nk-envelope-1"));

    let sessions = stack.emulator_sessions().await;
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    for assignment in [&go_assignment, &js_assignment, &envelope_assignment] {
        assert!(sessions.iter().any(|s| s["id"] == assignment["session_id"]), "{assignment}");
    }
}

#[tokio::test]
async fn a_retried_hook_gets_the_same_match_and_one_session() {
    let stack = Stack::start().await;
    // A slow Gameye keeps the concurrent retries in flight together.
    stack.set_faults(json!([{"operation": "session-run", "delay_ms": 300, "probability": 1.0}])).await;
    let body = json!([go_entry("t-1", "u-1", json!({})), go_entry("t-2", "u-2", json!({}))]);
    let answers = join_all((0..10).map(|_| post_hook(&stack, "/v1/nakama/matched", &body))).await;
    for (status, assignment) in &answers {
        assert_eq!(*status, 200, "{assignment}");
        assert_eq!(assignment, &answers[0].1, "every retry gets the identical assignment");
    }
    // Entries in another order are the same match too.
    let reordered = json!([body[1].clone(), body[0].clone()]);
    let (status, again) = post_hook(&stack, "/v1/nakama/matched", &reordered).await;
    assert_eq!(status, 200);
    assert_eq!(again, answers[0].1);
    assert_eq!(stack.emulator_sessions().await.len(), 1);
}

#[tokio::test]
async fn latencies_come_from_the_list_then_properties_then_the_store() {
    let stack = Stack::start().await;
    // The explicit list wins over the properties, which would have chosen eu-west-1.
    let properties = json!({"latency_eu-west-1": 5, "latency_us-east-1": 100});
    let body = json!({"entries": [go_entry("l-1", "x-1", properties.clone()), go_entry("l-2", "x-2", properties)],
                      "latencies": [{"user_id": "x-1", "region": "us-east-1", "latency_ms": 20},
                                    {"user_id": "x-1", "region": "eu-west-1", "latency_ms": 90},
                                    {"user_id": "x-2", "region": "us-east-1", "latency_ms": 24.5},
                                    {"user_id": "x-2", "region": "eu-west-1", "latency_ms": 80}]});
    let (status, assignment) = post_hook(&stack, "/v1/nakama/matched", &body).await;
    assert_eq!(status, 200, "{assignment}");
    assert_eq!(assignment["location"], "us-east-1");
    assert_eq!(assignment["latency_ms"], json!({"x-1": 20, "x-2": 25}));

    // Properties named by the pattern.
    let body =
        json!([go_entry("l-3", "y-1", json!({"latency_ap-northeast-1": 15, "latency_eu-west-1": 70}))]);
    let (_, assignment) = post_hook(&stack, "/v1/nakama/matched", &body).await;
    assert_eq!(assignment["location"], "ap-northeast-1", "{assignment}");

    // Nothing in the hook: the latency store.
    let response = stack
        .http
        .put(stack.url("/v1/players/z-1/latencies"))
        .bearer_auth(API_TOKEN)
        .json(&json!({"latencies": {"us-west-2": 10, "eu-west-1": 99}}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let body = json!([go_entry("l-4", "z-1", json!({"mode": "ranked"}))]);
    let (_, assignment) = post_hook(&stack, "/v1/nakama/matched", &body).await;
    assert_eq!(assignment["location"], "us-west-2", "{assignment}");
    assert_eq!(assignment["latency_ms"], json!({"z-1": 10}));
}

#[tokio::test]
async fn a_custom_latency_pattern_is_honoured() {
    let stack = Stack::start_with(&[("BRIDGE_NAKAMA__LATENCY_PROPERTY_PATTERN", "rtt.{location}")]).await;
    let body = json!([go_entry("p-1", "q-1", json!({"rtt.us-east-1": 12, "latency_eu-west-1": 1}))]);
    let (status, assignment) = post_hook(&stack, "/v1/nakama/matched", &body).await;
    assert_eq!(status, 200, "{assignment}");
    assert_eq!(assignment["location"], "us-east-1");
}

#[tokio::test]
async fn the_hook_needs_a_token_or_a_valid_signature() {
    let stack = Stack::start_with(&[("BRIDGE_NAKAMA__HMAC_SECRET", HMAC_SECRET)]).await;
    let body = serde_json::to_vec(&json!([go_entry("s-1", "v-1", json!({}))])).unwrap();
    let now = unix_now().as_secs() as i64;

    let (status, error) = post_with_headers(&stack, "/v1/nakama/matched", &[], body.clone()).await;
    assert_eq!(status, 401, "{error}");
    assert_eq!(error["error"]["code"], "UNAUTHORIZED");
    let (status, _) = post_with_headers(&stack, "/v1/nakama/events", &[], b"{}".to_vec()).await;
    assert_eq!(status, 401);

    let wrong_key = signed_headers("not-the-secret", now, &body);
    assert_eq!(post_with_headers(&stack, "/v1/nakama/matched", &wrong_key, body.clone()).await.0, 401);
    let stale = signed_headers(HMAC_SECRET, now - 3600, &body);
    assert_eq!(post_with_headers(&stack, "/v1/nakama/matched", &stale, body.clone()).await.0, 401);
    let other_body = signed_headers(HMAC_SECRET, now, b"[]");
    assert_eq!(post_with_headers(&stack, "/v1/nakama/matched", &other_body, body.clone()).await.0, 401);
    // A signature overrides a bearer token: a bad one is refused even next to a good token.
    let mut with_token = wrong_key.clone();
    with_token.push(("authorization", format!("Bearer {API_TOKEN}")));
    assert_eq!(post_with_headers(&stack, "/v1/nakama/matched", &with_token, body.clone()).await.0, 401);
    assert!(stack.emulator_sessions().await.is_empty(), "nothing placed without valid credentials");

    let signed = signed_headers(HMAC_SECRET, now, &body);
    let (status, assignment) = post_with_headers(&stack, "/v1/nakama/matched", &signed, body.clone()).await;
    assert_eq!(status, 200, "{assignment}");
    assert_eq!(assignment["players"], json!(["v-1"]));
    // The bearer token alone works as well (same match: same answer).
    let (status, again) = post_with_headers(
        &stack,
        "/v1/nakama/matched",
        &[("authorization", format!("Bearer {API_TOKEN}"))],
        body.clone(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(again, assignment);
    // The /v1 routes themselves still take no signature.
    let response =
        stack.http.get(stack.url("/v1/locations")).headers(header_map(&signed)).send().await.unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn a_signed_hook_body_above_two_mib_is_read_under_a_larger_body_limit() {
    let stack = Stack::start_with(&[
        ("BRIDGE_NAKAMA__HMAC_SECRET", HMAC_SECRET),
        ("BRIDGE_HTTP__BODY_LIMIT", "8388608"),
    ])
    .await;
    // 3 MiB: above axum's own default limit (2 MiB), below the configured 8 MiB. The signature
    // check reads the body itself, before the handler does.
    let mut body = serde_json::to_vec(&json!([go_entry("big-1", "big-u", json!({}))])).unwrap();
    body.resize(3 << 20, b' ');
    let signed = signed_headers(HMAC_SECRET, unix_now().as_secs() as i64, &body);
    let (status, assignment) = post_with_headers(&stack, "/v1/nakama/matched", &signed, body).await;
    assert_eq!(status, 200, "{assignment}");
    assert_eq!(assignment["players"], json!(["big-u"]));
}

fn header_map(headers: &[(&str, String)]) -> reqwest::header::HeaderMap {
    let mut map = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        map.insert(reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    map
}

#[tokio::test]
async fn malformed_hooks_are_refused_and_place_nothing() {
    let stack = Stack::start().await;
    let cases = [
        (json!([]), 422, "entries"),
        (json!({"entries": []}), 422, "entries"),
        (json!([{"ticket": "t", "properties": {}}]), 422, "entries[0].presence"),
        (json!([{"presence": {"user_id": 42}}]), 422, "entries[0].presence.user_id"),
        (json!([{"presence": {"user_id": "u"}, "properties": "many"}]), 422, "entries[0].properties"),
        (json!({"entries": "u1"}), 422, "entries"),
        (json!({"entries": [js_entry("u", json!({}))], "max_players": "ten"}), 422, "max_players"),
        // No ticket, no create_time, no match id: a rematch of the same sockets would look the same.
        (json!([js_entry("u", json!({}))]), 422, "match_id"),
        (json!("hello"), 422, "request body"),
    ];
    for (body, expected, field) in cases {
        let (status, error) = post_hook(&stack, "/v1/nakama/matched", &body).await;
        assert_eq!(status, expected, "{body}: {error}");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(field), "{body}: {message}");
    }
    let (status, _) = post_with_headers(
        &stack,
        "/v1/nakama/matched",
        &[("authorization", format!("Bearer {API_TOKEN}"))],
        b"[{\"presence\":".to_vec(),
    )
    .await;
    assert_eq!(status, 400, "cut short");
    let huge = format!(
        "[{{\"presence\":{{\"user_id\":\"u\"}},\"properties\":{{\"pad\":\"{}\"}}}}]",
        "x".repeat(10 << 20)
    );
    // The bridge may answer 413 and close before the client has written everything; a client that
    // then only sees the reset connection got no answer at all, which is refusal too.
    let sent = stack
        .http
        .post(stack.url("/v1/nakama/matched"))
        .bearer_auth(API_TOKEN)
        .header("content-type", "application/json")
        .body(huge.into_bytes())
        .send()
        .await;
    if let Ok(response) = sent {
        assert_eq!(response.status(), 413, "10 MB body");
    }
    assert!(stack.emulator_sessions().await.is_empty());
}

/// Posts `body` to `base_url`'s events endpoint with these signature headers.
async fn post_events_signed(
    http: &reqwest::Client,
    base_url: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, Value) {
    let mut request = http
        .post(format!("{base_url}/v1/nakama/events"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A captured signed leave, sent again within the signature's window, would remove a player who
/// has since rejoined. It is refused (409 REPLAYED) by every instance sharing the store, however
/// its signature is spelled, and changes nothing; the same event signed anew, or sent with the
/// bearer token, is applied as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_signed_event_is_refused_by_every_instance_and_changes_nothing() {
    let stack = Stack::start_with(&[("BRIDGE_NAKAMA__HMAC_SECRET", HMAC_SECRET)]).await;
    let placed =
        json!({"match_id": "nk-replay", "entries": [js_entry("r-1", json!({})), js_entry("r-2", json!({}))]});
    let (status, assignment) = post_hook(&stack, "/v1/nakama/matched", &placed).await;
    assert_eq!(status, 200, "{assignment}");
    let session = session_id("nk-replay");
    join(&stack, &session, &["r-1", "r-2"]).await;

    let leave =
        serde_json::to_vec(&json!({"name": "match_leave", "user_id": "r-1", "match_id": "nk-replay"}))
            .unwrap();
    let signed_at = unix_now().as_secs() as i64;
    let headers = signed_headers(HMAC_SECRET, signed_at, &leave);
    let (status, answer) = post_events_signed(&stack.http, &stack.bridge.base_url, &headers, &leave).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["sessions"][0]["left"], json!(["r-1"]), "{answer}");
    join(&stack, &session, &["r-1"]).await;

    // The captured request again, at this instance and at another sharing the Redis store.
    let other = crate::stack::start_bridge(
        &stack.emulator,
        &stack.redis,
        &[("BRIDGE_NAKAMA__HMAC_SECRET", HMAC_SECRET)],
    )
    .await;
    for base_url in [&stack.bridge.base_url, &other.base_url] {
        let (status, refused) = post_events_signed(&stack.http, base_url, &headers, &leave).await;
        assert_eq!(status, 409, "{base_url}: {refused}");
        assert_eq!(refused["error"]["code"], "REPLAYED", "{refused}");
    }
    // Re-spelled: without the scheme, in capitals. One MAC, one request.
    let bare = headers[1].1.trim_start_matches("sha256=").to_owned();
    for signature in [bare.clone(), bare.to_ascii_uppercase()] {
        let respelled = vec![headers[0].clone(), ("x-bridge-signature", signature)];
        let (status, refused) = post_events_signed(&stack.http, &other.base_url, &respelled, &leave).await;
        assert_eq!(status, 409, "{refused}");
    }
    assert_eq!(
        seated(&stack, &session).await,
        (strings(&["r-1", "r-2"]), vec![]),
        "the rejoined player stays"
    );
    let metrics =
        stack.http.get(format!("{}/metrics", other.base_url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("gameye_bridge_nakama_replays_total 3"), "{metrics}");

    // Copies of a fresh request sent at once to both instances: exactly one is applied; the others
    // are told it is in progress (503, come back) or, once it is applied, that it was (409).
    let leave_2 =
        serde_json::to_vec(&json!({"name": "match_leave", "user_id": "r-2", "match_id": "nk-replay"}))
            .unwrap();
    let headers_2 = signed_headers(HMAC_SECRET, signed_at, &leave_2);
    let copies = join_all(
        [&stack.bridge.base_url, &other.base_url, &stack.bridge.base_url, &other.base_url]
            .map(|base_url| post_events_signed(&stack.http, base_url, &headers_2, &leave_2)),
    )
    .await;
    let statuses: Vec<u16> = copies.iter().map(|(status, _)| *status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 202).count(), 1, "{copies:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409 || **s == 503).count(), 3, "{copies:?}");
    for (status, answer) in &copies {
        if *status == 503 {
            assert_eq!(answer["error"]["code"], "IN_PROGRESS", "{answer}");
        }
    }
    let (status, refused) = post_events_signed(&stack.http, &other.base_url, &headers_2, &leave_2).await;
    assert_eq!((status, &refused["error"]["code"]), (409, &json!("REPLAYED")), "once applied: {refused}");
    assert_eq!(seated(&stack, &session).await, (strings(&["r-1"]), vec![]));

    // The same event signed anew is a new request.
    let resigned = signed_headers(HMAC_SECRET, signed_at + 1, &leave);
    let (status, answer) = post_events_signed(&stack.http, &other.base_url, &resigned, &leave).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["sessions"][0]["left"], json!(["r-1"]), "{answer}");
    // With the bearer token nothing identifies a copy: each is applied.
    let leave_json: Value = serde_json::from_slice(&leave).unwrap();
    for _ in 0..2 {
        join(&stack, &session, &["r-1"]).await;
        let (status, answer) = post_hook(&stack, "/v1/nakama/events", &leave_json).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["sessions"][0]["left"], json!(["r-1"]), "{answer}");
    }
    assert_eq!(seated(&stack, &session).await, (vec![], vec![]));
}

/// The sender's retry of a delivery the bridge failed to apply carries the same signature: it is
/// applied, not refused as a replay (the signature is claimed only while the events apply, and
/// given back when that fails).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_event_that_failed_to_apply_is_applied_when_sent_again() {
    let stack = Stack::start_with(&[("BRIDGE_NAKAMA__HMAC_SECRET", HMAC_SECRET)]).await;
    let placed =
        json!({"match_id": "nk-retry", "entries": [js_entry("f-1", json!({})), js_entry("f-2", json!({}))]});
    let (status, assignment) = post_hook(&stack, "/v1/nakama/matched", &placed).await;
    assert_eq!(status, 200, "{assignment}");
    let session = session_id("nk-retry");
    join(&stack, &session, &["f-1", "f-2"]).await;

    // The session's seat record, swapped for a value its scripts cannot read: the leave fails.
    let mut redis =
        ::redis::Client::open(stack.redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> =
        ::redis::cmd("KEYS").arg(format!("*:seats:{{{session}}}")).query_async(&mut redis).await.unwrap();
    let [seat_key] = keys.as_slice() else { panic!("one seat record: {keys:?}") };
    let aside = format!("{seat_key}:aside");
    let () = ::redis::cmd("RENAME").arg(seat_key).arg(&aside).query_async(&mut redis).await.unwrap();
    let () =
        ::redis::cmd("SET").arg(seat_key).arg("not a seat record").query_async(&mut redis).await.unwrap();

    let leave = serde_json::to_vec(&json!({"name": "match_leave", "user_id": "f-1", "match_id": "nk-retry"}))
        .unwrap();
    let headers = signed_headers(HMAC_SECRET, unix_now().as_secs() as i64, &leave);
    let (status, failed) = post_events_signed(&stack.http, &stack.bridge.base_url, &headers, &leave).await;
    assert!(status >= 500, "{status} {failed}");

    // Repaired, and the sender retries the very same request.
    let () = ::redis::cmd("RENAME").arg(&aside).arg(seat_key).query_async(&mut redis).await.unwrap();
    let (status, answer) = post_events_signed(&stack.http, &stack.bridge.base_url, &headers, &leave).await;
    assert_eq!(status, 202, "the retry of a failed delivery: {answer}");
    assert_eq!(answer["sessions"][0]["left"], json!(["f-1"]), "{answer}");
    assert_eq!(seated(&stack, &session).await, (strings(&["f-2"]), vec![]));
    // Applied now, so a further copy is a replay.
    let (status, refused) = post_events_signed(&stack.http, &stack.bridge.base_url, &headers, &leave).await;
    assert_eq!((status, &refused["error"]["code"]), (409, &json!("REPLAYED")), "{refused}");
}

#[tokio::test]
async fn wait_false_answers_202_and_places_in_the_background() {
    let stack = Stack::start().await;
    let body = json!([go_entry("w-1", "async-1", json!({}))]);
    let (status, pending) = post_hook(&stack, "/v1/nakama/matched?wait=false", &body).await;
    assert_eq!(status, 202, "{pending}");
    assert_eq!(pending["status"], "pending");
    let match_id = pending["match_id"].as_str().unwrap().to_owned();
    let record = stack.wait_placed(&match_id, Duration::from_secs(15)).await;
    assert_eq!(record["status"], "placed", "{record}");
    assert_eq!(record["assignment"]["session_id"], session_id(&match_id));
    // The synchronous retry of the same hook now answers the assignment.
    let (status, assignment) = post_hook(&stack, "/v1/nakama/matched", &body).await;
    assert_eq!(status, 200);
    assert_eq!(assignment, record["assignment"]);
}

/// `?wait=false`: a hook that hangs up while its claim is in flight (Redis slow to answer, the
/// module's 5 s timeout) does not leave the claim to recovery, 25 s on: the match is placed as soon
/// as the claim is written.
#[tokio::test]
async fn a_wait_false_hook_that_hangs_up_mid_claim_still_has_its_match_placed() {
    let stack = Stack::start().await;
    let body = json!({"match_id": "nk-hangup", "entries": [go_entry("w-1", "hang-1", json!({}))]});
    stack.assert_placed_after_a_hang_up_mid_claim("/v1/nakama/matched?wait=false", &body, "nk-hangup").await;
}

#[tokio::test]
async fn events_are_accepted_and_counted() {
    let stack = Stack::start().await;
    let events = json!({"events": [{"name": "session_end", "user_id": "u-gone"},
                                   {"name": "rage_quit", "user_ids": ["u-1", "u-2"], "match_id": "m-1"}]});
    let (status, body) = post_hook(&stack, "/v1/nakama/events", &events).await;
    assert_eq!(status, 202, "{body}");
    // Nobody named holds a seat: applied, nothing changed.
    assert_eq!(body, json!({"accepted": 2, "users": 3, "applied": true, "sessions": []}));
    let (status, _) = post_hook(&stack, "/v1/nakama/events", &json!({"name": "session_end"})).await;
    assert_eq!(status, 422, "an event must name its users");
    let metrics = stack.http.get(stack.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("gameye_bridge_nakama_events_total{kind=\"session_end\"} 1"), "{metrics}");
    assert!(metrics.contains("gameye_bridge_nakama_events_total{kind=\"custom\"} 1"), "{metrics}");
}

async fn join(stack: &Stack, session: &str, players: &[&str]) {
    let response = stack
        .http
        .post(stack.url(&format!("/v1/sessions/{session}/players")))
        .bearer_auth(API_TOKEN)
        .json(&json!({"players": players}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
}

/// Joined players and players holding reservations of a session, as `GET /v1/sessions/{id}` tells.
async fn seated(stack: &Stack, session: &str) -> (Vec<String>, Vec<String>) {
    let (status, view) = stack.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(status, 200, "{view}");
    let names = |list: &Value| -> Vec<String> {
        list.as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect()
    };
    let joined = names(&view["players"]);
    let mut reserved: Vec<String> =
        view["reservations"].as_array().unwrap().iter().flat_map(|r| names(&r["players"])).collect();
    reserved.sort();
    (joined, reserved)
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

#[tokio::test]
async fn leave_events_remove_their_users_from_seats_once() {
    let stack = Stack::start_with(&[("BRIDGE_NAKAMA__HMAC_SECRET", HMAC_SECRET)]).await;
    // One session named by the module's own match id, every player joined ...
    let named = json!({"match_id": "nk-seats", "entries": [js_entry("u-1", json!({})), js_entry("u-2", json!({})), js_entry("u-3", json!({}))]});
    let (status, assignment) = post_hook(&stack, "/v1/nakama/matched", &named).await;
    assert_eq!(status, 200, "{assignment}");
    let first = session_id("nk-seats");
    assert_eq!(assignment["session_id"], first.as_str());
    join(&stack, &first, &["u-1", "u-2", "u-3"]).await;
    // ... and one from Go entries (match id derived from tickets): u-4 joined, u-5 still reserved.
    let go = json!([go_entry("t-4", "u-4", json!({})), go_entry("t-5", "u-5", json!({}))]);
    let (status, assignment) = post_hook(&stack, "/v1/nakama/matched", &go).await;
    assert_eq!(status, 200, "{assignment}");
    let second = assignment["session_id"].as_str().unwrap().to_owned();
    join(&stack, &second, &["u-4"]).await;
    assert_eq!(seated(&stack, &second).await, (strings(&["u-4"]), strings(&["u-5"])));

    // The example module's session end: no match id, so the user is found where they sit.
    let ended = json!({"name": "session_end", "user_id": "u-1", "session_id": "nakama-session-of-u-1"});
    let (status, body) = post_hook(&stack, "/v1/nakama/events", &ended).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body,
        json!({"accepted": 1, "users": 1, "applied": true,
               "sessions": [{"session_id": first, "left": ["u-1"], "released": []}]})
    );
    assert_eq!(seated(&stack, &first).await, (strings(&["u-2", "u-3"]), vec![]));

    // The same event again changes nothing.
    let (status, body) = post_hook(&stack, "/v1/nakama/events", &ended).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["sessions"], json!([]), "{body}");
    assert_eq!(seated(&stack, &first).await, (strings(&["u-2", "u-3"]), vec![]));

    // A leave naming its match goes to that match's session; a reserved seat is released too, and
    // both come out of one request.
    let events = json!({"events": [{"name": "match_leave", "user_id": "u-2", "match_id": "nk-seats"},
                                   {"name": "sessionEnd", "userId": "u-5"}]});
    let (status, body) = post_hook(&stack, "/v1/nakama/events", &events).await;
    assert_eq!(status, 202, "{body}");
    let mut expected = vec![
        json!({"session_id": first, "left": ["u-2"], "released": []}),
        json!({"session_id": second, "left": [], "released": ["u-5"]}),
    ];
    expected.sort_by_key(|s| s["session_id"].as_str().unwrap().to_owned());
    assert_eq!(body["sessions"], json!(expected), "{body}");
    assert_eq!(seated(&stack, &first).await, (strings(&["u-3"]), vec![]));
    assert_eq!(seated(&stack, &second).await, (strings(&["u-4"]), vec![]));

    // Signed like the example module's calls: applied; unsigned without a token: refused, no change.
    join(&stack, &first, &["u-6"]).await;
    let body = serde_json::to_vec(&json!({"name": "session_end", "user_id": "u-6"})).unwrap();
    let (status, answer) = post_with_headers(&stack, "/v1/nakama/events", &[], body.clone()).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(seated(&stack, &first).await, (strings(&["u-3", "u-6"]), vec![]));
    let now = unix_now().as_secs() as i64;
    let (status, answer) =
        post_with_headers(&stack, "/v1/nakama/events", &signed_headers(HMAC_SECRET, now, &body), body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["sessions"][0]["left"], json!(["u-6"]), "{answer}");

    // Unknown users, a match the bridge never placed (nobody of it seated), custom events:
    // nothing changes, and none of it is an error.
    let events = json!([{"name": "session_end", "user_ids": ["ghost-1", "ghost-2"]},
                        {"name": "session_end", "user_id": "ghost-3", "match_id": "never-placed"},
                        {"name": "rage_quit", "user_id": "u-3"},
                        {"name": "session_start", "user_id": "u-4"}]);
    let (status, body) = post_hook(&stack, "/v1/nakama/events", &events).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["sessions"], json!([]), "{body}");
    assert_eq!(seated(&stack, &first).await, (strings(&["u-3"]), vec![]));
    assert_eq!(seated(&stack, &second).await, (strings(&["u-4"]), vec![]));

    // Malformed requests are refused whole: a valid leave beside a bad event is not applied.
    for (bad, expected_status) in [
        (json!({"events": [{"name": "session_end", "user_id": "u-3"}, {"name": "session_end"}]}), 422),
        (json!({"events": [{"name": "session_end", "user_id": "u-4"}, {"name": "", "user_id": "u-4"}]}), 422),
        (json!({"name": "session_end", "user_id": ["u-3"]}), 422),
        (json!({"name": "session_end", "user_id": "u-3", "match_id": "m".repeat(129)}), 422),
        (json!("session_end u-3"), 422),
    ] {
        let (status, body) = post_hook(&stack, "/v1/nakama/events", &bad).await;
        assert_eq!(status, expected_status, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "INVALID_REQUEST", "{body}");
    }
    let response = stack
        .http
        .post(stack.url("/v1/nakama/events"))
        .bearer_auth(API_TOKEN)
        .header("content-type", "application/json")
        .body("{\"name\": \"session_end\", \"user_id\": \"u-3\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "not JSON");
    assert_eq!(seated(&stack, &first).await, (strings(&["u-3"]), vec![]));

    // A match id that names no session the bridge knows (Nakama's own id for a match the hook
    // placed under another): the user is looked for where they sit.
    let event = json!({"name": "session_end", "user_id": "u-3", "match_id": "nakama-real-match-id"});
    let (status, body) = post_hook(&stack, "/v1/nakama/events", &event).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["sessions"], json!([{"session_id": first, "left": ["u-3"], "released": []}]), "{body}");
    assert_eq!(seated(&stack, &first).await, (vec![], vec![]));
    assert_eq!(seated(&stack, &second).await, (strings(&["u-4"]), vec![]));
}

// ---------------------------------------------------------------------------------------------
// The push path, against a fake Nakama.

#[derive(Debug, Clone)]
struct Recorded {
    uri: String,
    authorization: String,
    body: Value,
}

/// A stand-in for Nakama's HTTP API: records every request and answers the queued statuses
/// (then `fallback`), with Nakama's error JSON for errors.
#[derive(Clone)]
struct FakeNakama {
    url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    statuses: Arc<Mutex<VecDeque<u16>>>,
    fallback: Arc<Mutex<u16>>,
}

impl FakeNakama {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Self {
            url: format!("http://{}", listener.local_addr().unwrap()),
            requests: Arc::default(),
            statuses: Arc::default(),
            fallback: Arc::new(Mutex::new(200)),
        };
        let state = fake.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
            let state = state.clone();
            async move {
                let authorization =
                    headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                state.requests.lock().unwrap().push(Recorded {
                    uri: uri.to_string(),
                    authorization,
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                });
                let status = state.statuses.lock().unwrap().pop_front().unwrap_or(*state.fallback.lock().unwrap());
                let status = StatusCode::from_u16(status).unwrap();
                let body = match status.as_u16() {
                    200 => json!({}),
                    401 => json!({"error": "Invalid authentication credentials.", "message": "Invalid authentication credentials.", "code": 16}),
                    404 => json!({"error": "RPC function not found", "message": "RPC function not found", "code": 5}),
                    _ => json!({"error": "boom", "message": "boom", "code": 13}),
                };
                (status, axum::Json(body))
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    fn answer_next(&self, statuses: &[u16]) {
        self.statuses.lock().unwrap().extend(statuses);
    }

    fn answer_always(&self, status: u16) {
        *self.fallback.lock().unwrap() = status;
    }

    fn requests_for(&self, match_id: &str) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.body["match_id"] == match_id).collect()
    }

    async fn wait_for(&self, match_id: &str, count: usize) -> Vec<Recorded> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let found = self.requests_for(match_id);
            if found.len() >= count {
                return found;
            }
            assert!(Instant::now() < deadline, "{match_id}: {} of {count} pushes arrived", found.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn stack_pushing_to(fake: &FakeNakama) -> Stack {
    Stack::start_with(&[
        ("BRIDGE_NAKAMA__RPC_URL", fake.url.as_str()),
        ("BRIDGE_NAKAMA__HTTP_KEY", HTTP_KEY),
        ("BRIDGE_NAKAMA__RPC_ID", "gameye_bridge_result"),
    ])
    .await
}

#[tokio::test]
async fn placements_are_pushed_to_nakama_with_basic_auth_and_retried_after_500s() {
    let fake = FakeNakama::start().await;
    let stack = stack_pushing_to(&fake).await;

    let body =
        json!({"match_id": "push-1", "entries": [js_entry("pu-1", json!({})), js_entry("pu-2", json!({}))]});
    let (status, assignment) = post_hook(&stack, "/v1/nakama/matched", &body).await;
    assert_eq!(status, 200, "{assignment}");
    let pushes = fake.wait_for("push-1", 1).await;
    let push = &pushes[0];
    assert_eq!(push.uri, "/v2/rpc/gameye_bridge_result?unwrap");
    // base64("nakama-http-key:")
    assert_eq!(push.authorization, "Basic bmFrYW1hLWh0dHAta2V5Og==");
    assert_eq!(
        push.body,
        json!({"status": "placed", "match_id": "push-1", "session_id": assignment["session_id"],
               "host": assignment["host"], "ports": assignment["ports"], "users": ["pu-1", "pu-2"],
               "location": assignment["location"]})
    );

    // Nakama failing twice: the push is retried until it gets through.
    fake.answer_next(&[500, 500]);
    let body = json!({"match_id": "push-2", "entries": [js_entry("pu-3", json!({}))]});
    assert_eq!(post_hook(&stack, "/v1/nakama/matched", &body).await.0, 200);
    let pushes = fake.wait_for("push-2", 3).await;
    assert_eq!(pushes.len(), 3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.requests_for("push-2").len(), 3, "no push after the one that succeeded");

    // Other doors' placements are not Nakama's business.
    let (status, _) = stack.post_match(&json!({"match_id": "http-only", "players": [{"id": "h"}]})).await;
    assert_eq!(status, 200);

    // A failure is pushed too, to the users of the hook call.
    stack.set_faults(json!([{"operation": "session-run", "status": 420, "probability": 1.0}])).await;
    let body = json!({"match_id": "push-3", "entries": [js_entry("pu-4", json!({}))]});
    let (status, failure) = post_hook(&stack, "/v1/nakama/matched", &body).await;
    assert_eq!(status, 503, "{failure}");
    let pushes = fake.wait_for("push-3", 1).await;
    assert_eq!(pushes[0].body["status"], "failed");
    assert_eq!(pushes[0].body["users"], json!(["pu-4"]));
    assert_eq!(pushes[0].body["error"]["code"], "NO_CAPACITY");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.requests_for("http-only").is_empty());
}

#[tokio::test]
async fn a_hook_that_gives_up_waiting_still_gets_its_match_placed_and_pushed() {
    // The example module's hook times out after 5 s, well within the 20 s deadline. A placement
    // dropped with its request would be pending until its lease ends 25 s on.
    let fake = FakeNakama::start().await;
    let stack = stack_pushing_to(&fake).await;
    stack.set_faults(json!([{"operation": "session-run", "delay_ms": 1500, "probability": 1.0}])).await;
    let started = Instant::now();
    let body = json!({"match_id": "gave-up-1", "entries": [js_entry("gu-1", json!({}))]});
    let gave_up = stack
        .http
        .post(stack.url("/v1/nakama/matched"))
        .bearer_auth(API_TOKEN)
        .json(&body)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(gave_up.as_ref().is_err_and(reqwest::Error::is_timeout), "{gave_up:?}");

    let pushes = fake.wait_for("gave-up-1", 1).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "pushed {took:?} after the hook call; Gameye took 1.5 s");
    assert_eq!(pushes[0].body["status"], "placed", "{:?}", pushes[0].body);
    assert_eq!(pushes[0].body["users"], json!(["gu-1"]));
    let record = stack.wait_placed("gave-up-1", Duration::from_secs(1)).await;
    assert_eq!(record["assignment"]["session_id"], session_id("gave-up-1"));
    assert_eq!(stack.emulator_sessions().await.len(), 1);
}

/// A failure pushed by an instance that did not take the hook call (here: the one that took it
/// was killed while Nakama was down; another one's outbox pushes it) names the match's users,
/// read from the placement record, not an empty list that notifies nobody.
#[tokio::test]
async fn a_failure_pushed_by_another_instance_names_the_matchs_users() {
    let fake = FakeNakama::start().await;
    let nakama = [
        ("BRIDGE_NAKAMA__RPC_URL", fake.url.as_str()),
        ("BRIDGE_NAKAMA__HTTP_KEY", HTTP_KEY),
        ("BRIDGE_NAKAMA__RPC_ID", "gameye_bridge_result"),
        ("BRIDGE_PLACEMENT__DEADLINE", "1s"),
        ("BRIDGE_PLACEMENT__RECOVERY_INTERVAL", "500ms"),
    ];
    let mut stack = Stack::start_with(&nakama).await;
    fake.answer_always(503);
    stack.set_faults(json!([{"operation": "session-run", "status": 402, "probability": 1.0}])).await;
    let body = json!({"match_id": "pushed-elsewhere", "entries": [js_entry("pe-1", json!({})), js_entry("pe-2", json!({}))]});
    let (status, failure) = post_hook(&stack, "/v1/nakama/matched", &body).await;
    assert_eq!(status, 402, "{failure}");
    fake.wait_for("pushed-elsewhere", 1).await;
    stack.bridge.signal("KILL");
    stack.bridge.wait_exit(Duration::from_secs(5)).await;

    fake.answer_always(200);
    let pushed_before = fake.requests_for("pushed-elsewhere").len();
    let _other = crate::stack::start_bridge(&stack.emulator, &stack.redis, &nakama).await;
    let pushes = fake.wait_for("pushed-elsewhere", pushed_before + 1).await;
    let push = &pushes.last().unwrap().body;
    assert_eq!(push["status"], "failed", "{push}");
    assert_eq!(push["error"]["code"], "QUOTA_EXCEEDED", "{push}");
    assert_eq!(push["users"], json!(["pe-1", "pe-2"]), "{push}");
}

#[tokio::test]
async fn nakama_refusing_the_key_or_the_rpc_is_reported_once_and_not_retried() {
    let fake = FakeNakama::start().await;
    let stack = stack_pushing_to(&fake).await;
    fake.answer_always(401);
    for match_id in ["refused-1", "refused-2"] {
        let body = json!({"match_id": match_id, "entries": [js_entry(&format!("{match_id}-u"), json!({}))]});
        assert_eq!(
            post_hook(&stack, "/v1/nakama/matched", &body).await.0,
            200,
            "the hook is answered anyway"
        );
        fake.wait_for(match_id, 1).await;
    }
    fake.answer_always(404);
    let body = json!({"match_id": "refused-3", "entries": [js_entry("refused-3-u", json!({}))]});
    assert_eq!(post_hook(&stack, "/v1/nakama/matched", &body).await.0, 200);
    fake.wait_for("refused-3", 1).await;
    // Transient errors are retried within 100-200 ms; these must not be.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for match_id in ["refused-1", "refused-2", "refused-3"] {
        assert_eq!(fake.requests_for(match_id).len(), 1, "{match_id} pushed once, not retried");
    }
    let logs = stack.bridge.logs();
    let loud = logs.lines().filter(|l| l.contains("\"level\":\"ERROR\"") && l.contains("nakama")).count();
    assert_eq!(loud, 2, "one error line for the 401, one for the 404:\n{logs}");
    assert!(!logs.contains(HTTP_KEY), "the http_key never reaches a log line");
    assert!(!logs.contains("bmFrYW1hLWh0dHAta2V5Og"), "nor its Basic form");
}

#[test]
fn check_config_redacts_the_nakama_secrets_and_names_bad_keys() {
    let output = run_bridge(
        &["check-config"],
        &[
            ("BRIDGE_NAKAMA__RPC_URL", "http://nakama:7350"),
            ("BRIDGE_NAKAMA__HTTP_KEY", HTTP_KEY),
            ("BRIDGE_NAKAMA__HMAC_SECRET", HMAC_SECRET),
        ],
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed}{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        printed.contains("[nakama]") && printed.contains("rpc_url = \"http://nakama:7350\""),
        "{printed}"
    );
    assert!(!printed.contains(HTTP_KEY) && !printed.contains(HMAC_SECRET), "{printed}");

    for (env, key) in [
        (("BRIDGE_NAKAMA__RPC_URL", "http://nakama:7350"), "nakama.http_key"),
        (("BRIDGE_NAKAMA__LATENCY_PROPERTY_PATTERN", "latency"), "nakama.latency_property_pattern"),
        (("BRIDGE_NAKAMA__RPC_URL", "nakama:7350"), "nakama.rpc_url"),
    ] {
        let output = run_bridge(&["check-config"], &[env]);
        assert_eq!(output.status.code(), Some(2), "{env:?}");
        assert!(String::from_utf8_lossy(&output.stderr).contains(key), "{env:?}");
    }
}

/// Another match under a known Nakama match id is refused (409), and the first match's failure
/// is still pushed to its own users, not to the refused call's.
#[tokio::test]
async fn a_reused_match_id_for_other_users_is_refused_and_the_first_users_keep_their_push() {
    let fake = FakeNakama::start().await;
    let stack = stack_pushing_to(&fake).await;
    // Every location full, slowly: the first match is still being placed when the second call comes.
    stack
        .set_faults(json!([{"operation": "session-run", "status": 420, "delay_ms": 300, "probability": 1.0}]))
        .await;
    let first = json!({"match_id": "nk-reused", "entries": [js_entry("first-u", json!({}))]});
    let (status, pending) = post_hook(&stack, "/v1/nakama/matched?wait=false", &first).await;
    assert_eq!(status, 202, "{pending}");

    let other = json!({"match_id": "nk-reused", "entries": [js_entry("other-u", json!({}))]});
    let (status, body) = post_hook(&stack, "/v1/nakama/matched", &other).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "MATCH_ID_CONFLICT", "{body}");

    let pushes = fake.wait_for("nk-reused", 1).await;
    assert_eq!(pushes[0].body["status"], "failed", "{:?}", pushes[0].body);
    assert_eq!(pushes[0].body["users"], json!(["first-u"]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.requests_for("nk-reused").len(), 1, "the refused call pushed nothing");
}

//! Sessions, seats and backfill end to end: HTTP door → engine → Redis + Gameye emulator over HTTP.

use std::collections::BTreeSet;

use futures::future::join_all;
use gameye_emulator::DEFAULT_TOKEN;
use serde_json::{Value, json};

use crate::stack::{API_TOKEN, Stack};

pub(crate) fn session_id(match_id: &str) -> String {
    bridge::session_id("http", match_id).to_string()
}

/// A match of `players` (ids), all measuring `latencies`, with `extra` fields merged in.
pub(crate) fn match_of(match_id: &str, players: &[&str], latencies: Value, extra: Value) -> Value {
    let players: Vec<Value> = players.iter().map(|id| json!({"id": id, "latencies": latencies})).collect();
    let mut body = json!({"match_id": match_id, "players": players});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

pub(crate) async fn send(stack: &Stack, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut request = stack.http.request(method.parse().unwrap(), stack.url(path)).bearer_auth(API_TOKEN);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn place(stack: &Stack, body: &Value) -> Value {
    let (status, assignment) = stack.post_match(body).await;
    assert_eq!(status, 200, "{assignment}");
    assignment
}

pub(crate) async fn join(stack: &Stack, session: &str, players: &[&str]) -> (u16, Value) {
    send(stack, "POST", &format!("/v1/sessions/{session}/players"), Some(&json!({"players": players}))).await
}

pub(crate) async fn leave(stack: &Stack, session: &str, players: &[&str]) -> (u16, Value) {
    send(stack, "DELETE", &format!("/v1/sessions/{session}/players"), Some(&json!({"players": players})))
        .await
}

pub(crate) async fn session(stack: &Stack, session: &str) -> (u16, Value) {
    stack.get(&format!("/v1/sessions/{session}")).await
}

async fn backfill(stack: &Stack, body: &Value) -> (u16, Value) {
    send(stack, "POST", "/v1/backfill", Some(body)).await
}

/// Gameye's own view of the session (`GET /session/{id}` on the emulator).
async fn gameye_session(stack: &Stack, session: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}/session/{session}", stack.emulator.url().trim_end_matches('/')))
        .bearer_auth(DEFAULT_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub(crate) async fn gameye_players(stack: &Stack, session: &str) -> BTreeSet<String> {
    let described = gameye_session(stack, session).await;
    let joined: BTreeSet<String> = described["players"]["joined"]
        .as_array()
        .unwrap_or_else(|| panic!("no players in {described}"))
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(described["playerCount"], joined.len(), "{described}");
    joined
}

/// Gameye's player list follows joins and leaves through the outbox, a moment later.
pub(crate) async fn assert_gameye_players(stack: &Stack, session: &str, expected: BTreeSet<String>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let players = gameye_players(stack, session).await;
        if players == expected {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "Gameye has {players:?}, not {expected:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

pub(crate) fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn strings(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn reserved_players(view: &Value) -> BTreeSet<String> {
    view["reservations"].as_array().unwrap().iter().flat_map(|r| strings(&r["players"])).collect()
}

#[tokio::test]
async fn sessions_placing_records_seats_and_joins_follow_capacity() {
    let stack = Stack::start_with(&[("BRIDGE_SEATS__CAPACITY", "{demo-game=4}")]).await;
    let latencies = json!({"eu-west-1": 10});
    let assignment = place(
        &stack,
        &match_of("m-seats", &["p0", "p1"], latencies.clone(), json!({"labels": {"mode": "duo"}})),
    )
    .await;
    let sid = session_id("m-seats");
    assert_eq!(assignment["session_id"], sid);

    // The session is recorded with the image's configured capacity, its players holding reservations.
    let (status, view) = session(&stack, &sid).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["capacity"], 4);
    assert_eq!(view["match_id"], "m-seats");
    assert_eq!(view["image"], "demo-game");
    assert_eq!(view["location"], "eu-west-1");
    assert_eq!(view["host"], assignment["host"]);
    assert_eq!(view["ports"], assignment["ports"]);
    assert_eq!(view["labels"], json!({"mode": "duo"}));
    assert_eq!(view["players"], json!([]));
    assert_eq!(reserved_players(&view), set(&["p0", "p1"]));
    assert_eq!(view["open_seats"], 2);
    assert!(gameye_players(&stack, &sid).await.is_empty());

    // A reserved player joins: the reservation is used, Gameye's player list follows.
    let (status, joined) = join(&stack, &sid, &["p0"]).await;
    assert_eq!(status, 200, "{joined}");
    assert_eq!(strings(&joined["joined"]), set(&["p0"]));
    assert_eq!(strings(&joined["from_reservations"]), set(&["p0"]));
    assert_eq!(joined["session"]["open_seats"], 2);
    assert_gameye_players(&stack, &sid, set(&["p0"])).await;

    // Joining again is one player.
    let (status, again) = join(&stack, &sid, &["p0"]).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(strings(&again["already_joined"]), set(&["p0"]));
    assert!(strings(&again["joined"]).is_empty());
    assert_gameye_players(&stack, &sid, set(&["p0"])).await;

    // Two unreserved players fill the open seats; a third does not fit (p1's seat stays reserved).
    let (status, filled) = join(&stack, &sid, &["x1", "x2"]).await;
    assert_eq!(status, 200, "{filled}");
    assert_eq!(filled["session"]["open_seats"], 0);
    let (status, full) = join(&stack, &sid, &["x3"]).await;
    assert_eq!(status, 409, "{full}");
    assert_eq!(full["error"]["code"], "SESSION_FULL");
    let (status, full) = join(&stack, &sid, &["x3", "x4"]).await;
    assert_eq!(status, 409, "{full}");
    let (_, view) = session(&stack, &sid).await;
    assert_eq!(strings(&view["players"]), set(&["p0", "x1", "x2"]), "a refused join changes nothing");
    assert_gameye_players(&stack, &sid, set(&["p0", "x1", "x2"])).await;

    // The reserved player still gets in, though the session is full for everyone else.
    let (status, last) = join(&stack, &sid, &["p1"]).await;
    assert_eq!(status, 200, "{last}");
    assert_eq!(strings(&last["from_reservations"]), set(&["p1"]));
    assert_gameye_players(&stack, &sid, set(&["p0", "p1", "x1", "x2"])).await;

    // Leaving is idempotent, and frees the seat.
    let (status, left) = leave(&stack, &sid, &["x1"]).await;
    assert_eq!(status, 200, "{left}");
    assert_eq!(strings(&left["left"]), set(&["x1"]));
    assert_eq!(left["session"]["open_seats"], 1);
    let (status, left) = leave(&stack, &sid, &["x1"]).await;
    assert_eq!(status, 200, "{left}");
    assert!(strings(&left["left"]).is_empty());
    assert_gameye_players(&stack, &sid, set(&["p0", "p1", "x2"])).await;
    let (status, _) = join(&stack, &sid, &["x3"]).await;
    assert_eq!(status, 200);

    // A match's own max_players wins over the image's capacity.
    place(&stack, &match_of("m-big", &["q0"], latencies, json!({"max_players": 12}))).await;
    let (_, view) = session(&stack, &session_id("m-big")).await;
    assert_eq!(view["capacity"], 12);
    assert_eq!(view["open_seats"], 11);

    // Listing and its filters.
    let (status, all) = stack.get("/v1/sessions").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["sessions"].as_array().unwrap().len(), 2);
    let (_, duo) = stack.get("/v1/sessions?label=mode%3Dduo").await;
    assert_eq!(duo["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(duo["sessions"][0]["session_id"], sid);
    let (_, open) = stack.get("/v1/sessions?has_open_seats=true&image=demo-game").await;
    assert_eq!(open["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(open["sessions"][0]["session_id"], session_id("m-big"));
    let (_, elsewhere) = stack.get("/v1/sessions?location=us-east-1").await;
    assert_eq!(elsewhere["sessions"], json!([]));
    let (status, bad) = stack.get("/v1/sessions?label=nokeyvalue").await;
    assert_eq!(status, 400, "{bad}");

    // A match larger than the image's capacity (and naming no max_players) still gets a seat for
    // every player.
    let six = ["r0", "r1", "r2", "r3", "r4", "r5"];
    place(&stack, &match_of("m-six", &six, json!({"eu-west-1": 10}), json!({}))).await;
    let (status, view) = session(&stack, &session_id("m-six")).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!((&view["capacity"], &view["open_seats"]), (&json!(6), &json!(0)), "{view}");
    assert_eq!(reserved_players(&view), set(&six));
    let (status, joined) = join(&stack, &session_id("m-six"), &six).await;
    assert_eq!(status, 200, "{joined}");
}

#[tokio::test]
async fn sessions_bad_input_is_refused_and_changes_nothing() {
    let stack = Stack::start().await;
    place(&stack, &match_of("m-bad", &["p0"], json!({"eu-west-1": 10}), json!({"max_players": 2}))).await;
    let sid = session_id("m-bad");
    let unknown = uuid::Uuid::new_v4().to_string();

    let (status, body) = session(&stack, &unknown).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "NOT_FOUND");
    let (status, _) = join(&stack, &unknown, &["a"]).await;
    assert_eq!(status, 404);
    let (status, _) = leave(&stack, &unknown, &["a"]).await;
    assert_eq!(status, 404);
    let (status, _) = send(&stack, "DELETE", &format!("/v1/sessions/{unknown}"), None).await;
    assert_eq!(status, 404);
    let (status, _) = session(&stack, "not-a-uuid").await;
    assert_eq!(status, 404);

    let path = format!("/v1/sessions/{sid}/players");
    let response = stack
        .http
        .post(stack.url(&path))
        .bearer_auth(API_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let (status, body) = send(&stack, "POST", &path, Some(&json!({"players": []}))).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("players"), "{body}");
    let (status, body) = send(&stack, "POST", &path, Some(&json!({"players": [""]}))).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("players[0]"), "{body}");
    let (status, _) = send(&stack, "POST", &path, Some(&json!({"players": ["a"], "extra": 1}))).await;
    assert_eq!(status, 422);
    let (status, _) = join(&stack, &sid, &["a", "b"]).await;
    assert_eq!(status, 409, "one open seat, two players");

    let (status, body) =
        backfill(&stack, &json!({"players": [{"id": "a", "latencies": {"eu-west-1": 5}}]})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("image"), "{body}");
    let (status, body) = backfill(&stack, &json!({"image": "demo-game", "players": []})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("players"), "{body}");
    let (status, body) = backfill(
        &stack,
        &json!({"image": "demo-game", "players": [{"id": "a", "latencies": {"eu-west-1": -3}}]}),
    )
    .await;
    assert_eq!(status, 422, "{body}");

    // Nothing of that changed the session.
    let (_, view) = session(&stack, &sid).await;
    assert_eq!(view["players"], json!([]));
    assert_eq!(reserved_players(&view), set(&["p0"]));
    assert_eq!(view["open_seats"], 1);
    assert!(gameye_players(&stack, &sid).await.is_empty());
}

#[tokio::test]
async fn sessions_backfill_prefers_latency_then_fullest_and_join_uses_the_reservation() {
    let stack = Stack::start().await;
    let west = json!({"eu-west-1": 10});
    let central = json!({"eu-central-1": 10});
    // m-a: eu-west-1, 8 open, labelled ranked; m-b: eu-west-1, 4 open; m-c: eu-central-1, 9 open.
    place(
        &stack,
        &match_of(
            "m-a",
            &["a0", "a1"],
            west.clone(),
            json!({"max_players": 10, "labels": {"mode": "ranked"}}),
        ),
    )
    .await;
    place(&stack, &match_of("m-b", &["b0", "b1", "b2", "b3", "b4", "b5"], west, json!({"max_players": 10})))
        .await;
    place(&stack, &match_of("m-c", &["c0"], central, json!({"max_players": 10}))).await;
    let (_, c) = session(&stack, &session_id("m-c")).await;
    assert_eq!(c["location"], "eu-central-1");

    // Lowest worst latency wins, though m-c is the emptiest.
    let (status, answer) = backfill(
        &stack,
        &json!({"image": "demo-game", "players": [{"id": "q1", "latencies": {"eu-west-1": 30, "eu-central-1": 20}}]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["session_id"], session_id("m-c"));

    // Equal latency: the fullest (m-b) wins over m-a.
    let (status, answer) = backfill(
        &stack,
        &json!({"image": "demo-game", "players": [{"id": "q2", "latencies": {"eu-west-1": 20, "eu-central-1": 50}}]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let sid_b = session_id("m-b");
    assert_eq!(answer["session_id"], sid_b);
    assert_eq!(answer["match_id"], "m-b");
    assert_eq!(answer["location"], "eu-west-1");
    assert_eq!(answer["players"], json!(["q2"]));
    assert_eq!(answer["latency_ms"], json!({"q2": 20}));
    assert!(answer["host"].as_str().is_some_and(|h| !h.is_empty()), "{answer}");
    assert!(!answer["ports"].as_array().unwrap().is_empty(), "{answer}");
    let reservation_id = answer["reservation_id"].as_str().unwrap().to_owned();
    assert!(answer["expires_at"].is_string(), "{answer}");
    let (_, b) = session(&stack, &sid_b).await;
    assert_eq!(b["open_seats"], 3);
    assert!(
        b["reservations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["reservation_id"] == reservation_id && r["players"] == json!(["q2"])),
        "{b}"
    );

    // The reserved player joins: the reservation is consumed, not a second seat.
    let (status, joined) = join(&stack, &sid_b, &["q2"]).await;
    assert_eq!(status, 200, "{joined}");
    assert_eq!(strings(&joined["from_reservations"]), set(&["q2"]));
    assert_eq!(joined["session"]["open_seats"], 3);
    assert!(!reserved_players(&joined["session"]).contains("q2"));
    assert_gameye_players(&stack, &sid_b, set(&["q2"])).await;

    // Labels narrow the choice.
    let (status, answer) = backfill(
        &stack,
        &json!({"image": "demo-game", "labels": {"mode": "ranked"},
                "players": [{"id": "q3", "latencies": {"eu-west-1": 20}}]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["session_id"], session_id("m-a"));

    // Nothing eligible: over the latency cap of a new match (60 ms), another image, too many players.
    for body in [
        json!({"image": "demo-game", "players": [{"id": "q4", "latencies": {"eu-west-1": 70}}]}),
        json!({"image": "other-game", "players": [{"id": "q4", "latencies": {"eu-west-1": 10}}]}),
        json!({"image": "demo-game", "locations": ["us-east-1"], "players": [{"id": "q4", "latencies": {"eu-west-1": 10, "us-east-1": 10}}]}),
        json!({"image": "demo-game", "players": (0..10).map(|i| json!({"id": format!("r{i}"), "latencies": {"eu-west-1": 10}})).collect::<Vec<_>>()}),
    ] {
        let (status, refused) = backfill(&stack, &body).await;
        assert_eq!(status, 404, "{body} → {refused}");
        assert_eq!(refused["error"]["code"], "NO_SEATS");
    }

    // create_if_none: a new match is placed instead, its players holding the seats.
    let before = stack.emulator_sessions().await.len();
    let (status, placed) = backfill(
        &stack,
        &json!({"image": "demo-game", "create_if_none": true, "labels": {"mode": "new"},
                "players": [{"id": "q5", "latencies": {"eu-west-1": 70}}]}),
    )
    .await;
    assert_eq!(status, 200, "{placed}");
    let match_id = placed["match_id"].as_str().unwrap();
    assert!(match_id.starts_with("backfill-"), "{placed}");
    assert_eq!(placed["players"], json!(["q5"]));
    assert_eq!(stack.emulator_sessions().await.len(), before + 1);
    let new_sid = placed["session_id"].as_str().unwrap();
    let (status, view) = session(&stack, new_sid).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(reserved_players(&view), set(&["q5"]));
    assert_eq!(view["labels"], json!({"mode": "new"}));
}

/// `create_if_none` with a `request_id`: the same request sent twice while the first is still
/// being placed (a client that timed out and retried) makes one match and one Gameye session;
/// the request_id reused for other players is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_a_backfill_sent_twice_with_its_request_id_places_one_session() {
    let stack = Stack::start().await;
    stack.set_faults(json!([{"operation": "session-run", "delay_ms": 800, "probability": 1.0}])).await;
    let body = json!({"image": "demo-game", "create_if_none": true, "request_id": "req-7",
                      "players": [{"id": "z0", "latencies": {"eu-west-1": 10}}]});
    let (first, second) = tokio::join!(backfill(&stack, &body), async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        backfill(&stack, &body).await
    });
    assert_eq!(first.0, 200, "{}", first.1);
    assert_eq!(second.0, 200, "{}", second.1);
    assert_eq!(first.1["match_id"], "backfill-req-7");
    assert_eq!(first.1["session_id"], second.1["session_id"]);
    assert_eq!(stack.emulator_sessions().await.len(), 1, "one Gameye session");
    // The same request_id for another player whom no session suits (no eu-west-1 figure): another
    // match under `backfill-req-7`, refused, nothing placed.
    let other = json!({"image": "demo-game", "create_if_none": true, "request_id": "req-7",
                       "players": [{"id": "z9", "latencies": {"us-east-1": 10}}]});
    let (status, refused) = backfill(&stack, &other).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "MATCH_ID_CONFLICT", "{refused}");
    assert_eq!(stack.emulator_sessions().await.len(), 1, "still one Gameye session");
    let (status, bad) = backfill(
        &stack,
        &json!({"image": "demo-game", "request_id": "a b",
                                                 "players": [{"id": "z1"}]}),
    )
    .await;
    assert_eq!(status, 422, "{bad}");
    assert!(bad["error"]["message"].as_str().unwrap().starts_with("request_id:"), "{bad}");
}

/// `create_if_none` places like `POST /v1/matches`: a caller that hangs up mid-placement does not
/// cancel it. Dropped with its request, the match would stay pending until its lease ended 25 s
/// on (the default deadline) and recovery placed it again.
#[tokio::test]
async fn sessions_a_backfill_caller_that_hangs_up_does_not_cancel_its_new_match() {
    let stack = Stack::start().await;
    stack.set_faults(json!([{"operation": "session-run", "delay_ms": 1500, "probability": 1.0}])).await;
    let started = std::time::Instant::now();
    let gave_up = stack
        .http
        .post(stack.url("/v1/backfill"))
        .bearer_auth(API_TOKEN)
        .json(&json!({"image": "demo-game", "create_if_none": true, "request_id": "hangup",
                      "players": [{"id": "h0", "latencies": {"eu-west-1": 10}}]}))
        .timeout(std::time::Duration::from_millis(300))
        .send()
        .await;
    assert!(gave_up.as_ref().is_err_and(reqwest::Error::is_timeout), "{gave_up:?}");
    let (status, record) = stack.get("/v1/matches/backfill-hangup").await;
    assert_eq!((status, &record["status"]), (200, &json!("pending")), "hung up mid-placement: {record}");

    let placed = stack.wait_placed("backfill-hangup", std::time::Duration::from_secs(10)).await;
    let took = started.elapsed();
    assert_eq!(placed["status"], "placed", "{placed}");
    assert_eq!(placed["assignment"]["session_id"], session_id("backfill-hangup"));
    assert!(took < std::time::Duration::from_secs(5), "placed {took:?} after the request; Gameye took 1.5 s");
    assert_eq!(stack.emulator_sessions().await.len(), 1);
    // The new session's players hold their seats, as when the caller waits.
    let (status, view) = session(&stack, &session_id("backfill-hangup")).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(reserved_players(&view), set(&["h0"]));
}

#[tokio::test]
async fn sessions_a_retried_backfill_gets_the_seat_it_already_holds() {
    let stack = Stack::start().await;
    // One running session with one open seat.
    place(&stack, &match_of("m-one-seat", &["o0"], json!({"eu-west-1": 10}), json!({"max_players": 2})))
        .await;
    let sid = session_id("m-one-seat");
    let body = json!({"image": "demo-game", "players": [{"id": "late", "latencies": {"eu-west-1": 10}}]});
    let (status, first) = backfill(&stack, &body).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["session_id"], sid);
    // Its answer was lost and the client asks again: the session is full, but with its own seat.
    let (status, again) = backfill(&stack, &body).await;
    assert_eq!(status, 200, "the seat this request already holds: {again}");
    assert_eq!(again["session_id"], sid);
    let (_, seats) = session(&stack, &sid).await;
    assert_eq!(seats["open_seats"], 0, "{seats}");
    assert_eq!(reserved_players(&seats), set(&["o0", "late"]), "one seat each: {seats}");
}

#[tokio::test]
async fn sessions_delete_stops_gameye_and_forgets_the_session() {
    let stack = Stack::start().await;
    place(&stack, &match_of("m-end", &["p0", "p1"], json!({"eu-west-1": 10}), json!({}))).await;
    let sid = session_id("m-end");
    let (status, _) = join(&stack, &sid, &["p0"]).await;
    assert_eq!(status, 200);

    let (status, ended) = send(&stack, "DELETE", &format!("/v1/sessions/{sid}"), None).await;
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["gameye"], "stopped");
    assert_eq!(ended["released_players"], json!(["p0"]));
    assert_eq!(ended["released_reservations"].as_array().unwrap().len(), 1);
    let gameye = stack.emulator_sessions().await;
    let stopped = gameye.iter().find(|s| s["id"] == sid).unwrap();
    assert!(stopped["stopped_at"].is_number(), "Gameye stopped it: {stopped}");

    let (status, _) = session(&stack, &sid).await;
    assert_eq!(status, 404);
    let (_, all) = stack.get("/v1/sessions").await;
    assert_eq!(all["sessions"], json!([]));
    let (status, _) = join(&stack, &sid, &["p1"]).await;
    assert_eq!(status, 404);
    let (status, _) = send(&stack, "DELETE", &format!("/v1/sessions/{sid}"), None).await;
    assert_eq!(status, 404, "ending twice: already ended");
    let (status, refused) = backfill(
        &stack,
        &json!({"image": "demo-game", "players": [{"id": "q", "latencies": {"eu-west-1": 10}}]}),
    )
    .await;
    assert_eq!(status, 404, "{refused}");

    // Gameye stopped it already (TTL, crash, someone else): ending still succeeds.
    place(&stack, &match_of("m-gone", &["g0"], json!({"eu-west-1": 10}), json!({}))).await;
    let gone = session_id("m-gone");
    let response = reqwest::Client::new()
        .delete(format!("{}/session/{gone}", stack.emulator.url().trim_end_matches('/')))
        .bearer_auth(DEFAULT_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let (status, ended) = send(&stack, "DELETE", &format!("/v1/sessions/{gone}"), None).await;
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["gameye"], "already_gone");
    let (status, _) = session(&stack, &gone).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn sessions_racing_backfills_never_overbook() {
    let stack = Stack::start().await;
    // Two sessions with 5 open seats each (capacity 6, one own player).
    for match_id in ["m-race-a", "m-race-b"] {
        place(&stack, &match_of(match_id, &["own"], json!({"eu-west-1": 10}), json!({"max_players": 6})))
            .await;
    }
    let requests = (0..40).map(|i| {
        let body = json!({"image": "demo-game", "players": [{"id": format!("r{i}"), "latencies": {"eu-west-1": 15}}]});
        let stack = &stack;
        async move { backfill(stack, &body).await }
    });
    let answers = join_all(requests).await;
    let granted: Vec<&Value> =
        answers.iter().filter(|(status, _)| *status == 200).map(|(_, body)| body).collect();
    let refused =
        answers.iter().filter(|(status, body)| *status == 404 && body["error"]["code"] == "NO_SEATS").count();
    assert_eq!(granted.len(), 10, "{answers:?}");
    assert_eq!(refused, 30, "{answers:?}");
    let granted_players: BTreeSet<String> =
        granted.iter().map(|b| b["players"][0].as_str().unwrap().to_owned()).collect();
    assert_eq!(granted_players.len(), 10);

    let mut reserved = BTreeSet::new();
    for match_id in ["m-race-a", "m-race-b"] {
        let (_, view) = session(&stack, &session_id(match_id)).await;
        assert_eq!(view["open_seats"], 0, "{view}");
        let players = reserved_players(&view);
        assert_eq!(players.len(), 6, "{view}");
        reserved.extend(players.into_iter().filter(|p| p != "own"));
    }
    assert_eq!(reserved, granted_players);
}

#[tokio::test]
async fn sessions_a_duplicate_recreates_a_missing_seat_record() {
    let stack = Stack::start().await;
    let body = match_of("m-dup", &["p0", "p1"], json!({"eu-west-1": 10}), json!({"max_players": 5}));
    let first = place(&stack, &body).await;
    let sid = session_id("m-dup");

    // Lose the seat record (as if its write had failed at placement).
    let client = ::redis::Client::open(stack.redis.url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> =
        ::redis::cmd("KEYS").arg(format!("*seats:{{{sid}}}*")).query_async(&mut redis).await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let _: i64 = ::redis::cmd("DEL").arg(&keys).query_async(&mut redis).await.unwrap();
    let (status, _) = session(&stack, &sid).await;
    assert_eq!(status, 404);

    // The redelivered match is answered from its record and brings the seats back; Gameye runs one session.
    let again = place(&stack, &body).await;
    assert_eq!(again, first);
    let (status, view) = session(&stack, &sid).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["capacity"], 5);
    assert_eq!(reserved_players(&view), set(&["p0", "p1"]));
    assert_eq!(stack.emulator_sessions().await.len(), 1);
}

/// A bridge whose backfills hold seats 1 s and matches `match_ttl`; a match of two players in three
/// seats placed, and its last seat reserved by a backfill. The session id.
async fn three_seats_all_reserved(match_ttl: &str, match_id: &str) -> (Stack, String) {
    let stack = Stack::start_with(&[
        ("BRIDGE_SEATS__RESERVATION_TTL", "1s"),
        ("BRIDGE_SEATS__MATCH_RESERVATION_TTL", match_ttl),
    ])
    .await;
    place(&stack, &match_of(match_id, &["p0", "p1"], json!({"eu-west-1": 10}), json!({"max_players": 3})))
        .await;
    let sid = session_id(match_id);
    let (_, view) = session(&stack, &sid).await;
    assert_eq!(view["open_seats"], 1, "{view}");
    let (status, answer) = backfill(
        &stack,
        &json!({"image": "demo-game", "players": [{"id": "b0", "latencies": {"eu-west-1": 10}}]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    (stack, sid)
}

#[tokio::test]
async fn sessions_reservations_expire_after_the_configured_ttl() {
    let (stack, sid) = three_seats_all_reserved("1s", "m-ttl").await;
    let (status, _) = join(&stack, &sid, &["x"]).await;
    assert_eq!(status, 409, "every seat is reserved");

    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let (_, view) = session(&stack, &sid).await;
    assert_eq!(view["reservations"], json!([]), "{view}");
    assert_eq!(view["open_seats"], 3, "{view}");
    let (status, _) = join(&stack, &sid, &["x", "y", "z"]).await;
    assert_eq!(status, 200, "expired reservations freed their seats");
}

/// A match's own players keep their seats while their server may still be starting, longer than
/// a backfill's reservation: a backfill in between cannot take them.
#[tokio::test]
async fn sessions_a_matchs_own_players_keep_their_seats_longer_than_a_backfill() {
    let (stack, sid) = three_seats_all_reserved("30s", "m-slow").await;
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let (_, view) = session(&stack, &sid).await;
    assert_eq!(reserved_players(&view), set(&["p0", "p1"]), "{view}");
    assert_eq!(view["open_seats"], 1, "only the backfill's seat came free: {view}");
    let (status, answer) = backfill(
        &stack,
        &json!({"image": "demo-game", "players": [{"id": "b1", "latencies": {"eu-west-1": 10}}, {"id": "b2", "latencies": {"eu-west-1": 10}}]}),
    )
    .await;
    assert_eq!(status, 404, "the match's seats are not for backfill: {answer}");
    let (status, joined) = join(&stack, &sid, &["p0", "p1"]).await;
    assert_eq!(status, 200, "{joined}");
}

#[test]
fn sessions_config_seats_section_is_validated() {
    use adapters::config::Settings;
    let load = |pairs: &[(&str, &str)]| {
        Settings::load_from(None, pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
    };
    let defaults = load(&[]).unwrap();
    assert_eq!(defaults.seats.default_capacity, 16);
    assert!(defaults.seats.capacity.is_empty());
    assert_eq!(defaults.seats.reservation_ttl, std::time::Duration::from_secs(60));
    assert_eq!(defaults.seats.match_reservation_ttl, std::time::Duration::from_secs(300));
    let custom =
        load(&[("BRIDGE_SEATS__CAPACITY", "{demo-game=10}"), ("BRIDGE_SEATS__DEFAULT_CAPACITY", "8")])
            .unwrap();
    assert_eq!(custom.seats.capacity.get("demo-game"), Some(&10));
    assert_eq!(custom.seats.default_capacity, 8);
    for (key, value, named) in [
        ("BRIDGE_SEATS__DEFAULT_CAPACITY", "0", "seats.default_capacity"),
        ("BRIDGE_SEATS__CAPACITY", "{demo-game=0}", "seats.capacity"),
        ("BRIDGE_SEATS__RESERVATION_TTL", "0s", "seats.reservation_ttl"),
        ("BRIDGE_SEATS__MATCH_RESERVATION_TTL", "0s", "seats.match_reservation_ttl"),
        ("BRIDGE_SEATS__SEATS", "3", "seats"),
    ] {
        let error = load(&[(key, value)]).unwrap_err().to_string();
        assert!(error.contains(named), "{key}={value}: {error}");
    }
}

/// Places a one-player match in eu-west-1 with `labels` for each id, a few at a time; their session
/// ids, sorted (the order `GET /v1/sessions` lists them in).
async fn place_many(stack: &Stack, match_ids: &[String], labels: Value) -> Vec<String> {
    use futures::StreamExt;
    futures::stream::iter(match_ids)
        .map(|id| {
            let body = match_of(id, &["p0"], json!({"eu-west-1": 10}), json!({"labels": labels}));
            async move { place(stack, &body).await }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let mut sessions: Vec<String> = match_ids.iter().map(|id| session_id(id)).collect();
    sessions.sort();
    sessions
}

fn match_ids(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

fn listed_ids(page: &Value) -> Vec<String> {
    page["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("no sessions in {page}"))
        .iter()
        .map(|s| s["session_id"].as_str().unwrap().to_owned())
        .collect()
}

/// `GET /v1/sessions?{query}` with `limit`, following `next` as `after` until it is absent: each
/// page's session ids. Every `next` must be its page's last id.
async fn pages(stack: &Stack, query: &str, limit: usize) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut after = String::new();
    loop {
        let (status, page) = stack.get(&format!("/v1/sessions?{query}&limit={limit}{after}")).await;
        assert_eq!(status, 200, "{page}");
        let ids = listed_ids(&page);
        let next = page.get("next").cloned();
        pages.push(ids);
        let Some(next) = next else { return pages };
        let last = pages.last().unwrap().last().map(String::as_str);
        assert_eq!(next.as_str(), last, "`next` is the page's last session id, else absent: {page}");
        after = format!("&after={}", next.as_str().unwrap());
        assert!(pages.len() <= 50, "paging does not end: {pages:?}");
    }
}

fn sizes(pages: &[Vec<String>]) -> Vec<usize> {
    pages.iter().map(Vec::len).collect()
}

#[tokio::test]
async fn sessions_listing_pages_through_every_session_once_in_id_order() {
    let stack = Stack::start().await;
    let all = place_many(&stack, &match_ids("m-page", 7), json!({})).await;

    let listed = pages(&stack, "", 3).await;
    assert_eq!(sizes(&listed), [3, 3, 1]);
    assert_eq!(listed.concat(), all, "each session once, in session id order");

    // `next` only when more sessions matched than the page holds.
    let (_, page) = stack.get("/v1/sessions?limit=7").await;
    assert_eq!(listed_ids(&page), all);
    assert!(page.get("next").is_none(), "{page}");
    let (_, page) = stack.get("/v1/sessions?limit=6").await;
    assert_eq!(listed_ids(&page), all[..6]);
    assert_eq!(page["next"], all[5], "{page}");
    let (_, page) = stack.get("/v1/sessions").await;
    assert_eq!(listed_ids(&page), all);
    assert!(page.get("next").is_none(), "{page}");

    // `after` is any id, listed or not: only ids after it.
    let (_, page) = stack.get("/v1/sessions?after=00000000-0000-0000-0000-000000000000").await;
    assert_eq!(listed_ids(&page), all);
    let (_, page) = stack.get("/v1/sessions?after=ffffffff-ffff-ffff-ffff-ffffffffffff").await;
    assert_eq!(page, json!({"sessions": []}));
    let (_, page) = stack.get(&format!("/v1/sessions?after={}&limit=2", all[1])).await;
    assert_eq!(listed_ids(&page), all[2..4]);
    assert_eq!(page["next"], all[3], "{page}");

    // The cursor's session ending between two pages does not lose or repeat the others.
    let (_, first) = stack.get("/v1/sessions?limit=3").await;
    let cursor = first["next"].as_str().unwrap().to_owned();
    let (status, ended) = send(&stack, "DELETE", &format!("/v1/sessions/{cursor}"), None).await;
    assert_eq!(status, 200, "{ended}");
    let (_, second) = stack.get(&format!("/v1/sessions?limit=3&after={cursor}")).await;
    assert_eq!(listed_ids(&second), all[3..6]);
    assert_eq!(second["next"], all[5], "{second}");
}

#[tokio::test]
async fn sessions_listing_answers_100_sessions_unless_asked_for_more() {
    let stack = Stack::start().await;
    let all = place_many(&stack, &match_ids("m-many", 101), json!({})).await;

    let (status, page) = stack.get("/v1/sessions").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(listed_ids(&page), all[..100]);
    assert_eq!(page["next"], all[99]);
    let (_, rest) = stack.get(&format!("/v1/sessions?after={}", all[99])).await;
    assert_eq!(listed_ids(&rest), all[100..]);
    assert!(rest.get("next").is_none(), "{rest}");

    let (_, page) = stack.get("/v1/sessions?limit=1000").await;
    assert_eq!(listed_ids(&page), all);
    assert!(page.get("next").is_none(), "{page}");
}

/// Calls of `command` Redis has run since its statistics were last reset.
async fn redis_calls(redis: &mut ::redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = ::redis::cmd("INFO").arg("commandstats").query_async(redis).await.unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

#[tokio::test]
async fn a_page_of_sessions_reads_about_a_page_of_records_not_all_of_them() {
    // No reconciler: its scans read records too.
    let stack = Stack::start_with(&[("BRIDGE_RECONCILER__ENABLED", "false")]).await;
    let all = place_many(&stack, &match_ids("m-work", 40), json!({})).await;
    let client = ::redis::Client::open(stack.redis.url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();

    let () = ::redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut redis).await.unwrap();
    let (status, page) = stack.get(&format!("/v1/sessions?limit=5&after={}", all[9])).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(listed_ids(&page), all[10..15]);
    assert_eq!(page["next"], all[14]);
    // The page's records and one more (to know whether a next page has any), not all 40.
    assert_eq!(redis_calls(&mut redis, "hgetall").await, 6);

    // The last page: what is left, and no `next`.
    let () = ::redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut redis).await.unwrap();
    let (_, page) = stack.get(&format!("/v1/sessions?limit=5&after={}", all[36])).await;
    assert_eq!(listed_ids(&page), all[37..]);
    assert!(page.get("next").is_none(), "{page}");
    assert_eq!(redis_calls(&mut redis, "hgetall").await, 3);
}

#[tokio::test]
async fn sessions_listing_filters_combine_with_paging() {
    let stack = Stack::start().await;
    let a = place_many(&stack, &match_ids("m-a", 5), json!({"mode": "a"})).await;
    let b = place_many(&stack, &match_ids("m-b", 4), json!({"mode": "b"})).await;

    let listed = pages(&stack, "label=mode%3Da", 2).await;
    assert_eq!(sizes(&listed), [2, 2, 1]);
    assert_eq!(listed.concat(), a);
    // Exactly two full pages: the second has no `next`.
    let listed = pages(&stack, "image=demo-game&label=mode%3Db", 2).await;
    assert_eq!(sizes(&listed), [2, 2]);
    assert_eq!(listed.concat(), b);
    let listed = pages(&stack, "location=us-east-1", 2).await;
    assert_eq!(listed, [Vec::<String>::new()]);

    // A cursor from outside the filter: the filtered sessions after it.
    for cursor in &b {
        let after: Vec<String> = a.iter().filter(|id| *id > cursor).cloned().collect();
        let (status, page) = stack.get(&format!("/v1/sessions?label=mode%3Da&limit=2&after={cursor}")).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(listed_ids(&page), after[..after.len().min(2)], "after {cursor}");
        assert_eq!(page.get("next").is_some(), after.len() > 2, "after {cursor}: {page}");
    }
}

#[tokio::test]
async fn sessions_listing_refuses_a_bad_limit_or_after() {
    let stack = Stack::start().await;
    for (query, named) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("limit=", "limit"),
        ("image=demo-game&limit=0", "limit"),
        ("after=not-a-uuid", "after"),
        ("after=", "after"),
        ("limit=10&after=not-a-uuid", "after"),
    ] {
        let (status, body) = stack.get(&format!("/v1/sessions?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "INVALID_REQUEST", "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(&format!("{named}: ")), "{query}: {body}");
    }
    for query in ["limit=1", "limit=1000", "after=00000000-0000-0000-0000-000000000000"] {
        let (status, body) = stack.get(&format!("/v1/sessions?{query}")).await;
        assert_eq!(status, 200, "{query}: {body}");
    }
}

#[tokio::test]
async fn sessions_listing_paging_is_in_the_openapi_document() {
    let stack = Stack::start().await;
    let doc: Value = stack.http.get(stack.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let parameters = doc["paths"]["/v1/sessions"]["get"]["parameters"].as_array().unwrap();
    let parameter = |name: &str| {
        parameters
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no `{name}` in {parameters:?}"))
            .clone()
    };
    assert!(parameters.iter().all(|p| p["in"] == "query"), "{parameters:?}");
    let limit = parameter("limit");
    assert_eq!(
        (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
        (&json!(1), &json!(1000)),
        "{limit}"
    );
    assert_eq!(limit["schema"]["default"], 100, "{limit}");
    let after = parameter("after");
    assert_eq!(after["schema"]["format"], "uuid", "{after}");
    let list = &doc["components"]["schemas"]["SessionList"];
    let next = &list["properties"]["next"];
    assert_eq!((&next["type"], &next["format"]), (&json!("string"), &json!("uuid")), "never null: {list}");
    assert_eq!(list["required"], json!(["sessions"]), "`next` may be absent: {list}");
}

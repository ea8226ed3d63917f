//! The placement engine end to end: HTTP door → engine → Redis + Gameye emulator over HTTP.

use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};

use crate::stack::{API_TOKEN, DOTTED_MATCH_IDS, Stack, match_with, start_bridge};

fn session_id(match_id: &str) -> String {
    bridge::session_id("http", match_id).to_string()
}

#[tokio::test]
async fn chooses_the_location_by_latency_table_and_objective() {
    let stack = Stack::start().await;
    // Minimax: eu-central-1 (worst 50) beats eu-west-1 (worst 58, though its mean is lower).
    let body = match_with(
        "m-minimax",
        &[&[("eu-west-1", 10), ("eu-central-1", 45)], &[("eu-west-1", 58), ("eu-central-1", 50)]],
    );
    let (status, assignment) = stack.post_match(&body).await;
    assert_eq!(status, 200, "{assignment}");
    assert_eq!(assignment["location"], "eu-central-1");
    assert_eq!(assignment["session_id"], session_id("m-minimax"));
    assert_eq!(assignment["latency_ms"], json!({"p0": 45, "p1": 50}));
    assert_eq!(assignment["players"], json!(["p0", "p1"]));
    assert!(
        assignment["ports"].as_array().unwrap().iter().any(|p| p["container"] == 7777 && p["type"] == "udp")
    );
    assert!(assignment.get("latency_cap_exceeded").is_none());

    // The emulator really runs it there, with the bridge's labels.
    let sessions = stack.emulator_sessions().await;
    let created = sessions.iter().find(|s| s["id"] == session_id("m-minimax")).expect("session created");
    assert_eq!(created["location"], "eu-central-1");
    assert_eq!(sessions.len(), 1);

    // A player without a figure for eu-west-1 rules it out (missing_latency = exclude).
    let body = match_with("m-missing", &[&[("us-east-1", 90), ("eu-west-1", 5)], &[("us-east-1", 95)]]);
    let (status, assignment) = stack.post_match(&body).await;
    assert_eq!(status, 200, "{assignment}");
    assert_eq!(assignment["location"], "us-east-1");
    assert_eq!(assignment["latency_cap_exceeded"], true, "95 ms is above the 60 ms cap of a new match");
}

/// A match without `requested_at` is as old as the bridge has known it: asked again once the cap
/// relaxed, it is placed (its age would otherwise stay zero, and it would fail for good).
#[tokio::test]
async fn without_requested_at_the_caps_relax_from_when_the_match_was_first_accepted() {
    let stack = Stack::start_with(&[
        ("BRIDGE_PLACEMENT__ON_CAP_EXCEEDED", "fail"),
        ("BRIDGE_PLACEMENT__CAPS", "[{after_s = 0, max_ms = 60}, {after_s = 1, max_ms = 100}]"),
    ])
    .await;
    let body = match_with("m-ageing", &[&[("eu-west-1", 90)]]);
    let (status, failed) = stack.post_match(&body).await;
    assert_eq!(
        (&failed["error"]["code"], &failed["error"]["retryable"]),
        (&json!("NO_LOCATION"), &json!(true)),
        "{status} {failed}"
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (status, placed) = stack.post_match(&body).await;
    assert_eq!(status, 200, "{placed}");
    assert_eq!(placed["location"], "eu-west-1");
    assert!(placed.get("latency_cap_exceeded").is_none(), "within the relaxed cap: {placed}");
}

/// A resend of a match whose placement failed retryably is placed with the resend's latencies, not
/// the first send's (the same match: latencies may differ).
#[tokio::test]
async fn a_resend_after_a_retryable_failure_is_placed_with_its_own_latencies() {
    let stack = Stack::start_with(&[("BRIDGE_PLACEMENT__ON_CAP_EXCEEDED", "fail")]).await;
    let (status, failed) = stack.post_match(&match_with("m-fresh", &[&[("eu-west-1", 90)]])).await;
    assert_eq!(
        (&failed["error"]["code"], &failed["error"]["retryable"]),
        (&json!("NO_LOCATION"), &json!(true)),
        "90 ms is beyond a new match's 60 ms cap: {status} {failed}"
    );
    let (status, placed) = stack.post_match(&match_with("m-fresh", &[&[("eu-central-1", 25)]])).await;
    assert_eq!(status, 200, "{placed}");
    assert_eq!(placed["location"], "eu-central-1", "{placed}");
    assert_eq!(placed["latency_ms"], json!({"p0": 25}));
}

#[tokio::test]
async fn mean_objective_and_default_order_without_latencies() {
    let stack =
        Stack::start_with(&[("BRIDGE_PLACEMENT__OBJECTIVE", "mean"), ("GAMEYE_API_REGION", "us-west-2")])
            .await;
    let body = match_with(
        "m-mean",
        &[&[("eu-west-1", 10), ("eu-central-1", 45)], &[("eu-west-1", 58), ("eu-central-1", 50)]],
    );
    let (_, assignment) = stack.post_match(&body).await;
    assert_eq!(assignment["location"], "eu-west-1", "mean 34 beats mean 47.5");

    let (status, assignment) =
        stack.post_match(&json!({"match_id": "m-none", "players": [{"id": "a"}]})).await;
    assert_eq!(status, 200);
    assert_eq!(assignment["location"], "us-west-2", "GAMEYE_API_REGION leads the default order");
}

#[tokio::test]
async fn no_capacity_fails_over_to_the_next_location_and_cools_it_down() {
    let stack = Stack::start().await;
    stack
        .set_faults(
            json!([{"operation": "session-run", "location": "eu-west-1", "status": 420, "probability": 1.0}]),
        )
        .await;
    let table: &[&[(&str, u32)]] = &[&[("eu-west-1", 10), ("eu-central-1", 20), ("us-east-1", 90)]];
    let (status, first) = stack.post_match(&match_with("m-420-a", table)).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["location"], "eu-central-1");

    // eu-west-1 now cools down: the next match does not even try it.
    let (_, second) = stack.post_match(&match_with("m-420-b", table)).await;
    assert_eq!(second["location"], "eu-central-1");
    let metrics = stack.http.get(stack.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let refused = metrics
        .lines()
        .find(|l| {
            l.starts_with("gameye_bridge_gameye_calls_total{")
                && l.contains("session-run")
                && l.contains("\"420\"")
        })
        .expect("420s counted");
    assert!(refused.ends_with(" 1"), "eu-west-1 tried once, then cooled down: {refused}");
    assert!(metrics.contains("gameye_bridge_placements_total{outcome=\"placed\""), "{metrics}");

    // Every location full → NO_CAPACITY, retryable, 503.
    stack.set_faults(json!([{"operation": "session-run", "status": 420, "probability": 1.0}])).await;
    let (status, failure) = stack.post_match(&match_with("m-420-c", table)).await;
    assert_eq!(status, 503, "{failure}");
    assert_eq!(failure["error"]["code"], "NO_CAPACITY");
    assert_eq!(failure["error"]["retryable"], true);
}

/// The placing call answers with the JSON the engine rendered once for the record: the same
/// assignment a duplicate and `GET /v1/matches/{id}` read back from the record, as JSON.
#[tokio::test]
async fn the_placing_answer_is_the_recorded_assignment() {
    let stack = Stack::start().await;
    let body = match_with("m-answer", &[&[("eu-west-1", 20)]]);
    let response =
        stack.http.post(stack.url("/v1/matches")).bearer_auth(API_TOKEN).json(&body).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let answered: Value = response.json().await.unwrap();
    assert_eq!(answered["session_id"], session_id("m-answer"));

    let (status, duplicate) = stack.post_match(&body).await;
    assert_eq!(status, 200, "{duplicate}");
    assert_eq!(duplicate, answered, "a duplicate reads the recorded assignment");
    let (status, recorded) = stack.get("/v1/matches/m-answer").await;
    assert_eq!(status, 200, "{recorded}");
    assert_eq!(recorded["status"], "placed");
    assert_eq!(recorded["assignment"], answered);
}

#[tokio::test]
async fn the_same_match_fifty_times_at_once_makes_one_session() {
    let stack = Stack::start().await;
    // A slow Gameye keeps every duplicate in flight together.
    stack.set_faults(json!([{"operation": "session-run", "delay_ms": 300, "probability": 1.0}])).await;
    let body = match_with("m-dup", &[&[("eu-west-1", 20)]]);
    let answers = join_all((0..50).map(|_| stack.post_match(&body))).await;
    for (status, assignment) in &answers {
        assert_eq!(*status, 200, "{assignment}");
        assert_eq!(assignment, &answers[0].1, "every duplicate gets the identical assignment");
    }
    assert_eq!(stack.emulator_sessions().await.len(), 1);
}

#[tokio::test]
async fn a_session_left_by_a_crashed_attempt_is_found_again_with_409() {
    let stack = Stack::start().await;
    // An earlier attempt created the session and died before recording it.
    let created: Value = reqwest::Client::new()
        .post(format!("{}/session", stack.emulator.url()))
        .bearer_auth(gameye_emulator::DEFAULT_TOKEN)
        .json(&json!({"id": session_id("m-crash"), "location": "us-east-1", "image": "demo-game"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (status, assignment) =
        stack.post_match(&match_with("m-crash", &[&[("eu-west-1", 20), ("us-east-1", 30)]])).await;
    assert_eq!(status, 200, "{assignment}");
    assert_eq!(assignment["session_id"], session_id("m-crash"));
    assert_eq!(assignment["location"], "us-east-1", "the existing session is used, not a new one");
    assert_eq!(assignment["host"], created["host"]);
    assert_eq!(stack.emulator_sessions().await.len(), 1);
}

#[tokio::test]
async fn a_killed_instance_mid_placement_is_finished_by_another_without_a_second_session() {
    let mut stack = Stack::start_with(&[("BRIDGE_PLACEMENT__DEADLINE", "2s")]).await;
    // Gameye answers slowly, so the first instance dies with its POST in flight.
    stack.set_faults(json!([{"operation": "session-run", "delay_ms": 1500, "probability": 1.0}])).await;
    let body = match_with("m-kill", &[&[("eu-west-1", 20)]]);
    let request =
        stack.http.post(stack.url("/v1/matches?wait=false")).bearer_auth(API_TOKEN).json(&body).send();
    let (status, accepted) = {
        let response = request.await.unwrap();
        (response.status().as_u16(), response.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 202, "{accepted}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack.bridge.signal("KILL");

    let second = start_bridge(
        &stack.emulator,
        &stack.redis,
        &[("BRIDGE_PLACEMENT__DEADLINE", "2s"), ("BRIDGE_PLACEMENT__RECOVERY_INTERVAL", "500ms")],
    )
    .await;
    stack.bridge = second;
    let status = stack.wait_placed("m-kill", Duration::from_secs(20)).await;
    assert_eq!(status["status"], "placed", "{status}");
    assert_eq!(status["assignment"]["session_id"], session_id("m-kill"));
    assert_eq!(stack.emulator_sessions().await.len(), 1, "one session, though two instances tried");
}

#[tokio::test]
async fn recovery_skips_an_unreadable_record_and_finishes_the_ones_behind_it() {
    let stack = Stack::start_with(&[("BRIDGE_PLACEMENT__RECOVERY_INTERVAL", "200ms")]).await;
    // Two placements left pending by an owner that died a minute ago; the older one's record
    // cannot be read (say, a newer version wrote it), so the recovery scan meets it first.
    let dead = adapters::store::RedisStore::connect(&stack.redis.url(), "gameye-bridge").await.unwrap();
    let minute_ago = time::OffsetDateTime::now_utc() - Duration::from_secs(60);
    for (match_id, at) in [("m-unreadable", minute_ago), ("m-orphan", minute_ago + Duration::from_secs(1))] {
        let request: bridge::MatchRequest = serde_json::from_value(
            json!({"match_id": match_id, "players": [{"id": "p1", "latencies": {"eu-west-1": 20}}]}),
        )
        .unwrap();
        let claim = bridge::ports::Claim {
            match_id: match_id.to_owned(),
            source: "http".to_owned(),
            session_id: bridge::session_id("http", match_id),
            request,
            owner: "dead-owner".to_owned(),
            now: at,
            lease_for: Duration::from_secs(5),
            keep_for: Duration::from_secs(3600),
        };
        let owned = bridge::ports::PlacementStore::claim(&dead, &claim).await.unwrap();
        assert!(matches!(owned, bridge::ports::ClaimOutcome::Owned { .. }));
    }
    let mut redis =
        redis::Client::open(stack.redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let key = "gameye-bridge:match:{m-unreadable}";
    let value: String = redis::cmd("GET").arg(key).query_async(&mut redis).await.unwrap();
    let header = value.split_once('\n').unwrap().0;
    let () = redis::cmd("SET")
        .arg(key)
        .arg(format!("{header}\n{{\"from_a_newer_version\": tru"))
        .query_async(&mut redis)
        .await
        .unwrap();

    let status = stack.wait_placed("m-orphan", Duration::from_secs(20)).await;
    assert_eq!(status["status"], "placed", "{status}");
    assert_eq!(status["assignment"]["session_id"], session_id("m-orphan"));
    // Left as it is, and answered as an error a retry cannot fix (not 503 "retry").
    let (status, body) = stack.get("/v1/matches/m-unreadable").await;
    assert_eq!((status, &body["error"]["code"]), (500, &json!("STORE_ERROR")), "{body}");
    let again =
        json!({"match_id": "m-unreadable", "players": [{"id": "p1", "latencies": {"eu-west-1": 20}}]});
    let (status, body) = stack.post_match(&again).await;
    assert_eq!((status, &body["error"]["code"]), (500, &json!("STORE_ERROR")), "{body}");
    let sessions = stack.emulator_sessions().await;
    assert!(sessions.iter().all(|s| s["id"] != session_id("m-unreadable")), "nothing placed: {sessions:?}");
}

/// Placements a stopped instance left behind are recovered several at once: a sink that is down
/// (here Nakama, refusing connections) holds each recovery's announcement for up to a deadline, and
/// must not hold up the recoveries behind it (the outbox sends those announcements later).
#[tokio::test]
async fn recovery_is_not_held_up_by_a_sink_that_is_down() {
    const ORPHANS: usize = 6;
    let nakama_down = format!("http://127.0.0.1:{}", crate::harness::free_port());
    let stack = Stack::start_with(&[
        ("BRIDGE_PLACEMENT__RECOVERY_INTERVAL", "200ms"),
        ("BRIDGE_PLACEMENT__DEADLINE", "2s"),
        ("BRIDGE_NAKAMA__RPC_URL", nakama_down.as_str()),
        ("BRIDGE_NAKAMA__HTTP_KEY", "nakama-http-key"),
        ("BRIDGE_NAKAMA__RPC_ID", "gameye_bridge_result"),
    ])
    .await;
    let dead = adapters::store::RedisStore::connect(&stack.redis.url(), "gameye-bridge").await.unwrap();
    let minute_ago = time::OffsetDateTime::now_utc() - Duration::from_secs(60);
    let match_ids: Vec<String> = (0..ORPHANS).map(|n| format!("m-orphan-{n}")).collect();
    for match_id in &match_ids {
        let request: bridge::MatchRequest = serde_json::from_value(
            json!({"match_id": match_id, "players": [{"id": "p1", "latencies": {"eu-west-1": 20}}]}),
        )
        .unwrap();
        let claim = bridge::ports::Claim {
            match_id: match_id.clone(),
            source: "nakama".to_owned(),
            session_id: bridge::session_id("nakama", match_id),
            request,
            owner: "dead-owner".to_owned(),
            now: minute_ago,
            lease_for: Duration::from_secs(7),
            keep_for: Duration::from_secs(3600),
        };
        let owned = bridge::ports::PlacementStore::claim(&dead, &claim).await.unwrap();
        assert!(matches!(owned, bridge::ports::ClaimOutcome::Owned { .. }));
    }
    let started = std::time::Instant::now();
    for match_id in &match_ids {
        let status = stack.wait_placed(match_id, Duration::from_secs(30)).await;
        assert_eq!(status["status"], "placed", "{status}");
    }
    // One after another, each waits ~2 s for Nakama first: the last would be placed after ~10 s.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "{ORPHANS} recovered in {took:?}");
}

/// Places `match_id` while Gameye takes a second to answer, and half a second in (claimed, not
/// yet completed) runs `command` against Redis. The HTTP answer and the command's.
async fn place_while_redis_runs(
    stack: &Stack,
    match_id: &str,
    command: redis::Cmd,
) -> ((u16, Value), redis::Value) {
    stack.set_faults(json!([{"operation": "session-run", "delay_ms": 1000, "probability": 1.0}])).await;
    let body = match_with(match_id, &[&[("eu-west-1", 20)]]);
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut redis =
            redis::Client::open(stack.redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
        command.query_async(&mut redis).await.unwrap()
    };
    tokio::join!(stack.post_match(&body), meanwhile)
}

#[tokio::test]
async fn an_outcome_written_but_not_confirmed_in_time_is_still_answered() {
    let stack = Stack::start().await;
    // Redis holds every write for 2.5 s, so the outcome is written only after the bridge stopped
    // waiting for its answer (1 s).
    let mut pause_writes = redis::cmd("CLIENT");
    pause_writes.arg("PAUSE").arg(2500).arg("WRITE");
    let ((status, assignment), _) = place_while_redis_runs(&stack, "m-unconfirmed", pause_writes).await;
    assert_eq!(status, 200, "the outcome was recorded, so it is the answer: {assignment}");
    assert_eq!(assignment["session_id"], session_id("m-unconfirmed"));
    let status = stack.wait_placed("m-unconfirmed", Duration::from_secs(5)).await;
    assert_eq!(status["assignment"], assignment);
    // The seat record went in the same unconfirmed round trip: written again (here it is found
    // there already), not counted as lost.
    let (status, seats) = stack.get(&format!("/v1/sessions/{}", session_id("m-unconfirmed"))).await;
    assert_eq!(status, 200, "{seats}");
    let metrics = stack.http.get(stack.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|line| line.starts_with("gameye_bridge_seat_write_failures_total 0")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_record_lost_by_redis_mid_placement_is_written_again_with_the_outcome() {
    let stack = Stack::start().await;
    // Redis loses the record (a restart without persistence, a failover that lost recent writes).
    let mut forget = redis::cmd("DEL");
    forget.arg("gameye-bridge:match:{m-forgotten}");
    let ((status, assignment), deleted) = place_while_redis_runs(&stack, "m-forgotten", forget).await;
    assert_eq!(deleted, redis::Value::Int(1), "the record existed while Gameye was answering");
    assert_eq!(status, 200, "{assignment}");
    let (status, polled) = stack.get("/v1/matches/m-forgotten").await;
    assert_eq!(status, 200, "{polled}");
    assert_eq!(polled["status"], "placed");
    assert_eq!(polled["assignment"], assignment);
}

/// Redis loses a record mid-placement, and another instance takes the id for another match in
/// that window (it fails at once: its image is unknown). The first match's caller still gets its
/// own session, not the other match's failure, and the loss is logged as an error.
#[tokio::test]
async fn a_lost_record_whose_id_another_match_took_still_answers_its_own_caller() {
    let stack = Stack::start().await;
    let other_instance = start_bridge(&stack.emulator, &stack.redis, &[]).await;
    stack.set_faults(json!([{"operation": "session-run", "delay_ms": 1000, "probability": 1.0}])).await;
    let first = match_with("m-lost-taken", &[&[("eu-west-1", 20)]]);
    let mut other = match_with("m-lost-taken", &[&[("eu-west-1", 20)], &[("eu-west-1", 30)]]);
    other["image"] = json!("no-such-image");
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut redis =
            redis::Client::open(stack.redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let deleted: i64 = redis::cmd("DEL")
            .arg("gameye-bridge:match:{m-lost-taken}")
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(deleted, 1, "the record existed while Gameye was answering");
        let response = stack
            .http
            .post(format!("{}/v1/matches", other_instance.base_url))
            .bearer_auth(API_TOKEN)
            .json(&other)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json::<Value>().await.unwrap())
    };
    let ((status, answer), (other_status, other_answer)) = tokio::join!(stack.post_match(&first), meanwhile);
    assert_eq!(other_status, 404, "the other match failed on its own: {other_answer}");
    assert_eq!(status, 200, "the first match's own outcome: {answer}");
    assert_eq!(answer["session_id"], session_id("m-lost-taken"));
    assert!(stack.bridge.logs().contains("another match took its id"), "{}", stack.bridge.logs());
}

/// The same loss on one instance: the other match's claim comes from the same instance while the
/// first still waits on Gameye, so both attempts' leases name the same instance. Each claim's lease
/// is its own: the first attempt cannot write its outcome over the other match's pending record
/// (which would then hold the other match's accepted request beside the first match's players).
#[tokio::test]
async fn a_lost_record_retaken_by_the_same_instance_keeps_each_attempts_lease_apart() {
    let stack = Stack::start().await;
    stack.set_faults(json!([{"operation": "session-run", "delay_ms": 1000, "probability": 1.0}])).await;
    let first = match_with("m-lost-same", &[&[("eu-west-1", 20)]]);
    let other = match_with("m-lost-same", &[&[("eu-west-1", 20)], &[("eu-west-1", 30)]]);
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut redis =
            redis::Client::open(stack.redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let deleted: i64 =
            redis::cmd("DEL").arg("gameye-bridge:match:{m-lost-same}").query_async(&mut redis).await.unwrap();
        assert_eq!(deleted, 1, "the record existed while Gameye was answering");
        // Claimed while the first attempt still waits: its Gameye call ends half a second later.
        stack.post_match(&other).await
    };
    let ((status, answer), (other_status, other_answer)) = tokio::join!(stack.post_match(&first), meanwhile);
    assert_eq!(status, 200, "the first match's own outcome: {answer}");
    assert_eq!(answer["players"], json!(["p0"]), "{answer}");
    assert_eq!(other_status, 200, "{other_answer}");
    assert_eq!(other_answer["players"], json!(["p0", "p1"]), "{other_answer}");
    let (status, recorded) = stack.get("/v1/matches/m-lost-same").await;
    assert_eq!(status, 200, "{recorded}");
    assert_eq!(recorded["assignment"], other_answer, "the record holds the match that took the id");
    assert!(stack.bridge.logs().contains("another match took its id"), "{}", stack.bridge.logs());
}

/// A duplicate waits while the first send is placed, and Redis loses the record meanwhile. The
/// duplicate claims the match anew (it has the whole request) and answers it, instead of
/// answering "pending" with no record left that could ever say more.
#[tokio::test]
async fn a_duplicate_waiting_on_a_record_redis_lost_places_the_match_itself() {
    let stack = Stack::start().await;
    stack.set_faults(json!([{"operation": "session-run", "delay_ms": 1500, "probability": 1.0}])).await;
    let body = match_with("m-lost-waited", &[&[("eu-west-1", 20)]]);
    let duplicate = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stack.post_match(&body).await
    };
    let forget = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut redis =
            redis::Client::open(stack.redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let deleted: i64 = redis::cmd("DEL")
            .arg("gameye-bridge:match:{m-lost-waited}")
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(deleted, 1, "the record existed while Gameye was answering");
    };
    let ((status, first), (duplicate_status, duplicate), ()) =
        tokio::join!(stack.post_match(&body), duplicate, forget);
    assert_eq!(status, 200, "{first}");
    assert_eq!(duplicate_status, 200, "the duplicate's answer: {duplicate}");
    assert_eq!(duplicate["session_id"], first["session_id"]);
    assert_eq!(duplicate["host"], first["host"]);
    assert_eq!(stack.emulator_sessions().await.len(), 1, "one session for the match");
    let (status, polled) = stack.get("/v1/matches/m-lost-waited").await;
    assert_eq!(status, 200, "{polled}");
    assert_eq!(polled["status"], "placed", "{polled}");
}

/// A 503 in one round of an attempt, then every location full in the next: the attempt ends with
/// `NO_CAPACITY` at once, as it would without the 503, rather than going round again as if Gameye
/// were still failing.
#[tokio::test]
async fn every_location_full_after_an_outage_fails_with_no_capacity_at_once() {
    let stack = Stack::start().await;
    stack
        .set_faults(json!([{"operation": "get-available-locations", "status": 503, "probability": 1.0}]))
        .await;
    let table: &[&[(&str, u32)]] = &[&[("eu-west-1", 20), ("us-east-1", 90)]];
    let body = match_with("m-503-then-full", table);
    let placing = stack.post_match(&body);
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        stack.set_faults(json!([{"operation": "session-run", "status": 420, "probability": 1.0}])).await;
    };
    let ((status, failure), ()) = tokio::join!(placing, meanwhile);
    assert_eq!(status, 503, "{failure}");
    assert_eq!(failure["error"]["code"], "NO_CAPACITY", "{failure}");
}

/// The deadline counts from the claim, not from when the placing starts: a door that does other
/// work between the two (the SNS door records its tickets) still has every Gameye call end before
/// the lease runs out, when recovery may take the match over and call Gameye beside it.
#[tokio::test]
async fn the_placement_deadline_counts_from_the_claim() {
    use adapters::gameye::{GameyeClient, GameyeClientConfig, GameyeSessionApi};
    use adapters::runtime::TokioClock;
    use adapters::store::{MemoryStore, StateStore};
    use bridge::placement::{Accepted, Engine, EngineSettings, SeatSettings};
    use bridge::ports::Outcome;
    use bridge::region::{LocationAliases, RegionPolicy};

    let emulator =
        gameye_emulator::start(crate::stack::world(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let config = GameyeClientConfig {
        base_url: emulator.url(),
        token: adapters::config::Secret::new(gameye_emulator::DEFAULT_TOKEN),
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(10),
        pool_max_idle: 8,
    };
    let api = GameyeSessionApi::new(GameyeClient::new(&config, None).unwrap(), Duration::from_secs(10));
    let settings = EngineSettings {
        policy: RegionPolicy::default(),
        aliases: LocationAliases::new(Default::default()),
        default_image: "demo-game".into(),
        default_version: None,
        default_ttl: Duration::from_secs(1800),
        cooldown: Duration::from_secs(30),
        deadline: Duration::from_secs(2),
        latency_keep_for: Duration::from_secs(600),
        keep_for: Duration::from_secs(3600),
        owner: "it-deadline".into(),
        deployment: "it-deadline".into(),
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        seats: SeatSettings::default(),
    };
    let engine = Engine::new(api, StateStore::Memory(MemoryStore::new()), TokioClock, settings);
    let request = bridge::parse_match_request(
        json!({"match_id": "m-late", "players": [{"id": "p1"}]}).to_string().as_bytes(),
    )
    .unwrap();
    let Accepted::Owned(job) = engine.accept("http", request).await.unwrap() else { panic!("not claimed") };
    // The door's other work takes most of the deadline; then Gameye hangs.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    crate::stack::set_faults(
        &emulator,
        json!([{"operation": "session-run", "delay_ms": 8000, "probability": 1.0}]),
    )
    .await;
    let started = std::time::Instant::now();
    let outcome = engine.finish(job).await.unwrap();
    let took = started.elapsed();
    let Outcome::Failed(failure) = outcome else { panic!("placed against a hanging Gameye: {outcome:?}") };
    assert_eq!(failure.error.code, bridge::FailureCode::UpstreamUnavailable);
    // Half a second was left of the deadline; a deadline counted from here would take 2 s.
    assert!(took < Duration::from_millis(1300), "gave up {took:?} after starting, past the claim's deadline");
}

/// A match whose session may outlive `placement.record_ttl` keeps its record as long as the session:
/// were the record to expire first, a new match under the same id would be handed the running
/// session (a create answers 409, and the session under the id is adopted).
#[tokio::test]
async fn a_record_lives_as_long_as_its_session_may() {
    let stack = Stack::start_with(&[("BRIDGE_PLACEMENT__RECORD_TTL", "30s")]).await;
    let mut redis =
        redis::Client::open(stack.redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    // (session ttl, the record's life in ms): the longer of the session's and record_ttl (30 s);
    // no ttl is the configured default, 30 min.
    for (match_id, ttl, life) in [
        ("m-ttl-2h", Some("2h"), 7_100_000..=7_200_000),
        ("m-ttl-default", None, 1_700_000..=1_800_000),
        ("m-ttl-10s", Some("10s"), 25_000..=30_000),
    ] {
        let mut body = match_with(match_id, &[&[("eu-west-1", 20)]]);
        if let Some(ttl) = ttl {
            body["ttl"] = json!(ttl);
        }
        let (status, answer) = stack.post_match(&body).await;
        assert_eq!(status, 200, "{answer}");
        let left: i64 = redis::cmd("PTTL")
            .arg(format!("gameye-bridge:match:{{{match_id}}}"))
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!(life.contains(&left), "{match_id}: the record expires in {left} ms");
    }
}

#[tokio::test]
async fn bursts_of_5xx_are_retried_within_the_deadline() {
    let stack = Stack::start().await;
    stack
        .set_faults(json!([
            {"operation": "session-run", "status": 503, "probability": 0.3},
            {"operation": "session-run", "status": 502, "probability": 0.1, "non_json": true},
            {"operation": "get-available-locations", "status": 500, "probability": 0.1}
        ]))
        .await;
    let bodies: Vec<Value> =
        (0..20).map(|i| match_with(&format!("m-5xx-{i}"), &[&[("eu-west-1", 20)]])).collect();
    let answers = join_all(bodies.iter().map(|body| stack.post_match(body))).await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
    }
    assert_eq!(stack.emulator_sessions().await.len(), 20);
}

#[tokio::test]
async fn gameye_outage_beyond_the_deadline_fails_with_upstream_unavailable() {
    let stack = Stack::start_with(&[("BRIDGE_PLACEMENT__DEADLINE", "1s")]).await;
    stack.set_faults(json!([{"operation": "session-run", "status": 503, "probability": 1.0}])).await;
    let (status, failure) = stack.post_match(&match_with("m-down", &[&[("eu-west-1", 20)]])).await;
    assert_eq!(status, 502, "{failure}");
    assert_eq!(failure["error"]["code"], "UPSTREAM_UNAVAILABLE");
    assert_eq!(failure["error"]["retryable"], true);
    // A retry after the outage places it.
    stack.set_faults(json!([])).await;
    let (status, _) = stack.post_match(&match_with("m-down", &[&[("eu-west-1", 20)]])).await;
    assert_eq!(status, 200);
}

/// Gameye started the session but its answer never came (a proxy timing out on a slow backend):
/// at the deadline, the attempt looks once whether the session exists, and places the match there
/// instead of failing it while its server runs.
#[tokio::test]
async fn a_create_whose_answer_is_lost_at_the_deadline_is_placed_on_the_session_it_started() {
    let stack = Stack::start_with(&[("BRIDGE_PLACEMENT__DEADLINE", "1s")]).await;
    stack.set_faults(json!([{"operation": "session-run", "hang": true, "after": true}])).await;
    let started = std::time::Instant::now();
    let (status, assignment) = stack.post_match(&match_with("m-lost-answer", &[&[("eu-west-1", 20)]])).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{assignment}");
    assert_eq!(assignment["session_id"], session_id("m-lost-answer"));
    assert_eq!(assignment["location"], "eu-west-1");
    assert!(!assignment["ports"].as_array().unwrap().is_empty(), "{assignment}");
    // Within the deadline and the look's 2 s: the lease (deadline + 5 s) is never outlived.
    assert!(took < Duration::from_secs(4), "answered after {took:?}");
    assert_eq!(stack.emulator_sessions().await.len(), 1, "one session, the one the lost create started");
    // Recorded as placed: a duplicate gets it without touching Gameye.
    let (status, again) = stack.post_match(&match_with("m-lost-answer", &[&[("eu-west-1", 20)]])).await;
    assert_eq!((status, &again), (200, &assignment));

    // When the create did not start it (the answer lost before the operation), the match fails.
    stack.set_faults(json!([{"operation": "session-run", "hang": true}])).await;
    let (status, failure) = stack.post_match(&match_with("m-never-started", &[&[("eu-west-1", 20)]])).await;
    assert_eq!(status, 502, "{failure}");
    assert_eq!(failure["error"]["code"], "UPSTREAM_UNAVAILABLE");
    assert_eq!(stack.emulator_sessions().await.len(), 1);
}

/// A create whose answer was lost started the session beyond the cap; the next round no longer
/// ranks that location (it is cooling down now) and its create elsewhere meets 409: the match is
/// placed on the session the lost create started, still flagged beyond the cap.
#[tokio::test]
async fn a_session_found_by_409_where_a_lost_create_went_keeps_its_latency_cap_flag() {
    let stack = Stack::start().await;
    stack
        .set_faults(json!([
            {"operation": "session-run", "location": "eu-west-1", "status": 420},
            {"operation": "session-run", "location": "eu-central-1", "status": 503, "after": true, "delay_ms": 1500},
        ]))
        .await;
    // eu-west-1 within the 60 ms cap; eu-central-1 and us-east-1 beyond it.
    let body = match_with("m-lost-beyond", &[&[("eu-west-1", 20), ("eu-central-1", 90), ("us-east-1", 95)]]);
    let placing = tokio::spawn({
        let (http, url) = (stack.http.clone(), stack.url("/v1/matches"));
        async move {
            let response = http.post(url).bearer_auth(API_TOKEN).json(&body).send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    });
    // While eu-central-1's answer is held back, another instance cools eu-central-1 down.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut redis =
        ::redis::Client::open(stack.redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let () = ::redis::cmd("SET")
        .arg("gameye-bridge:cooldown:{eu-central-1}")
        .arg(1)
        .arg("PX")
        .arg(30_000)
        .query_async(&mut redis)
        .await
        .unwrap();

    let (status, assignment) = placing.await.unwrap();
    assert_eq!(status, 200, "{assignment}");
    assert_eq!(assignment["location"], "eu-central-1", "where the lost create started it: {assignment}");
    assert_eq!(assignment["latency_cap_exceeded"], true, "90 ms is beyond the 60 ms cap: {assignment}");
    assert_eq!(stack.emulator_sessions().await.len(), 1);
}

#[tokio::test]
async fn a_gameye_call_slower_than_the_deadline_is_cut_off_at_the_deadline() {
    // The call would outlast the lease (deadline + 5 s) under Gameye's own 10 s request timeout:
    // an owner still waiting then could answer differently from one that took the match over.
    let stack = Stack::start_with(&[("BRIDGE_PLACEMENT__DEADLINE", "1s")]).await;
    stack.set_faults(json!([{"operation": "session-run", "delay_ms": 7000, "probability": 1.0}])).await;
    let started = std::time::Instant::now();
    let (status, failure) = stack.post_match(&match_with("m-slow", &[&[("eu-west-1", 20)]])).await;
    let took = started.elapsed();
    assert_eq!(status, 502, "{failure}");
    assert_eq!(failure["error"]["code"], "UPSTREAM_UNAVAILABLE");
    assert_eq!(failure["error"]["retryable"], true);
    assert!(took < Duration::from_secs(3), "answered after {took:?}, past the 1 s deadline");
    // Retryable: once Gameye answers in time, the same match is placed.
    stack.set_faults(json!([])).await;
    let (status, assignment) = stack.post_match(&match_with("m-slow", &[&[("eu-west-1", 20)]])).await;
    assert_eq!(status, 200, "{assignment}");
    assert_eq!(assignment["session_id"], session_id("m-slow"));
}

#[tokio::test]
async fn permanent_gameye_refusals_fail_with_their_codes() {
    let stack = Stack::start().await;
    let (status, failure) = stack
        .post_match(&json!({"match_id": "m-img", "image": "no-such-game", "players": [{"id": "a"}]}))
        .await;
    assert_eq!((status, failure["error"]["code"].as_str()), (404, Some("NOT_FOUND")), "{failure}");

    stack.set_faults(json!([{"operation": "session-run", "status": 402, "probability": 1.0}])).await;
    let (status, failure) = stack.post_match(&match_with("m-402", &[&[("eu-west-1", 20)]])).await;
    assert_eq!((status, failure["error"]["code"].as_str()), (402, Some("QUOTA_EXCEEDED")), "{failure}");
    assert_eq!(failure["error"]["retryable"], false);
    // A duplicate of a permanently failed match gets the same failure, without calling Gameye.
    stack.set_faults(json!([])).await;
    let (status, again) = stack.post_match(&match_with("m-402", &[&[("eu-west-1", 20)]])).await;
    assert_eq!((status, &again), (402, &failure));
    assert!(stack.emulator_sessions().await.is_empty());
}

#[tokio::test]
async fn bad_input_gets_its_error_and_stores_nothing() {
    // A small body limit keeps the oversized body inside the socket buffers, so the early 413 is
    // read by the client instead of racing a connection reset.
    let stack = Stack::start_with(&[("BRIDGE_HTTP__BODY_LIMIT", "4096")]).await;
    let post_raw = |body: Vec<u8>, token: Option<&'static str>| {
        let mut request =
            stack.http.post(stack.url("/v1/matches")).body(body).header("content-type", "application/json");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    // (body, bearer token, expected status, expected code, text the message must contain)
    type Case = (Vec<u8>, Option<&'static str>, u16, &'static str, &'static str);
    let cases: Vec<Case> = vec![
        (b"{not json".to_vec(), Some(API_TOKEN), 400, "INVALID_REQUEST", ""),
        (br#"{"match_id": "m-bad"}"#.to_vec(), Some(API_TOKEN), 422, "INVALID_REQUEST", "players"),
        (
            br#"{"match_id": "m-bad", "players": []}"#.to_vec(),
            Some(API_TOKEN),
            422,
            "INVALID_REQUEST",
            "players",
        ),
        (
            br#"{"match_id": "", "players": [{"id": "a"}]}"#.to_vec(),
            Some(API_TOKEN),
            422,
            "INVALID_REQUEST",
            "match_id",
        ),
        (
            br#"{"match_id": "m-bad", "players": [{"id": "a"}], "locaitons": []}"#.to_vec(),
            Some(API_TOKEN),
            422,
            "INVALID_REQUEST",
            "locaitons",
        ),
        (
            br#"{"match_id": "m-bad", "players": [{"id": "a", "latencies": {"eu-west-1": -4}}]}"#.to_vec(),
            Some(API_TOKEN),
            422,
            "INVALID_REQUEST",
            "players[0].latencies",
        ),
        (
            br#"{"match_id": "m-bad", "players": [{"id": "a"}, {"id": "a"}]}"#.to_vec(),
            Some(API_TOKEN),
            422,
            "INVALID_REQUEST",
            "players[1].id",
        ),
        (
            br#"{"match_id": "m-bad", "players": [{"id": "a"}], "ttl": "forever"}"#.to_vec(),
            Some(API_TOKEN),
            422,
            "INVALID_REQUEST",
            "ttl",
        ),
        (vec![b' '; 8 * 1024], Some(API_TOKEN), 413, "PAYLOAD_TOO_LARGE", ""),
        (br#"{"match_id": "m-bad", "players": [{"id": "a"}]}"#.to_vec(), None, 401, "UNAUTHORIZED", ""),
        (
            br#"{"match_id": "m-bad", "players": [{"id": "a"}]}"#.to_vec(),
            Some("wrong"),
            401,
            "UNAUTHORIZED",
            "",
        ),
    ];
    // Match ids that would end a NATS subject with an empty token (`gameye.match.assigned.m.`),
    // in requests that would otherwise be placed.
    let mut cases = cases;
    for match_id in DOTTED_MATCH_IDS {
        let body = match_with(match_id, &[&[("eu-west-1", 20)]]).to_string().into_bytes();
        cases.push((body, Some(API_TOKEN), 422, "INVALID_REQUEST", "match_id"));
    }
    for (body, token, status, code, field) in cases {
        let (got, answer) = post_raw(body, token).await;
        assert_eq!(got, status, "{answer}");
        assert_eq!(answer["error"]["code"], code, "{answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(field),
            "message names `{field}`: {answer}"
        );
        assert!(answer["error"]["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{answer}");
    }
    for match_id in ["m-bad"].iter().chain(&DOTTED_MATCH_IDS) {
        let (status, _) = stack.get(&format!("/v1/matches/{match_id}")).await;
        assert_eq!(status, 404, "nothing was stored for {match_id:?}");
    }
    assert!(stack.emulator_sessions().await.is_empty(), "nothing reached Gameye");
}

#[tokio::test]
async fn wait_false_answers_202_and_polling_finds_the_assignment() {
    let stack = Stack::start().await;
    let response = stack
        .http
        .post(stack.url("/v1/matches?wait=false"))
        .bearer_auth(API_TOKEN)
        .json(&match_with("m-async/1", &[&[("eu-west-1", 20)]]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["location"], "/v1/matches/m-async%2F1");
    let placed = stack.wait_placed("m-async%2F1", Duration::from_secs(10)).await;
    assert_eq!(placed["status"], "placed");
    assert_eq!(placed["assignment"]["location"], "eu-west-1");
    // The synchronous door answers the stored assignment for the same match.
    let (status, assignment) = stack.post_match(&match_with("m-async/1", &[&[("eu-west-1", 20)]])).await;
    assert_eq!(status, 200);
    assert_eq!(assignment, placed["assignment"]);
}

/// `?wait=false`: a caller that hangs up while its claim is in flight (Redis slow to answer) does
/// not leave the claim to recovery, 25 s on: the match is placed as soon as the claim is written.
#[tokio::test]
async fn an_async_caller_that_hangs_up_mid_claim_still_has_its_match_placed() {
    let stack = Stack::start().await;
    let body = match_with("m-async-hangup", &[&[("eu-west-1", 20)]]);
    stack.assert_placed_after_a_hang_up_mid_claim("/v1/matches?wait=false", &body, "m-async-hangup").await;
}

#[tokio::test]
async fn a_caller_that_hangs_up_does_not_cancel_its_placement() {
    // The default deadline (20 s): a placement dropped with its request would stay pending until
    // its lease ends 25 s on, and only then be placed again by recovery.
    let stack = Stack::start().await;
    stack.set_faults(json!([{"operation": "session-run", "delay_ms": 1500, "probability": 1.0}])).await;
    let started = std::time::Instant::now();
    let gave_up = stack
        .http
        .post(stack.url("/v1/matches"))
        .bearer_auth(API_TOKEN)
        .json(&match_with("m-hangup", &[&[("eu-west-1", 20)]]))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(gave_up.as_ref().is_err_and(reqwest::Error::is_timeout), "{gave_up:?}");
    let (status, record) = stack.get("/v1/matches/m-hangup").await;
    assert_eq!((status, &record["status"]), (200, &json!("pending")), "hung up mid-placement: {record}");

    let placed = stack.wait_placed("m-hangup", Duration::from_secs(10)).await;
    let took = started.elapsed();
    assert_eq!(placed["status"], "placed", "{placed}");
    assert_eq!(placed["assignment"]["session_id"], session_id("m-hangup"));
    assert!(took < Duration::from_secs(5), "placed {took:?} after the request; Gameye took 1.5 s");
    assert_eq!(stack.emulator_sessions().await.len(), 1);
}

#[tokio::test]
async fn a_body_limit_above_two_mib_is_the_limit() {
    let stack = Stack::start_with(&[("BRIDGE_HTTP__BODY_LIMIT", "8388608")]).await;
    // 3 MiB: above axum's own default limit (2 MiB), below the configured 8 MiB.
    let mut body = match_with("m-big", &[&[("eu-west-1", 20)]]).to_string().into_bytes();
    body.resize(3 << 20, b' ');
    let response = stack
        .http
        .post(stack.url("/v1/matches"))
        .bearer_auth(API_TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let assignment: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{assignment}");
    assert_eq!(assignment["session_id"], session_id("m-big"));

    // 9 MiB is refused. Announced in the head, it is refused before any of it is sent: a client
    // still writing a body when the bridge answers may see only the closed connection.
    let answer = answer_to_head_only(&stack, "/v1/matches", 9 << 20).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("PAYLOAD_TOO_LARGE"), "{answer}");
}

/// Sends the head of a POST whose body would be `content_length` bytes (and none of the body);
/// the bridge's whole answer.
async fn answer_to_head_only(stack: &Stack, path: &str, content_length: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = stack.bridge.base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {API_TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {content_length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read_whole_answer = async {
        let mut chunk = [0u8; 4096];
        loop {
            let read = stream.read(&mut chunk).await.unwrap();
            answer.extend_from_slice(&chunk[..read]);
            let text = String::from_utf8_lossy(&answer);
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                assert!(read > 0, "closed before the head: {text}");
                continue;
            };
            let length = head
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase().strip_prefix("content-length:")?.trim().parse().ok()
                })
                .unwrap_or(0);
            if read == 0 || body.len() >= length {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read_whole_answer).await.expect("an answer in time");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn stored_latencies_fill_in_for_players_without_them() {
    let stack = Stack::start().await;
    for (player, latencies) in
        [("alice", json!({"us-east-1": 20, "eu-west-1": 80})), ("bob", json!({"us-east-1": 25}))]
    {
        let response = stack
            .http
            .put(stack.url(&format!("/v1/players/{player}/latencies")))
            .bearer_auth(API_TOKEN)
            .json(&json!({"latencies": latencies}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let (status, stored) = stack.get("/v1/players/alice/latencies").await;
    assert_eq!((status, &stored["latencies"]), (200, &json!({"us-east-1": 20, "eu-west-1": 80})));
    let (status, _) = stack.get("/v1/players/nobody/latencies").await;
    assert_eq!(status, 404);

    let body = json!({"match_id": "m-stored", "players": [{"id": "alice"}, {"id": "bob"}]});
    let (status, assignment) = stack.post_match(&body).await;
    assert_eq!(status, 200, "{assignment}");
    assert_eq!(assignment["location"], "us-east-1");
    assert_eq!(assignment["latency_ms"], json!({"alice": 20, "bob": 25}));

    let response = stack
        .http
        .put(stack.url("/v1/players/alice/latencies"))
        .bearer_auth(API_TOKEN)
        .json(&json!({"latencies": {"eu-west-1": 70000}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);

    // A figure that is not a number: 422 naming it, and 400 for a body that is not JSON.
    let put = |body: &'static str| {
        stack
            .http
            .put(stack.url("/v1/players/alice/latencies"))
            .bearer_auth(API_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let response = put(r#"{"latencies": {"eu-west-1": 30, "us-east-1": "fast"}}"#).await.unwrap();
    assert_eq!(response.status(), 422);
    let error: Value = response.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("latencies.us-east-1: "), "{error}");
    assert_eq!(put(r#"{"latencies": "#).await.unwrap().status(), 400);
    let (_, stored) = stack.get("/v1/players/alice/latencies").await;
    assert_eq!(stored["latencies"], json!({"us-east-1": 20, "eu-west-1": 80}), "unchanged");
}

#[tokio::test]
async fn locations_list_the_ping_addresses() {
    let stack = Stack::start().await;
    let (status, body) = stack.get("/v1/locations").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["image"], "demo-game");
    let locations = body["locations"].as_array().unwrap();
    assert_eq!(locations.len(), 5);
    assert!(locations.iter().all(|l| !l["ping_ips"].as_array().unwrap().is_empty()));
    let (status, _) = stack.get("/v1/locations?image=no-such-game").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let stack = Stack::start().await;
    let doc: Value = stack.http.get(stack.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let routes = [
        ("post", "/v1/matches"),
        ("get", "/v1/matches/{match_id}"),
        ("put", "/v1/players/{player_id}/latencies"),
        ("get", "/v1/players/{player_id}/latencies"),
        ("get", "/v1/locations"),
        ("get", "/v1/sessions"),
        ("get", "/v1/sessions/{session_id}"),
        ("delete", "/v1/sessions/{session_id}"),
        ("post", "/v1/sessions/{session_id}/players"),
        ("delete", "/v1/sessions/{session_id}/players"),
        ("post", "/v1/backfill"),
        ("post", "/v1/nakama/matched"),
        ("post", "/v1/nakama/events"),
        ("post", "/v1/webhooks/sns"),
        ("get", "/v1/tickets/{ticket_id}"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
    ];
    for (method, path) in routes {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} missing from /openapi.json");
    }
    let documented: usize =
        doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, routes.len(), "a documented route this test does not know");
    // Answers every route can give: 413 where a body is taken, 500 and 503 where the store is used.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = &operation["responses"];
            if operation.get("requestBody").is_some() {
                assert!(responses["413"].is_object(), "{method} {path}: no 413");
            }
            if path.starts_with("/v1/") && path != "/v1/locations" {
                assert!(
                    responses["500"].is_object() && responses["503"].is_object(),
                    "{method} {path}: no 500/503"
                );
            }
        }
    }
    assert!(doc["paths"]["/v1/backfill"]["post"]["responses"]["504"].is_object(), "create_if_none's answers");
    assert!(
        doc["paths"]["/v1/nakama/events"]["post"]["responses"]["409"].is_object(),
        "a replayed signature"
    );
    // The events body is documented with its three shapes and their fields, not as any JSON.
    let events_body =
        &doc["paths"]["/v1/nakama/events"]["post"]["requestBody"]["content"]["application/json"];
    assert_eq!(events_body["schema"]["$ref"], "#/components/schemas/EventsBody", "{events_body}");
    let event = &doc["components"]["schemas"]["NakamaEvent"];
    for field in ["name", "user_id", "user_ids", "match_id"] {
        assert!(event["properties"][field].is_object(), "NakamaEvent.{field}: {event}");
    }
    assert_eq!(doc["components"]["schemas"]["EventsBody"]["oneOf"].as_array().map(Vec::len), Some(3));
    // A placing route's 422 and 503 come as a recorded Failure or as an ErrorBody: both shapes.
    for (path, status) in [("/v1/matches", "422"), ("/v1/matches", "503"), ("/v1/nakama/matched", "503")] {
        let body = &doc["paths"][path]["post"]["responses"][status]["content"]["application/json"]["schema"];
        assert_eq!(body["$ref"], "#/components/schemas/FailureOrError", "{path} {status}: {body}");
    }
    let shapes = &doc["components"]["schemas"]["FailureOrError"]["oneOf"];
    let refs: Vec<&str> = shapes.as_array().unwrap().iter().filter_map(|s| s["$ref"].as_str()).collect();
    assert_eq!(refs, ["#/components/schemas/Failure", "#/components/schemas/ErrorBody"], "{shapes}");
    // Every documented route exists (answers something other than the unknown-route 404).
    for (method, path) in routes {
        let concrete = path
            .replace("{match_id}", "m-x")
            .replace("{player_id}", "p-x")
            .replace("{ticket_id}", "t-x")
            .replace("{session_id}", "00000000-0000-0000-0000-000000000000");
        let response = stack
            .http
            .request(method.to_uppercase().parse().unwrap(), stack.url(&concrete))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(body["error"]["message"], "no such route", "{method} {path}");
    }
}

#[tokio::test]
async fn readiness_reports_redis_and_notices_it_stopping() {
    let mut stack = Stack::start().await;
    let (status, ready) = stack.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert!(ready["checks"].as_array().unwrap().iter().any(|c| c["name"] == "redis" && c["ok"] == true));
    stack.redis.stop();
    let (status, ready) = stack.get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    let (status, body) = stack.post_match(&match_with("m-no-redis", &[&[("eu-west-1", 20)]])).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "STORE_UNAVAILABLE");
    assert!(stack.emulator_sessions().await.is_empty(), "nothing placed without a record");
    stack.redis.restart();
    // The connection manager notices the new server on the first command and reconnects; from
    // then on placements work again without restarting the bridge.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = stack.post_match(&match_with("m-no-redis", &[&[("eu-west-1", 20)]])).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(std::time::Instant::now() < deadline, "still failing 10 s after Redis came back: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn configured_aliases_map_reported_location_names() {
    let stack =
        Stack::start_with(&[("BRIDGE_PLACEMENT__ALIASES", r#"{europe = "eu-central-1", us = "us-east-1"}"#)])
            .await;
    let body = json!({"match_id": "m-alias", "locations": ["europe", "us"],
                      "players": [{"id": "a", "latencies": {"europe": 30, "us": 80}}]});
    let (status, assignment) = stack.post_match(&body).await;
    assert_eq!(status, 200, "{assignment}");
    assert_eq!(assignment["location"], "eu-central-1");
    assert_eq!(assignment["latency_ms"], json!({"a": 30}));
}

/// The raw placement record of `match_id` in the bridge's Redis.
async fn raw_record(stack: &Stack, match_id: &str) -> String {
    let mut redis =
        redis::Client::open(stack.redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let key = format!("gameye-bridge:match:{{{match_id}}}");
    redis::cmd("GET").arg(&key).query_async(&mut redis).await.unwrap()
}

/// A match id is an idempotency key: reused for another match (here another player set), it is
/// refused with 409 and nothing changes; the first match's own resend, with fresh latencies and
/// a timestamp, is still answered with its assignment.
#[tokio::test]
async fn a_reused_match_id_for_other_players_is_refused_and_changes_nothing() {
    let stack = Stack::start().await;
    let first = match_with("m-reused", &[&[("eu-west-1", 20)], &[("eu-west-1", 30)]]);
    let (status, assignment) = stack.post_match(&first).await;
    assert_eq!(status, 200, "{assignment}");
    let record = raw_record(&stack, "m-reused").await;
    let (_, polled) = stack.get("/v1/matches/m-reused").await;

    // Another match under the same id: p0 and p2 instead of p0 and p1.
    let mut other = first.clone();
    other["players"][1]["id"] = json!("p2");
    for path in ["/v1/matches", "/v1/matches?wait=false"] {
        let response = stack
            .http
            .post(stack.url(path))
            .bearer_auth(API_TOKEN)
            .header("x-request-id", "req-conflict")
            .json(&other)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 409, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "MATCH_ID_CONFLICT", "{body}");
        assert_eq!(body["error"]["request_id"], "req-conflict", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("m-reused") && message.contains("different players"), "{message}");
    }

    assert_eq!(raw_record(&stack, "m-reused").await, record, "the record is untouched");
    assert_eq!(stack.get("/v1/matches/m-reused").await, (200, polled), "and so is what polling says");
    assert_eq!(stack.emulator_sessions().await.len(), 1, "no second session");

    // The first match sent again, with fresh latencies and a timestamp: its assignment.
    let mut resent = match_with("m-reused", &[&[("eu-west-1", 25), ("us-east-1", 90)], &[("eu-west-1", 28)]]);
    resent["requested_at"] = json!("2026-01-01T00:00:00Z");
    let (status, again) = stack.post_match(&resent).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, assignment);
    assert_eq!(stack.emulator_sessions().await.len(), 1);
    let metrics = stack.http.get(stack.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("gameye_bridge_placements_total{")
            && l.contains("outcome=\"conflict\"")
            && l.contains("MATCH_ID_CONFLICT")
            && l.ends_with(" 2")),
        "{metrics}"
    );
}

/// While the first match is still being placed, another match under its id is refused at once,
/// and the first one is placed as it was sent.
#[tokio::test]
async fn a_reused_match_id_is_refused_while_the_first_is_still_pending() {
    let stack = Stack::start().await;
    stack.set_faults(json!([{"operation": "session-run", "delay_ms": 1000, "probability": 1.0}])).await;
    let first = match_with("m-pending-reuse", &[&[("eu-west-1", 20)]]);
    let response = stack
        .http
        .post(stack.url("/v1/matches?wait=false"))
        .bearer_auth(API_TOKEN)
        .json(&first)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);

    let mut other = first.clone();
    other["image"] = json!("another-game");
    let (status, body) = stack.post_match(&other).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("different image"), "{body}");

    let placed = stack.wait_placed("m-pending-reuse", Duration::from_secs(20)).await;
    assert_eq!(placed["status"], "placed", "{placed}");
    let sessions = stack.emulator_sessions().await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["image"], "demo-game", "the first match's image");
}

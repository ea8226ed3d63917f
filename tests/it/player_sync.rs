//! The player-sync outbox end to end: joins and leaves change Redis at once, and Gameye's player
//! list (the emulator's `GET /session/{id}`) catches up, across Gameye failures and bridge restarts.

use std::time::Duration;

use serde_json::json;

use crate::sessions::{assert_gameye_players, gameye_players, join, leave, match_of, place, session, set};
use crate::stack::{Stack, start_bridge};

/// Quick retries and the shortest claim lease allowed with a 1 s Gameye timeout, so the tests
/// wait seconds, not minutes.
const QUICK_SYNC: &[(&str, &str)] = &[
    ("BRIDGE_GAMEYE__REQUEST_TIMEOUT", "1s"),
    ("BRIDGE_SEATS__GAMEYE_SYNC__POLL", "100ms"),
    ("BRIDGE_SEATS__GAMEYE_SYNC__RETRY_MIN", "100ms"),
    ("BRIDGE_SEATS__GAMEYE_SYNC__RETRY_MAX", "300ms"),
    ("BRIDGE_SEATS__GAMEYE_SYNC__LEASE", "8s"),
];

async fn placed_session(stack: &Stack, match_id: &str) -> String {
    let body = match_of(match_id, &["p0", "p1"], json!({"eu-west-1": 20}), json!({"max_players": 6}));
    place(stack, &body).await["session_id"].as_str().unwrap().to_owned()
}

async fn metric(stack: &Stack, line_start: &str) -> f64 {
    let text = stack.http.get(stack.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find(|line| line.starts_with(line_start))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn player_sync_gameye_learns_joins_and_leaves() {
    let stack = Stack::start_with(QUICK_SYNC).await;
    let sid = placed_session(&stack, "m-sync").await;
    assert!(gameye_players(&stack, &sid).await.is_empty());

    let (status, body) = join(&stack, &sid, &["p0", "p1", "x"]).await;
    assert_eq!(status, 200, "{body}");
    assert_gameye_players(&stack, &sid, set(&["p0", "p1", "x"])).await;
    let (status, body) = leave(&stack, &sid, &["p1"]).await;
    assert_eq!(status, 200, "{body}");
    assert_gameye_players(&stack, &sid, set(&["p0", "x"])).await;
    // Counted once the sync's claim is settled, a moment after Gameye has the players.
    let in_sync = "gameye_bridge_player_syncs_total{outcome=\"in_sync\"}";
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while metric(&stack, in_sync).await < 2.0 {
        assert!(std::time::Instant::now() < deadline, "one sync after each change:\n{}", stack.bridge.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn player_sync_catches_up_after_gameye_fails_joins_for_a_while() {
    let stack = Stack::start_with(QUICK_SYNC).await;
    let sid = placed_session(&stack, "m-outage").await;
    stack
        .set_faults(json!([
            {"operation": "join-session", "status": 503},
            {"operation": "leave-session", "status": 503},
        ]))
        .await;

    // Redis changes at once; Gameye's answers do not matter to the caller.
    let (status, body) = join(&stack, &sid, &["p0", "p1", "x"]).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = leave(&stack, &sid, &["x"]).await;
    assert_eq!(status, 200, "{body}");
    let (_, view) = session(&stack, &sid).await;
    assert_eq!(view["players"], json!(["p0", "p1"]));

    // Several failed attempts, and Gameye still knows nobody.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(&stack, "gameye_bridge_player_syncs_total{outcome=\"retry\"}").await < 3.0 {
        assert!(std::time::Instant::now() < deadline, "no retries seen:\n{}", stack.bridge.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gameye_players(&stack, &sid).await.is_empty());
    assert_eq!(metric(&stack, "gameye_bridge_player_syncs_queued ").await, 1.0);

    stack.set_faults(json!([])).await;
    assert_gameye_players(&stack, &sid, set(&["p0", "p1"])).await;
}

#[tokio::test]
async fn player_sync_queued_changes_survive_a_bridge_killed_during_an_outage() {
    let mut stack = Stack::start_with(QUICK_SYNC).await;
    let sid = placed_session(&stack, "m-restart").await;
    stack.set_faults(json!([{"operation": "join-session", "status": 503}])).await;
    let (status, body) = join(&stack, &sid, &["p0", "p1"]).await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    stack.bridge.signal("KILL");
    stack.bridge.wait_exit(Duration::from_secs(5)).await;
    stack.set_faults(json!([])).await;
    assert!(gameye_players(&stack, &sid).await.is_empty(), "nobody told Gameye yet");

    // A new instance on the same Redis finds the queued sync and finishes it.
    stack.bridge = start_bridge(&stack.emulator, &stack.redis, QUICK_SYNC).await;
    assert_gameye_players(&stack, &sid, set(&["p0", "p1"])).await;
}

#[tokio::test]
async fn player_sync_repairs_a_gameye_list_changed_behind_the_bridge() {
    let stack = Stack::start_with(QUICK_SYNC).await;
    let sid = placed_session(&stack, "m-drift").await;
    let (status, body) = join(&stack, &sid, &["p0"]).await;
    assert_eq!(status, 200, "{body}");
    assert_gameye_players(&stack, &sid, set(&["p0"])).await;

    // Someone else tells Gameye about a player the bridge never saw.
    let response = stack
        .http
        .put(format!("{}/session/player/join", stack.emulator.url().trim_end_matches('/')))
        .bearer_auth(gameye_emulator::DEFAULT_TOKEN)
        .json(&json!({"session": sid, "players": ["ghost"]}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    assert_eq!(gameye_players(&stack, &sid).await, set(&["ghost", "p0"]));

    // The next change syncs the whole list, not just the change: the record is the truth.
    let (status, body) = join(&stack, &sid, &["p1"]).await;
    assert_eq!(status, 200, "{body}");
    assert_gameye_players(&stack, &sid, set(&["p0", "p1"])).await;
}

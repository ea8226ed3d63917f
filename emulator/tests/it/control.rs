//! The `/_emulator/` controls: sessions, faults, quirks, world.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{Emu, send, session};

#[tokio::test]
async fn control_sessions_list_every_session_ever_without_auth() {
    let emu = Emu::instant().await;
    emu.run_ok(json!({ "id": "c1", "location": "eu-west-1", "image": "demo-game", "labels": { "m": "1" } }))
        .await;
    emu.run_ok(session("c2", "us-east-1")).await;
    emu.join(json!({ "session": "c1", "players": ["p1"] })).await;
    emu.stop("c2").await;
    let all = emu.all_sessions().await;
    assert_eq!(all.len(), 2);
    let c1 = &all[0];
    assert_eq!(c1["id"], "c1");
    assert_eq!(c1["location"], "eu-west-1");
    assert_eq!(c1["image"], "demo-game");
    assert_eq!(c1["tag"], "1.0.0");
    assert_eq!(c1["status"], "running");
    assert!(c1["created"].is_i64());
    assert_eq!(c1["players"], json!(["p1"]));
    assert_eq!(c1["labels"], json!({ "m": "1" }));
    assert_eq!(all[1]["status"], "exited");
    assert_eq!(all[1]["stop_reason"], "requested");
}

#[tokio::test]
async fn faults_can_be_replaced_read_and_cleared() {
    let emu = Emu::instant().await;
    let rules = json!([
        { "operation": "session-run", "status": 420, "probability": 1.0 },
        { "operation": "session-list", "location": "eu-west-1", "delay_ms": 5, "probability": 0.5 }
    ]);
    emu.set_faults(rules.clone()).await;
    let (status, got) = send(emu.anon(Method::GET, "/_emulator/faults")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, rules);

    emu.set_faults(json!([{ "operation": "tag-exists", "status": 500 }])).await;
    let (_, got) = send(emu.anon(Method::GET, "/_emulator/faults")).await;
    assert_eq!(got, json!([{ "operation": "tag-exists", "status": 500, "probability": 1.0 }]));

    let (status, _) = send(emu.anon(Method::DELETE, "/_emulator/faults")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, got) = send(emu.anon(Method::GET, "/_emulator/faults")).await;
    assert_eq!(got, json!([]));
}

#[tokio::test]
async fn bad_fault_rules_answer_400_and_change_nothing() {
    let emu = Emu::instant().await;
    emu.set_faults(json!([{ "operation": "session-run", "status": 500 }])).await;
    for bad in [
        "not json",
        r#"{"operation":"session-run"}"#,
        r#"[{"operation":"no-such-op"}]"#,
        r#"[{"operation":"session-run","probability":2}]"#,
        r#"[{"operation":"session-run","status":1000}]"#,
        r#"[{"operation":"session-run","colour":"red"}]"#,
    ] {
        let (status, error) = send(
            emu.anon(Method::PUT, "/_emulator/faults").header("content-type", "application/json").body(bad),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(error["statusCode"], 400);
    }
    let (_, got) = send(emu.anon(Method::GET, "/_emulator/faults")).await;
    assert_eq!(got, json!([{ "operation": "session-run", "status": 500, "probability": 1.0 }]));
}

#[tokio::test]
async fn quirks_can_be_switched_at_run_time() {
    let emu = Emu::instant().await;
    let (status, _) =
        send(emu.anon(Method::PUT, "/_emulator/quirks").json(&json!({ "run_response_minimal": true }))).await;
    assert_eq!(status, StatusCode::OK);
    let body = emu.run_ok(session("q", "eu-west-1")).await;
    assert!(body.get("id").is_none(), "{body}");
    assert_eq!(body["ports"], json!([]));
    let (_, quirks) = send(emu.anon(Method::GET, "/_emulator/quirks")).await;
    assert_eq!(quirks, json!({ "run_response_minimal": true, "tag_missing_404": false }));
    let (status, _) = send(emu.anon(Method::PUT, "/_emulator/quirks").json(&json!({ "nope": true }))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_loaded_world_can_be_read_back() {
    let emu = Emu::toml("seed = 7\nstart_delay = \"250ms\"").await;
    let (status, world) = send(emu.anon(Method::GET, "/_emulator/world")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(world["seed"], 7);
    assert_eq!(world["start_delay"], "250ms");
    assert_eq!(world["locations"].as_array().unwrap().len(), 5);
}

//! Fault injection: injected statuses, HTML bodies, delays, hangs, location rules, seeds.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{Emu, assert_error, send, session};

#[tokio::test]
async fn a_certain_420_replaces_the_operation() {
    let emu = Emu::instant().await;
    emu.set_faults(json!([{ "operation": "session-run", "status": 420, "probability": 1.0 }])).await;
    let (status, error) = emu.run(session("f", "eu-west-1")).await;
    assert_eq!(status.as_u16(), 420);
    assert_error(&error, status, "NO_CAPACITY");
    assert!(emu.all_sessions().await.is_empty(), "not performed");
    // Other operations are untouched.
    assert_eq!(emu.get("/session").await.0, StatusCode::OK);
}

#[tokio::test]
async fn non_json_faults_answer_a_proxy_html_page() {
    let emu = Emu::instant().await;
    emu.set_faults(json!([{ "operation": "session-list", "status": 502, "non_json": true }])).await;
    let response = emu.req(Method::GET, "/session").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(response.headers()["content-type"], "text/html");
    let text = response.text().await.unwrap();
    assert!(text.contains("<h1>502 Bad Gateway</h1>"), "{text}");
    assert!(serde_json::from_str::<serde_json::Value>(&text).is_err());
}

#[tokio::test]
async fn json_5xx_faults_carry_an_error_response() {
    let emu = Emu::instant().await;
    emu.run_ok(session("s", "eu-west-1")).await;
    for (status, code) in [(500, "INTERNAL_ERROR"), (503, "SERVICE_UNAVAILABLE"), (504, "GATEWAY_TIMEOUT")] {
        emu.set_faults(json!([{ "operation": "describe-session", "status": status }])).await;
        let (got, error) = emu.get("/session/s").await;
        assert_eq!(got.as_u16(), status);
        assert_error(&error, got, code);
    }
}

#[tokio::test]
async fn a_delay_only_rule_slows_the_operation_down_then_performs_it() {
    let emu = Emu::instant().await;
    emu.set_faults(json!([{ "operation": "session-run", "delay_ms": 300 }])).await;
    let started = Instant::now();
    emu.run_ok(session("late", "eu-west-1")).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(emu.all_sessions().await.len(), 1);
}

#[tokio::test]
async fn a_hanging_rule_never_answers_until_the_client_gives_up() {
    let emu = Emu::instant().await;
    emu.run_ok(session("h", "eu-west-1")).await;
    emu.set_faults(json!([{ "operation": "session-stop", "hang": true }])).await;
    let started = Instant::now();
    let result = emu.req(Method::DELETE, "/session/h").timeout(Duration::from_millis(400)).send().await;
    let err = result.expect_err("no answer");
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(400));
    // The operation was not performed, and the emulator still answers everything else.
    assert_eq!(emu.get("/session/h").await.0, StatusCode::OK);
}

#[tokio::test]
async fn an_after_rule_performs_the_operation_and_loses_its_answer() {
    let emu = Emu::instant().await;
    emu.set_faults(json!([{ "operation": "session-run", "status": 504, "after": true }])).await;
    let (status, error) = emu.run(session("lost", "eu-west-1")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_error(&error, status, "GATEWAY_TIMEOUT");
    assert_eq!(emu.get("/session/lost").await.0, StatusCode::OK, "performed all the same");

    // A hang after it: the caller times out, the session exists.
    emu.set_faults(json!([{ "operation": "session-run", "hang": true, "after": true }])).await;
    let result = emu
        .req(Method::POST, "/session")
        .json(&session("unanswered", "eu-west-1"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(result.expect_err("no answer").is_timeout());
    assert_eq!(emu.get("/session/unanswered").await.0, StatusCode::OK, "performed before the hang");

    // Stopping: the session stops though its caller hears 502.
    emu.set_faults(json!([{ "operation": "session-stop", "status": 502, "after": true }])).await;
    let response = emu.req(Method::DELETE, "/session/lost").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(emu.get("/session/lost").await.0, StatusCode::NOT_FOUND, "stopped");
}

#[tokio::test]
async fn shutdown_ends_hanging_requests() {
    let emu = Emu::instant().await;
    emu.set_faults(json!([{ "operation": "session-list", "hang": true }])).await;
    let hanging = tokio::spawn(emu.req(Method::GET, "/session").send());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    emu.running.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(3), "shutdown waited on the hang");
    let outcome = tokio::time::timeout(Duration::from_secs(3), hanging)
        .await
        .expect("the hanging request ended")
        .unwrap();
    if let Ok(response) = outcome {
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}

#[tokio::test]
async fn location_rules_only_hit_their_location() {
    let emu = Emu::instant().await;
    emu.run_ok(session("eu", "eu-west-1")).await;
    emu.run_ok(session("us", "us-east-1")).await;
    emu.set_faults(json!([
        { "operation": "session-run", "location": "eu-west-1", "status": 420 },
        { "operation": "describe-session", "location": "eu-west-1", "status": 503 },
        { "operation": "join-session", "location": "us-east-1", "status": 500 }
    ]))
    .await;
    assert_eq!(emu.run(session("eu2", "eu-west-1")).await.0.as_u16(), 420);
    emu.run_ok(session("us2", "us-east-1")).await;
    assert_eq!(emu.get("/session/eu").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(emu.get("/session/us").await.0, StatusCode::OK);
    let (status, _) = emu.join(json!({ "session": "us", "players": ["p"] })).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let (status, _) = emu.join(json!({ "session": "eu", "players": ["p"] })).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_failed_stop_leaves_the_session_running() {
    let emu = Emu::instant().await;
    emu.run_ok(session("stay", "eu-west-1")).await;
    emu.set_faults(json!([{ "operation": "session-stop", "status": 500 }])).await;
    assert_eq!(emu.stop("stay").await.0, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(emu.get("/session/stay").await.0, StatusCode::OK);
}

async fn outcomes(seed: u64) -> Vec<u16> {
    let emu = Emu::toml(&format!(
        "seed = {seed}\n[[faults]]\noperation = \"session-list\"\nstatus = 500\nprobability = 0.5\n"
    ))
    .await;
    let mut out = Vec::new();
    for _ in 0..40 {
        out.push(emu.get("/session").await.0.as_u16());
    }
    out
}

#[tokio::test]
async fn the_same_seed_gives_the_same_faults() {
    let a = outcomes(42).await;
    assert_eq!(a, outcomes(42).await);
    assert!(a.contains(&200) && a.contains(&500), "probability 0.5 mixes outcomes: {a:?}");
    assert_ne!(a, outcomes(43).await, "another seed, other dice");
}

#[tokio::test]
async fn probability_zero_never_fires() {
    let emu = Emu::instant().await;
    emu.set_faults(json!([{ "operation": "session-list", "status": 500, "probability": 0.0 }])).await;
    for _ in 0..20 {
        assert_eq!(emu.get("/session").await.0, StatusCode::OK);
    }
}

#[tokio::test]
async fn faults_from_the_world_file_apply_from_the_start() {
    let emu = Emu::toml("[[faults]]\noperation = \"get-available-locations\"\nstatus = 503\n").await;
    let (status, _) = send(emu.req(Method::GET, "/available-location/demo-game")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

//! Session lifecycle: created → running, TTL expiry, capacity (420), host placement and ports.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Emu, assert_error, now_ms, session};
use gameye_emulator::HOST_PORTS;

#[tokio::test]
async fn sessions_are_created_then_running_after_the_start_delay() {
    let emu = Emu::toml("start_delay = \"2s\"").await;
    emu.run_ok(session("slow", "eu-west-1")).await;
    let (_, s) = emu.get("/session/slow").await;
    assert_eq!(s["status"], "created");
    // Past the default delay: the world's setting is the one in force.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, s) = emu.get("/session/slow").await;
    assert_eq!(s["status"], "created");
    assert!(emu.list_ids("").await.is_empty());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, s) = emu.get("/session/slow").await;
    assert_eq!(s["status"], "running");
    assert_eq!(emu.list_ids("").await, ["slow"]);
}

#[tokio::test]
async fn default_world_starts_sessions_after_one_second() {
    let emu = Emu::start(gameye_emulator::World::default()).await;
    emu.run_ok(session("one", "eu-west-1")).await;
    let (_, s) = emu.get("/session/one").await;
    assert_eq!(s["status"], "created");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, s) = emu.get("/session/one").await;
    assert_eq!(s["status"], "running");
}

#[tokio::test]
async fn zero_start_delay_means_running_at_once() {
    let emu = Emu::instant().await;
    emu.run_ok(session("fast", "eu-west-1")).await;
    let (_, s) = emu.get("/session/fast").await;
    assert_eq!(s["status"], "running");
}

#[tokio::test]
async fn integer_ttl_stops_the_session_when_it_runs_out() {
    let emu = Emu::instant().await;
    let mut body = session("short", "eu-west-1");
    body["ttl"] = json!(1);
    emu.run_ok(body).await;
    emu.run_ok(session("long", "eu-west-1")).await;
    assert_eq!(emu.get("/session/short").await.0, StatusCode::OK);

    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(emu.get("/session/short").await.0, StatusCode::NOT_FOUND);
    assert_eq!(emu.list_ids("all=true").await, ["long"]);
    let all = emu.all_sessions().await;
    let short = all.iter().find(|s| s["id"] == "short").unwrap();
    assert_eq!(short["status"], "exited");
    assert_eq!(short["stop_reason"], "ttl_expired");
    // Stopped at the deadline, not when someone noticed.
    let lived = short["stopped_at"].as_i64().unwrap() - short["created"].as_i64().unwrap();
    assert!((990..=1100).contains(&lived), "lived {lived} ms");
    // Already terminated.
    assert_eq!(emu.stop("short").await.0, StatusCode::CONFLICT);
}

#[tokio::test]
async fn string_ttl_keeps_the_session_for_at_least_a_minute() {
    let emu = Emu::instant().await;
    let mut body = session("rounded", "eu-west-1");
    body["ttl"] = json!("1s");
    emu.run_ok(body).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(emu.get("/session/rounded").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_full_location_answers_420_until_a_session_stops() {
    let emu = Emu::toml(
        r#"start_delay = "0s"
           [[locations]]
           id = "tiny"
           ping_ips = ["192.0.2.99"]
           host_ips = ["203.0.113.99"]
           capacity = 2
           [[locations]]
           id = "big"
           host_ips = ["203.0.113.98"]"#,
    )
    .await;
    emu.run_ok(session("t1", "tiny")).await;
    emu.run_ok(session("t2", "tiny")).await;
    let (status, error) = emu.run(session("t3", "tiny")).await;
    assert_eq!(status.as_u16(), 420);
    assert_error(&error, StatusCode::from_u16(420).unwrap(), "NO_CAPACITY");
    // A full location is not available; another one still is.
    let (_, available) = emu.get("/available-location/demo-game").await;
    assert_eq!(available["locations"], json!([{ "id": "big", "ips": [] }]));
    emu.run_ok(session("b1", "big")).await;

    emu.stop("t1").await;
    emu.run_ok(session("t3", "tiny")).await;
    // The failed attempt did not burn the id.
    assert_eq!(emu.get("/session/t3").await.0, StatusCode::OK);
}

#[tokio::test]
async fn host_ports_are_unique_per_host_and_in_range() {
    let emu = Emu::toml(
        r#"start_delay = "0s"
           [[locations]]
           id = "two-hosts"
           host_ips = ["203.0.113.1", "203.0.113.2"]"#,
    )
    .await;
    // Least-loaded placement spreads sessions evenly over both machines.
    let mut per_host = std::collections::HashMap::<String, i64>::new();
    for i in 0..20 {
        let body = emu.run_ok(session(&format!("even{i}"), "two-hosts")).await;
        *per_host.entry(body["host"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    assert_eq!(per_host.len(), 2, "{per_host:?}");
    assert!(per_host.values().all(|&n| n == 10), "{per_host:?}");

    // No (host, port) pair is ever held by two active sessions, also when stops free ports.
    let mut active = std::collections::HashMap::new();
    let (_, list) = emu.get("/session").await;
    for s in list["sessions"].as_array().unwrap() {
        for port in s["port"].as_object().unwrap().values() {
            active.insert(
                (s["host"].as_str().unwrap().to_owned(), port.as_u64().unwrap() as u16),
                s["id"].clone(),
            );
        }
    }
    for i in 0..40 {
        let id = format!("s{i}");
        let body = emu.run_ok(session(&id, "two-hosts")).await;
        let host = body["host"].as_str().unwrap().to_owned();
        for p in body["ports"].as_array().unwrap() {
            let port = p["host"].as_u64().unwrap() as u16;
            assert!(HOST_PORTS.contains(&port));
            if let Some(holder) = active.insert((host.clone(), port), json!(id)) {
                panic!("{host}:{port} handed to {id} while {holder} holds it");
            }
        }
        if i % 3 == 0 {
            emu.stop(&id).await;
            active.retain(|_, holder| *holder != json!(id));
        }
    }
}

#[tokio::test]
async fn created_is_the_creation_time_in_milliseconds() {
    let emu = Emu::instant().await;
    let before = now_ms();
    emu.run_ok(session("when", "eu-west-1")).await;
    let (_, s) = emu.get("/session/when").await;
    let created = s["created"].as_i64().unwrap();
    assert!(created >= before && created <= now_ms() && created > 1_600_000_000_000);
}

//! `gameye-bridge serve` and `check-config` as a user runs them.

use std::time::Duration;

use crate::harness::{BridgeProcess, run_bridge};

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn serve_with_no_configuration_answers_health_and_says_it_uses_the_emulator() {
    let bridge = BridgeProcess::start(&[], None).await;
    let client = reqwest::Client::new();

    let health = client.get(format!("{}/healthz", bridge.base_url)).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let ready = client.get(format!("{}/readyz", bridge.base_url)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["gameye"]["backend"], "emulator");
    assert!(ready["gameye"]["warning"].as_str().unwrap().contains("emulator"));
    assert_eq!(ready["checks"][0]["name"], "gameye");
    assert_eq!(ready["checks"][0]["ok"], true);

    let metrics =
        client.get(format!("{}/metrics", bridge.base_url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("gameye_bridge_gameye_emulated 1"), "{metrics}");
    assert!(
        metrics.contains(
            "gameye_bridge_gameye_calls_total{operation=\"get-available-locations\",status=\"200\"}"
        ),
        "{metrics}"
    );

    let logs = bridge.logs();
    let first_line = logs.lines().next().unwrap_or_default();
    assert!(first_line.contains("EMBEDDED GAMEYE EMULATOR"), "first log line: {first_line}");
    for line in logs.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).expect("JSON log lines");
        assert_eq!(entry["span"]["gameye_backend"], "emulator", "log line without the backend: {line}");
    }
}

/// `THP_enabled` of a process (Linux ≥ 5.0): 0 once it turned transparent huge pages off.
fn thp_enabled(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let line = status.lines().find(|line| line.starts_with("THP_enabled:")).expect("a THP_enabled line");
    line.trim_start_matches("THP_enabled:").trim().to_owned()
}

#[tokio::test]
async fn serve_turns_transparent_huge_pages_off_unless_configured_to_keep_them() {
    let bridge = BridgeProcess::start(&[], None).await;
    assert_eq!(thp_enabled(bridge.pid()), "0");
    let bridge = BridgeProcess::start(&[("BRIDGE_RUNTIME__TRANSPARENT_HUGE_PAGES", "true")], None).await;
    assert_eq!(thp_enabled(bridge.pid()), "1");
}

#[tokio::test]
async fn unknown_routes_get_the_json_error_shape_with_a_request_id() {
    let bridge = BridgeProcess::start(&[], None).await;
    let response = reqwest::Client::new()
        .get(format!("{}/v1/nothing-here", bridge.base_url))
        .header("x-request-id", "req-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-request-id"], "req-123");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "NOT_FOUND");
    assert_eq!(body["error"]["request_id"], "req-123");
    assert!(body["error"]["message"].is_string());
}

#[tokio::test]
async fn sigterm_and_sigint_stop_the_service_cleanly() {
    for signal in ["TERM", "INT"] {
        let mut bridge = BridgeProcess::start(&[], None).await;
        bridge.signal(signal);
        assert_eq!(bridge.wait_exit(Duration::from_secs(10)).await, Some(0), "after SIG{signal}");
    }
}

#[tokio::test]
async fn in_flight_requests_finish_before_exit() {
    let dir = tempfile::tempdir().unwrap();
    let world = dir.path().join("world.toml");
    // The embedded emulator answers the readiness probe slowly, so /readyz is in flight at SIGTERM.
    std::fs::write(
        &world,
        // Keys left out keep the default world's values.
        "[[faults]]\noperation = \"get-available-locations\"\nprobability = 1.0\ndelay_ms = 1500\n",
    )
    .unwrap();
    let world = world.to_str().unwrap().to_owned();
    let mut bridge = BridgeProcess::start(&[("BRIDGE_GAMEYE__EMULATOR_WORLD", &world)], None).await;
    let url = format!("{}/readyz", bridge.base_url);
    let in_flight = tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    bridge.signal("TERM");
    assert_eq!(in_flight.await.unwrap().unwrap(), 200, "the in-flight request was cut off");
    assert_eq!(bridge.wait_exit(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test]
async fn serve_against_a_remote_gameye_reports_it_and_notices_a_bad_token() {
    let gameye = gameye_emulator::start(gameye_emulator::World::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = gameye.url();
    let bridge = BridgeProcess::start(
        &[("GAMEYE_API_URL", &url), ("GAMEYE_API_TOKEN", gameye_emulator::DEFAULT_TOKEN)],
        None,
    )
    .await;
    let ready: serde_json::Value =
        reqwest::get(format!("{}/readyz", bridge.base_url)).await.unwrap().json().await.unwrap();
    assert_eq!(ready["gameye"]["backend"], "remote");
    assert_eq!(ready["status"], "ready");
    assert!(!bridge.logs().contains("EMBEDDED GAMEYE EMULATOR"));
    drop(bridge);

    // Matches name their own images: one the account lacks as the default is no reason to be unready.
    let bridge = BridgeProcess::start(
        &[
            ("GAMEYE_API_URL", &url),
            ("GAMEYE_API_TOKEN", gameye_emulator::DEFAULT_TOKEN),
            ("GAMEYE_API_IMAGE", "an-image-this-account-lacks"),
        ],
        None,
    )
    .await;
    let response = reqwest::get(format!("{}/readyz", bridge.base_url)).await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    drop(bridge);

    let bridge =
        BridgeProcess::start(&[("GAMEYE_API_URL", &url), ("GAMEYE_API_TOKEN", "wrong-token")], None).await;
    let response = reqwest::get(format!("{}/readyz", bridge.base_url)).await.unwrap();
    assert_eq!(response.status(), 503);
    let ready: serde_json::Value = response.json().await.unwrap();
    assert!(ready["checks"][0]["error"].as_str().unwrap().contains("401"), "{ready}");
    assert!(!bridge.logs().contains("wrong-token"), "the token reached a log line");
}

#[test]
fn check_config_prints_effective_toml_with_secrets_redacted() {
    let output = run_bridge(
        &["check-config"],
        &[
            ("GAMEYE_API_URL", "https://api.sandbox-gameye.gameye.net"),
            ("GAMEYE_API_TOKEN", "super-secret-gameye-token"),
            ("BRIDGE_HTTP__TOKENS", "[\"super-secret-bridge-token\"]"),
            ("BRIDGE_REDIS__URL", "redis://:super-secret-redis@127.0.0.1:6379"),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("super-secret"), "secret printed:\n{stdout}");
    let printed: toml::Value = toml::from_str(&stdout).expect("valid TOML");
    assert_eq!(printed["gameye"]["url"].as_str(), Some("https://api.sandbox-gameye.gameye.net"));
    assert_eq!(printed["gameye"]["token"].as_str(), Some("<redacted>"));
    assert_eq!(printed["http"]["listen"].as_str(), Some("127.0.0.1:8080"));
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bridge.toml");
    std::fs::write(&file, "[gameye]\nimgae = \"typo\"\n").unwrap();
    let output = run_bridge(&["check-config", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("imgae"), "{}", stderr(&output));

    let output = run_bridge(&["check-config"], &[("BRIDGE_REDIS__URLL", "redis://x")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("BRIDGE_REDIS__URLL"), "{}", stderr(&output));
}

#[test]
fn serve_refuses_unsafe_or_contradictory_configuration() {
    let output = run_bridge(&["serve", "--listen", "0.0.0.0:0"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("http.listen"), "{}", stderr(&output));

    let output = run_bridge(&["serve"], &[("BRIDGE_REDIS__URL", "redis://127.0.0.1:1")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("gameye.url"), "{}", stderr(&output));
}

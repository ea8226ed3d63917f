//! A bridge wired like production: a standalone emulator (so tests can inject faults and count
//! sessions), a real Redis, and the `gameye-bridge` binary.

use std::time::Duration;

use gameye_emulator::{DEFAULT_TOKEN, RunningEmulator, World};
use serde_json::{Value, json};

use crate::harness::{BridgeProcess, RedisServer};

pub const API_TOKEN: &str = "test-api-token";

pub struct Stack {
    pub emulator: RunningEmulator,
    pub redis: RedisServer,
    pub bridge: BridgeProcess,
    pub http: reqwest::Client,
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// `extra`: more environment for the bridge (e.g. `BRIDGE_PLACEMENT__DEADLINE`).
    pub async fn start_with(extra: &[(&str, &str)]) -> Self {
        let emulator = gameye_emulator::start(world(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let redis = RedisServer::start();
        let bridge = start_bridge(&emulator, &redis, extra).await;
        Self { emulator, redis, bridge, http: reqwest::Client::new() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.bridge.base_url)
    }

    pub async fn post_match(&self, body: &Value) -> (u16, Value) {
        let response =
            self.http.post(self.url("/v1/matches")).bearer_auth(API_TOKEN).json(body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).bearer_auth(API_TOKEN).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn set_faults(&self, rules: Value) {
        set_faults(&self.emulator, rules).await;
    }

    /// Every session the emulator ever created (stopped ones too).
    pub async fn emulator_sessions(&self) -> Vec<Value> {
        emulator_sessions(&self.emulator).await
    }

    /// Posts `body` to `path` while Redis is frozen and hangs up after 200 ms, mid-claim; thaws Redis
    /// well within the bridge's 1 s wait for its answer (so the claim itself succeeds), then asserts
    /// that `match_id` is placed at once, not left to recovery 25 s on.
    pub async fn assert_placed_after_a_hang_up_mid_claim(&self, path: &str, body: &Value, match_id: &str) {
        self.redis.freeze();
        let started = std::time::Instant::now();
        let gave_up = self
            .http
            .post(self.url(path))
            .bearer_auth(API_TOKEN)
            .json(body)
            .timeout(Duration::from_millis(200))
            .send()
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.redis.thaw();
        assert!(gave_up.as_ref().is_err_and(reqwest::Error::is_timeout), "{gave_up:?}");

        let placed = self.wait_placed(match_id, Duration::from_secs(30)).await;
        let took = started.elapsed();
        assert_eq!(placed["status"], "placed", "{placed}");
        assert!(took < Duration::from_secs(5), "placed {took:?} after the request: {}", self.bridge.logs());
    }

    /// Polls `GET /v1/matches/{id}` until it is no longer pending.
    pub async fn wait_placed(&self, match_id: &str, within: Duration) -> Value {
        let deadline = std::time::Instant::now() + within;
        loop {
            let (status, body) = self.get(&format!("/v1/matches/{match_id}")).await;
            if status == 200 && body["status"] != "pending" {
                return body;
            }
            assert!(std::time::Instant::now() < deadline, "{match_id} still pending: {status} {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The default world, with a fixed seed so injected faults are repeatable.
pub fn world() -> World {
    World { seed: Some(7), ..World::default() }
}

pub async fn start_bridge(
    emulator: &RunningEmulator,
    redis: &RedisServer,
    extra: &[(&str, &str)],
) -> BridgeProcess {
    let url = emulator.url();
    let redis_url = redis.url();
    let mut env: Vec<(&str, &str)> = vec![
        ("GAMEYE_API_URL", &url),
        ("GAMEYE_API_TOKEN", DEFAULT_TOKEN),
        ("BRIDGE_REDIS__URL", &redis_url),
        ("BRIDGE_HTTP__TOKENS", "[\"test-api-token\"]"),
        ("BRIDGE_LOG__LEVEL", "info"),
    ];
    env.extend_from_slice(extra);
    BridgeProcess::start(&env, None).await
}

pub async fn set_faults(emulator: &RunningEmulator, rules: Value) {
    let response = reqwest::Client::new()
        .put(format!("{}/_emulator/faults", emulator.url()))
        .json(&rules)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
}

pub async fn emulator_sessions(emulator: &RunningEmulator) -> Vec<Value> {
    let body: Value =
        reqwest::get(format!("{}/_emulator/sessions", emulator.url())).await.unwrap().json().await.unwrap();
    body["sessions"].as_array().cloned().unwrap_or_default()
}

/// Match ids that would put an empty token in a NATS subject (`gameye.match.assigned.m.`): every
/// door refuses them.
pub const DOTTED_MATCH_IDS: [&str; 3] = ["m.", ".m", "a..b"];

/// A match whose players measured these latencies (location → ms per player).
pub fn match_with(match_id: &str, players: &[&[(&str, u32)]]) -> Value {
    let players: Vec<Value> = players
        .iter()
        .enumerate()
        .map(|(i, latencies)| {
            let latencies: serde_json::Map<String, Value> =
                latencies.iter().map(|(loc, ms)| ((*loc).to_owned(), json!(ms))).collect();
            json!({"id": format!("p{i}"), "latencies": latencies})
        })
        .collect();
    json!({"match_id": match_id, "players": players})
}

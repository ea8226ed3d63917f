//! The NATS door end to end: real `nats-server -js`, real `redis-server`, the emulator in-process,
//! `gameye-bridge` instances as processes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use gameye_emulator::{RunningEmulator, World};
use serde_json::{Value, json};

use crate::harness::{BridgeProcess, NatsServer, RedisServer, TcpRelay};
use crate::stack::{API_TOKEN, DOTTED_MATCH_IDS, emulator_sessions, match_with, set_faults, start_bridge};

const STREAM: &str = "GAMEYE_MATCHES";
const RESULTS: &str = "GAMEYE_RESULTS";
const CONSUMER: &str = "gameye-bridge";

fn session_id(match_id: &str) -> String {
    bridge::session_id("nats", match_id).to_string()
}

struct NatsStack {
    emulator: RunningEmulator,
    redis: RedisServer,
    nats: NatsServer,
    client: async_nats::Client,
    jetstream: jetstream::Context,
}

impl NatsStack {
    async fn start(world: World) -> Self {
        let emulator = gameye_emulator::start(world, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let redis = RedisServer::start();
        let nats = NatsServer::start();
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connect(nats.url())
            .await
            .unwrap();
        let jetstream = jetstream::new(client.clone());
        Self { emulator, redis, nats, client, jetstream }
    }

    /// A bridge on this stack's NATS, ready (NATS connected and the consumer running).
    async fn bridge(&self, extra: &[(&str, &str)]) -> BridgeProcess {
        let url = self.nats.url();
        let mut env = vec![("BRIDGE_NATS__URL", url.as_str())];
        env.extend_from_slice(extra);
        let bridge = start_bridge(&self.emulator, &self.redis, &env).await;
        wait_ready(&bridge).await;
        bridge
    }

    /// Publishes a match durably (JetStream acknowledged it).
    async fn publish(&self, payload: &[u8], msg_id: Option<&str>) {
        let mut headers = async_nats::HeaderMap::new();
        if let Some(id) = msg_id {
            headers.insert("Nats-Msg-Id", id);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let sent = match self
                .jetstream
                .publish_with_headers("gameye.match.found", headers.clone(), payload.to_vec().into())
                .await
            {
                Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match sent {
                Ok(()) => return,
                Err(error) => {
                    assert!(Instant::now() < deadline, "publish kept failing: {error}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn subscribe(&self, subject: &str) -> async_nats::Subscriber {
        let subscriber = self.client.subscribe(subject.to_owned()).await.unwrap();
        self.client.flush().await.unwrap();
        subscriber
    }

    async fn consumer_info(&self) -> jetstream::consumer::Info {
        let mut stream = self.jetstream.get_stream(STREAM).await.unwrap();
        let _ = stream.info().await.unwrap();
        let mut consumer: jetstream::consumer::PullConsumer = stream.get_consumer(CONSUMER).await.unwrap();
        consumer.info().await.unwrap().clone()
    }

    /// The last message the results stream holds on `subject`, if any.
    async fn stored_result(&self, subject: &str) -> Option<Value> {
        let stream = self.jetstream.get_stream(RESULTS).await.ok()?;
        let message = stream.get_last_raw_message_by_subject(subject).await.ok()?;
        serde_json::from_slice(&message.payload).ok()
    }
}

async fn wait_ready(bridge: &BridgeProcess) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = client.get(format!("{}/readyz", bridge.base_url)).send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status == 200 {
            assert!(body["checks"].as_array().unwrap().iter().any(|c| c["name"] == "nats"), "{body}");
            return;
        }
        assert!(Instant::now() < deadline, "bridge not ready: {body}\n{}", bridge.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for the next message on `subscriber`, failing after `within`.
async fn next_message(subscriber: &mut async_nats::Subscriber, within: Duration) -> async_nats::Message {
    tokio::time::timeout(within, subscriber.next())
        .await
        .expect("no message in time")
        .expect("subscription open")
}

fn header(message: &async_nats::Message, name: &str) -> String {
    message.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_owned()).unwrap_or_default()
}

async fn metrics(bridge: &BridgeProcess) -> String {
    reqwest::get(format!("{}/metrics", bridge.base_url)).await.unwrap().text().await.unwrap()
}

/// The value of the first metric line starting with `prefix` (0 when absent).
fn metric(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn big_world() -> World {
    let mut world = World { seed: Some(7), ..World::default() };
    for location in &mut world.locations {
        location.capacity = 100_000;
    }
    world
}

#[tokio::test]
async fn nats_a_published_match_yields_one_session_and_one_assignment() {
    let stack = NatsStack::start(big_world()).await;
    let bridge = stack.bridge(&[]).await;
    let mut assigned = stack.subscribe("gameye.match.assigned.>").await;
    let mut failed = stack.subscribe("gameye.match.failed.>").await;

    let body = match_with("m-nats-1", &[&[("eu-west-1", 40), ("us-east-1", 20)]]);
    stack.publish(body.to_string().as_bytes(), Some("m-nats-1")).await;
    let message = next_message(&mut assigned, Duration::from_secs(20)).await;
    assert_eq!(message.subject.as_str(), "gameye.match.assigned.m-nats-1");
    assert_eq!(header(&message, "Gameye-Match-Id"), "m-nats-1");
    assert_eq!(header(&message, "Gameye-Session-Id"), session_id("m-nats-1"));
    let assignment: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(assignment["session_id"], session_id("m-nats-1"));
    assert_eq!(assignment["location"], "us-east-1");

    // Nothing else: no second assignment, no failure, one session.
    assert!(
        tokio::time::timeout(Duration::from_secs(2), assigned.next()).await.is_err(),
        "a second assignment"
    );
    assert!(tokio::time::timeout(Duration::from_millis(10), failed.next()).await.is_err(), "a failure");
    let sessions = emulator_sessions(&stack.emulator).await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["id"], session_id("m-nats-1"));

    // Acknowledged (nothing pending or redelivered), and stored for late subscribers.
    let info = stack.consumer_info().await;
    assert_eq!((info.num_pending, info.num_ack_pending, info.num_redelivered), (0, 0, 0), "{info:?}");
    let stored = stack.stored_result("gameye.match.assigned.m-nats-1").await.expect("in the results stream");
    assert_eq!(stored, assignment);

    // Other doors' placements are announced on NATS too (announce_sources = ["*"]).
    let response = reqwest::Client::new()
        .post(format!("{}/v1/matches", bridge.base_url))
        .bearer_auth(API_TOKEN)
        .json(&match_with("m-http-1", &[&[("eu-west-1", 20)]]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let message = next_message(&mut assigned, Duration::from_secs(10)).await;
    assert_eq!(message.subject.as_str(), "gameye.match.assigned.m-http-1");
    assert_eq!(header(&message, "Gameye-Source"), "http");
    assert_eq!(header(&message, "Gameye-Session-Id"), bridge::session_id("http", "m-http-1").to_string());
}

#[tokio::test]
async fn nats_an_http_duplicate_of_a_placed_match_announces_it_again_even_without_waiting() {
    let stack = NatsStack::start(big_world()).await;
    let bridge = stack.bridge(&[]).await;
    let mut assigned = stack.subscribe("gameye.match.assigned.m-http-again").await;
    let http = reqwest::Client::new();
    let body = match_with("m-http-again", &[&[("eu-west-1", 20)]]);
    let post = |path: &str| {
        http.post(format!("{}{path}", bridge.base_url)).bearer_auth(API_TOKEN).json(&body).send()
    };
    let response = post("/v1/matches").await.unwrap();
    assert_eq!(response.status(), 200);
    let assignment: Value = response.json().await.unwrap();
    let first = next_message(&mut assigned, Duration::from_secs(10)).await;
    assert_eq!(serde_json::from_slice::<Value>(&first.payload).unwrap(), assignment);

    // A duplicate (say the caller missed the announcement) re-publishes it, whether it waits or not.
    for path in ["/v1/matches?wait=false", "/v1/matches"] {
        let response = post(path).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.json::<Value>().await.unwrap(), assignment, "{path}");
        let again = next_message(&mut assigned, Duration::from_secs(10)).await;
        assert_eq!(serde_json::from_slice::<Value>(&again.payload).unwrap(), assignment, "{path}");
    }
    assert_eq!(emulator_sessions(&stack.emulator).await.len(), 1);
}

#[tokio::test]
async fn nats_three_instances_share_one_consumer_and_place_a_thousand_matches_once() {
    const MATCHES: usize = 1000;
    let stack = NatsStack::start(big_world()).await;
    let mut bridges = Vec::new();
    for _ in 0..3 {
        bridges.push(stack.bridge(&[("BRIDGE_LOG__LEVEL", "warn")]).await);
    }
    let mut assigned = stack.subscribe("gameye.match.assigned.>").await;
    let started = Instant::now();

    // Every tenth match is published twice, without a message id, so JetStream's duplicate window
    // does not catch it: the placement record must.
    let mut payloads = Vec::new();
    for i in 0..MATCHES {
        let body =
            json!({"match_id": format!("m-{i:04}"), "players": [{"id": format!("p-{i}")}]}).to_string();
        if i % 10 == 0 {
            payloads.push(body.clone());
        }
        payloads.push(body);
    }
    let publisher = {
        let jetstream = stack.jetstream.clone();
        tokio::spawn(async move {
            for chunk in payloads.chunks(100) {
                let mut acks = Vec::new();
                for payload in chunk {
                    acks.push(jetstream.publish("gameye.match.found", payload.clone().into()).await.unwrap());
                }
                for ack in acks {
                    ack.await.unwrap();
                }
            }
        })
    };

    let mut seen = BTreeMap::<String, usize>::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while seen.len() < MATCHES {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let message = match tokio::time::timeout(remaining, assigned.next()).await {
            Ok(Some(message)) => message,
            _ => panic!("only {} of {MATCHES} matches assigned in time", seen.len()),
        };
        *seen.entry(header(&message, "Gameye-Match-Id")).or_default() += 1;
    }
    publisher.await.unwrap();
    let elapsed = started.elapsed();

    let sessions = emulator_sessions(&stack.emulator).await;
    let ids: BTreeSet<String> = sessions.iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(sessions.len(), MATCHES, "one session per match, duplicates included");
    assert_eq!(ids.len(), MATCHES);
    let expected: BTreeSet<String> = (0..MATCHES).map(|i| session_id(&format!("m-{i:04}"))).collect();
    assert_eq!(ids, expected);
    // Re-announcements of duplicates are fine (at-least-once); 1,000 distinct assignments are the point.
    assert_eq!(seen.len(), MATCHES);

    // The last duplicates may still be in flight when the 1,000th distinct assignment arrives: wait
    // for every delivery to be acked (and fail if more than that ever is).
    let ack_deadline = Instant::now() + Duration::from_secs(20);
    let per_instance = loop {
        let mut per_instance = Vec::new();
        for bridge in &bridges {
            let text = metrics(bridge).await;
            per_instance
                .push(metric(&text, "gameye_bridge_nats_messages_total{kind=\"found\",result=\"acked\"}"));
        }
        let acked = per_instance.iter().sum::<f64>() as usize;
        assert!(acked <= MATCHES + MATCHES / 10, "a delivery acked twice: {per_instance:?}");
        if acked == MATCHES + MATCHES / 10 {
            break per_instance;
        }
        assert!(Instant::now() < ack_deadline, "not every delivery acked: {per_instance:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "{MATCHES} matches (+10% duplicates) through 3 instances in {elapsed:?}; acked per instance {per_instance:?}"
    );
    let info = stack.consumer_info().await;
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0), "{info:?}");
}

#[tokio::test]
async fn nats_a_killed_instance_mid_placement_is_redelivered_without_a_second_session() {
    let stack = NatsStack::start(big_world()).await;
    let config = [
        ("BRIDGE_PLACEMENT__DEADLINE", "2s"),
        ("BRIDGE_PLACEMENT__RECOVERY_INTERVAL", "500ms"),
        ("BRIDGE_NATS__ACK_WAIT", "2s"),
        ("BRIDGE_NATS__NAK_DELAY", "300ms"),
        ("BRIDGE_NATS__MAX_DELIVER", "20"),
    ];
    let mut first = stack.bridge(&config).await;
    let mut assigned = stack.subscribe("gameye.match.assigned.>").await;
    // Gameye answers slowly, so the first instance dies with its POST in flight.
    set_faults(&stack.emulator, json!([{"operation": "session-run", "delay_ms": 1500, "probability": 1.0}]))
        .await;
    stack.publish(match_with("m-kill", &[&[("eu-west-1", 20)]]).to_string().as_bytes(), None).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&metrics(&first).await, "gameye_bridge_nats_in_flight{task=\"consumer\"}") < 1.0 {
        assert!(Instant::now() < deadline, "the first instance never took the match");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.signal("KILL");
    first.wait_exit(Duration::from_secs(5)).await;

    let second = stack.bridge(&config).await;
    let message = next_message(&mut assigned, Duration::from_secs(30)).await;
    assert_eq!(header(&message, "Gameye-Match-Id"), "m-kill");
    let assignment: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(assignment["session_id"], session_id("m-kill"));
    assert_eq!(emulator_sessions(&stack.emulator).await.len(), 1, "one session, though two instances tried");
    // The assignment may come from the second instance's recovery loop (which announces what it
    // finishes) before the redelivered message is handled: wait for the redelivery to be acked.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = metrics(&second).await;
        if metric(&text, "gameye_bridge_nats_messages_total{kind=\"found\",result=\"acked\"}") >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the redelivered match was never acked: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(emulator_sessions(&stack.emulator).await.len(), 1, "still one session");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = stack.consumer_info().await;
        if (info.num_pending, info.num_ack_pending) == (0, 0) {
            break;
        }
        assert!(Instant::now() < deadline, "still pending: {info:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn nats_a_server_restart_during_a_run_loses_no_match() {
    let mut stack = NatsStack::start(big_world()).await;
    let bridge = stack.bridge(&[("BRIDGE_NATS__ACK_WAIT", "3s"), ("BRIDGE_NATS__NAK_DELAY", "300ms")]).await;
    // Slow enough that the restart hits placements in flight.
    set_faults(&stack.emulator, json!([{"operation": "session-run", "delay_ms": 200, "probability": 1.0}]))
        .await;
    for i in 0..40 {
        let body = match_with(&format!("m-restart-{i}"), &[&[("eu-west-1", 20)]]);
        stack.publish(body.to_string().as_bytes(), None).await;
    }
    stack.nats.restart();
    for i in 40..60 {
        let body = match_with(&format!("m-restart-{i}"), &[&[("eu-west-1", 20)]]);
        stack.publish(body.to_string().as_bytes(), None).await;
    }
    // Every match ends up assigned in the (file-backed) results stream, and placed once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut missing: Vec<usize> = (0..60).collect();
    while !missing.is_empty() {
        let mut still = Vec::new();
        for i in missing {
            if stack.stored_result(&format!("gameye.match.assigned.m-restart-{i}")).await.is_none() {
                still.push(i);
            }
        }
        missing = still;
        assert!(
            Instant::now() < deadline,
            "not assigned after the restart: {missing:?}\n{}",
            bridge.logs().lines().rev().take(30).collect::<Vec<_>>().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(emulator_sessions(&stack.emulator).await.len(), 60);
    wait_ready(&bridge).await;
    let text = metrics(&bridge).await;
    assert_eq!(
        metric(&text, "gameye_bridge_nats_connections_total"),
        2.0,
        "the bridge reconnected once: {text}"
    );
}

#[tokio::test]
async fn nats_malformed_payloads_fail_and_are_terminated_not_redelivered() {
    let stack = NatsStack::start(big_world()).await;
    let bridge = stack.bridge(&[("BRIDGE_NATS__ACK_WAIT", "1s"), ("BRIDGE_NATS__NAK_DELAY", "100ms")]).await;
    let mut failed = stack.subscribe("gameye.match.failed.>").await;
    let mut dead = stack.subscribe("gameye.match.dead").await;

    stack.publish(br#"{"match_id": "m-bad", "players": []}"#, None).await;
    stack.publish(b"{not json", Some("m-garbage")).await;
    stack.publish(b"\xff\xfe binary", None).await;
    stack.publish(br#"[1, 2]"#, None).await;
    // Otherwise placeable matches whose ids would put an empty token in a subject: refused, and
    // answered on the header's id when there is one, else dead-lettered.
    let [trailing_dot, leading_dot, double_dot] = DOTTED_MATCH_IDS;
    for match_id in [trailing_dot, leading_dot] {
        stack.publish(match_with(match_id, &[&[("eu-west-1", 20)]]).to_string().as_bytes(), None).await;
    }
    let dotted = match_with(double_dot, &[&[("eu-west-1", 20)]]).to_string();
    stack.publish(dotted.as_bytes(), Some("m-dots")).await;

    let mut failures = BTreeMap::new();
    for _ in 0..3 {
        let message = next_message(&mut failed, Duration::from_secs(10)).await;
        let failure: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(failure["error"]["code"], "INVALID_REQUEST", "{failure}");
        assert_eq!(failure["error"]["retryable"], false);
        failures.insert(message.subject.to_string(), failure);
    }
    assert!(failures["gameye.match.failed.m-bad"]["error"]["message"].as_str().unwrap().contains("players"));
    assert!(failures.contains_key("gameye.match.failed.m-garbage"), "{failures:?}");
    let dots = &failures["gameye.match.failed.m-dots"]["error"]["message"];
    assert!(dots.as_str().unwrap().starts_with("match_id: "), "{failures:?}");
    let mut dead_ids = BTreeSet::new();
    for _ in 0..4 {
        let message = next_message(&mut dead, Duration::from_secs(10)).await;
        let letter: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(letter["error"]["code"], "INVALID_REQUEST", "{letter}");
        assert_eq!(letter["deliveries"], 1);
        let payload = letter["payload"].as_str().and_then(|p| serde_json::from_str::<Value>(p).ok());
        if let Some(match_id) = payload.as_ref().and_then(|p| p["match_id"].as_str()) {
            dead_ids.insert(match_id.to_owned());
        }
    }
    assert_eq!(dead_ids, BTreeSet::from([trailing_dot.to_owned(), leading_dot.to_owned()]));

    // Well past ack_wait: nothing came back, nothing is pending, the bridge lives and still places.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(tokio::time::timeout(Duration::from_millis(10), failed.next()).await.is_err(), "redelivered");
    let info = stack.consumer_info().await;
    assert_eq!((info.num_pending, info.num_ack_pending, info.num_redelivered), (0, 0, 0), "{info:?}");
    assert!(emulator_sessions(&stack.emulator).await.is_empty(), "nothing reached Gameye");
    for match_id in DOTTED_MATCH_IDS {
        let response = reqwest::Client::new()
            .get(format!("{}/v1/matches/{match_id}", bridge.base_url))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "nothing was stored for {match_id:?}");
    }
    let mut assigned = stack.subscribe("gameye.match.assigned.>").await;
    stack.publish(match_with("m-good", &[&[("eu-west-1", 20)]]).to_string().as_bytes(), None).await;
    next_message(&mut assigned, Duration::from_secs(10)).await;
    let text = metrics(&bridge).await;
    assert_eq!(
        metric(&text, "gameye_bridge_nats_messages_total{kind=\"found\",result=\"invalid\"}"),
        3.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "gameye_bridge_nats_messages_total{kind=\"found\",result=\"dead\"}"),
        4.0,
        "{text}"
    );
}

#[tokio::test]
async fn nats_retryable_failures_are_redelivered_then_dead_lettered() {
    let stack = NatsStack::start(big_world()).await;
    let _bridge = stack
        .bridge(&[
            ("BRIDGE_PLACEMENT__DEADLINE", "500ms"),
            ("BRIDGE_NATS__MAX_DELIVER", "3"),
            ("BRIDGE_NATS__NAK_DELAY", "100ms"),
        ])
        .await;
    set_faults(&stack.emulator, json!([{"operation": "session-run", "status": 503, "probability": 1.0}]))
        .await;
    let mut failed = stack.subscribe("gameye.match.failed.>").await;
    let mut dead = stack.subscribe("gameye.match.dead").await;
    stack.publish(match_with("m-outage", &[&[("eu-west-1", 20)]]).to_string().as_bytes(), None).await;

    // Three deliveries, each a full placement attempt; the failure is published once, on the last.
    let message = next_message(&mut failed, Duration::from_secs(20)).await;
    let failure: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(failure["error"]["code"], "UPSTREAM_UNAVAILABLE", "{failure}");
    let letter: Value =
        serde_json::from_slice(&next_message(&mut dead, Duration::from_secs(5)).await.payload).unwrap();
    assert_eq!(letter["match_id"], "m-outage");
    assert_eq!(letter["deliveries"], 3);
    assert!(tokio::time::timeout(Duration::from_secs(1), failed.next()).await.is_err(), "published once");
    let info = stack.consumer_info().await;
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0), "{info:?}");
}

/// The redelivery comes later than the outbox would announce an owed outcome (deadline + 5 s):
/// the retryable failure is still not published before the last delivery. It was owed like any
/// outcome, and the outbox published it while JetStream was about to place the match again.
#[tokio::test]
async fn nats_a_retryable_failure_is_not_published_by_the_outbox_before_the_last_delivery() {
    let stack = NatsStack::start(big_world()).await;
    let _bridge = stack
        .bridge(&[
            ("BRIDGE_PLACEMENT__DEADLINE", "500ms"),
            ("BRIDGE_PLACEMENT__RECOVERY_INTERVAL", "500ms"),
            ("BRIDGE_NATS__MAX_DELIVER", "2"),
            ("BRIDGE_NATS__NAK_DELAY", "8s"),
        ])
        .await;
    set_faults(&stack.emulator, json!([{"operation": "session-run", "status": 503, "probability": 1.0}]))
        .await;
    let mut failed = stack.subscribe("gameye.match.failed.>").await;
    let mut dead = stack.subscribe("gameye.match.dead").await;
    let started = Instant::now();
    stack.publish(match_with("m-nak-late", &[&[("eu-west-1", 20)]]).to_string().as_bytes(), None).await;

    let message = next_message(&mut failed, Duration::from_secs(20)).await;
    assert!(
        started.elapsed() >= Duration::from_secs(8),
        "published {:?} in, before the redelivery",
        started.elapsed()
    );
    let failure: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(failure["error"]["code"], "UPSTREAM_UNAVAILABLE", "{failure}");
    let letter: Value =
        serde_json::from_slice(&next_message(&mut dead, Duration::from_secs(5)).await.payload).unwrap();
    assert_eq!(letter["deliveries"], 2);
    assert!(tokio::time::timeout(Duration::from_secs(2), failed.next()).await.is_err(), "published once");
}

/// A message given up on whose dead letter cannot be published (the results stream refuses it:
/// full, discarding new messages) is handed back, not terminated: once the stream has room, a
/// redelivery publishes the letter. Terminated at once, the message would vanish untraced.
#[tokio::test]
async fn nats_a_dead_letter_that_cannot_be_published_is_tried_again_by_the_redelivery() {
    let stack = NatsStack::start(big_world()).await;
    // Tuned by an operator: the bridge adds its subjects and leaves the limits alone.
    let results = stack
        .jetstream
        .create_stream(jetstream::stream::Config {
            name: RESULTS.to_owned(),
            subjects: vec!["gameye.match.dead".to_owned()],
            max_messages: 1,
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .unwrap();
    stack.jetstream.publish("gameye.match.dead", "filler".into()).await.unwrap().await.unwrap();
    let _bridge =
        stack.bridge(&[("BRIDGE_NATS__NAK_DELAY", "300ms"), ("BRIDGE_NATS__MAX_DELIVER", "20")]).await;
    // No usable match id anywhere: a dead letter is all that can be said of it.
    stack.publish(b"{not json", None).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while stack.consumer_info().await.num_redelivered == 0 {
        assert!(Instant::now() < deadline, "never redelivered: {:?}", stack.consumer_info().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    results.purge().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let letter = loop {
        if let Some(letter) = stack.stored_result("gameye.match.dead").await {
            break letter;
        }
        assert!(Instant::now() < deadline, "the dead letter never reached the results stream");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(letter["payload"], "{not json", "{letter}");
    assert!(letter["deliveries"].as_i64().unwrap() >= 2, "{letter}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let info = stack.consumer_info().await;
        if (info.num_pending, info.num_ack_pending) == (0, 0) {
            break;
        }
        assert!(Instant::now() < deadline, "not terminated after its letter: {info:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn nats_request_reply_answers_within_the_placement_deadline() {
    let stack = NatsStack::start(big_world()).await;
    let _bridge = stack.bridge(&[("BRIDGE_PLACEMENT__DEADLINE", "2s")]).await;
    let request = |body: Vec<u8>| {
        let client = stack.client.clone();
        async move {
            let started = Instant::now();
            let request =
                async_nats::Request::new().payload(body.into()).timeout(Some(Duration::from_secs(4)));
            let reply = client.send_request("gameye.match.request", request).await.expect("a reply in time");
            let body: Value = serde_json::from_slice(&reply.payload).unwrap();
            (started.elapsed(), header(&reply, "Gameye-Status"), body)
        }
    };

    let (_, status, assignment) =
        request(match_with("m-req", &[&[("eu-west-1", 20)]]).to_string().into_bytes()).await;
    assert_eq!(status, "placed", "{assignment}");
    assert_eq!(assignment["session_id"], session_id("m-req"));
    let (_, _, again) = request(match_with("m-req", &[&[("eu-west-1", 20)]]).to_string().into_bytes()).await;
    assert_eq!(again, assignment, "a repeated request answers the same assignment");
    assert_eq!(emulator_sessions(&stack.emulator).await.len(), 1);

    let (_, status, failure) = request(br#"{"match_id": "m-req-bad", "players": []}"#.to_vec()).await;
    assert_eq!(status, "invalid");
    assert_eq!(failure["error"]["code"], "INVALID_REQUEST", "{failure}");
    assert_eq!(failure["match_id"], "m-req-bad");
    for match_id in DOTTED_MATCH_IDS {
        let (_, status, failure) =
            request(match_with(match_id, &[&[("eu-west-1", 20)]]).to_string().into_bytes()).await;
        assert_eq!(status, "invalid", "{failure}");
        assert!(failure["error"]["message"].as_str().unwrap().starts_with("match_id: "), "{failure}");
    }
    assert_eq!(emulator_sessions(&stack.emulator).await.len(), 1, "the dotted ids placed nothing");

    // Gameye down: the answer is a failure, within the deadline (plus the last attempt's time).
    set_faults(&stack.emulator, json!([{"operation": "session-run", "status": 503, "probability": 1.0}]))
        .await;
    let (elapsed, status, failure) =
        request(match_with("m-req-down", &[&[("eu-west-1", 20)]]).to_string().into_bytes()).await;
    assert_eq!(status, "failed", "{failure}");
    assert_eq!(failure["error"]["code"], "UPSTREAM_UNAVAILABLE");
    assert!(elapsed < Duration::from_millis(3500), "answered after {elapsed:?}");
}

#[tokio::test]
async fn nats_latency_messages_feed_the_latency_store() {
    let stack = NatsStack::start(big_world()).await;
    let bridge = stack.bridge(&[]).await;
    let report = json!({"player_id": "p-lat", "latencies": {"us-east-1": 20, "eu-west-1": 90.2}});
    // Fire-and-forget publish (what matchmakers do) …
    stack.client.publish("gameye.player.latency", report.to_string().into()).await.unwrap();
    // … and a request, which is answered.
    let reply = stack
        .client
        .request(
            "gameye.player.latency",
            json!({"player_id": "p-lat-2", "latencies": {"us-west-2": 5}}).to_string().into(),
        )
        .await
        .unwrap();
    let answer: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(answer["latencies"], json!({"us-west-2": 5}));
    let bad = stack
        .client
        .request("gameye.player.latency", br#"{"player_id": "p"}"#.to_vec().into())
        .await
        .unwrap();
    let answer: Value = serde_json::from_slice(&bad.payload).unwrap();
    assert_eq!(answer["error"]["code"], "INVALID_REQUEST", "{answer}");

    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let stored: Value = loop {
        let response = http
            .get(format!("{}/v1/players/p-lat/latencies", bridge.base_url))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break response.json().await.unwrap();
        }
        assert!(Instant::now() < deadline, "latencies never stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(stored["latencies"], json!({"eu-west-1": 91, "us-east-1": 20}));

    // A match whose player reported nothing in the match itself is placed by the stored figures.
    let mut assigned = stack.subscribe("gameye.match.assigned.>").await;
    stack
        .publish(json!({"match_id": "m-lat", "players": [{"id": "p-lat"}]}).to_string().as_bytes(), None)
        .await;
    let assignment: Value =
        serde_json::from_slice(&next_message(&mut assigned, Duration::from_secs(10)).await.payload).unwrap();
    assert_eq!(assignment["location"], "us-east-1", "{assignment}");
}

#[tokio::test]
async fn nats_sigterm_finishes_in_flight_messages_then_exits() {
    let stack = NatsStack::start(big_world()).await;
    let mut bridge = stack.bridge(&[]).await;
    let mut assigned = stack.subscribe("gameye.match.assigned.>").await;
    set_faults(&stack.emulator, json!([{"operation": "session-run", "delay_ms": 1000, "probability": 1.0}]))
        .await;
    stack.publish(match_with("m-term", &[&[("eu-west-1", 20)]]).to_string().as_bytes(), None).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&metrics(&bridge).await, "gameye_bridge_nats_in_flight{task=\"consumer\"}") < 1.0 {
        assert!(Instant::now() < deadline, "the match was never taken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bridge.signal("TERM");
    // The placement in flight finishes and is announced and acknowledged before the process exits.
    let message = next_message(&mut assigned, Duration::from_secs(10)).await;
    assert_eq!(header(&message, "Gameye-Match-Id"), "m-term");
    assert_eq!(bridge.wait_exit(Duration::from_secs(15)).await, Some(0), "{}", bridge.logs());
    let info = stack.consumer_info().await;
    assert_eq!((info.num_pending, info.num_ack_pending, info.num_redelivered), (0, 0, 0), "{info:?}");
    assert!(bridge.logs().contains("NATS door stopped"), "{}", bridge.logs());
}

/// At SIGTERM, a placement another door runs in the background (`POST /v1/matches?wait=false`)
/// finishes and is announced on NATS before the NATS connection is drained.
#[tokio::test]
async fn nats_sigterm_announces_background_placements_before_nats_is_drained() {
    let stack = NatsStack::start(big_world()).await;
    let mut bridge = stack.bridge(&[]).await;
    let mut assigned = stack.subscribe("gameye.match.assigned.>").await;
    set_faults(&stack.emulator, json!([{"operation": "session-run", "delay_ms": 1000, "probability": 1.0}]))
        .await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/matches?wait=false", bridge.base_url))
        .bearer_auth(API_TOKEN)
        .json(&match_with("m-term-http", &[&[("eu-west-1", 20)]]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    bridge.signal("TERM");
    let message = next_message(&mut assigned, Duration::from_secs(10)).await;
    assert_eq!(header(&message, "Gameye-Match-Id"), "m-term-http");
    assert_eq!(bridge.wait_exit(Duration::from_secs(15)).await, Some(0), "{}", bridge.logs());
}

#[tokio::test]
async fn nats_the_bridge_starts_while_nats_is_down_and_becomes_ready_when_it_is_up() {
    let mut stack = NatsStack::start(big_world()).await;
    stack.nats.stop();
    let url = stack.nats.url();
    let bridge = start_bridge(&stack.emulator, &stack.redis, &[("BRIDGE_NATS__URL", url.as_str())]).await;
    let readyz = || async {
        let response = reqwest::get(format!("{}/readyz", bridge.base_url)).await.unwrap();
        (response.status().as_u16(), response.json::<Value>().await.unwrap())
    };
    let (status, body) = readyz().await;
    assert_eq!(status, 503, "{body}");
    let nats = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "nats")
        .expect("a nats check")
        .clone();
    assert_eq!(nats["ok"], false, "{body}");

    stack.nats.restart();
    wait_ready(&bridge).await;
    let mut assigned = stack.subscribe("gameye.match.assigned.>").await;
    stack.publish(match_with("m-late", &[&[("eu-west-1", 20)]]).to_string().as_bytes(), None).await;
    let message = next_message(&mut assigned, Duration::from_secs(10)).await;
    assert_eq!(header(&message, "Gameye-Match-Id"), "m-late");
}

#[tokio::test]
async fn nats_a_deleted_consumer_is_rebuilt_by_the_supervised_loop() {
    let stack = NatsStack::start(big_world()).await;
    let bridge = stack.bridge(&[]).await;
    let stream = stack.jetstream.get_stream(STREAM).await.unwrap();
    stream.delete_consumer(CONSUMER).await.unwrap();
    let mut assigned = stack.subscribe("gameye.match.assigned.>").await;
    stack.publish(match_with("m-rebuilt", &[&[("eu-west-1", 20)]]).to_string().as_bytes(), None).await;
    let message = next_message(&mut assigned, Duration::from_secs(30)).await;
    assert_eq!(header(&message, "Gameye-Match-Id"), "m-rebuilt");
    let text = metrics(&bridge).await;
    assert!(metric(&text, "gameye_bridge_nats_task_restarts_total{task=\"consumer\"}") >= 1.0, "{text}");
    wait_ready(&bridge).await;
}

/// A pull request the server ends with nothing to deliver (its 30 s expiry) is sent again: a
/// match published after that is taken at once, and the consumer was never rebuilt. (Were the
/// expiry missed, the pull would wait for two missed heartbeats, 10 s, and a rebuild.)
#[tokio::test]
async fn nats_an_expired_pull_is_renewed_without_a_rebuild() {
    let stack = NatsStack::start(big_world()).await;
    let bridge = stack.bridge(&[]).await;
    let mut assigned = stack.subscribe("gameye.match.assigned.>").await;
    tokio::time::sleep(Duration::from_secs(34)).await;
    stack.publish(match_with("m-after-expiry", &[&[("eu-west-1", 20)]]).to_string().as_bytes(), None).await;
    // By 39 s: a pull left expired would take it only after the rebuild at ~40 s.
    let message = next_message(&mut assigned, Duration::from_secs(5)).await;
    assert_eq!(header(&message, "Gameye-Match-Id"), "m-after-expiry");
    let text = metrics(&bridge).await;
    assert_eq!(metric(&text, "gameye_bridge_nats_task_restarts_total{task=\"consumer\"}"), 0.0, "{text}");
}

/// A connection to NATS lost for a second while the server keeps running (a network blip), and a
/// match published meanwhile: the server finds nobody listening for the pull request the old
/// connection made and drops it. The consumer asks again as soon as it is connected again, not
/// only once its heartbeat check notices the silence (10 s) and rebuilds it.
#[tokio::test]
async fn nats_a_lost_connection_asks_for_messages_again_once_back() {
    let stack = NatsStack::start(big_world()).await;
    let relay = TcpRelay::start(stack.nats.address()).await;
    let through_relay = format!("nats://{}", relay.address());
    let bridge = stack.bridge(&[("BRIDGE_NATS__URL", through_relay.as_str())]).await;
    let mut assigned = stack.subscribe("gameye.match.assigned.>").await;
    let connections = "gameye_bridge_nats_connections_total";
    assert_eq!(metric(&metrics(&bridge).await, connections), 1.0);

    relay.cut_for(Duration::from_secs(1));
    // Published once the server has seen the old connection close, so it is not sent down that one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack.publish(match_with("m-after-cut", &[&[("eu-west-1", 20)]]).to_string().as_bytes(), None).await;
    // Within 6 s: 1 s of outage and the reconnect's backoff; without the new request ~11 s.
    let message = next_message(&mut assigned, Duration::from_secs(6)).await;
    assert_eq!(header(&message, "Gameye-Match-Id"), "m-after-cut");
    let text = metrics(&bridge).await;
    assert_eq!(metric(&text, connections), 2.0, "{text}");
    assert_eq!(metric(&text, "gameye_bridge_nats_task_restarts_total{task=\"consumer\"}"), 0.0, "{text}");
}

/// Messages the pull fetched ahead but no handler took yet are handed back (NAKed) at SIGTERM, so
/// another instance gets them at once rather than after `ack_wait`.
#[tokio::test]
async fn nats_sigterm_hands_back_messages_fetched_ahead() {
    // A backlog beyond what the stopping instance fetched: the stop must not leave a pull open
    // that takes more of it.
    const AHEAD: usize = 20;
    let stack = NatsStack::start(big_world()).await;
    let mut bridge = stack.bridge(&[("BRIDGE_NATS__CONCURRENCY", "2")]).await;
    let mut assigned = stack.subscribe("gameye.match.assigned.>").await;
    set_faults(&stack.emulator, json!([{"operation": "session-run", "delay_ms": 3000, "probability": 1.0}]))
        .await;
    for n in 0..AHEAD {
        stack
            .publish(
                match_with(&format!("m-ahead-{n}"), &[&[("eu-west-1", 20)]]).to_string().as_bytes(),
                None,
            )
            .await;
    }
    // Two in handlers, more delivered to the bridge and waiting for a handler's slot.
    let deadline = Instant::now() + Duration::from_secs(5);
    while stack.consumer_info().await.num_ack_pending < 3 {
        assert!(Instant::now() < deadline, "never fetched ahead: {:?}", stack.consumer_info().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bridge.signal("TERM");
    assert_eq!(bridge.wait_exit(Duration::from_secs(15)).await, Some(0), "{}", bridge.logs());
    set_faults(&stack.emulator, json!([])).await;

    // Another instance gets every one at once, not the fetched ones after ack_wait (30 s).
    let _other = stack.bridge(&[]).await;
    let mut matches = std::collections::BTreeSet::new();
    while matches.len() < AHEAD {
        let message = next_message(&mut assigned, Duration::from_secs(10)).await;
        matches.insert(header(&message, "Gameye-Match-Id").to_owned());
    }
}

/// Another match under a known match id: a `match.found` message is dead-lettered and
/// terminated (not redelivered), a request is answered `conflict`; `match.failed.<id>` stays
/// silent, since its listeners wait for the first match, which stands.
#[tokio::test]
async fn nats_a_reused_match_id_for_another_match_is_refused_without_announcing_a_failure() {
    let stack = NatsStack::start(big_world()).await;
    let bridge = stack.bridge(&[("BRIDGE_NATS__ACK_WAIT", "1s"), ("BRIDGE_NATS__NAK_DELAY", "100ms")]).await;
    let mut assigned = stack.subscribe("gameye.match.assigned.>").await;
    let mut failed = stack.subscribe("gameye.match.failed.>").await;
    let mut dead = stack.subscribe("gameye.match.dead").await;

    let first = match_with("m-nats-reused", &[&[("eu-west-1", 20)]]);
    stack.publish(first.to_string().as_bytes(), None).await;
    let message = next_message(&mut assigned, Duration::from_secs(20)).await;
    let assignment: Value = serde_json::from_slice(&message.payload).unwrap();

    let other = match_with("m-nats-reused", &[&[("eu-west-1", 20)], &[("eu-west-1", 30)]]);
    stack.publish(other.to_string().as_bytes(), None).await;
    let letter: Value =
        serde_json::from_slice(&next_message(&mut dead, Duration::from_secs(10)).await.payload).unwrap();
    assert_eq!(letter["match_id"], "m-nats-reused", "{letter}");
    assert_eq!(letter["error"]["code"], "MATCH_ID_CONFLICT", "{letter}");
    assert_eq!(letter["error"]["retryable"], false, "{letter}");

    let reply = stack
        .client
        .request("gameye.match.request", other.to_string().into_bytes().into())
        .await
        .expect("a reply");
    assert_eq!(header(&reply, "Gameye-Status"), "conflict");
    let refusal: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(refusal["error"]["code"], "MATCH_ID_CONFLICT", "{refusal}");
    // The first match's own resend (other latencies) still answers its assignment.
    let resent = match_with("m-nats-reused", &[&[("eu-west-1", 35)]]);
    let reply =
        stack.client.request("gameye.match.request", resent.to_string().into_bytes().into()).await.unwrap();
    assert_eq!(header(&reply, "Gameye-Status"), "placed");
    assert_eq!(serde_json::from_slice::<Value>(&reply.payload).unwrap(), assignment);

    // Well past ack_wait: nothing redelivered or pending, no failure announced, one session.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(tokio::time::timeout(Duration::from_millis(10), failed.next()).await.is_err(), "match.failed");
    assert!(tokio::time::timeout(Duration::from_millis(10), dead.next()).await.is_err(), "redelivered");
    let info = stack.consumer_info().await;
    assert_eq!((info.num_pending, info.num_ack_pending, info.num_redelivered), (0, 0, 0), "{info:?}");
    assert_eq!(emulator_sessions(&stack.emulator).await.len(), 1);
    let text = metrics(&bridge).await;
    assert_eq!(metric(&text, "gameye_bridge_nats_messages_total{kind=\"found\",result=\"conflict\"}"), 1.0);
    assert_eq!(metric(&text, "gameye_bridge_nats_messages_total{kind=\"request\",result=\"conflict\"}"), 1.0);
}

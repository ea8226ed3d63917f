//! Seats on NATS end to end: joins and leaves through JetStream (`gameye.session.players.join|leave`)
//! with their outcomes, and backfill by request/reply (`gameye.backfill.request`), against real
//! nats-server and redis-server processes, the emulator over HTTP and the `gameye-bridge` binary.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::harness::{BridgeProcess, NatsServer, RedisServer};
use crate::stack::{API_TOKEN, Stack, start_bridge, world};

const STREAM: &str = "GAMEYE_MATCHES";
const RESULTS: &str = "GAMEYE_RESULTS";
const SEATS_CONSUMER: &str = "gameye-bridge-seats";
const MATCH_FOUND: &str = "gameye.match.found";
const JOIN: &str = "gameye.session.players.join";
const LEAVE: &str = "gameye.session.players.leave";
const BACKFILL: &str = "gameye.backfill.request";

struct SeatStack {
    stack: Stack,
    /// Kept running for the bridge.
    _nats: NatsServer,
    client: async_nats::Client,
    jetstream: jetstream::Context,
    /// The bridge's environment beyond the stack's, to start it again.
    env: Vec<(String, String)>,
}

impl SeatStack {
    async fn start(extra: &[(&str, &str)]) -> Self {
        let nats = NatsServer::start();
        Self::start_on(nats, extra).await
    }

    /// A bridge with NATS on `nats` (which may hold streams already), ready.
    async fn start_on(nats: NatsServer, extra: &[(&str, &str)]) -> Self {
        let emulator = gameye_emulator::start(world(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let redis = RedisServer::start();
        let nats_url = nats.url();
        let mut env = vec![("BRIDGE_NATS__URL", nats_url.as_str())];
        env.extend_from_slice(extra);
        let bridge = start_bridge(&emulator, &redis, &env).await;
        wait_ready(&bridge).await;
        let client = async_nats::ConnectOptions::new().connect(nats_url.as_str()).await.unwrap();
        let jetstream = jetstream::new(client.clone());
        let stack = Stack { emulator, redis, bridge, http: reqwest::Client::new() };
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Self { stack, _nats: nats, client, jetstream, env }
    }

    /// Stops the bridge (SIGTERM) and waits for it to exit; NATS and Redis keep their data.
    async fn stop_bridge(&mut self) {
        self.stack.bridge.signal("TERM");
        self.stack.bridge.wait_exit(Duration::from_secs(15)).await;
    }

    /// Starts the bridge again as configured at first; ready.
    async fn start_bridge_again(&mut self) {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.stack.bridge = start_bridge(&self.stack.emulator, &self.stack.redis, &env).await;
        wait_ready(&self.stack.bridge).await;
    }

    /// Takes the next join or leave off the bridges' shared durable consumer, as another instance
    /// would, and holds it unacknowledged.
    async fn take_seat_change(&self) -> jetstream::Message {
        let stream = self.jetstream.get_stream(STREAM).await.unwrap();
        let consumer: jetstream::consumer::PullConsumer = stream.get_consumer(SEATS_CONSUMER).await.unwrap();
        let mut batch =
            consumer.fetch().max_messages(1).expires(Duration::from_secs(5)).messages().await.unwrap();
        batch.next().await.expect("a join or leave to take").unwrap()
    }

    /// Publishes durably: JetStream stored it.
    async fn publish(&self, subject: &str, payload: &[u8]) {
        let ack = self.jetstream.publish(subject.to_owned(), payload.to_vec().into()).await.unwrap();
        ack.await.unwrap();
    }

    async fn publish_json(&self, subject: &str, body: &Value) {
        self.publish(subject, body.to_string().as_bytes()).await;
    }

    async fn subscribe(&self, subject: &str) -> async_nats::Subscriber {
        let subscriber = self.client.subscribe(subject.to_owned()).await.unwrap();
        self.client.flush().await.unwrap();
        subscriber
    }

    /// A backfill request/reply: (`Gameye-Status`, body).
    async fn backfill(&self, body: &Value) -> (String, Value) {
        let reply = tokio::time::timeout(
            Duration::from_secs(20),
            self.client.request(BACKFILL, body.to_string().into()),
        )
        .await
        .expect("a reply in time")
        .expect("a reply");
        (header(&reply, "Gameye-Status"), serde_json::from_slice(&reply.payload).unwrap())
    }

    /// Places a match over HTTP; its session id.
    async fn place(&self, match_id: &str, players: &[&str], max_players: u32) -> String {
        let players: Vec<Value> =
            players.iter().map(|id| json!({"id": id, "latencies": {"eu-west-1": 10}})).collect();
        let body = json!({"match_id": match_id, "players": players, "max_players": max_players});
        let (status, assignment) = self.stack.post_match(&body).await;
        assert_eq!(status, 200, "{assignment}");
        assignment["session_id"].as_str().unwrap().to_owned()
    }

    async fn session(&self, id: &str) -> (u16, Value) {
        self.stack.get(&format!("/v1/sessions/{id}")).await
    }

    /// Polls `GET /v1/sessions/{id}` until `done` holds for the view.
    async fn wait_session(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (status, view) = self.session(id).await;
            if status == 200 && done(&view) {
                return view;
            }
            assert!(Instant::now() < deadline, "{what}: {status} {view}\n{}", self.stack.bridge.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the seat consumer has nothing pending or unacknowledged; its info then.
    async fn seats_consumer_settled(&self) -> jetstream::consumer::Info {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let stream = self.jetstream.get_stream(STREAM).await.unwrap();
            let mut consumer: jetstream::consumer::PullConsumer =
                stream.get_consumer(SEATS_CONSUMER).await.unwrap();
            let info = consumer.info().await.unwrap().clone();
            if (info.num_pending, info.num_ack_pending) == (0, 0) {
                return info;
            }
            assert!(Instant::now() < deadline, "still pending: {info:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.stack.bridge.base_url)).await.unwrap().text().await.unwrap()
    }

    /// Waits until the metric line `name` reaches `at_least`.
    async fn wait_metric(&self, name: &str, at_least: f64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while metric(&self.metrics().await, name) < at_least {
            assert!(Instant::now() < deadline, "{name} < {at_least}:\n{}", self.stack.bridge.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Makes the results stream stop capturing `subject`: the bridge's JetStream publishes of
    /// outcomes there then fail (no stream answers them), as when NATS loses an outcome.
    async fn stop_capturing(&self, subject: &str) {
        let mut results = self.jetstream.get_stream(RESULTS).await.unwrap();
        let mut config = results.info().await.unwrap().config.clone();
        let before = config.subjects.len();
        config.subjects.retain(|s| s != subject);
        assert_eq!(config.subjects.len(), before - 1, "{subject} was captured: {config:?}");
        self.jetstream.update_stream(&config).await.unwrap();
    }

    async fn start_capturing(&self, subject: &str) {
        let mut results = self.jetstream.get_stream(RESULTS).await.unwrap();
        let mut config = results.info().await.unwrap().config.clone();
        config.subjects.push(subject.to_owned());
        self.jetstream.update_stream(&config).await.unwrap();
    }

    /// The last outcome the results stream holds on `subject`, polled for up to 15 s.
    async fn stored(&self, subject: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let results = self.jetstream.get_stream(RESULTS).await.unwrap();
            if let Ok(message) = results.get_last_raw_message_by_subject(subject).await {
                return serde_json::from_slice(&message.payload).unwrap();
            }
            assert!(Instant::now() < deadline, "nothing stored on {subject}:\n{}", self.stack.bridge.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
            return;
        }
        assert!(Instant::now() < deadline, "bridge not ready: {body}\n{}", bridge.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next message on `subscriber` as JSON, with its subject, skipping the joins and leaves
/// themselves (a `gameye.session.players.>` subscription sees them too); fails after 15 s.
async fn next_json(subscriber: &mut async_nats::Subscriber) -> (String, Value, async_nats::Message) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let message = tokio::time::timeout_at(deadline, subscriber.next())
            .await
            .expect("no message in time")
            .expect("subscription open");
        if message.subject.as_str() == JOIN || message.subject.as_str() == LEAVE {
            continue;
        }
        let body = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
        return (message.subject.to_string(), body, message);
    }
}

/// Whether an outcome (not an inbound join or leave) arrives within `within`.
async fn an_outcome_within(subscriber: &mut async_nats::Subscriber, within: Duration) -> bool {
    outcome_within(subscriber, within).await.is_some()
}

/// The first outcome (not an inbound join or leave) arriving within `within`: subject and body.
async fn outcome_within(
    subscriber: &mut async_nats::Subscriber,
    within: Duration,
) -> Option<(String, Value)> {
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, subscriber.next()).await {
        if message.subject.as_str() != JOIN && message.subject.as_str() != LEAVE {
            let body = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
            return Some((message.subject.to_string(), body));
        }
    }
    None
}

fn header(message: &async_nats::Message, name: &str) -> String {
    message.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_owned()).unwrap_or_default()
}

/// The value of the metric line `name` exactly (labels included), 0 when absent.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map(|value| value.trim().parse().unwrap())
        .unwrap_or(0.0)
}

fn strings(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn reserved_players(view: &Value) -> BTreeSet<String> {
    view["reservations"].as_array().unwrap().iter().flat_map(|r| strings(&r["players"])).collect()
}

#[tokio::test]
async fn nats_seats_joins_and_leaves_apply_once_and_are_reported() {
    let seats = SeatStack::start(&[]).await;
    let sid = seats.place("m-join", &["p0", "p1"], 4).await;
    let mut outcomes = seats.subscribe("gameye.session.players.>").await;

    // A reserved player and a newcomer join.
    seats.publish_json(JOIN, &json!({"session_id": sid, "players": ["p0", "x1"]})).await;
    let view =
        seats.wait_session(&sid, "p0 and x1 joined", |v| strings(&v["players"]) == set(&["p0", "x1"])).await;
    assert_eq!(reserved_players(&view), set(&["p1"]));
    assert_eq!(view["open_seats"], 1);
    let (subject, joined, message) = next_json(&mut outcomes).await;
    assert_eq!(subject, format!("gameye.session.players.joined.{sid}"), "{joined}");
    assert_eq!(header(&message, "Gameye-Session-Id"), sid);
    assert_eq!(header(&message, "Gameye-Match-Id"), "m-join");
    assert_eq!(header(&message, "Gameye-Status"), "joined");
    assert_eq!(joined["session_id"], sid);
    assert_eq!(joined["match_id"], "m-join");
    assert_eq!(joined["action"], "join");
    assert_eq!(strings(&joined["joined"]), set(&["p0", "x1"]));
    assert_eq!(strings(&joined["from_reservations"]), set(&["p0"]));
    assert_eq!(strings(&joined["players"]), set(&["p0", "x1"]));
    assert_eq!((joined["capacity"].clone(), joined["open_seats"].clone()), (json!(4), json!(1)));

    // The same join again (a duplicate delivery, or a publisher's retry) is one player.
    seats.publish_json(JOIN, &json!({"session_id": sid, "players": ["x1"]})).await;
    let (subject, again, _) = next_json(&mut outcomes).await;
    assert_eq!(subject, format!("gameye.session.players.joined.{sid}"), "{again}");
    assert_eq!(again["joined"], json!([]));
    assert_eq!(again["already_joined"], json!(["x1"]));
    assert_eq!(again["open_seats"], 1);
    let (_, view) = seats.session(&sid).await;
    assert_eq!(strings(&view["players"]), set(&["p0", "x1"]));
    assert_eq!(view["open_seats"], 1);

    // Leaving frees the seat; the reserved p1 giving up frees theirs.
    seats.publish_json(LEAVE, &json!({"session_id": sid, "players": ["x1", "p1"]})).await;
    let view = seats.wait_session(&sid, "x1 left", |v| strings(&v["players"]) == set(&["p0"])).await;
    assert_eq!(view["reservations"], json!([]));
    assert_eq!(view["open_seats"], 3);
    let (subject, left, message) = next_json(&mut outcomes).await;
    assert_eq!(subject, format!("gameye.session.players.left.{sid}"), "{left}");
    assert_eq!(header(&message, "Gameye-Status"), "left");
    assert_eq!(left["left"], json!(["x1"]));
    assert_eq!(left["released"], json!(["p1"]));
    assert_eq!(left["players"], json!(["p0"]));

    // Every message acknowledged once, nothing redelivered, outcomes stored for late readers.
    let info = seats.seats_consumer_settled().await;
    assert_eq!(info.num_redelivered, 0, "{info:?}");
    let results = seats.jetstream.get_stream(RESULTS).await.unwrap();
    let stored = results.get_last_raw_message_by_subject(&format!("gameye.session.players.left.{sid}")).await;
    let stored: Value = serde_json::from_slice(&stored.unwrap().payload).unwrap();
    assert_eq!(stored, left);
    // Counted right after each acknowledgement: wait for the counts, then check they are exact.
    let joined = "gameye_bridge_nats_messages_total{kind=\"join\",result=\"joined\"}";
    let left = "gameye_bridge_nats_messages_total{kind=\"leave\",result=\"left\"}";
    seats.wait_metric(joined, 2.0).await;
    seats.wait_metric(left, 1.0).await;
    let text = seats.metrics().await;
    assert_eq!(metric(&text, joined), 2.0);
    assert_eq!(metric(&text, left), 1.0);
}

#[tokio::test]
async fn nats_seats_refusals_and_malformed_bodies_are_reported_and_change_nothing() {
    let seats = SeatStack::start(&[]).await;
    // Capacity 2, p0 holds a reservation: one open seat.
    let sid = seats.place("m-full", &["p0"], 2).await;
    let mut outcomes = seats.subscribe("gameye.session.players.>").await;

    // Beyond capacity: rejected, nobody joined.
    seats.publish_json(JOIN, &json!({"session_id": sid, "players": ["a", "b"]})).await;
    let (subject, rejected, message) = next_json(&mut outcomes).await;
    assert_eq!(subject, format!("gameye.session.players.rejected.{sid}"), "{rejected}");
    assert_eq!(header(&message, "Gameye-Status"), "rejected");
    assert_eq!(rejected["action"], "join");
    assert_eq!(rejected["players"], json!(["a", "b"]));
    assert_eq!(rejected["error"]["code"], "SESSION_FULL", "{rejected}");
    assert_eq!(rejected["error"]["retryable"], false);

    // An unknown session.
    let unknown = uuid::Uuid::new_v4().to_string();
    seats.publish_json(LEAVE, &json!({"session_id": unknown, "players": ["a"]})).await;
    let (subject, rejected, _) = next_json(&mut outcomes).await;
    assert_eq!(subject, format!("gameye.session.players.rejected.{unknown}"), "{rejected}");
    assert_eq!(rejected["action"], "leave");
    assert_eq!(rejected["error"]["code"], "NOT_FOUND", "{rejected}");

    // A malformed body that names its session: rejected there, the field named.
    seats.publish_json(JOIN, &json!({"session_id": sid, "players": []})).await;
    let (subject, rejected, _) = next_json(&mut outcomes).await;
    assert_eq!(subject, format!("gameye.session.players.rejected.{sid}"), "{rejected}");
    assert_eq!(rejected["error"]["code"], "INVALID_REQUEST", "{rejected}");
    assert_eq!(rejected["error"]["field"], "players", "{rejected}");
    assert!(rejected["error"]["message"].as_str().unwrap().starts_with("players:"), "{rejected}");

    // No usable session id: a dead letter with the payload.
    seats.publish(JOIN, b"{not json").await;
    let (subject, dead, message) = next_json(&mut outcomes).await;
    assert_eq!(subject, "gameye.session.players.dead", "{dead}");
    assert_eq!(header(&message, "Gameye-Status"), "INVALID_REQUEST");
    assert_eq!(dead["error"]["code"], "INVALID_REQUEST", "{dead}");
    assert_eq!(dead["payload"], "{not json");
    assert_eq!(dead["subject"], JOIN);
    assert_eq!(dead["deliveries"], 1);
    assert_eq!(dead["applied"], false, "{dead}");
    seats.publish_json(LEAVE, &json!({"session_id": "s.*", "players": ["a"]})).await;
    let (subject, dead, _) = next_json(&mut outcomes).await;
    assert_eq!(subject, "gameye.session.players.dead", "{dead}");
    assert!(dead["error"]["message"].as_str().unwrap().contains("session_id"), "{dead}");

    // None of it changed the session, and none of it comes back.
    let (_, view) = seats.session(&sid).await;
    assert_eq!(view["players"], json!([]));
    assert_eq!(reserved_players(&view), set(&["p0"]));
    assert_eq!(view["open_seats"], 1);
    let info = seats.seats_consumer_settled().await;
    assert_eq!(info.num_redelivered, 0, "{info:?}");
    assert!(!an_outcome_within(&mut outcomes, Duration::from_millis(500)).await, "more outcomes");
    // Counted right after each acknowledgement: wait for the counts, then check they are exact.
    let counted = ["rejected", "invalid", "dead"]
        .map(|result| format!("gameye_bridge_nats_messages_total{{kind=\"join\",result=\"{result}\"}}"));
    for name in &counted {
        seats.wait_metric(name, 1.0).await;
    }
    let text = seats.metrics().await;
    for name in &counted {
        assert_eq!(metric(&text, name), 1.0, "{name}");
    }

    // A core-NATS request on a join subject is answered by JetStream (the PubAck), not the bridge;
    // the join itself still applies and is reported.
    let reply = seats
        .client
        .request(JOIN, json!({"session_id": sid, "players": ["a"]}).to_string().into())
        .await
        .unwrap();
    let ack: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(ack["stream"], STREAM, "{ack}");
    assert!(ack["seq"].as_u64().is_some(), "{ack}");
    let (subject, joined, _) = next_json(&mut outcomes).await;
    assert_eq!(subject, format!("gameye.session.players.joined.{sid}"), "{joined}");
    assert_eq!(joined["joined"], json!(["a"]));
}

#[tokio::test]
async fn nats_seats_a_join_while_redis_is_unavailable_is_redelivered_not_lost() {
    let seats =
        SeatStack::start(&[("BRIDGE_NATS__NAK_DELAY", "200ms"), ("BRIDGE_NATS__MAX_DELIVER", "200")]).await;
    let sid = seats.place("m-paused", &["p0"], 4).await;
    let mut outcomes = seats.subscribe("gameye.session.players.>").await;

    // Redis answers nothing for 3 s: every store call times out (after 1 s) while it lasts.
    let client = ::redis::Client::open(seats.stack.redis.url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let _: () =
        ::redis::cmd("CLIENT").arg("PAUSE").arg(3000).arg("ALL").query_async(&mut redis).await.unwrap();
    seats.publish_json(JOIN, &json!({"session_id": sid, "players": ["x1"]})).await;
    let nak = "gameye_bridge_nats_messages_total{kind=\"join\",result=\"nak\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&seats.metrics().await, nak) < 1.0 {
        assert!(Instant::now() < deadline, "the join was not NAKed:\n{}", seats.stack.bridge.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!an_outcome_within(&mut outcomes, Duration::from_millis(10)).await, "reported while failing");

    // Once Redis answers again, a redelivery applies it: the player joined once, and it is reported.
    let view =
        seats.wait_session(&sid, "the redelivered join applied", |v| v["players"] == json!(["x1"])).await;
    assert_eq!(view["open_seats"], 2);
    let (subject, joined, _) = next_json(&mut outcomes).await;
    assert_eq!(subject, format!("gameye.session.players.joined.{sid}"), "{joined}");
    assert_eq!(joined["players"], json!(["x1"]));
    let info = seats.seats_consumer_settled().await;
    assert!(info.delivered.consumer_sequence >= 2, "redelivered: {info:?}");
}

/// Scenario: a join is applied but its outcome cannot be published (NAK); the matchmaker then
/// sends a leave, which is applied; the join comes back. Per player the latest stream sequence
/// wins, so the player stays out and the late join is reported as stale. Without a newer change,
/// the redelivery reports the join as applied before.
#[tokio::test]
async fn nats_seats_a_join_redelivered_after_a_newer_leave_does_not_bring_the_player_back() {
    let seats =
        SeatStack::start(&[("BRIDGE_NATS__NAK_DELAY", "200ms"), ("BRIDGE_NATS__MAX_DELIVER", "200")]).await;
    let sid = seats.place("m-order", &["p0"], 4).await;
    seats.stop_capturing("gameye.session.players.joined.>").await;

    seats.publish_json(JOIN, &json!({"session_id": sid, "players": ["x1"]})).await;
    seats.wait_session(&sid, "the join applied", |v| v["players"] == json!(["x1"])).await;
    seats.wait_metric("gameye_bridge_nats_messages_total{kind=\"join\",result=\"nak\"}", 1.0).await;

    // The matchmaker's last word on x1.
    seats.publish_json(LEAVE, &json!({"session_id": sid, "players": ["x1"]})).await;
    let left = seats.stored(&format!("gameye.session.players.left.{sid}")).await;
    assert_eq!(left["left"], json!(["x1"]), "{left}");
    // The join's redeliveries end once it is found stale: everything acknowledged.
    seats.seats_consumer_settled().await;
    let (_, view) = seats.session(&sid).await;
    assert_eq!(view["players"], json!([]), "the older join brought x1 back: {view}");
    assert_eq!(view["open_seats"], 3);
    let stale = seats.stored(&format!("gameye.session.players.rejected.{sid}")).await;
    assert_eq!(stale["action"], "join", "{stale}");
    assert_eq!(stale["players"], json!(["x1"]), "{stale}");
    assert_eq!(stale["error"]["code"], "STALE", "{stale}");
    assert_eq!(stale["error"]["retryable"], false, "{stale}");
    seats.wait_metric("gameye_bridge_nats_messages_total{kind=\"join\",result=\"stale\"}", 1.0).await;
    let text = seats.metrics().await;
    assert_eq!(metric(&text, "gameye_bridge_nats_messages_total{kind=\"join\",result=\"stale\"}"), 1.0);
    assert_eq!(metric(&text, "gameye_bridge_nats_messages_total{kind=\"join\",result=\"joined\"}"), 0.0);

    // x2's join is applied, its outcome lost; once outcomes get through again, the redelivery
    // reports it as applied before (not joined twice, not refused).
    seats.publish_json(JOIN, &json!({"session_id": sid, "players": ["x2"]})).await;
    seats.wait_session(&sid, "x2's join applied", |v| v["players"] == json!(["x2"])).await;
    seats.wait_metric("gameye_bridge_nats_messages_total{kind=\"join\",result=\"nak\"}", 2.0).await;
    seats.start_capturing("gameye.session.players.joined.>").await;
    let joined = seats.stored(&format!("gameye.session.players.joined.{sid}")).await;
    assert_eq!(joined["already_applied"], json!(["x2"]), "{joined}");
    assert_eq!(joined["joined"], json!([]), "{joined}");
    assert_eq!(joined["players"], json!(["x2"]), "{joined}");
    assert!(joined.get("stale").is_none(), "{joined}");
    seats.seats_consumer_settled().await;
}

/// Scenario: a session is full; the matchmaker sends a leave, then a join for a newcomer. Another
/// instance holds the leave (taken, not yet acknowledged) when this one handles the join. In stream
/// order the leave comes first and the join fits, so the join is retried rather than refused, and
/// applies once the leave has been.
#[tokio::test]
async fn nats_seats_a_full_join_waits_for_an_older_leave_still_in_flight() {
    let mut seats =
        SeatStack::start(&[("BRIDGE_NATS__NAK_DELAY", "200ms"), ("BRIDGE_NATS__MAX_DELIVER", "200")]).await;
    let sid = seats.place("m-wait", &["p0", "p1"], 2).await;
    seats.publish_json(JOIN, &json!({"session_id": sid, "players": ["p0", "p1"]})).await;
    seats
        .wait_session(&sid, "the session full", |v| {
            v["open_seats"] == 0 && v["players"] == json!(["p0", "p1"])
        })
        .await;
    seats.seats_consumer_settled().await;

    // No bridge runs while the other instance takes p1's leave; then the join follows it.
    seats.stop_bridge().await;
    seats.publish_json(LEAVE, &json!({"session_id": sid, "players": ["p1"]})).await;
    let leave = seats.take_seat_change().await;
    assert_eq!(leave.subject.as_str(), LEAVE);
    let mut outcomes = seats.subscribe("gameye.session.players.>").await;
    seats.publish_json(JOIN, &json!({"session_id": sid, "players": ["x1"]})).await;
    seats.start_bridge_again().await;

    // Full for now, but the older leave is unacknowledged: retried, nothing reported.
    if let Some((subject, body)) = outcome_within(&mut outcomes, Duration::from_secs(1)).await {
        panic!("the join was settled before the older leave: {subject} {body}");
    }
    let nak = "gameye_bridge_nats_messages_total{kind=\"join\",result=\"nak\"}";
    seats.wait_metric(nak, 2.0).await;
    let (_, view) = seats.session(&sid).await;
    assert_eq!(view["players"], json!(["p0", "p1"]), "{view}");

    // The other instance gives the leave up; this one applies it, then the join fits. (Their
    // outcomes may be published in either order: each is published after its change applied.)
    leave.ack_with(AckKind::Nak(None)).await.unwrap();
    let mut outcome = BTreeMap::new();
    for _ in 0..2 {
        let (subject, body, _) = next_json(&mut outcomes).await;
        outcome.insert(subject, body);
    }
    let of = |kind: &str| {
        outcome
            .get(&format!("gameye.session.players.{kind}.{sid}"))
            .unwrap_or_else(|| panic!("no {kind} outcome: {outcome:?}"))
    };
    let (left, joined) = (of("left"), of("joined"));
    assert_eq!(left["left"], json!(["p1"]), "{left}");
    assert_eq!(joined["joined"], json!(["x1"]), "{joined}");
    assert_eq!(strings(&joined["players"]), set(&["p0", "x1"]), "{joined}");
    assert_eq!(joined["open_seats"], 0, "{joined}");
    seats.seats_consumer_settled().await;
    let (_, view) = seats.session(&sid).await;
    assert_eq!(strings(&view["players"]), set(&["p0", "x1"]), "{view}");
    assert!(!an_outcome_within(&mut outcomes, Duration::from_millis(300)).await, "more outcomes");
    let text = seats.metrics().await;
    assert_eq!(metric(&text, "gameye_bridge_nats_messages_total{kind=\"join\",result=\"rejected\"}"), 0.0);
}

/// A join that does not fit with every older leave handled is refused at once (one delivery, then
/// TERM), even when messages of other subjects lie between them in the shared stream: the seat
/// consumer's ack floor stays below those until a later join or leave is acknowledged, so the
/// floor alone would hold the join back.
#[tokio::test]
async fn nats_seats_a_join_that_does_not_fit_after_every_older_leave_is_refused_at_once() {
    let seats = SeatStack::start(&[("BRIDGE_NATS__NAK_DELAY", "200ms")]).await;
    // Capacity 1, p0 holds a reservation: full.
    let sid = seats.place("m-full-now", &["p0"], 1).await;
    let mut outcomes = seats.subscribe("gameye.session.players.>").await;

    // An older leave, handled and acknowledged (nobody to remove), then a match between.
    seats.publish_json(LEAVE, &json!({"session_id": sid, "players": ["nobody"]})).await;
    let (subject, left, _) = next_json(&mut outcomes).await;
    assert_eq!(subject, format!("gameye.session.players.left.{sid}"), "{left}");
    seats.seats_consumer_settled().await;
    let players = json!([{"id": "q0", "latencies": {"eu-west-1": 10}}]);
    seats.publish_json(MATCH_FOUND, &json!({"match_id": "m-between", "players": players})).await;

    seats.publish_json(JOIN, &json!({"session_id": sid, "players": ["x1"]})).await;
    let (subject, rejected, message) = next_json(&mut outcomes).await;
    assert_eq!(subject, format!("gameye.session.players.rejected.{sid}"), "{rejected}");
    assert_eq!(header(&message, "Gameye-Status"), "rejected");
    assert_eq!(rejected["error"]["code"], "SESSION_FULL", "{rejected}");
    assert_eq!(rejected["error"]["retryable"], false, "{rejected}");
    let info = seats.seats_consumer_settled().await;
    assert_eq!(info.num_redelivered, 0, "{info:?}");
    seats.wait_metric("gameye_bridge_nats_messages_total{kind=\"join\",result=\"rejected\"}", 1.0).await;
    let text = seats.metrics().await;
    assert_eq!(metric(&text, "gameye_bridge_nats_messages_total{kind=\"join\",result=\"nak\"}"), 0.0);
    let (_, view) = seats.session(&sid).await;
    assert_eq!(view["players"], json!([]), "{view}");
}

/// A change applied whose outcome could not be published on its last delivery is dead-lettered
/// as applied, so nobody mistakes it for a failure.
#[tokio::test]
async fn nats_seats_a_dead_letter_says_the_change_was_applied_when_only_its_outcome_failed() {
    let seats = SeatStack::start(&[("BRIDGE_NATS__MAX_DELIVER", "1")]).await;
    let sid = seats.place("m-dead", &["p0"], 4).await;
    seats.stop_capturing("gameye.session.players.joined.>").await;

    seats.publish_json(JOIN, &json!({"session_id": sid, "players": ["x1"]})).await;
    let dead = seats.stored("gameye.session.players.dead").await;
    assert_eq!(dead["applied"], true, "{dead}");
    assert_eq!(dead["session_id"], sid, "{dead}");
    assert_eq!(dead["action"], "join", "{dead}");
    assert_eq!(dead["deliveries"], 1, "{dead}");
    assert_eq!(dead["error"]["code"], "UPSTREAM_UNAVAILABLE", "{dead}");
    let (_, view) = seats.session(&sid).await;
    assert_eq!(view["players"], json!(["x1"]));
    seats.seats_consumer_settled().await;
}

#[tokio::test]
async fn nats_seats_backfill_reserves_answers_no_seats_and_places_when_asked() {
    let seats = SeatStack::start(&[]).await;
    let sid = seats.place("m-open", &["p0"], 4).await;
    let before = seats.stack.emulator_sessions().await.len();
    let player = |id: &str, ms: u32| json!({"id": id, "latencies": {"eu-west-1": ms}});

    // Seats reserved: the HTTP door's 200 body, visible in the session.
    let (status, answer) =
        seats.backfill(&json!({"image": "demo-game", "players": [player("q1", 20)]})).await;
    assert_eq!(status, "reserved", "{answer}");
    assert_eq!(answer["session_id"], sid);
    assert_eq!(answer["match_id"], "m-open");
    assert_eq!(answer["players"], json!(["q1"]));
    assert_eq!(answer["latency_ms"], json!({"q1": 20}));
    let reservation_id = answer["reservation_id"].as_str().unwrap().to_owned();
    assert!(answer["expires_at"].is_string(), "{answer}");
    let view = seats.wait_session(&sid, "q1's reservation", |v| reserved_players(v).contains("q1")).await;
    assert!(
        view["reservations"].as_array().unwrap().iter().any(|r| r["reservation_id"] == reservation_id),
        "{view}"
    );
    let http: Value = seats
        .stack
        .http
        .post(seats.stack.url("/v1/backfill"))
        .bearer_auth(API_TOKEN)
        .json(&json!({"image": "demo-game", "players": [player("q2", 20)]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<BTreeSet<_>>();
    assert_eq!(keys(&answer), keys(&http), "the same JSON as POST /v1/backfill: {answer} {http}");

    // A reserved player joins over NATS and uses the reservation.
    seats.publish_json(JOIN, &json!({"session_id": sid, "players": ["q1"]})).await;
    seats
        .wait_session(&sid, "q1 joined", |v| {
            strings(&v["players"]).contains("q1") && !reserved_players(v).contains("q1")
        })
        .await;

    // Nothing fits: NO_SEATS, nothing placed.
    let (status, refused) =
        seats.backfill(&json!({"image": "other-game", "players": [player("q3", 10)]})).await;
    assert_eq!(status, "no_seats", "{refused}");
    assert_eq!(refused["error"]["code"], "NO_SEATS", "{refused}");
    assert_eq!(refused["error"]["retryable"], false);
    let (status, refused) =
        seats.backfill(&json!({"image": "demo-game", "players": [player("q3", 70)]})).await;
    assert_eq!(status, "no_seats", "over the latency cap: {refused}");
    assert_eq!(seats.stack.emulator_sessions().await.len(), before);

    // create_if_none: a new session is placed, its players holding the seats.
    let mut assigned = seats.subscribe("gameye.match.assigned.>").await;
    let (status, placed) = seats
        .backfill(&json!({"image": "demo-game", "create_if_none": true, "labels": {"mode": "new"},
                          "players": [player("q4", 70)]}))
        .await;
    assert_eq!(status, "placed", "{placed}");
    let match_id = placed["match_id"].as_str().unwrap().to_owned();
    assert!(match_id.starts_with("backfill-"), "{placed}");
    let new_sid = placed["session_id"].as_str().unwrap().to_owned();
    assert_eq!(new_sid, bridge::session_id("nats", &match_id).to_string());
    assert_eq!(seats.stack.emulator_sessions().await.len(), before + 1);
    let view = seats
        .wait_session(&new_sid, "the new session's seats", |v| reserved_players(v) == set(&["q4"]))
        .await;
    assert_eq!(view["labels"], json!({"mode": "new"}));
    let (subject, _, _) = next_json(&mut assigned).await;
    assert_eq!(subject, format!("gameye.match.assigned.{match_id}"));

    // Bad bodies: INVALID_REQUEST naming the field, nothing reserved or placed.
    for (body, field) in [
        (json!({"players": [player("q5", 10)]}), "image"),
        (json!({"image": "demo-game", "players": []}), "players"),
        (
            json!({"image": "demo-game", "players": [{"id": "q5", "latencies": {"eu-west-1": -3}}]}),
            "players[0].latencies",
        ),
        (
            json!({"image": "demo-game", "players": [player("q5", 10)], "create_if_none": "yes"}),
            "create_if_none",
        ),
    ] {
        let (status, refused) = seats.backfill(&body).await;
        assert_eq!(status, "invalid", "{body} → {refused}");
        assert_eq!(refused["error"]["code"], "INVALID_REQUEST", "{refused}");
        assert!(refused["error"]["field"].as_str().unwrap().starts_with(field), "{field}: {refused}");
        assert!(refused["error"]["message"].as_str().unwrap().contains(field), "{field}: {refused}");
    }
    let reply = seats.client.request(BACKFILL, "{not json".into()).await.unwrap();
    assert_eq!(header(&reply, "Gameye-Status"), "invalid");
    assert_eq!(seats.stack.emulator_sessions().await.len(), before + 1);
    let (_, view) = seats.session(&sid).await;
    assert!(!reserved_players(&view).contains("q5"), "{view}");

    // Counted right after each reply: wait for the last counts, then check every count is exact.
    for (result, count) in [("reserved", 1.0), ("no_seats", 2.0), ("placed", 1.0), ("invalid", 5.0)] {
        let name = format!("gameye_bridge_nats_messages_total{{kind=\"backfill\",result=\"{result}\"}}");
        seats.wait_metric(&name, count).await;
    }
    let text = seats.metrics().await;
    assert_eq!(
        metric(&text, "gameye_bridge_nats_messages_total{kind=\"backfill\",result=\"reserved\"}"),
        1.0
    );
    assert_eq!(
        metric(&text, "gameye_bridge_nats_messages_total{kind=\"backfill\",result=\"no_seats\"}"),
        2.0
    );
    assert_eq!(metric(&text, "gameye_bridge_nats_messages_total{kind=\"backfill\",result=\"placed\"}"), 1.0);
    assert_eq!(metric(&text, "gameye_bridge_nats_messages_total{kind=\"backfill\",result=\"invalid\"}"), 5.0);
}

#[tokio::test]
async fn nats_seats_streams_of_an_older_version_gain_the_seat_subjects() {
    // Streams as the previous version created them: matches only.
    let nats = NatsServer::start();
    let client = async_nats::ConnectOptions::new().connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);
    js.create_stream(jetstream::stream::Config {
        name: STREAM.to_owned(),
        subjects: vec!["gameye.match.found".to_owned()],
        retention: jetstream::stream::RetentionPolicy::WorkQueue,
        max_messages: 12_345,
        ..Default::default()
    })
    .await
    .unwrap();
    js.create_stream(jetstream::stream::Config {
        name: RESULTS.to_owned(),
        subjects: ["gameye.match.assigned.>", "gameye.match.failed.>", "gameye.match.dead"]
            .map(str::to_owned)
            .to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();

    let seats = SeatStack::start_on(nats, &[]).await;
    let mut stream = seats.jetstream.get_stream(STREAM).await.unwrap();
    let config = stream.info().await.unwrap().config.clone();
    assert_eq!(
        config.subjects.iter().cloned().collect::<BTreeSet<_>>(),
        set(&["gameye.match.found", JOIN, LEAVE]),
        "{config:?}"
    );
    assert_eq!(config.max_messages, 12_345, "the rest of the operator's configuration is kept");
    let mut results = seats.jetstream.get_stream(RESULTS).await.unwrap();
    let subjects: BTreeSet<String> = results.info().await.unwrap().config.subjects.iter().cloned().collect();
    assert!(subjects.contains("gameye.session.players.rejected.>"), "{subjects:?}");
    assert!(subjects.contains("gameye.match.dead"), "{subjects:?}");

    // And joins work through it.
    let sid = seats.place("m-old", &["p0"], 3).await;
    seats.publish_json(JOIN, &json!({"session_id": sid, "players": ["p0"]})).await;
    seats.wait_session(&sid, "p0 joined", |v| v["players"] == json!(["p0"])).await;
}

//! Ended sessions announced end to end: the signed session-ended webhook (`[seats.ended_webhook]`)
//! to a real HTTP receiver in this process, and NATS, whether the reconciler found the session gone
//! at Gameye or `DELETE /v1/sessions/{id}` stopped it. One event per session, however it ended; an
//! end that was not announced (the receiver down, the ending instance gone) is announced from the
//! session-end outbox in Redis.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use time::OffsetDateTime;

use crate::harness::{BridgeProcess, NatsServer, RedisServer};
use crate::reconciler::{COMPLETE, create_at_gameye_for, metric, wait_metric, wait_session_status};
use crate::stack::{API_TOKEN, Stack, start_bridge, world};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const DELIVERED: &str = "gameye_bridge_session_ended_webhooks_total{result=\"delivered\"}";
const RETRIED: &str = "gameye_bridge_session_ended_webhooks_total{result=\"retry\"}";

#[derive(Clone)]
struct Received {
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

/// A webhook receiver (on port 0 unless told): answers the queued statuses in turn, then 200; records every request.
#[derive(Clone)]
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(first_statuses: &[u16]) -> Self {
        Self::start_on(0, first_statuses).await
    }

    /// [`Receiver::start`] on `port`.
    async fn start_on(port: u16, first_statuses: &[u16]) -> Self {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let statuses = Arc::new(Mutex::new(first_statuses.iter().copied().collect::<VecDeque<u16>>()));
        let seen = received.clone();
        let app = axum::Router::new().route(
            "/hooks/ended",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (seen, statuses) = (seen.clone(), statuses.clone());
                async move {
                    seen.lock().unwrap().push(Received { headers, body: body.to_vec() });
                    let status = statuses.lock().unwrap().pop_front().unwrap_or(200);
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let url = format!("http://{}/hooks/ended", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, received }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    async fn wait_for(&self, count: usize, within: Duration, bridge: &BridgeProcess) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            assert!(Instant::now() < deadline, "{} of {count} webhooks:\n{}", received.len(), bridge.logs());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("BRIDGE_SEATS__ENDED_WEBHOOK__URL".into(), format!("\"{}\"", self.url)),
            ("BRIDGE_SEATS__ENDED_WEBHOOK__SECRET".into(), format!("\"{SECRET}\"")),
        ]
    }
}

/// Checks the Standard Webhooks signature with an HMAC computed here (not the bridge's code) and
/// answers the webhook-id and the body.
fn verified(received: &Received) -> (String, Value) {
    let header =
        |name: &str| received.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let (id, timestamp, signature) =
        (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
    assert!(id.starts_with("msg_"), "webhook-id {id:?}");
    let sent: i64 = timestamp.parse().expect("webhook-timestamp is unix seconds");
    assert!((OffsetDateTime::now_utc().unix_timestamp() - sent).abs() < 60, "timestamp {sent}");
    let key = base64::engine::general_purpose::STANDARD.decode(SECRET.trim_start_matches("whsec_")).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&received.body);
    let expected =
        format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
    assert!(
        signature.split(' ').any(|s| s == expected),
        "webhook-signature {signature:?} is not {expected:?}"
    );
    assert_eq!(received.headers.get("content-type").unwrap(), "application/json");
    (id, serde_json::from_slice(&received.body).unwrap())
}

/// A bridge reconciling every 300 ms, posting ended sessions to `receiver`, plus `extra` environment.
async fn stack_posting_to(receiver: &Receiver, extra: &[(&str, &str)]) -> Stack {
    let emulator = gameye_emulator::start(world(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let redis = RedisServer::start();
    let mut env = receiver.env();
    env.push(("BRIDGE_RECONCILER__INTERVAL".into(), "300ms".into()));
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let borrowed: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let bridge = start_bridge(&emulator, &redis, &borrowed).await;
    Stack { emulator, redis, bridge, http: reqwest::Client::new() }
}

/// Waits for three more complete reconciler scans (time enough for a second end), then for the
/// session-end outbox to hold nothing (an entry left behind would be announced again a window
/// later, after the test looked).
async fn three_more_scans(stack: &Stack) {
    let now = metric(&stack.bridge, COMPLETE).await;
    wait_metric(&stack.bridge, COMPLETE, now + 3.0, Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&stack.bridge, "gameye_bridge_session_ends_owed").await != 0.0 {
        assert!(Instant::now() < deadline, "session ends still owed:\n{}", stack.bridge.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A session living `ttl_s` seconds at Gameye: adopted while it runs, ended once its TTL ran out.
async fn session_expiring_after(stack: &Stack, ttl_s: u64, match_id: &str) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    create_at_gameye_for(stack, &id, match_id, Some(ttl_s)).await;
    wait_session_status(stack, &id, 200, Duration::from_secs(3)).await;
    wait_session_status(stack, &id, 404, Duration::from_secs(15)).await;
    id
}

// Multi-threaded: the receiver runs in this process and must answer while the test polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_gameye_ttl_expired_is_posted_once_signed() {
    let receiver = Receiver::start(&[]).await;
    let stack = stack_posting_to(&receiver, &[]).await;

    let id = session_expiring_after(&stack, 3, "m-ttl-hook").await;
    let received = receiver.wait_for(1, Duration::from_secs(10), &stack.bridge).await;
    let (webhook_id, body) = verified(&received[0]);
    assert_eq!(body["type"], "session.ended", "{body}");
    let data = &body["data"];
    assert_eq!(data["session_id"], id.as_str(), "{body}");
    assert_eq!(data["match_id"], "m-ttl-hook", "{body}");
    assert_eq!(data["reason"], "gone", "{body}");
    assert_eq!((data["image"].as_str(), data["location"].as_str()), (Some("demo-game"), Some("eu-west-1")));
    assert_eq!(data["labels"], json!({"mode": "solo"}), "{body}");
    assert_eq!(data["players"], json!([]), "an adopted session has no players");
    assert_eq!(body["timestamp"], data["ended_at"]);
    assert_eq!(
        webhook_id,
        adapters::session_events::session_ended_id(id.parse().unwrap()),
        "one stable id per session"
    );

    three_more_scans(&stack).await;
    assert_eq!(receiver.received().len(), 1, "posted more than once");
    assert_eq!(metric(&stack.bridge, DELIVERED).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_with_503_first_still_gets_the_event_with_the_same_id() {
    let receiver = Receiver::start(&[503]).await;
    let stack = stack_posting_to(&receiver, &[]).await;

    let id = session_expiring_after(&stack, 3, "m-ttl-retry").await;
    let received = receiver.wait_for(2, Duration::from_secs(10), &stack.bridge).await;
    let (first_id, first) = verified(&received[0]);
    let (second_id, second) = verified(&received[1]);
    assert_eq!(first_id, second_id, "a retry carries the same webhook-id");
    assert_eq!(first, second, "and the same event");
    assert_eq!(second["data"]["session_id"], id.as_str());
    wait_metric(&stack.bridge, DELIVERED, 1.0, Duration::from_secs(5)).await;
    assert_eq!(metric(&stack.bridge, RETRIED).await, 1.0);

    three_more_scans(&stack).await;
    assert_eq!(receiver.received().len(), 2, "nothing after the successful delivery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_refusing_with_400_is_not_retried_and_the_bridge_says_so() {
    let receiver = Receiver::start(&[400]).await;
    let stack = stack_posting_to(&receiver, &[]).await;

    session_expiring_after(&stack, 3, "m-ttl-refused").await;
    receiver.wait_for(1, Duration::from_secs(10), &stack.bridge).await;
    let failed = "gameye_bridge_session_ended_webhooks_total{result=\"failed\"}";
    wait_metric(&stack.bridge, failed, 1.0, Duration::from_secs(5)).await;
    three_more_scans(&stack).await;
    assert_eq!(receiver.received().len(), 1, "a 400 is not retried");
    let logs = stack.bridge.logs();
    assert!(logs.contains("session end announcement given up: refused"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_session_announces_it_once_on_the_webhook_and_nats() {
    let receiver = Receiver::start(&[]).await;
    let nats = NatsServer::start();
    let nats_url = nats.url();
    let stack = stack_posting_to(&receiver, &[("BRIDGE_NATS__URL", nats_url.as_str())]).await;
    let client = async_nats::ConnectOptions::new().connect(nats_url.as_str()).await.unwrap();
    let mut ended = client.subscribe("gameye.session.ended.>").await.unwrap();
    client.flush().await.unwrap();

    let (status, assignment) = stack
        .post_match(&json!({"match_id": "m-deleted", "players": [{"id": "p0"}, {"id": "p1"}], "labels": {"mode": "duo"}}))
        .await;
    assert_eq!(status, 200, "{assignment}");
    let id = assignment["session_id"].as_str().unwrap().to_owned();
    let response = stack
        .http
        .post(stack.url(&format!("/v1/sessions/{id}/players")))
        .bearer_auth(API_TOKEN)
        .json(&json!({"players": ["p0"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let delete = || stack.http.delete(stack.url(&format!("/v1/sessions/{id}"))).bearer_auth(API_TOKEN).send();
    let response = delete().await.unwrap();
    assert_eq!(response.status(), 200);

    let received = receiver.wait_for(1, Duration::from_secs(10), &stack.bridge).await;
    let (_, body) = verified(&received[0]);
    let data = &body["data"];
    assert_eq!(
        (data["session_id"].as_str(), data["match_id"].as_str()),
        (Some(id.as_str()), Some("m-deleted"))
    );
    assert_eq!(data["reason"], "stopped", "{body}");
    assert_eq!(data["players"], json!(["p0"]), "{body}");
    assert_eq!(data["reserved_players"], json!(["p1"]), "{body}");
    assert_eq!(data["labels"], json!({"mode": "duo"}), "{body}");

    let message = tokio::time::timeout(Duration::from_secs(5), ended.next()).await.unwrap().unwrap();
    assert_eq!(message.subject.as_str(), format!("gameye.session.ended.{id}"));
    let announced: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(
        (announced["session_id"].as_str(), announced["reason"].as_str()),
        (Some(id.as_str()), Some("stopped"))
    );

    // A second DELETE finds nothing to end; the reconciler leaves the ended session alone.
    assert_eq!(delete().await.unwrap().status(), 404);
    three_more_scans(&stack).await;
    assert_eq!(receiver.received().len(), 1, "posted more than once");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), ended.next()).await.is_err(),
        "announced twice on NATS"
    );
    drop(nats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_owed_by_an_instance_that_stopped_is_announced_by_another() {
    use adapters::store::{RedisStore, SeatStore};
    use bridge::ports::EndOwing;
    use bridge::seats::EndReason;

    let receiver = Receiver::start(&[]).await;
    let stack = stack_posting_to(&receiver, &[("BRIDGE_RECONCILER__ENABLED", "false")]).await;
    // Another instance ended a session (owed, due at once) and stopped before announcing it.
    let store = RedisStore::connect(&stack.redis.url(), "gameye-bridge").await.unwrap();
    let now = OffsetDateTime::now_utc();
    let id = uuid::Uuid::new_v4();
    let mut new = running_session(id, &["p0", "p1"], now);
    new.info.labels = [("mode".to_owned(), "trio".to_owned())].into();
    store.create_session(&new, Duration::from_secs(600)).await.unwrap().unwrap();
    store.join_players(id, &["p0".to_owned()], now).await.unwrap().unwrap();
    let ending =
        EndOwing { window: Duration::ZERO, keep_for: Duration::from_secs(600) }.ending(EndReason::Gone);
    store.end_session(id, ending, now).await.unwrap().unwrap();

    let received = receiver.wait_for(1, Duration::from_secs(10), &stack.bridge).await;
    let (_, body) = verified(&received[0]);
    let data = &body["data"];
    assert_eq!(data["session_id"], id.to_string(), "{body}");
    assert_eq!(data["reason"], "gone", "{body}");
    assert_eq!(data["players"], json!(["p0"]), "{body}");
    assert_eq!(data["reserved_players"], json!(["p1"]), "{body}");
    assert_eq!(data["labels"], json!({"mode": "trio"}), "{body}");
    let ended_at = OffsetDateTime::parse(
        data["ended_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(
        ended_at.unix_timestamp_nanos() / 1_000_000,
        now.unix_timestamp_nanos() / 1_000_000,
        "when it ended, not when announced"
    );
    let announced = "gameye_bridge_session_end_announcements_total{result=\"delivered\"}";
    wait_metric(&stack.bridge, announced, 1.0, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.received().len(), 1, "announced once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_the_receiver_missed_while_down_is_delivered_when_it_is_back() {
    // Refuses connections at first: the port is taken by nothing until the receiver starts there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let down = Receiver { url: format!("http://127.0.0.1:{port}/hooks/ended"), received: Arc::default() };
    let stack = stack_posting_to(&down, &[]).await;

    let (status, assignment) =
        stack.post_match(&json!({"match_id": "m-missed", "players": [{"id": "p0"}]})).await;
    assert_eq!(status, 200, "{assignment}");
    let id = assignment["session_id"].as_str().unwrap().to_owned();
    let response = stack
        .http
        .delete(stack.url(&format!("/v1/sessions/{id}")))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let retried = RETRIED;
    wait_metric(&stack.bridge, retried, 2.0, Duration::from_secs(10)).await;

    let receiver = Receiver::start_on(port, &[]).await;
    let received = receiver.wait_for(1, Duration::from_secs(15), &stack.bridge).await;
    let (_, body) = verified(&received[0]);
    assert_eq!(body["data"]["session_id"], id.as_str(), "{body}");
    assert_eq!(body["data"]["reason"], "stopped", "{body}");
    assert_eq!(body["data"]["reserved_players"], json!(["p0"]), "{body}");
    wait_metric(&stack.bridge, DELIVERED, 1.0, Duration::from_secs(5)).await;
}

/// A sink that records what it hears.
#[derive(Default)]
struct Recording {
    heard: Mutex<Vec<uuid::Uuid>>,
}

impl bridge::ports::SessionEvents for Recording {
    fn name(&self) -> &'static str {
        "recording"
    }

    fn session_ended<'a>(
        &'a self,
        session: &'a bridge::seats::SessionSeats,
        _end: &'a bridge::seats::SessionEnd,
    ) -> bridge::placement::BoxFuture<'a, Result<(), bridge::ports::DeliveryError>> {
        Box::pin(async move {
            self.heard.lock().unwrap().push(session.session_id);
            Ok(())
        })
    }
}

/// The outbox against a real Redis, where an entry can outlive or precede its end: the record
/// decides whether anything is announced.
#[tokio::test]
async fn the_outbox_announces_only_what_the_ended_record_still_owes() {
    use adapters::session_events::{
        EndAnnounced, EndAnnouncementMetrics, EndAnnouncer, EndAnnouncerSettings,
    };
    use adapters::store::{EndAnnouncementStore, RedisStore, SeatError, SeatStore, StateStore};
    use bridge::ports::{EndOwing, SessionEvents};
    use bridge::seats::EndReason;

    let redis = RedisServer::start();
    let store = StateStore::Redis(RedisStore::connect(&redis.url(), "it-ends").await.unwrap());
    let sink = Arc::new(Recording::default());
    let settings =
        EndAnnouncerSettings { deadline: Duration::from_secs(1), give_up_after: Duration::from_secs(3600) };
    let sinks: Vec<Arc<dyn SessionEvents>> = vec![sink.clone()];
    let announcer = EndAnnouncer::new(store.clone(), sinks, settings, EndAnnouncementMetrics::default());
    let owed = EndOwing { window: Duration::ZERO, keep_for: Duration::from_secs(600) };
    let now = OffsetDateTime::now_utc();
    let create = |n: u128| {
        let new = running_session(uuid::Uuid::from_u128(n), &[], now);
        let store = store.clone();
        async move { store.create_session(&new, Duration::from_secs(600)).await.unwrap().unwrap() }
    };
    let id = uuid::Uuid::from_u128;
    let connection =
        redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    // An entry in the outbox's index alone, as a cut-short end leaves it.
    let index_only = |session_id: uuid::Uuid| {
        let mut connection = connection.clone();
        async move {
            let _: () = redis::cmd("ZADD")
                .arg("it-ends:{seats}:end-announce")
                .arg(0)
                .arg(session_id.to_string())
                .query_async(&mut connection)
                .await
                .unwrap();
        }
    };

    // Announced, then ended again (refused): the entry that second end wrote announces nothing.
    create(1).await;
    store.end_session(id(1), owed.ending(EndReason::Stopped), now).await.unwrap().unwrap();
    assert_eq!(announcer.announce(id(1), now).await, EndAnnounced::Delivered);
    let again = store.end_session(id(1), owed.ending(EndReason::Gone), now).await.unwrap();
    assert_eq!(again.unwrap_err(), SeatError::Ended);
    assert_eq!(store.claim_end_announcements(now, 10, Duration::from_secs(5)).await.unwrap(), [id(1)]);
    assert_eq!(announcer.announce(id(1), now).await, EndAnnounced::Dropped);

    // An entry whose end has not happened (it failed after the entry was written) waits for it.
    create(2).await;
    index_only(id(2)).await;
    assert_eq!(announcer.announce(id(2), now).await, EndAnnounced::Retry);
    assert_eq!(store.owed_end_announcements().await.unwrap(), 1, "still owed");
    store.end_session(id(2), owed.ending(EndReason::Gone), now).await.unwrap().unwrap();
    assert_eq!(announcer.announce(id(2), now).await, EndAnnounced::Delivered);

    // An entry whose record expired: given up.
    index_only(id(3)).await;
    assert_eq!(announcer.announce(id(3), now).await, EndAnnounced::GivenUp);

    assert_eq!(*sink.heard.lock().unwrap(), [id(1), id(2)], "each real end once");
    assert_eq!(store.owed_end_announcements().await.unwrap(), 0);
}

/// A sink that is down (fails, and may come back).
struct Down;

impl bridge::ports::SessionEvents for Down {
    fn name(&self) -> &'static str {
        "down"
    }

    fn session_ended<'a>(
        &'a self,
        _session: &'a bridge::seats::SessionSeats,
        _end: &'a bridge::seats::SessionEnd,
    ) -> bridge::placement::BoxFuture<'a, Result<(), bridge::ports::DeliveryError>> {
        Box::pin(async move {
            Err(bridge::ports::DeliveryError { sink: "down".into(), message: "503".into(), permanent: false })
        })
    }
}

/// Retries of an end grow 5 minutes apart, and the ended record is kept only a little beyond the
/// give-up age: the last retry is due at that age at the latest, so it still reads the record and
/// tries the sinks, rather than finding it expired.
#[tokio::test]
async fn the_last_retry_of_an_end_comes_before_its_record_expires() {
    use adapters::session_events::{
        EndAnnounced, EndAnnouncementMetrics, EndAnnouncer, EndAnnouncerSettings,
    };
    use adapters::store::{EndAnnouncementStore, RedisStore, SeatStore, StateStore};
    use bridge::ports::SessionEvents;
    use bridge::seats::EndReason;

    let redis = RedisServer::start();
    let store = StateStore::Redis(RedisStore::connect(&redis.url(), "it-ends").await.unwrap());
    let settings =
        EndAnnouncerSettings { deadline: Duration::from_secs(1), give_up_after: Duration::from_secs(3600) };
    let sinks: Vec<Arc<dyn SessionEvents>> = vec![Arc::new(Down)];
    let announcer = EndAnnouncer::new(store.clone(), sinks, settings, EndAnnouncementMetrics::default());
    let ended_at = OffsetDateTime::now_utc();
    let session_id = uuid::Uuid::from_u128(7);
    let new = running_session(session_id, &[], ended_at);
    store.create_session(&new, Duration::from_secs(600)).await.unwrap().unwrap();
    let owing = settings.owing();
    store.end_session(session_id, owing.ending(EndReason::Gone), ended_at).await.unwrap().unwrap();

    // 58 minutes on, still failing: a quarter of its age would be 5 more minutes, past the hour.
    let later = ended_at + Duration::from_secs(3480);
    assert_eq!(announcer.announce(session_id, later).await, EndAnnounced::Retry);
    let hold = Duration::from_secs(5);
    let due_at_the_hour = ended_at + Duration::from_secs(3600);
    assert!(
        store
            .claim_end_announcements(due_at_the_hour - Duration::from_secs(1), 10, hold)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.claim_end_announcements(due_at_the_hour, 10, hold).await.unwrap(), [session_id]);
    // That last try is the last: it gives up.
    assert_eq!(announcer.announce(session_id, due_at_the_hour).await, EndAnnounced::GivenUp);
}

/// A running demo-game session in eu-west-1 with `players` reserved, as a placement records it.
fn running_session(
    session_id: uuid::Uuid,
    players: &[&str],
    now: OffsetDateTime,
) -> bridge::seats::NewSession {
    bridge::seats::NewSession {
        session_id,
        capacity: 4,
        status: bridge::seats::SessionStatus::Running,
        info: bridge::seats::SessionInfo {
            image: "demo-game".into(),
            version: None,
            location: "eu-west-1".into(),
            labels: Default::default(),
            metadata: Default::default(),
        },
        players: players.iter().map(|p| (*p).to_owned()).collect(),
        joined: Vec::new(),
        reservation_ttl: Duration::from_secs(60),
        now,
    }
}

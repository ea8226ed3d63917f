//! The SNS (FlexMatch) door end to end: a real `gameye-bridge` with Redis and the emulator over
//! HTTP, verifying SNS signatures for real. Messages are signed here with the test-only key in
//! `adapters/src/sns/testdata/` (not AWS's), whose certificate the bridge finds in its pinned
//! directory under the name of an AWS-looking SigningCertURL, so nothing is fetched.
//! AWS's own genuine messages (`../shared/fixtures/sns`) are posted too: they must be refused.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, RsaKeyPair};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::stack::{API_TOKEN, Stack, start_bridge};

const TEST_KEY: &str = include_str!("../../adapters/src/sns/testdata/test-signer.key.pem");
const TEST_CERT: &str = include_str!("../../adapters/src/sns/testdata/test-signer.cert.pem");
const CERT_NAME: &str = "SimpleNotificationService-gameye-bridge-test.pem";
const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:flexmatch-events";
const CONFIGURATION: &str = "arn:aws:gamelift:us-east-1:123456789012:matchmakingconfiguration/ranked";
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn session_id(match_id: &str) -> String {
    bridge::session_id("sns", match_id).to_string()
}

// ---------------------------------------------------------------------------------------------
// Signing SNS messages with the test key

fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).unwrap()
}

fn now_text() -> String {
    OffsetDateTime::now_utc().format(&Rfc3339).unwrap()
}

/// Signs (SignatureVersion 2) by SNS's rule, independently of the bridge's code.
fn sign(mut m: Map<String, Value>) -> Vec<u8> {
    let s = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
    let keys: &[&str] = if s("Type").as_deref() == Some("Notification") {
        &["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    } else {
        &["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    };
    let mut text = String::new();
    for key in keys {
        if let Some(value) = s(key) {
            text.push_str(&format!("{key}\n{value}\n"));
        }
    }
    let key = RsaKeyPair::from_pkcs8(&pem_der(TEST_KEY)).unwrap();
    let mut sig = vec![0; key.public_modulus_len()];
    key.sign(&signature::RSA_PKCS1_SHA256, &SystemRandom::new(), text.as_bytes(), &mut sig).unwrap();
    m.insert("SignatureVersion".into(), json!("2"));
    m.insert("Signature".into(), json!(base64::engine::general_purpose::STANDARD.encode(sig)));
    m.entry("SigningCertURL").or_insert(json!(format!("https://sns.us-east-1.amazonaws.com/{CERT_NAME}")));
    serde_json::to_vec(&m).unwrap()
}

fn notification(message_id: &str, event: &Value) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("Type".into(), json!("Notification"));
    m.insert("MessageId".into(), json!(message_id));
    m.insert("TopicArn".into(), json!(TOPIC));
    m.insert("Message".into(), json!(event.to_string()));
    m.insert("Timestamp".into(), json!(now_text()));
    m.insert("UnsubscribeURL".into(), json!("https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe"));
    m
}

fn event(kind: &str, detail: Value) -> Value {
    let mut detail = detail;
    detail["type"] = json!(kind);
    json!({"version": "0", "id": format!("ev-{kind}"), "detail-type": "GameLift Matchmaking Event",
           "source": "aws.gamelift", "account": "123456789012", "time": now_text(), "region": "us-east-1",
           "resources": [CONFIGURATION], "detail": detail})
}

fn succeeded(match_id: &str, tickets: &[(&str, &[&str])]) -> Value {
    let tickets: Vec<Value> = tickets
        .iter()
        .map(|(id, players)| {
            let players: Vec<Value> = players
                .iter()
                .map(|p| json!({"playerId": p, "team": "blue", "playerSessionId": "ps"}))
                .collect();
            json!({"ticketId": id, "startTime": now_text(), "players": players})
        })
        .collect();
    event(
        "MatchmakingSucceeded",
        json!({"matchId": match_id, "tickets": tickets, "gameSessionInfo": {"players": []}}),
    )
}

// ---------------------------------------------------------------------------------------------
// The stack: bridge with the pinned test certificate, and a webhook receiver

struct Received {
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
    /// The status the receiver answered.
    answered: u16,
}

/// A small webhook receiver on port 0; answers what `status` holds at the time.
async fn webhook_receiver(status: Arc<AtomicU16>) -> (String, Arc<Mutex<Vec<Received>>>) {
    use axum::extract::State;
    let received = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route(
            "/hooks/gameye",
            axum::routing::post(
                move |State(r): State<Arc<Mutex<Vec<Received>>>>,
                      headers: axum::http::HeaderMap,
                      body: axum::body::Bytes| async move {
                    let answered = status.load(Ordering::SeqCst);
                    r.lock().unwrap().push(Received { headers, body: body.to_vec(), answered });
                    axum::http::StatusCode::from_u16(answered).unwrap()
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/gameye", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

/// A fake host counting every request it gets (it must get none).
async fn counting_host() -> (u16, Arc<Mutex<usize>>) {
    let hits = Arc::new(Mutex::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            *counter.lock().unwrap() += 1;
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, hits)
}

struct SnsStack {
    stack: Stack,
    webhook: Arc<Mutex<Vec<Received>>>,
    /// What the webhook receiver answers (200 unless a test changes it).
    webhook_status: Arc<AtomicU16>,
    pinned: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl SnsStack {
    async fn start(extra: &[(&str, &str)]) -> Self {
        let pinned = tempfile::tempdir().unwrap();
        std::fs::write(pinned.path().join(CERT_NAME), TEST_CERT).unwrap();
        let webhook_status = Arc::new(AtomicU16::new(200));
        let (webhook_url, webhook) = webhook_receiver(webhook_status.clone()).await;
        let mut env: Vec<(String, String)> = vec![
            ("BRIDGE_SNS__TOPICS".into(), format!("[\"{TOPIC}\"]")),
            ("BRIDGE_SNS__PINNED_CERT_DIR".into(), format!("\"{}\"", pinned.path().display())),
            ("BRIDGE_SNS__RESULTS_WEBHOOK__URL".into(), format!("\"{webhook_url}\"")),
            ("BRIDGE_SNS__RESULTS_WEBHOOK__SECRET".into(), format!("\"{WEBHOOK_SECRET}\"")),
        ];
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let borrowed: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let stack = Stack::start_with(&borrowed).await;
        Self { stack, webhook, webhook_status, pinned, env }
    }

    async fn post_sns(&self, body: &[u8]) -> (u16, Value, Duration) {
        let started = Instant::now();
        let response = self
            .stack
            .http
            .post(self.stack.url("/v1/webhooks/sns"))
            .header("content-type", "text/plain; charset=UTF-8")
            .header("x-amz-sns-message-type", "Notification")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let elapsed = started.elapsed();
        (status, response.json().await.unwrap_or(Value::Null), elapsed)
    }

    async fn wait_ticket(&self, ticket_id: &str, status: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (code, body) = self.stack.get(&format!("/v1/tickets/{ticket_id}")).await;
            if code == 200 && body["status"] == status {
                return body;
            }
            assert!(Instant::now() < deadline, "ticket {ticket_id} not {status}: {code} {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The payloads of the webhooks the receiver accepted (answered 200), signatures checked.
    fn delivered(&self) -> Vec<Value> {
        let received = self.webhook.lock().unwrap();
        received.iter().filter(|r| r.answered == 200).map(check_webhook_signature).collect()
    }

    async fn wait_delivered(&self, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(payload) = self.delivered().pop() {
                return payload;
            }
            assert!(Instant::now() < deadline, "no webhook accepted within {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn metrics(&self) -> String {
        self.stack.http.get(self.stack.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }

    async fn wait_webhooks(&self, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.webhook.lock().unwrap().len() < count {
            assert!(Instant::now() < deadline, "no webhook within {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Checks a Standard Webhooks signature independently of the bridge's code.
fn check_webhook_signature(received: &Received) -> Value {
    let header =
        |name: &str| received.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let id = header("webhook-id");
    let timestamp = header("webhook-timestamp");
    let signature = header("webhook-signature");
    assert!(id.starts_with("msg_"), "webhook-id {id:?}");
    let sent: i64 = timestamp.parse().expect("webhook-timestamp is unix seconds");
    assert!((OffsetDateTime::now_utc().unix_timestamp() - sent).abs() < 60, "timestamp {sent}");
    let key = base64::engine::general_purpose::STANDARD
        .decode(WEBHOOK_SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&received.body);
    let expected =
        format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
    assert!(
        signature.split(' ').any(|s| s == expected),
        "webhook-signature {signature:?} is not {expected:?}"
    );
    serde_json::from_slice(&received.body).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Tests

// Multi-threaded: the webhook receiver runs in this process and must keep answering while a
// dropped bridge process is being stopped (the drop blocks one thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_flexmatch_success_is_answered_at_once_placed_once_by_latency_and_announced_signed() {
    let s = SnsStack::start(&[]).await;
    // Latencies stored beforehand (FlexMatch events carry none): us-east-1 is best for both.
    for (player, latencies) in [
        ("alice", json!({"us-east-1": 20, "eu-west-1": 90})),
        ("bob", json!({"us-east-1": 30, "eu-west-1": 40})),
    ] {
        let response = s
            .stack
            .http
            .put(s.stack.url(&format!("/v1/players/{player}/latencies")))
            .bearer_auth(API_TOKEN)
            .json(&json!({"latencies": latencies}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let body = sign(notification(
        "msg-ok-1",
        &succeeded("fm-match-1", &[("ticket-a", &["alice"]), ("ticket-b", &["bob"])]),
    ));
    let (status, receipt, elapsed) = s.post_sns(&body).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt, json!({"result": "accepted", "match_id": "fm-match-1"}));
    assert!(elapsed < Duration::from_secs(3), "answered in {elapsed:?}");

    let ticket = s.wait_ticket("ticket-a", "placed", Duration::from_secs(20)).await;
    assert_eq!(ticket["match_id"], "fm-match-1");
    assert_eq!(ticket["assignment"]["session_id"], session_id("fm-match-1"));
    assert_eq!(ticket["assignment"]["location"], "us-east-1", "{ticket}");
    assert_eq!(ticket["assignment"]["latency_ms"], json!({"alice": 20, "bob": 30}));
    let other = s.wait_ticket("ticket-b", "placed", Duration::from_secs(5)).await;
    assert_eq!(other["assignment"], ticket["assignment"]);
    let (_, placement) = s.stack.get("/v1/matches/fm-match-1").await;
    assert_eq!(placement["status"], "placed");

    let sessions = s.stack.emulator_sessions().await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["location"], "us-east-1");

    s.wait_webhooks(1, Duration::from_secs(10)).await;
    let payload = check_webhook_signature(&s.webhook.lock().unwrap()[0]);
    assert_eq!(payload["type"], "match.placed");
    assert_eq!(payload["data"]["match_id"], "fm-match-1");
    assert_eq!(payload["data"]["session_id"], session_id("fm-match-1"));

    // The very same SNS message again (SNS is at-least-once): 200, nothing done again.
    let (status, receipt, _) = s.post_sns(&body).await;
    assert_eq!((status, &receipt["result"]), (200, &json!("duplicate")), "{receipt}");
    // The same match in a new message (FlexMatch sent the event twice): still one session.
    let again = sign(notification(
        "msg-ok-2",
        &succeeded("fm-match-1", &[("ticket-a", &["alice"]), ("ticket-b", &["bob"])]),
    ));
    let (status, _, _) = s.post_sns(&again).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.stack.emulator_sessions().await.len(), 1, "a duplicate made a second session");

    // Polling tickets needs the API token; the SNS webhook does not (SNS cannot send one).
    let response = s.stack.http.get(s.stack.url("/v1/tickets/ticket-a")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let (status, _) = s.stack.get("/v1/tickets/no-such-ticket").await;
    assert_eq!(status, 404);
}

// Multi-threaded: the webhook receiver runs in this process and must keep answering while a
// dropped bridge process is being stopped (the drop blocks one thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_slow_gameye_still_gets_its_200_well_within_15_seconds() {
    let s = SnsStack::start(&[("BRIDGE_PLACEMENT__DEADLINE", "30s")]).await;
    s.stack.set_faults(json!([{"operation": "session-run", "delay_ms": 6000, "probability": 1.0}])).await;
    let body = sign(notification("msg-slow", &succeeded("fm-slow", &[("ticket-slow", &["carol"])])));
    let (status, receipt, elapsed) = s.post_sns(&body).await;
    assert_eq!(status, 200, "{receipt}");
    assert!(elapsed < Duration::from_secs(3), "a slow Gameye delayed SNS's answer: {elapsed:?}");
    let (_, ticket) = s.stack.get("/v1/tickets/ticket-slow").await;
    assert_eq!(ticket["status"], "placing", "{ticket}");
    s.wait_ticket("ticket-slow", "placed", Duration::from_secs(25)).await;
    assert_eq!(s.stack.emulator_sessions().await.len(), 1);
}

/// DESIGN §3.4: a placement whose publish keeps failing is retried from the record. SNS has no
/// redelivery to lean on (the door answered 200 long before), so once the door gives up on the
/// results webhook (after one placement deadline, 1 s here), only the announcement outbox can
/// still tell the receiver.
// Multi-threaded: the webhook receiver runs in this process and must keep answering while a
// dropped bridge process is being stopped (the drop blocks one thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_a_result_the_webhook_refused_is_announced_again_from_the_record() {
    let s = SnsStack::start(&[
        ("BRIDGE_PLACEMENT__DEADLINE", "1s"),
        ("BRIDGE_PLACEMENT__RECOVERY_INTERVAL", "200ms"),
    ])
    .await;
    s.webhook_status.store(503, Ordering::SeqCst);
    let body = sign(notification("msg-owed", &succeeded("fm-owed", &[("ticket-owed", &["dave"])])));
    let (status, receipt, _) = s.post_sns(&body).await;
    assert_eq!(status, 200, "{receipt}");
    s.wait_ticket("ticket-owed", "placed", Duration::from_secs(10)).await;
    s.wait_webhooks(1, Duration::from_secs(5)).await;
    // Well past the door's own retries (one deadline): without the outbox nothing comes any more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let refused = s.webhook.lock().unwrap().len();
    assert!(s.delivered().is_empty());
    assert!(s.metrics().await.contains("gameye_bridge_announcements_owed 1"), "the outcome is owed");
    s.webhook_status.store(200, Ordering::SeqCst);

    let payload = s.wait_delivered(Duration::from_secs(20)).await;
    assert_eq!(payload["type"], "match.placed");
    assert_eq!(payload["data"]["match_id"], "fm-owed");
    assert_eq!(payload["data"]["session_id"], session_id("fm-owed"));
    assert!(s.webhook.lock().unwrap().len() > refused, "a new attempt after the door gave up");
    // Announced once it got through, and not again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(s.delivered().len(), 1);
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("gameye_bridge_announcement_retries_total{result=\"delivered\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("gameye_bridge_announcements_owed 0"), "{metrics}");
    assert_eq!(s.stack.emulator_sessions().await.len(), 1, "announced from the record, not placed again");
}

/// An instance that recorded an outcome and stopped before announcing it (here: the record and its
/// outbox entry written straight into Redis, as that instance left them) is made good by any other
/// instance: the outcome reaches the results webhook.
// Multi-threaded: the webhook receiver runs in this process and must keep answering while a
// dropped bridge process is being stopped (the drop blocks one thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_an_outcome_recorded_by_an_instance_that_stopped_before_announcing_is_announced() {
    use bridge::ports::{
        Claim, ClaimOutcome, Completion, Outcome, Owed, PlacementStore as _, StateStore as _,
    };
    let s = SnsStack::start(&[("BRIDGE_PLACEMENT__RECOVERY_INTERVAL", "200ms")]).await;
    let store = adapters::store::RedisStore::connect(&s.stack.redis.url(), "gameye-bridge").await.unwrap();
    let now = OffsetDateTime::now_utc();
    let request: bridge::MatchRequest = serde_json::from_value(json!({
        "match_id": "fm-orphan", "players": [{"id": "erin"}]
    }))
    .unwrap();
    let claim = Claim {
        match_id: "fm-orphan".into(),
        source: "sns".into(),
        session_id: bridge::session_id("sns", "fm-orphan"),
        request,
        owner: "a-stopped-instance".into(),
        now,
        lease_for: Duration::from_secs(25),
        keep_for: Duration::from_secs(3600),
    };
    let ClaimOutcome::Owned { lease, .. } = store.claim(&claim).await.unwrap() else { panic!("not owned") };
    let failed =
        Outcome::Failed(bridge::Failure::new("fm-orphan", bridge::FailureCode::NotFound, "no such image"));
    let json = failed.to_json().unwrap();
    let owed = Owed::of(&failed);
    let completion = Completion {
        match_id: "fm-orphan",
        lease: &lease,
        outcome: &failed,
        json: Some(&json),
        keep_for: Duration::from_secs(3600),
        owed: Some((&owed, now)),
    };
    let (written, _) = store.finish_placement(completion, None).await;
    assert!(written.unwrap());

    let payload = s.wait_delivered(Duration::from_secs(10)).await;
    assert_eq!(payload["type"], "match.failed");
    assert_eq!(payload["data"]["match_id"], "fm-orphan");
    assert_eq!(payload["data"]["error"]["code"], "NOT_FOUND");
    assert!(s.stack.emulator_sessions().await.is_empty(), "announced, not placed");
}

// Multi-threaded: the webhook receiver runs in this process and must keep answering while a
// dropped bridge process is being stopped (the drop blocks one thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_timed_out_and_cancelled_tickets_are_published_for_polling() {
    let s = SnsStack::start(&[]).await;
    let timed_out = event(
        "MatchmakingTimedOut",
        json!({"reason": "TimedOut", "message": "Removed from matchmaking due to timing out.",
               "tickets": [{"ticketId": "ticket-late", "startTime": now_text(), "players": [{"playerId": "dave"}]}]}),
    );
    let (status, receipt, _) = s.post_sns(&sign(notification("msg-to", &timed_out))).await;
    assert_eq!(status, 200, "{receipt}");
    let ticket = s.wait_ticket("ticket-late", "timed_out", Duration::from_secs(2)).await;
    assert_eq!(ticket["event"], "MatchmakingTimedOut");
    assert_eq!(ticket["reason"], "TimedOut");
    // A "searching" delivered after the end (SNS retrying an earlier event) leaves it as it is,
    // while a ticket still searching is recorded as such.
    let searching = |ticket_id: &str| {
        let ticket =
            json!({"ticketId": ticket_id, "startTime": now_text(), "players": [{"playerId": "dave"}]});
        event("MatchmakingSearching", json!({"tickets": [ticket]}))
    };
    let (status, receipt, _) =
        s.post_sns(&sign(notification("msg-late-search", &searching("ticket-late")))).await;
    assert_eq!(
        (status, &receipt["result"], &receipt["tickets"]),
        (200, &json!("recorded"), &json!(0)),
        "{receipt}"
    );
    let (_, ticket) = s.stack.get("/v1/tickets/ticket-late").await;
    assert_eq!((&ticket["status"], &ticket["event"]), (&json!("timed_out"), &json!("MatchmakingTimedOut")));
    let (status, receipt, _) = s.post_sns(&sign(notification("msg-search", &searching("ticket-new")))).await;
    assert_eq!((status, &receipt["tickets"]), (200, &json!(1)), "{receipt}");
    s.wait_ticket("ticket-new", "searching", Duration::from_secs(2)).await;

    let cancelled =
        event("MatchmakingCancelled", json!({"tickets": [{"ticketId": "ticket-gone", "players": []}]}));
    let (status, _, _) = s.post_sns(&sign(notification("msg-cancel", &cancelled))).await;
    assert_eq!(status, 200);
    s.wait_ticket("ticket-gone", "cancelled", Duration::from_secs(2)).await;

    let searching = event("PotentialMatchCreated", json!({"tickets": [], "matchId": "x"}));
    let (status, receipt, _) = s.post_sns(&sign(notification("msg-pmc", &searching))).await;
    assert_eq!((status, &receipt["result"]), (200, &json!("acknowledged")));
    assert!(s.stack.emulator_sessions().await.is_empty());
    let metrics = s.stack.http.get(s.stack.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("flexmatch_events_total{event=\"MatchmakingTimedOut\"} 1"), "{metrics}");
}

// Multi-threaded: the webhook receiver runs in this process and must keep answering while a
// dropped bridge process is being stopped (the drop blocks one thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_forged_tampered_unsigned_stale_and_foreign_messages_are_refused_and_place_nothing() {
    let (port, hits) = counting_host().await;
    let s = SnsStack::start(&[]).await;
    let good = notification("msg-x", &succeeded("fm-evil", &[("ticket-x", &["mallory"])]));
    let refuse = |status: u16, body: &Value, code: &str| {
        assert!((400..500).contains(&status), "{status} {body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(!body["error"]["message"].as_str().unwrap_or_default().is_empty());
    };

    let mut tampered: Map<String, Value> = serde_json::from_slice(&sign(good.clone())).unwrap();
    tampered
        .insert("Message".into(), json!(succeeded("fm-evil-2", &[("ticket-x", &["mallory"])]).to_string()));
    let (status, body, _) = s.post_sns(&serde_json::to_vec(&tampered).unwrap()).await;
    refuse(status, &body, "SIGNATURE_INVALID");

    let mut wrong_topic = good.clone();
    wrong_topic.insert("TopicArn".into(), json!("arn:aws:sns:us-east-1:123456789012:someone-else"));
    let (status, body, _) = s.post_sns(&sign(wrong_topic)).await;
    refuse(status, &body, "TOPIC_NOT_ALLOWED");

    let mut stale = good.clone();
    stale.insert("Timestamp".into(), json!("2026-01-01T00:00:00.000Z"));
    let (status, body, _) = s.post_sns(&sign(stale)).await;
    refuse(status, &body, "STALE_MESSAGE");

    let raw = succeeded("fm-raw", &[("ticket-x", &["mallory"])]);
    let (status, body, _) = s.post_sns(raw.to_string().as_bytes()).await;
    refuse(status, &body, "UNSIGNED_MESSAGE");

    // Certificate and subscribe URLs off AWS's rule are never fetched.
    for url in [
        format!("http://127.0.0.1:{port}/{CERT_NAME}"),
        format!("https://localhost:{port}/{CERT_NAME}"),
        "http://169.254.169.254/latest/meta-data/cert.pem".to_owned(),
    ] {
        let mut elsewhere = good.clone();
        elsewhere.insert("SigningCertURL".into(), json!(url));
        let (status, body, _) = s.post_sns(&sign(elsewhere)).await;
        refuse(status, &body, "SIGNING_CERT_URL_REJECTED");
    }
    let mut confirmation = Map::new();
    for (k, v) in [
        ("Type", "SubscriptionConfirmation"),
        ("MessageId", "msg-sub"),
        ("Token", "tok"),
        ("TopicArn", TOPIC),
        ("Message", "You have chosen to subscribe"),
        ("SubscribeURL", &format!("http://127.0.0.1:{port}/?Action=ConfirmSubscription")),
        ("Timestamp", &now_text()),
    ] {
        confirmation.insert(k.into(), json!(v));
    }
    let response = s
        .stack
        .http
        .post(s.stack.url("/v1/webhooks/sns"))
        .header("x-amz-sns-message-type", "SubscriptionConfirmation")
        .body(sign(confirmation))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    refuse(status, &response.json().await.unwrap(), "SUBSCRIBE_URL_REJECTED");
    assert_eq!(*hits.lock().unwrap(), 0, "a URL off the AWS rule was fetched");

    // AWS's genuine messages are not for this bridge: wrong topic (and not FlexMatch events).
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/sns");
    if fixtures.is_dir() {
        for name in ["real-notification-v1.json", "real-notification-v2-subject.json"] {
            let body = std::fs::read(fixtures.join(name)).unwrap();
            let (status, answer, _) = s.post_sns(&body).await;
            refuse(status, &answer, "TOPIC_NOT_ALLOWED");
        }
    } else {
        eprintln!("NOTICE: {} is absent: skipping AWS's genuine messages", fixtures.display());
    }

    // A genuine message that is no FlexMatch event.
    let (status, body, _) = s.post_sns(&sign(notification("msg-hello", &json!("Hello world")))).await;
    refuse(status, &body, "NOT_FLEXMATCH");

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.stack.emulator_sessions().await.is_empty(), "a refused message was placed");
    let (status, _) = s.stack.get("/v1/tickets/ticket-x").await;
    assert_eq!(status, 404);
    // The untampered message is still accepted.
    let (status, _, _) = s.post_sns(&sign(good)).await;
    assert_eq!(status, 200);
    s.wait_ticket("ticket-x", "placed", Duration::from_secs(20)).await;
    s.wait_webhooks(1, Duration::from_secs(10)).await;
}

// Multi-threaded: the webhook receiver runs in this process and must keep answering while a
// dropped bridge process is being stopped (the drop blocks one thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_a_bridge_killed_right_after_its_200_still_gets_the_match_placed() {
    let extra = [("BRIDGE_PLACEMENT__DEADLINE", "2s")];
    let mut s = SnsStack::start(&extra).await;
    // Gameye answers slowly, so the bridge dies with the placement in flight.
    s.stack.set_faults(json!([{"operation": "session-run", "delay_ms": 1500, "probability": 1.0}])).await;
    let body = sign(notification("msg-kill", &succeeded("fm-kill", &[("ticket-kill", &["erin"])])));
    let (status, receipt, _) = s.post_sns(&body).await;
    assert_eq!(status, 200, "{receipt}");
    s.stack.bridge.signal("KILL");

    let mut env: Vec<(&str, &str)> = s.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend([("BRIDGE_PLACEMENT__DEADLINE", "2s"), ("BRIDGE_PLACEMENT__RECOVERY_INTERVAL", "500ms")]);
    s.stack.bridge = start_bridge(&s.stack.emulator, &s.stack.redis, &env).await;
    let ticket = s.wait_ticket("ticket-kill", "placed", Duration::from_secs(25)).await;
    assert_eq!(ticket["assignment"]["session_id"], session_id("fm-kill"));
    assert_eq!(s.stack.emulator_sessions().await.len(), 1, "one session, though two instances tried");
    // SNS's retry of the answered message changes nothing.
    let (status, _, _) = s.post_sns(&body).await;
    assert_eq!(status, 200);
    assert_eq!(s.stack.emulator_sessions().await.len(), 1);
    drop(s.pinned);
}

// Multi-threaded: the webhook receiver runs in this process and must keep answering while a
// dropped bridge process is being stopped (the drop blocks one thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_delivery_log_and_ticket_store_behave_alike_in_memory_and_redis() {
    use adapters::store::{Delivery, DeliveryLog, StateStore, TicketState, TicketStatus, TicketStore};
    let redis = crate::harness::RedisServer::start();
    for store in [StateStore::memory(), StateStore::redis(&redis.url(), "sns-test").await.unwrap()] {
        let kind = store.kind();
        let claim = |key: &'static str, hold: Duration| {
            let store = store.clone();
            async move { store.first_delivery(key, hold).await.unwrap() }
        };
        assert_eq!(claim("sns:m-1", Duration::from_secs(60)).await, Delivery::First, "{kind}");
        assert_eq!(claim("sns:m-1", Duration::from_secs(60)).await, Delivery::InProgress, "{kind}");
        store.forget_delivery("sns:m-1").await.unwrap();
        assert_eq!(claim("sns:m-1", Duration::from_millis(150)).await, Delivery::First, "{kind}");
        store.keep_delivery("sns:m-1", Duration::from_secs(60)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(claim("sns:m-1", Duration::from_secs(60)).await, Delivery::Done, "{kind}: kept");
        assert_eq!(claim("sns:{m}-2", Duration::from_millis(100)).await, Delivery::First, "{kind}");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(claim("sns:{m}-2", Duration::from_secs(1)).await, Delivery::First, "{kind}: expired");

        let status = TicketStatus {
            ticket_id: "t{1}".into(),
            status: TicketState::TimedOut,
            match_id: None,
            event: "MatchmakingTimedOut".into(),
            reason: Some("TimedOut".into()),
            updated_at: OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
        };
        store.put_ticket_status(&status, Duration::from_millis(200)).await.unwrap();
        assert_eq!(store.get_ticket_status("t{1}").await.unwrap(), Some(status.clone()), "{kind}");
        assert_eq!(store.get_ticket_status("t-2").await.unwrap(), None, "{kind}");
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(store.get_ticket_status("t{1}").await.unwrap(), None, "{kind}: expired");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_insecure_skip_verify_accepts_unsigned_envelopes_and_says_so_loudly() {
    let s = SnsStack::start(&[("BRIDGE_SNS__INSECURE_SKIP_VERIFY", "true")]).await;
    let mut unsigned = notification("msg-local", &succeeded("fm-local", &[("ticket-local", &["frank"])]));
    unsigned.insert("SignatureVersion".into(), json!("1"));
    unsigned.insert("Signature".into(), json!("not-a-signature"));
    unsigned.insert("SigningCertURL".into(), json!("http://127.0.0.1:1/never-fetched.pem"));
    let (status, receipt, _) = s.post_sns(&serde_json::to_vec(&unsigned).unwrap()).await;
    assert_eq!(status, 200, "{receipt}");
    s.wait_ticket("ticket-local", "placed", Duration::from_secs(20)).await;
    // Topic and age still apply.
    unsigned.insert("TopicArn".into(), json!("arn:aws:sns:us-east-1:123456789012:other"));
    let (status, _, _) = s.post_sns(&serde_json::to_vec(&unsigned).unwrap()).await;
    assert_eq!(status, 403);
    assert!(s.stack.bridge.logs().contains("sns.insecure_skip_verify is ON"), "{}", s.stack.bridge.logs());
    s.wait_webhooks(1, Duration::from_secs(10)).await;
}

#[test]
fn sns_configuration_is_validated_and_its_secret_never_printed() {
    use adapters::config::Settings;
    let load = |pairs: &[(&str, &str)]| {
        Settings::load_from(None, pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
    };
    let defaults = load(&[]).unwrap();
    assert!(defaults.sns.topics.is_empty());
    assert_eq!(defaults.sns.max_age, Duration::from_secs(3600));
    assert!(defaults.sns.auto_confirm);
    assert!(!defaults.sns.insecure_skip_verify);

    for (pairs, key) in [
        (vec![("BRIDGE_SNS__TOPICS", "[\"flexmatch-events\"]")], "sns.topics"),
        (vec![("BRIDGE_SNS__MAX_AGE", "\"0s\"")], "sns.max_age"),
        (vec![("BRIDGE_SNS__PINNED_CERT_DIR", "\"/no/such/dir\"")], "sns.pinned_cert_dir"),
        (
            vec![("BRIDGE_SNS__RESULTS_WEBHOOK__URL", "\"https://backend.example/hook\"")],
            "sns.results_webhook.secret",
        ),
        (vec![("BRIDGE_SNS__RESULTS_WEBHOOK__SECRET", "\"whsec_***\"")], "sns.results_webhook.secret"),
        (
            vec![
                ("BRIDGE_SNS__RESULTS_WEBHOOK__URL", "\"ftp://backend.example/hook\""),
                ("BRIDGE_SNS__RESULTS_WEBHOOK__SECRET", "\"s\""),
            ],
            "sns.results_webhook.url",
        ),
        (
            vec![
                ("BRIDGE_SNS__INSECURE_SKIP_VERIFY", "true"),
                ("BRIDGE_HTTP__LISTEN", "\"0.0.0.0:8080\""),
                ("BRIDGE_HTTP__TOKENS", "[\"t\"]"),
            ],
            "sns.insecure_skip_verify",
        ),
        (vec![("BRIDGE_SNS__CONFIGURATIONS", "{ ranked = { image = \"g\" } }")], "sns.configurations"),
    ] {
        let error = load(&pairs).expect_err(&format!("{pairs:?} was accepted")).to_string();
        assert!(error.contains(key), "{pairs:?}: {error}");
    }

    let configured = load(&[
        ("BRIDGE_SNS__TOPICS", &format!("[\"{TOPIC}\"]")),
        (
            "BRIDGE_SNS__CONFIGURATIONS",
            &format!("{{ \"{CONFIGURATION}\" = {{ image = \"ranked\", version = \"2\" }} }}"),
        ),
        ("BRIDGE_SNS__RESULTS_WEBHOOK__URL", "\"https://hook:sekrit-in-url@backend.example/hook\""),
        ("BRIDGE_SNS__RESULTS_WEBHOOK__SECRET", &format!("\"{WEBHOOK_SECRET}\"")),
    ])
    .unwrap();
    assert_eq!(configured.sns.configurations[CONFIGURATION].image, "ranked");
    let printed = configured.to_redacted_toml();
    assert!(printed.contains("[sns]") && printed.contains(TOPIC), "{printed}");
    assert!(!printed.contains("MfKQ9r8G") && !printed.contains("sekrit-in-url"), "{printed}");
}

/// A match FlexMatch made that the bridge refuses (a player id beyond its limit): SNS gets the 422
/// and will not send it again, so the game's backend is told too: its tickets read `failed` with
/// the reason, and the results webhook gets `match.failed` with INVALID_REQUEST. Nothing is placed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_a_match_the_bridge_refuses_is_failed_on_its_tickets_and_announced() {
    let s = SnsStack::start(&[]).await;
    let long = "p".repeat(200);
    let event = succeeded("fm-refused", &[("ticket-refused", &[long.as_str()]), ("ticket-ok", &["erin"])]);
    let (status, answer, _) = s.post_sns(&sign(notification("msg-refused", &event))).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["code"], "INVALID_REQUEST", "{answer}");

    for ticket in ["ticket-refused", "ticket-ok"] {
        let status = s.wait_ticket(ticket, "failed", Duration::from_secs(5)).await;
        let reason = status["reason"].as_str().unwrap_or_default();
        assert!(reason.starts_with("INVALID_REQUEST: "), "{status}");
    }
    let payload = s.wait_delivered(Duration::from_secs(10)).await;
    assert_eq!(payload["type"], "match.failed");
    assert_eq!(payload["data"]["match_id"], "fm-refused");
    assert_eq!(payload["data"]["error"]["code"], "INVALID_REQUEST");
    assert_eq!(payload["data"]["error"]["retryable"], false);
    assert!(s.stack.emulator_sessions().await.is_empty(), "refused, not placed");
}

/// A ticket record the bridge cannot read is a store error no retry fixes: 500 `STORE_ERROR`, as
/// on every other route, not 503 "retry", which would have pollers retry for good.
#[tokio::test]
async fn sns_an_unreadable_ticket_answers_500_store_error() {
    let s = SnsStack::start(&[]).await;
    let mut redis =
        redis::Client::open(s.stack.redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("SET")
        .arg("gameye-bridge:ticket:{t-garbled}")
        .arg("not json")
        .query_async(&mut redis)
        .await
        .unwrap();
    let (status, answer) = s.stack.get("/v1/tickets/t-garbled").await;
    assert_eq!(status, 500, "{answer}");
    assert_eq!(answer["error"]["code"], "STORE_ERROR", "{answer}");
}

/// FlexMatch makes its match ids, so one reused for other players is a bug upstream: refused
/// (409, which SNS does not retry), the first match untouched and not told it failed, and the
/// refused event's new tickets failed with the reason; a ticket of the first match keeps its match.
#[tokio::test]
async fn sns_a_known_match_id_with_other_players_is_refused_and_the_first_match_stands() {
    let s = SnsStack::start(&[]).await;
    let first = succeeded("fm-reused", &[("ticket-first", &["ann", "bob"])]);
    let (status, answer, _) = s.post_sns(&sign(notification("msg-first", &first))).await;
    assert_eq!(status, 200, "{answer}");
    let placed = s.wait_ticket("ticket-first", "placed", Duration::from_secs(10)).await;
    let delivered = s.wait_delivered(Duration::from_secs(10)).await;
    assert_eq!(delivered["type"], "match.placed");

    let other = succeeded("fm-reused", &[("ticket-first", &["ann", "bob"]), ("ticket-new", &["cid"])]);
    let (status, answer, _) = s.post_sns(&sign(notification("msg-other", &other))).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "MATCH_ID_CONFLICT", "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("players"), "{answer}");

    let refused = s.wait_ticket("ticket-new", "failed", Duration::from_secs(5)).await;
    assert!(refused["reason"].as_str().unwrap().starts_with("MATCH_ID_CONFLICT: "), "{refused}");
    assert!(refused.get("match_id").is_none_or(Value::is_null), "{refused}");
    let (_, first_ticket) = s.stack.get("/v1/tickets/ticket-first").await;
    assert_eq!(first_ticket["status"], "placed", "{first_ticket}");
    assert_eq!(first_ticket["assignment"], placed["assignment"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered = s.delivered();
    assert_eq!(delivered.len(), 1, "no match.failed for the first match: {delivered:?}");
    assert_eq!(s.stack.emulator_sessions().await.len(), 1);

    // An unusable event under the same id (a player id the bridge cannot take): refused, and the
    // first match still not told it failed.
    let long = "p".repeat(200);
    let unusable = succeeded("fm-reused", &[("ticket-long", &[long.as_str()])]);
    let (status, answer, _) = s.post_sns(&sign(notification("msg-unusable", &unusable))).await;
    assert_eq!(status, 422, "{answer}");
    s.wait_ticket("ticket-long", "failed", Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered = s.delivered();
    assert_eq!(delivered.len(), 1, "no match.failed for the first match: {delivered:?}");
}

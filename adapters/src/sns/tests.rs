//! The SNS door's trust boundary, against AWS's own signed messages (from `../shared/fixtures/sns`)
//! and messages signed in the test by `testdata/test-signer.*` (a test-only key, not AWS's).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, RsaKeyPair};
use base64::Engine as _;
use bridge::placement::{Accepted, BoxFuture, PlaceError, PlacementService, Progress};
use bridge::ports::{AvailableLocation, DeliveryError, Outcome, PlacementRecord, SessionApiError};
use bridge::{Assignment, ValidatedMatch};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_util::task::TaskTracker;

use super::*;
use crate::store::MemoryStore;

const TEST_KEY: &str = include_str!("testdata/test-signer.key.pem");
const TEST_CERT: &str = include_str!("testdata/test-signer.cert.pem");
const TEST_CERT_URL: &str =
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-gameye-bridge-test.pem";
const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:flexmatch-events";

// ---------------------------------------------------------------------------------------------
// AWS's genuine messages

/// `../shared/fixtures/sns`: AWS's data, kept outside the project. `None` (with a notice) when absent.
fn fixtures_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/sns");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("NOTICE: {} is absent: skipping the tests on AWS's genuine SNS messages", dir.display());
        None
    }
}

const FIXTURES: [&str; 4] = [
    "real-notification-v1.json",
    "real-notification-v1-subject.json",
    "real-notification-v2.json",
    "real-notification-v2-subject.json",
];

fn load(dir: &std::path::Path, name: &str) -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(dir.join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn field(message: &serde_json::Map<String, Value>, key: &str) -> String {
    message[key].as_str().unwrap().to_owned()
}

fn parse_time(text: &str) -> OffsetDateTime {
    OffsetDateTime::parse(text, &Rfc3339).unwrap()
}

fn verifier(topics: &[String], pinned: Option<PathBuf>, policy: UrlPolicy) -> Verifier {
    let certs = CertCache::new(policy, pinned, Duration::from_secs(60), Duration::from_secs(2));
    Verifier::new(topics.iter().cloned(), Duration::from_secs(3600), certs)
}

async fn verify_fixture(
    dir: &std::path::Path,
    message: &serde_json::Map<String, Value>,
    topics: &[String],
    now: OffsetDateTime,
) -> Result<Verified, VerifyError> {
    let body = serde_json::to_vec(message).unwrap();
    let unverified = Unverified::parse(&body).expect("parses");
    verifier(topics, Some(dir.to_owned()), UrlPolicy::Aws).verify(unverified, now).await
}

#[tokio::test]
async fn aws_genuine_messages_verify_with_the_pinned_certificate_at_their_time() {
    let Some(dir) = fixtures_dir() else { return };
    for name in FIXTURES {
        let message = load(&dir, name);
        let topic = field(&message, "TopicArn");
        let now = parse_time(&field(&message, "Timestamp")) + Duration::from_secs(30);
        let verified = verify_fixture(&dir, &message, &[topic], now).await;
        let verified = verified.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(verified.message().message, "Hello world", "{name}");
    }
}

/// Changes one byte of `value` so that it stays a plausible value of its field.
fn one_byte_off(value: &str) -> String {
    let mut bytes = value.as_bytes().to_vec();
    let i = bytes.iter().rposition(|b| b.is_ascii_alphanumeric()).expect("an alphanumeric byte");
    bytes[i] = match bytes[i] {
        b'0'..=b'8' | b'a'..=b'y' | b'A'..=b'Y' => bytes[i] + 1,
        b'9' => b'0',
        _ => b'a',
    };
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn any_one_byte_change_of_a_signed_field_fails_verification() {
    let Some(dir) = fixtures_dir() else { return };
    for name in FIXTURES {
        let original = load(&dir, name);
        let now = parse_time(&field(&original, "Timestamp")) + Duration::from_secs(30);
        let topic = field(&original, "TopicArn");
        let mut keys =
            vec!["Message", "MessageId", "Timestamp", "TopicArn", "Type", "Signature", "SignatureVersion"];
        if original.contains_key("Subject") {
            keys.push("Subject");
        }
        for key in keys {
            let mut tampered = original.clone();
            let value = field(&original, key);
            // The signature's last characters carry base64 padding bits: change one in the middle.
            let changed = if key == "Signature" {
                let (head, tail) = value.split_at(value.len() / 2);
                format!("{}{tail}", one_byte_off(head))
            } else {
                one_byte_off(&value)
            };
            tampered.insert(key.to_owned(), Value::String(changed.clone()));
            // Allow the tampered topic too, so the signature is what catches it.
            let topics = [topic.clone(), changed];
            let body = serde_json::to_vec(&tampered).unwrap();
            let result = match Unverified::parse(&body) {
                Ok(unverified) => verifier(&topics, Some(dir.clone()), UrlPolicy::Aws)
                    .verify(unverified, now)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let error = result.expect_err(&format!("{name}: a changed {key} still verified"));
            if matches!(key, "Message" | "MessageId" | "Subject" | "TopicArn" | "Signature") {
                assert!(error.contains("signature does not match"), "{name} {key}: {error}");
            }
        }
        // Adding or removing the optional Subject changes the string to sign.
        let mut toggled = original.clone();
        if toggled.remove("Subject").is_none() {
            toggled.insert("Subject".into(), json!("Hello world"));
        }
        let error = verify_fixture(&dir, &toggled, std::slice::from_ref(&topic), now).await.unwrap_err();
        assert_eq!(error, VerifyError::BadSignature, "{name}: Subject toggled");
    }
}

#[tokio::test]
async fn wrong_topic_stale_and_expired_certificate_are_refused() {
    let Some(dir) = fixtures_dir() else { return };
    let message = load(&dir, "real-notification-v2.json");
    let topic = field(&message, "TopicArn");
    let sent = parse_time(&field(&message, "Timestamp"));

    let other = ["arn:aws:sns:us-east-2:295079676684:flexmatch".to_owned()];
    let error = verify_fixture(&dir, &message, &other, sent).await.unwrap_err();
    assert!(matches!(error, VerifyError::TopicNotAllowed(_)), "{error}");

    let error =
        verify_fixture(&dir, &message, std::slice::from_ref(&topic), sent + Duration::from_secs(3601))
            .await
            .unwrap_err();
    assert!(matches!(error, VerifyError::Stale { .. }), "{error}");

    let error =
        verify_fixture(&dir, &message, std::slice::from_ref(&topic), sent - Duration::from_secs(3600))
            .await
            .unwrap_err();
    assert!(matches!(error, VerifyError::FromTheFuture(_)), "{error}");

    // Within a generous max age but after the certificate expired (2022-08-17).
    let certs =
        CertCache::new(UrlPolicy::Aws, Some(dir.clone()), Duration::from_secs(60), Duration::from_secs(2));
    let lenient = Verifier::new([topic], Duration::from_secs(365 * 24 * 3600), certs);
    let body = serde_json::to_vec(&message).unwrap();
    let error = lenient
        .verify(Unverified::parse(&body).unwrap(), sent + Duration::from_secs(60 * 24 * 3600))
        .await
        .unwrap_err();
    assert!(matches!(error, VerifyError::CertificateExpired(_)), "{error}");
}

#[test]
fn the_string_to_sign_follows_the_sns_rule() {
    let notification = SnsMessage {
        kind: MessageType::Notification,
        message_id: "id".into(),
        topic_arn: "arn".into(),
        subject: Some("s".into()),
        message: "m".into(),
        timestamp: "t".into(),
        signature_version: "1".into(),
        signature: String::new(),
        signing_cert_url: String::new(),
        subscribe_url: None,
        token: None,
    };
    assert_eq!(
        notification.string_to_sign(),
        "Message\nm\nMessageId\nid\nSubject\ns\nTimestamp\nt\nTopicArn\narn\nType\nNotification\n"
    );
    let confirmation = SnsMessage {
        kind: MessageType::SubscriptionConfirmation,
        subject: None,
        subscribe_url: Some("u".into()),
        token: Some("k".into()),
        ..notification
    };
    assert_eq!(
        confirmation.string_to_sign(),
        "Message\nm\nMessageId\nid\nSubscribeURL\nu\nTimestamp\nt\nToken\nk\nTopicArn\narn\nType\nSubscriptionConfirmation\n"
    );
}

#[test]
fn only_aws_sns_https_pem_urls_may_be_fetched() {
    let policy = UrlPolicy::Aws;
    for good in [
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
        "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem",
        "https://sns.ap-southeast-2.amazonaws.com/SimpleNotificationService-abc.pem",
    ] {
        assert!(policy.check_cert_url(good).is_ok(), "{good}");
    }
    for bad in [
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com.evil.com/cert.pem",
        "https://evil.com/sns.us-east-1.amazonaws.com/cert.pem",
        "https://sns.us-east-1.amazonaws.com/cert.txt",
        // S3 buckets named `sns` pass AWS's own `[a-z0-9-]+` rule for the region.
        "https://sns.s3.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.s3-external-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.s3-us-west-2.amazonaws.com/SimpleNotificationService-abc.pem",
        // Other files on the host, and spellings of the one file that would each be cached apart.
        "https://sns.us-east-1.amazonaws.com/cert.pem",
        "https://sns.us-east-1.amazonaws.com/x/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com/pad/../SimpleNotificationService-abc.pem",
        "https://SNS.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com:443/SimpleNotificationService-abc.pem",
        &format!("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-{}.pem", "a".repeat(300)),
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem?n=1",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem?",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem#1",
        "https://sns.us-east-1.amazonaws.com:8443/cert.pem",
        "https://user@sns.us-east-1.amazonaws.com/cert.pem",
        "https://s3.us-east-1.amazonaws.com/cert.pem",
        "https://sns..amazonaws.com/cert.pem",
        "https://sns.US_EAST.amazonaws.com/cert.pem",
        "http://169.254.169.254/latest/meta-data/cert.pem",
        "https://169.254.169.254/cert.pem",
        "https://localhost/cert.pem",
        "https://127.0.0.1/cert.pem",
        "https://[::1]/cert.pem",
        "file:///etc/passwd.pem",
        "not a url",
    ] {
        assert!(policy.check_cert_url(bad).is_err(), "{bad} accepted");
    }
    assert!(
        policy.check_subscribe_url("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription").is_ok()
    );
    assert!(policy.check_subscribe_url("http://127.0.0.1:9/?Action=ConfirmSubscription").is_err());
}

#[test]
fn raw_delivery_and_malformed_bodies_are_not_messages() {
    let raw =
        json!({"detail-type": "GameLift Matchmaking Event", "detail": {"type": "MatchmakingSucceeded"}});
    assert_eq!(Unverified::parse(raw.to_string().as_bytes()), Err(ParseError::Unsigned));
    assert!(matches!(Unverified::parse(b"Hello world"), Err(ParseError::NotJson(_))));
    let no_signature = json!({"Type": "Notification", "MessageId": "x"});
    assert_eq!(Unverified::parse(no_signature.to_string().as_bytes()), Err(ParseError::Unsigned));
    let not_string = json!({"Type": "Notification", "Signature": "x", "MessageId": 7});
    assert_eq!(
        Unverified::parse(not_string.to_string().as_bytes()),
        Err(ParseError::NotAString("MessageId"))
    );
}

// ---------------------------------------------------------------------------------------------
// Messages signed by the test key, through the door

/// Signs `message` (SignatureVersion 2) with the test key and returns the JSON body.
pub(crate) fn sign(mut message: serde_json::Map<String, Value>) -> Vec<u8> {
    let der = pem_body(TEST_KEY);
    let key = RsaKeyPair::from_pkcs8(&der).unwrap();
    message.insert("SignatureVersion".into(), json!("2"));
    message.insert("SigningCertURL".into(), json!(TEST_CERT_URL));
    message.insert("Signature".into(), json!(""));
    let parsed = Unverified::parse(&serde_json::to_vec(&message).unwrap()).unwrap();
    let mut signature = vec![0; key.public_modulus_len()];
    key.sign(
        &signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        parsed.peek().string_to_sign().as_bytes(),
        &mut signature,
    )
    .unwrap();
    message.insert("Signature".into(), json!(base64::engine::general_purpose::STANDARD.encode(signature)));
    serde_json::to_vec(&message).unwrap()
}

fn pem_body(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).unwrap()
}

fn now_text() -> String {
    OffsetDateTime::now_utc().format(&Rfc3339).unwrap()
}

fn notification(message_id: &str, message: &Value) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("Type".into(), json!("Notification"));
    m.insert("MessageId".into(), json!(message_id));
    m.insert("TopicArn".into(), json!(TOPIC));
    m.insert("Message".into(), json!(message.to_string()));
    m.insert("Timestamp".into(), json!(now_text()));
    m.insert("UnsubscribeURL".into(), json!("https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe"));
    m
}

fn succeeded(match_id: &str, tickets: &[(&str, &[&str])]) -> Value {
    let tickets: Vec<Value> = tickets
        .iter()
        .map(|(id, players)| {
            let players: Vec<Value> = players.iter().map(|p| json!({"playerId": p, "team": "red"})).collect();
            json!({"ticketId": id, "startTime": "2026-11-21T10:00:00.000Z", "players": players})
        })
        .collect();
    json!({"version": "0", "id": "e-1", "detail-type": "GameLift Matchmaking Event", "source": "aws.gamelift",
           "account": "123456789012", "time": now_text(), "region": "us-east-1",
           "resources": ["arn:aws:gamelift:us-east-1:123456789012:matchmakingconfiguration/ranked"],
           "detail": {"type": "MatchmakingSucceeded", "matchId": match_id, "tickets": tickets,
                      "gameSessionInfo": {"players": []}, "customEventData": "x"}})
}

/// A placement service that records what it was asked to accept and places nothing.
#[derive(Default)]
struct RecordingService {
    accepted: Mutex<Vec<bridge::MatchRequest>>,
}

impl PlacementService for RecordingService {
    fn place<'a>(&'a self, _: &'a str, _: ValidatedMatch) -> BoxFuture<'a, Result<Progress, PlaceError>> {
        unreachable!("the SNS door never waits for placements")
    }

    fn accept<'a>(
        &'a self,
        _: &'a str,
        request: ValidatedMatch,
    ) -> BoxFuture<'a, Result<Accepted, PlaceError>> {
        self.accepted.lock().unwrap().push(request.into_request());
        Box::pin(async { Ok(Accepted::Known(Progress::Pending { lease_until: OffsetDateTime::now_utc() })) })
    }

    fn finish(self: Arc<Self>, _: bridge::placement::Job) -> BoxFuture<'static, Result<Outcome, PlaceError>> {
        unreachable!("the SNS door under test never calls this")
    }

    fn status<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Option<PlacementRecord>, PlaceError>> {
        Box::pin(async { Ok(None) })
    }

    fn announce<'a>(&'a self, _: &'a str, _: &'a Outcome) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async { Ok(()) })
    }

    fn put_latencies<'a>(
        &'a self,
        _: &'a str,
        _: &'a BTreeMap<String, u32>,
    ) -> BoxFuture<'a, Result<(), PlaceError>> {
        unreachable!("the SNS door under test never calls this")
    }

    fn get_latencies<'a>(
        &'a self,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Option<BTreeMap<String, u32>>, PlaceError>> {
        unreachable!("the SNS door under test never calls this")
    }

    fn available_locations<'a>(
        &'a self,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Vec<AvailableLocation>, SessionApiError>> {
        unreachable!("the SNS door under test never calls this")
    }

    fn default_image(&self) -> &str {
        "demo-game"
    }

    fn latency_keep_for(&self) -> Duration {
        Duration::from_secs(60)
    }
}

struct TestDoor {
    door: SnsDoor,
    service: Arc<RecordingService>,
    store: Arc<MemoryStore>,
    _pinned: tempfile::TempDir,
}

fn test_door(auto_confirm: bool, policy: UrlPolicy) -> TestDoor {
    let pinned = tempfile::tempdir().unwrap();
    std::fs::write(pinned.path().join("SimpleNotificationService-gameye-bridge-test.pem"), TEST_CERT)
        .unwrap();
    let config = SnsConfig {
        topics: vec![TOPIC.to_owned()],
        pinned_cert_dir: Some(pinned.path().to_owned()),
        cert_cache_ttl: Duration::from_secs(60),
        max_age: Duration::from_secs(3600),
        auto_confirm,
        insecure_skip_verify: false,
        configurations: BTreeMap::from([(
            "arn:aws:gamelift:us-east-1:123456789012:matchmakingconfiguration/ranked".to_owned(),
            ImageChoice { image: "ranked-game".into(), version: Some("2.0".into()) },
        )]),
        keep_for: Duration::from_secs(600),
        fetch_timeout: Duration::from_secs(2),
    };
    let service = Arc::new(RecordingService::default());
    let store = Arc::new(MemoryStore::new());
    let verifier = config.verifier_with(policy);
    let door = SnsDoor::new(
        config,
        service.clone(),
        store.clone(),
        store.clone(),
        TaskTracker::new(),
        SnsMetrics::default(),
    )
    .with_verifier(verifier);
    TestDoor { door, service, store, _pinned: pinned }
}

#[tokio::test]
async fn a_signed_matchmaking_succeeded_becomes_one_accepted_match_request() {
    let t = test_door(true, UrlPolicy::Aws);
    let event = succeeded("match-1", &[("t-1", &["alice", "bob"]), ("t-2", &["carol"])]);
    let body = sign(notification("msg-1", &event));
    let receipt = t.door.receive(Some("Notification"), &body).await.unwrap();
    assert_eq!(receipt, Receipt::Accepted { match_id: "match-1".into() });
    let accepted = t.service.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), 1);
    let request = &accepted[0];
    assert_eq!(request.match_id, "match-1");
    let ids: Vec<&str> = request.players.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["alice", "bob", "carol"]);
    assert!(request.players.iter().all(|p| p.team.as_deref() == Some("red") && p.latencies.is_empty()));
    assert_eq!(request.image.as_deref(), Some("ranked-game"));
    assert_eq!(request.version.as_deref(), Some("2.0"));
    assert_eq!(request.requested_at, Some(parse_time("2026-11-21T10:00:00Z")));
    let ticket = t.door.ticket("t-2").await.unwrap().unwrap();
    assert_eq!((ticket.status.as_str(), ticket.match_id.as_deref()), ("placing", Some("match-1")));

    // The same message again: answered, nothing done again.
    let receipt = t.door.receive(Some("Notification"), &body).await.unwrap();
    assert_eq!(receipt, Receipt::Duplicate { message_id: "msg-1".into() });
    assert_eq!(t.service.accepted.lock().unwrap().len(), 1);
    t.door.wait_background().await;
}

#[tokio::test]
async fn a_copy_of_a_message_still_being_processed_is_retried_not_answered_as_a_duplicate() {
    let t = test_door(true, UrlPolicy::Aws);
    let body = sign(notification("msg-1", &succeeded("match-1", &[("t-1", &["alice"])])));
    // Another instance claimed the message and has not finished with it (or died doing it).
    let claimed = t.store.first_delivery("sns:msg-1", Duration::from_millis(200)).await.unwrap();
    assert_eq!(claimed, Delivery::First);
    let refused = t.door.receive(Some("Notification"), &body).await.unwrap_err();
    assert_eq!((refused.kind, refused.code), (SnsErrorKind::Unavailable, IN_PROGRESS));
    assert!(t.service.accepted.lock().unwrap().is_empty(), "nothing done by the copy");

    // Its hold ran out: SNS's next retry is processed, and a copy after that is a duplicate.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let receipt = t.door.receive(Some("Notification"), &body).await.unwrap();
    assert_eq!(receipt, Receipt::Accepted { match_id: "match-1".into() });
    let receipt = t.door.receive(Some("Notification"), &body).await.unwrap();
    assert_eq!(receipt, Receipt::Duplicate { message_id: "msg-1".into() });
    assert_eq!(t.service.accepted.lock().unwrap().len(), 1);
    t.door.wait_background().await;
}

#[tokio::test]
async fn refused_messages_place_nothing() {
    let t = test_door(true, UrlPolicy::Aws);
    let event = succeeded("match-2", &[("t-1", &["alice"])]);
    let good = notification("msg-2", &event);

    let mut wrong_topic = good.clone();
    wrong_topic.insert("TopicArn".into(), json!("arn:aws:sns:us-east-1:123456789012:other"));
    let error = t.door.receive(None, &sign(wrong_topic)).await.unwrap_err();
    assert_eq!(error.code, "TOPIC_NOT_ALLOWED");

    let mut stale = good.clone();
    stale.insert("Timestamp".into(), json!("2020-01-01T00:00:00.000Z"));
    assert_eq!(t.door.receive(None, &sign(stale)).await.unwrap_err().code, "STALE_MESSAGE");

    let mut tampered: serde_json::Map<String, Value> = serde_json::from_slice(&sign(good.clone())).unwrap();
    tampered.insert("Message".into(), json!(succeeded("match-evil", &[("t-1", &["mallory"])]).to_string()));
    let error = t.door.receive(None, &serde_json::to_vec(&tampered).unwrap()).await.unwrap_err();
    assert_eq!(error.code, "SIGNATURE_INVALID");

    let mut elsewhere: serde_json::Map<String, Value> = serde_json::from_slice(&sign(good.clone())).unwrap();
    elsewhere.insert("SigningCertURL".into(), json!("http://169.254.169.254/latest/cert.pem"));
    assert_eq!(
        t.door.receive(None, &serde_json::to_vec(&elsewhere).unwrap()).await.unwrap_err().code,
        "SIGNING_CERT_URL_REJECTED"
    );

    let raw = t.door.receive(None, event.to_string().as_bytes()).await.unwrap_err();
    assert_eq!(raw.code, "UNSIGNED_MESSAGE");

    let hello = sign(notification("msg-3", &json!("Hello world")));
    assert_eq!(t.door.receive(None, &hello).await.unwrap_err().code, "NOT_FLEXMATCH");

    let header_mismatch =
        t.door.receive(Some("SubscriptionConfirmation"), &sign(good.clone())).await.unwrap_err();
    assert_eq!(header_mismatch.code, "INVALID_REQUEST");

    let no_match_id = succeeded("", &[("t-1", &["alice"])]);
    let error = t.door.receive(None, &sign(notification("msg-4", &no_match_id))).await.unwrap_err();
    assert!(error.message.contains("detail.matchId"), "{error}");
    // FlexMatch's ids are UUIDs; anything that would leave an empty NATS subject token is refused.
    for (n, dotted) in ["fm.", ".fm", "f..m"].into_iter().enumerate() {
        let event = succeeded(dotted, &[("t-1", &["alice"])]);
        let error =
            t.door.receive(None, &sign(notification(&format!("msg-dot-{n}"), &event))).await.unwrap_err();
        assert_eq!(error.code, "INVALID_REQUEST", "{dotted:?}: {error}");
        assert!(error.message.contains("match_id"), "{dotted:?}: {error}");
    }

    assert!(t.service.accepted.lock().unwrap().is_empty(), "a refused message was placed");
    // The good message still goes through afterwards.
    assert!(matches!(t.door.receive(None, &sign(good)).await, Ok(Receipt::Accepted { .. })));
}

#[tokio::test]
async fn timed_out_and_cancelled_tickets_are_recorded_but_do_not_undo_a_match() {
    let t = test_door(true, UrlPolicy::Aws);
    let timed_out = json!({"detail-type": "GameLift Matchmaking Event", "resources": [],
        "detail": {"type": "MatchmakingTimedOut", "reason": "TimedOut", "message": "Removed from matchmaking due to timing out.",
                   "tickets": [{"ticketId": "t-9", "startTime": "2026-11-21T10:00:00Z", "players": [{"playerId": "p"}]}]}});
    let receipt = t.door.receive(None, &sign(notification("msg-10", &timed_out))).await.unwrap();
    assert_eq!(receipt, Receipt::Recorded { event: "MatchmakingTimedOut".into(), tickets: 1 });
    let ticket = t.door.ticket("t-9").await.unwrap().unwrap();
    assert_eq!(ticket.status, "timed_out");
    assert_eq!(ticket.reason.as_deref(), Some("TimedOut"));

    t.door
        .receive(None, &sign(notification("msg-11", &succeeded("match-9", &[("t-8", &["a"])]))))
        .await
        .unwrap();
    let late = json!({"detail-type": "GameLift Matchmaking Event",
        "detail": {"type": "MatchmakingCancelled", "tickets": [{"ticketId": "t-8"}]}});
    let receipt = t.door.receive(None, &sign(notification("msg-12", &late))).await.unwrap();
    assert_eq!(receipt, Receipt::Recorded { event: "MatchmakingCancelled".into(), tickets: 0 });
    assert_eq!(t.door.ticket("t-8").await.unwrap().unwrap().status, "placing");

    let other =
        json!({"detail-type": "GameLift Matchmaking Event", "detail": {"type": "PotentialMatchCreated"}});
    let receipt = t.door.receive(None, &sign(notification("msg-13", &other))).await.unwrap();
    assert_eq!(receipt, Receipt::Acknowledged { event: "PotentialMatchCreated".into() });
    assert!(t.door.ticket("t-unknown").await.unwrap().is_none());
}

/// A local fake of SNS's ConfirmSubscription endpoint, counting visits.
async fn fake_sns() -> (u16, Arc<Mutex<Vec<String>>>) {
    use axum::extract::{RawQuery, State};
    let visits = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(
                |State(v): State<Arc<Mutex<Vec<String>>>>, RawQuery(q): RawQuery| async move {
                    v.lock().unwrap().push(q.unwrap_or_default());
                    "<ConfirmSubscriptionResponse/>"
                },
            ),
        )
        .with_state(visits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, visits)
}

fn confirmation(message_id: &str, subscribe_url: &str) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("Type".into(), json!("SubscriptionConfirmation"));
    m.insert("MessageId".into(), json!(message_id));
    m.insert("Token".into(), json!("token-123"));
    m.insert("TopicArn".into(), json!(TOPIC));
    m.insert("Message".into(), json!("You have chosen to subscribe to the topic."));
    m.insert("SubscribeURL".into(), json!(subscribe_url));
    m.insert("Timestamp".into(), json!(now_text()));
    m
}

#[tokio::test]
async fn a_verified_subscription_confirmation_is_confirmed_by_get_on_subscribe_url() {
    let (port, visits) = fake_sns().await;
    let url = format!("http://127.0.0.1:{port}/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=token-123");
    let t = test_door(true, UrlPolicy::LoopbackForTests { port });
    let receipt =
        t.door.receive(Some("SubscriptionConfirmation"), &sign(confirmation("c-1", &url))).await.unwrap();
    assert_eq!(receipt, Receipt::Confirmed);
    assert_eq!(visits.lock().unwrap().len(), 1);
    assert!(visits.lock().unwrap()[0].contains("Token=token-123"));

    // Forged (tampered after signing): never visited.
    let mut forged: serde_json::Map<String, Value> =
        serde_json::from_slice(&sign(confirmation("c-2", &url))).unwrap();
    forged.insert("Token".into(), json!("token-evil"));
    assert!(t.door.receive(None, &serde_json::to_vec(&forged).unwrap()).await.is_err());
    assert_eq!(visits.lock().unwrap().len(), 1);

    // With auto_confirm off the URL is only logged.
    let manual = test_door(false, UrlPolicy::LoopbackForTests { port });
    let receipt = manual.door.receive(None, &sign(confirmation("c-3", &url))).await.unwrap();
    assert_eq!(receipt, Receipt::ConfirmationLogged);
    assert_eq!(visits.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn subscribe_urls_off_the_aws_rule_are_never_visited() {
    let (port, visits) = fake_sns().await;
    // Production policy: a genuine signature does not make a loopback SubscribeURL acceptable.
    let t = test_door(true, UrlPolicy::Aws);
    for url in [
        format!("http://127.0.0.1:{port}/?Action=ConfirmSubscription"),
        format!("http://localhost:{port}/?Action=ConfirmSubscription"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription".to_owned(),
    ] {
        let error = t.door.receive(None, &sign(confirmation(&format!("c-{url}"), &url))).await.unwrap_err();
        assert_eq!(error.code, "SUBSCRIBE_URL_REJECTED", "{url}");
    }
    assert!(visits.lock().unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Results webhook

#[test]
fn webhook_signatures_follow_standard_webhooks() {
    // The example of the Standard Webhooks specification.
    let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let body = br#"{"test": 2432232314}"#;
    assert_eq!(
        secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
    assert!(WebhookSecret::parse("whsec_!!!").is_err());
    assert!(WebhookSecret::parse("").is_err());
    let plain = WebhookSecret::parse("plain-secret").unwrap();
    assert_ne!(plain.sign("a", 1, b"x"), plain.sign("a", 1, b"y"));
}

#[test]
fn webhook_ids_are_stable_per_outcome_and_distinct_between_outcomes() {
    let assignment = Assignment {
        match_id: "m-1".into(),
        session_id: bridge::session_id("sns", "m-1"),
        image: "demo-game".into(),
        location: "eu-west-1".into(),
        host: "203.0.113.1".into(),
        ports: vec![],
        players: vec!["a".into()],
        latency_ms: BTreeMap::new(),
        placed_at: OffsetDateTime::UNIX_EPOCH,
        latency_cap_exceeded: false,
    };
    let placed = Outcome::Placed(assignment.clone());
    let id = ResultsWebhook::message_id("sns", &placed);
    assert!(id.starts_with("msg_"));
    assert_eq!(id, ResultsWebhook::message_id("sns", &placed));
    let other = Outcome::Placed(Assignment { match_id: "m-2".into(), ..assignment });
    assert_ne!(id, ResultsWebhook::message_id("sns", &other));
}

/// A receiver answering the given statuses in turn (the last one forever), recording requests.
async fn scripted_receiver(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<axum::http::HeaderMap>>>) {
    use axum::extract::State;
    type Seen = Arc<Mutex<Vec<axum::http::HeaderMap>>>;
    let seen: Seen = Arc::default();
    let state = (seen.clone(), Arc::new(statuses));
    let app =
        axum::Router::new()
            .route(
                "/hook",
                axum::routing::post(
                    |State((seen, statuses)): State<(Seen, Arc<Vec<u16>>)>,
                     headers: axum::http::HeaderMap| async move {
                        let mut seen = seen.lock().unwrap();
                        let status = statuses[seen.len().min(statuses.len() - 1)];
                        seen.push(headers);
                        axum::http::StatusCode::from_u16(status).unwrap()
                    },
                ),
            )
            .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test]
async fn webhook_failures_are_transient_for_5xx_408_429_and_permanent_for_other_4xx() {
    use bridge::ports::OutcomeSink;
    let failure = Outcome::Failed(bridge::Failure {
        match_id: "m-f".into(),
        error: bridge::FailureDetail {
            code: bridge::FailureCode::NoCapacity,
            message: "full".into(),
            retryable: true,
        },
    });
    for (status, expected) in [
        (200, None),
        (503, Some(false)),
        (408, Some(false)),
        (429, Some(false)),
        (400, Some(true)),
        (401, Some(true)),
    ] {
        let (url, seen) = scripted_receiver(vec![status]).await;
        let secret = WebhookSecret::parse("s3cret").unwrap();
        let sink = ResultsWebhook::new(&url, secret, Duration::from_secs(2), vec!["sns".into()]).unwrap();
        assert!(sink.wants("sns") && !sink.wants("http"));
        let result = sink.deliver("sns", &failure).await;
        assert_eq!(result.as_ref().err().map(|e| e.permanent), expected, "{status}: {result:?}");
        let headers = seen.lock().unwrap()[0].clone();
        for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            assert!(headers.contains_key(name), "{status}: no {name}");
        }
    }
    // Nobody listening: transient.
    let sink = ResultsWebhook::new(
        "http://127.0.0.1:9/hook",
        WebhookSecret::parse("s").unwrap(),
        Duration::from_secs(1),
        vec![],
    )
    .unwrap();
    assert!(!sink.deliver("sns", &failure).await.unwrap_err().permanent);
}

#[tokio::test]
async fn pinned_certificates_are_cached_for_their_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("SimpleNotificationService-gameye-bridge-test.pem");
    std::fs::write(&path, TEST_CERT).unwrap();
    let cached = CertCache::new(
        UrlPolicy::Aws,
        Some(dir.path().to_owned()),
        Duration::from_secs(60),
        Duration::from_secs(1),
    );
    let uncached =
        CertCache::new(UrlPolicy::Aws, Some(dir.path().to_owned()), Duration::ZERO, Duration::from_secs(1));
    let first = cached.get(TEST_CERT_URL).await.unwrap();
    uncached.get(TEST_CERT_URL).await.unwrap();
    assert!(first.not_after > OffsetDateTime::now_utc());
    std::fs::write(&path, "not a certificate").unwrap();
    assert_eq!(cached.get(TEST_CERT_URL).await.unwrap(), first, "served from the cache");
    assert!(matches!(uncached.get(TEST_CERT_URL).await, Err(CertError::Invalid { .. })));
    // The URL rule applies before the pinned directory is even looked at.
    let error = cached
        .get("http://sns.us-east-1.amazonaws.com/SimpleNotificationService-gameye-bridge-test.pem")
        .await;
    assert!(matches!(error, Err(CertError::Rejected(_))), "{error:?}");
}

/// Concurrent first requests for one certificate URL make one fetch, and share its failure too;
/// nothing failed is kept, so the next request fetches again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_for_a_certificate_share_one_fetch() {
    use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
    let fetches = Arc::new(AtomicUsize::new(0));
    let status = Arc::new(AtomicU16::new(503));
    let app = axum::Router::new().fallback({
        let (fetches, status) = (fetches.clone(), status.clone());
        move || async move {
            fetches.fetch_add(1, Ordering::SeqCst);
            // Slow enough that every request below arrives while it is out.
            tokio::time::sleep(Duration::from_millis(300)).await;
            (axum::http::StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap(), TEST_CERT)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut certs = CertCache::new(UrlPolicy::Aws, None, Duration::from_secs(60), Duration::from_secs(5));
    certs.fetch_origin = Some(origin);

    let many = || futures::future::join_all((0..8).map(|_| certs.get(TEST_CERT_URL)));
    let failed = many().await;
    assert!(failed.iter().all(|r| matches!(r, Err(CertError::Unavailable { .. }))), "{failed:?}");
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "one fetch for eight requests");

    status.store(200, Ordering::SeqCst);
    let loaded = many().await;
    let first = loaded[0].as_ref().unwrap();
    assert!(loaded.iter().all(|r| r.as_ref().is_ok_and(|cert| cert == first)));
    assert_eq!(fetches.load(Ordering::SeqCst), 2, "the failure was not kept; one more fetch for eight");
    certs.get(TEST_CERT_URL).await.unwrap();
    assert_eq!(fetches.load(Ordering::SeqCst), 2, "then served from the cache");
}

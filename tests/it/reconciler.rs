//! The session reconciler end to end: real redis-server (and nats-server), the emulator over HTTP,
//! `gameye-bridge` processes scanning every few hundred milliseconds.

use std::time::{Duration, Instant};

use futures::StreamExt;
use gameye_emulator::{DEFAULT_TOKEN, World};
use serde_json::{Value, json};

use crate::harness::{BridgeProcess, NatsServer, RedisServer};
use crate::stack::{Stack, match_with, start_bridge, world};

async fn metrics_of(bridge: &BridgeProcess) -> String {
    reqwest::get(format!("{}/metrics", bridge.base_url)).await.unwrap().text().await.unwrap()
}

/// The value of the metric line `name` exactly (labels included), 0 when absent.
pub(crate) async fn metric(bridge: &BridgeProcess, name: &str) -> f64 {
    let text = metrics_of(bridge).await;
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map(|value| value.trim().parse().unwrap())
        .unwrap_or(0.0)
}

pub(crate) const COMPLETE: &str = "gameye_bridge_reconciler_scans_total{result=\"complete\"}";
const SCANNING: &str = "gameye_bridge_reconciler_scanning";
const INCOMPLETE: &str = "gameye_bridge_reconciler_scans_total{result=\"incomplete\"}";
const ENDED: &str = "gameye_bridge_reconciler_sessions_ended_total";
const ADOPTED: &str = "gameye_bridge_reconciler_sessions_adopted_total";
const REFRESHED: &str = "gameye_bridge_reconciler_status_refreshes_total";
const LEADER: &str = "gameye_bridge_reconciler_leader";
const PLAYER_SYNCS_QUEUED: &str = "gameye_bridge_reconciler_player_syncs_queued_total";

pub(crate) async fn wait_metric(bridge: &BridgeProcess, name: &str, at_least: f64, within: Duration) -> f64 {
    let deadline = Instant::now() + within;
    loop {
        let value = metric(bridge, name).await;
        if value >= at_least {
            return value;
        }
        assert!(Instant::now() < deadline, "{name} = {value} < {at_least}:\n{}", bridge.logs());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn place(stack: &Stack, match_id: &str) -> String {
    let body = json!({"match_id": match_id, "players": [{"id": "p0", "latencies": {"eu-west-1": 10}}]});
    let (status, assignment) = stack.post_match(&body).await;
    assert_eq!(status, 200, "{assignment}");
    assignment["session_id"].as_str().unwrap().to_owned()
}

async fn bridge_session(stack: &Stack, id: &str) -> (u16, Value) {
    stack.get(&format!("/v1/sessions/{id}")).await
}

/// `DELETE /session/{id}` at the emulator, behind the bridge's back.
async fn stop_at_gameye(stack: &Stack, id: &str) {
    let response = reqwest::Client::new()
        .delete(format!("{}/session/{id}", stack.emulator.url().trim_end_matches('/')))
        .bearer_auth(DEFAULT_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

/// `POST /session` at the emulator with the bridge's labels, as if a placement's record were lost.
async fn create_at_gameye(stack: &Stack, id: &str, match_id: &str) {
    create_at_gameye_for(stack, id, match_id, None).await;
}

/// The label the stack's bridge (default key prefix) puts on the sessions it starts.
const OUR_DEPLOYMENT: &str = "gameye-bridge";

/// [`create_at_gameye`] with a TTL in whole seconds (the emulator takes them literally).
pub(crate) async fn create_at_gameye_for(stack: &Stack, id: &str, match_id: &str, ttl_s: Option<u64>) {
    create_at_gameye_as(stack, id, match_id, ttl_s, Some(OUR_DEPLOYMENT)).await;
}

/// A session started at Gameye with the labels a bridge of `deployment` gives its sessions
/// (`None`: a bridge from before the deployment label).
async fn create_at_gameye_as(
    stack: &Stack,
    id: &str,
    match_id: &str,
    ttl_s: Option<u64>,
    deployment: Option<&str>,
) {
    let mut body = json!({
        "id": id,
        "location": "eu-west-1",
        "image": "demo-game",
        "version": "1.0.0",
        "labels": {"gameye-bridge.match": match_id, "gameye-bridge.source": "http", "mode": "solo"},
    });
    if let Some(deployment) = deployment {
        body["labels"]["gameye-bridge.deployment"] = json!(deployment);
    }
    if let Some(ttl) = ttl_s {
        body["ttl"] = json!(ttl);
    }
    let response = reqwest::Client::new()
        .post(format!("{}/session", stack.emulator.url().trim_end_matches('/')))
        .bearer_auth(DEFAULT_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

pub(crate) async fn wait_session_status(stack: &Stack, id: &str, status: u16, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (got, body) = bridge_session(stack, id).await;
        if got == status {
            return body;
        }
        assert!(Instant::now() < deadline, "{id}: {got} {body}, wanted {status}:\n{}", stack.bridge.logs());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A bridge with NATS and the reconciler at `interval`, and a subscription to ended-session events
/// (the servers and the client are returned so they live as long as the test).
async fn stack_with_nats(interval: &str) -> (Stack, NatsServer, async_nats::Client, async_nats::Subscriber) {
    let emulator = gameye_emulator::start(world(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let redis = RedisServer::start();
    let nats = NatsServer::start();
    let nats_url = nats.url();
    let bridge = start_bridge(
        &emulator,
        &redis,
        &[("BRIDGE_NATS__URL", nats_url.as_str()), ("BRIDGE_RECONCILER__INTERVAL", interval)],
    )
    .await;
    let stack = Stack { emulator, redis, bridge, http: reqwest::Client::new() };
    let client = async_nats::ConnectOptions::new().connect(nats_url.as_str()).await.unwrap();
    let ended = client.subscribe("gameye.session.ended.>").await.unwrap();
    client.flush().await.unwrap();
    (stack, nats, client, ended)
}

/// The reconciler lists a session while its create's answer is still on the way and adopts it
/// (no record yet, and it cannot know the match's players). The placement then finds a record
/// there: its players still get their seats, or backfill could fill the session and turn their
/// joins away.
#[tokio::test]
async fn a_session_adopted_while_its_create_answers_still_seats_the_matchs_players() {
    let stack = Stack::start_with(&[("BRIDGE_RECONCILER__INTERVAL", "200ms")]).await;
    stack.set_faults(json!([{"operation": "session-run", "delay_ms": 2000, "after": true}])).await;
    let mut body = match_with("m-adopted-early", &[&[("eu-west-1", 20)], &[("eu-west-1", 30)]]);
    body["max_players"] = json!(2);
    let (status, assignment) = stack.post_match(&body).await;
    assert_eq!(status, 200, "{assignment}");
    let id = assignment["session_id"].as_str().unwrap().to_owned();
    assert!(metric(&stack.bridge, ADOPTED).await >= 1.0, "not adopted meanwhile:\n{}", stack.bridge.logs());
    let (status, seats) = bridge_session(&stack, &id).await;
    assert_eq!(status, 200, "{seats}");
    let reserved: Vec<&Value> = seats["reservations"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["players"].as_array().unwrap())
        .collect();
    assert_eq!(reserved, [&json!("p0"), &json!("p1")], "{seats}");
    assert_eq!(seats["open_seats"], 0, "{seats}");
}

/// A session started by a bridge from before the deployment label is missing from the filtered
/// listing, yet runs: its record must stay (Gameye is asked before anything is ended).
#[tokio::test]
async fn a_recorded_session_missing_from_the_listing_but_running_is_not_ended() {
    let stack = Stack::start_with(&[("BRIDGE_RECONCILER__INTERVAL", "200ms")]).await;
    let old = uuid::Uuid::new_v4();
    create_at_gameye_as(&stack, &old.to_string(), "m-old", None, None).await;
    // Its record, as the older bridge wrote it when placing it.
    let store = adapters::store::RedisStore::connect(&stack.redis.url(), "gameye-bridge").await.unwrap();
    let new = bridge::seats::NewSession {
        session_id: old,
        capacity: 4,
        status: bridge::SessionStatus::Running,
        info: bridge::seats::SessionInfo {
            image: "demo-game".to_owned(),
            version: None,
            location: "eu-west-1".to_owned(),
            labels: Default::default(),
            metadata: bridge::seats::JsonText::of(&json!({"match_id": "m-old"})).unwrap(),
        },
        players: Vec::new(),
        joined: Vec::new(),
        reservation_ttl: Duration::from_secs(60),
        now: time::OffsetDateTime::now_utc(),
    };
    use bridge::ports::SeatStore;
    store.create_session(&new, Duration::from_secs(3600)).await.unwrap().unwrap();
    assert_eq!(bridge_session(&stack, &old.to_string()).await.0, 200);

    let scans = metric(&stack.bridge, COMPLETE).await;
    wait_metric(&stack.bridge, COMPLETE, scans + 5.0, Duration::from_secs(15)).await;
    assert_eq!(bridge_session(&stack, &old.to_string()).await.0, 200, "kept:\n{}", stack.bridge.logs());
    assert_eq!(metric(&stack.bridge, ENDED).await, 0.0);

    // Once Gameye stops it, it is ended as usual.
    stop_at_gameye(&stack, &old.to_string()).await;
    wait_session_status(&stack, &old.to_string(), 404, Duration::from_secs(10)).await;
    assert_eq!(metric(&stack.bridge, ENDED).await, 1.0);
}

#[tokio::test]
async fn reconciler_ends_a_session_gone_at_gameye_after_two_scans_and_announces_it_once() {
    let (stack, nats, _client, mut ended) = stack_with_nats("700ms").await;

    let id = place(&stack, "m-gone").await;
    let scans = metric(&stack.bridge, COMPLETE).await;
    wait_metric(&stack.bridge, COMPLETE, scans + 1.0, Duration::from_secs(10)).await;
    assert_eq!(bridge_session(&stack, &id).await.0, 200);

    stop_at_gameye(&stack, &id).await;
    let stopped_at = metric(&stack.bridge, COMPLETE).await;
    // One complete scan after the stop: the session is still there.
    let mut seen_one_scan_later = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen_one_scan_later {
        assert!(Instant::now() < deadline, "no scan seen:\n{}", stack.bridge.logs());
        // A scan may end the session before it is counted complete: read only between scans.
        let before = (metric(&stack.bridge, COMPLETE).await, metric(&stack.bridge, SCANNING).await);
        let (status, _) = bridge_session(&stack, &id).await;
        let after = (metric(&stack.bridge, COMPLETE).await, metric(&stack.bridge, SCANNING).await);
        if before == (stopped_at + 1.0, 0.0) && after == before {
            assert_eq!(status, 200, "ended after a single scan");
            seen_one_scan_later = true;
        }
        assert!(
            before.0 <= stopped_at + 1.0,
            "missed the first scan after the stop; retry with a longer interval"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_session_status(&stack, &id, 404, Duration::from_secs(10)).await;
    // Ended during the second scan; it is counted complete when it reaches the end.
    wait_metric(&stack.bridge, COMPLETE, stopped_at + 2.0, Duration::from_secs(10)).await;
    assert_eq!(metric(&stack.bridge, ENDED).await, 1.0);

    let message = tokio::time::timeout(Duration::from_secs(5), ended.next()).await.unwrap().unwrap();
    assert_eq!(message.subject.as_str(), format!("gameye.session.ended.{id}"));
    let body: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(body["session_id"], id.as_str());
    assert_eq!(body["match_id"], "m-gone");
    // Announced once: later scans leave the ended session alone.
    let now = metric(&stack.bridge, COMPLETE).await;
    wait_metric(&stack.bridge, COMPLETE, now + 2.0, Duration::from_secs(10)).await;
    assert!(tokio::time::timeout(Duration::from_millis(300), ended.next()).await.is_err(), "announced twice");
    assert_eq!(metric(&stack.bridge, ENDED).await, 1.0);
    drop(nats);
}

#[tokio::test]
async fn reconciler_adopts_orphans_and_sessions_whose_records_redis_lost() {
    let stack = Stack::start_with(&[
        ("BRIDGE_RECONCILER__INTERVAL", "300ms"),
        ("BRIDGE_SEATS__CAPACITY", "{demo-game=6}"),
    ])
    .await;
    let placed = place(&stack, "m-flushed").await;
    // A match that named its own seats keeps them through the adoption.
    let body = json!({"match_id": "m-three", "players": [{"id": "t0"}], "max_players": 3});
    let (status, three) = stack.post_match(&body).await;
    assert_eq!(status, 200, "{three}");
    let three = three["session_id"].as_str().unwrap().to_owned();
    let (status, body) = crate::sessions::join(&stack, &placed, &["a", "b"]).await;
    assert_eq!(status, 200, "{body}");
    crate::sessions::assert_gameye_players(&stack, &placed, crate::sessions::set(&["a", "b"])).await;
    // Redis loses everything; the session still runs at Gameye.
    let redis = redis::Client::open(stack.redis.url()).unwrap();
    let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut connection).await.unwrap();
    assert_eq!(bridge_session(&stack, &placed).await.0, 404);

    let orphan = uuid::Uuid::new_v4().to_string();
    create_at_gameye(&stack, &orphan, "m-orphan").await;
    // Another deployment's session (say staging, on the same Gameye account) is not ours to adopt.
    let foreign = uuid::Uuid::new_v4().to_string();
    create_at_gameye_as(&stack, &foreign, "m-foreign", None, Some("gameye-bridge-staging")).await;

    let view = wait_session_status(&stack, &orphan, 200, Duration::from_secs(10)).await;
    assert_eq!(view["match_id"], "m-orphan", "{view}");
    assert_eq!(view["capacity"], 6, "{view}");
    assert_eq!(view["location"], "eu-west-1", "{view}");
    assert_eq!(view["labels"]["mode"], "solo", "{view}");
    assert!(!view["host"].as_str().unwrap_or_default().is_empty(), "{view}");
    assert!(!view["ports"].as_array().unwrap().is_empty(), "{view}");
    let view = wait_session_status(&stack, &placed, 200, Duration::from_secs(10)).await;
    assert_eq!(view["match_id"], "m-flushed", "{view}");
    // Who had joined comes back from Gameye, and Gameye keeps them.
    assert_eq!(view["players"], json!(["a", "b"]), "{view}");
    assert_eq!(view["open_seats"], 4, "{view}");
    let view = wait_session_status(&stack, &three, 200, Duration::from_secs(10)).await;
    assert_eq!((&view["capacity"], &view["labels"]), (&json!(3), &json!({})), "{view}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(crate::sessions::gameye_players(&stack, &placed).await, crate::sessions::set(&["a", "b"]));

    let (status, list) = stack.get("/v1/sessions").await;
    assert_eq!(status, 200, "{list}");
    let listed: Vec<&str> =
        list["sessions"].as_array().unwrap().iter().filter_map(|s| s["session_id"].as_str()).collect();
    assert!(listed.contains(&orphan.as_str()) && listed.contains(&placed.as_str()), "{list}");
    assert!(!listed.contains(&foreign.as_str()), "{list}");
    assert_eq!(bridge_session(&stack, &foreign).await.0, 404);
    assert_eq!(metric(&stack.bridge, ADOPTED).await, 3.0);
}

#[tokio::test]
async fn reconciler_queues_a_player_sync_when_gameye_counts_other_players_than_the_record() {
    let stack = Stack::start_with(&[
        ("BRIDGE_RECONCILER__INTERVAL", "300ms"),
        ("BRIDGE_SEATS__GAMEYE_SYNC__POLL", "100ms"),
    ])
    .await;
    let placed = place(&stack, "m-unsynced").await;
    // A join whose sync was never queued (the bridge stopped between the two): only the record has it.
    let redis = redis::Client::open(stack.redis.url()).unwrap();
    let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
    let record = format!("gameye-bridge:seats:{{{placed}}}");
    let _: () =
        redis::cmd("HSET").arg(&record).arg("j:late").arg("1").query_async(&mut connection).await.unwrap();
    assert!(crate::sessions::gameye_players(&stack, &placed).await.is_empty());

    crate::sessions::assert_gameye_players(&stack, &placed, crate::sessions::set(&["late"])).await;
    assert!(metric(&stack.bridge, PLAYER_SYNCS_QUEUED).await >= 1.0);
}

#[tokio::test]
async fn reconciler_marks_created_sessions_running_when_gameye_runs_them() {
    let world = World { start_delay: Duration::from_secs(2), ..world() };
    let emulator = gameye_emulator::start(world, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let redis = RedisServer::start();
    let bridge = start_bridge(&emulator, &redis, &[("BRIDGE_RECONCILER__INTERVAL", "300ms")]).await;
    let stack = Stack { emulator, redis, bridge, http: reqwest::Client::new() };
    let id = place(&stack, "m-starting").await;
    let (status, view) = bridge_session(&stack, &id).await;
    assert_eq!((status, view["status"].as_str()), (200, Some("created")), "{view}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, view) = bridge_session(&stack, &id).await;
        if view["status"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "still {view}:\n{}", stack.bridge.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&stack.bridge, REFRESHED).await, 1.0);
}

#[tokio::test]
async fn the_reconciler_reads_redis_on_a_connection_of_its_own() {
    // Its pipelines of hundreds of record reads must not queue in front of placements' commands.
    let stack = Stack::start_with(&[("BRIDGE_RECONCILER__INTERVAL", "300ms")]).await;
    let client = redis::Client::open(stack.redis.url()).unwrap();
    let mut monitor = client.get_async_monitor().await.unwrap().into_on_message::<String>();
    place(&stack, "m-own-connection").await;

    // MONITOR lines read `<time> [<db> <client address>] "<COMMAND>" "<arg>" …`.
    let client_of = |line: &str| {
        line.split(['[', ']']).nth(1).and_then(|db_client| db_client.split(' ').nth(1)).map(str::to_owned)
    };
    let (mut placing, mut scanning) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while placing.is_none() || scanning.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = tokio::time::timeout(left, monitor.next())
            .await
            .unwrap_or_else(|_| {
                panic!("no claim or no scan seen: placing {placing:?}, scanning {scanning:?}")
            })
            .expect("the monitor stream ended");
        if line.contains("\"SET\"") && line.contains("match:{m-own-connection}") {
            placing = placing.or(client_of(&line));
        } else if line.contains("\"ZSCAN\" \"gameye-bridge:{seats}:sessions\"") {
            scanning = scanning.or(client_of(&line));
        }
    }
    assert_ne!(placing, scanning, "the reconciler scanned on the placements' connection");
}

#[tokio::test]
async fn only_one_bridge_reconciles_at_a_time_and_another_takes_over_when_it_dies() {
    let stack = Stack::start_with(&[("BRIDGE_RECONCILER__INTERVAL", "300ms")]).await;
    let second =
        start_bridge(&stack.emulator, &stack.redis, &[("BRIDGE_RECONCILER__INTERVAL", "300ms")]).await;
    let first = &stack.bridge;
    // Whoever got the lease scans; the other never does.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (leader, standby) = loop {
        let (a, b) = (metric(first, COMPLETE).await, metric(&second, COMPLETE).await);
        if a >= 4.0 || b >= 4.0 {
            break if a >= 4.0 { (first, &second) } else { (&second, first) };
        }
        assert!(Instant::now() < deadline, "no scans: {a} {b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(metric(standby, COMPLETE).await, 0.0, "both reconcile");
    assert_eq!(metric(standby, LEADER).await, 0.0);
    assert_eq!(metric(leader, LEADER).await, 1.0);

    // The leader dies without releasing; after its lease (3 intervals) the other takes over.
    let leader_is_first = std::ptr::eq(leader, first);
    let standby_scans_before = metric(standby, COMPLETE).await;
    assert_eq!(standby_scans_before, 0.0);
    let survivor = if leader_is_first {
        stack.bridge.signal("KILL");
        &second
    } else {
        second.signal("KILL");
        &stack.bridge
    };
    wait_metric(survivor, COMPLETE, 2.0, Duration::from_secs(10)).await;
    assert_eq!(metric(survivor, LEADER).await, 1.0);
}

#[tokio::test]
async fn a_failing_gameye_listing_ends_nothing() {
    let stack = Stack::start_with(&[("BRIDGE_RECONCILER__INTERVAL", "300ms")]).await;
    let id = place(&stack, "m-kept").await;
    let scans = metric(&stack.bridge, COMPLETE).await;
    wait_metric(&stack.bridge, COMPLETE, scans + 1.0, Duration::from_secs(10)).await;

    stack.set_faults(json!([{"operation": "session-list", "status": 503, "probability": 1.0}])).await;
    // Even a session really gone is not ended on incomplete scans.
    stop_at_gameye(&stack, &id).await;
    let failed = metric(&stack.bridge, INCOMPLETE).await;
    wait_metric(&stack.bridge, INCOMPLETE, failed + 4.0, Duration::from_secs(10)).await;
    let (status, view) = bridge_session(&stack, &id).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(metric(&stack.bridge, ENDED).await, 0.0);
}

#[tokio::test]
async fn reconciler_ends_a_session_whose_gameye_ttl_expired_and_announces_it_exactly_once() {
    let (stack, nats, _client, mut ended) = stack_with_nats("300ms").await;

    // A session living three seconds: adopted while it runs, ended once Gameye's TTL ran out.
    let id = uuid::Uuid::new_v4().to_string();
    create_at_gameye_for(&stack, &id, "m-ttl", Some(3)).await;
    wait_session_status(&stack, &id, 200, Duration::from_secs(3)).await;
    wait_session_status(&stack, &id, 404, Duration::from_secs(10)).await;

    let message = tokio::time::timeout(Duration::from_secs(5), ended.next()).await.unwrap().unwrap();
    assert_eq!(message.subject.as_str(), format!("gameye.session.ended.{id}"));
    let now = metric(&stack.bridge, COMPLETE).await;
    wait_metric(&stack.bridge, COMPLETE, now + 3.0, Duration::from_secs(10)).await;
    assert!(tokio::time::timeout(Duration::from_millis(300), ended.next()).await.is_err(), "announced twice");
    assert_eq!(metric(&stack.bridge, ENDED).await, 1.0);
    drop(nats);
}

/// More sessions than one page of records holds, and a paced scan: every new session is marked
/// running and every session stopped at Gameye is ended, the others kept, across pages.
#[tokio::test]
async fn a_paced_scan_gets_through_every_page_of_many_sessions() {
    const SESSIONS: usize = 600;
    let stack = Stack::start_with(&[
        ("BRIDGE_RECONCILER__INTERVAL", "200ms"),
        ("BRIDGE_RECONCILER__MAX_BUSY", "0.2"),
    ])
    .await;
    let mut ids = Vec::new();
    for batch in (0..SESSIONS).collect::<Vec<_>>().chunks(100) {
        let placed = batch.iter().map(|n| {
            let stack = &stack;
            async move { place(stack, &format!("m-many-{n}")).await }
        });
        ids.extend(futures::future::join_all(placed).await);
    }
    // Generous bounds: the scan keeps itself to a fifth of the time it is given, so it is slow on
    // a machine busy with the rest of the suite (it once ended 153 of 200 in 30 s there).
    wait_metric(&stack.bridge, REFRESHED, SESSIONS as f64, Duration::from_secs(90)).await;

    let stopped: Vec<&String> = ids.iter().step_by(3).collect();
    for id in &stopped {
        stop_at_gameye(&stack, id).await;
    }
    wait_metric(&stack.bridge, ENDED, stopped.len() as f64, Duration::from_secs(90)).await;
    // Two more complete scans: nothing else is ended.
    let scans = metric(&stack.bridge, COMPLETE).await;
    wait_metric(&stack.bridge, COMPLETE, scans + 2.0, Duration::from_secs(90)).await;
    assert_eq!(metric(&stack.bridge, ENDED).await, stopped.len() as f64);
    assert_eq!(metric(&stack.bridge, ADOPTED).await, 0.0, "every record found, none taken for an orphan");
    for (n, id) in ids.iter().enumerate().step_by(50) {
        let (status, view) = bridge_session(&stack, id).await;
        let expected = if n % 3 == 0 { 404 } else { 200 };
        assert_eq!(status, expected, "{id}: {view}");
    }
    assert_eq!(
        metric(&stack.bridge, "gameye_bridge_reconciler_sessions_recorded").await,
        (SESSIONS - stopped.len()) as f64
    );
}

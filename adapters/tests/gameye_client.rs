//! The typed Gameye client against the emulator over real HTTP, including every injected fault.

use std::time::Duration;

use adapters::config::Secret;
use adapters::gameye::*;
use gameye_emulator::{DEFAULT_TOKEN, RunningEmulator, World};
use serde_json::json;

async fn emulator_with(world: World) -> RunningEmulator {
    gameye_emulator::start(world, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

async fn emulator() -> RunningEmulator {
    emulator_with(World::default()).await
}

fn client_for(emulator: &RunningEmulator, token: &str) -> GameyeClient {
    client_with_timeout(emulator, token, Duration::from_secs(5))
}

fn client_with_timeout(emulator: &RunningEmulator, token: &str, timeout: Duration) -> GameyeClient {
    let config = GameyeClientConfig {
        base_url: emulator.url(),
        token: Secret::new(token),
        connect_timeout: Duration::from_secs(1),
        request_timeout: timeout,
        pool_max_idle: 8,
    };
    GameyeClient::new(&config, None).unwrap()
}

async fn set_faults(emulator: &RunningEmulator, rules: serde_json::Value) {
    let response = reqwest::Client::new()
        .put(format!("{}/_emulator/faults", emulator.url()))
        .json(&rules)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "setting faults: {}", response.status());
}

fn create(id: &str, location: &str) -> CreateSession<'static> {
    CreateSession {
        id: Some(id.to_owned()),
        location: location.to_owned().into(),
        image: "demo-game".into(),
        ttl: Some(Duration::from_secs(3600)),
        ..Default::default()
    }
}

#[tokio::test]
async fn create_describe_list_join_leave_stop_round_trip() {
    let emulator = emulator().await;
    let client = client_for(&emulator, DEFAULT_TOKEN);
    let mut body = create("11111111-1111-4111-8111-111111111111", "eu-west-1");
    body.labels.to_mut().insert("gameye-bridge.match".into(), "m-1".into());
    body.env.to_mut().insert("MODE".into(), "ranked".into());

    let created = client.create_session(&body).await.unwrap();
    assert_eq!(created.id.as_deref(), Some("11111111-1111-4111-8111-111111111111"));
    assert!(!created.host.is_empty());
    assert_eq!(created.ports.len(), 2);
    assert!(created.ports.iter().all(|p| (20000..=30000).contains(&p.host)));

    let described = client.describe_session("11111111-1111-4111-8111-111111111111").await.unwrap();
    assert_eq!(described.session.location, "eu-west-1");
    assert_eq!(described.session.tag.as_deref(), Some("1.0.0"), "highest-priority tag by default");
    let mut described_ports = described.session.ports.clone();
    let mut created_ports = created.ports.clone();
    described_ports.sort_by_key(|p| p.container);
    created_ports.sort_by_key(|p| p.container);
    assert_eq!(described_ports, created_ports, "port map and port array describe the same ports");
    assert_eq!(described.session.labels.user.get("gameye-bridge.match").map(String::as_str), Some("m-1"));
    assert!(described.session.created > 1_600_000_000_000, "created is in milliseconds");

    let mut filter = ListFilter { all: true, ..Default::default() };
    filter.labels.insert("gameye-bridge.match".into(), "m-1".into());
    let listed = client.list_sessions(&filter).await.unwrap();
    assert_eq!(listed.len(), 1);
    filter.labels.insert("gameye-bridge.match".into(), "other".into());
    assert!(client.list_sessions(&filter).await.unwrap().is_empty());

    let players = vec!["p1".to_owned(), "p2".to_owned()];
    assert_eq!(client.join_players(&created_id(&created), &players).await.unwrap().count, 2);
    assert_eq!(client.join_players(&created_id(&created), &players).await.unwrap().count, 2, "idempotent");
    let left = client.leave_players(&created_id(&created), &players[..1]).await.unwrap();
    assert_eq!(left.count, 1, "leave sends `session`, which the live API needs");
    let described = client.describe_session(&created_id(&created)).await.unwrap();
    assert_eq!(described.players.joined, vec!["p2".to_owned()]);

    assert_eq!(client.stop_session(&created_id(&created)).await.unwrap(), StopOutcome::Stopped);
    assert_eq!(client.stop_session(&created_id(&created)).await.unwrap(), StopOutcome::AlreadyGone, "409");
    assert_eq!(client.stop_session("never-existed").await.unwrap(), StopOutcome::AlreadyGone, "404");
    let error = client.describe_session(&created_id(&created)).await.unwrap_err();
    assert_eq!(error.status(), Some(404));
}

fn created_id(created: &SessionCreated) -> String {
    created.id.clone().unwrap()
}

#[tokio::test]
async fn available_locations_and_tags() {
    let emulator = emulator().await;
    let client = client_for(&emulator, DEFAULT_TOKEN);
    let locations = client.available_locations("demo-game").await.unwrap();
    let ids: Vec<_> = locations.iter().map(|l| l.id.as_str()).collect();
    for expected in ["eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-northeast-1"] {
        assert!(ids.contains(&expected), "{ids:?}");
    }
    assert!(locations.iter().all(|l| !l.ips.is_empty()));
    assert_eq!(client.available_locations("no-such-game").await.unwrap_err().class(), ErrorClass::NotFound);
    assert!(client.tag_exists("eu-west-1", "demo-game", "1.0.0").await.unwrap());
    assert!(!client.tag_exists("eu-west-1", "demo-game", "9.9.9").await.unwrap());
    assert!(!client.tag_exists("eu-west-1", "no-such-game", "1.0.0").await.unwrap(), "404 means not there");
}

#[tokio::test]
async fn each_status_is_classified() {
    let emulator = emulator().await;
    let client = client_for(&emulator, DEFAULT_TOKEN);

    // 401: wrong token, not retryable, token never in the error text.
    let error = client_for(&emulator, "wrong-token").available_locations("demo-game").await.unwrap_err();
    assert_eq!(
        (error.status(), error.class(), error.is_retryable()),
        (Some(401), ErrorClass::Unauthorized, false)
    );
    assert!(!error.to_string().contains("wrong-token"));
    assert!(error.response().and_then(|r| r.identifier.clone()).is_some(), "ErrorResponse kept");

    // 404: unknown location / image / tag.
    let error = client.create_session(&create("s-404", "mars-1")).await.unwrap_err();
    assert_eq!(
        (error.status(), error.class(), error.is_retryable()),
        (Some(404), ErrorClass::NotFound, false)
    );
    let mut unknown_tag = create("s-404b", "eu-west-1");
    unknown_tag.tag = Some("0.0.0-nope".into());
    assert_eq!(client.create_session(&unknown_tag).await.unwrap_err().status(), Some(404));

    // 409: id reused.
    client.create_session(&create("s-409", "eu-west-1")).await.unwrap();
    let error = client.create_session(&create("s-409", "eu-west-1")).await.unwrap_err();
    assert_eq!(
        (error.status(), error.class(), error.is_retryable()),
        (Some(409), ErrorClass::Conflict, false)
    );

    // 422: Gameye rejects empty env values.
    let mut invalid = create("s-422", "eu-west-1");
    invalid.env.to_mut().insert("EMPTY".into(), String::new());
    let error = client.create_session(&invalid).await.unwrap_err();
    assert_eq!(
        (error.status(), error.class(), error.is_retryable()),
        (Some(422), ErrorClass::Invalid, false)
    );
    assert!(!error.response().unwrap().violations.is_empty());

    // 402 quota, 420 capacity, 5xx: injected.
    for (status, class, retryable) in [
        (402, ErrorClass::QuotaExceeded, false),
        (420, ErrorClass::NoCapacity, true),
        (500, ErrorClass::Unavailable, true),
        (503, ErrorClass::Unavailable, true),
        (504, ErrorClass::Unavailable, true),
    ] {
        set_faults(&emulator, json!([{"operation": "session-run", "status": status, "probability": 1.0}]))
            .await;
        let error = client.create_session(&create(&format!("s-{status}"), "eu-west-1")).await.unwrap_err();
        assert_eq!((error.status(), error.class(), error.is_retryable()), (Some(status), class, retryable));
        assert!(error.response().is_some(), "{status} carried an ErrorResponse");
    }
}

#[tokio::test]
async fn forbidden_when_the_token_lacks_the_scope() {
    let mut world = World::default();
    world.tokens.push(gameye_emulator::world::Token {
        token: "read-only".into(),
        scopes: vec![gameye_emulator::world::Scope::SessionRead],
    });
    let emulator = emulator_with(world).await;
    let client = client_for(&emulator, "read-only");
    let error = client.create_session(&create("s-403", "eu-west-1")).await.unwrap_err();
    assert_eq!(
        (error.status(), error.class(), error.is_retryable()),
        (Some(403), ErrorClass::Forbidden, false)
    );
    assert!(client.list_sessions(&ListFilter::default()).await.is_ok());
}

#[tokio::test]
async fn non_json_error_bodies_keep_their_status() {
    let emulator = emulator().await;
    let client = client_for(&emulator, DEFAULT_TOKEN);
    set_faults(
        &emulator,
        json!([{"operation": "session-list", "status": 502, "probability": 1.0, "non_json": true}]),
    )
    .await;
    let error = client.list_sessions(&ListFilter::default()).await.unwrap_err();
    assert_eq!(error.status(), Some(502));
    assert!(error.response().is_none());
    assert!(error.is_retryable());
    assert!(error.to_string().contains("non-JSON"), "{error}");
}

#[tokio::test]
async fn hung_and_slow_answers_time_out_and_are_retryable() {
    let emulator = emulator().await;
    let client = client_with_timeout(&emulator, DEFAULT_TOKEN, Duration::from_millis(300));
    set_faults(&emulator, json!([{"operation": "describe-session", "hang": true, "probability": 1.0}])).await;
    let error = client.describe_session("whatever").await.unwrap_err();
    assert!(matches!(error, GameyeError::Timeout { .. }), "{error:?}");
    assert!(error.is_retryable());

    set_faults(
        &emulator,
        json!([{"operation": "get-available-locations", "delay_ms": 100, "probability": 1.0}]),
    )
    .await;
    let started = std::time::Instant::now();
    client.available_locations("demo-game").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(100), "the delay was injected");
}

#[tokio::test]
async fn location_specific_capacity_fault_leaves_other_locations_alone() {
    let emulator = emulator().await;
    let client = client_for(&emulator, DEFAULT_TOKEN);
    set_faults(
        &emulator,
        json!([{"operation": "session-run", "location": "eu-west-1", "status": 420, "probability": 1.0}]),
    )
    .await;
    assert_eq!(client.create_session(&create("a", "eu-west-1")).await.unwrap_err().status(), Some(420));
    assert!(client.create_session(&create("b", "eu-central-1")).await.is_ok());
}

#[tokio::test]
async fn unreachable_gameye_is_retryable() {
    let emulator = emulator().await;
    let url = emulator.url();
    emulator.shutdown().await;
    let config = GameyeClientConfig {
        base_url: url,
        token: Secret::new(DEFAULT_TOKEN),
        connect_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_secs(1),
        pool_max_idle: 1,
    };
    let error = GameyeClient::new(&config, None).unwrap().available_locations("demo-game").await.unwrap_err();
    assert!(matches!(error, GameyeError::Unreachable { .. }), "{error:?}");
    assert!(error.is_retryable());
}

#[test]
fn token_is_not_in_debug_output() {
    let config = GameyeClientConfig {
        base_url: "https://api.sandbox-gameye.gameye.net".into(),
        token: Secret::new("top-secret"),
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        pool_max_idle: 1,
    };
    let client = GameyeClient::new(&config, None).unwrap();
    assert!(!format!("{client:?} {config:?}").contains("top-secret"));
}

#[tokio::test]
async fn location_cache_makes_one_request_for_concurrent_misses_and_forgets_on_invalidate() {
    use bridge::ports::SessionApi;

    let emulator = emulator().await;
    let (api, calls) = counted_api(&emulator, Duration::from_secs(60));
    // A slow answer keeps all twenty callers waiting on the same fetch.
    set_faults(
        &emulator,
        json!([{"operation": "get-available-locations", "delay_ms": 200, "probability": 1.0}]),
    )
    .await;
    let answers = futures::future::join_all((0..20).map(|_| api.available_locations("demo-game"))).await;
    assert!(answers.iter().all(|a| a.as_ref().is_ok_and(|l| l.len() == 5)));
    assert_eq!(calls(), 1, "one request in flight per image");
    api.available_locations("demo-game").await.unwrap();
    assert_eq!(calls(), 1, "served from the cache");
    api.invalidate_locations("demo-game");
    api.available_locations("demo-game").await.unwrap();
    assert_eq!(calls(), 2, "invalidation forces a fresh request");
}

/// A session API whose Gameye calls for available locations are counted.
fn counted_api(
    emulator: &RunningEmulator,
    cache_for: Duration,
) -> (GameyeSessionApi, impl Fn() -> u64 + use<>) {
    use prometheus_client::registry::Registry;
    let mut registry = Registry::default();
    let metrics = GameyeMetrics::register(&mut registry);
    let config = GameyeClientConfig {
        base_url: emulator.url(),
        token: Secret::new(DEFAULT_TOKEN),
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(5),
        pool_max_idle: 8,
    };
    let api = GameyeSessionApi::new(GameyeClient::new(&config, Some(metrics)).unwrap(), cache_for);
    let calls = move || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text.lines()
            .filter(|l| l.starts_with("gameye_calls_total{") && l.contains("get-available-locations"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    (api, calls)
}

/// Without caching (`locations_cache = "0s"`), calls that queue behind a fetch share its answer,
/// a failure included, rather than fetching one after another; and a fetch that an invalidation
/// overtook is not kept.
#[tokio::test]
async fn location_calls_queued_behind_a_fetch_share_it_and_an_invalidation_overtakes_it() {
    use bridge::ports::SessionApi;

    let emulator = emulator().await;
    let (api, calls) = counted_api(&emulator, Duration::ZERO);
    let slow = json!({"operation": "get-available-locations", "delay_ms": 300, "probability": 1.0});
    set_faults(&emulator, json!([slow])).await;
    let answers = futures::future::join_all((0..20).map(|_| api.available_locations("demo-game"))).await;
    assert!(answers.iter().all(|a| a.as_ref().is_ok_and(|l| l.len() == 5)), "{answers:?}");
    assert_eq!(calls(), 1, "nineteen calls shared the first one's fetch");
    api.available_locations("demo-game").await.unwrap();
    assert_eq!(calls(), 2, "not cached");

    let failing =
        json!({"operation": "get-available-locations", "delay_ms": 300, "status": 503, "probability": 1.0});
    set_faults(&emulator, json!([failing])).await;
    let answers = futures::future::join_all((0..20).map(|_| api.available_locations("demo-game"))).await;
    assert!(answers.iter().all(Result::is_err), "{answers:?}");
    assert_eq!(calls(), 3, "a failed fetch is shared too");

    let (api, calls) = counted_api(&emulator, Duration::from_secs(60));
    set_faults(&emulator, json!([slow])).await;
    let (fetched, ()) = tokio::join!(api.available_locations("demo-game"), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        api.invalidate_locations("demo-game");
    });
    fetched.unwrap();
    api.available_locations("demo-game").await.unwrap();
    assert_eq!(calls(), 2, "the answer fetched across the invalidation was not kept");
    api.available_locations("demo-game").await.unwrap();
    assert_eq!(calls(), 2, "the next one is");
}

#[tokio::test]
async fn a_large_listing_arrives_whole_through_the_paced_streaming_decoder() {
    let mut world = World::default();
    world.locations[0].capacity = 4000;
    let location = world.locations[0].id.clone();
    let emulator = emulator_with(world).await;
    let client = client_for(&emulator, DEFAULT_TOKEN);
    // Megabytes of listing: many more chunks than are read ahead of the decoder.
    let ids: Vec<String> = (0..3000).map(|n| format!("00000000-0000-4000-8000-{n:012}")).collect();
    let creates = ids.iter().map(|id| {
        let mut body = create(id, &location);
        body.labels.to_mut().insert("gameye-bridge.deployment".into(), "streamed".into());
        body.labels.to_mut().insert("padding".into(), "x".repeat(200));
        let client = client.clone();
        async move { client.create_session(&body).await.map(|_| ()) }
    });
    use futures::StreamExt;
    let created: Vec<_> = futures::stream::iter(creates).buffer_unordered(16).collect().await;
    assert!(created.iter().all(Result::is_ok), "{:?}", created.iter().find(|c| c.is_err()));
    let mut filter = ListFilter { all: true, ..Default::default() };
    filter.labels.insert("gameye-bridge.deployment".into(), "streamed".into());

    let started = std::time::Instant::now();
    let watcher = BackgroundThreadWatcher::start();
    let paced = client
        .list_sessions_paced(
            &filter,
            adapters::pace::Pace { busy: 0.5, slice: Duration::from_millis(1), idle_priority: true },
        )
        .await
        .unwrap();
    let policies = watcher.stop();
    #[cfg(target_os = "linux")]
    {
        assert!(!policies.is_empty(), "the paced listing was decoded on no background thread");
        assert!(
            policies.values().all(|&policy| policy == libc::SCHED_IDLE),
            "last policies seen: {policies:?}"
        );
    }
    let unpaced = client.list_sessions(&filter).await.unwrap();
    let listed = |sessions: &[SessionSummary]| {
        let mut listed: Vec<String> = sessions.iter().map(|s| s.id.clone()).collect();
        listed.sort();
        listed
    };
    assert_eq!(listed(&paced), ids, "every session, once, in {:?}", started.elapsed());
    assert_eq!(listed(&unpaced), ids);
}

/// Watches this process's threads from a thread of its own (an ordinary one, so it runs while the
/// idle-priority decoder waits) for background threads, and keeps the last scheduling policy seen
/// of each (a new thread lowers its own priority as its first step, so its very first may differ).
struct BackgroundThreadWatcher {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    seen: std::thread::JoinHandle<std::collections::HashMap<i32, i32>>,
}

impl BackgroundThreadWatcher {
    fn start() -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let seen = std::thread::spawn(move || {
            let mut seen = std::collections::HashMap::new();
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                seen.extend(background_thread_policies());
                std::thread::yield_now();
            }
            seen
        });
        Self { stop, seen }
    }

    fn stop(self) -> std::collections::HashMap<i32, i32> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.seen.join().unwrap()
    }
}

/// (thread id, scheduling policy) of this process's background threads.
#[cfg(target_os = "linux")]
fn background_thread_policies() -> Vec<(i32, i32)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Vec::new() };
    tasks
        .flatten()
        .filter_map(|task| {
            // Thread names are cut to 15 bytes: "bridge-background" reads "bridge-backgrou".
            let name = std::fs::read_to_string(task.path().join("comm")).ok()?;
            let tid: libc::pid_t = task.file_name().to_str()?.parse().ok()?;
            // SAFETY: only reads the policy of a thread of this process (-1 once it has ended).
            let policy = unsafe { libc::sched_getscheduler(tid) };
            (name.starts_with("bridge-backgrou") && policy >= 0).then_some((tid, policy))
        })
        .collect()
}

#[cfg(not(target_os = "linux"))]
fn background_thread_policies() -> Vec<(i32, i32)> {
    Vec::new()
}

/// Answers every connection with `response` and closes it: a Gameye (or a proxy in front of it)
/// misbehaving in ways the emulator, which follows the OpenAPI document, never does.
async fn raw_http_server(response: &'static [u8]) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(response).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    format!("http://{address}")
}

fn client_of(url: String) -> GameyeClient {
    let config = GameyeClientConfig {
        base_url: url,
        token: Secret::new(DEFAULT_TOKEN),
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(5),
        pool_max_idle: 1,
    };
    GameyeClient::new(&config, None).unwrap()
}

#[tokio::test]
async fn a_listing_cut_short_is_an_error_and_never_a_shorter_list() {
    // The connection closes after one session of a body announced much longer.
    let url = raw_http_server(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n\
          {\"sessions\":[{\"id\":\"a\",\"image\":\"demo-game\",\"location\":\"eu-west-1\",\"host\":\"h\",\
          \"created\":1,\"port\":{},\"status\":\"running\",\"labels\":{}},",
    )
    .await;
    let error = client_of(url).list_sessions(&ListFilter::default()).await.unwrap_err();
    assert!(matches!(error, GameyeError::Unreachable { .. }), "{error:?}");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn a_successful_listing_that_is_not_a_listing_is_undecodable() {
    let url = raw_http_server(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 20\r\n\r\n<html>proxy!</html>\n",
    )
    .await;
    let error = client_of(url).list_sessions(&ListFilter::default()).await.unwrap_err();
    assert!(matches!(error, GameyeError::Decode { operation: "session-list", .. }), "{error:?}");

    let url = raw_http_server(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 19\r\n\r\n{\"sessions\":[]} [1]",
    )
    .await;
    let error = client_of(url).list_sessions(&ListFilter::default()).await.unwrap_err();
    assert!(matches!(error, GameyeError::Decode { .. }), "trailing data: {error:?}");
}

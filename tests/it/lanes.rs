//! `runtime.lanes`: the service split over single-threaded runtimes, each serving its share of the
//! HTTP connections with a Redis connection and Gameye pool of its own.

use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};

use crate::stack::{API_TOKEN, Stack, match_with};

const TWO_LANES: (&str, &str) = ("BRIDGE_RUNTIME__LANES", "2");

/// A client whose every request opens a connection of its own, so the bridge hands them out in turn.
fn one_connection_per_request() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap()
}

async fn post(client: &reqwest::Client, stack: &Stack, body: &Value) -> (u16, Value) {
    let response =
        client.post(stack.url("/v1/matches")).bearer_auth(API_TOKEN).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `gameye_bridge_http_lane_connections_total{lane="…"}`, 0 when absent.
async fn lane_connections(stack: &Stack, lane: u32) -> u64 {
    let text = stack.http.get(stack.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let series = format!("gameye_bridge_http_lane_connections_total{{lane=\"{lane}\"}} ");
    text.lines().find_map(|line| line.strip_prefix(&series)).map_or(0, |value| value.trim().parse().unwrap())
}

#[tokio::test]
async fn every_lane_serves_placements_and_duplicates_across_lanes_make_one_session() {
    let stack = Stack::start_with(&[TWO_LANES]).await;
    let client = one_connection_per_request();
    let before = [lane_connections(&stack, 0).await, lane_connections(&stack, 1).await];

    let matches: Vec<Value> =
        (0..20).map(|i| match_with(&format!("m-lane-{i}"), &[&[("eu-west-1", 20)]])).collect();
    let answers = join_all(matches.iter().map(|body| post(&client, &stack, body))).await;
    for (body, (status, answer)) in matches.iter().zip(&answers) {
        assert_eq!(*status, 200, "{answer}");
        assert_eq!(answer["match_id"], body["match_id"]);
    }

    // A slow Gameye keeps the duplicates in flight together, on both lanes.
    stack.set_faults(json!([{"operation": "session-run", "delay_ms": 300, "probability": 1.0}])).await;
    let duplicate = match_with("m-lane-dup", &[&[("eu-west-1", 20)]]);
    let answers = join_all((0..20).map(|_| post(&client, &stack, &duplicate))).await;
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
        assert_eq!(answer, &answers[0].1, "every duplicate gets the identical assignment");
    }
    assert_eq!(stack.emulator_sessions().await.len(), 21);

    let after = [lane_connections(&stack, 0).await, lane_connections(&stack, 1).await];
    let served = [after[0] - before[0], after[1] - before[1]];
    // 40 placements and the metric reads in between: handed out in turn, the lanes differ by one at most.
    assert!(served[0] >= 20 && served[1] >= 20, "connections per lane: {served:?}");
    assert!(served[0].abs_diff(served[1]) <= 1, "connections per lane: {served:?}");
}

/// The bridge's Redis connections that served a command in the last second (`idle=0`), the
/// caller's own left out.
async fn recently_used_redis_connections(stack: &Stack) -> usize {
    let client = ::redis::Client::open(stack.redis.url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let clients: String = ::redis::cmd("CLIENT").arg("LIST").query_async(&mut redis).await.unwrap();
    clients.lines().filter(|line| line.contains(" idle=0 ") && !line.contains("cmd=client|list")).count()
}

#[tokio::test]
async fn each_lane_uses_a_redis_connection_of_its_own() {
    // No reconciler: its connection would be one more.
    let stack = Stack::start_with(&[TWO_LANES, ("BRIDGE_RECONCILER__ENABLED", "false")]).await;
    // Long enough that a connection unused from here on is not counted as recent.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let client = one_connection_per_request();
    let matches: Vec<Value> =
        (0..8).map(|i| match_with(&format!("m-lane-redis-{i}"), &[&[("eu-west-1", 20)]])).collect();
    for (status, answer) in join_all(matches.iter().map(|body| post(&client, &stack, body))).await {
        assert_eq!(status, 200, "{answer}");
    }
    assert_eq!(recently_used_redis_connections(&stack).await, 2, "one per lane, each used by its lane");
}

#[tokio::test]
async fn with_lanes_a_placement_in_flight_at_sigterm_finishes_and_the_process_exits_cleanly() {
    let mut stack = Stack::start_with(&[TWO_LANES]).await;
    stack.set_faults(json!([{"operation": "session-run", "delay_ms": 1000, "probability": 1.0}])).await;
    // Two requests on two connections, one per lane.
    let client = one_connection_per_request();
    let in_flight: Vec<_> = ["m-lane-term-0", "m-lane-term-1"]
        .into_iter()
        .map(|id| {
            let (client, url, body) =
                (client.clone(), stack.url("/v1/matches"), match_with(id, &[&[("eu-west-1", 20)]]));
            tokio::spawn(async move {
                let response = client.post(url).bearer_auth(API_TOKEN).json(&body).send().await.unwrap();
                response.status().as_u16()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack.bridge.signal("TERM");
    for request in in_flight {
        assert_eq!(request.await.unwrap(), 200, "a request in flight at SIGTERM was cut off");
    }
    assert_eq!(stack.bridge.wait_exit(Duration::from_secs(10)).await, Some(0));
    assert_eq!(stack.emulator_sessions().await.len(), 2);
}

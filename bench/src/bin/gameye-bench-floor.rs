//! `gameye-bench-floor`: the least a placement service can do per match, as a yardstick for the
//! bridge (the bench's `floor` scenario). One `POST /v1/matches` = check the bearer token, decode the
//! match, derive the session id, `POST /session` to Gameye (the bridge's reqwest settings), decode the
//! answer and answer with host and ports. With `--redis-round-trips 2` it also claims the match
//! (`SET … NX`) before the call and stores the assignment (`SET`) after it, the two writes that make a
//! placement safe under duplicates and crashes; no scripts, no seat records, no region choice, no
//! metrics. Whatever rate this reaches on a machine bounds what a bridge on this stack can reach there.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

// The bridge's allocator, so the comparison is of the work, not of malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6d2f_61c4_1b1e_4c4e_9d0e_5f0b_7a1c_2e3f);

/// The least placement service, as a yardstick for the bridge (started by `gameye-bench floor`).
#[derive(clap::Parser)]
struct Settings {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Gameye's (the emulator's) base URL.
    #[arg(long)]
    gameye_url: String,
    /// The token the floor sends to Gameye.
    #[arg(long, default_value = "")]
    gameye_token: String,
    /// The bearer token callers must send.
    #[arg(long)]
    token: String,
    /// Redis for the two writes (needed with `--redis-round-trips 2`).
    #[arg(long, required_if_eq("redis_round_trips", "2"))]
    redis_url: Option<String>,
    /// 0: no Redis; 2: the claim before the Gameye call and the assignment after it.
    #[arg(long, default_value_t = 0, value_parser = round_trips)]
    redis_round_trips: u8,
    /// Tokio worker threads; 0: one per core (Tokio's default, as the bridge's).
    #[arg(long, default_value_t = 0)]
    worker_threads: usize,
}

fn round_trips(text: &str) -> Result<u8, String> {
    match text {
        "0" => Ok(0),
        "2" => Ok(2),
        _ => Err("0 or 2".to_owned()),
    }
}

struct Floor {
    http: reqwest::Client,
    session_url: reqwest::Url,
    gameye_auth: String,
    bearer: String,
    redis: Option<redis::aio::MultiplexedConnection>,
}

#[derive(Deserialize)]
struct MatchRequest {
    match_id: String,
    players: Vec<Player>,
}

/// A player as the bridge reads one; the floor needs only the reported latencies.
#[derive(Deserialize)]
struct Player {
    #[serde(default)]
    latencies: BTreeMap<String, u32>,
}

#[derive(Serialize)]
struct CreateSession<'a> {
    id: &'a str,
    location: &'a str,
    image: &'a str,
    ttl: &'a str,
    labels: BTreeMap<&'a str, &'a str>,
}

#[derive(Deserialize, Serialize)]
struct Port {
    #[serde(rename = "type")]
    kind: String,
    container: u16,
    host: u16,
}

#[derive(Deserialize)]
struct Created {
    host: String,
    #[serde(default)]
    ports: Vec<Port>,
}

#[derive(Serialize)]
struct Assignment<'a> {
    match_id: &'a str,
    session_id: &'a str,
    location: &'a str,
    host: &'a str,
    ports: &'a [Port],
}

fn failure(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

async fn place(State(floor): State<Arc<Floor>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let authorized =
        headers.get(header::AUTHORIZATION).is_some_and(|value| value.as_bytes() == floor.bearer.as_bytes());
    if !authorized {
        return failure(StatusCode::UNAUTHORIZED, "bad token");
    }
    let request: MatchRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => return failure(StatusCode::UNPROCESSABLE_ENTITY, error.to_string()),
    };
    // The one location every player reported (the bench sends one).
    let Some(location) = request.players.first().and_then(|p| p.latencies.keys().next()).cloned() else {
        return failure(StatusCode::UNPROCESSABLE_ENTITY, "no latencies");
    };
    let session_id =
        uuid::Uuid::new_v5(&NAMESPACE, format!("floor:{}", request.match_id).as_bytes()).to_string();
    let key = format!("floor:{{{}}}:placement", request.match_id);
    if let Some(redis) = &floor.redis {
        let mut redis = redis.clone();
        let claimed: Option<String> = match redis::cmd("SET")
            .arg(&key)
            .arg("pending")
            .arg("NX")
            .arg("PX")
            .arg(30_000)
            .query_async(&mut redis)
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => return failure(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
        };
        if claimed.is_none() {
            return failure(StatusCode::CONFLICT, "already claimed");
        }
    }
    let body = CreateSession {
        id: &session_id,
        location: &location,
        image: "demo-game",
        ttl: "30m",
        labels: BTreeMap::from([
            ("gameye-floor.match", request.match_id.as_str()),
            ("gameye-floor.source", "http"),
        ]),
    };
    let sent = floor
        .http
        .post(floor.session_url.clone())
        .header(header::AUTHORIZATION, &floor.gameye_auth)
        .json(&body)
        .send()
        .await;
    let created: Created = match sent {
        Ok(answer) if answer.status() == StatusCode::CREATED => match answer.json().await {
            Ok(created) => created,
            Err(error) => return failure(StatusCode::BAD_GATEWAY, error.to_string()),
        },
        Ok(answer) => return failure(StatusCode::BAD_GATEWAY, format!("gameye: HTTP {}", answer.status())),
        Err(error) => return failure(StatusCode::BAD_GATEWAY, error.to_string()),
    };
    let assignment = Assignment {
        match_id: &request.match_id,
        session_id: &session_id,
        location: &location,
        host: &created.host,
        ports: &created.ports,
    };
    let encoded = match serde_json::to_vec(&assignment) {
        Ok(encoded) => encoded,
        Err(error) => return failure(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    };
    if let Some(redis) = &floor.redis {
        let mut redis = redis.clone();
        let stored: redis::RedisResult<()> =
            redis::cmd("SET").arg(&key).arg(&encoded).arg("PX").arg(86_400_000).query_async(&mut redis).await;
        if let Err(error) = stored {
            return failure(StatusCode::SERVICE_UNAVAILABLE, error.to_string());
        }
    }
    ([(header::CONTENT_TYPE, "application/json")], encoded).into_response()
}

fn main() -> Result<()> {
    let settings = <Settings as clap::Parser>::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if settings.worker_threads > 0 {
        runtime.worker_threads(settings.worker_threads);
    }
    runtime.enable_all().build()?.block_on(serve(settings))
}

async fn serve(settings: Settings) -> Result<()> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(5_000)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()?;
    let redis = match (&settings.redis_url, settings.redis_round_trips) {
        (Some(url), 2) => Some(redis::Client::open(url.as_str())?.get_multiplexed_async_connection().await?),
        _ => None,
    };
    let floor = Floor {
        http,
        session_url: reqwest::Url::parse(&format!("{}/session", settings.gameye_url.trim_end_matches('/')))?,
        gameye_auth: format!("Bearer {}", settings.gameye_token),
        bearer: format!("Bearer {}", settings.token),
        redis,
    };
    let app = Router::new()
        .route("/v1/matches", post(place))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .with_state(Arc::new(floor));
    let listener = tokio::net::TcpListener::bind(&settings.listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

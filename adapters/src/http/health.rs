//! `/healthz` (the process answers) and `/readyz` (its dependencies answer).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use futures::future::BoxFuture;
use serde::Serialize;

/// One dependency's readiness probe; wired by `main` so this adapter knows no other adapter.
#[derive(Clone)]
pub struct ReadinessCheck {
    pub name: &'static str,
    pub probe: Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>,
}

impl ReadinessCheck {
    pub fn new<F, Fut>(name: &'static str, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self { name, probe: Arc::new(move || Box::pin(probe())) }
    }
}

/// What `/readyz` reports besides the checks: which Gameye answers.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct GameyeTarget {
    /// `emulator` or `remote`.
    pub backend: &'static str,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<&'static str>,
}

#[derive(Clone)]
pub struct Health {
    pub checks: Vec<ReadinessCheck>,
    pub gameye: GameyeTarget,
    pub probe_timeout: Duration,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CheckReport {
    name: &'static str,
    ok: bool,
    latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ReadinessReport {
    status: &'static str,
    gameye: GameyeTarget,
    checks: Vec<CheckReport>,
}

/// The process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = serde_json::Value, example = json!({"status": "ok"}))))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Every dependency answers (Gameye; Redis and NATS when configured). Names the Gameye backend.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = ReadinessReport),
              (status = 503, description = "A dependency does not answer", body = ReadinessReport)))]
pub async fn readyz(State(health): State<Arc<Health>>) -> (StatusCode, Json<ReadinessReport>) {
    let probes = health.checks.iter().map(|check| {
        let timeout = health.probe_timeout;
        async move {
            let started = Instant::now();
            let outcome = match tokio::time::timeout(timeout, (check.probe)()).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!("no answer within {timeout:?}")),
            };
            CheckReport {
                name: check.name,
                ok: outcome.is_ok(),
                latency_ms: started.elapsed().as_millis() as u64,
                error: outcome.err(),
            }
        }
    });
    let checks = futures::future::join_all(probes).await;
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let report = ReadinessReport {
        status: if ready { "ready" } else { "not_ready" },
        gameye: health.gameye.clone(),
        checks,
    };
    (status, Json(report))
}

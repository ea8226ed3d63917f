//! The HTTP door: router, shared middleware, health and metrics endpoints, graceful serving.

mod auth;
mod error;
mod health;
mod locations;
mod matches;
mod nakama;
mod openapi;
mod players;
mod sessions;
mod sns;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Router, ServiceExt};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tower::{Service, ServiceBuilder};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use auth::ApiTokens;
pub use error::{ApiError, ErrorBody, ErrorDetail, REQUEST_ID_HEADER, render_errors};
pub use health::{GameyeTarget, Health, ReadinessCheck};
pub use matches::{MatchesState, failure_response, failure_status};
pub use nakama::{NakamaAuth, NakamaDoor, nakama_router};
pub use openapi::{ApiDoc, document as openapi_document};
pub use sns::sns_router;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// Everything the operational endpoints need.
pub struct OpsState {
    pub health: Health,
    pub registry: Registry,
}

/// What [`router`] builds and [`serve`] serves: the routes behind the shared layers.
pub trait App:
    Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> App for S where
    S: Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// The router with `/healthz`, `/readyz`, `/metrics`, plus `api` (the `/v1` routes) behind the
/// shared layers: request id, JSON errors, body limit, tracing.
///
/// The layers wrap the router as a whole rather than each route (`Router::layer`): a layered route
/// is a box per layer, and axum clones a route's boxes for every request (~24 boxed clones a
/// request, ~2 % of the bridge's instructions per placement). Wrapped once, a request clones the
/// stack's plain fields and the router's `Arc`. The fallback (404) passes through them all the same.
pub fn router(ops: OpsState, api: Router, body_limit: usize) -> impl App {
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    let registry = Arc::new(ops.registry);
    let ops_routes = Router::new()
        .route("/readyz", get(health::readyz))
        .with_state(Arc::new(ops.health))
        .route("/metrics", get(metrics).with_state(registry))
        .route("/healthz", get(health::healthz))
        .route("/openapi.json", get(|| async { axum::Json(openapi::document()) }));
    let routes = Router::new()
        .merge(ops_routes)
        .merge(api)
        .fallback(|| async { ApiError::not_found("no such route") });
    // Outermost first.
    ServiceBuilder::new()
        .map_response(IntoResponse::into_response)
        .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(request_id))
        .layer(TraceLayer::new_for_http())
        .layer(axum::middleware::from_fn(render_errors))
        .layer(RequestBodyLimitLayer::new(body_limit))
        // `http.body_limit` is the one limit: axum's extractors would otherwise cap every body at
        // their own default of 2 MiB as well, whatever the configuration says.
        .layer(DefaultBodyLimit::disable())
        .service(routes)
}

/// `/v1` routes of the generic HTTP door, behind bearer-token authentication.
pub fn v1_router(state: MatchesState, tokens: ApiTokens) -> Router {
    use axum::routing::post;
    Router::new()
        .route("/v1/matches", post(matches::place_match))
        .route("/v1/matches/{match_id}", get(matches::get_match))
        .route("/v1/players/{player_id}/latencies", get(players::get_latencies).put(players::put_latencies))
        .route("/v1/locations", get(locations::list_locations))
        .route("/v1/sessions", get(sessions::list_sessions))
        .route("/v1/sessions/{session_id}", get(sessions::get_session).delete(sessions::end_session))
        .route(
            "/v1/sessions/{session_id}/players",
            post(sessions::join_players).delete(sessions::leave_players),
        )
        .route("/v1/backfill", post(sessions::backfill))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(tokens, auth::require_token))
}

/// Prometheus/OpenMetrics text exposition of every metric.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text")))]
async fn metrics(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()).into_response(),
    }
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr).await.map_err(|source| HttpError::Bind { addr, source })
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    app: impl App,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<(), HttpError> {
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    // Without TCP_NODELAY (axum leaves it off) a response written in more than one segment can
    // wait for the client's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY on a connection");
        }
    });
    let server = axum::serve(listener, app.into_make_service()).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    });
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        result = &mut server => return result.map_err(HttpError::Serve),
        _ = stopping_rx => {}
    }
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result.map_err(HttpError::Serve),
        Err(_) => {
            tracing::warn!(
                grace_s = grace.as_secs(),
                "in-flight requests did not finish in time; exiting anyway"
            );
            Ok(())
        }
    }
}

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
use axum::serve::ListenerExt;
use axum::{Router, ServiceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceBuilder};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Instrument;

use crate::lanes::Lanes;

pub use auth::ApiTokens;
pub use error::{ApiError, ErrorBody, ErrorDetail, FailureOrError, REQUEST_ID_HEADER, render_errors};
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
    serve_from(ListenerExt::tap_io(listener, no_delay), app, shutdown, grace).await
}

/// [`serve`] on every lane: this runtime (lane 0) accepts the connections and hands them to the
/// lanes in turn, itself included, and each lane serves its own connections until `shutdown`.
/// Returns when every lane has drained (or given up after `grace`); the lanes' runtimes keep
/// running what their requests spawned until [`Lanes::stop`].
pub async fn serve_on_lanes(
    listener: TcpListener,
    app: impl App,
    lanes: &mut Lanes,
    metrics: LaneMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<(), HttpError> {
    let local_addr = listener.local_addr().map_err(HttpError::Serve)?;
    let stopping = CancellationToken::new();
    let mut inboxes = Vec::with_capacity(lanes.count());
    let mut own_listener = None;
    let mut served = Vec::with_capacity(lanes.count());
    for index in 0..lanes.count() {
        let (inbox, connections) = mpsc::unbounded_channel();
        inboxes.push(inbox);
        let listener = LaneListener { connections, local_addr };
        if index == 0 {
            own_listener = Some(listener);
            continue;
        }
        let (done, result) = oneshot::channel();
        let work = serve_from(listener, app.clone(), stopping.clone().cancelled_owned(), grace);
        lanes.run(
            index,
            async move {
                let _ = done.send(work.await);
            }
            .instrument(tracing::Span::current()),
        );
        served.push(result);
    }
    let own =
        own_listener.map(|listener| serve_from(listener, app, stopping.clone().cancelled_owned(), grace));
    let accepting = hand_out_connections(listener, inboxes, metrics, async move {
        shutdown.await;
        stopping.cancel();
    });
    let (own, ()) =
        tokio::join!(async move { if let Some(own) = own { own.await } else { Ok(()) } }, accepting);
    let mut result = own;
    for lane in served {
        let lane = lane.await.unwrap_or_else(|_| {
            // Its panic was reported by the panic hook; its connections were dropped with it.
            tracing::error!("a lane stopped serving without an answer (it panicked)");
            Ok(())
        });
        if result.is_ok() {
            result = lane;
        }
    }
    result
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LaneLabels {
    lane: u64,
}

/// HTTP connections handed to each lane: with lanes, a lane serves only its own connections, so an
/// uneven count here is an uneven load.
#[derive(Clone)]
pub struct LaneMetrics {
    connections: Family<LaneLabels, Counter>,
}

impl LaneMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let connections = Family::<LaneLabels, Counter>::default();
        registry.register(
            "http_lane_connections",
            "HTTP connections handed to each lane (runtime.lanes)",
            connections.clone(),
        );
        Self { connections }
    }
}

fn no_delay(tcp: &mut tokio::net::TcpStream) {
    // Without TCP_NODELAY (axum leaves it off) a response written in more than one segment can
    // wait for the client's delayed ACK.
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY on a connection");
    }
}

/// Accepts until `shutdown` and hands each connection to the next lane's inbox, in turn. A
/// connection leaves this runtime's reactor here and joins its lane's in [`LaneListener`].
async fn hand_out_connections(
    mut listener: TcpListener,
    inboxes: Vec<mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>>,
    metrics: LaneMetrics,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut next = 0;
    loop {
        let (mut tcp, peer) = tokio::select! {
            accepted = axum::serve::Listener::accept(&mut listener) => accepted,
            () = &mut shutdown => return,
        };
        no_delay(&mut tcp);
        let mut connection = match tcp.into_std() {
            Ok(tcp) => (tcp, peer),
            Err(error) => {
                tracing::debug!(%error, "cannot hand a connection to a lane");
                continue;
            }
        };
        // A lane whose serving ended (it panicked) is skipped; the rest carry on.
        for _ in 0..inboxes.len() {
            let lane = next;
            next = (next + 1) % inboxes.len();
            match inboxes[lane].send(connection) {
                Ok(()) => {
                    metrics.connections.get_or_create(&LaneLabels { lane: lane as u64 }).inc();
                    break;
                }
                Err(mpsc::error::SendError(refused)) => connection = refused,
            }
        }
    }
}

/// One lane's share of the connections, as a listener axum serves.
struct LaneListener {
    connections: mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
    local_addr: SocketAddr,
}

impl axum::serve::Listener for LaneListener {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Some((tcp, peer)) = self.connections.recv().await else {
                // The acceptor has stopped: nothing more comes, and shutdown ends the serving.
                return std::future::pending().await;
            };
            match tokio::net::TcpStream::from_std(tcp) {
                Ok(tcp) => return (tcp, peer),
                Err(error) => tracing::debug!(%error, "cannot take a connection into this lane"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

async fn serve_from<L>(
    listener: L,
    app: impl App,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<(), HttpError>
where
    L: axum::serve::Listener<Addr: std::fmt::Debug>,
{
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
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

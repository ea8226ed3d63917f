//! A faithful emulator of Gameye's Session API (`gameye-session-openapi.yml`, v1.2.1), with fault
//! injection, for local development and tests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), gameye_emulator::Error> {
//! let emulator = gameye_emulator::start(gameye_emulator::World::default(), "127.0.0.1:0".parse().unwrap()).await?;
//! println!("Gameye API at {} (token {})", emulator.url(), gameye_emulator::DEFAULT_TOKEN);
//! emulator.shutdown().await;
//! # Ok(()) }
//! ```

mod api;
mod control;
pub mod duration;
mod error;
pub mod faults;
mod ports;
mod server;
mod sessions;
mod state;
mod views;
pub mod world;

use std::sync::Arc;

use axum::Router;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

pub use error::Error;
pub use faults::{FaultRule, Operation};
pub use ports::HOST_PORTS;
pub use server::{RunningEmulator, start};
pub use world::World;

/// The token of the default world; it has every scope.
pub const DEFAULT_TOKEN: &str = "emulator-token";

/// The whole emulator (Session API and `/_emulator/` controls) as an axum router, for embedding.
///
/// Hanging fault rules and followed logs end only when their client disconnects; use [`start`]
/// for a server that can also end them at shutdown.
pub fn router(world: World) -> Router {
    app(world, CancellationToken::new())
}

fn app(world: World, shutdown: CancellationToken) -> Router {
    let state = Arc::new(state::AppState::new(world, shutdown));
    api::routes()
        .merge(control::routes())
        .fallback(api::fallback)
        .layer(axum::middleware::from_fn(api::error::render_errors))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

//! `gameye-emulator`: serves the Gameye Session API emulator until SIGINT or SIGTERM.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use clap::Parser;
use gameye_emulator::World;
use tracing_subscriber::EnvFilter;

/// A faithful emulator of Gameye's Session API, with fault injection, for development and tests.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, env = "GAMEYE_EMULATOR_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// World file (TOML); the default world when absent.
    #[arg(long, env = "GAMEYE_EMULATOR_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let world = match &args.config {
        Some(path) => World::from_file(path)?,
        None => World::default(),
    };
    let emulator = gameye_emulator::start(world, args.listen).await.context("starting the emulator")?;
    // Printed on stdout (logs go to stderr) so scripts can read the address when started on port 0.
    println!("{}", emulator.url());
    tracing::warn!(
        url = %emulator.url(),
        "this is the Gameye emulator, not the real Gameye API"
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    emulator.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

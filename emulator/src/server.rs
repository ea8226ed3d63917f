//! Serving the emulator on a socket, in a background task that can be shut down.

use std::{net::SocketAddr, time::Duration};

use axum::serve::ListenerExt;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{Error, World, app};

/// How long [`RunningEmulator::shutdown`] lets in-flight requests finish before cutting them off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Bytes of a connection's answers the kernel may hold unsent (it doubles this for its own
/// bookkeeping): a few hundred sessions of a listing, and many times any other answer.
const SEND_BUFFER: usize = 64 * 1024;

/// An emulator serving in a tokio task. Dropping it stops the server too (without waiting).
pub struct RunningEmulator {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningEmulator {
    /// The address it listens on (with the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, e.g. `http://127.0.0.1:8081`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, ends hanging requests and followed logs, and waits (at most a few seconds)
    /// for in-flight requests.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await.is_err()
        {
            task.abort();
        }
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Validates `world`, binds `addr` (port 0 picks a free port) and serves the emulator in a tokio task.
pub async fn start(world: World, addr: SocketAddr) -> Result<RunningEmulator, Error> {
    world.validate()?;
    let listener = TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let router = app(world, shutdown.clone());
    // No Nagle delay: clients and benches send many small requests. A small send buffer: a
    // listing is written only as fast as its reader takes it (see `api::sessions`). With the
    // kernel's autotuned buffer (up to 4 MiB) the emulator serialized most of a reconciler's listing
    // of 20,000 sessions in one ~30 ms burst on a core that `POST /session` needed, while the
    // reader took two seconds over it (bench/RESULTS.md, session 16).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
        let _ = socket2::SockRef::from(&*tcp).set_send_buffer_size(SEND_BUFFER);
    });
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, router).with_graceful_shutdown(async move { stop.cancelled().await }).await
    });
    tracing::info!(%addr, "Gameye emulator listening");
    Ok(RunningEmulator { addr, shutdown, task: Some(task) })
}

//! A TCP relay in front of a real server, whose connections a test can cut while the server keeps
//! running: how a client meets a dropped connection (a load balancer's idle timeout, a network
//! blip) without the server restarting.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct TcpRelay {
    address: SocketAddr,
    cuts: watch::Sender<u64>,
    refused_until: Arc<Mutex<Option<Instant>>>,
    accepting: JoinHandle<()>,
}

impl TcpRelay {
    /// Relays every connection made to [`TcpRelay::address`] to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the relay");
        let address = listener.local_addr().expect("relay address");
        let (cuts, _) = watch::channel(0);
        let cut = cuts.clone();
        let refused_until = Arc::new(Mutex::new(None::<Instant>));
        let refusing = refused_until.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if refusing.lock().unwrap().is_some_and(|until| Instant::now() < until) {
                    continue;
                }
                let mut cut = cut.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
                    // Both sockets are dropped, so both ends see the connection close.
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self { address, cuts, refused_until, accepting }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Closes every connection open now; later ones are relayed as before.
    pub fn cut(&self) {
        self.cuts.send_modify(|cuts| *cuts += 1);
    }

    /// Closes every connection open now and every new one for `outage`.
    pub fn cut_for(&self, outage: Duration) {
        *self.refused_until.lock().unwrap() = Some(Instant::now() + outage);
        self.cut();
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut();
    }
}

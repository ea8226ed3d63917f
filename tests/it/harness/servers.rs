use std::ffi::OsString;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

use super::process::{find_binary, free_port, terminate, wait_for_port};

/// A server process on a reserved loopback port with its own data directory; stoppable,
/// restartable on the same port and directory, stopped on drop.
struct ManagedServer {
    binary: &'static str,
    args: fn(port: u16, dir: &Path) -> Vec<OsString>,
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl ManagedServer {
    fn start(binary: &'static str, args: fn(u16, &Path) -> Vec<OsString>) -> Self {
        let mut server = Self {
            binary,
            args,
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut child = Command::new(find_binary(self.binary))
            .args((self.args)(self.port, self.dir.path()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.binary));
        wait_for_port(self.port, &mut child, self.binary);
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }

    fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the process: its connections stay open, unanswered.
    fn freeze(&self, frozen: bool) {
        if let Some(child) = &self.child {
            super::process::signal(child, if frozen { "STOP" } else { "CONT" });
        }
    }
}

impl Drop for ManagedServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private `redis-server` on a free port with its data in a temp dir; nothing persisted, so a
/// restart starts empty.
pub struct RedisServer(ManagedServer);

impl RedisServer {
    pub fn start() -> Self {
        Self(ManagedServer::start("redis-server", |port, dir| {
            let mut args: Vec<OsString> =
                ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--port"]
                    .into_iter()
                    .map(OsString::from)
                    .collect();
            args.push(port.to_string().into());
            args.push("--dir".into());
            args.push(dir.into());
            args
        }))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.0.port)
    }

    /// Stops the server (SIGTERM); its port stays reserved for [`RedisServer::restart`].
    pub fn stop(&mut self) {
        self.0.stop();
    }

    /// Starts it again on the same port (an empty data set).
    pub fn restart(&mut self) {
        self.0.restart();
    }

    /// Stops answering (`SIGSTOP`) while keeping every connection open, until [`RedisServer::thaw`].
    pub fn freeze(&self) {
        self.0.freeze(true);
    }

    pub fn thaw(&self) {
        self.0.freeze(false);
    }
}

/// A private `nats-server -js` on a free port; JetStream data lives in a temp dir and survives
/// [`NatsServer::restart`], like a real deployment's would.
pub struct NatsServer(ManagedServer);

impl NatsServer {
    pub fn start() -> Self {
        Self(ManagedServer::start("nats-server", |port, dir| {
            let mut args: Vec<OsString> =
                ["-a", "127.0.0.1", "-js", "-p"].into_iter().map(OsString::from).collect();
            args.push(port.to_string().into());
            args.push("-sd".into());
            args.push(dir.into());
            args
        }))
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.0.port)
    }

    pub fn address(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.0.port))
    }

    pub fn stop(&mut self) {
        self.0.stop();
    }

    pub fn restart(&mut self) {
        self.0.restart();
    }
}

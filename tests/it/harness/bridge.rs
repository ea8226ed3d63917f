use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::process::{free_port, signal, terminate};

/// The `gameye-bridge` binary as built by cargo for these tests.
fn bridge_binary() -> &'static str {
    env!("CARGO_BIN_EXE_gameye-bridge")
}

/// Runs `gameye-bridge <args>` to completion with only the given environment (plus PATH).
pub fn run_bridge(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(bridge_binary())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("run gameye-bridge")
}

/// A running `gameye-bridge serve` on a free loopback port; killed on drop.
pub struct BridgeProcess {
    pub base_url: String,
    child: Child,
    stderr_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl BridgeProcess {
    /// Starts `serve` with `env` (nothing inherited but PATH) and waits for `/healthz`.
    pub async fn start(env: &[(&str, &str)], config: Option<&Path>) -> Self {
        // The port is free when picked and lies outside the kernel's ephemeral range, but another
        // test process may still pick and bind it before the bridge listens on it: then the bridge
        // exits at once, and another port is tried.
        const ATTEMPTS: u32 = 5;
        for attempt in 1..=ATTEMPTS {
            let mut bridge = Self::spawn(env, config);
            match bridge.wait_healthy().await {
                Ok(()) => return bridge,
                Err(failure) if attempt < ATTEMPTS && failure.contains("Address already in use") => {}
                Err(failure) => panic!("{failure}"),
            }
        }
        unreachable!("the last attempt panics")
    }

    fn spawn(env: &[(&str, &str)], config: Option<&Path>) -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut command = Command::new(bridge_binary());
        command
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let child = command.spawn().expect("spawn gameye-bridge");
        Self { base_url: format!("http://127.0.0.1:{port}"), child, stderr_path, _dir: dir }
    }

    /// `Err` with what went wrong and the process's log.
    async fn wait_healthy(&mut self) -> Result<(), String> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("gameye-bridge exited early ({status}):\n{}", self.logs()));
            }
            if let Ok(response) = client.get(format!("{}/healthz", self.base_url)).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("gameye-bridge did not become healthy:\n{}", self.logs()))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote to stderr (its log) so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn signal(&self, name: &str) {
        signal(&self.child, name);
    }

    /// Waits for the process to exit on its own and returns its exit code.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("gameye-bridge did not exit within {within:?}:\n{}", self.logs());
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

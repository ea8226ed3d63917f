use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A loopback port nothing listens on right now, for a child process to listen on.
///
/// Picked below the kernel's ephemeral port range, not with a bind to port 0: a port-0 port lies in
/// that range, where the kernel also hands out the source ports of outgoing connections and other
/// processes' port-0 binds, so one of those could take it before the child binds it (CI failed so
/// once: a bridge's embedded emulator got the port picked for the bridge). Below the range only
/// explicit binds compete. Each test process walks the band from its own starting point (from its
/// pid), so tests running at once rarely try the same ports.
pub fn free_port() -> u16 {
    static PICKED: AtomicU32 = AtomicU32::new(0);
    let Some((low, high)) = below_ephemeral_range() else {
        return TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
    };
    let span = u32::from(high - low);
    let start = std::process::id().wrapping_mul(PORTS_PER_PROCESS) % span;
    for _ in 0..span {
        let offset = start.wrapping_add(PICKED.fetch_add(1, Ordering::Relaxed)) % span;
        let port = low + u16::try_from(offset).expect("offset < span <= u16::MAX");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}");
}

/// How far apart the starting points of two test processes with consecutive pids are: more ports
/// than one test picks.
const PORTS_PER_PROCESS: u32 = 97;

/// `[low, high)`: up to 16,384 ports just below the kernel's ephemeral range (Linux
/// `ip_local_port_range`), none of them privileged; `None` when there is no room below it.
fn below_ephemeral_range() -> Option<(u16, u16)> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let ephemeral_start: u16 = range.split_whitespace().next()?.parse().ok()?;
    let low = ephemeral_start.saturating_sub(16_384).max(1024);
    (ephemeral_start >= low + 1024).then_some((low, ephemeral_start))
}

/// Finds a server binary on PATH or in the sbin directories Debian installs daemons to.
pub fn find_binary(name: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin"])
        .map(|dir| PathBuf::from(dir).join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{name} not found: run the README's test command, which installs it"))
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening on {port}: {status}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{what} did not listen on {port} within 20 s");
}

/// Sends a signal with the system's `kill`, so tests need no libc bindings.
pub fn signal(child: &Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {} failed", child.id());
}

/// Stops a child with SIGTERM, then SIGKILL if it lingers, and reaps it.
pub fn terminate(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    signal(child, "TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_lie_below_the_ephemeral_range_and_differ() {
        let (low, high) = below_ephemeral_range().expect("this machine has room below its ephemeral range");
        let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
        for port in &ports {
            assert!((low..high).contains(port), "{port} outside {low}..{high}");
            TcpListener::bind(("127.0.0.1", *port)).expect("a picked port is free");
        }
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len(), "20 picks in one process are distinct: {ports:?}");
    }
}

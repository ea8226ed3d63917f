//! Host-port bookkeeping: every active session's ports are unique on its host machine.

use std::collections::HashSet;

/// The host port range Gameye v2 maps container ports into.
pub const HOST_PORTS: std::ops::RangeInclusive<u16> = 20000..=30000;

const RANGE_LEN: usize = (*HOST_PORTS.end() - *HOST_PORTS.start()) as usize + 1;

/// The ports in use on one host machine and how many sessions it runs.
#[derive(Debug)]
pub struct HostPorts {
    used: HashSet<u16>,
    /// Next port to try: allocation walks forward, so a freed port is reused only after a full turn
    /// (like an OS ephemeral range) and the usual case is O(1).
    cursor: u16,
    /// Active sessions on this host, for least-loaded placement.
    pub sessions: usize,
}

impl Default for HostPorts {
    fn default() -> Self {
        HostPorts { used: HashSet::new(), cursor: *HOST_PORTS.start(), sessions: 0 }
    }
}

impl HostPorts {
    /// Whether `n` more ports fit.
    pub fn has_room_for(&self, n: usize) -> bool {
        self.used.len() + n <= RANGE_LEN
    }

    /// Takes `n` free ports; `None` (and nothing taken) when they do not fit.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<u16>> {
        if !self.has_room_for(n) {
            return None;
        }
        let mut ports = Vec::with_capacity(n);
        while ports.len() < n {
            let port = self.cursor;
            self.cursor = if port == *HOST_PORTS.end() { *HOST_PORTS.start() } else { port + 1 };
            if self.used.insert(port) {
                ports.push(port);
            }
        }
        Some(ports)
    }

    /// Gives ports back.
    pub fn release(&mut self, ports: impl IntoIterator<Item = u16>) {
        for p in ports {
            self.used.remove(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_unique_until_released_and_bounded() {
        let mut h = HostPorts::default();
        let mut all = HashSet::new();
        while let Some(ps) = h.allocate(2) {
            for p in ps {
                assert!(HOST_PORTS.contains(&p));
                assert!(all.insert(p), "port {p} handed out twice");
            }
        }
        // 10001 ports: 5000 pairs fit, then one single port is left.
        assert_eq!(all.len(), 10000);
        assert_eq!(h.allocate(1).map(|v| v.len()), Some(1));
        assert!(h.allocate(1).is_none());
        h.release([20000, 20001]);
        assert_eq!(h.allocate(2), Some(vec![20000, 20001]));
    }
}

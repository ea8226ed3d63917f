//! Real servers for the end-to-end tests: `redis-server`, `nats-server -js` and the `gameye-bridge`
//! binary itself, each on a free loopback port, each stoppable and restartable, all cleaned up on drop.

mod bridge;
mod process;
mod proxy;
mod servers;

pub use bridge::{BridgeProcess, run_bridge};
pub use process::free_port;
pub use proxy::TcpRelay;
pub use servers::{NatsServer, RedisServer};

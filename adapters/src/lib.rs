//! The outside world of gameye-bridge. Each module is one adapter; adapters do not know each other.

pub mod config;
pub mod gameye;
pub mod http;
/// Single-threaded runtimes that each serve a share of the connections (not an adapter).
pub mod lanes;
pub mod nakama;
pub mod nats;
/// Pacing of background work, shared by the adapters that do it (not an adapter).
pub mod pace;
pub mod reconciler;
pub mod runtime;
pub mod session_events;
pub mod sns;
pub mod store;
/// Signing and sending Standard Webhooks, shared by the sinks that post events (not an adapter).
pub mod webhook;

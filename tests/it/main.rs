//! End-to-end tests: one binary, a module per area, all against real processes.

mod harness;
mod stack;

mod cli;
mod lanes;
mod nakama;
mod nats;
mod nats_seats;
mod outbox;
mod placement;
mod player_sync;
mod reconciler;
mod seats_contract;
mod servers;
mod session_events;
mod sessions;
mod sns;
mod store_contract;

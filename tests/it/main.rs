//! End-to-end tests: one binary, a module per area, all against real processes.

mod harness;
mod stack;

mod cli;
mod placement;
mod servers;
mod store_contract;

//! Integration tests: the emulator over real HTTP, one module per area.

mod auth;
mod binary;
mod control;
mod faults;
mod lifecycle;
mod logs_artifacts;
mod players;
mod regions;
mod sessions;
mod support;
mod validation;
mod world;

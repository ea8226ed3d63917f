//! The Gameye Session API: a typed client, its errors and their retry classification.

mod client;
mod error;
mod metrics;
mod session_api;
mod types;

pub use client::{GameyeClient, GameyeClientConfig, StopOutcome};
pub use error::{ErrorClass, GameyeError};
pub use metrics::GameyeMetrics;
pub use session_api::GameyeSessionApi;
pub use types::*;

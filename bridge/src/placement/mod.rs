//! The placement engine (DESIGN §3): claim the match, choose a region, create exactly one Gameye
//! session, record the outcome before anyone hears of it.

mod attempt;
mod backfill_cache;
mod engine;
mod player_sync;
mod seats;
mod service;
mod settings;

pub use engine::{
    Accepted, Answer, Engine, Job, OwedAnnouncements, PlaceError, PlacementObserver, PlacementReport,
    Progress,
};
pub use player_sync::PlayerSyncOutcome;
pub use seats::{
    BackfillAnswer, BackfillRequest, EndedSession, JoinAnswer, LeaveAnswer, SeatService, SeatServiceError,
    SessionFilter, SessionMetadata,
};
pub use service::{BoxFuture, PlacementService};
pub use settings::{EngineSettings, LEASE_MARGIN, PlayerSyncSettings, SeatSettings};

/// Label keys the bridge puts on every session it starts, so the reconciler can find them.
pub const MATCH_LABEL: &str = "gameye-bridge.match";
pub const SOURCE_LABEL: &str = "gameye-bridge.source";
/// Names the deployment that started the session (its state's key prefix): the reconciler asks
/// Gameye for these sessions only (`filter[gameye-bridge.deployment]`), so sessions of other
/// deployments or tools on the same Gameye account are neither listed nor adopted.
pub const DEPLOYMENT_LABEL: &str = "gameye-bridge.deployment";
/// The session's seats as its placement counted them (the match's `max_players`, else the image's
/// capacity, and never fewer than its players), so that a session the reconciler adopts (its seat
/// record lost) keeps them rather than the image's default.
pub const CAPACITY_LABEL: &str = "gameye-bridge.capacity";

#[cfg(test)]
mod tests;

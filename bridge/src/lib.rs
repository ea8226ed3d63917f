//! The core of gameye-bridge: what a match, an assignment and a placement are, and the rules that
//! turn one into the other. Nothing here performs I/O; the outside world is reached through the
//! traits in [`ports`], implemented by the `adapters` crate.

pub mod assignment;
pub mod error;
pub mod failure;
pub mod placement;
pub mod ports;
pub mod region;
pub mod request;
pub mod seats;
pub mod session_id;

pub use assignment::{Assignment, Port, PortProtocol};
pub use error::Error;
pub use failure::{Failure, FailureCode, FailureDetail};
pub use region::{
    CapExceeded, InvalidPolicy, LatencyCap, LocationAliases, MissingLatency, NoLocation, Objective,
    RankedLocation, RegionChoice, RegionInput, RegionPolicy, candidate_locations, choose_region,
};
pub use request::{
    InvalidRequest, InvalidRequestKind, MatchField, MatchIdConflict, MatchRequest, ParseTtlError, Player,
    Ttl, ValidatedMatch, parse_match_request,
};
pub use seats::{
    BackfillCandidate, BackfillPlayer, BackfillQuery, NewSession, RankedSession, Reservation, SeatError,
    SessionInfo, SessionSeats, SessionStatus, choose_backfill,
};
pub use session_id::{SESSION_NAMESPACE, session_id};

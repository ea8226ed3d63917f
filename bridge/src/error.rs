//! The crate's one error type: every way the core can refuse something, each a named type of its own.

use crate::region::{InvalidPolicy, NoLocation};
use crate::request::{InvalidRequest, MatchIdConflict, ParseTtlError};

/// Any error the core returns. Functions return the precise inner type; this enum lets callers
/// that handle several of them carry one type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A match request that cannot be accepted (HTTP 400/422, failure code `INVALID_REQUEST`).
    #[error(transparent)]
    InvalidRequest(#[from] InvalidRequest),
    /// A match id first requested with a different match (HTTP 409, `MATCH_ID_CONFLICT`).
    #[error(transparent)]
    MatchIdConflict(#[from] MatchIdConflict),
    /// No location can host the match (failure code `NO_LOCATION`).
    #[error(transparent)]
    NoLocation(#[from] NoLocation),
    /// A region policy from configuration that contradicts itself.
    #[error(transparent)]
    InvalidPolicy(#[from] InvalidPolicy),
    /// A TTL (`"1h30m"`) that could not be read, e.g. from `GAMEYE_API_TTL`.
    #[error(transparent)]
    InvalidTtl(#[from] ParseTtlError),
}

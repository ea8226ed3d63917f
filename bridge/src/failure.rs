//! The answer to a match that could not be placed (DESIGN §2).

use serde::{Deserialize, Serialize};

use crate::region::NoLocation;
use crate::request::{InvalidRequest, MatchIdConflict};

/// A match the bridge gave up on, as published on `gameye.match.failed.<match_id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Failure {
    /// The match this answers.
    pub match_id: String,
    /// What went wrong.
    pub error: FailureDetail,
}

/// The `error` object of a [`Failure`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FailureDetail {
    /// Machine-readable cause.
    pub code: FailureCode,
    /// Human-readable explanation; never contains secrets.
    pub message: String,
    /// Whether sending the same match again later may succeed. The bridge has already done its own
    /// retrying by the time it publishes a failure.
    pub retryable: bool,
}

/// Why a match could not be placed, written in SCREAMING_SNAKE_CASE.
///
/// Readers should treat a code they do not know as a non-retryable failure: codes may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailureCode {
    /// Every eligible location answered 420 (full or rate-limited), now or recently (cooling down).
    NoCapacity,
    /// No location was eligible: none available, none of the requested ones available, every one
    /// missing some player's latency, or all beyond the latency cap in `fail` mode.
    NoLocation,
    /// Gameye refused the bridge's token (401) or its scopes (403): a configuration problem.
    Unauthorized,
    /// The Gameye account's quota is spent (402).
    QuotaExceeded,
    /// Gameye does not know the image, tag or location (404).
    NotFound,
    /// The request itself was invalid, caught by the bridge or by Gameye (422).
    InvalidRequest,
    /// Gameye kept failing (5xx, timeouts, unreadable answers) through every retry.
    UpstreamUnavailable,
    /// The placement deadline (`placement.deadline`) passed before any attempt succeeded. Kept apart
    /// from `UPSTREAM_UNAVAILABLE` because the time may have gone to 420s and cool-downs, not to an
    /// unhealthy Gameye.
    DeadlineExceeded,
    /// The match id was first requested with a different match (other players, image, env, …):
    /// refused, and the first match left as it was. Never a placement's recorded outcome nor
    /// announced on `match.failed` (that would contradict the first match's outcome): only the
    /// answer to the refused request itself (a NATS reply, a dead letter).
    MatchIdConflict,
}

impl FailureCode {
    /// Whether resending the same match later may succeed, absent more specific knowledge:
    /// capacity frees up and outages end, while credentials, quota, names and bad requests do not
    /// fix themselves.
    pub fn default_retryable(self) -> bool {
        match self {
            Self::NoCapacity | Self::UpstreamUnavailable | Self::DeadlineExceeded => true,
            Self::NoLocation
            | Self::Unauthorized
            | Self::QuotaExceeded
            | Self::NotFound
            | Self::InvalidRequest
            | Self::MatchIdConflict => false,
        }
    }
}

impl Failure {
    /// The answer to a request refused as a [`MatchIdConflict`] (never recorded nor announced).
    pub fn match_id_conflict(conflict: &MatchIdConflict) -> Self {
        Self::new(&conflict.match_id, FailureCode::MatchIdConflict, conflict.to_string())
    }

    /// A failure with the code's default retryability.
    pub fn new(match_id: impl Into<String>, code: FailureCode, message: impl Into<String>) -> Self {
        Self {
            match_id: match_id.into(),
            error: FailureDetail { code, message: message.into(), retryable: code.default_retryable() },
        }
    }

    /// The failure for a request that did not pass validation; the message names the field.
    pub fn invalid_request(match_id: impl Into<String>, invalid: &InvalidRequest) -> Self {
        Self::new(match_id, FailureCode::InvalidRequest, invalid.to_string())
    }

    /// The failure for a match no location could take: `NO_CAPACITY` when every candidate was
    /// cooling down after a 420 (a capacity problem), `NO_LOCATION` otherwise. Retryable when
    /// asking again later may help (see [`NoLocation::is_transient`]).
    pub fn no_location(match_id: impl Into<String>, reason: &NoLocation) -> Self {
        let code = match reason {
            NoLocation::AllCoolingDown => FailureCode::NoCapacity,
            _ => FailureCode::NoLocation,
        };
        let mut failure = Self::new(match_id, code, reason.to_string());
        failure.error.retryable = reason.is_transient();
        failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serializes_to_the_design_shape() {
        let failure = Failure::new("m-123", FailureCode::NoCapacity, "all full");
        assert_eq!(
            serde_json::to_value(&failure).unwrap(),
            json!({"match_id": "m-123",
                   "error": {"code": "NO_CAPACITY", "message": "all full", "retryable": true}})
        );
    }

    #[test]
    fn every_code_is_screaming_snake_case() {
        let codes = [
            (FailureCode::NoCapacity, "NO_CAPACITY"),
            (FailureCode::NoLocation, "NO_LOCATION"),
            (FailureCode::Unauthorized, "UNAUTHORIZED"),
            (FailureCode::QuotaExceeded, "QUOTA_EXCEEDED"),
            (FailureCode::NotFound, "NOT_FOUND"),
            (FailureCode::InvalidRequest, "INVALID_REQUEST"),
            (FailureCode::UpstreamUnavailable, "UPSTREAM_UNAVAILABLE"),
            (FailureCode::DeadlineExceeded, "DEADLINE_EXCEEDED"),
            (FailureCode::MatchIdConflict, "MATCH_ID_CONFLICT"),
        ];
        for (code, text) in codes {
            assert_eq!(serde_json::to_value(code).unwrap(), json!(text));
            assert_eq!(serde_json::from_value::<FailureCode>(json!(text)).unwrap(), code);
        }
    }

    #[test]
    fn no_location_reasons_map_to_codes_and_retryability() {
        let cooling = Failure::no_location("m", &NoLocation::AllCoolingDown);
        assert_eq!((cooling.error.code, cooling.error.retryable), (FailureCode::NoCapacity, true));
        let none = Failure::no_location("m", &NoLocation::NoneAvailable);
        assert_eq!((none.error.code, none.error.retryable), (FailureCode::NoLocation, false));
        let capped = NoLocation::AboveCap { cap_ms: 60, best_worst_ms: 70, relaxes_later: true };
        let above = Failure::no_location("m", &capped);
        assert_eq!((above.error.code, above.error.retryable), (FailureCode::NoLocation, true));
        assert!(above.error.message.contains("60 ms"), "{}", above.error.message);
    }
}

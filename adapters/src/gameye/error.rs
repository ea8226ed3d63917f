use std::time::Duration;

use super::types::ErrorResponse;

/// What went wrong talking to Gameye. Keeps the status code and Gameye's `ErrorResponse` (when the
/// body was JSON at all) so callers can decide, log and report.
#[derive(Debug, thiserror::Error)]
pub enum GameyeError {
    #[error("Gameye answered {status} to {operation}: {}", describe(.body, .raw))]
    Status {
        operation: &'static str,
        status: u16,
        /// Gameye's error body, when it was JSON.
        body: Option<Box<ErrorResponse>>,
        /// The start of the body as text, for bodies that were not JSON (a proxy's HTML page).
        raw: String,
    },
    #[error("Gameye did not answer {operation} within {timeout:?}")]
    Timeout { operation: &'static str, timeout: Duration },
    #[error("cannot reach Gameye for {operation}: {message}")]
    Unreachable { operation: &'static str, message: String },
    #[error("Gameye's answer to {operation} could not be read: {message}")]
    Decode { operation: &'static str, message: String },
    #[error("invalid Gameye client configuration: {0}")]
    Config(String),
}

fn describe(body: &Option<Box<ErrorResponse>>, raw: &str) -> String {
    match body.as_deref() {
        Some(ErrorResponse { code, message, identifier, .. }) => format!(
            "{} {}{}",
            code.as_deref().unwrap_or("-"),
            message.as_deref().unwrap_or(""),
            identifier.as_deref().map(|id| format!(" (identifier {id})")).unwrap_or_default()
        ),
        None if raw.is_empty() => "empty body".to_owned(),
        None => format!("non-JSON body: {raw}"),
    }
}

/// What a failed call means for the caller: the core's own classification, so the placement
/// engine and the client can never disagree about it.
pub use bridge::ports::SessionApiErrorKind as ErrorClass;

impl GameyeError {
    /// The HTTP status Gameye answered, if it answered at all.
    pub fn status(&self) -> Option<u16> {
        match self {
            GameyeError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Gameye's error body, when there was a JSON one.
    pub fn response(&self) -> Option<&ErrorResponse> {
        match self {
            GameyeError::Status { body, .. } => body.as_deref(),
            _ => None,
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            GameyeError::Status { status, .. } => match status {
                401 => ErrorClass::Unauthorized,
                402 => ErrorClass::QuotaExceeded,
                403 => ErrorClass::Forbidden,
                404 => ErrorClass::NotFound,
                409 => ErrorClass::Conflict,
                420 | 429 => ErrorClass::NoCapacity,
                408 | 500..=599 => ErrorClass::Unavailable,
                _ => ErrorClass::Invalid,
            },
            GameyeError::Timeout { .. } | GameyeError::Unreachable { .. } | GameyeError::Decode { .. } => {
                ErrorClass::Unavailable
            }
            GameyeError::Config(_) => ErrorClass::Invalid,
        }
    }

    /// Whether the same call may succeed later: 420 and 5xx/timeouts yes; 401, 402, 403, 404,
    /// 409 and 422 no (they need a change, not patience).
    pub fn is_retryable(&self) -> bool {
        matches!(self.class(), ErrorClass::NoCapacity | ErrorClass::Unavailable)
    }
}

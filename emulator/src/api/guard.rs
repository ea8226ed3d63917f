//! What stands before every operation: the bearer token check and the fault rules.

use axum::http::{HeaderMap, StatusCode, header};

use super::error::ApiError;
use crate::{
    faults::{FaultAction, Operation},
    state::{AppState, lock},
    world::Scope,
};

/// Checks `Authorization: Bearer <token>`: 401 without a known token, 403 when the token lacks
/// `scope` (`None`: any valid token will do, as for join/leave whose spec names no scope).
pub fn authorize(state: &AppState, headers: &HeaderMap, scope: Option<Scope>) -> Result<(), ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .ok_or_else(|| {
            ApiError::unauthorized("Missing bearer token.")
                .with_details("Send the header `Authorization: Bearer <token>`.")
        })?;
    let scopes =
        state.tokens.get(token).ok_or_else(|| ApiError::unauthorized("The bearer token is not valid."))?;
    match scope {
        Some(scope) if !scopes.contains(&scope) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Your API token does not have the required permissions to invoke this endpoint.",
        )
        .with_details(format!("Missing scope {}.", scope.as_str()))),
        _ => Ok(()),
    }
}

/// Applies the fault rules for this operation: waits their delay, then hangs (until shutdown) or
/// answers the injected error. `Ok` means: perform the operation normally.
pub async fn inject_faults(state: &AppState, op: Operation, location: Option<&str>) -> Result<(), ApiError> {
    let plan = lock(&state.faults).plan(op, location);
    if !plan.delay.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(plan.delay) => {}
            _ = state.shutdown.cancelled() => return Err(shutting_down()),
        }
    }
    match plan.action {
        None => Ok(()),
        Some(FaultAction::Respond { status, non_json }) => Err(ApiError::injected(status, non_json)),
        // Until the client gives up (the connection drops and this future with it) or shutdown.
        Some(FaultAction::Hang) => {
            state.shutdown.cancelled().await;
            Err(shutting_down())
        }
    }
}

fn shutting_down() -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "The emulator is shutting down.")
}

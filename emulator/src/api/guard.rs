//! What stands before every operation: the bearer token check and the fault rules.

use axum::{
    http::{HeaderMap, StatusCode, header},
    response::Response,
};

use super::error::ApiError;
use crate::{
    faults::{AfterPlan, FaultAction, Operation},
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
/// answers the injected error. `Ok` means: perform the operation, and hand its answer to
/// [`Aftermath::answer`] (the `after` rules).
pub async fn inject_faults(
    state: &AppState,
    op: Operation,
    location: Option<&str>,
) -> Result<Aftermath, ApiError> {
    let plan = lock(&state.faults).plan(op, location);
    apply(state, plan.delay, plan.action).await?;
    Ok(Aftermath(plan.after))
}

/// The `after` fault rules of one request, to be applied once its operation took effect.
#[must_use = "an operation's answer must pass its `after` fault rules"]
pub struct Aftermath(AfterPlan);

impl Aftermath {
    /// The operation's answer, or what the `after` rules put in its place (a delay first, then a
    /// hang or an injected error): the operation took effect either way.
    pub async fn answer(
        self,
        state: &AppState,
        answer: Result<Response, ApiError>,
    ) -> Result<Response, ApiError> {
        apply(state, self.0.delay, self.0.action).await?;
        answer
    }
}

async fn apply(
    state: &AppState,
    delay: std::time::Duration,
    action: Option<FaultAction>,
) -> Result<(), ApiError> {
    if !delay.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = state.shutdown.cancelled() => return Err(shutting_down()),
        }
    }
    match action {
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

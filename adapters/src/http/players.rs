//! `PUT|GET /v1/players/{player_id}/latencies`: latencies reported ahead of matches, used when a
//! match arrives without them (FlexMatch events never carry any).

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use bridge::InvalidRequest;

use super::matches::{MatchesState, invalid_request, place_error};
use super::{ApiError, ErrorBody};

const MAX_LOCATIONS: usize = 64;
const MAX_LATENCY_MS: f64 = 60_000.0;
const MAX_NAME_CHARS: usize = 128;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencyReport {
    /// Location name (or alias) → round-trip latency in ms.
    #[schema(example = json!({"eu-west-1": 32, "us-east-1": 95}))]
    pub latencies: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlayerLatencies {
    pub player_id: String,
    pub latencies: BTreeMap<String, u32>,
    /// When the stored figures are forgotten (on PUT).
    #[serde(with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<OffsetDateTime>,
}

/// Stores (replaces) a player's latencies for `placement.latency_ttl`.
#[utoipa::path(
    put, path = "/v1/players/{player_id}/latencies", tag = "players",
    params(("player_id" = String, Path, description = "The player's id as the matchmaker knows it")),
    request_body(content = LatencyReport, content_type = "application/json"),
    responses(
        (status = 200, description = "Stored", body = PlayerLatencies),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 422, description = "Invalid figures (naming the field)", body = ErrorBody),
        (status = 503, description = "State store unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn put_latencies(
    State(state): State<MatchesState>,
    Path(player_id): Path<String>,
    body: Bytes,
) -> Result<Json<PlayerLatencies>, ApiError> {
    check_name("player_id", &player_id)?;
    let report: LatencyReport =
        serde_json::from_slice(&body).map_err(|e| invalid_request(InvalidRequest::from_json(&body, &e)))?;
    let latencies = validate(report)?;
    state.service.put_latencies(&player_id, &latencies).await.map_err(place_error)?;
    let expires_at = OffsetDateTime::now_utc() + state.service.latency_keep_for();
    Ok(Json(PlayerLatencies { player_id, latencies, expires_at: Some(expires_at) }))
}

/// The player's stored latencies.
#[utoipa::path(
    get, path = "/v1/players/{player_id}/latencies", tag = "players",
    params(("player_id" = String, Path, description = "The player's id")),
    responses(
        (status = 200, description = "Stored latencies", body = PlayerLatencies),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "None stored (or expired)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_latencies(
    State(state): State<MatchesState>,
    Path(player_id): Path<String>,
) -> Result<Json<PlayerLatencies>, ApiError> {
    let latencies = state
        .service
        .get_latencies(&player_id)
        .await
        .map_err(place_error)?
        .ok_or_else(|| ApiError::not_found(format!("no latencies stored for player `{player_id}`")))?;
    Ok(Json(PlayerLatencies { player_id, latencies, expires_at: None }))
}

fn validate(report: LatencyReport) -> Result<BTreeMap<String, u32>, ApiError> {
    if report.latencies.is_empty() {
        return Err(invalid("latencies", "must name at least one location"));
    }
    if report.latencies.len() > MAX_LOCATIONS {
        return Err(invalid("latencies", &format!("at most {MAX_LOCATIONS} locations")));
    }
    let mut checked = BTreeMap::new();
    for (location, ms) in report.latencies {
        check_name(&format!("latencies.{location}"), &location)?;
        if !ms.is_finite() || !(0.0..=MAX_LATENCY_MS).contains(&ms) {
            return Err(invalid(&format!("latencies.{location}"), "must be a number of ms from 0 to 60000"));
        }
        // Rounded up, like match requests: a cap is never met by rounding down.
        checked.insert(location, ms.ceil() as u32);
    }
    Ok(checked)
}

fn check_name(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.chars().count() > MAX_NAME_CHARS || value.chars().any(char::is_control) {
        return Err(invalid(
            field,
            &format!("must be 1 to {MAX_NAME_CHARS} characters without control characters"),
        ));
    }
    Ok(())
}

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST", format!("{field}: {message}"))
}

//! `GET /v1/locations`: where the image can run now, and which addresses clients ping.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use bridge::ports::{AvailableLocation, SessionApiErrorKind};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::matches::MatchesState;
use super::{ApiError, ErrorBody};

#[derive(Debug, Deserialize, IntoParams)]
pub struct LocationsQuery {
    /// The image; the configured `gameye.image` when absent.
    image: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LocationList {
    pub image: String,
    pub locations: Vec<AvailableLocation>,
}

/// Locations that can host the image now, with the IPs clients ping to measure latency.
#[utoipa::path(
    get, path = "/v1/locations", tag = "locations",
    params(LocationsQuery),
    responses(
        (status = 200, description = "Available locations", body = LocationList),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Gameye does not know the image", body = ErrorBody),
        (status = 502, description = "Gameye failed", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_locations(
    State(state): State<MatchesState>,
    Query(query): Query<LocationsQuery>,
) -> Result<Json<LocationList>, ApiError> {
    let image = query.image.unwrap_or_else(|| state.service.default_image().to_owned());
    let locations = state.service.available_locations(&image).await.map_err(|error| match error.kind {
        SessionApiErrorKind::NotFound => ApiError::not_found(format!("Gameye does not know image `{image}`")),
        _ => ApiError::new(StatusCode::BAD_GATEWAY, "UPSTREAM_UNAVAILABLE", format!("Gameye: {error}")),
    })?;
    Ok(Json(LocationList { image, locations }))
}

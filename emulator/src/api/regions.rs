//! GET /available-location/{image} (get-available-locations) and GET /tag/{region}/{image}/{version} (tag-exists).

use axum::{
    Json,
    extract::{Path, State, rejection::PathRejection},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{
    error::ApiError,
    guard::{authorize, inject_faults},
};
use crate::{
    faults::Operation,
    state::{SharedState, lock},
    world::Scope,
};

/// Handler of GET /available-location/{image}: the locations that have room for a session now.
pub async fn available_locations(
    State(state): State<SharedState>,
    headers: HeaderMap,
    image: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Some(Scope::RegionsRead))?;
    let image = image.map(|Path(i)| i).unwrap_or_default();
    let after = inject_faults(&state, Operation::GetAvailableLocations, None).await?;
    let answer = locations_with_room(&state, &image);
    after.answer(&state, answer).await
}

/// The image's locations with room, or 404 for an unknown image.
fn locations_with_room(state: &SharedState, image: &str) -> Result<Response, ApiError> {
    if !state.applications.contains_key(image) {
        return Err(image_not_found(image));
    }
    let registry = state.sessions();
    let locations: Vec<_> = state
        .location_order
        .iter()
        .filter_map(|id| state.locations.get(id))
        .filter(|l| registry.active_in(&l.id) < l.capacity)
        .map(|l| json!({ "id": l.id, "ips": l.ping_ips }))
        .collect();
    drop(registry);
    Ok(Json(json!({ "locations": locations })).into_response())
}

/// Handler of GET /tag/{region}/{image}/{version}: `{"exists": bool}`; 404 for an unknown image
/// (and, with the `tag_missing_404` quirk, for a missing tag too).
pub async fn tag_exists(
    State(state): State<SharedState>,
    headers: HeaderMap,
    params: Result<Path<(String, String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Some(Scope::RegionsRead))?;
    let (region, image, version) = params.map(|Path(p)| p).unwrap_or_default();
    let after = inject_faults(&state, Operation::TagExists, Some(&region)).await?;
    let answer = tag_answer(&state, &region, &image, &version);
    after.answer(&state, answer).await
}

/// Whether the tag exists in the region.
fn tag_answer(state: &SharedState, region: &str, image: &str, version: &str) -> Result<Response, ApiError> {
    let app = state.applications.get(image).ok_or_else(|| image_not_found(image))?;
    let exists = state.locations.contains_key(region) && app.tags.iter().any(|t| t.name == version);
    if !exists && lock(&state.quirks).tag_missing_404 {
        return Err(ApiError::not_found(format!(
            "Tag {version:?} of image {image:?} does not exist in {region:?}."
        )));
    }
    Ok(Json(json!({ "exists": exists })).into_response())
}

fn image_not_found(image: &str) -> ApiError {
    ApiError::not_found(format!("Image {image:?} not found."))
        .with_details("The image does not exist or you are not authorized to use it.")
}

//! `GET /openapi.json`: the bridge's own HTTP API, generated from the handlers and their types.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{ErrorBody, health, locations, matches, players};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "gameye-bridge",
        description = "Matchmaker results in, Gameye game servers out: placement, latencies and operations."
    ),
    paths(
        matches::place_match,
        matches::get_match,
        players::put_latencies,
        players::get_latencies,
        locations::list_locations,
        health::healthz,
        health::readyz,
        super::metrics,
    ),
    components(schemas(ErrorBody, bridge::MatchRequest, bridge::Assignment, bridge::Failure)),
    modifiers(&BearerAuth),
    tags(
        (name = "matches", description = "Place matches and poll their state"),
        (name = "players", description = "Latencies reported ahead of matches"),
        (name = "locations", description = "Where games can run, and what to ping"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as served.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

//! `GET /openapi.json`: the bridge's own HTTP API, generated from the handlers and their types.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{ErrorBody, health, locations, matches, nakama, players, sessions, sns};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "gameye-bridge",
        description = "Matchmaker results in, Gameye game servers out: placement, latencies, seats and operations."
    ),
    paths(
        matches::place_match,
        matches::get_match,
        players::put_latencies,
        players::get_latencies,
        locations::list_locations,
        sessions::list_sessions,
        sessions::get_session,
        sessions::join_players,
        sessions::leave_players,
        sessions::end_session,
        sessions::backfill,
        nakama::matched,
        nakama::events,
        sns::receive,
        sns::get_ticket,
        health::healthz,
        health::readyz,
        super::metrics,
    ),
    components(schemas(ErrorBody, bridge::MatchRequest, bridge::Assignment, bridge::Failure)),
    modifiers(&BearerAuth, &CommonResponses),
    tags(
        (name = "matches", description = "Place matches and poll their state"),
        (name = "players", description = "Latencies reported ahead of matches"),
        (name = "locations", description = "Where games can run, and what to ping"),
        (name = "sessions", description = "Placed sessions' players, reserved and open seats, backfill, ending"),
        (name = "nakama", description = "Nakama's matchmaker-matched hook and events"),
        (name = "sns", description = "AWS GameLift FlexMatch events over Amazon SNS, and ticket polling"),
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
        // The Nakama routes also take `x-bridge-signature: sha256=<hex HMAC-SHA256 of
        // "<x-bridge-timestamp>.<body>">` with `nakama.hmac_secret`.
        components.add_security_scheme(
            "nakama_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-bridge-signature",
                "sha256=<hex HMAC-SHA256(nakama.hmac_secret, \"<x-bridge-timestamp>.<body>\")>, \
                 with x-bridge-timestamp: <unix seconds>; /v1/nakama/events applies a signature once",
            ))),
        );
    }
}

/// Answers every route can give that its own annotation need not repeat: 413 on every route with a
/// body (the body limit wraps the whole router), and on the `/v1` routes that use the state store
/// 503 (unavailable: retry) and 500 (`STORE_ERROR`: it refused, a retry cannot fix it).
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            let body = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
            ResponseBuilder::new().description(description).content("application/json", body).build().into()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let uses_store = path.starts_with("/v1/") && path != "/v1/locations";
            for operation in
                [&mut item.get, &mut item.put, &mut item.post, &mut item.delete].into_iter().flatten()
            {
                let responses = &mut operation.responses.responses;
                if operation.request_body.is_some() {
                    responses
                        .entry("413".into())
                        .or_insert_with(|| error("Body larger than http.body_limit"));
                }
                if uses_store {
                    responses.entry("500".into()).or_insert_with(|| {
                        error("STORE_ERROR: the state store refused the operation; a retry cannot fix it")
                    });
                    responses.entry("503".into()).or_insert_with(|| error("State store unavailable; retry"));
                }
            }
        }
    }
}

/// The document as served.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

//! POST /session (session-run).

use std::time::Duration;

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{
    body::Fields,
    error::ApiError,
    guard::{authorize, inject_faults},
};
use crate::{
    duration::parse_go_duration,
    faults::Operation,
    sessions::{CreateError, NewSession},
    state::{SharedState, lock, now_ms},
    world::Scope,
};

const FIELDS: &[&str] =
    &["id", "location", "image", "env", "args", "restart", "labels", "version", "ttl", "external_id"];

/// Upper bound of a TTL: beyond a year it is a mistake, and `Instant + ttl` must not overflow.
const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// Handler of POST /session.
pub async fn session_run(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Some(Scope::SessionStart))?;
    let (location, image, version, new) = parse(&body)?;
    let after = inject_faults(&state, Operation::SessionRun, Some(&location)).await?;
    let answer = create(&state, &location, &image, version, new);
    after.answer(&state, answer).await
}

/// Starts the session: 201, or the error POST /session answers.
fn create(
    state: &SharedState,
    location: &str,
    image: &str,
    version: Option<String>,
    new: NewSession,
) -> Result<Response, ApiError> {
    let loc = state
        .locations
        .get(location)
        .ok_or_else(|| ApiError::not_found(format!("Location {location:?} does not exist.")))?;
    let app = state
        .applications
        .get(image)
        .ok_or_else(|| ApiError::not_found(format!("Image {image:?} does not exist.")))?;
    let tag = match version {
        Some(v) if app.tags.iter().any(|t| t.name == v) => v,
        Some(v) => {
            return Err(ApiError::not_found(format!("Tag {v:?} of image {image:?} does not exist.")));
        }
        // Validation guarantees at least one tag per image.
        None => app.tags.iter().max_by_key(|t| t.priority).map(|t| t.name.clone()).unwrap_or_default(),
    };

    let now = Instant::now();
    let mut registry = state.sessions();
    let session = registry
        .create(loc, app, NewSession { tag, ..new }, now, state.start_delay, now_ms())
        .map_err(|e| match e {
            CreateError::IdInUse => ApiError::conflict(
                "Cannot start a session with the provided id. Please use a unique identifier.",
            ),
            CreateError::NoCapacity => ApiError::new(
                StatusCode::from_u16(420).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                format!("No capacity left in location {location:?}. Please try again later."),
            ),
        })?;
    let body = if lock(&state.quirks).run_response_minimal {
        json!({ "host": session.host.to_string(), "ports": [] })
    } else {
        json!({ "id": session.id, "host": session.host.to_string(), "ports": session.ports })
    };
    drop(registry);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Validates the body: (location, image, version, everything else).
fn parse(body: &[u8]) -> Result<(String, String, Option<String>, NewSession), ApiError> {
    let mut f = Fields::parse(body, FIELDS)?;
    let id = f.string("id", false, 1);
    let location = f.string("location", true, 1);
    let image = f.string("image", true, 1);
    let env = f.string_map("env", 1).unwrap_or_default();
    let args = f.string_array("args", false, 1).unwrap_or_default();
    let restart = f.boolean("restart").unwrap_or(false);
    let labels = f.string_map("labels", 0).unwrap_or_default();
    // Gameye's backend is Go (oapi-codegen, `x-go-type-skip-optional-pointer`): an empty string is
    // its zero value and means "not given", for `version` and `ttl` alike.
    let version = f.string("version", false, 0).filter(|v| !v.is_empty());
    let external_id = f.string("external_id", false, 0);
    let ttl = match f.take("ttl") {
        None => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(v) => match parse_ttl(&v) {
            Ok(ttl) => Some(ttl),
            Err(why) => {
                f.push("ttl", why);
                None
            }
        },
    };
    f.finish()?;
    let new = NewSession { id, env, args, restart, labels, ttl, external_id, ..NewSession::default() };
    // `finish` succeeded, so both required fields were present.
    Ok((location.unwrap_or_default(), image.unwrap_or_default(), version, new))
}

/// `ttl` in either documented form: a Go duration string (spec: `"1h"`, `"2h30m"`; below a minute
/// rounds up to a minute) or integer seconds (marketing docs: `3600`; taken literally, which also
/// lets tests use lifetimes of a few seconds).
fn parse_ttl(v: &Value) -> Result<Duration, &'static str> {
    let ttl = match v {
        Value::String(s) => parse_go_duration(s)
            .filter(|d| !d.is_zero())
            .ok_or("must be a duration such as \"1h\", \"2h30m\" or \"90m\"")?
            .max(Duration::from_secs(60)),
        Value::Number(n) => {
            Duration::from_secs(n.as_u64().ok_or("must be a whole number of seconds or a duration string")?)
        }
        _ => return Err("must be a duration string such as \"1h\" or a number of seconds"),
    };
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err("must be more than zero and at most a year");
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_forms() {
        let secs = |v: Value| parse_ttl(&v).map(|d| d.as_secs());
        assert_eq!(secs(json!("1h")), Ok(3600));
        assert_eq!(secs(json!("2h30m")), Ok(9000));
        assert_eq!(secs(json!("10s")), Ok(60));
        assert_eq!(secs(json!(3600)), Ok(3600));
        assert_eq!(secs(json!(2)), Ok(2));
        for bad in [json!(0), json!(-1), json!(1.5), json!("0m"), json!("soon"), json!(true), json!("9000h")]
        {
            assert!(parse_ttl(&bad).is_err(), "{bad}");
        }
    }
}

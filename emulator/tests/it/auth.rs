//! Bearer tokens and scopes on every operation: 401 without a known token, 403 without the scope.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Emu, assert_error, send};

/// (method, path, body, scope the spec names; None = any valid token).
fn operations() -> Vec<(Method, &'static str, Option<Value>, Option<&'static str>)> {
    vec![
        (
            Method::POST,
            "/session",
            Some(json!({ "location": "eu-west-1", "image": "demo-game" })),
            Some("session:start"),
        ),
        (Method::GET, "/session", None, Some("session:read")),
        (Method::GET, "/session/s", None, Some("session:read")),
        (Method::DELETE, "/session/s", None, Some("session:stop")),
        (Method::PUT, "/session/player/join", Some(json!({ "session": "s", "players": ["p"] })), None),
        (Method::DELETE, "/session/player/leave", Some(json!({ "session": "s", "players": ["p"] })), None),
        (Method::GET, "/available-location/demo-game", None, Some("regions:read")),
        (Method::GET, "/tag/eu-west-1/demo-game/1.0.0", None, Some("regions:read")),
        (Method::GET, "/logs?id=s", None, Some("logs:read")),
        (Method::GET, "/artifacts?session=s&path=/x", None, Some("artifact:read")),
    ]
}

const ALL_SCOPES: [&str; 6] =
    ["session:start", "session:read", "session:stop", "regions:read", "logs:read", "artifact:read"];

async fn world_with_tokens() -> Emu {
    let mut toml = String::from("start_delay = \"0s\"\n[[tokens]]\ntoken = \"none\"\nscopes = []\n");
    for scope in ALL_SCOPES {
        toml.push_str(&format!("[[tokens]]\ntoken = \"only-{scope}\"\nscopes = [\"{scope}\"]\n"));
    }
    Emu::toml(&toml).await
}

fn request(
    emu: &Emu,
    method: &Method,
    path: &str,
    body: &Option<Value>,
    token: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut req = emu.anon(method.clone(), path);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(body);
    }
    req
}

#[tokio::test]
async fn every_operation_answers_401_without_a_known_token() {
    let emu = Emu::instant().await;
    for (method, path, body, _) in operations() {
        for token in [None, Some("wrong-token")] {
            let (status, error) = send(request(&emu, &method, path, &body, token)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} with {token:?}");
            assert_error(&error, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
        }
        // Not a bearer token at all.
        let req =
            request(&emu, &method, path, &body, None).header("authorization", "Basic ZW11bGF0b3ItdG9rZW46");
        assert_eq!(send(req).await.0, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    assert!(emu.all_sessions().await.is_empty());
}

#[tokio::test]
async fn every_scoped_operation_answers_403_without_its_scope() {
    let emu = world_with_tokens().await;
    for (method, path, body, scope) in operations() {
        let (status, error) = send(request(&emu, &method, path, &body, Some("none"))).await;
        match scope {
            Some(_) => {
                assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
                assert_error(&error, StatusCode::FORBIDDEN, "FORBIDDEN");
            }
            // join/leave name no scope: any valid token passes (and finds no session).
            None => assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}"),
        }
    }
}

#[tokio::test]
async fn the_named_scope_is_enough_and_no_other_scope_is() {
    let emu = world_with_tokens().await;
    for (method, path, body, scope) in operations() {
        let Some(scope) = scope else { continue };
        for other in ALL_SCOPES {
            let token = format!("only-{other}");
            let (status, _) = send(request(&emu, &method, path, &body, Some(&token))).await;
            if other == scope {
                assert!(
                    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                    "{method} {path}: {status}"
                );
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path} with {other}");
            }
        }
    }
}

//! PUT /session/player/join and DELETE /session/player/leave.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{Emu, assert_error, send, session, violated_fields};

#[tokio::test]
async fn join_counts_every_player_once() {
    let emu = Emu::instant().await;
    emu.run_ok(session("j", "eu-west-1")).await;
    let (status, body) = emu.join(json!({ "session": "j", "players": ["p1", "p2"] })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "count": 2, "players": ["p1", "p2"] }));
    // Idempotent: again, plus a duplicate inside one request.
    let (status, body) = emu.join(json!({ "session": "j", "players": ["p2", "p3", "p3"] })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "count": 3, "players": ["p1", "p2", "p3"] }));
    let (_, s) = emu.get("/session/j").await;
    assert_eq!(s["players"], json!({ "joined": ["p1", "p2", "p3"], "joinedCount": 3 }));
    let (_, list) = emu.get("/session").await;
    assert_eq!(list["sessions"][0]["playerCount"], 3);
}

#[tokio::test]
async fn join_answers_404_for_unknown_or_stopped_sessions() {
    let emu = Emu::instant().await;
    let (status, error) = emu.join(json!({ "session": "nope", "players": ["p"] })).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&error, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND");
    emu.run_ok(session("old", "eu-west-1")).await;
    emu.stop("old").await;
    let (status, _) = emu.join(json!({ "session": "old", "players": ["p"] })).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn join_rejects_bad_bodies_with_422() {
    let emu = Emu::instant().await;
    emu.run_ok(session("j", "eu-west-1")).await;
    let cases = [
        (json!({ "session": "j" }), vec!["players"]),
        (json!({ "players": ["p"] }), vec!["session"]),
        (json!({ "session": "j", "players": "p" }), vec!["players"]),
        (json!({ "session": "j", "players": [1] }), vec!["players[0]"]),
        (json!({ "session": "j", "players": [], "extra": 1 }), vec!["extra"]),
    ];
    for (body, fields) in cases {
        let (status, error) = emu.join(body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_error(&error, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR");
        assert_eq!(violated_fields(&error), fields, "{body}");
    }
    let (status, _) = send(emu.req(Method::PUT, "/session/player/join").body("{nope")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn leave_needs_the_session_in_the_body_like_the_live_api() {
    let emu = Emu::instant().await;
    emu.run_ok(session("l", "eu-west-1")).await;
    emu.join(json!({ "session": "l", "players": ["p1", "p2", "p3"] })).await;

    // The spec's body alone: the live API answers 404.
    let (status, error) = emu.leave(json!({ "players": ["p1"] })).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&error, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND");

    let (status, body) = emu.leave(json!({ "session": "l", "players": ["p1", "p3"] })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "count": 1, "players": ["p2"] }));
    // Idempotent, and unknown players are ignored.
    let (status, body) = emu.leave(json!({ "session": "l", "players": ["p1", "zz"] })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "count": 1, "players": ["p2"] }));
    let (_, s) = emu.get("/session/l").await;
    assert_eq!(s["players"]["joinedCount"], 1);
}

#[tokio::test]
async fn leave_answers_404_for_unknown_sessions_and_422_for_bad_bodies() {
    let emu = Emu::instant().await;
    let (status, _) = emu.leave(json!({ "session": "nope", "players": ["p"] })).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for body in [
        json!({ "session": "x" }),
        json!({ "session": "x", "players": [true] }),
        json!({ "session": 7, "players": [] }),
        json!({ "session": "x", "players": [], "all": true }),
        json!(["p"]),
    ] {
        let (status, error) = emu.leave(body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_error(&error, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR");
    }
}

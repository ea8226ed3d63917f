//! POST /session body validation (422 with violations) and the two `ttl` forms.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Emu, assert_error, send, violated_fields};

async fn expect_422(emu: &Emu, body: Value, fields: &[&str]) {
    let (status, error) = emu.run(body.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} → {error}");
    assert_error(&error, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR");
    let mut got = violated_fields(&error);
    got.sort();
    let mut want: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "{body} → {error}");
}

#[tokio::test]
async fn unknown_fields_are_rejected() {
    let emu = Emu::instant().await;
    expect_422(
        &emu,
        json!({ "location": "eu-west-1", "image": "demo-game", "region": "eu", "Image": "x" }),
        &["region", "Image"],
    )
    .await;
    assert!(emu.all_sessions().await.is_empty(), "nothing is created on 422");
}

#[tokio::test]
async fn location_and_image_are_required_and_non_empty() {
    let emu = Emu::instant().await;
    expect_422(&emu, json!({}), &["location", "image"]).await;
    expect_422(&emu, json!({ "location": "", "image": "demo-game" }), &["location"]).await;
    expect_422(&emu, json!({ "location": "eu-west-1", "image": "" }), &["image"]).await;
    expect_422(&emu, json!({ "location": "eu-west-1", "image": "demo-game", "id": "" }), &["id"]).await;
}

#[tokio::test]
async fn env_values_and_args_items_must_be_non_empty_strings() {
    let emu = Emu::instant().await;
    let base = |extra: Value| {
        let mut body = json!({ "location": "eu-west-1", "image": "demo-game" });
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    expect_422(&emu, base(json!({ "env": { "A": "1", "B": "" } })), &["env.B"]).await;
    expect_422(&emu, base(json!({ "env": { "A": 1 } })), &["env.A"]).await;
    expect_422(&emu, base(json!({ "args": ["--ok", ""] })), &["args[1]"]).await;
    expect_422(&emu, base(json!({ "args": [3] })), &["args[0]"]).await;
    // Labels may be empty strings (no minLength in the spec) but must be strings.
    emu.run_ok(base(json!({ "labels": { "a": "" } }))).await;
    expect_422(&emu, base(json!({ "labels": { "a": 1 } })), &["labels.a"]).await;
}

#[tokio::test]
async fn wrong_types_are_rejected_all_at_once() {
    let emu = Emu::instant().await;
    expect_422(
        &emu,
        json!({
            "id": 5, "location": ["eu-west-1"], "image": null, "env": "A=1", "args": "--x",
            "restart": "yes", "labels": [], "version": 1, "external_id": false, "ttl": true
        }),
        &["id", "location", "image", "env", "args", "restart", "labels", "version", "external_id", "ttl"],
    )
    .await;
}

#[tokio::test]
async fn malformed_or_non_object_bodies_are_rejected() {
    let emu = Emu::instant().await;
    for raw in ["{\"location\": ", "[]", "\"x\"", "", "null"] {
        let (status, error) =
            send(emu.req(Method::POST, "/session").header("content-type", "application/json").body(raw))
                .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{raw:?}");
        assert_error(&error, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR");
        assert_eq!(violated_fields(&error), ["body"]);
    }
    // No content type at all is not an excuse for a 415 the spec does not document.
    let (status, _) =
        send(emu.req(Method::POST, "/session").body(r#"{"location":"eu-west-1","image":"demo-game"}"#)).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn ttl_accepts_go_durations_and_integer_seconds() {
    let emu = Emu::instant().await;
    for (i, ttl) in
        [json!("1h"), json!("2h30m"), json!("90m"), json!("1m"), json!(3600), json!(""), json!("45s")]
            .into_iter()
            .enumerate()
    {
        let (status, body) = emu
            .run(json!({ "id": format!("t{i}"), "location": "eu-west-1", "image": "demo-game", "ttl": ttl }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{ttl} → {body}");
    }
    for ttl in
        [json!("soon"), json!("1"), json!("1d"), json!("0m"), json!(0), json!(-60), json!(1.5), json!([])]
    {
        expect_422(&emu, json!({ "location": "eu-west-1", "image": "demo-game", "ttl": ttl }), &["ttl"])
            .await;
    }
}

#[tokio::test]
async fn every_optional_field_is_accepted() {
    let emu = Emu::instant().await;
    emu.run_ok(json!({
        "id": "full", "location": "eu-west-1", "image": "demo-game", "env": { "K": "v" },
        "args": ["--max-players=8"], "restart": true, "labels": { "m": "r" }, "version": "latest",
        "ttl": "1h", "external_id": "ext-1"
    }))
    .await;
    let all = emu.all_sessions().await;
    assert_eq!(all[0]["args"], json!(["--max-players=8"]));
    assert_eq!(all[0]["tag"], "latest");
}

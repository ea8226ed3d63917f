//! GET /available-location/{image} and GET /tag/{region}/{image}/{version}.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Emu, assert_error};

#[tokio::test]
async fn available_locations_list_every_location_with_its_ping_ips() {
    let emu = Emu::instant().await;
    let (status, body) = emu.get("/available-location/demo-game").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({ "locations": [
            { "id": "eu-west-1", "ips": ["192.0.2.10"] },
            { "id": "eu-central-1", "ips": ["192.0.2.20"] },
            { "id": "us-east-1", "ips": ["192.0.2.30"] },
            { "id": "us-west-2", "ips": ["192.0.2.40"] },
            { "id": "ap-northeast-1", "ips": ["192.0.2.50"] },
        ]})
    );
}

#[tokio::test]
async fn available_locations_answer_404_for_an_unknown_image() {
    let emu = Emu::instant().await;
    let (status, error) = emu.get("/available-location/other-game").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&error, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND");
}

#[tokio::test]
async fn tag_exists_tells_whether_the_tag_is_there() {
    let emu = Emu::instant().await;
    for (path, exists) in [
        ("/tag/eu-west-1/demo-game/1.0.0", true),
        ("/tag/us-east-1/demo-game/latest", true),
        ("/tag/eu-west-1/demo-game/2.0.0", false),
        ("/tag/mars-1/demo-game/1.0.0", false),
    ] {
        let (status, body) = emu.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(body, json!({ "exists": exists }), "{path}");
    }
    let (status, error) = emu.get("/tag/eu-west-1/other-game/1.0.0").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&error, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND");
}

#[tokio::test]
async fn missing_tag_quirk_answers_404_instead_of_false() {
    let emu = Emu::toml("[quirks]\ntag_missing_404 = true").await;
    assert_eq!(emu.get("/tag/eu-west-1/demo-game/2.0.0").await.0, StatusCode::NOT_FOUND);
    assert_eq!(emu.get("/tag/eu-west-1/demo-game/1.0.0").await.1, json!({ "exists": true }));
}

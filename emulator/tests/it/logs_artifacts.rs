//! GET /logs (plain and followed) and GET /artifacts (a real .tar.gz after the session stopped).

use std::{io::Read, time::Duration};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{Emu, assert_error, session};

#[tokio::test]
async fn logs_are_plain_text_about_the_session() {
    let emu = Emu::instant().await;
    let run = emu.run_ok(session("log", "eu-west-1")).await;
    emu.join(json!({ "session": "log", "players": ["alice"] })).await;
    let response = emu.req(Method::GET, "/logs?id=log").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    assert!(text.contains("container log created from demo-game:1.0.0 in eu-west-1"), "{text}");
    let udp = &run["ports"][0]["host"];
    assert!(text.contains(&format!("listening on 0.0.0.0:7777/udp (host 203.0.113.10:{udp})")), "{text}");
    assert!(text.contains("player alice joined"), "{text}");
    assert!(text.lines().all(|l| l.len() > 25 && l.as_bytes()[4] == b'-'), "timestamped lines: {text}");
}

#[tokio::test]
async fn logs_answer_404_for_unknown_or_missing_ids() {
    let emu = Emu::instant().await;
    for path in ["/logs?id=nope", "/logs", "/logs?id="] {
        let (status, error) = crate::support::send(emu.req(Method::GET, path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_error(&error, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND");
    }
}

#[tokio::test]
async fn followed_logs_stream_until_the_session_stops() {
    let emu = Emu::toml("start_delay = \"0s\"\nlog_interval = \"50ms\"").await;
    emu.run_ok(session("live", "eu-west-1")).await;
    let mut response = emu.req(Method::GET, "/logs?id=live&follow=true").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut text = String::new();
    let read_ticks = async {
        while text.matches("tick:").count() < 3 {
            let chunk = response.chunk().await.unwrap().expect("stream still open");
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read_ticks).await.expect("a line every interval");
    emu.join(json!({ "session": "live", "players": ["bob"] })).await;
    emu.stop("live").await;
    let read_to_end = async {
        while let Some(chunk) = response.chunk().await.unwrap() {
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read_to_end)
        .await
        .expect("the stream ends once the session stopped");
    assert!(text.contains("player bob joined"), "{text}");
    assert!(text.trim_end().ends_with("received SIGTERM, shutting down"), "{text}");
    assert_eq!(text.matches("server ready").count(), 1, "each line once: {text}");
}

#[tokio::test]
async fn following_a_stopped_session_returns_at_once() {
    let emu = Emu::instant().await;
    emu.run_ok(session("done", "eu-west-1")).await;
    emu.stop("done").await;
    let text = tokio::time::timeout(
        Duration::from_secs(3),
        emu.req(Method::GET, "/logs?id=done&follow=true").send(),
    )
    .await
    .expect("no endless stream")
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(text.contains("received SIGTERM"), "{text}");
}

fn untar(bytes: &[u8]) -> Vec<(String, String)> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    archive
        .entries()
        .expect("a tar.gz")
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut content = String::new();
            e.read_to_string(&mut content).unwrap();
            (path, content)
        })
        .collect()
}

#[tokio::test]
async fn artifacts_are_a_tar_gz_once_the_session_stopped() {
    let emu = Emu::instant().await;
    emu.run_ok(session("art", "eu-west-1")).await;
    let path = "/artifacts?session=art&path=/home/game/crash.log";
    let (status, error) = crate::support::send(emu.req(Method::GET, path)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not before the session stopped");
    assert_error(&error, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND");

    emu.stop("art").await;
    let response = emu.req(Method::GET, path).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-tar");
    let bytes = response.bytes().await.unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip magic");
    let entries = untar(&bytes);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, "home/game/crash.log");
    assert!(entries[0].1.contains("session art"), "{}", entries[0].1);

    let response = emu.req(Method::GET, "/artifacts?session=art&path=/home/game/logs/").send().await.unwrap();
    let names: Vec<_> = untar(&response.bytes().await.unwrap()).into_iter().map(|e| e.0).collect();
    assert_eq!(names, ["home/game/logs/", "home/game/logs/session.log"]);
}

#[tokio::test]
async fn artifacts_answer_404_for_unknown_sessions_or_missing_parameters() {
    let emu = Emu::instant().await;
    emu.run_ok(session("a", "eu-west-1")).await;
    emu.stop("a").await;
    for path in
        ["/artifacts?session=nope&path=/x", "/artifacts?session=a", "/artifacts?path=/x", "/artifacts"]
    {
        let (status, error) = crate::support::send(emu.req(Method::GET, path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_error(&error, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND");
    }
}

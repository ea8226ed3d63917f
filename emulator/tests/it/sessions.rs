//! POST /session, GET /session, GET /session/{id}, DELETE /session/{id}: statuses and shapes.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Emu, assert_error, now_ms, session};
use gameye_emulator::{HOST_PORTS, World};

#[tokio::test]
async fn run_answers_201_with_id_host_and_a_port_array() {
    let emu = Emu::instant().await;
    let body = emu.run_ok(session("s-1", "eu-west-1")).await;
    assert_eq!(body["id"], "s-1");
    assert_eq!(body["host"], "203.0.113.10");
    let ports = body["ports"].as_array().expect("ports is an array");
    assert_eq!(ports.len(), 2);
    assert_eq!(ports[0]["type"], "udp");
    assert_eq!(ports[0]["container"], 7777);
    assert_eq!(ports[1]["type"], "tcp");
    assert_eq!(ports[1]["container"], 7778);
    for p in ports {
        let host = p["host"].as_u64().unwrap() as u16;
        assert!(HOST_PORTS.contains(&host), "{p}");
        assert_eq!(p.as_object().unwrap().len(), 3, "Port has exactly type, container, host: {p}");
    }
}

#[tokio::test]
async fn run_without_id_generates_a_uuid_v4() {
    let emu = Emu::instant().await;
    let body = emu.run_ok(json!({ "location": "us-east-1", "image": "demo-game" })).await;
    let id = uuid::Uuid::parse_str(body["id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 4);
    let (status, _) = emu.get(&format!("/session/{id}")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn run_picks_the_highest_priority_tag_unless_a_version_is_given() {
    let emu = Emu::instant().await;
    emu.run_ok(session("default-tag", "eu-west-1")).await;
    let (_, described) = emu.get("/session/default-tag").await;
    assert_eq!(described["tag"], "1.0.0");

    let mut body = session("latest-tag", "eu-west-1");
    body["version"] = json!("latest");
    emu.run_ok(body).await;
    let (_, described) = emu.get("/session/latest-tag").await;
    assert_eq!(described["tag"], "latest");

    // Priority, not list order, decides.
    let emu = Emu::toml(
        r#"start_delay = "0s"
           [[applications]]
           image = "demo-game"
           tags = [{ name = "old", priority = 1 }, { name = "new", priority = 5 }, { name = "mid", priority = 3 }]"#,
    )
    .await;
    emu.run_ok(session("p", "eu-west-1")).await;
    let (_, described) = emu.get("/session/p").await;
    assert_eq!(described["tag"], "new");
}

#[tokio::test]
async fn run_answers_404_for_unknown_location_image_or_tag() {
    let emu = Emu::instant().await;
    let cases = [
        json!({ "location": "mars-1", "image": "demo-game" }),
        json!({ "location": "eu-west-1", "image": "no-such-game" }),
        json!({ "location": "eu-west-1", "image": "demo-game", "version": "9.9.9" }),
    ];
    for body in cases {
        let (status, error) = emu.run(body.clone()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_error(&error, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND");
        assert_eq!(error["path"], "/session");
    }
    assert!(emu.all_sessions().await.is_empty());
}

#[tokio::test]
async fn run_answers_409_for_an_id_used_before_even_when_stopped() {
    let emu = Emu::instant().await;
    emu.run_ok(session("dup", "eu-west-1")).await;
    let (status, error) = emu.run(session("dup", "us-east-1")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_error(&error, StatusCode::CONFLICT, "CONFLICT");

    assert_eq!(emu.stop("dup").await.0, StatusCode::NO_CONTENT);
    let (status, _) = emu.run(session("dup", "eu-west-1")).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn minimal_run_response_quirk_omits_id_and_ports() {
    let emu = Emu::toml("start_delay = \"0s\"\n[quirks]\nrun_response_minimal = true").await;
    let body = emu.run_ok(session("quiet", "eu-west-1")).await;
    assert_eq!(body, json!({ "host": "203.0.113.10", "ports": [] }));
    // The session exists all the same, with its ports.
    let (status, described) = emu.get("/session/quiet").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(described["port"].as_object().unwrap().len(), 2);
}

fn decode(label: &Value) -> Value {
    serde_json::from_str(label.as_str().expect("label values are strings")).expect("JSON in a string")
}

#[tokio::test]
async fn list_entries_have_the_live_shape() {
    let emu = Emu::instant().await;
    let before = now_ms();
    let run = emu
        .run_ok(json!({
            "id": "shape", "location": "eu-central-1", "image": "demo-game",
            "labels": { "mode": "ranked" }, "env": { "MAP": "dust" }
        }))
        .await;
    let (status, list) = emu.get("/session").await;
    assert_eq!(status, StatusCode::OK);
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(s["id"], "shape");
    assert_eq!(s["image"], "demo-game");
    assert_eq!(s["tag"], "1.0.0");
    assert_eq!(s["location"], "eu-central-1");
    assert_eq!(s["host"], "203.0.113.20");
    assert_eq!(s["status"], "running");
    assert_eq!(s["playerCount"], 0);
    // created: an integer of Unix milliseconds.
    let created = s["created"].as_i64().expect("created is an integer");
    assert!(created >= before && created <= now_ms(), "{created} not in ms");
    // port: a map "7777/udp" → host port, matching the POST answer's array.
    let udp = run["ports"][0]["host"].clone();
    let tcp = run["ports"][1]["host"].clone();
    assert_eq!(s["port"], json!({ "7777/udp": udp, "7778/tcp": tcp }));
    // labels: JSON documents inside strings.
    assert_eq!(decode(&s["labels"]["tags"]), json!({ "mode": "ranked" }));
    let env = decode(&s["labels"]["env"]);
    assert_eq!(env["MAP"], "dust");
    assert_eq!(env["GAMEYE_SESSION_ID"], "shape");
    assert_eq!(env["GAMEYE_HOST"], "203.0.113.20");
    assert_eq!(env["GAMEYE_PORT_UDP_7777"], udp.to_string());
    assert_eq!(env["GAMEYE_PORT_TCP_7778"], tcp.to_string());
    let gameye = decode(&s["labels"]["gameye"]);
    assert_eq!(gameye["image"], "demo-game");
    assert_eq!(gameye["tag"], "1.0.0");
    assert_eq!(gameye["location"], "eu-central-1");
}

#[tokio::test]
async fn list_shows_only_running_sessions_unless_all_is_true() {
    let emu = Emu::toml("start_delay = \"1h\"").await;
    emu.run_ok(session("starting", "eu-west-1")).await;
    assert!(emu.list_ids("").await.is_empty());
    assert!(emu.list_ids("all=false").await.is_empty());
    assert_eq!(emu.list_ids("all=true").await, ["starting"]);
    let (_, list) = emu.get("/session?all=true").await;
    assert_eq!(list["sessions"][0]["status"], "created");
}

#[tokio::test]
async fn list_filters_by_location_image_tag_host_labels_and_players() {
    let emu = Emu::instant().await;
    let mut a = session("a", "eu-west-1");
    a["labels"] = json!({ "mode": "ranked", "map": "dust" });
    let mut b = session("b", "us-east-1");
    b["labels"] = json!({ "mode": "casual" });
    b["version"] = json!("latest");
    let c = session("c", "us-east-1");
    for body in [a, b, c] {
        emu.run_ok(body).await;
    }
    emu.join(json!({ "session": "a", "players": ["p1", "p2", "p3"] })).await;
    emu.join(json!({ "session": "b", "players": ["p4"] })).await;

    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(sorted(emu.list_ids("").await), ["a", "b", "c"]);
    assert_eq!(sorted(emu.list_ids("location=us-east-1").await), ["b", "c"]);
    assert_eq!(emu.list_ids("location=nowhere").await, Vec::<String>::new());
    assert_eq!(sorted(emu.list_ids("image=demo-game").await), ["a", "b", "c"]);
    assert!(emu.list_ids("image=other").await.is_empty());
    assert_eq!(emu.list_ids("tag=latest").await, ["b"]);
    assert_eq!(emu.list_ids("host=203.0.113.10").await, ["a"]);
    assert_eq!(emu.list_ids("filter[mode]=ranked").await, ["a"]);
    assert_eq!(emu.list_ids("filter%5Bmode%5D=casual").await, ["b"]);
    assert_eq!(emu.list_ids("filter[mode]=ranked&filter[map]=dust").await, ["a"]);
    assert!(emu.list_ids("filter[mode]=ranked&filter[map]=nuke").await.is_empty());
    assert_eq!(sorted(emu.list_ids("filterNot[mode]=ranked").await), ["b", "c"]);
    assert_eq!(sorted(emu.list_ids("playerCount[lt]=2").await), ["b", "c"]);
    assert_eq!(sorted(emu.list_ids("playerCount[gt]=0").await), ["a", "b"]);
    assert_eq!(emu.list_ids("playerCount[gt]=0&playerCount[lt]=2").await, ["b"]);
    assert_eq!(emu.list_ids("location=us-east-1&playerCount[lt]=1").await, ["c"]);
    // Unparseable values are ignored, never a 500 (nor any status the spec does not document).
    assert_eq!(sorted(emu.list_ids("playerCount[lt]=many&all=perhaps").await), ["a", "b", "c"]);
    assert_eq!(sorted(emu.list_ids("playerCount=3&filter=x&%ZZ=1").await), ["a", "b", "c"]);
}

#[tokio::test]
async fn describe_has_every_required_field_and_the_players() {
    let emu = Emu::instant().await;
    emu.run_ok(session("d", "us-west-2")).await;
    emu.join(json!({ "session": "d", "players": ["p1", "p2"] })).await;
    let (status, s) = emu.get("/session/d").await;
    assert_eq!(status, StatusCode::OK);
    for field in ["id", "image", "tag", "location", "host", "created", "port", "status", "labels", "players"]
    {
        assert!(!s[field].is_null(), "{field} missing in {s}");
    }
    assert_eq!(s["players"], json!({ "joined": ["p1", "p2"], "joinedCount": 2 }));
    assert_eq!(s["host"], "198.51.100.40");
    assert!(s["created"].is_i64());
    assert!(s["port"]["7777/udp"].is_u64());
}

#[tokio::test]
async fn describe_answers_404_for_unknown_and_stopped_sessions() {
    let emu = Emu::instant().await;
    let (status, error) = emu.get("/session/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&error, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND");
    assert_eq!(error["path"], "/session/nope");

    emu.run_ok(session("gone", "eu-west-1")).await;
    emu.stop("gone").await;
    assert_eq!(emu.get("/session/gone").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn stop_answers_204_then_409_and_404_for_unknown() {
    let emu = Emu::instant().await;
    emu.run_ok(session("x", "eu-west-1")).await;
    let response = emu.req(reqwest::Method::DELETE, "/session/x").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.bytes().await.unwrap().is_empty());

    let (status, error) = emu.stop("x").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_error(&error, StatusCode::CONFLICT, "CONFLICT");
    let (status, error) = emu.stop("never-was").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&error, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND");
}

#[tokio::test]
async fn stopped_sessions_leave_the_api_but_stay_in_the_control_view() {
    let emu = Emu::instant().await;
    emu.run_ok(session("keep", "eu-west-1")).await;
    emu.run_ok(session("end", "eu-west-1")).await;
    emu.stop("end").await;
    assert_eq!(emu.list_ids("all=true").await, ["keep"]);
    let all = emu.all_sessions().await;
    assert_eq!(all.len(), 2);
    let end = all.iter().find(|s| s["id"] == "end").unwrap();
    assert_eq!(end["status"], "exited");
    assert!(end["stopped_at"].as_i64().unwrap() >= end["created"].as_i64().unwrap());
    let keep = all.iter().find(|s| s["id"] == "keep").unwrap();
    assert_eq!(keep["status"], "running");
    assert!(keep.get("stopped_at").is_none());
}

#[tokio::test]
async fn unknown_paths_answer_json_errors_after_the_token_check() {
    let emu = Emu::instant().await;
    let (status, error) = emu.get("/no/such/thing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&error, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND");
    let (status, error) = crate::support::send(emu.anon(reqwest::Method::GET, "/no/such/thing")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_error(&error, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
}

#[tokio::test]
async fn router_can_be_embedded_without_start() {
    // The bridge embeds `router` in its own server: it must serve on any listener.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = gameye_emulator::router(World::default());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let response = reqwest::Client::new()
        .get(format!("http://{addr}/available-location/demo-game"))
        .bearer_auth(gameye_emulator::DEFAULT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    server.abort();
}

/// A listing longer than one page of the registry (it is written page by page, the lock released
/// between pages) holds every matching session exactly once, and is valid JSON.
#[tokio::test]
async fn long_lists_hold_every_session_once() {
    let emu = Emu::toml(
        "start_delay = \"0s\"\n[[locations]]\nid = \"eu-west-1\"\nhost_ips = [\"203.0.113.10\", \"203.0.113.11\"]\ncapacity = 6000",
    )
    .await;
    let ids: Vec<String> = (0..4_500).map(|n| format!("s{n:05}")).collect();
    for chunk in ids.chunks(100) {
        let creates = chunk.iter().map(|id| {
            let mut body = session(id, "eu-west-1");
            let parity = if id.ends_with(['0', '2', '4', '6', '8']) { "even" } else { "odd" };
            body["labels"] = json!({ "parity": parity });
            emu.run_ok(body)
        });
        futures::future::join_all(creates).await;
    }
    // Created concurrently, so compared sorted; a duplicate would still show.
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert!(sorted(emu.list_ids("").await) == ids, "every session exactly once");
    let even: Vec<String> =
        ids.iter().filter(|id| id.ends_with(['0', '2', '4', '6', '8'])).cloned().collect();
    assert!(sorted(emu.list_ids("filter[parity]=even").await) == even, "the filter applies on every page");
    assert!(emu.list_ids("filter[parity]=none").await.is_empty(), "nothing matches: still a listing");
    assert!(
        emu.list_ids("filterNot[parity]=odd").await.len() == even.len(),
        "every page, none matching on some"
    );
}

//! Test helpers: an emulator on a free port and a client that speaks to it over real HTTP.

use std::time::Duration;

use gameye_emulator::{DEFAULT_TOKEN, RunningEmulator, World};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

/// A running emulator plus a client with the default token.
pub struct Emu {
    pub running: RunningEmulator,
    pub http: reqwest::Client,
    pub url: String,
    pub token: String,
}

impl Emu {
    /// The given world on 127.0.0.1:0.
    pub async fn start(world: World) -> Emu {
        let running =
            gameye_emulator::start(world, "127.0.0.1:0".parse().unwrap()).await.expect("emulator starts");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
        Emu { url: running.url(), running, http, token: DEFAULT_TOKEN.to_owned() }
    }

    /// The default world, except that sessions are `running` at once.
    pub async fn instant() -> Emu {
        Emu::start(World { start_delay: Duration::ZERO, ..World::default() }).await
    }

    /// A world from TOML (over the defaults).
    pub async fn toml(toml: &str) -> Emu {
        Emu::start(World::from_toml_str(toml).expect("valid test world")).await
    }

    /// A request with `Authorization: Bearer <default token>`.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url)).bearer_auth(&self.token)
    }

    /// A request without any token.
    pub fn anon(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url))
    }

    /// POST /session.
    pub async fn run(&self, body: Value) -> (StatusCode, Value) {
        send(self.req(Method::POST, "/session").json(&body)).await
    }

    /// POST /session that must succeed; returns the 201 body.
    pub async fn run_ok(&self, body: Value) -> Value {
        let (status, json) = self.run(body).await;
        assert_eq!(status, StatusCode::CREATED, "{json}");
        json
    }

    /// GET with the default token.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        send(self.req(Method::GET, path)).await
    }

    /// DELETE /session/{id}.
    pub async fn stop(&self, id: &str) -> (StatusCode, Value) {
        send(self.req(Method::DELETE, &format!("/session/{id}"))).await
    }

    /// PUT /session/player/join.
    pub async fn join(&self, body: Value) -> (StatusCode, Value) {
        send(self.req(Method::PUT, "/session/player/join").json(&body)).await
    }

    /// DELETE /session/player/leave (a DELETE with a JSON body).
    pub async fn leave(&self, body: Value) -> (StatusCode, Value) {
        send(self.req(Method::DELETE, "/session/player/leave").json(&body)).await
    }

    /// GET /session?<query> → the sessions' ids.
    pub async fn list_ids(&self, query: &str) -> Vec<String> {
        let (status, json) = self.get(&format!("/session?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        json["sessions"]
            .as_array()
            .expect("sessions array")
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The control view of every session ever.
    pub async fn all_sessions(&self) -> Vec<Value> {
        let (status, json) = send(self.anon(Method::GET, "/_emulator/sessions")).await;
        assert_eq!(status, StatusCode::OK);
        json["sessions"].as_array().unwrap().clone()
    }

    /// Replaces the fault rules.
    pub async fn set_faults(&self, rules: Value) {
        let (status, json) = send(self.anon(Method::PUT, "/_emulator/faults").json(&rules)).await;
        assert_eq!(status, StatusCode::OK, "{json}");
    }
}

/// Sends and reads the body as JSON (`Value::Null` when empty or not JSON).
pub async fn send(req: RequestBuilder) -> (StatusCode, Value) {
    let response = req.send().await.expect("request sent");
    let status = response.status();
    let bytes = response.bytes().await.expect("body read");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// A minimal valid POST /session body.
pub fn session(id: &str, location: &str) -> Value {
    serde_json::json!({ "id": id, "location": location, "image": "demo-game" })
}

/// Asserts the spec's `ErrorResponse`: every required field, with the right status and types.
#[track_caller]
pub fn assert_error(body: &Value, status: StatusCode, code: &str) {
    assert_eq!(body["statusCode"], status.as_u16(), "{body}");
    assert_eq!(body["code"], code, "{body}");
    for field in ["message", "details", "path"] {
        assert!(body[field].is_string(), "{field} missing in {body}");
    }
    assert!(body["path"].as_str().unwrap().starts_with('/'), "{body}");
    let id = body["identifier"].as_str().expect("identifier");
    uuid::Uuid::parse_str(id).expect("identifier is a UUID");
    let ts = body["timestamp"].as_str().expect("timestamp");
    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .expect("timestamp is RFC 3339");
}

/// The field names of a 422's violations.
pub fn violated_fields(body: &Value) -> Vec<String> {
    body["violations"]
        .as_array()
        .unwrap_or_else(|| panic!("no violations in {body}"))
        .iter()
        .map(|v| {
            assert!(v["description"].is_string(), "{v}");
            v["field"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Now in Unix milliseconds.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

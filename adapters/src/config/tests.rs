use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn load(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    Settings::load_from(None, env(pairs))
}

fn load_file(toml: &str, pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, toml).unwrap();
    Settings::load_from(Some(&path), env(pairs))
}

#[test]
fn defaults_need_nothing_and_use_the_emulator_on_loopback() {
    let settings = load(&[]).unwrap();
    assert_eq!(settings.http.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(settings.gameye_backend(), GameyeBackend::Emulated);
    assert_eq!(settings.gameye.image, "demo-game");
    assert_eq!(settings.gameye.ttl, Duration::from_secs(30 * 60));
    assert_eq!(settings.placement.caps.len(), 3);
    assert_eq!(settings.http.body_limit, 256 * 1024);
}

#[test]
fn file_overrides_defaults_and_env_overrides_file() {
    let settings = load_file(
        "[http]\nlisten = \"127.0.0.1:9000\"\n[gameye]\nimage = \"from-file\"\n",
        &[("BRIDGE_GAMEYE__IMAGE", "from-env")],
    )
    .unwrap();
    assert_eq!(settings.http.listen.port(), 9000);
    assert_eq!(settings.gameye.image, "from-env");
}

#[test]
fn unknown_key_in_file_is_named() {
    let error = load_file("[http]\nlisen = \"127.0.0.1:9000\"\n", &[]).unwrap_err().to_string();
    assert!(error.contains("lisen"), "{error}");
}

#[test]
fn unknown_section_in_file_is_named() {
    let error = load_file("[htp]\nlisten = \"127.0.0.1:9000\"\n", &[]).unwrap_err().to_string();
    assert!(error.contains("htp"), "{error}");
}

#[test]
fn unknown_bridge_variable_is_named() {
    let error = load(&[("BRIDGE_HTTP__LISTN", "127.0.0.1:1")]).unwrap_err().to_string();
    assert!(error.contains("listn"), "{error}");
    assert!(error.contains("BRIDGE_HTTP__LISTN"), "{error}");
}

/// A Kubernetes Service named `bridge` (or `bridge-redis`, …) gives every pod `BRIDGE_PORT=tcp://…`
/// and the like: not settings, and no reason to refuse to start. A misspelt setting still is.
#[test]
fn kubernetes_service_link_variables_are_not_settings() {
    let links = [
        ("BRIDGE_SERVICE_HOST", "10.0.0.7"),
        ("BRIDGE_SERVICE_PORT", "8080"),
        ("BRIDGE_SERVICE_PORT_HTTP", "8080"),
        ("BRIDGE_PORT", "tcp://10.0.0.7:8080"),
        ("BRIDGE_PORT_8080_TCP", "tcp://10.0.0.7:8080"),
        ("BRIDGE_PORT_8080_TCP_PROTO", "tcp"),
        ("BRIDGE_PORT_8080_TCP_PORT", "8080"),
        ("BRIDGE_PORT_8080_TCP_ADDR", "10.0.0.7"),
        ("BRIDGE_REDIS_SERVICE_HOST", "10.0.0.8"),
        ("BRIDGE_REDIS_PORT_6379_TCP_ADDR", "10.0.0.8"),
        ("BRIDGE_HTTP__LISTEN", "127.0.0.1:9000"),
    ];
    let settings = load(&links).unwrap();
    assert_eq!(settings.http.listen.port(), 9000);
    let error = load(&[("BRIDGE_HTTP_LISTEN", "127.0.0.1:1")]).unwrap_err().to_string();
    assert!(error.contains("BRIDGE_HTTP_LISTEN"), "{error}");
}

#[test]
fn bridge_variables_are_typed() {
    let settings = load(&[
        ("BRIDGE_HTTP__LISTEN", "127.0.0.1:9100"),
        ("BRIDGE_HTTP__BODY_LIMIT", "4096"),
        ("BRIDGE_HTTP__TOKENS", "[\"a\", \"b\"]"),
        ("BRIDGE_PLACEMENT__OBJECTIVE", "mean"),
        ("BRIDGE_GAMEYE__VERSION", "2"),
    ])
    .unwrap();
    assert_eq!(settings.http.listen.port(), 9100);
    assert_eq!(settings.http.body_limit, 4096);
    assert_eq!(settings.http.tokens, vec![Secret::new("a"), Secret::new("b")]);
    assert_eq!(settings.placement.objective, bridge::Objective::Mean);
    assert_eq!(settings.gameye.version, "2");
}

#[test]
fn gameye_env_names_are_taken_verbatim() {
    let settings = load(&[
        ("GAMEYE_API_URL", "https://api.sandbox-gameye.gameye.net"),
        ("GAMEYE_API_TOKEN", "t0k3n"),
        ("GAMEYE_API_IMAGE", "my-game"),
        ("GAMEYE_API_IMAGE_VERSION", "1.10"),
        ("GAMEYE_API_REGION", "us-east-1"),
        ("GAMEYE_API_TTL", "2h30m"),
    ])
    .unwrap();
    assert_eq!(settings.gameye_backend(), GameyeBackend::Remote);
    assert_eq!(settings.gameye.token.expose(), "t0k3n");
    assert_eq!(settings.gameye.image, "my-game");
    assert_eq!(settings.gameye.version, "1.10");
    assert_eq!(settings.gameye.region, "us-east-1");
    assert_eq!(settings.gameye.ttl, Duration::from_secs(150 * 60));
}

#[test]
fn bridge_variables_win_over_gameye_names() {
    let settings = load(&[("GAMEYE_API_IMAGE", "a"), ("BRIDGE_GAMEYE__IMAGE", "b")]).unwrap();
    assert_eq!(settings.gameye.image, "b");
}

#[test]
fn redis_without_gameye_url_is_an_error_not_a_silent_fake() {
    let error = load(&[("BRIDGE_REDIS__URL", "redis://127.0.0.1:6379")]).unwrap_err();
    assert!(error.to_string().contains("gameye.url"), "{error}");
    let error = load(&[("BRIDGE_NATS__URL", "nats://127.0.0.1:4222")]).unwrap_err();
    assert!(error.to_string().contains("gameye.url"), "{error}");
    let explicit =
        load(&[("BRIDGE_REDIS__URL", "redis://127.0.0.1:6379"), ("BRIDGE_GAMEYE__EMULATE", "true")]).unwrap();
    assert_eq!(explicit.gameye_backend(), GameyeBackend::Emulated);
}

#[test]
fn gameye_url_needs_a_token() {
    let error = load(&[("GAMEYE_API_URL", "https://example.test")]).unwrap_err();
    assert!(error.to_string().contains("gameye.token"), "{error}");
}

#[test]
fn open_api_on_a_public_address_is_refused() {
    let error = load(&[("BRIDGE_HTTP__LISTEN", "0.0.0.0:8080")]).unwrap_err();
    assert!(error.to_string().contains("http.listen"), "{error}");
    let ok = load(&[("BRIDGE_HTTP__LISTEN", "0.0.0.0:8080"), ("BRIDGE_HTTP__TOKENS", "[\"s3cret\"]")]);
    assert!(ok.is_ok());
}

#[test]
fn bad_values_name_their_key() {
    let error = load(&[("BRIDGE_GAMEYE__TTL", "forever")]).unwrap_err().to_string();
    assert!(error.contains("gameye.ttl"), "{error}");
    let error = load(&[("BRIDGE_PLACEMENT__OBJECTIVE", "fastest")]).unwrap_err().to_string();
    assert!(error.contains("placement.objective"), "{error}");
    let error =
        load_file("[placement]\ncaps = [{after_s = 10, max_ms = 50}, {after_s = 5, max_ms = 90}]\n", &[])
            .unwrap_err()
            .to_string();
    assert!(error.contains("placement.caps"), "{error}");
}

#[test]
fn missing_config_file_is_an_error() {
    let error = Settings::load_from(Some(Path::new("/nonexistent/bridge.toml")), env(&[])).unwrap_err();
    assert!(matches!(error, ConfigError::File { .. }));
}

#[test]
fn redacted_toml_hides_every_secret() {
    let settings = load(&[
        ("GAMEYE_API_URL", "https://example.test"),
        ("GAMEYE_API_TOKEN", "gameye-secret-token"),
        ("BRIDGE_HTTP__TOKENS", "[\"bridge-secret-token\"]"),
        ("BRIDGE_REDIS__URL", "redis://user:redis-password@127.0.0.1:6379"),
    ])
    .unwrap();
    let shown = settings.to_redacted_toml();
    for secret in ["gameye-secret-token", "bridge-secret-token", "redis-password"] {
        assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
        assert!(!format!("{settings:?}").contains(secret), "{secret} leaked in Debug");
    }
    assert!(shown.contains("<redacted>"));
    let reparsed: toml::Value = toml::from_str(&shown).unwrap();
    assert_eq!(reparsed["gameye"]["url"].as_str(), Some("https://example.test"));
}

#[test]
fn nats_keys_have_defaults_and_are_validated() {
    let settings = load(&[]).unwrap();
    assert_eq!(settings.nats.stream, "GAMEYE_MATCHES");
    assert_eq!(settings.nats.results_stream, "GAMEYE_RESULTS");
    assert_eq!(settings.nats.max_deliver, 5);
    assert_eq!(settings.nats.ack_wait, Duration::from_secs(30));
    assert_eq!(settings.nats.announce_sources, ["*"]);
    let nats = [
        ("GAMEYE_API_URL", "https://example.test"),
        ("GAMEYE_API_TOKEN", "t"),
        ("BRIDGE_NATS__URL", "nats://127.0.0.1:4222"),
    ];
    for (key, value, named) in [
        ("BRIDGE_NATS__MAX_DELIVER", "0", "nats.max_deliver"),
        ("BRIDGE_NATS__ACK_WAIT", "100ms", "nats.ack_wait"),
        ("BRIDGE_NATS__CONCURRENCY", "0", "nats.concurrency"),
        ("BRIDGE_NATS__STREAM", "a.b", "nats.stream"),
        ("BRIDGE_NATS__RESULTS_STREAM", "GAMEYE_MATCHES", "nats.results_stream"),
        ("BRIDGE_NATS__ANNOUNCE_SOURCES", "[\"htp\"]", "nats.announce_sources"),
        ("BRIDGE_NATS__TLS_CERT_FILE", "/etc/hostname", "nats.tls_cert_file"),
        ("BRIDGE_NATS__CREDENTIALS_FILE", "/nonexistent.creds", "nats.credentials_file"),
        ("BRIDGE_NATS__USER", "bridge", "nats.user"),
    ] {
        let mut pairs = nats.to_vec();
        pairs.push((key, value));
        let error = load(&pairs).unwrap_err().to_string();
        assert!(error.contains(named), "{key}={value}: {error}");
    }
    let mut both = nats.to_vec();
    both.extend([("BRIDGE_NATS__TOKEN", "secret-nats-token"), ("BRIDGE_NATS__NKEY", "SUxxx")]);
    assert!(load(&both).unwrap_err().to_string().contains("at most one"));
    let mut token = nats.to_vec();
    token.push(("BRIDGE_NATS__TOKEN", "secret-nats-token"));
    let settings = load(&token).unwrap();
    assert!(!settings.to_redacted_toml().contains("secret-nats-token"));
}

#[test]
fn session_ended_webhook_is_off_by_default_and_validated_with_its_key_named() {
    let settings = load(&[]).unwrap();
    let webhook = &settings.seats.ended_webhook;
    assert!(webhook.url.is_empty());
    assert_eq!((webhook.timeout, webhook.retry_for), (Duration::from_secs(5), Duration::from_secs(3600)));

    let settings = load(&[
        ("BRIDGE_SEATS__ENDED_WEBHOOK__URL", "\"https://backend.example/ended?key=hidden\""),
        ("BRIDGE_SEATS__ENDED_WEBHOOK__SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ("BRIDGE_SEATS__ENDED_WEBHOOK__RETRY_FOR", "30s"),
    ])
    .unwrap();
    assert_eq!(settings.seats.ended_webhook.retry_for, Duration::from_secs(30));
    let shown = settings.to_redacted_toml();
    assert!(!shown.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "{shown}");

    for (pairs, named) in [
        (
            vec![("BRIDGE_SEATS__ENDED_WEBHOOK__URL", "\"https://backend.example/ended\"")],
            "seats.ended_webhook.secret",
        ),
        (
            vec![
                ("BRIDGE_SEATS__ENDED_WEBHOOK__URL", "\"ftp://x/\""),
                ("BRIDGE_SEATS__ENDED_WEBHOOK__SECRET", "s"),
            ],
            "seats.ended_webhook.url",
        ),
        (vec![("BRIDGE_SEATS__ENDED_WEBHOOK__SECRET", "whsec_!!")], "seats.ended_webhook.secret"),
        (vec![("BRIDGE_SEATS__ENDED_WEBHOOK__TIMEOUT", "0s")], "seats.ended_webhook.timeout"),
        (vec![("BRIDGE_SEATS__ENDED_WEBHOOK__RETRY_FOR", "soon")], "seats.ended_webhook.retry_for"),
        (vec![("BRIDGE_SEATS__ENDED_WEBHOOK__URLS", "\"https://x/\"")], "urls"),
    ] {
        let error = load(&pairs).unwrap_err().to_string();
        assert!(error.contains(named), "{pairs:?}: {error}");
    }
}

#[test]
fn reconciler_scans_are_paced_to_a_share_of_the_time_in_zero_to_one() {
    let settings = load(&[]).unwrap();
    assert_eq!(settings.reconciler.pace().busy, 0.1);
    let settings = load(&[("BRIDGE_RECONCILER__MAX_BUSY", "1")]).unwrap();
    assert_eq!(
        settings.reconciler.pace(),
        crate::pace::Pace { busy: 1.0, idle_priority: true, ..crate::pace::Pace::UNPACED }
    );
    for bad in ["0", "0.001", "-0.5", "1.5", "nan"] {
        let error = load(&[("BRIDGE_RECONCILER__MAX_BUSY", bad)]).unwrap_err().to_string();
        assert!(error.contains("reconciler.max_busy"), "{bad}: {error}");
    }
}

#[test]
fn the_reconcilers_decoding_runs_at_the_idle_priority_unless_turned_off() {
    assert!(load(&[]).unwrap().reconciler.pace().idle_priority);
    let settings = load(&[("BRIDGE_RECONCILER__IDLE_PRIORITY", "false")]).unwrap();
    assert!(!settings.reconciler.pace().idle_priority);
}

#[test]
fn worker_threads_default_to_tokios_choice_and_can_be_set() {
    assert_eq!(load(&[]).unwrap().runtime.worker_threads, 0);
    assert_eq!(load(&[("BRIDGE_RUNTIME__WORKER_THREADS", "1")]).unwrap().runtime.worker_threads, 1);
    let error = load(&[("BRIDGE_RUNTIME__WORKER_THREADS", "-1")]).unwrap_err().to_string();
    assert!(error.contains("worker_threads"), "{error}");
}

#[test]
fn one_runtime_unless_lanes_are_asked_for() {
    assert_eq!(load(&[]).unwrap().runtime.lanes, 1);
    assert_eq!(load(&[("BRIDGE_RUNTIME__LANES", "2")]).unwrap().runtime.lanes, 2);
    let error = load(&[("BRIDGE_RUNTIME__LANES", "-1")]).unwrap_err().to_string();
    assert!(error.contains("lanes"), "{error}");
}

#[test]
fn transparent_huge_pages_are_off_unless_asked_for() {
    assert!(!load(&[]).unwrap().runtime.transparent_huge_pages);
    assert!(
        load(&[("BRIDGE_RUNTIME__TRANSPARENT_HUGE_PAGES", "true")]).unwrap().runtime.transparent_huge_pages
    );
    let error = load(&[("BRIDGE_RUNTIME__TRANSPARENT_HUGE_PAGES", "sometimes")]).unwrap_err().to_string();
    assert!(error.contains("transparent_huge_pages"), "{error}");
}

#[test]
fn a_record_ttl_within_the_placement_lease_is_refused() {
    let error = load(&[("BRIDGE_PLACEMENT__DEADLINE", "20s"), ("BRIDGE_PLACEMENT__RECORD_TTL", "25s")])
        .unwrap_err()
        .to_string();
    assert!(error.contains("placement.record_ttl") && error.contains("deadline + 5s"), "{error}");
    let settings =
        load(&[("BRIDGE_PLACEMENT__DEADLINE", "20s"), ("BRIDGE_PLACEMENT__RECORD_TTL", "26s")]).unwrap();
    assert_eq!(settings.placement.record_ttl, std::time::Duration::from_secs(26));
}

//! World configuration: the default world, TOML files, validation.

use std::{net::IpAddr, path::Path, time::Duration};

use gameye_emulator::{
    DEFAULT_TOKEN, Error, World,
    world::{Protocol, Scope},
};

#[test]
fn the_default_world_matches_the_design() {
    let w = World::default();
    assert_eq!(w.tokens.len(), 1);
    assert_eq!(w.tokens[0].token, DEFAULT_TOKEN);
    assert_eq!(w.tokens[0].scopes, Scope::ALL.to_vec());
    assert_eq!(w.applications.len(), 1);
    let app = &w.applications[0];
    assert_eq!(app.image, "demo-game");
    let best = app.tags.iter().max_by_key(|t| t.priority).unwrap();
    assert_eq!(best.name, "1.0.0");
    assert!(app.tags.iter().any(|t| t.name == "latest"));
    let ports: Vec<_> = app.ports.iter().map(|p| (p.container, p.protocol)).collect();
    assert_eq!(ports, [(7777, Protocol::Udp), (7778, Protocol::Tcp)]);
    let ids: Vec<_> = w.locations.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids, ["eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-northeast-1"]);
    let test_net = |ip: &IpAddr, prefixes: &[&str]| prefixes.iter().any(|p| ip.to_string().starts_with(p));
    for l in &w.locations {
        assert_eq!(l.capacity, 1000);
        assert_eq!(l.ping_ips.len(), 1);
        assert_eq!(l.host_ips.len(), 1);
        assert!(test_net(&l.ping_ips[0], &["192.0.2."]), "{l:?}");
        assert!(test_net(&l.host_ips[0], &["203.0.113.", "198.51.100."]), "{l:?}");
    }
    assert_eq!(w.start_delay, Duration::from_secs(1));
    assert!(w.faults.is_empty());
    w.validate().unwrap();
}

#[test]
fn a_partial_file_keeps_the_other_defaults() {
    let w = World::from_toml_str("start_delay = \"250ms\"\nseed = 9").unwrap();
    assert_eq!(w.start_delay, Duration::from_millis(250));
    assert_eq!(w.seed, Some(9));
    assert_eq!(w.locations.len(), 5);
    assert_eq!(w.tokens[0].token, DEFAULT_TOKEN);
}

#[test]
fn unknown_keys_are_errors_at_every_level() {
    for toml in [
        "colour = \"red\"",
        "[quirks]\nrun_response_minimall = true",
        "[[locations]]\nid = \"x\"\nhost_ips = [\"203.0.113.1\"]\nregion = \"eu\"",
        "[[faults]]\noperation = \"session-run\"\nstatuss = 500",
        "[[tokens]]\ntoken = \"t\"\nscopes = [\"session:read\"]\nadmin = true",
    ] {
        let err = World::from_toml_str(toml).expect_err(toml);
        assert!(matches!(err, Error::ParseWorld(_)), "{toml}: {err}");
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}

#[test]
fn wrong_values_are_errors() {
    for toml in [
        "start_delay = \"soon\"",
        "start_delay = 5",
        "[[tokens]]\ntoken = \"t\"\nscopes = [\"session:everything\"]",
        "[[faults]]\noperation = \"session-launch\"",
        "[[locations]]\nid = \"x\"\nhost_ips = [\"not-an-ip\"]",
        "[[applications]]\nimage = \"g\"\ntags = [{ name = \"1\" }]\nports = [{ container = 1, protocol = \"sctp\" }]",
    ] {
        assert!(matches!(World::from_toml_str(toml), Err(Error::ParseWorld(_))), "{toml}");
    }
}

#[test]
fn inconsistent_worlds_are_rejected() {
    for toml in [
        "[[locations]]\nid = \"a\"\nhost_ips = [\"203.0.113.1\"]\n[[locations]]\nid = \"a\"\nhost_ips = [\"203.0.113.2\"]",
        "[[locations]]\nid = \"a\"\nhost_ips = []",
        // A host machine is in one location, once.
        "[[locations]]\nid = \"a\"\nhost_ips = [\"203.0.113.1\", \"203.0.113.1\"]",
        "[[locations]]\nid = \"a\"\nhost_ips = [\"203.0.113.1\"]\n[[locations]]\nid = \"b\"\nhost_ips = [\"203.0.113.1\"]",
        "[[applications]]\nimage = \"g\"\ntags = []",
        "[[applications]]\nimage = \"g\"\ntags = [{ name = \"1\" }, { name = \"1\" }]",
        "[[applications]]\nimage = \"g\"\ntags = [{ name = \"1\" }]\nports = [{ container = 0, protocol = \"udp\" }]",
        "[[faults]]\noperation = \"session-run\"\nprobability = 1.5",
        "[[tokens]]\ntoken = \"\"\nscopes = []",
    ] {
        assert!(matches!(World::from_toml_str(toml), Err(Error::InvalidWorld(_))), "{toml}");
    }
}

#[test]
fn the_shipped_example_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("world.example.toml");
    let w = World::from_file(&path).unwrap();
    assert_eq!(w.seed, Some(42));
    assert_eq!(w.tokens.len(), 2);
    assert_eq!(w.faults.len(), 2);
    assert_eq!(w.locations.iter().find(|l| l.id == "ap-northeast-1").unwrap().capacity, 5);
}

#[test]
fn a_missing_file_is_a_read_error() {
    let err = World::from_file(Path::new("/nonexistent/world.toml")).unwrap_err();
    assert!(matches!(err, Error::ReadWorld { .. }), "{err}");
}

#[tokio::test]
async fn start_refuses_an_invalid_world_and_reports_its_address() {
    let mut bad = World::default();
    bad.locations[0].host_ips.clear();
    let err = gameye_emulator::start(bad, "127.0.0.1:0".parse().unwrap()).await;
    assert!(matches!(err, Err(Error::InvalidWorld(_))));

    let running = gameye_emulator::start(World::default(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    assert_ne!(running.addr().port(), 0);
    assert_eq!(running.url(), format!("http://127.0.0.1:{}", running.addr().port()));
    // The port is taken while it runs.
    let again = gameye_emulator::start(World::default(), running.addr()).await;
    assert!(matches!(again, Err(Error::Bind { .. })));
    running.shutdown().await;
}

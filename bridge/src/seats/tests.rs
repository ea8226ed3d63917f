use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

use super::*;

const T0: OffsetDateTime = datetime!(2026-11-21 10:00:00 UTC);

fn ids(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn secs(s: i64) -> OffsetDateTime {
    T0 + time::Duration::seconds(s)
}

fn rid(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn session(capacity: u32, own: &[&str]) -> SessionSeats {
    let new = NewSession {
        session_id: Uuid::from_u128(1),
        capacity,
        status: SessionStatus::Running,
        info: SessionInfo { image: "game".into(), location: "eu".into(), ..SessionInfo::default() },
        players: ids(own),
        joined: Vec::new(),
        reservation_ttl: Duration::from_secs(60),
        now: T0,
    };
    SessionSeats::create(&new, rid(100)).unwrap()
}

#[test]
fn own_players_hold_seats_until_they_join_or_expire() {
    let mut s = session(4, &["a", "b", "a"]);
    assert_eq!(s.reservations[&rid(100)].players, set(&["a", "b"]));
    assert_eq!(s.open_seats(T0), 2);
    let joined = s.join(&ids(&["a"]), None, secs(10)).unwrap();
    assert_eq!(joined.from_reservations, set(&["a"]));
    assert_eq!(s.open_seats(secs(10)), 2, "a moved from reserved to joined");
    assert_eq!(s.open_seats(secs(60)), 3, "b's seat is free once the reservation expires");
    let expired = s.expire(secs(60));
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].reservation.players, set(&["b"]));
    assert!(s.reservations.is_empty());
}

#[test]
fn too_many_own_players_is_refused() {
    let new = NewSession {
        session_id: Uuid::from_u128(1),
        capacity: 1,
        status: SessionStatus::Created,
        info: SessionInfo::default(),
        players: ids(&["a", "b"]),
        joined: Vec::new(),
        reservation_ttl: Duration::from_secs(60),
        now: T0,
    };
    assert_eq!(
        SessionSeats::create(&new, rid(1)),
        Err(SeatError::SessionFull { capacity: 1, open: 1, needed: 2 })
    );
}

#[test]
fn join_is_idempotent_and_all_or_nothing() {
    let mut s = session(3, &["a"]);
    let joined = s.join(&ids(&["x", "x", "y"]), None, T0).unwrap();
    assert_eq!(joined.joined, set(&["x", "y"]));
    let again = s.join(&ids(&["x", "y"]), None, T0).unwrap();
    assert_eq!(again.joined, set(&[]));
    assert_eq!(again.already_joined, set(&["x", "y"]));
    let before = s.clone();
    // z needs a seat but a's reservation holds the last one.
    assert_eq!(
        s.join(&ids(&["a", "z"]), None, T0),
        Err(SeatError::SessionFull { capacity: 3, open: 0, needed: 1 })
    );
    assert_eq!(s, before, "nothing changed");
    // The reserved player alone fits.
    assert_eq!(s.join(&ids(&["a"]), None, T0).unwrap().from_reservations, set(&["a"]));
    assert_eq!(s.open_seats(T0), 0);
}

#[test]
fn reserve_moves_reserved_players_and_refuses_joined_ones() {
    let mut s = session(4, &["a", "b"]);
    s.join(&ids(&["b"]), None, T0).unwrap();
    assert_eq!(
        s.reserve(rid(2), &ids(&["b", "c"]), Duration::from_secs(30), T0),
        Err(SeatError::AlreadyJoined { players: set(&["b"]) })
    );
    let reserved = s.reserve(rid(2), &ids(&["a", "c"]), Duration::from_secs(30), T0).unwrap();
    assert_eq!(reserved.moved, set(&["a"]));
    assert_eq!(reserved.expires_at, secs(60), "a's own 60 s hold is kept, not cut to 30 s");
    assert!(!s.reservations.contains_key(&rid(100)), "the emptied reservation is gone");
    assert_eq!(s.open_seats(T0), 1);
    assert_eq!(
        s.reserve(rid(3), &ids(&["d", "e"]), Duration::from_secs(30), T0),
        Err(SeatError::NoSeats { open: 1, needed: 2 })
    );
    assert_eq!(s.reserve(rid(3), &[], Duration::from_secs(30), T0), Err(SeatError::NoPlayers));
}

#[test]
fn leave_releases_joined_and_reserved_seats_and_end_refuses_everything() {
    let mut s = session(4, &["a"]);
    s.join(&ids(&["x"]), None, T0).unwrap();
    let left = s.leave(&ids(&["x", "a", "nobody"]), None, T0).unwrap();
    assert_eq!((left.left, left.released), (set(&["x"]), set(&["a"])));
    assert_eq!(s.open_seats(T0), 4);
    s.join(&ids(&["y"]), None, T0).unwrap();
    s.reserve(rid(5), &ids(&["z"]), Duration::from_secs(5), T0).unwrap();
    let ended = s.end(T0).unwrap();
    assert_eq!(ended.players, set(&["y"]));
    assert_eq!(ended.reservations, BTreeSet::from([rid(5)]));
    assert_eq!(s.open_seats(T0), 0);
    assert_eq!(s.join(&ids(&["y"]), None, T0), Err(SeatError::Ended));
    assert_eq!(s.leave(&ids(&["y"]), None, T0), Err(SeatError::Ended));
    assert_eq!(s.reserve(rid(6), &ids(&["q"]), Duration::from_secs(5), T0), Err(SeatError::Ended));
    assert_eq!(s.mark_running(), Err(SeatError::Ended));
    assert_eq!(s.end(T0), Err(SeatError::Ended));
}

#[test]
fn ordered_changes_skip_players_a_same_or_newer_change_was_applied_to() {
    let mut s = session(3, &[]);
    // join x@10, then leave x@11, then the join redelivered: x stays out.
    s.join(&ids(&["x"]), Some(10), T0).unwrap();
    let left = s.leave(&ids(&["x"]), Some(11), T0).unwrap();
    assert_eq!(left.left, set(&["x"]));
    let late = s.join(&ids(&["x", "y"]), Some(10), T0).unwrap();
    assert_eq!((late.joined, late.stale, late.duplicate), (set(&["y"]), set(&["x"]), BTreeSet::new()));
    assert_eq!(s.joined, set(&["y"]));
    assert_eq!(s.last_order, BTreeMap::from([("x".to_owned(), 11), ("y".to_owned(), 10)]));
    // The same order again is a duplicate, for leaves as for joins.
    let again = s.leave(&ids(&["x"]), Some(11), T0).unwrap();
    assert_eq!((again.duplicate, again.stale, again.left), (set(&["x"]), BTreeSet::new(), BTreeSet::new()));
    // A leave sent before its player ever joined still wins over the older join arriving later.
    s.leave(&ids(&["z"]), Some(21), T0).unwrap();
    assert_eq!(s.join(&ids(&["z"]), Some(20), T0).unwrap().stale, set(&["z"]));
    assert!(!s.joined.contains("z"));
    // Unordered changes always apply and leave the orders alone.
    s.join(&ids(&["x"]), None, T0).unwrap();
    assert!(s.joined.contains("x"));
    assert_eq!(s.last_order["x"], 11);
    assert_eq!(s.leave(&ids(&["x"]), Some(11), T0).unwrap().duplicate, set(&["x"]));
    assert!(s.joined.contains("x"), "a duplicate undoes nothing done since");
}

#[test]
fn a_refused_ordered_join_records_no_order_and_counts_only_current_players() {
    let mut s = session(1, &[]);
    s.join(&ids(&["x"]), Some(5), T0).unwrap();
    // Full: x is a duplicate and needs no seat, y needs one.
    assert_eq!(
        s.join(&ids(&["x", "y"]), Some(6), T0),
        Err(SeatError::SessionFull { capacity: 1, open: 0, needed: 1 })
    );
    assert_eq!(s.last_order, BTreeMap::from([("x".to_owned(), 5)]), "nothing recorded");
    s.leave(&ids(&["x"]), Some(7), T0).unwrap();
    // A stale player does not count against the seats: y fits alone.
    let joined = s.join(&ids(&["x", "y"]), Some(6), T0).unwrap();
    assert_eq!((joined.joined, joined.stale), (set(&["y"]), set(&["x"])));
}

fn candidate(n: u128, location: &str, open: u32) -> BackfillCandidate {
    BackfillCandidate {
        session_id: Uuid::from_u128(n),
        image: "game".into(),
        version: Some("1".into()),
        location: location.into(),
        labels: BTreeMap::from([("mode".into(), "ranked".into())]),
        status: SessionStatus::Running,
        open_seats: open,
        reserved_players: BTreeSet::new(),
    }
}

#[test]
fn backfill_ranks_by_worst_latency_then_fullest_then_id() {
    let players = [
        BackfillPlayer { id: "p".into(), latencies: BTreeMap::from([("eu".into(), 20), ("us".into(), 90)]) },
        BackfillPlayer { id: "q".into(), latencies: BTreeMap::from([("eu".into(), 40), ("us".into(), 30)]) },
    ];
    let labels = BTreeMap::from([("mode".into(), "ranked".into())]);
    let query = BackfillQuery {
        image: "game",
        version: None,
        labels: &labels,
        locations: None,
        players: &players,
        latency_cap_ms: 100,
    };
    let mut created = candidate(9, "eu", 5);
    created.status = SessionStatus::Created;
    let mut other_image = candidate(8, "eu", 5);
    other_image.image = "other".into();
    let candidates = [
        candidate(1, "us", 2),
        candidate(2, "eu", 5),
        candidate(3, "eu", 2),
        candidate(4, "eu", 1), // too full for two
        candidate(5, "ap", 9), // no latency
        candidate(6, "eu", 2),
        created,
        other_image,
    ];
    let ranked: Vec<u128> =
        choose_backfill(&query, &candidates).iter().map(|r| r.session_id.as_u128()).collect();
    assert_eq!(ranked, [3, 6, 2, 1]);
    let capped = BackfillQuery { latency_cap_ms: 50, ..query };
    let ranked: Vec<u128> =
        choose_backfill(&capped, &candidates).iter().map(|r| r.session_id.as_u128()).collect();
    assert_eq!(ranked, [3, 6, 2]);
    let wrong_version = BackfillQuery { version: Some("2"), ..query };
    assert!(choose_backfill(&wrong_version, &candidates).is_empty());
    let unlabelled = BTreeMap::from([("mode".into(), "casual".into())]);
    assert!(choose_backfill(&BackfillQuery { labels: &unlabelled, ..query }, &candidates).is_empty());
    let us = ["us".to_owned()];
    let ranked = choose_backfill(&BackfillQuery { locations: Some(&us), ..query }, &candidates);
    assert_eq!(ranked.iter().map(|r| r.session_id.as_u128()).collect::<Vec<_>>(), [1]);
}

#[test]
fn a_retried_backfill_still_finds_the_session_its_players_hold_seats_in() {
    // Full once the first backfill reserved both seats; its answer was lost, and it asks again.
    let mut seats = session(2, &[]);
    seats.reserve(rid(2), &ids(&["a", "b"]), Duration::from_secs(60), secs(1)).unwrap();
    let candidate = seats.backfill_candidate(secs(2));
    assert_eq!((candidate.open_seats, &candidate.reserved_players), (0, &set(&["a", "b"])));
    let player = |id: &str| BackfillPlayer { id: id.into(), latencies: BTreeMap::from([("eu".into(), 20)]) };
    let labels = BTreeMap::new();
    let query = |players| BackfillQuery {
        image: "game",
        version: None,
        labels: &labels,
        locations: None,
        players,
        latency_cap_ms: 100,
    };
    let retried = [player("a"), player("b")];
    let ranked = choose_backfill(&query(&retried), std::slice::from_ref(&candidate));
    assert_eq!(ranked.iter().map(|r| r.session_id).collect::<Vec<_>>(), vec![candidate.session_id]);
    // What the store then does with it: the players move, no seat is needed.
    let moved = seats.reserve(rid(3), &ids(&["a", "b"]), Duration::from_secs(60), secs(2)).unwrap();
    assert_eq!(moved.moved, set(&["a", "b"]));
    // A player without a seat there still needs an open one.
    let other = [player("a"), player("c")];
    assert!(choose_backfill(&query(&other), std::slice::from_ref(&candidate)).is_empty());

    // Seats opened since in a fuller session (ranked ahead of the held one but for the hold): the
    // retry still gets the session it holds seats in, not a second seat each elsewhere.
    let fuller = BackfillCandidate {
        session_id: Uuid::from_u128(99),
        open_seats: 2,
        reserved_players: BTreeSet::new(),
        ..candidate.clone()
    };
    let held = BackfillCandidate { open_seats: 15, ..candidate };
    let ranked = choose_backfill(&query(&retried), &[fuller, held.clone()]);
    assert_eq!(
        ranked.iter().map(|r| r.session_id).collect::<Vec<_>>(),
        vec![held.session_id, Uuid::from_u128(99)]
    );
}

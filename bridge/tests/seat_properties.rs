//! Properties of the seat ledger and of backfill choice, checked against plain re-statements of
//! their rules (`bridge::seats`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bridge::seats::{
    BackfillCandidate, BackfillPlayer, BackfillQuery, NewSession, SeatError, SessionInfo, SessionSeats,
    SessionStatus, choose_backfill,
};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

const T0: OffsetDateTime = datetime!(2026-11-21 10:00:00 UTC);
const PLAYERS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];

#[derive(Debug, Clone)]
enum Op {
    Join(Vec<String>),
    Leave(Vec<String>),
    Reserve(Vec<String>, u64),
    Expire,
    End,
    Running,
    /// Time passes (ms).
    Wait(u64),
}

fn players() -> impl Strategy<Value = Vec<String>> {
    // Duplicates within a batch are allowed on purpose.
    prop::collection::vec(select(&PLAYERS[..]).prop_map(str::to_owned), 0..5)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => players().prop_map(Op::Join),
        2 => players().prop_map(Op::Leave),
        4 => (players(), 1u64..5_000).prop_map(|(p, ttl)| Op::Reserve(p, ttl)),
        1 => Just(Op::Expire),
        1 => Just(Op::End),
        1 => Just(Op::Running),
        3 => (0u64..3_000).prop_map(Op::Wait),
    ]
}

fn session(capacity: u32, own: Vec<String>, ttl_ms: u64) -> Result<SessionSeats, SeatError> {
    let new = NewSession {
        session_id: Uuid::from_u128(7),
        capacity,
        status: SessionStatus::Created,
        info: SessionInfo { image: "game".into(), location: "eu".into(), ..SessionInfo::default() },
        players: own,
        joined: Vec::new(),
        reservation_ttl: Duration::from_millis(ttl_ms),
        now: T0,
    };
    SessionSeats::create(&new, Uuid::from_u128(1_000))
}

/// The ledger's invariants at `now`: every player holds at most one seat, 0 ≤ joined + reserved ≤
/// capacity, open seats add up, an ended session holds nothing.
fn check_invariants(s: &SessionSeats, now: OffsetDateTime) -> Result<(), TestCaseError> {
    let mut holders: BTreeMap<&str, usize> = BTreeMap::new();
    for player in &s.joined {
        *holders.entry(player).or_default() += 1;
    }
    for reservation in s.reservations.values() {
        prop_assert!(!reservation.players.is_empty(), "no empty reservation is kept");
        for player in &reservation.players {
            *holders.entry(player).or_default() += 1;
        }
    }
    prop_assert!(holders.values().all(|&n| n == 1), "a player holds one seat at most: {s:?}");
    let reserved: usize =
        s.reservations.values().filter(|r| r.expires_at > now).map(|r| r.players.len()).sum();
    prop_assert!(s.joined.len() + reserved <= s.capacity as usize, "overbooked at {now}: {s:?}");
    prop_assert_eq!(s.reserved(now) as usize, reserved);
    if s.status == SessionStatus::Ended {
        prop_assert!(s.joined.is_empty() && s.reservations.is_empty());
        prop_assert_eq!(s.open_seats(now), 0);
    } else {
        prop_assert_eq!(s.open_seats(now) as usize, s.capacity as usize - s.joined.len() - reserved);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any interleaving keeps the invariants, failed operations change nothing (beyond dropping
    /// expired reservations), joins are idempotent, reserved players can always join before
    /// expiry, and expiry frees exactly the expired reservations.
    #[test]
    fn any_interleaving_keeps_seats_within_capacity(
        capacity in 0u32..7,
        own in players(),
        own_ttl in 1u64..5_000,
        ops in prop::collection::vec(op(), 0..40),
    ) {
        let distinct = own.iter().collect::<BTreeSet<_>>().len() as u32;
        let mut s = match session(capacity, own.clone(), own_ttl) {
            Ok(s) => s,
            Err(error) => {
                prop_assert!(distinct > capacity);
                prop_assert_eq!(error, SeatError::SessionFull { capacity, open: capacity, needed: distinct });
                return Ok(());
            }
        };
        prop_assert!(distinct <= capacity);
        let mut now = T0;
        let mut next_id = 1u128;
        check_invariants(&s, now)?;
        for op in ops {
            // Every player holding a live reservation can join right now.
            for player in PLAYERS {
                if s.reservation_of(player, now).is_some() {
                    let mut probe = s.clone();
                    let joined = probe.join(&[player.to_owned()], None, now);
                    prop_assert!(joined.is_ok(), "reserved {player} could not join: {joined:?}");
                    check_invariants(&probe, now)?;
                }
            }
            let before = s.at(now);
            let ended = s.status == SessionStatus::Ended;
            let result: Result<(), SeatError> = match &op {
                Op::Join(players) => s.join(players, None, now).map(|joined| {
                    let asked: BTreeSet<String> = players.iter().cloned().collect();
                    assert_eq!(&joined.joined | &joined.already_joined, asked);
                    assert!(joined.from_reservations.is_subset(&joined.joined));
                    assert_eq!(joined.already_joined, &asked & &before.joined);
                }),
                Op::Leave(players) => s.leave(players, None, now).map(|left| {
                    for player in players {
                        assert!(!s.joined.contains(player) && s.reservation_of(player, now).is_none());
                    }
                    assert_eq!(left.left, players.iter().filter(|p| before.joined.contains(*p)).cloned().collect());
                }),
                Op::Reserve(players, ttl) => {
                    next_id += 1;
                    s.reserve(Uuid::from_u128(next_id), players, Duration::from_millis(*ttl), now).map(|r| {
                        // Moving a player never shortens their hold.
                        let kept = before
                            .reservations
                            .values()
                            .filter(|held| held.expires_at > now && !held.players.is_disjoint(&r.moved))
                            .map(|held| held.expires_at);
                        let expected = kept.fold(now + Duration::from_millis(*ttl), OffsetDateTime::max);
                        assert_eq!(r.expires_at, expected);
                        assert_eq!(r.players, players.iter().cloned().collect());
                    })
                }
                Op::Expire => {
                    let live: BTreeMap<_, _> = before.reservations.clone();
                    let all = s.reservations.clone();
                    let expired = s.expire(now);
                    let expired_ids: BTreeSet<Uuid> = expired.iter().map(|e| e.reservation_id).collect();
                    let should: BTreeSet<Uuid> =
                        all.iter().filter(|(_, r)| r.expires_at <= now).map(|(id, _)| *id).collect();
                    prop_assert_eq!(expired_ids, should, "expiry drops exactly the expired reservations");
                    prop_assert_eq!(&s.reservations, &live, "and keeps exactly the live ones");
                    prop_assert_eq!(s.open_seats(now), before.open_seats(now), "expired seats were free already");
                    Ok(())
                }
                Op::End => s.end(now).map(|ended| {
                    assert_eq!(ended.players, before.joined);
                    assert_eq!(ended.reservations, before.reservations.keys().copied().collect());
                }),
                Op::Running => s.mark_running(),
                Op::Wait(ms) => {
                    now += Duration::from_millis(*ms);
                    Ok(())
                }
            };
            let succeeded = result.is_ok();
            match result {
                Ok(()) => prop_assert!(!ended || matches!(op, Op::Expire | Op::Wait(_)), "an ended session refuses {op:?}"),
                Err(error) => {
                    prop_assert_eq!(&s.at(now), &before, "{:?} failed ({}) but changed something", op, error);
                    match (&op, &error) {
                        (_, SeatError::Ended) => prop_assert!(ended),
                        (Op::Join(players), SeatError::SessionFull { needed, open, .. }) => {
                            let need = players
                                .iter()
                                .collect::<BTreeSet<_>>()
                                .into_iter()
                                .filter(|p| !before.joined.contains(*p) && before.reservation_of(p, now).is_none())
                                .count();
                            prop_assert_eq!(*needed as usize, need);
                            prop_assert!(needed > open);
                            prop_assert_eq!(*open, before.open_seats(now));
                        }
                        (Op::Reserve(players, _), SeatError::NoPlayers) => prop_assert!(players.is_empty()),
                        (Op::Reserve(players, _), SeatError::AlreadyJoined { players: joined }) => {
                            prop_assert!(!joined.is_empty());
                            prop_assert!(joined.iter().all(|p| players.contains(p) && before.joined.contains(p)));
                        }
                        (Op::Reserve(_, _), SeatError::NoSeats { needed, open }) => {
                            prop_assert!(needed > open);
                            prop_assert_eq!(*open, before.open_seats(now));
                        }
                        (op, error) => prop_assert!(false, "{op:?} cannot fail with {error:?}"),
                    }
                }
            }
            check_invariants(&s, now)?;
            // After a successful join, joining again is a no-op that reports everyone as joined.
            if let Op::Join(players) = &op && succeeded {
                let mut again = s.clone();
                let second = again.join(players, None, now);
                prop_assert!(second.is_ok(), "a repeated join failed: {second:?}");
                let second = second.unwrap();
                prop_assert!(second.joined.is_empty(), "a second join joins nobody");
                prop_assert_eq!(second.already_joined, players.iter().cloned().collect::<BTreeSet<_>>());
                prop_assert_eq!(&again, &s, "a second join changes nothing");
            }
        }
    }

    /// Ordered joins and leaves applied in any order, some of them more than once (redeliveries),
    /// end exactly as the newest change per player says; the ordered history is numbered by its
    /// position, as JetStream numbers a stream.
    #[test]
    fn ordered_changes_in_any_order_end_as_the_newest_per_player(
        history in prop::collection::vec((any::<bool>(), prop::collection::vec(select(&PLAYERS[..]).prop_map(str::to_owned), 1..4)), 1..20),
        deliveries in prop::collection::vec(any::<prop::sample::Index>(), 0..60),
        shuffle_seed in any::<u64>(),
    ) {
        let mut s = session(PLAYERS.len() as u32, Vec::new(), 1).unwrap();
        // Every change at least once, in a shuffled order, plus random redeliveries.
        let mut order: Vec<usize> = (0..history.len()).collect();
        let mut rng = shuffle_seed | 1;
        for i in (1..order.len()).rev() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            order.swap(i, (rng % (i as u64 + 1)) as usize);
        }
        order.extend(deliveries.iter().map(|d| d.index(history.len())));
        for position in order {
            let (join, players) = &history[position];
            let sequence = Some(position as u64 + 1);
            if *join {
                s.join(players, sequence, T0).unwrap();
            } else {
                s.leave(players, sequence, T0).unwrap();
            }
            check_invariants(&s, T0)?;
        }
        for player in PLAYERS {
            let newest = history.iter().rev().find(|(_, players)| players.iter().any(|p| p == player));
            let should_be_in = newest.is_some_and(|(join, _)| *join);
            prop_assert_eq!(s.joined.contains(player), should_be_in, "{}: {:?}", player, s);
        }
    }

    /// Backfill choice returns exactly the eligible sessions, and nothing eligible beats the first
    /// on (already holding every requesting player, worst latency, open seats).
    #[test]
    fn backfill_choice_returns_exactly_the_eligible_best_first(
        candidates in prop::collection::vec(candidate(), 0..12),
        requesting in prop::collection::vec(player(), 0..4),
        version in prop::option::of(select(&["1", "2"][..])),
        wanted_labels in prop::collection::btree_map(select(&["mode", "map"][..]).prop_map(str::to_owned), select(&["x", "y"][..]).prop_map(str::to_owned), 0..2),
        locations in prop::option::of(subsequence(&LOCATIONS[..], 0..=3)),
        cap in 0u32..200,
    ) {
        let locations: Option<Vec<String>> = locations.map(|ls| ls.into_iter().map(str::to_owned).collect());
        let query = BackfillQuery {
            image: "game",
            version,
            labels: &wanted_labels,
            locations: locations.as_deref(),
            players: &requesting,
            latency_cap_ms: cap,
        };
        let ranked = choose_backfill(&query, &candidates);
        let ids = requesting.iter().map(|p| &p.id).collect::<BTreeSet<_>>();
        // Seats a candidate must have open: requesting players not already holding one there.
        let needed = |c: &BackfillCandidate| ids.iter().filter(|id| !c.reserved_players.contains(id.as_str())).count();
        let worst = |c: &BackfillCandidate| -> Option<u32> {
            let mut worst = 0;
            for player in &requesting {
                let ms = *player.latencies.get(&c.location)?;
                if ms > cap { return None; }
                worst = worst.max(ms);
            }
            Some(worst)
        };
        let eligible = |c: &BackfillCandidate| {
            !ids.is_empty()
                && c.image == "game"
                && version.is_none_or(|v| c.version.as_deref() == Some(v))
                && wanted_labels.iter().all(|(k, v)| c.labels.get(k) == Some(v))
                && locations.as_ref().is_none_or(|ls| ls.contains(&c.location))
                && c.status == SessionStatus::Running
                && c.open_seats as usize >= needed(c)
                && worst(c).is_some()
        };
        let expected: BTreeSet<Uuid> = candidates.iter().filter(|c| eligible(c)).map(|c| c.session_id).collect();
        let got: BTreeSet<Uuid> = ranked.iter().map(|r| r.session_id).collect();
        prop_assert_eq!(got, expected);
        prop_assert_eq!(ranked.len(), ranked.iter().map(|r| r.session_id).collect::<BTreeSet<_>>().len());
        for pair in ranked.windows(2) {
            prop_assert!(pair[0].rank(&pair[1]).is_le(), "ranked out of order: {pair:?}");
        }
        if let Some(first) = ranked.first() {
            for c in candidates.iter().filter(|c| eligible(c)) {
                let key = (needed(c) != 0, worst(c).unwrap(), c.open_seats);
                prop_assert!((!first.held, first.worst_latency_ms, first.open_seats) <= key, "{first:?} beaten by {c:?}");
            }
        }
    }
}

const LOCATIONS: [&str; 3] = ["eu", "us", "ap"];

fn candidate() -> impl Strategy<Value = BackfillCandidate> {
    (
        0u128..8,
        select(&["game", "other"][..]),
        prop::option::of(select(&["1", "2"][..])),
        select(&LOCATIONS[..]),
        prop::collection::btree_map(select(&["mode", "map"][..]).prop_map(str::to_owned), select(&["x", "y"][..]).prop_map(str::to_owned), 0..3),
        select(&[SessionStatus::Created, SessionStatus::Running, SessionStatus::Running, SessionStatus::Ended][..]),
        0u32..6,
        prop::collection::btree_set(select(&PLAYERS[..]).prop_map(str::to_owned), 0..3),
    )
        .prop_map(|(id, image, version, location, labels, status, open_seats, reserved_players)| BackfillCandidate {
            session_id: Uuid::from_u128(id),
            image: image.to_owned(),
            version: version.map(str::to_owned),
            location: location.to_owned(),
            labels,
            status,
            open_seats,
            reserved_players,
        })
}

fn player() -> impl Strategy<Value = BackfillPlayer> {
    (
        select(&PLAYERS[..]),
        prop::collection::btree_map(select(&LOCATIONS[..]).prop_map(str::to_owned), 0u32..200, 0..4),
    )
        .prop_map(|(id, latencies)| BackfillPlayer { id: id.to_owned(), latencies })
}

//! The state-store contract: one suite, run against the in-memory store and against Redis (a real
//! `redis-server` per test), both through the `StateStore` enum the binary uses. Redis-only tests
//! below check the key layout, TTLs, and behaviour when Redis stops and comes back.
//!
//! Times: each test picks a whole-millisecond `t0` and passes `t0 + offset` as the caller's `now`,
//! so lease arithmetic is exact; expiry (`keep_for`, cool-downs) runs on the stores' own clocks and
//! is tested with short durations and real sleeps.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use adapters::store::{MemoryStore, RedisStore, StateStore};
use bridge::ports::{
    AnnouncementStore, Claim, ClaimOutcome, Completion, CooldownStore, Delivery, DeliveryLog, LatencyStore,
    Lease, Outcome, Owed, PlacementState, PlacementStore, SeatStore, StateStore as _, StoreError,
    TicketState, TicketStatus, TicketStore,
};
use bridge::seats::{JsonText, NewSession, SeatError, SessionInfo, SessionStatus};
use bridge::{Assignment, Failure, FailureCode, MatchRequest, Player, Port, PortProtocol};

use crate::harness::RedisServer;

const LEASE: Duration = Duration::from_secs(10);
const KEEP: Duration = Duration::from_secs(3600);
const PREFIX: &str = "it-store";

struct Fixture {
    store: StateStore,
    /// A whole-millisecond "now" for the test's leases.
    t0: SystemTime,
    /// Keeps Redis running for the test (Redis fixtures only).
    redis: Option<RedisServer>,
}

impl Fixture {
    fn memory() -> Self {
        Self { store: StateStore::Memory(MemoryStore::new()), t0: whole_ms_now(), redis: None }
    }

    async fn redis() -> Self {
        let server = RedisServer::start();
        let store = RedisStore::connect(&server.url(), PREFIX).await.expect("connect to redis");
        Self { store: StateStore::Redis(store), t0: whole_ms_now(), redis: Some(server) }
    }

    /// `t0 + ms`.
    fn at(&self, ms: i64) -> SystemTime {
        if ms >= 0 {
            self.t0 + Duration::from_millis(ms as u64)
        } else {
            self.t0 - Duration::from_millis(ms.unsigned_abs())
        }
    }

    /// Milliseconds from `t0` to `time`.
    fn offset(&self, time: impl Into<SystemTime>) -> i64 {
        let time = time.into();
        match time.duration_since(self.t0) {
            Ok(after) => after.as_millis() as i64,
            Err(before) => -(before.duration().as_millis() as i64),
        }
    }

    /// A claim of `match_id` by `owner` at `t0 + at_ms`, from the `http` door, carrying `copy`.
    fn claim(&self, match_id: &str, owner: &str, at_ms: i64) -> Claim {
        self.claim_from("http", match_id, owner, at_ms, "first")
    }

    fn claim_from(&self, source: &str, match_id: &str, owner: &str, at_ms: i64, copy: &str) -> Claim {
        Claim {
            match_id: match_id.to_owned(),
            source: source.to_owned(),
            session_id: bridge::session_id(source, match_id),
            request: request(match_id, copy),
            owner: owner.to_owned(),
            now: self.at(at_ms).into(),
            lease_for: LEASE,
            keep_for: KEEP,
        }
    }

    /// Claims and expects ownership; returns the lease.
    async fn own(&self, claim: &Claim) -> Lease {
        match self.store.claim(claim).await.expect("claim") {
            ClaimOutcome::Owned { lease, .. } => lease,
            other => panic!("expected to own {:?}, got {other:?}", claim.match_id),
        }
    }

    /// Claims `match_id` (as `alpha`, at t0) and completes it placed, the record kept `keep_for`.
    async fn place(&self, match_id: &str, keep_for: Duration) {
        let lease = self.own(&self.claim(match_id, "alpha", 0)).await;
        let placed = Outcome::Placed(self.assignment(match_id, "eu-west-1"));
        assert!(self.store.complete(match_id, &lease, &placed, keep_for).await.unwrap());
    }

    /// The seat record a placement of `match_id` creates.
    fn new_session(&self, match_id: &str) -> NewSession {
        NewSession {
            session_id: bridge::session_id("http", match_id),
            capacity: 4,
            status: SessionStatus::Created,
            info: SessionInfo {
                image: "demo-game".to_owned(),
                version: None,
                location: "eu-west-1".to_owned(),
                labels: BTreeMap::new(),
                metadata: JsonText::of(&serde_json::json!({ "match_id": match_id })).unwrap(),
            },
            players: ids(&["p1"]),
            joined: Vec::new(),
            reservation_ttl: Duration::from_secs(60),
            now: self.at(1_500).into(),
        }
    }

    /// Finishes `match_id`'s placement under `lease` with `outcome`, its JSON rendered, and the seat
    /// record when `seats`.
    async fn finish(
        &self,
        match_id: &str,
        lease: &Lease,
        outcome: &Outcome,
        seats: Option<&NewSession>,
    ) -> bridge::ports::Finished {
        let json = outcome.to_json().unwrap();
        let completion =
            Completion { match_id, lease, outcome, json: Some(&json), keep_for: KEEP, owed: None };
        self.store.finish_placement(completion, seats.map(|new| (new, KEEP))).await
    }

    /// [`Fixture::finish`] for a source whose sinks want the outcome, owed at `t0 + due_ms`.
    async fn finish_owing(
        &self,
        match_id: &str,
        lease: &Lease,
        outcome: &Outcome,
        seats: Option<&NewSession>,
        due_ms: i64,
    ) -> bridge::ports::Finished {
        let json = outcome.to_json().unwrap();
        let owed = Owed::of(outcome);
        let owed = Some((&owed, self.at(due_ms).into()));
        let completion = Completion { match_id, lease, outcome, json: Some(&json), keep_for: KEEP, owed };
        self.store.finish_placement(completion, seats.map(|new| (new, KEEP))).await
    }

    /// Claims the due owed announcements at `t0 + at_ms`, holding them 10 s.
    /// ... as `<outcome>|<match id>` texts.
    async fn claim_owed(&self, at_ms: i64, limit: usize) -> Vec<String> {
        let claimed = self.store.claim_announcements(self.at(at_ms).into(), limit, Duration::from_secs(10));
        claimed.await.unwrap().into_iter().map(|owed| format!("{}|{}", owed.outcome, owed.match_id)).collect()
    }

    async fn owe(&self, outcome: &str, match_id: &str, due_ms: i64) {
        self.store.owe_announcement(&owed(outcome, match_id), self.at(due_ms).into(), KEEP).await.unwrap();
    }

    fn assignment(&self, match_id: &str, location: &str) -> Assignment {
        Assignment {
            match_id: match_id.to_owned(),
            session_id: bridge::session_id("http", match_id),
            image: "demo-game".to_owned(),
            location: location.to_owned(),
            host: "203.0.113.7".to_owned(),
            ports: vec![Port { protocol: PortProtocol::Udp, container: 7777, host: 20001 }],
            players: vec!["p1".to_owned()],
            latency_ms: BTreeMap::from([("p1".to_owned(), 31)]),
            placed_at: self.at(1500).into(),
            latency_cap_exceeded: false,
        }
    }
}

fn whole_ms_now() -> SystemTime {
    let ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64;
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// A request that says which copy it is (in a latency, which a resend may change: every copy is
/// the same match), so a test can tell the stored one apart.
fn request(match_id: &str, copy: &str) -> MatchRequest {
    let latencies = BTreeMap::from([(format!("copy-{copy}"), 20)]);
    MatchRequest {
        match_id: match_id.to_owned(),
        players: vec![Player { id: "p1".to_owned(), latencies, ..Player::default() }],
        labels: BTreeMap::from([("mode".to_owned(), "ranked".to_owned())]),
        ..MatchRequest::default()
    }
}

/// Another match under `match_id`: other players than [`request`]'s.
fn other_match(match_id: &str) -> MatchRequest {
    MatchRequest {
        players: vec![
            Player { id: "p1".to_owned(), ..Player::default() },
            Player { id: "p2".to_owned(), ..Player::default() },
        ],
        ..request(match_id, "other")
    }
}

fn ids(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Runs each contract test against both stores.
macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Fixture::memory()).await;
                }
            )*
        }

        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Fixture::redis().await).await;
                }
            )*
        }
    };
}

contract_tests!(
    fresh_claim_owns_a_new_record,
    duplicate_claim_while_held_is_held,
    completed_placement_is_answered_with_the_same_assignment,
    failure_for_good_is_answered,
    retryable_failure_is_taken_over_with_the_original_request,
    expired_lease_is_taken_over_and_the_old_lease_is_fenced_out,
    renew_extends_the_lease_only_for_the_owner,
    expired_pending_lists_expired_pending_records_oldest_first,
    records_latencies_and_cooldowns_expire,
    latencies_are_replaced_and_only_known_players_returned,
    cooling_lists_the_locations_cooling_down,
    a_matched_tickets_status_is_not_overwritten_by_an_unmatched_one,
    a_final_tickets_status_is_not_overwritten_by_an_unmatched_one,
    concurrent_claims_have_exactly_one_owner,
    concurrent_first_deliveries_have_exactly_one_winner,
    ids_with_braces_and_colons_are_kept_apart,
    finishing_a_placement_writes_its_outcome_and_its_seat_record,
    finishing_without_the_lease_still_records_the_seats,
    an_owed_announcement_is_written_with_the_outcome_and_claimed_when_due,
    owed_announcements_are_claimed_earliest_first_and_held,
    concurrent_announcement_claims_never_share_an_entry,
    announcing_an_older_outcome_leaves_a_newer_one_owed,
    a_claim_for_another_match_is_refused_whatever_the_state_and_changes_nothing,
);

// ---------------------------------------------------------------------------------------------
// The contract

async fn finishing_a_placement_writes_its_outcome_and_its_seat_record(fx: Fixture) {
    let lease = fx.own(&fx.claim("m-1", "alpha", 0)).await;
    let assignment = fx.assignment("m-1", "eu-west-1");
    let placed = Outcome::Placed(assignment.clone());
    let new = fx.new_session("m-1");
    let (written, created) = fx.finish("m-1", &lease, &placed, Some(&new)).await;
    assert!(written.unwrap(), "the owner's outcome is written");
    let seats = created.expect("a seat record was asked for").unwrap().expect("and created");
    assert_eq!(seats.session_id, assignment.session_id);
    assert_eq!(fx.store.get("m-1").await.unwrap().unwrap().state, PlacementState::Placed { assignment });
    let stored = fx.store.get_session(new.session_id, fx.at(2_000).into()).await.unwrap();
    let stored = stored.expect("the seat record is kept");
    assert_eq!((stored.capacity, stored.info.image.as_str()), (4, "demo-game"));
    let held: Vec<&String> = stored.reservations.values().flat_map(|r| &r.players).collect();
    assert_eq!(held, [&"p1".to_owned()], "the match's own players hold their seats");

    // Done once: the same lease writes nothing more, and the seat record is left as it is.
    let other = Outcome::Placed(fx.assignment("m-1", "us-east-1"));
    let (written, created) = fx.finish("m-1", &lease, &other, Some(&new)).await;
    assert!(!written.unwrap(), "a second completion is refused");
    assert_eq!(created.unwrap().unwrap(), Err(SeatError::AlreadyExists));
    let kept = fx.store.get_session(new.session_id, fx.at(2_000).into()).await.unwrap();
    assert_eq!(kept, Some(stored));

    // A failure asks for no seats.
    let lease = fx.own(&fx.claim("m-2", "alpha", 0)).await;
    let failed = Outcome::Failed(Failure::new("m-2", FailureCode::NotFound, "no such image"));
    let (written, created) = fx.finish("m-2", &lease, &failed, None).await;
    assert!(written.unwrap());
    assert!(created.is_none());
    assert!(matches!(fx.store.get("m-2").await.unwrap().unwrap().state, PlacementState::Failed { .. }));
}

fn owed(outcome: &str, match_id: &str) -> Owed {
    Owed { match_id: match_id.to_owned(), outcome: outcome.to_owned() }
}

async fn an_owed_announcement_is_written_with_the_outcome_and_claimed_when_due(fx: Fixture) {
    // A placed outcome (with its seats) and a failure, both owed at t0 + 5 s.
    let lease = fx.own(&fx.claim("m-1", "alpha", 0)).await;
    let placed = Outcome::Placed(fx.assignment("m-1", "eu-west-1"));
    let (written, created) =
        fx.finish_owing("m-1", &lease, &placed, Some(&fx.new_session("m-1")), 5_000).await;
    assert!(written.unwrap());
    assert!(created.unwrap().unwrap().is_ok());
    let lease = fx.own(&fx.claim("m-2", "alpha", 0)).await;
    let failed = Outcome::Failed(Failure::new("m-2", FailureCode::NotFound, "no such image"));
    let (written, _) = fx.finish_owing("m-2", &lease, &failed, None, 5_000).await;
    assert!(written.unwrap());
    // Nothing owed: nothing written.
    fx.place("m-3", KEEP).await;
    assert_eq!(fx.store.owed_announcements().await.unwrap(), 2);

    assert!(fx.claim_owed(4_999, 10).await.is_empty(), "not due yet");
    let mut due = fx.claim_owed(5_000, 10).await;
    due.sort();
    assert_eq!(due, ["failed:NOT_FOUND|m-2", "placed|m-1"]);
    assert!(fx.claim_owed(6_000, 10).await.is_empty(), "held by the first claim for 10 s");
    assert_eq!(fx.claim_owed(15_000, 10).await.len(), 2, "due again once the hold ran out");

    // Announced: gone for good, and a late deferral does not bring it back.
    fx.store.announced(&owed("placed", "m-1")).await.unwrap();
    fx.store.defer_announcement(&owed("placed", "m-1"), fx.at(16_000).into()).await.unwrap();
    // Deferred: due then, not before.
    let failed = owed("failed:NOT_FOUND", "m-2");
    fx.store.defer_announcement(&failed, fx.at(30_000).into()).await.unwrap();
    assert!(fx.claim_owed(29_999, 10).await.is_empty());
    assert_eq!(fx.claim_owed(30_000, 10).await, ["failed:NOT_FOUND|m-2"]);
    assert_eq!(fx.store.owed_announcements().await.unwrap(), 1);
    fx.store.announced(&failed).await.unwrap();
    assert_eq!(fx.store.owed_announcements().await.unwrap(), 0);
    assert!(fx.claim_owed(100_000, 10).await.is_empty());
}

async fn owed_announcements_are_claimed_earliest_first_and_held(fx: Fixture) {
    for (match_id, due_ms) in [("late", 3_000), ("early", 1_000), ("middle", 2_000)] {
        fx.owe("placed", match_id, due_ms).await;
    }
    // Owing again moves the entry.
    fx.owe("placed", "late", 2_500).await;
    assert_eq!(fx.claim_owed(5_000, 2).await, ["placed|early", "placed|middle"]);
    assert_eq!(fx.claim_owed(5_000, 2).await, ["placed|late"]);
    assert!(fx.claim_owed(5_000, 2).await.is_empty());
    assert_eq!(fx.store.owed_announcements().await.unwrap(), 3, "claimed entries stay owed");
}

/// A retryable failure taken over and placed since: announcing the failure clears only what was
/// owed for the failure, never the newer outcome's entry. Ids of any shape are kept whole.
async fn announcing_an_older_outcome_leaves_a_newer_one_owed(fx: Fixture) {
    let odd = "m|1 {x}";
    fx.owe("failed:UPSTREAM_UNAVAILABLE", odd, 1_000).await;
    fx.owe("placed", odd, 2_000).await;
    assert_eq!(fx.store.owed_announcements().await.unwrap(), 2);
    fx.store.announced(&owed("failed:UPSTREAM_UNAVAILABLE", odd)).await.unwrap();
    assert_eq!(fx.claim_owed(5_000, 10).await, [format!("placed|{odd}")]);
}

async fn concurrent_announcement_claims_never_share_an_entry(fx: Fixture) {
    for i in 0..40 {
        fx.owe("placed", &format!("m-{i}"), i).await;
    }
    let claims = (0..4).map(|_| fx.claim_owed(1_000, 15));
    let claimed: Vec<Vec<String>> = futures::future::join_all(claims).await;
    let all: Vec<&String> = claimed.iter().flatten().collect();
    let distinct: BTreeSet<&String> = all.iter().copied().collect();
    assert_eq!(all.len(), 40, "every entry claimed once: {claimed:?}");
    assert_eq!(distinct.len(), 40, "no entry claimed twice: {claimed:?}");
}

/// An owner whose lease was taken over still records the seats of the session it started (the
/// same session id as the new owner's), while its outcome is refused.
async fn finishing_without_the_lease_still_records_the_seats(fx: Fixture) {
    let stale = fx.own(&fx.claim("m-1", "alpha", 0)).await;
    let fresh = fx.own(&fx.claim("m-1", "beta", 10_001)).await;
    let placed = Outcome::Placed(fx.assignment("m-1", "eu-west-1"));
    let new = fx.new_session("m-1");
    let (written, created) = fx.finish("m-1", &stale, &placed, Some(&new)).await;
    assert!(!written.unwrap(), "the fenced-out owner writes no outcome");
    assert!(created.unwrap().unwrap().is_ok(), "but the session's seats are recorded");
    let record = fx.store.get("m-1").await.unwrap().unwrap();
    assert!(
        matches!(record.state, PlacementState::Pending { ref owner, .. } if owner == "beta"),
        "{record:?}"
    );
    assert!(fx.store.get_session(new.session_id, fx.at(2_000).into()).await.unwrap().is_some());
    let (written, _) = fx.finish("m-1", &fresh, &placed, Some(&new)).await;
    assert!(written.unwrap(), "the new owner's outcome is written");
}

async fn fresh_claim_owns_a_new_record(fx: Fixture) {
    assert_eq!(fx.store.get("m-1").await.unwrap(), None);
    let claim = fx.claim("m-1", "alpha", 0);
    let ClaimOutcome::Owned { record, lease, taken_over } = fx.store.claim(&claim).await.unwrap() else {
        panic!("a fresh claim must own the record");
    };
    assert!(!taken_over);
    assert_eq!(lease, Lease { owner: "alpha".into(), fence: 1 });
    assert_eq!(record.match_id, "m-1");
    assert_eq!(record.source, "http");
    assert_eq!(record.session_id, bridge::session_id("http", "m-1"));
    assert_eq!(record.request, request("m-1", "first"));
    assert_eq!(fx.offset(record.accepted_at), 0);
    let PlacementState::Pending { owner, fence, lease_until } = &record.state else {
        panic!("a fresh record is pending: {:?}", record.state);
    };
    assert_eq!((owner.as_str(), *fence, fx.offset(*lease_until)), ("alpha", 1, 10_000));
    assert_eq!(fx.store.get("m-1").await.unwrap().as_ref(), Some(&*record), "get returns what claim made");
    assert_eq!(fx.store.get("m-2").await.unwrap(), None, "other matches are untouched");
}

async fn duplicate_claim_while_held_is_held(fx: Fixture) {
    fx.own(&fx.claim("m-1", "alpha", 0)).await;
    let before = fx.store.get("m-1").await.unwrap();
    for (owner, at) in [("beta", 1_000), ("alpha", 2_000), ("beta", 9_999)] {
        let outcome = fx.store.claim(&fx.claim_from("nats", "m-1", owner, at, "second")).await.unwrap();
        let ClaimOutcome::Held { owner: holder, lease_until } = outcome else {
            panic!("a claim at +{at} ms while alpha holds the lease must be Held, got {outcome:?}");
        };
        assert_eq!((holder.as_str(), fx.offset(lease_until)), ("alpha", 10_000));
    }
    assert_eq!(fx.store.get("m-1").await.unwrap(), before, "Held changes nothing");
}

async fn completed_placement_is_answered_with_the_same_assignment(fx: Fixture) {
    let lease = fx.own(&fx.claim("m-1", "alpha", 0)).await;
    let assignment = fx.assignment("m-1", "eu-west-1");
    assert!(fx.store.complete("m-1", &lease, &Outcome::Placed(assignment.clone()), KEEP).await.unwrap());

    let record = fx.store.get("m-1").await.unwrap().expect("record kept");
    assert_eq!(record.state, PlacementState::Placed { assignment: assignment.clone() });
    assert_eq!(record.request, request("m-1", "first"), "the request is kept with the outcome");

    // Any later claim (even long after the lease) answers with the stored assignment.
    for (owner, at) in [("beta", 1_000), ("alpha", 60_000)] {
        let outcome = fx.store.claim(&fx.claim_from("sns", "m-1", owner, at, "again")).await.unwrap();
        assert_eq!(outcome, ClaimOutcome::Placed(assignment.clone()));
    }
    assert_eq!(fx.store.get("m-1").await.unwrap(), Some(record), "a duplicate changes nothing");

    // A second completion (or one with the same lease after it) is refused.
    let other = Outcome::Placed(fx.assignment("m-1", "us-east-1"));
    assert!(!fx.store.complete("m-1", &lease, &other, KEEP).await.unwrap());
    assert!(!fx.store.renew("m-1", &lease, fx.at(2_000).into(), LEASE).await.unwrap());
    let stored = fx.store.get("m-1").await.unwrap().unwrap().state;
    assert_eq!(stored, PlacementState::Placed { assignment });
}

async fn failure_for_good_is_answered(fx: Fixture) {
    let lease = fx.own(&fx.claim("m-1", "alpha", 0)).await;
    let failure = Failure::new("m-1", FailureCode::NotFound, "no such image");
    assert!(!failure.error.retryable);
    assert!(fx.store.complete("m-1", &lease, &Outcome::Failed(failure.clone()), KEEP).await.unwrap());

    let outcome = fx.store.claim(&fx.claim("m-1", "beta", 60_000)).await.unwrap();
    assert_eq!(outcome, ClaimOutcome::Failed(failure.clone()));
    let record = fx.store.get("m-1").await.unwrap().unwrap();
    assert_eq!(record.state, PlacementState::Failed { failure });
}

async fn retryable_failure_is_taken_over_with_the_original_request(fx: Fixture) {
    let first = fx.claim_from("http", "m-1", "alpha", 0, "first");
    let lease = fx.own(&first).await;
    let failure = Failure::new("m-1", FailureCode::NoCapacity, "everything full");
    assert!(failure.error.retryable);
    assert!(fx.store.complete("m-1", &lease, &Outcome::Failed(failure), KEEP).await.unwrap());

    // A later duplicate from another door, with its own copy of the request, before the old lease ran out.
    let second = fx.claim_from("nats", "m-1", "beta", 1_000, "second");
    let ClaimOutcome::Owned { record, lease: new_lease, taken_over } = fx.store.claim(&second).await.unwrap()
    else {
        panic!("a retryable failure must be taken over");
    };
    assert!(taken_over);
    assert_eq!(new_lease, Lease { owner: "beta".into(), fence: 2 });
    assert_eq!(record.request, request("m-1", "first"), "the ORIGINAL request is placed");
    assert_eq!(record.source, "http");
    assert_eq!(record.session_id, first.session_id);
    assert_eq!(fx.offset(record.accepted_at), 0);
    assert_eq!(
        record.state,
        PlacementState::Pending { owner: "beta".into(), fence: 2, lease_until: fx.at(11_000).into() }
    );
    assert_eq!(fx.store.get("m-1").await.unwrap().as_ref(), Some(&*record));

    // Now beta holds it; alpha's old lease is worthless.
    let third = fx.store.claim(&fx.claim("m-1", "gamma", 2_000)).await.unwrap();
    assert_eq!(third, ClaimOutcome::Held { owner: "beta".into(), lease_until: fx.at(11_000).into() });
    assert!(!fx.store.renew("m-1", &lease, fx.at(2_000).into(), LEASE).await.unwrap());
}

async fn expired_lease_is_taken_over_and_the_old_lease_is_fenced_out(fx: Fixture) {
    let old = fx.own(&fx.claim("m-1", "alpha", 0)).await;
    // Exactly at lease_until the lease has run out (lease_until <= now).
    let takeover = fx.claim_from("nats", "m-1", "beta", 10_000, "second");
    let ClaimOutcome::Owned { record, lease, taken_over } = fx.store.claim(&takeover).await.unwrap() else {
        panic!("an expired lease must be taken over");
    };
    assert!(taken_over);
    assert_eq!(lease, Lease { owner: "beta".into(), fence: old.fence + 1 });
    assert_eq!(record.request, request("m-1", "first"), "the stored request, not the claim's");
    assert_eq!(record.source, "http");

    // The old owner wakes up: it can neither renew nor complete.
    assert!(!fx.store.renew("m-1", &old, fx.at(10_500).into(), LEASE).await.unwrap());
    let stale = Outcome::Placed(fx.assignment("m-1", "us-east-1"));
    assert!(!fx.store.complete("m-1", &old, &stale, KEEP).await.unwrap());
    // Not even with the new owner's name but the old fence.
    let forged = Lease { owner: "beta".into(), fence: old.fence };
    assert!(!fx.store.complete("m-1", &forged, &stale, KEEP).await.unwrap());
    let state = fx.store.get("m-1").await.unwrap().unwrap().state;
    assert_eq!(
        state,
        PlacementState::Pending { owner: "beta".into(), fence: 2, lease_until: fx.at(20_000).into() }
    );

    // The new owner's outcome stands.
    let placed = fx.assignment("m-1", "eu-west-1");
    assert!(fx.store.complete("m-1", &lease, &Outcome::Placed(placed.clone()), KEEP).await.unwrap());
    assert_eq!(
        fx.store.claim(&fx.claim("m-1", "alpha", 30_000)).await.unwrap(),
        ClaimOutcome::Placed(placed)
    );

    // A takeover of a takeover keeps counting.
    fx.own(&fx.claim("m-2", "alpha", 0)).await;
    fx.own(&fx.claim("m-2", "beta", 10_000)).await;
    let third = fx.own(&fx.claim("m-2", "gamma", 20_000)).await;
    assert_eq!(third, Lease { owner: "gamma".into(), fence: 3 });
}

async fn a_claim_for_another_match_is_refused_whatever_the_state_and_changes_nothing(fx: Fixture) {
    // One record in each state: held, lease run out, placed, failed for good, failed retryably.
    fx.own(&fx.claim("m-held", "alpha", 20_000)).await; // lease until +30 s
    fx.own(&fx.claim("m-expired", "alpha", 0)).await; // lease until +10 s
    for (match_id, outcome) in [
        ("m-placed", Outcome::Placed(fx.assignment("m-placed", "eu-west-1"))),
        ("m-failed", Outcome::Failed(Failure::new("m-failed", FailureCode::NotFound, "no such image"))),
        ("m-retryable", Outcome::Failed(Failure::new("m-retryable", FailureCode::NoCapacity, "full"))),
    ] {
        let lease = fx.own(&fx.claim(match_id, "alpha", 0)).await;
        assert!(fx.store.complete(match_id, &lease, &outcome, KEEP).await.unwrap());
    }
    let all = ["m-held", "m-expired", "m-placed", "m-failed", "m-retryable"];
    let mut before = Vec::new();
    for match_id in all {
        before.push(fx.store.get(match_id).await.unwrap().expect("recorded"));
    }
    let pending_before = fx.store.expired_pending(fx.at(60_000).into(), 10).await.unwrap();
    assert_eq!(pending_before, ids(&["m-expired", "m-held"]));

    for match_id in all {
        // At +15 s: m-expired's lease has run out, m-held's has not.
        let mut claim = fx.claim_from("nats", match_id, "beta", 15_000, "other");
        claim.request = other_match(match_id);
        let outcome = fx.store.claim(&claim).await.unwrap();
        let ClaimOutcome::Conflict(conflict) = outcome else {
            panic!("{match_id}: another match under a known id must be refused, got {outcome:?}");
        };
        assert_eq!(conflict.match_id, match_id);
        assert_eq!(conflict.differing, [bridge::MatchField::Players], "{match_id}");
    }
    for (match_id, before) in all.iter().zip(&before) {
        assert_eq!(fx.store.get(match_id).await.unwrap().as_ref(), Some(before), "{match_id} unchanged");
    }
    let pending_after = fx.store.expired_pending(fx.at(60_000).into(), 10).await.unwrap();
    assert_eq!(pending_after, pending_before, "the pending index unchanged");
    assert_eq!(fx.store.expired_pending(fx.at(12_000).into(), 10).await.unwrap(), ids(&["m-expired"]));

    // The first match's own resend (other latencies) is still answered as before.
    let resend = fx.claim_from("nats", "m-placed", "beta", 15_000, "resent");
    assert_eq!(
        fx.store.claim(&resend).await.unwrap(),
        ClaimOutcome::Placed(fx.assignment("m-placed", "eu-west-1"))
    );
    let resend = fx.claim_from("nats", "m-expired", "beta", 15_000, "resent");
    let ClaimOutcome::Owned { record, taken_over: true, .. } = fx.store.claim(&resend).await.unwrap() else {
        panic!("the first match's resend takes the run-out lease over");
    };
    assert_eq!(record.request, request("m-expired", "first"));
}

async fn renew_extends_the_lease_only_for_the_owner(fx: Fixture) {
    let lease = fx.own(&fx.claim("m-1", "alpha", 0)).await;
    assert!(fx.store.renew("m-1", &lease, fx.at(5_000).into(), LEASE).await.unwrap());
    let state = fx.store.get("m-1").await.unwrap().unwrap().state;
    assert_eq!(
        state,
        PlacementState::Pending { owner: "alpha".into(), fence: 1, lease_until: fx.at(15_000).into() }
    );

    // Past the original lease but inside the renewed one: still held.
    let held = fx.store.claim(&fx.claim("m-1", "beta", 12_000)).await.unwrap();
    assert_eq!(held, ClaimOutcome::Held { owner: "alpha".into(), lease_until: fx.at(15_000).into() });

    // Wrong owner, wrong fence, unknown match: refused, nothing changes.
    let not_owner = Lease { owner: "beta".into(), fence: 1 };
    let wrong_fence = Lease { owner: "alpha".into(), fence: 2 };
    assert!(!fx.store.renew("m-1", &not_owner, fx.at(13_000).into(), LEASE).await.unwrap());
    assert!(!fx.store.renew("m-1", &wrong_fence, fx.at(13_000).into(), LEASE).await.unwrap());
    assert!(!fx.store.renew("m-unknown", &lease, fx.at(13_000).into(), LEASE).await.unwrap());
    let state = fx.store.get("m-1").await.unwrap().unwrap().state;
    assert_eq!(
        state,
        PlacementState::Pending { owner: "alpha".into(), fence: 1, lease_until: fx.at(15_000).into() }
    );

    // Once the renewed lease is over, it is taken over.
    let ClaimOutcome::Owned { taken_over: true, .. } =
        fx.store.claim(&fx.claim("m-1", "beta", 15_000)).await.unwrap()
    else {
        panic!("the renewed lease ran out at +15 s");
    };
}

async fn expired_pending_lists_expired_pending_records_oldest_first(fx: Fixture) {
    assert_eq!(fx.store.expired_pending(fx.at(0).into(), 10).await.unwrap(), Vec::<String>::new());
    fx.own(&fx.claim("m-b", "alpha", 2_000)).await; // lease until +12 s
    fx.own(&fx.claim("m-a", "alpha", 0)).await; // lease until +10 s
    fx.own(&fx.claim("m-late", "alpha", 20_000)).await; // lease until +30 s
    let done = fx.own(&fx.claim("m-done", "alpha", 0)).await; // completed: never listed
    let placed = Outcome::Placed(fx.assignment("m-done", "eu-west-1"));
    assert!(fx.store.complete("m-done", &done, &placed, KEEP).await.unwrap());
    let failed = fx.own(&fx.claim("m-failed", "alpha", 0)).await; // failed (retryable): not pending
    let failure = Outcome::Failed(Failure::new("m-failed", FailureCode::NoCapacity, "full"));
    assert!(fx.store.complete("m-failed", &failed, &failure, KEEP).await.unwrap());

    let expired = |at: i64, limit: usize| {
        let store = fx.store.clone();
        let now = fx.at(at);
        async move { store.expired_pending(now.into(), limit).await.unwrap() }
    };
    assert_eq!(expired(9_999, 10).await, Vec::<String>::new(), "nothing has run out yet");
    assert_eq!(expired(10_000, 10).await, ids(&["m-a"]), "lease_until <= now counts as run out");
    assert_eq!(expired(15_000, 10).await, ids(&["m-a", "m-b"]));
    assert_eq!(expired(15_000, 1).await, ids(&["m-a"]), "at most `limit`, oldest first");
    assert_eq!(expired(40_000, 10).await, ids(&["m-a", "m-b", "m-late"]));
    assert_eq!(expired(40_000, 0).await, Vec::<String>::new());

    // Renewing moves a record out; completing removes it; taking over moves it to the new lease.
    let m_b = Lease { owner: "alpha".into(), fence: 1 };
    assert!(fx.store.renew("m-b", &m_b, fx.at(35_000).into(), LEASE).await.unwrap()); // until +45 s
    assert_eq!(expired(40_000, 10).await, ids(&["m-a", "m-late"]));
    let m_late = Lease { owner: "alpha".into(), fence: 1 };
    let placed = Outcome::Placed(fx.assignment("m-late", "eu-west-1"));
    assert!(fx.store.complete("m-late", &m_late, &placed, KEEP).await.unwrap());
    assert_eq!(expired(40_000, 10).await, ids(&["m-a"]));
    fx.own(&fx.claim("m-a", "beta", 40_000)).await; // until +50 s
    assert_eq!(expired(40_000, 10).await, Vec::<String>::new());
    assert_eq!(expired(60_000, 10).await, ids(&["m-b", "m-a"]), "ordered by lease end");
}

async fn records_latencies_and_cooldowns_expire(fx: Fixture) {
    let short = Duration::from_millis(300);
    let mut pending = fx.claim("m-pending", "alpha", 0);
    pending.keep_for = short;
    pending.lease_for = Duration::from_millis(50);
    fx.own(&pending).await;
    let done = fx.own(&fx.claim("m-done", "alpha", 0)).await;
    let placed = Outcome::Placed(fx.assignment("m-done", "eu-west-1"));
    assert!(
        fx.store.complete("m-done", &done, &placed, short).await.unwrap(),
        "keep_for reset on completion"
    );
    fx.own(&fx.claim("m-kept", "alpha", 0)).await; // kept for an hour
    let latencies = BTreeMap::from([("eu-west-1".to_owned(), 20)]);
    fx.store.put_latencies("p-short", &latencies, short).await.unwrap();
    fx.store.put_latencies("p-long", &latencies, KEEP).await.unwrap();
    fx.store.cool_down("eu-west-1", short).await.unwrap();
    fx.store.cool_down("us-east-1", KEEP).await.unwrap();

    // Everything is there before it expires.
    assert!(fx.store.get("m-pending").await.unwrap().is_some());
    assert!(fx.store.get("m-done").await.unwrap().is_some());
    assert_eq!(
        fx.store.expired_pending(fx.at(60_000).into(), 10).await.unwrap(),
        ids(&["m-pending", "m-kept"])
    );
    let players = ids(&["p-short", "p-long"]);
    assert_eq!(fx.store.get_latencies(&players).await.unwrap().len(), 2);
    let locations = ids(&["eu-west-1", "us-east-1"]);
    assert_eq!(fx.store.cooling(&locations).await.unwrap().len(), 2);

    tokio::time::sleep(Duration::from_millis(800)).await;

    assert_eq!(fx.store.get("m-pending").await.unwrap(), None);
    assert_eq!(fx.store.get("m-done").await.unwrap(), None);
    assert!(fx.store.get("m-kept").await.unwrap().is_some(), "only the short-lived ones expire");
    assert_eq!(fx.store.expired_pending(fx.at(60_000).into(), 10).await.unwrap(), ids(&["m-kept"]));
    assert_eq!(fx.store.get_latencies(&players).await.unwrap().keys().collect::<Vec<_>>(), ["p-long"]);
    assert_eq!(fx.store.cooling(&locations).await.unwrap(), BTreeSet::from(["us-east-1".to_owned()]));

    // An expired record is gone for good: the next claim starts afresh.
    let ClaimOutcome::Owned { lease, taken_over, record } =
        fx.store.claim(&fx.claim_from("nats", "m-done", "beta", 1_000, "second")).await.unwrap()
    else {
        panic!("an expired record must be claimable afresh");
    };
    assert_eq!((lease.fence, taken_over), (1, false));
    assert_eq!(record.request, request("m-done", "second"));
}

async fn latencies_are_replaced_and_only_known_players_returned(fx: Fixture) {
    let first = BTreeMap::from([("eu-west-1".to_owned(), 20), ("us-east-1".to_owned(), 90)]);
    let second = BTreeMap::from([("ap-northeast-1".to_owned(), 150)]);
    fx.store.put_latencies("p1", &first, KEEP).await.unwrap();
    fx.store.put_latencies("p2", &first, KEEP).await.unwrap();
    fx.store.put_latencies("p1", &second, KEEP).await.unwrap();

    let found = fx.store.get_latencies(&ids(&["p1", "p2", "p3", "p1"])).await.unwrap();
    assert_eq!(found, BTreeMap::from([("p1".to_owned(), second.clone()), ("p2".to_owned(), first.clone())]));
    assert_eq!(fx.store.get_latencies(&[]).await.unwrap(), BTreeMap::new());
    assert_eq!(fx.store.get_latencies(&ids(&["p3"])).await.unwrap(), BTreeMap::new());

    // An empty report replaces the old one with nothing.
    fx.store.put_latencies("p2", &BTreeMap::new(), KEEP).await.unwrap();
    let found = fx.store.get_latencies(&ids(&["p1", "p2"])).await.unwrap();
    assert_eq!(found, BTreeMap::from([("p1".to_owned(), second)]));
}

async fn a_matched_tickets_status_is_not_overwritten_by_an_unmatched_one(fx: Fixture) {
    let status = |ticket: &str, state, match_id: Option<&str>| TicketStatus {
        ticket_id: ticket.to_owned(),
        status: state,
        match_id: match_id.map(str::to_owned),
        event: "test".to_owned(),
        reason: None,
        updated_at: fx.at(0).into(),
    };
    // Unmatched so far: written, and written again.
    let searching = status("t-1", TicketState::Searching, None);
    assert!(fx.store.put_unmatched_ticket_status(&searching, KEEP).await.unwrap());
    assert_eq!(fx.store.get_ticket_status("t-1").await.unwrap(), Some(searching.clone()));
    let timed_out = status("t-1", TicketState::TimedOut, None);
    assert!(fx.store.put_unmatched_ticket_status(&timed_out, KEEP).await.unwrap());
    assert_eq!(fx.store.get_ticket_status("t-1").await.unwrap(), Some(timed_out));

    // Matched: a late "searching" changes nothing.
    let placing = status("t-2", TicketState::Placing, Some("m-1"));
    fx.store.put_ticket_status(&placing, KEEP).await.unwrap();
    let late = status("t-2", TicketState::Searching, None);
    assert!(!fx.store.put_unmatched_ticket_status(&late, KEEP).await.unwrap());
    assert_eq!(fx.store.get_ticket_status("t-2").await.unwrap(), Some(placing));
}

async fn a_final_tickets_status_is_not_overwritten_by_an_unmatched_one(fx: Fixture) {
    let status = |ticket: &str, state, event: &str| TicketStatus {
        ticket_id: ticket.to_owned(),
        status: state,
        match_id: None,
        event: event.to_owned(),
        reason: None,
        updated_at: fx.at(0).into(),
    };
    let finals = [TicketState::TimedOut, TicketState::Cancelled, TicketState::Failed];
    for (n, end) in finals.into_iter().enumerate() {
        let ticket = format!("t-final-{n}");
        // Searching is not final: a newer "searching" replaces it, and so does the end.
        let searching = status(&ticket, TicketState::Searching, "MatchmakingSearching");
        assert!(fx.store.put_unmatched_ticket_status(&searching, KEEP).await.unwrap());
        assert!(fx.store.put_unmatched_ticket_status(&searching, KEEP).await.unwrap());
        let ended = status(&ticket, end, "end");
        assert!(fx.store.put_unmatched_ticket_status(&ended, KEEP).await.unwrap(), "{end:?}");

        // A "searching" retried after the end changes nothing.
        assert!(!fx.store.put_unmatched_ticket_status(&searching, KEEP).await.unwrap(), "{end:?}");
        assert_eq!(fx.store.get_ticket_status(&ticket).await.unwrap(), Some(ended.clone()));
        // Nor does another end: the first one stands.
        for other in finals.into_iter().filter(|other| *other != end) {
            let late_end = status(&ticket, other, "late end");
            assert!(!fx.store.put_unmatched_ticket_status(&late_end, KEEP).await.unwrap(), "{other:?}");
        }
        assert_eq!(fx.store.get_ticket_status(&ticket).await.unwrap(), Some(ended));
    }

    // An end arriving before the ticket's first "searching" stands too.
    let cancelled = status("t-early-end", TicketState::Cancelled, "MatchmakingCancelled");
    assert!(fx.store.put_unmatched_ticket_status(&cancelled, KEEP).await.unwrap());
    let searching = status("t-early-end", TicketState::Searching, "MatchmakingSearching");
    assert!(!fx.store.put_unmatched_ticket_status(&searching, KEEP).await.unwrap());
    assert_eq!(fx.store.get_ticket_status("t-early-end").await.unwrap(), Some(cancelled));
}

async fn cooling_lists_the_locations_cooling_down(fx: Fixture) {
    let all = ids(&["eu-west-1", "us-east-1", "ap-northeast-1"]);
    assert_eq!(fx.store.cooling(&all).await.unwrap(), BTreeSet::new());
    fx.store.cool_down("eu-west-1", Duration::from_secs(30)).await.unwrap();
    fx.store.cool_down("us-west-2", Duration::from_secs(30)).await.unwrap();
    let cooling = fx.store.cooling(&all).await.unwrap();
    assert_eq!(cooling, BTreeSet::from(["eu-west-1".to_owned()]), "only the asked-for locations");
    assert_eq!(fx.store.cooling(&[]).await.unwrap(), BTreeSet::new());
    // A zero cool-down ends one.
    fx.store.cool_down("eu-west-1", Duration::ZERO).await.unwrap();
    assert_eq!(fx.store.cooling(&all).await.unwrap(), BTreeSet::new());
}

/// The delivery log is what refuses a redelivered SNS message and a replayed Nakama signature,
/// at any instance: of simultaneous first deliveries of one key exactly one wins, and each door's
/// keys are apart from the other's.
async fn concurrent_first_deliveries_have_exactly_one_winner(fx: Fixture) {
    let key = "nakama-signed:{ab}:cd";
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = fx.store.clone();
            tokio::spawn(async move { store.first_delivery(key, Duration::from_secs(60)).await.unwrap() })
        })
        .collect();
    let claims: Vec<Delivery> = futures::future::try_join_all(tasks).await.unwrap();
    assert_eq!(claims.iter().filter(|claim| claim.is_first()).count(), 1, "{claims:?}");
    assert!(claims.iter().all(|claim| matches!(claim, Delivery::First | Delivery::InProgress)), "{claims:?}");
    assert_eq!(
        fx.store.first_delivery("sns:{ab}:cd", Duration::from_secs(60)).await.unwrap(),
        Delivery::First,
        "another door's key"
    );
    fx.store.forget_delivery(key).await.unwrap();
    assert_eq!(
        fx.store.first_delivery(key, Duration::from_secs(60)).await.unwrap(),
        Delivery::First,
        "forgotten: first again"
    );
    fx.store.keep_delivery(key, Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        fx.store.first_delivery(key, Duration::from_secs(60)).await.unwrap(),
        Delivery::Done,
        "kept: done"
    );
    assert_eq!(
        fx.store.first_delivery("sns:{ab}:cd", Duration::from_secs(60)).await.unwrap(),
        Delivery::InProgress,
        "still held"
    );
}

async fn concurrent_claims_have_exactly_one_owner(fx: Fixture) {
    let claims: Vec<Claim> = (0..50).map(|i| fx.claim("m-race", &format!("owner-{i}"), 0)).collect();
    let tasks: Vec<_> = claims
        .into_iter()
        .map(|claim| {
            let store = fx.store.clone();
            tokio::spawn(async move { store.claim(&claim).await.unwrap() })
        })
        .collect();
    let outcomes: Vec<ClaimOutcome> = futures::future::try_join_all(tasks).await.unwrap();
    let owners: Vec<&Lease> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            ClaimOutcome::Owned { lease, .. } => Some(lease),
            _ => None,
        })
        .collect();
    assert_eq!(owners.len(), 1, "exactly one owner among 50 simultaneous claims: {outcomes:?}");
    let winner = owners[0].clone();
    assert_eq!(winner.fence, 1);
    for outcome in &outcomes {
        match outcome {
            ClaimOutcome::Owned { .. } => {}
            ClaimOutcome::Held { owner, .. } => assert_eq!(owner, &winner.owner),
            other => panic!("unexpected {other:?}"),
        }
    }
    let PlacementState::Pending { owner, .. } = fx.store.get("m-race").await.unwrap().unwrap().state else {
        panic!("still pending");
    };
    assert_eq!(owner, winner.owner);

    // The same when 50 claimants race to take over an expired lease.
    let claims: Vec<Claim> = (0..50).map(|i| fx.claim("m-race", &format!("late-{i}"), 20_000)).collect();
    let tasks: Vec<_> = claims
        .into_iter()
        .map(|claim| {
            let store = fx.store.clone();
            tokio::spawn(async move { store.claim(&claim).await.unwrap() })
        })
        .collect();
    let outcomes = futures::future::try_join_all(tasks).await.unwrap();
    let taken: Vec<_> = outcomes.iter().filter(|o| matches!(o, ClaimOutcome::Owned { .. })).collect();
    assert_eq!(taken.len(), 1, "exactly one takeover: {outcomes:?}");
    let ClaimOutcome::Owned { lease, taken_over: true, .. } = taken[0] else { panic!("a takeover") };
    assert_eq!(lease.fence, 2);
}

async fn ids_with_braces_and_colons_are_kept_apart(fx: Fixture) {
    // Includes ids that look like another id's encoding, and ones that would break a naive hash tag.
    let match_ids = ["{m}", "%7Bm%7D", "m", "a}b{c:d", "}{", "x:{y}:z", "{}", ""];
    let mut leases = Vec::new();
    for (i, match_id) in match_ids.iter().enumerate() {
        let claim = fx.claim(match_id, &format!("owner-{i}"), 0);
        let ClaimOutcome::Owned { record, lease, taken_over: false } = fx.store.claim(&claim).await.unwrap()
        else {
            panic!("{match_id:?} must be a record of its own");
        };
        assert_eq!(record.match_id, *match_id);
        leases.push(lease);
    }
    for ((match_id, lease), i) in match_ids.iter().zip(&leases).zip(0..) {
        let assignment = fx.assignment(match_id, &format!("loc-{i}"));
        assert!(fx.store.complete(match_id, lease, &Outcome::Placed(assignment), KEEP).await.unwrap());
    }
    for (i, match_id) in match_ids.iter().enumerate() {
        let outcome = fx.store.claim(&fx.claim(match_id, "late", 1_000)).await.unwrap();
        assert_eq!(
            outcome,
            ClaimOutcome::Placed(fx.assignment(match_id, &format!("loc-{i}"))),
            "{match_id:?}"
        );
        let record = fx.store.get(match_id).await.unwrap().unwrap();
        assert_eq!(record.match_id, *match_id);
    }

    let players = ids(&["{p}", "%7Bp%7D", "p:}{", ""]);
    for (i, player) in players.iter().enumerate() {
        let latencies = BTreeMap::from([(format!("loc-{i}"), i as u32)]);
        fx.store.put_latencies(player, &latencies, KEEP).await.unwrap();
    }
    let found = fx.store.get_latencies(&players).await.unwrap();
    assert_eq!(found.len(), players.len());
    for (i, player) in players.iter().enumerate() {
        assert_eq!(found[player], BTreeMap::from([(format!("loc-{i}"), i as u32)]));
    }

    fx.store.cool_down("{eu}:1", Duration::from_secs(30)).await.unwrap();
    let cooling = fx.store.cooling(&ids(&["{eu}:1", "%7Beu%7D:1", "eu:1"])).await.unwrap();
    assert_eq!(cooling, BTreeSet::from(["{eu}:1".to_owned()]));
}

// ---------------------------------------------------------------------------------------------
// Redis only

/// Every key the store wrote, with its remaining time to live (ms).
/// A plain connection to a test Redis, to look at what the store wrote.
async fn raw_connection(url: &str) -> ::redis::aio::MultiplexedConnection {
    ::redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap()
}

/// Waits (2 s at most) for the pending index to empty: final outcomes' entries are removed off the
/// answer's path, in batches, so they go shortly after `complete` returns.
async fn wait_for_empty_pending_index(url: &str, what: &str) {
    let mut connection = raw_connection(url).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left: i64 = ::redis::cmd("ZCARD")
            .arg("it-store:{matches}:pending")
            .query_async(&mut connection)
            .await
            .unwrap();
        if left == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {left} entries still indexed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn keys_and_ttls(url: &str) -> BTreeMap<String, i64> {
    let mut connection = raw_connection(url).await;
    let keys: Vec<String> = ::redis::cmd("KEYS").arg("*").query_async(&mut connection).await.unwrap();
    let mut ttls = BTreeMap::new();
    for key in keys {
        let ttl: i64 = ::redis::cmd("PTTL").arg(&key).query_async(&mut connection).await.unwrap();
        ttls.insert(key, ttl);
    }
    ttls
}

/// Redis Cluster's hash tag of `key`: the text between the first `{` and the first `}` after it,
/// if that is non-empty.
fn cluster_hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')? + open + 1;
    (close > open + 1).then(|| &key[open + 1..close])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keys_are_prefixed_tagged_and_all_expire() {
    let fx = Fixture::redis().await;
    let url = fx.redis.as_ref().unwrap().url();
    // One of everything, with awkward ids; one pending record stays in the pending index.
    fx.own(&fx.claim("a}b{c:d", "alpha", 0)).await;
    let lease = fx.own(&fx.claim("{m}", "alpha", 0)).await;
    let placed = Outcome::Placed(fx.assignment("{m}", "eu-west-1"));
    assert!(fx.store.complete("{m}", &lease, &placed, KEEP).await.unwrap());
    fx.own(&fx.claim("", "alpha", 0)).await;
    let latencies = BTreeMap::from([("eu-west-1".to_owned(), 20)]);
    fx.store.put_latencies("p:{1}", &latencies, KEEP).await.unwrap();
    fx.store.cool_down("eu}west", Duration::from_secs(30)).await.unwrap();
    fx.owe("placed", "{m}", 0).await;

    let ttls = keys_and_ttls(&url).await;
    let keys: BTreeSet<&str> = ttls.keys().map(String::as_str).collect();
    let expected = BTreeSet::from([
        "it-store:match:{a%7Db%7Bc:d}",
        "it-store:match:{%7Bm%7D}",
        "it-store:match:{%}",
        "it-store:{matches}:pending",
        "it-store:{matches}:announce",
        "it-store:latency:{p:%7B1%7D}",
        "it-store:cooldown:{eu%7Dwest}",
    ]);
    assert_eq!(keys, expected);
    for (key, ttl) in &ttls {
        assert!(key.starts_with("it-store:"), "{key} lacks the prefix");
        let tag = cluster_hash_tag(key).unwrap_or_else(|| panic!("{key} has no hash tag"));
        assert_eq!(key.matches('{').count() + key.matches('}').count(), 2, "{key}: exactly one tag");
        assert!(key.ends_with(&format!("{{{tag}}}")) || tag == "matches", "{key}: the id is the tag");
        assert!(*ttl > 0, "{key} has no TTL ({ttl})");
    }
    // The pending index lives at least as long as the records it lists.
    let index_ttl = ttls["it-store:{matches}:pending"];
    assert!(index_ttl >= ttls["it-store:match:{a%7Db%7Bc:d}"] - 1_000, "{ttls:?}");
    assert!(index_ttl > KEEP.as_millis() as i64 - 60_000, "{ttls:?}");
    assert!(ttls["it-store:{matches}:announce"] > KEEP.as_millis() as i64 - 60_000, "{ttls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_pending_index_follows_the_records() {
    let fx = Fixture::redis().await;
    let url = fx.redis.as_ref().unwrap().url();
    let mut connection = raw_connection(&url).await;
    let index = "it-store:{matches}:pending";
    let mut members = async || -> Vec<(String, i64)> {
        ::redis::cmd("ZRANGE")
            .arg(index)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut connection)
            .await
            .unwrap()
    };
    let t0 = fx.t0.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as i64;

    let lease = fx.own(&fx.claim("m-1", "alpha", 0)).await;
    assert_eq!(members().await, [("m-1".to_owned(), t0 + 10_000)], "claimed: indexed at lease_until");
    assert!(fx.store.renew("m-1", &lease, fx.at(5_000).into(), LEASE).await.unwrap());
    assert_eq!(members().await, [("m-1".to_owned(), t0 + 15_000)], "renewed: moved");
    let held = fx.store.claim(&fx.claim("m-1", "beta", 1_000)).await.unwrap();
    assert!(matches!(held, ClaimOutcome::Held { .. }));
    assert_eq!(members().await, [("m-1".to_owned(), t0 + 15_000)], "a Held claim leaves the holder's lease");
    let placed = Outcome::Placed(fx.assignment("m-1", "eu-west-1"));
    assert!(fx.store.complete("m-1", &lease, &placed, KEEP).await.unwrap());
    wait_for_empty_pending_index(&url, "completed").await;
    let duplicate = fx.store.claim(&fx.claim("m-1", "beta", 1_000)).await.unwrap();
    assert!(matches!(duplicate, ClaimOutcome::Placed(_)));
    assert_eq!(members().await, [], "a duplicate of a placed match leaves no entry behind");

    // A retryable failure keeps its entry (another instance may take the match over at once and
    // move it to its own lease); the takeover moves it.
    let lease = fx.own(&fx.claim("m-3", "alpha", 0)).await;
    let failure = Outcome::Failed(Failure::new("m-3", FailureCode::NoCapacity, "full"));
    assert!(fx.store.complete("m-3", &lease, &failure, KEEP).await.unwrap());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(members().await, [("m-3".to_owned(), t0 + 10_000)], "retryable failure: entry kept");
    let taken = fx.store.claim(&fx.claim("m-3", "beta", 1_000)).await.unwrap();
    assert!(matches!(taken, ClaimOutcome::Owned { taken_over: true, .. }));
    assert_eq!(members().await, [("m-3".to_owned(), t0 + 11_000)], "taken over: at the new lease");
    let ClaimOutcome::Owned { lease, .. } = taken else { unreachable!() };
    let placed = Outcome::Placed(fx.assignment("m-3", "eu-west-1"));
    assert!(fx.store.complete("m-3", &lease, &placed, KEEP).await.unwrap());
    wait_for_empty_pending_index(&url, "placed after the takeover").await;

    // An entry whose record expired is dropped by the next scan.
    let mut short = fx.claim("m-2", "alpha", 0);
    short.keep_for = Duration::from_millis(300);
    fx.own(&short).await;
    assert_eq!(members().await.len(), 1);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(fx.store.expired_pending(fx.at(60_000).into(), 10).await.unwrap(), Vec::<String>::new());
    assert_eq!(members().await, [], "stale entry removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_completions_close_together_share_one_index_removal() {
    let fx = Fixture::redis().await;
    let mut connection = raw_connection(&fx.redis.as_ref().unwrap().url()).await;
    // One completion first, so the scripts are loaded before counting.
    fx.place("m-warm-up", KEEP).await;
    let ids: Vec<String> = (0..50).map(|i| format!("m-{i}")).collect();
    let mut leases = Vec::new();
    for id in &ids {
        leases.push(fx.own(&fx.claim(id, "alpha", 0)).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let () = ::redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut connection).await.unwrap();
    let store = &fx.store;
    let completions = ids.iter().zip(&leases).map(|(id, lease)| {
        let placed = Outcome::Placed(fx.assignment(id, "eu-west-1"));
        async move { store.complete(id, lease, &placed, KEEP).await }
    });
    let written = futures::future::try_join_all(completions).await.unwrap();
    assert!(written.iter().all(|&written| written));

    wait_for_empty_pending_index(&fx.redis.as_ref().unwrap().url(), "50 completed matches").await;
    let stats: String = ::redis::cmd("INFO").arg("commandstats").query_async(&mut connection).await.unwrap();
    let removals: u64 = stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_zrem:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or_else(|| panic!("no ZREM in {stats}"));
    assert!(removals < 10, "50 completions took {removals} ZREM round trips");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_late_index_removal_never_takes_the_entry_of_a_newer_claim() {
    let fx = Fixture::redis().await;
    let mut connection = raw_connection(&fx.redis.as_ref().unwrap().url()).await;
    let index = "it-store:{matches}:pending";
    // The record lives 2 ms, less than the removal waits for others to batch with.
    fx.place("m-1", Duration::from_millis(2)).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = fx.store.claim(&fx.claim("m-1", "beta", 1_000)).await.unwrap();
    assert!(matches!(again, ClaimOutcome::Owned { taken_over: false, .. }), "{again:?}");

    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = fx.t0.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as i64;
    let members: Vec<(String, i64)> = ::redis::cmd("ZRANGE")
        .arg(index)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(members, [("m-1".to_owned(), t0 + 11_000)], "the new claim's entry is gone");
}

/// Claims set the pending index's expiry only about once a minute per process (the adds in
/// between skip the `PEXPIRE`s). Whatever happens to the index meanwhile, it must never be left to
/// expire before the records it lists: a vanished index comes back without an expiry (never a
/// shorter one), and a process that has not refreshed it yet sets it in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_pending_index_never_expires_before_its_records() {
    let fx = Fixture::redis().await;
    let url = fx.redis.as_ref().unwrap().url();
    let mut connection = raw_connection(&url).await;
    let index = "it-store:{matches}:pending";
    let keep_ms = KEEP.as_millis() as i64;
    let index_ttl = |mut connection: ::redis::aio::MultiplexedConnection| async move {
        ::redis::cmd("PTTL").arg(index).query_async::<i64>(&mut connection).await.unwrap()
    };

    fx.own(&fx.claim("m-1", "alpha", 0)).await;
    let first = index_ttl(connection.clone()).await;
    assert!(first >= keep_ms, "the first claim sets the index's expiry in full: {first} ms");

    // The index vanishes (its last entry removed, an operator's DEL) before this process's next
    // refresh is due: the next claim's entry must not be left in an index that expires early.
    let () = ::redis::cmd("DEL").arg(index).query_async(&mut connection).await.unwrap();
    fx.own(&fx.claim("m-2", "alpha", 0)).await;
    let recreated = index_ttl(connection.clone()).await;
    assert!(recreated == -1 || recreated >= keep_ms - 1_000, "recreated index expires early: {recreated} ms");
    let score: Option<i64> =
        ::redis::cmd("ZSCORE").arg(index).arg("m-2").query_async(&mut connection).await.unwrap();
    assert!(score.is_some(), "the claim after the index vanished is indexed");

    // Another process (no memory of earlier refreshes) sets the expiry again.
    let other = RedisStore::connect(&url, PREFIX).await.expect("connect to redis");
    let claim = fx.claim("m-3", "alpha", 0);
    assert!(matches!(other.claim(&claim).await.unwrap(), ClaimOutcome::Owned { .. }));
    let refreshed = index_ttl(connection.clone()).await;
    assert!(refreshed >= keep_ms, "a fresh process sets the index's expiry: {refreshed} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_scripts_lost_by_the_server_are_loaded_again_and_the_index_still_written() {
    let fx = Fixture::redis().await;
    let mut connection = raw_connection(&fx.redis.as_ref().unwrap().url()).await;
    let index = "it-store:{matches}:pending";
    fx.own(&fx.claim("m-1", "alpha", 0)).await;

    // What a Redis restart or failover does to the scripts, without losing the data.
    let () = ::redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut connection).await.unwrap();
    let lease = fx.own(&fx.claim("m-2", "alpha", 0)).await;
    let t0 = fx.t0.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as i64;
    let score: Option<i64> =
        ::redis::cmd("ZSCORE").arg(index).arg("m-2").query_async(&mut connection).await.unwrap();
    assert_eq!(score, Some(t0 + 10_000), "the claim after the flush is indexed at its lease");
    let ttl: i64 = ::redis::cmd("PTTL").arg(index).query_async(&mut connection).await.unwrap();
    assert!(ttl > KEEP.as_millis() as i64 - 60_000, "the index still expires, late enough: {ttl}");

    let () = ::redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut connection).await.unwrap();
    let placed = Outcome::Placed(fx.assignment("m-2", "eu-west-1"));
    assert!(fx.store.complete("m-2", &lease, &placed, KEEP).await.unwrap());
    let duplicate = fx.store.claim(&fx.claim("m-2", "beta", 1_000)).await.unwrap();
    assert!(matches!(duplicate, ClaimOutcome::Placed(_)), "{duplicate:?}");
}

/// Redis lost its scripts (a restart, a failover) between a claim and its completion: the outcome
/// sent with the seat record in one pipeline is still written, by the usual call that loads the
/// script again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_finish_after_the_scripts_were_lost_still_writes_the_outcome() {
    let fx = Fixture::redis().await;
    let mut connection = raw_connection(&fx.redis.as_ref().unwrap().url()).await;
    let lease = fx.own(&fx.claim("m-1", "alpha", 0)).await;
    let placed = Outcome::Placed(fx.assignment("m-1", "eu-west-1"));
    // Loaded once, then lost.
    fx.place("m-0", KEEP).await;
    let () = ::redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut connection).await.unwrap();
    let new = fx.new_session("m-1");
    let (written, created) = fx.finish("m-1", &lease, &placed, Some(&new)).await;
    assert!(written.unwrap(), "written after loading the script again");
    assert!(created.unwrap().unwrap().is_ok());
    assert!(matches!(fx.store.get("m-1").await.unwrap().unwrap().state, PlacementState::Placed { .. }));
}

/// The pending index cannot be written (here: a key of the wrong type) while the claim script
/// runs: the claim must not answer "owned" for a record nothing indexes (a crash of its owner would
/// go unrecovered); once the index works again the record is indexed at its holder's lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_claim_whose_index_write_fails_is_not_owned_silently() {
    let fx = Fixture::redis().await;
    let mut connection = raw_connection(&fx.redis.as_ref().unwrap().url()).await;
    let index = "it-store:{matches}:pending";
    fx.own(&fx.claim("m-0", "alpha", 0)).await; // the claim script is loaded: it runs below
    let () =
        ::redis::cmd("SET").arg(index).arg("not a sorted set").query_async(&mut connection).await.unwrap();

    let error = fx.store.claim(&fx.claim("m-1", "alpha", 0)).await.unwrap_err();
    assert!(!error.transient, "a wrong-type index is no transient failure: {error}");

    let () = ::redis::cmd("DEL").arg(index).query_async(&mut connection).await.unwrap();
    let held = fx.store.claim(&fx.claim("m-1", "beta", 1_000)).await.unwrap();
    assert!(matches!(held, ClaimOutcome::Held { .. }), "{held:?}");
    let t0 = fx.t0.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as i64;
    let score: Option<i64> =
        ::redis::cmd("ZSCORE").arg(index).arg("m-1").query_async(&mut connection).await.unwrap();
    assert_eq!(score, Some(t0 + 10_000), "indexed at the holder's lease");
}

/// Redis at its memory limit (`noeviction`, the default policy) refuses writes until keys expire
/// or the limit is raised: a failure that passes, as a dead Redis is, not one that answers
/// "a retry cannot help" and gives up owed work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_out_of_memory_is_a_transient_failure() {
    let fx = Fixture::redis().await;
    fx.own(&fx.claim("m-0", "alpha", 0)).await; // the claim script is loaded: EVALSHA runs below
    let mut connection = raw_connection(&fx.redis.as_ref().unwrap().url()).await;
    let () = ::redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory", "1"][..])
        .query_async(&mut connection)
        .await
        .unwrap();

    let errors: Vec<StoreError> = vec![
        fx.store.claim(&fx.claim("m-1", "alpha", 0)).await.unwrap_err(),
        fx.store
            .put_latencies("p1", &BTreeMap::from([("eu-west-1".to_owned(), 20)]), KEEP)
            .await
            .unwrap_err(),
        fx.store.first_delivery("sns:m-1", KEEP).await.unwrap_err(),
        fx.store.cool_down("eu-west-1", KEEP).await.unwrap_err(),
    ];
    for error in &errors {
        assert!(error.transient, "out of memory passes: {error}");
        assert!(error.to_string().contains("OOM"), "{error}");
    }

    let () = ::redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory", "0"][..])
        .query_async(&mut connection)
        .await
        .unwrap();
    fx.own(&fx.claim("m-1", "alpha", 0)).await;
    assert_eq!(fx.store.first_delivery("sns:m-1", KEEP).await.unwrap(), Delivery::First);
}

/// Retries `call` until it succeeds or `within` passes.
async fn eventually<T, F: AsyncFnMut() -> Result<T, StoreError>>(within: Duration, mut call: F) -> T {
    let deadline = Instant::now() + within;
    loop {
        match call().await {
            Ok(value) => return value,
            Err(error) if Instant::now() < deadline => {
                assert!(error.transient, "only transient errors while Redis comes back: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("still failing after {within:?}: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_fast_and_transiently_then_recovers_after_restart() {
    let mut fx = Fixture::redis().await;
    fx.own(&fx.claim("m-1", "alpha", 0)).await;
    fx.store.ping().await.unwrap();

    fx.redis.as_mut().unwrap().stop();
    // Several rounds: the first call notices the dropped connection, later ones fail to reconnect.
    for round in 0..3 {
        let started = Instant::now();
        let errors: Vec<StoreError> = vec![
            fx.store.claim(&fx.claim("m-2", "alpha", 0)).await.unwrap_err(),
            fx.store.get("m-1").await.unwrap_err(),
            fx.store.expired_pending(fx.at(0).into(), 10).await.unwrap_err(),
            fx.store.cooling(&ids(&["eu-west-1"])).await.unwrap_err(),
            fx.store.put_latencies("p1", &BTreeMap::new(), KEEP).await.unwrap_err(),
            fx.store.ping().await.unwrap_err(),
        ];
        let elapsed = started.elapsed();
        for error in &errors {
            assert!(error.transient, "round {round}: a dead Redis is a transient failure: {error}");
        }
        assert!(elapsed < Duration::from_secs(15), "round {round}: six calls took {elapsed:?}");
        // Each single call is bounded too.
        let started = Instant::now();
        assert!(fx.store.get("m-1").await.is_err());
        assert!(started.elapsed() < Duration::from_millis(2_500), "one call took {:?}", started.elapsed());
    }

    fx.redis.as_mut().unwrap().restart();
    // The same store, not rebuilt, works again (its scripts are loaded again too): Redis kept nothing,
    // so the match is claimed afresh.
    let store = fx.store.clone();
    let claim = fx.claim("m-1", "beta", 1_000);
    let outcome = eventually(Duration::from_secs(10), async || store.claim(&claim).await).await;
    let ClaimOutcome::Owned { lease, taken_over: false, .. } = outcome else {
        panic!("a restarted (empty) Redis has no record: {outcome:?}");
    };
    assert!(fx.store.renew("m-1", &lease, fx.at(2_000).into(), LEASE).await.unwrap());
    let placed = Outcome::Placed(fx.assignment("m-1", "eu-west-1"));
    assert!(fx.store.complete("m-1", &lease, &placed, KEEP).await.unwrap());
    fx.store.ping().await.unwrap();
}

/// A server without `PEXPIRE … NX` (Redis < 7, or a user an ACL denies it) is refused when the
/// store connects, with an error that says what is needed, not on the first placement.
#[tokio::test]
async fn redis_without_pexpire_options_is_refused_at_connect() {
    let server = RedisServer::start();
    let mut connection = raw_connection(&server.url()).await;
    let () = ::redis::cmd("ACL")
        .arg(&["SETUSER", "limited", "on", ">secret", "~*", "+@all", "-pexpire"][..])
        .query_async(&mut connection)
        .await
        .unwrap();
    let limited = server.url().replacen("redis://", "redis://limited:secret@", 1);
    let error = RedisStore::connect(&limited, PREFIX).await.unwrap_err();
    assert!(!error.transient, "{error}");
    assert!(error.to_string().contains("Redis 7.0 or newer"), "{error}");
    RedisStore::connect(&server.url(), PREFIX).await.expect("the default user may");
}

#[tokio::test]
async fn redis_connect_refuses_bad_prefixes_and_unreachable_servers() {
    let server = RedisServer::start();
    for prefix in ["", "a{b", "a}b"] {
        let error = RedisStore::connect(&server.url(), prefix).await.unwrap_err();
        assert!(!error.transient, "{prefix:?}: {error}");
    }
    let error = RedisStore::connect("not a url", PREFIX).await.unwrap_err();
    assert!(!error.transient, "{error}");

    let mut stopped = RedisServer::start();
    let url = stopped.url();
    stopped.stop();
    let started = Instant::now();
    let error = RedisStore::connect(&url, PREFIX).await.unwrap_err();
    assert!(error.transient, "{error}");
    assert!(started.elapsed() < Duration::from_secs(5), "connect took {:?}", started.elapsed());

    // The enum's constructors: an empty URL is the in-memory store.
    let memory = StateStore::from_url("", PREFIX).await.unwrap();
    assert_eq!(memory.kind(), "memory");
    memory.ping().await.unwrap();
    let redis = StateStore::from_url(&server.url(), PREFIX).await.unwrap();
    assert_eq!(redis.kind(), "redis");
    redis.ping().await.unwrap();
}

//! The announcement outbox through the engine itself, with a real Redis and the emulator over
//! HTTP, and a sink this test controls (up, down, or refusing for good). The engine's clock can be
//! moved on, so owed entries come due without waiting out the announce window.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adapters::config::Secret;
use adapters::gameye::{GameyeClient, GameyeClientConfig, GameyeSessionApi};
use adapters::store::{RedisStore, StateStore};
use bridge::placement::{Engine, EngineSettings, OwedAnnouncements, Progress, SeatSettings};
use bridge::ports::{AnnouncementStore, Clock, DeliveryError, Outcome, OutcomeSink};
use bridge::region::{LocationAliases, RegionPolicy};
use bridge::{FailureCode, ValidatedMatch};
use gameye_emulator::{DEFAULT_TOKEN, RunningEmulator};
use serde_json::json;
use time::OffsetDateTime;

use crate::harness::RedisServer;
use crate::stack::{set_faults, world};

const SOURCE: &str = "http";

/// Wall-clock time moved on by `offset` (ms), and tokio's timers.
#[derive(Clone, Default)]
struct MovableClock(Arc<AtomicI64>);

impl MovableClock {
    fn move_on(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for MovableClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + time::Duration::milliseconds(self.0.load(Ordering::SeqCst))
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

const UP: u8 = 0;
const DOWN: u8 = 1;
const REFUSING: u8 = 2;
/// Fails the next delivery transiently after 300 ms, then is up.
const SLOW_TO_FAIL_ONCE: u8 = 3;

/// A sink that takes outcomes when up, fails transiently when down, and for good when refusing.
#[derive(Default)]
struct TestSink {
    state: AtomicU8,
    /// Every attempt, and whether it was taken.
    attempts: Mutex<Vec<(Outcome, bool)>>,
}

impl TestSink {
    fn set(&self, state: u8) {
        self.state.store(state, Ordering::SeqCst);
    }

    fn taken(&self) -> Vec<Outcome> {
        self.attempts.lock().unwrap().iter().filter(|(_, taken)| *taken).map(|(o, _)| o.clone()).collect()
    }

    fn attempts(&self) -> usize {
        self.attempts.lock().unwrap().len()
    }
}

impl OutcomeSink for TestSink {
    fn name(&self) -> &'static str {
        "test"
    }

    fn wants(&self, source: &str) -> bool {
        source == SOURCE
    }

    fn deliver<'a>(
        &'a self,
        _source: &'a str,
        outcome: &'a Outcome,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>> {
        let state = self.state.load(Ordering::SeqCst);
        if state == SLOW_TO_FAIL_ONCE {
            self.state.store(UP, Ordering::SeqCst);
        }
        self.attempts.lock().unwrap().push((outcome.clone(), state == UP));
        Box::pin(async move {
            match state {
                UP => Ok(()),
                SLOW_TO_FAIL_ONCE => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Err(DeliveryError { sink: "test".into(), message: "timed out".into(), permanent: false })
                }
                state => Err(DeliveryError {
                    sink: "test".into(),
                    message: "not now".into(),
                    permanent: state == REFUSING,
                }),
            }
        })
    }
}

struct Fixture {
    engine: Engine<GameyeSessionApi, StateStore, MovableClock>,
    clock: MovableClock,
    sink: Arc<TestSink>,
    emulator: RunningEmulator,
    _redis: RedisServer,
}

impl Fixture {
    async fn start() -> Self {
        let emulator = gameye_emulator::start(world(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let redis = RedisServer::start();
        let config = GameyeClientConfig {
            base_url: emulator.url(),
            token: Secret::new(DEFAULT_TOKEN),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2),
            pool_max_idle: 8,
        };
        let api = GameyeSessionApi::new(GameyeClient::new(&config, None).unwrap(), Duration::from_secs(2));
        let store = StateStore::Redis(RedisStore::connect(&redis.url(), "it-outbox").await.unwrap());
        let settings = EngineSettings {
            policy: RegionPolicy::default(),
            aliases: LocationAliases::new(BTreeMap::new()),
            default_image: "demo-game".into(),
            default_version: None,
            default_ttl: Duration::from_secs(1800),
            cooldown: Duration::from_secs(30),
            deadline: Duration::from_millis(500),
            latency_keep_for: Duration::from_secs(600),
            keep_for: Duration::from_secs(3600),
            owner: "it-outbox".into(),
            deployment: "it-outbox".into(),
            retry_min: Duration::from_millis(50),
            retry_max: Duration::from_millis(200),
            seats: SeatSettings::default(),
        };
        let clock = MovableClock::default();
        let sink = Arc::new(TestSink::default());
        let engine = Engine::new(api, store, clock.clone(), settings).with_sink(sink.clone());
        Self { engine, clock, sink, emulator, _redis: redis }
    }

    async fn place(&self, match_id: &str, ttl_s: u64) -> Outcome {
        let request: ValidatedMatch = bridge::parse_match_request(
            json!({"match_id": match_id, "players": [{"id": "p1"}], "ttl": ttl_s}).to_string().as_bytes(),
        )
        .unwrap();
        match self.engine.place(SOURCE, request).await.unwrap() {
            Progress::Done(outcome) => outcome,
            pending => panic!("{match_id}: {pending:?}"),
        }
    }

    /// The door's part: announce what it placed (and what it failed).
    async fn place_and_announce(&self, match_id: &str) -> (Outcome, Result<(), DeliveryError>) {
        let outcome = self.place(match_id, 1800).await;
        let announced = self.engine.announce(SOURCE, &outcome).await;
        (outcome, announced)
    }

    async fn owed(&self) -> u64 {
        self.engine.store().owed_announcements().await.unwrap()
    }

    /// One outbox round after the owed entries came due.
    async fn outbox_round_later(&self, by: Duration) -> OwedAnnouncements {
        self.clock.move_on(by);
        self.engine.announce_owed(100).await.unwrap()
    }
}

fn is_placed(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Placed(_))
}

/// A retryable failure the sink did not take, then the same match taken over and placed, which
/// the sink did not take either. The failure's late announcement (here the door's, as the outbox's
/// could be) must not clear what is owed for the placement: the outbox still announces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_announcement_of_a_failure_leaves_the_placement_since_owed() {
    let fx = Fixture::start().await;
    fx.sink.set(DOWN);
    set_faults(&fx.emulator, json!([{"operation": "session-run", "status": 503, "probability": 1.0}])).await;
    let (failed, announced) = fx.place_and_announce("m-retried").await;
    let Outcome::Failed(failure) = &failed else { panic!("{failed:?}") };
    assert!(failure.error.retryable && failure.error.code == FailureCode::UpstreamUnavailable, "{failure:?}");
    assert!(announced.is_err());
    set_faults(&fx.emulator, json!([])).await;
    let (placed, announced) = fx.place_and_announce("m-retried").await;
    assert!(is_placed(&placed) && announced.is_err(), "{placed:?}");
    assert_eq!(fx.owed().await, 2, "the failure and the placement are both owed");

    fx.sink.set(UP);
    fx.engine.announce(SOURCE, &failed).await.unwrap();
    assert_eq!(fx.owed().await, 1, "only the failure's entry is cleared");
    let round = fx.outbox_round_later(Duration::from_secs(10)).await;
    assert_eq!((round.delivered, round.failed), (1, 0), "{round:?}");
    assert_eq!(fx.sink.taken(), [failed, placed], "the placement is announced last");
    assert_eq!(fx.owed().await, 0);
}

/// A retryable failure's announcement fails once and is retried; meanwhile the match is sent
/// again and placed, and the placement announced. The retry must not deliver the failure after
/// the placement: listeners would end on "failed" for a match that has a server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_of_an_outcome_replaced_since_is_not_delivered() {
    let fx = Fixture::start().await;
    set_faults(&fx.emulator, json!([{"operation": "session-run", "status": 503, "probability": 1.0}])).await;
    let failed = fx.place("m-superseded", 1800).await;
    assert!(matches!(&failed, Outcome::Failed(f) if f.error.retryable), "{failed:?}");
    fx.sink.set(SLOW_TO_FAIL_ONCE);
    let announcing_failure = fx.engine.announce(SOURCE, &failed);
    let placing_again = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        set_faults(&fx.emulator, json!([])).await;
        let (placed, announced) = fx.place_and_announce("m-superseded").await;
        announced.unwrap();
        placed
    };
    let (announced, placed) = tokio::join!(announcing_failure, placing_again);
    assert!(is_placed(&placed), "{placed:?}");
    announced.unwrap();
    assert_eq!(fx.sink.taken(), [placed], "the failure is not delivered after the placement");
    assert_eq!(fx.owed().await, 0);
}

/// The outbox finds both entries of a match that failed and was placed since: it announces the
/// recorded outcome once and drops the stale entry without announcing the old failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_announces_only_the_recorded_outcome() {
    let fx = Fixture::start().await;
    fx.sink.set(DOWN);
    set_faults(&fx.emulator, json!([{"operation": "session-run", "status": 503, "probability": 1.0}])).await;
    let _ = fx.place_and_announce("m-twice").await;
    set_faults(&fx.emulator, json!([])).await;
    let (placed, _) = fx.place_and_announce("m-twice").await;
    fx.sink.set(UP);
    let round = fx.outbox_round_later(Duration::from_secs(10)).await;
    assert_eq!((round.claimed, round.delivered), (2, 1), "{round:?}");
    assert_eq!(fx.sink.taken(), [placed]);
    assert_eq!(fx.owed().await, 0);
}

/// A sink that refuses an outcome for good (bad credentials, a 4xx) is not asked again and again
/// for the record's whole life: the outbox tries once and gives up, loudly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_a_sink_refuses_for_good_is_given_up() {
    let fx = Fixture::start().await;
    fx.sink.set(REFUSING);
    let (_, announced) = fx.place_and_announce("m-refused").await;
    assert!(announced.unwrap_err().permanent);
    assert_eq!(fx.owed().await, 1);
    let round = fx.outbox_round_later(Duration::from_secs(10)).await;
    assert_eq!((round.given_up, round.failed), (1, 0), "{round:?}");
    assert_eq!(fx.owed().await, 0);
    assert_eq!(fx.sink.attempts(), 2, "the door's attempt and the outbox's");
}

/// A transient failure is tried again later, not at once; an Assignment older than its session's
/// TTL is not announced at all (its server is gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_retries_wait_and_outcomes_older_than_their_session_are_given_up() {
    let fx = Fixture::start().await;
    fx.sink.set(DOWN);
    let placed = fx.place("m-short", 60).await;
    assert!(fx.engine.announce(SOURCE, &placed).await.is_err());
    let round = fx.outbox_round_later(Duration::from_secs(10)).await;
    assert_eq!(round.failed, 1, "{round:?}");
    let attempts = fx.sink.attempts();
    let round = fx.engine.announce_owed(100).await.unwrap();
    assert_eq!(round.claimed, 0, "deferred, not due again at once");
    fx.sink.set(UP);
    let round = fx.outbox_round_later(Duration::from_secs(120)).await;
    assert_eq!(round.given_up, 1, "{round:?}");
    assert_eq!(fx.sink.attempts(), attempts, "not announced once its session's TTL passed");
    assert!(fx.sink.taken().is_empty());
    assert_eq!(fx.owed().await, 0);
}

//! The NATS door (DESIGN §1): matches in on JetStream (`<prefix>.match.found`, durable, shared by
//! every instance) and core-NATS request/reply (`<prefix>.match.request`); outcomes out on
//! `<prefix>.match.assigned|failed.<match_id>` (the [`NatsOutcomeSink`], for every door's
//! placements); player latencies in on `<prefix>.player.latency`; seats: joins and leaves in on
//! JetStream (`<prefix>.session.players.join|leave`), backfill by request/reply
//! (`<prefix>.backfill.request`), in `seats.rs`.
//!
//! Knows only the core (`bridge`) and `crate::config`; `main` wires it to the engine.

mod connect;
mod consumer;
mod latency;
mod listen;
mod metrics;
mod pull;
mod responder;
mod seats;
mod sink;
mod streams;
mod subjects;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::connection::State;
use bridge::placement::{PlacementService, SeatService};
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use metrics::NatsMetrics;
pub use sink::{
    DeadLetter, MATCH_ID_HEADER, NatsOutcomeSink, SESSION_ID_HEADER, SOURCE_HEADER, STATUS_HEADER,
};
pub use subjects::Subjects;

use crate::config::NatsSettings;

/// The source name NATS placements carry (it is part of the session id).
pub const SOURCE: &str = "nats";

/// Everything that can go wrong talking to NATS.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("connecting to NATS: {0}")]
    Connect(String),
    #[error("JetStream stream `{stream}`: {message}")]
    Stream { stream: String, message: String },
    #[error("JetStream consumer `{consumer}`: {message}")]
    Consumer { consumer: String, message: String },
    #[error("publishing to `{subject}`: {message}")]
    Publish { subject: String, message: String },
}

/// A connected (or connecting: it retries forever) NATS door, not yet taking matches.
pub struct NatsDoor {
    client: async_nats::Client,
    settings: NatsSettings,
    subjects: Subjects,
    metrics: Arc<NatsMetrics>,
    /// Connections made so far (see `connect::options`).
    connections: tokio::sync::watch::Receiver<u64>,
    sink: Arc<NatsOutcomeSink>,
    consumer_ready: Arc<AtomicBool>,
    seats_ready: Arc<AtomicBool>,
}

impl NatsDoor {
    /// Starts connecting to `nats.url`; returns at once even if no server answers yet (the client
    /// keeps trying, and `/readyz` reports it).
    pub async fn connect(settings: &NatsSettings, registry: &mut Registry) -> Result<Self, NatsError> {
        let metrics = NatsMetrics::register(registry);
        let servers = connect::server_list(settings.url.expose());
        if servers.is_empty() {
            return Err(NatsError::Connect("nats.url names no server".to_owned()));
        }
        let (connections_made, connections) = tokio::sync::watch::channel(0);
        let client = connect::options(settings, metrics.clone(), connections_made)
            .await?
            .connect(servers.as_slice())
            .await
            .map_err(|e| NatsError::Connect(e.to_string()))?;
        let subjects = Subjects::new(settings.prefix.clone());
        let results =
            (!settings.results_stream.is_empty()).then(|| async_nats::jetstream::new(client.clone()));
        let sink = Arc::new(NatsOutcomeSink::new(
            client.clone(),
            results,
            subjects.clone(),
            &settings.announce_sources,
            metrics.clone(),
        ));
        Ok(Self {
            client,
            settings: settings.clone(),
            subjects,
            metrics,
            connections,
            sink,
            consumer_ready: Arc::new(AtomicBool::new(false)),
            seats_ready: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The sink to register with `Engine::with_sink`.
    pub fn sink(&self) -> Arc<NatsOutcomeSink> {
        self.sink.clone()
    }

    /// A cheap handle for `/readyz`.
    pub fn probe(&self) -> NatsProbe {
        NatsProbe {
            client: self.client.clone(),
            consumer_ready: self.consumer_ready.clone(),
            seats_ready: self.seats_ready.clone(),
        }
    }

    /// Starts the match consumer, the request responder, the latency listener, the seat consumer
    /// and the backfill responder. They take work until `stop` is cancelled; then
    /// [`RunningNatsDoor::shutdown`] lets in-flight work finish.
    pub fn start(
        self,
        service: Arc<dyn PlacementService>,
        seats: Arc<dyn SeatService>,
        stop: CancellationToken,
    ) -> RunningNatsDoor {
        let handlers = TaskTracker::new();
        let abort = CancellationToken::new();
        let jetstream = async_nats::jetstream::new(self.client.clone());
        let consumer = Arc::new(consumer::MatchConsumer {
            jetstream,
            settings: self.settings.clone(),
            subjects: self.subjects.clone(),
            service: service.clone(),
            sink: self.sink.clone(),
            metrics: self.metrics.clone(),
            ready: self.consumer_ready.clone(),
            connections: self.connections.clone(),
            permits: Arc::new(Semaphore::new(self.settings.concurrency)),
        });
        let mut tasks =
            vec![tokio::spawn(pull::run(consumer, stop.clone(), abort.clone(), handlers.clone()))];

        let responder = Arc::new(responder::MatchResponder {
            client: self.client.clone(),
            subjects: self.subjects.clone(),
            service: service.clone(),
            metrics: self.metrics.clone(),
            background: handlers.clone(),
        });
        let listener = listen::Listener {
            client: self.client.clone(),
            subject: self.subjects.match_request(),
            queue_group: self.settings.request_queue_group.clone(),
            task: "responder",
            permits: Arc::new(Semaphore::new(self.settings.concurrency)),
            metrics: self.metrics.clone(),
        };
        tasks.push(tokio::spawn(
            listener.run(stop.clone(), handlers.clone(), move |message| responder.clone().handle(message)),
        ));

        let latencies = Arc::new(latency::LatencyListener {
            client: self.client.clone(),
            service: service.clone(),
            metrics: self.metrics.clone(),
        });
        let listener = listen::Listener {
            client: self.client.clone(),
            subject: self.subjects.player_latency(),
            queue_group: self.settings.request_queue_group.clone(),
            task: "latency",
            permits: Arc::new(Semaphore::new(self.settings.concurrency)),
            metrics: self.metrics.clone(),
        };
        tasks.push(tokio::spawn(
            listener.run(stop.clone(), handlers.clone(), move |message| latencies.clone().handle(message)),
        ));

        // Seats: outcomes go where match results go (stored when a results stream captures them).
        let results = (!self.settings.results_stream.is_empty())
            .then(|| async_nats::jetstream::new(self.client.clone()));
        let seat_consumer = Arc::new(seats::SeatConsumer {
            jetstream: async_nats::jetstream::new(self.client.clone()),
            settings: self.settings.clone(),
            subjects: self.subjects.clone(),
            seats: seats.clone(),
            publisher: seats::SeatPublisher {
                client: self.client.clone(),
                jetstream: results,
                metrics: self.metrics.clone(),
            },
            metrics: self.metrics.clone(),
            ready: self.seats_ready.clone(),
            connections: self.connections.clone(),
            permits: Arc::new(Semaphore::new(self.settings.concurrency)),
        });
        tasks.push(tokio::spawn(pull::run(seat_consumer, stop.clone(), abort.clone(), handlers.clone())));

        let backfill = Arc::new(seats::BackfillResponder {
            client: self.client.clone(),
            subjects: self.subjects.clone(),
            seats,
            service,
            metrics: self.metrics.clone(),
            background: handlers.clone(),
        });
        let listener = listen::Listener {
            client: self.client.clone(),
            subject: self.subjects.backfill_request(),
            queue_group: self.settings.request_queue_group.clone(),
            task: "backfill",
            permits: Arc::new(Semaphore::new(self.settings.concurrency)),
            metrics: self.metrics.clone(),
        };
        tasks.push(tokio::spawn(
            listener.run(stop.clone(), handlers.clone(), move |message| backfill.clone().handle(message)),
        ));

        RunningNatsDoor { client: self.client, stop, abort, handlers, tasks }
    }
}

/// Reports whether the NATS door can work: connected, and the match and seat consumers established.
#[derive(Clone)]
pub struct NatsProbe {
    client: async_nats::Client,
    consumer_ready: Arc<AtomicBool>,
    seats_ready: Arc<AtomicBool>,
}

impl NatsProbe {
    pub fn check(&self) -> Result<(), String> {
        match self.client.connection_state() {
            State::Connected => {}
            State::Pending => return Err("connecting to NATS".to_owned()),
            State::Disconnected => return Err("disconnected from NATS; reconnecting".to_owned()),
        }
        if !self.consumer_ready.load(Ordering::Relaxed) {
            return Err("the JetStream match consumer is not running yet".to_owned());
        }
        if !self.seats_ready.load(Ordering::Relaxed) {
            return Err("the JetStream seat consumer (joins and leaves) is not running yet".to_owned());
        }
        Ok(())
    }
}

/// The running door; owns its tasks until [`RunningNatsDoor::shutdown`].
pub struct RunningNatsDoor {
    client: async_nats::Client,
    stop: CancellationToken,
    abort: CancellationToken,
    handlers: TaskTracker,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningNatsDoor {
    /// Stops pulling and listening, lets in-flight messages finish within `grace` (the rest are
    /// NAKed so another instance takes them at once), then flushes and drains the connection.
    pub async fn shutdown(self, grace: Duration) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        self.handlers.close();
        if tokio::time::timeout(grace, self.handlers.wait()).await.is_err() {
            tracing::warn!("NATS messages still in flight after the grace; NAKing them for another instance");
            self.abort.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), self.handlers.wait()).await;
        }
        // Acks, NAKs and publishes sit in the client's buffer until flushed.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.client.flush()).await;
        let _ = self.client.drain().await;
        tracing::info!("NATS door stopped");
    }
}

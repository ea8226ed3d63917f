//! gameye-bridge: the command line and the wiring of adapters around the core. No logic lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;
use std::time::Duration;

use adapters::config::{GameyeBackend, LogFormat, Settings};
use adapters::gameye::{ErrorClass, GameyeClient, GameyeClientConfig, GameyeMetrics, GameyeSessionApi};
use adapters::http::{self, ApiTokens, GameyeTarget, Health, MatchesState, OpsState, ReadinessCheck};
use adapters::lanes::Lanes;
use adapters::nakama::{
    HookRules, NakamaMetrics, NakamaRpcSink, RecentMatchUsers, ReplayGuard, SignatureVerifier,
};
use adapters::nats::NatsDoor;
use adapters::reconciler::{ListedSession, Reconciler, ReconcilerConfig, ReconcilerMetrics, SessionLister};
use adapters::runtime::{PlacementMetrics, PlayerSyncMetrics, TokioClock, run_player_sync, run_recovery};
use adapters::session_events::{
    EndAnnouncementMetrics, EndAnnouncer, EndAnnouncerSettings, EndAnnouncingSeats, SessionEndedWebhook,
    SessionWebhookMetrics,
};
use adapters::sns::{ImageChoice, ResultsWebhook, SnsConfig, SnsDoor, SnsMetrics, WebhookSecret};
use adapters::store::{MemoryStore, RedisStore, StateStore};
use anyhow::Context;
use bridge::LocationAliases;
use bridge::placement::{Engine, EngineSettings, PlayerSyncSettings, SeatSettings};
use bridge::ports::{OutcomeSink, SessionEvents};
use clap::{Parser, Subcommand};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "gameye-bridge", version, about = "Matchmaker results in, Gameye game servers out.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (HTTP API; with no configuration: in-memory state and the embedded emulator).
    Serve {
        /// TOML file layered over the compiled-in defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides http.listen.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Print the effective configuration (secrets redacted); fail on invalid configuration.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match load_settings(config, None) {
            Ok(settings) => {
                let backend = match settings.gameye_backend() {
                    GameyeBackend::Emulated => "the embedded emulator",
                    GameyeBackend::Remote => "the configured Gameye URL",
                };
                println!("# effective configuration; Gameye calls go to {backend}\n");
                print!("{}", settings.to_redacted_toml());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                ExitCode::from(2)
            }
        },
        Command::Serve { config, listen } => {
            let settings = match load_settings(config, listen) {
                Ok(settings) => settings,
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::from(2);
                }
            };
            init_tracing(&settings);
            if !settings.runtime.transparent_huge_pages {
                disable_transparent_huge_pages();
            }
            let lanes = match settings.runtime.lanes {
                0 => std::thread::available_parallelism().map_or(1, usize::from),
                lanes => lanes,
            };
            // With lanes, this thread's runtime is lane 0 and runs alone; the other lanes get theirs.
            let mut runtime = if lanes > 1 {
                tokio::runtime::Builder::new_current_thread()
            } else {
                let mut runtime = tokio::runtime::Builder::new_multi_thread();
                if settings.runtime.worker_threads > 0 {
                    runtime.worker_threads(settings.runtime.worker_threads);
                }
                runtime
            };
            let runtime = runtime.enable_all().build();
            let result = runtime.map_err(anyhow::Error::from).and_then(|rt| {
                let served = rt.block_on(serve(settings, lanes));
                // Without waiting for a blocking task still at work (a reconciler decoding a listing).
                rt.shutdown_timeout(Duration::from_secs(1));
                served
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(error = format!("{error:#}"), "gameye-bridge stopped with an error");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Stops the kernel from backing this process's memory with transparent huge pages. The flag is
/// checked when a page is first touched, so it covers what the allocator mapped (and asked huge
/// pages for) before this ran. A kernel that refuses leaves the system's setting, with a warning.
#[cfg(target_os = "linux")]
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integers only and reads or writes no memory of this process.
    let refused = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0;
    if refused {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot turn transparent huge pages off; the system's setting applies"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn disable_transparent_huge_pages() {}

fn load_settings(config: Option<PathBuf>, listen: Option<SocketAddr>) -> Result<Settings, anyhow::Error> {
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    if let Some(listen) = listen {
        // The flag wins over everything, and is validated like any other source.
        env.push(("BRIDGE_HTTP__LISTEN".to_owned(), format!("\"{listen}\"")));
    }
    Ok(Settings::load_from(config.as_deref(), env)?)
}

fn init_tracing(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match settings.log.format {
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(settings: Settings, lanes: usize) -> anyhow::Result<()> {
    let backend = settings.gameye_backend();
    let emulated = backend == GameyeBackend::Emulated;
    // The lines this task logs (starting, stopping) carry `gameye_backend`, so nobody mistakes the
    // emulator for Gameye; spawned tasks run outside the span (the warning, /readyz and a metric say it too).
    let span =
        tracing::info_span!("gameye_bridge", gameye_backend = if emulated { "emulator" } else { "remote" });
    let _entered = span.enter();
    if emulated {
        tracing::warn!(
            "the EMBEDDED GAMEYE EMULATOR answers Gameye calls: no real game servers will start \
             (set GAMEYE_API_URL and GAMEYE_API_TOKEN to use Gameye)"
        );
    }

    let mut gameye_config = GameyeClientConfig::from_settings(&settings.gameye);
    let emulator = if emulated {
        let world = if settings.gameye.emulator_world.is_empty() {
            gameye_emulator::World::default()
        } else {
            gameye_emulator::World::from_file(settings.gameye.emulator_world.as_ref())
                .with_context(|| format!("gameye.emulator_world {}", settings.gameye.emulator_world))?
        };
        let running = gameye_emulator::start(world, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .context("starting the embedded Gameye emulator")?;
        gameye_config.base_url = running.url();
        if gameye_config.token.is_empty() {
            gameye_config.token = adapters::config::Secret::new(gameye_emulator::DEFAULT_TOKEN);
        }
        tracing::warn!(url = %running.url(), "embedded Gameye emulator listening");
        Some(running)
    } else {
        None
    };

    let mut lanes = Lanes::start(lanes).context("starting the lanes (runtime.lanes)")?;
    if lanes.count() > 1 {
        tracing::info!(lanes = lanes.count(), "serving HTTP on lanes: one single-threaded runtime each");
    }

    let mut registry = Registry::with_prefix("gameye_bridge");
    let emulated_gauge = Gauge::<i64>::default();
    emulated_gauge.set(i64::from(emulated));
    registry.register(
        "gameye_emulated",
        "1 when the embedded Gameye emulator answers instead of Gameye",
        emulated_gauge,
    );
    let gameye_metrics = GameyeMetrics::register(&mut registry);
    let lane_metrics = (lanes.count() > 1).then(|| http::LaneMetrics::register(&mut registry));
    let gameye = GameyeClient::for_lanes(&gameye_config, Some(gameye_metrics), lanes.count())
        .context("building the Gameye client")?;

    let store = if settings.redis.url.is_empty() {
        tracing::info!("state in memory: fine for one instance; set redis.url to share it");
        StateStore::Memory(MemoryStore::default())
    } else {
        let redis =
            RedisStore::connect_lanes(settings.redis.url.expose(), &settings.redis.prefix, &lanes.handles())
                .await
                .context("connecting to Redis (redis.url)")?;
        StateStore::Redis(redis)
    };
    // The NATS door connects (retrying in the background) before the engine exists: the engine
    // announces every door's outcomes through its sink.
    let nats = if settings.nats.url.is_empty() {
        None
    } else {
        Some(NatsDoor::connect(&settings.nats, &mut registry).await.context("setting up NATS (nats.url)")?)
    };
    let mut sinks: Vec<Arc<dyn OutcomeSink>> = Vec::new();
    // Where ended sessions are announced, by the reconciler and by DELETE /v1/sessions/{id}.
    let mut session_events: Vec<Arc<dyn SessionEvents>> = Vec::new();
    if let Some(door) = &nats {
        sinks.push(door.sink());
        session_events.push(door.sink());
    }
    // Every session's end is also POSTed, signed, to seats.ended_webhook.url when it is set.
    if let Some(webhook) = session_ended_webhook(&settings, &mut registry)? {
        session_events.push(webhook);
    }
    // Nakama placements are also pushed to Nakama's RPC when nakama.rpc_url is set.
    let nakama_metrics = NakamaMetrics::register(&mut registry);
    let nakama_users = RecentMatchUsers::default();
    if let Some(sink) =
        NakamaRpcSink::from_settings(&settings.nakama, nakama_users.clone(), Some(nakama_metrics.clone()))?
    {
        tracing::info!(rpc = %settings.nakama.rpc_id, "Nakama placements are pushed to Nakama's RPC");
        sinks.push(Arc::new(sink.with_match_players(match_players(store.clone()))));
    }
    // SNS placements' outcomes are POSTed, signed, to sns.results_webhook.url when it is set.
    if let Some(sink) = sns_results_webhook(&settings)? {
        sinks.push(sink);
    }
    let placement_metrics = PlacementMetrics::register(&mut registry);
    let engine = Engine::new(
        GameyeSessionApi::new(gameye.clone(), settings.placement.locations_cache),
        store.clone(),
        TokioClock,
        engine_settings(&settings),
    )
    .with_observer(placement_metrics.clone());
    let player_sync_wakeup = Arc::new(tokio::sync::Notify::new());
    let engine = engine.with_player_sync_wakeup({
        let wakeup = player_sync_wakeup.clone();
        Arc::new(move || wakeup.notify_one())
    });
    let mut engine = sinks.into_iter().fold(engine, Engine::with_sink);
    if nats.is_some() {
        // A `match.found` message's retryable failure is placed again by its redelivery.
        engine = engine.with_door_retrying_failures(adapters::nats::SOURCE);
    }
    let engine = Arc::new(engine);
    let stop_background = CancellationToken::new();
    // Gameye's player lists follow the seat records through the outbox in the state store.
    let player_sync = tokio::spawn(run_player_sync(
        engine.clone(),
        player_sync_wakeup,
        settings.seats.gameye_sync.poll,
        PlayerSyncMetrics::register(&mut registry),
        stop_background.clone(),
    ));
    // Session ends are owed in the state store and announced from there (nothing without sinks).
    let end_announcer = (!session_events.is_empty()).then(|| {
        Arc::new(EndAnnouncer::new(
            store.clone(),
            session_events,
            end_announcer_settings(&settings),
            EndAnnouncementMetrics::register(&mut registry),
        ))
    });
    let end_outbox =
        end_announcer.clone().map(|announcer| tokio::spawn(announcer.run(stop_background.clone())));
    let stop_recovering = CancellationToken::new();
    let recovery = tokio::spawn(run_recovery(
        engine.clone(),
        settings.placement.recovery_interval,
        placement_metrics,
        stop_recovering.clone(),
        stop_background.clone(),
    ));
    // Ending a session through the API announces it like the reconciler does (one event per end).
    let seats: Arc<dyn bridge::placement::SeatService> = match &end_announcer {
        Some(announcer) => Arc::new(EndAnnouncingSeats::new(engine.clone(), announcer.clone())),
        None => engine.clone(),
    };
    // The reconciler reads every seat record in bulk: on a Redis connection of its own, its
    // pipelines of hundreds of reads never queue in front of a placement's commands.
    let reconciler_store = match &store {
        StateStore::Redis(_) if settings.reconciler.enabled => StateStore::Redis(
            RedisStore::connect(settings.redis.url.expose(), &settings.redis.prefix)
                .await
                .context("connecting the reconciler to Redis (redis.url)")?,
        ),
        _ => store.clone(),
    };
    // One instance at a time (a lease in the state store) keeps seat records in line with Gameye.
    let reconciler = settings.reconciler.enabled.then(|| {
        let config = ReconcilerConfig {
            interval: settings.reconciler.interval,
            owner: instance_name(),
            seats: engine_settings(&settings).seats,
            keep_for: settings.gameye.ttl + Duration::from_secs(600),
            pace: settings.reconciler.pace(),
        };
        let reconciler = Reconciler::new(
            reconciler_store,
            bridge_sessions(gameye.clone(), settings.redis.prefix.clone()),
            end_announcer.clone(),
            config,
            ReconcilerMetrics::register(&mut registry),
        );
        tokio::spawn(reconciler.run(stop_background.clone()))
    });
    let background_placements = TaskTracker::new();
    let stop_nats = CancellationToken::new();
    let nats_probe = nats.as_ref().map(NatsDoor::probe);
    let nats = nats.map(|door| door.start(engine.clone(), engine.clone(), stop_nats.clone()));

    let probe_client = gameye.clone();
    let probe_image = settings.gameye.image.clone();
    let gameye_check = ReadinessCheck::new("gameye", move || {
        let client = probe_client.clone();
        let image = probe_image.clone();
        async move {
            match client.available_locations(&image).await {
                Ok(_) => Ok(()),
                // Gameye answered and took the token: an image the account lacks (matches usually
                // name their own) or a rate limit does not make the bridge unable to serve.
                Err(error) if matches!(error.class(), ErrorClass::NotFound | ErrorClass::NoCapacity) => {
                    Ok(())
                }
                Err(error) => Err(error.to_string()),
            }
        }
    });
    let mut checks = vec![gameye_check];
    if let StateStore::Redis(_) = &store {
        let probe_store = store.clone();
        checks.push(ReadinessCheck::new("redis", move || {
            let store = probe_store.clone();
            async move { store.ping().await.map_err(|e| e.to_string()) }
        }));
    }
    if let Some(probe) = nats_probe {
        checks.push(ReadinessCheck::new("nats", move || {
            let probe = probe.clone();
            async move { probe.check() }
        }));
    }
    let health = Health {
        checks,
        gameye: GameyeTarget {
            backend: if emulated { "emulator" } else { "remote" },
            url: gameye.base_url().to_owned(),
            warning: emulated.then_some("the embedded Gameye emulator answers: no real game servers start"),
        },
        probe_timeout: settings.gameye.request_timeout,
    };
    let tokens = ApiTokens::new(settings.http.tokens.clone());
    // The SNS webhook is authenticated by SNS's signature (no token); ticket polling by token.
    let sns_door = SnsDoor::new(
        sns_config(&settings),
        engine.clone(),
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        background_placements.clone(),
        SnsMetrics::register(&mut registry),
    );
    let sns_routes = http::sns_router(Arc::new(sns_door), tokens.clone());
    let nakama_door = http::NakamaDoor {
        service: engine.clone(),
        seats: seats.clone(),
        background: background_placements.clone(),
        rules: Arc::new(HookRules::from_settings(&settings.nakama)),
        users: nakama_users,
        metrics: nakama_metrics,
        // In the state store, so every instance refuses a signature any of them applied.
        replays: ReplayGuard::new(Arc::new(store.clone())),
    };
    let nakama_auth = http::NakamaAuth {
        tokens: tokens.clone(),
        verifier: SignatureVerifier::new(&settings.nakama.hmac_secret, settings.nakama.signature_max_age),
    };
    // The Nakama routes carry their own authentication (bearer token or hook signature).
    let api = http::v1_router(
        MatchesState { service: engine.clone(), seats, background: background_placements.clone() },
        tokens,
    )
    .merge(http::nakama_router(nakama_door, nakama_auth));
    let app = http::router(OpsState { health, registry }, api.merge(sns_routes), settings.http.body_limit);

    let listener = http::bind(settings.http.listen).await?;
    let addr = listener.local_addr().context("reading the bound address")?;
    if settings.http.tokens.is_empty() {
        tracing::warn!(%addr, "no http.tokens configured: the API is open, so it listens on loopback only");
    }
    tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), "gameye-bridge listening");
    // The signal also stops NATS pulling and recovery taking placements over at once, while HTTP
    // drains.
    let signal = {
        let (stop_nats, stop_recovering) = (stop_nats.clone(), stop_recovering.clone());
        async move {
            shutdown_signal().await;
            stop_nats.cancel();
            stop_recovering.cancel();
        }
    };
    let grace = settings.http.shutdown_grace;
    match lane_metrics {
        Some(metrics) => http::serve_on_lanes(listener, app, &mut lanes, metrics, signal, grace).await?,
        None => http::serve(listener, app, signal, grace).await?,
    }
    stop_background.cancel();
    // Everything that announces finishes before NATS goes, so that its announcements still have
    // their sinks (what is cut short stays owed): the doors' background placements (HTTP
    // `?wait=false`, SNS, Nakama), a recovery round under way, session ends. The NATS door's own
    // messages in flight finish meanwhile; it stopped pulling at the signal.
    background_placements.close();
    if tokio::time::timeout(settings.http.shutdown_grace, background_placements.wait()).await.is_err() {
        tracing::warn!(
            "background placements still running at exit; another instance's recovery finishes them"
        );
    }
    // A round under way finishes, within the grace; cut short, its placements are left to another
    // instance's recovery, as at a crash.
    if tokio::time::timeout(settings.http.shutdown_grace, recovery).await.is_err() {
        tracing::warn!("a recovery round still running at exit; another instance's recovery finishes it");
    }
    if let Some(announcer) = &end_announcer {
        announcer.close(settings.http.shutdown_grace).await;
    }
    if let Some(nats) = nats {
        nats.shutdown(settings.http.shutdown_grace).await;
    }
    let _ = player_sync.await;
    if let Some(reconciler) = reconciler {
        let _ = reconciler.await;
    }
    if let Some(end_outbox) = end_outbox {
        let _ = end_outbox.await;
    }
    // Last: the lanes drive the connections of what ran on them until here.
    let _ = tokio::task::spawn_blocking(move || lanes.stop()).await;
    tracing::info!("gameye-bridge stopped");
    if let Some(emulator) = emulator {
        emulator.shutdown().await;
    }
    Ok(())
}

/// A match's players from its placement record: the users a Nakama failure push names when the
/// instance pushing it did not take the hook call.
fn match_players(store: StateStore) -> adapters::nakama::MatchPlayers {
    Arc::new(move |match_id: String| {
        let store = store.clone();
        Box::pin(async move {
            let record = bridge::ports::PlacementStore::get(&store, &match_id)
                .await
                .map_err(|error| error.to_string())?;
            Ok(record
                .map(|record| record.request.players.into_iter().map(|player| player.id).collect())
                .unwrap_or_default())
        })
    })
}

fn engine_settings(settings: &Settings) -> EngineSettings {
    let placement = &settings.placement;
    EngineSettings {
        policy: placement.region_policy(&settings.gameye.region),
        aliases: LocationAliases::new(placement.aliases.clone()),
        default_image: settings.gameye.image.clone(),
        default_version: Some(settings.gameye.version.clone()).filter(|v| !v.is_empty()),
        default_ttl: settings.gameye.ttl,
        cooldown: placement.cooldown,
        deadline: placement.deadline,
        latency_keep_for: placement.latency_ttl,
        keep_for: placement.record_ttl,
        owner: instance_name(),
        deployment: settings.redis.prefix.clone(),
        retry_min: Duration::from_millis(100),
        retry_max: Duration::from_secs(2),
        seats: SeatSettings {
            default_capacity: settings.seats.default_capacity,
            capacity: settings.seats.capacity.clone(),
            reservation_ttl: settings.seats.reservation_ttl,
            match_reservation_ttl: settings.seats.match_reservation_ttl,
            backfill_cache: settings.seats.backfill_cache,
            end_announcements: announces_session_ends(settings)
                .then(|| end_announcer_settings(settings).owing()),
            gameye_sync: PlayerSyncSettings {
                lease: settings.seats.gameye_sync.lease,
                retry_min: settings.seats.gameye_sync.retry_min,
                retry_max: settings.seats.gameye_sync.retry_max,
            },
        },
    }
}

/// The SNS door's settings from `[sns]` (and the placement record lifetime for ticket statuses).
fn sns_config(settings: &Settings) -> SnsConfig {
    let sns = &settings.sns;
    SnsConfig {
        topics: sns.topics.clone(),
        pinned_cert_dir: Some(PathBuf::from(&sns.pinned_cert_dir)).filter(|dir| !dir.as_os_str().is_empty()),
        cert_cache_ttl: sns.cert_cache_ttl,
        max_age: sns.max_age,
        auto_confirm: sns.auto_confirm,
        insecure_skip_verify: sns.insecure_skip_verify,
        configurations: sns
            .configurations
            .iter()
            .map(|(arn, choice)| {
                let version = Some(choice.version.clone()).filter(|v| !v.is_empty());
                (arn.clone(), ImageChoice { image: choice.image.clone(), version })
            })
            .collect(),
        keep_for: settings.placement.record_ttl,
        fetch_timeout: sns.fetch_timeout,
    }
}

/// The Standard Webhooks sink for SNS placements, when `sns.results_webhook.url` is set.
fn sns_results_webhook(settings: &Settings) -> anyhow::Result<Option<Arc<dyn bridge::ports::OutcomeSink>>> {
    let webhook = &settings.sns.results_webhook;
    if webhook.url.is_empty() {
        return Ok(None);
    }
    let secret = WebhookSecret::parse(webhook.secret.expose()).map_err(anyhow::Error::msg)?;
    let sink = ResultsWebhook::new(webhook.url.expose(), secret, webhook.timeout, vec!["sns".to_owned()])
        .map_err(anyhow::Error::msg)?;
    tracing::info!("SNS placements' outcomes are POSTed to sns.results_webhook.url");
    Ok(Some(Arc::new(sink)))
}

/// The session-ended webhook, when `seats.ended_webhook.url` is set.
fn session_ended_webhook(
    settings: &Settings,
    registry: &mut Registry,
) -> anyhow::Result<Option<Arc<SessionEndedWebhook>>> {
    let webhook = &settings.seats.ended_webhook;
    if webhook.url.is_empty() {
        return Ok(None);
    }
    let secret = WebhookSecret::parse(webhook.secret.expose()).map_err(anyhow::Error::msg)?;
    let sender = adapters::webhook::WebhookSender::new(
        webhook.url.expose(),
        secret,
        webhook.timeout,
        "seats.ended_webhook",
    )?;
    tracing::info!("ended sessions are POSTed to seats.ended_webhook.url");
    Ok(Some(Arc::new(SessionEndedWebhook::new(sender, SessionWebhookMetrics::register(registry)))))
}

/// Whether session ends are announced anywhere (NATS, the session-ended webhook).
fn announces_session_ends(settings: &Settings) -> bool {
    !settings.nats.url.is_empty() || !settings.seats.ended_webhook.url.is_empty()
}

/// How session ends are announced: an attempt lasts the webhook's timeout and a little more (NATS
/// answers at once), and an end is given up after `seats.ended_webhook.retry_for`.
fn end_announcer_settings(settings: &Settings) -> EndAnnouncerSettings {
    let webhook = &settings.seats.ended_webhook;
    let deadline = if webhook.url.is_empty() {
        Duration::from_secs(5)
    } else {
        webhook.timeout + Duration::from_secs(1)
    };
    EndAnnouncerSettings { deadline, give_up_after: webhook.retry_for }
}

/// The reconciler's view of Gameye: every session (`all=true`: starting ones too) this deployment
/// started (its label, filtered by Gameye) carrying the bridge's match label, exited and dead ones
/// counted as gone.
fn bridge_sessions(client: GameyeClient, deployment: String) -> SessionLister {
    let describer = client.clone();
    SessionLister::new(move |pace| {
        let client = client.clone();
        let labels = std::collections::BTreeMap::from([(
            bridge::placement::DEPLOYMENT_LABEL.to_owned(),
            deployment.clone(),
        )]);
        async move {
            let filter = adapters::gameye::ListFilter { all: true, labels, ..Default::default() };
            let sessions =
                client.list_sessions_paced(&filter, pace).await.map_err(|error| error.to_string())?;
            // Off the async workers, like the decoding: a listing may hold a hundred thousand.
            adapters::pace::spawn_blocking(pace, move || {
                let mut pacer = adapters::pace::Pacer::new(pace);
                let mut listed = Vec::with_capacity(sessions.len());
                for (n, summary) in sessions.into_iter().enumerate() {
                    listed.extend(listed_session(summary));
                    if n % 64 == 63 {
                        pacer.breathe_blocking();
                    }
                }
                listed
            })
            .await
        }
    })
    .with_players(move |session_id| {
        let client = describer.clone();
        async move {
            use adapters::gameye::SessionStatus;
            match client.describe_session(&session_id.to_string()).await {
                Ok(described)
                    if matches!(
                        described.session.status,
                        Some(SessionStatus::Exited | SessionStatus::Dead)
                    ) =>
                {
                    Ok(None)
                }
                Ok(described) => Ok(Some(described.players.joined)),
                Err(error) if error.status() == Some(404) => Ok(None),
                Err(error) => Err(error.to_string()),
            }
        }
    })
}

fn listed_session(summary: adapters::gameye::SessionSummary) -> Option<ListedSession> {
    use adapters::gameye::SessionStatus;
    let match_id = summary.labels.user.get(bridge::placement::MATCH_LABEL)?.clone();
    let session_id = summary.id.parse().ok()?;
    if matches!(summary.status, Some(SessionStatus::Exited | SessionStatus::Dead)) {
        return None;
    }
    let capacity =
        summary.labels.user.get(bridge::placement::CAPACITY_LABEL).and_then(|seats| seats.parse().ok());
    let labels =
        summary.labels.user.into_iter().filter(|(key, _)| !key.starts_with("gameye-bridge.")).collect();
    let ports = summary
        .ports
        .iter()
        .map(|port| bridge::Port {
            protocol: match port.protocol {
                adapters::gameye::Protocol::Tcp => bridge::PortProtocol::Tcp,
                adapters::gameye::Protocol::Udp => bridge::PortProtocol::Udp,
            },
            container: port.container,
            host: port.host,
        })
        .collect();
    Some(ListedSession {
        session_id,
        match_id,
        image: summary.image,
        version: summary.tag,
        location: summary.location,
        host: summary.host,
        ports,
        labels,
        running: summary.status == Some(SessionStatus::Running),
        created_ms: summary.created,
        player_count: summary.player_count,
        capacity,
    })
}

/// Names this process in placement leases: host (when known), pid and a random suffix.
fn instance_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "bridge".to_owned());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[..8])
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => tracing::info!("SIGINT: finishing in-flight requests"),
        _ = terminate => tracing::info!("SIGTERM: finishing in-flight requests"),
    }
}

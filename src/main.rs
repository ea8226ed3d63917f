//! gameye-bridge: the command line and the wiring of adapters around the core. No logic lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;
use std::time::Duration;

use adapters::config::{GameyeBackend, LogFormat, Settings};
use adapters::gameye::{GameyeClient, GameyeClientConfig, GameyeMetrics, GameyeSessionApi};
use adapters::http::{self, ApiTokens, GameyeTarget, Health, MatchesState, OpsState, ReadinessCheck};
use adapters::runtime::{PlacementMetrics, TokioClock, run_recovery};
use adapters::store::{MemoryStore, RedisStore, StateStore};
use anyhow::Context;
use bridge::LocationAliases;
use bridge::placement::{Engine, EngineSettings};
use clap::{Parser, Subcommand};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build();
            let result = runtime.map_err(anyhow::Error::from).and_then(|rt| rt.block_on(serve(settings)));
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

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let backend = settings.gameye_backend();
    let emulated = backend == GameyeBackend::Emulated;
    // Every line logged while serving carries `gameye_backend`, so nobody mistakes the emulator for Gameye.
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

    let mut registry = Registry::with_prefix("gameye_bridge");
    let emulated_gauge = Gauge::<i64>::default();
    emulated_gauge.set(i64::from(emulated));
    registry.register(
        "gameye_emulated",
        "1 when the embedded Gameye emulator answers instead of Gameye",
        emulated_gauge,
    );
    let gameye_metrics = GameyeMetrics::register(&mut registry);
    let gameye =
        GameyeClient::new(&gameye_config, Some(gameye_metrics)).context("building the Gameye client")?;

    let store = if settings.redis.url.is_empty() {
        tracing::info!("state in memory: fine for one instance; set redis.url to share it");
        StateStore::Memory(MemoryStore::default())
    } else {
        let redis = RedisStore::connect(settings.redis.url.expose(), &settings.redis.prefix)
            .await
            .context("connecting to Redis (redis.url)")?;
        StateStore::Redis(redis)
    };
    if !settings.nats.url.is_empty() {
        tracing::warn!("nats.url is set, but this build has no NATS door yet: it is not used");
    }
    let placement_metrics = PlacementMetrics::register(&mut registry);
    let engine = Arc::new(
        Engine::new(
            GameyeSessionApi::new(gameye.clone(), settings.placement.locations_cache),
            store.clone(),
            TokioClock,
            engine_settings(&settings),
        )
        .with_observer(placement_metrics.clone()),
    );
    let stop_background = CancellationToken::new();
    let recovery = tokio::spawn(run_recovery(
        engine.clone(),
        settings.placement.recovery_interval,
        placement_metrics,
        stop_background.clone(),
    ));
    let background_placements = TaskTracker::new();

    let probe_client = gameye.clone();
    let probe_image = settings.gameye.image.clone();
    let gameye_check = ReadinessCheck::new("gameye", move || {
        let client = probe_client.clone();
        let image = probe_image.clone();
        async move { client.available_locations(&image).await.map(|_| ()).map_err(|e| e.to_string()) }
    });
    let mut checks = vec![gameye_check];
    if let StateStore::Redis(_) = &store {
        let probe_store = store.clone();
        checks.push(ReadinessCheck::new("redis", move || {
            let store = probe_store.clone();
            async move { store.ping().await.map_err(|e| e.to_string()) }
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
    let api = http::v1_router(
        MatchesState { service: engine, background: background_placements.clone() },
        ApiTokens::new(settings.http.tokens.clone()),
    );
    let app = http::router(OpsState { health, registry }, api, settings.http.body_limit);

    let listener = http::bind(settings.http.listen).await?;
    let addr = listener.local_addr().context("reading the bound address")?;
    if settings.http.tokens.is_empty() {
        tracing::warn!(%addr, "no http.tokens configured: the API is open, so it listens on loopback only");
    }
    tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), "gameye-bridge listening");
    http::serve(listener, app, shutdown_signal(), settings.http.shutdown_grace).await?;
    stop_background.cancel();
    background_placements.close();
    if tokio::time::timeout(settings.http.shutdown_grace, background_placements.wait()).await.is_err() {
        tracing::warn!(
            "background placements still running at exit; another instance's recovery finishes them"
        );
    }
    let _ = recovery.await;
    tracing::info!("gameye-bridge stopped");
    if let Some(emulator) = emulator {
        emulator.shutdown().await;
    }
    Ok(())
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
        retry_min: Duration::from_millis(100),
        retry_max: Duration::from_secs(2),
    }
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

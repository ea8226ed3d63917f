//! Connection options from `[nats]`: authentication, TLS, and reconnecting forever.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{ConnectOptions, Event};
use tokio::sync::watch;

use super::NatsError;
use super::metrics::NatsMetrics;
use crate::config::NatsSettings;

/// Longest pause between two reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// The server list of `nats.url` (comma-separated).
pub(crate) fn server_list(url: &str) -> Vec<String> {
    url.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// `connections` counts the connections made (reconnects included): a pull request lives on the
/// server it was sent to, so the pull loops send theirs again when it changes.
pub(crate) async fn options(
    settings: &NatsSettings,
    metrics: Arc<NatsMetrics>,
    connections: watch::Sender<u64>,
) -> Result<ConnectOptions, NatsError> {
    let mut options = ConnectOptions::new();
    if !settings.credentials_file.is_empty() {
        options = options.credentials_file(&settings.credentials_file).await.map_err(|e| {
            NatsError::Connect(format!("nats.credentials_file {}: {e}", settings.credentials_file))
        })?;
    }
    if !settings.nkey.is_empty() {
        options = options.nkey(settings.nkey.expose().to_owned());
    }
    if !settings.token.is_empty() {
        options = options.token(settings.token.expose().to_owned());
    }
    if !settings.user.is_empty() {
        options = options.user_and_password(settings.user.clone(), settings.password.expose().to_owned());
    }
    if settings.tls_required {
        options = options.require_tls(true);
    }
    if !settings.tls_ca_file.is_empty() {
        options = options.add_root_certificates(PathBuf::from(&settings.tls_ca_file));
    }
    if !settings.tls_cert_file.is_empty() {
        options = options.add_client_certificate(
            PathBuf::from(&settings.tls_cert_file),
            PathBuf::from(&settings.tls_key_file),
        );
    }
    Ok(options
        .name("gameye-bridge")
        // Start even when NATS is down (readiness says so) and never give up reconnecting: the
        // bridge's other doors keep working meanwhile, and JetStream keeps the matches.
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(move |event| {
            if matches!(event, Event::Connected) {
                connections.send_modify(|made| *made += 1);
            }
            let metrics = metrics.clone();
            async move {
                match event {
                    Event::Connected => {
                        if metrics.connected.set(1) == 0 {
                            metrics.connections.inc();
                        }
                        tracing::info!("NATS connected");
                    }
                    Event::Disconnected => {
                        metrics.connected.set(0);
                        tracing::warn!("NATS disconnected; reconnecting");
                    }
                    Event::Closed => {
                        metrics.connected.set(0);
                        tracing::info!("NATS connection closed");
                    }
                    Event::SlowConsumer(sid) => tracing::warn!(sid, "NATS slow consumer: messages dropped"),
                    other => tracing::warn!(event = %other, "NATS event"),
                }
            }
        }))
}

/// Capped exponential backoff with jitter, so a fleet of bridges does not reconnect in lockstep.
fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exponent = attempts.min(16) as u32;
    let base =
        Duration::from_millis(50).saturating_mul(2u32.saturating_pow(exponent)).min(MAX_RECONNECT_DELAY);
    // uuid's v4 generator is the randomness at hand; the jitter needs no quality.
    let jitter = 0.5 + (uuid::Uuid::new_v4().as_u128() % 500) as f64 / 1000.0;
    base.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lists_are_split_on_commas() {
        assert_eq!(server_list("nats://a:4222, nats://b:4222,"), ["nats://a:4222", "nats://b:4222"]);
    }

    #[test]
    fn reconnect_delays_grow_and_are_capped() {
        assert_eq!(reconnect_delay(0), Duration::ZERO);
        assert!(reconnect_delay(3) <= Duration::from_millis(400));
        for attempts in [10, 100, 10_000] {
            assert!(reconnect_delay(attempts) <= MAX_RECONNECT_DELAY);
        }
    }
}

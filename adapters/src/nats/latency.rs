//! `<prefix>.player.latency`: `{"player_id", "latencies": {location: ms}}` reports for the latency
//! store, for matchmakers whose match events carry none. Answered when sent as a request.

use std::collections::BTreeMap;
use std::sync::Arc;

use bridge::placement::PlacementService;
use serde::Deserialize;
use serde_json::json;

use super::metrics::NatsMetrics;

// The same limits as `PUT /v1/players/{id}/latencies`.
const MAX_LOCATIONS: usize = 64;
const MAX_LATENCY_MS: f64 = 60_000.0;
const MAX_NAME_CHARS: usize = 128;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LatencyReport {
    player_id: String,
    latencies: BTreeMap<String, f64>,
}

pub(crate) struct LatencyListener {
    pub client: async_nats::Client,
    pub service: Arc<dyn PlacementService>,
    pub metrics: Arc<NatsMetrics>,
}

impl LatencyListener {
    pub async fn handle(self: Arc<Self>, message: async_nats::Message) {
        let _in_flight = self.metrics.in_flight("latency");
        let (result, answer) = match parse(&message.payload) {
            Err(error) => {
                tracing::debug!(%error, "invalid latency report ignored");
                ("invalid", json!({"error": {"code": "INVALID_REQUEST", "message": error}}))
            }
            Ok((player_id, latencies)) => match self.service.put_latencies(&player_id, &latencies).await {
                Ok(()) => ("stored", json!({"player_id": player_id, "latencies": latencies})),
                Err(error) => {
                    tracing::warn!(%error, "latency report not stored");
                    (
                        "error",
                        json!({"error": {"code": "STORE_UNAVAILABLE", "message": crate::store::STORE_UNAVAILABLE_MESSAGE}}),
                    )
                }
            },
        };
        self.metrics.handled("latency", result);
        if let Some(reply) = message.reply {
            let _ = self.client.publish(reply, answer.to_string().into()).await;
        }
    }
}

fn parse(payload: &[u8]) -> Result<(String, BTreeMap<String, u32>), String> {
    let report: LatencyReport = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    check_name("player_id", &report.player_id)?;
    if report.latencies.is_empty() {
        return Err("latencies: must name at least one location".to_owned());
    }
    if report.latencies.len() > MAX_LOCATIONS {
        return Err(format!("latencies: at most {MAX_LOCATIONS} locations"));
    }
    let mut checked = BTreeMap::new();
    for (location, ms) in report.latencies {
        check_name(&format!("latencies.{location}"), &location)?;
        if !ms.is_finite() || !(0.0..=MAX_LATENCY_MS).contains(&ms) {
            return Err(format!("latencies.{location}: must be a number of ms from 0 to 60000"));
        }
        // Rounded up, like match requests: a cap is never met by rounding down.
        checked.insert(location, ms.ceil() as u32);
    }
    Ok((report.player_id, checked))
}

fn check_name(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || value.chars().count() > MAX_NAME_CHARS || value.chars().any(char::is_control) {
        return Err(format!("{field}: must be 1 to {MAX_NAME_CHARS} characters without control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_checked_and_rounded_up() {
        let (player, latencies) = parse(br#"{"player_id": "p1", "latencies": {"eu-west-1": 31.2}}"#).unwrap();
        assert_eq!(player, "p1");
        assert_eq!(latencies["eu-west-1"], 32);
        for bad in [
            &br#"{"player_id": "", "latencies": {"eu-west-1": 3}}"#[..],
            br#"{"player_id": "p", "latencies": {}}"#,
            br#"{"player_id": "p", "latencies": {"eu-west-1": -1}}"#,
            br#"{"player_id": "p", "latencies": {"eu-west-1": 3}, "extra": 1}"#,
            b"not json",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}

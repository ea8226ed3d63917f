//! The push path: every Nakama placement's outcome POSTed to a module RPC
//! (`<rpc_url>/v2/rpc/<rpc_id>?unwrap`, Basic auth with Nakama's `runtime.http_key`), which turns it
//! into in-app notifications. The engine retries transient failures; this sink says which are.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bridge::ports::{DeliveryError, Outcome, OutcomeSink};
use bridge::{FailureDetail, Port};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{NakamaError, NakamaMetrics, SOURCE};
use crate::config::NakamaSettings;

/// What the RPC receives for a placed match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedPush {
    /// Always `placed`.
    pub status: String,
    pub match_id: String,
    pub session_id: Uuid,
    pub host: String,
    pub ports: Vec<Port>,
    /// The Nakama user ids of the match.
    pub users: Vec<String>,
    pub location: String,
}

/// What the RPC receives for a match that could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedPush {
    /// Always `failed`.
    pub status: String,
    pub match_id: String,
    /// The users: remembered from the hook call by the instance that took it, else the players of
    /// the match's placement record (empty only if neither is known).
    pub users: Vec<String>,
    pub error: FailureDetail,
}

/// The push body for an outcome.
pub fn push_body(outcome: &Outcome, users_of_failed: Vec<String>) -> serde_json::Value {
    let body = match outcome {
        Outcome::Placed(assignment) => serde_json::to_value(PlacedPush {
            status: "placed".to_owned(),
            match_id: assignment.match_id.clone(),
            session_id: assignment.session_id,
            host: assignment.host.clone(),
            ports: assignment.ports.clone(),
            users: assignment.players.clone(),
            location: assignment.location.clone(),
        }),
        Outcome::Failed(failure) => serde_json::to_value(FailedPush {
            status: "failed".to_owned(),
            match_id: failure.match_id.clone(),
            users: users_of_failed,
            error: failure.error.clone(),
        }),
    };
    body.unwrap_or_default()
}

/// The user ids of recent Nakama matches, kept in memory so a failure (which carries no players)
/// can still be pushed to the users it concerns. Bounded: the oldest matches are forgotten first.
#[derive(Clone, Default)]
pub struct RecentMatchUsers(Arc<Mutex<RecentInner>>);

#[derive(Default)]
struct RecentInner {
    users: HashMap<String, Vec<String>>,
    order: VecDeque<String>,
}

/// How many matches' users are remembered.
const REMEMBERED_MATCHES: usize = 10_000;

impl RecentMatchUsers {
    /// Remembers a match's users unless its id is remembered already (a duplicate call names the
    /// same users; another match under the id is refused as a conflict and must not take the
    /// first match's pushes). Answers whether it remembered them, for [`RecentMatchUsers::forget`].
    pub fn remember(&self, match_id: &str, users: Vec<String>) -> bool {
        let mut inner = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if inner.users.contains_key(match_id) {
            return false;
        }
        inner.users.insert(match_id.to_owned(), users);
        inner.order.push_back(match_id.to_owned());
        while inner.order.len() > REMEMBERED_MATCHES {
            if let Some(oldest) = inner.order.pop_front() {
                inner.users.remove(&oldest);
            }
        }
        true
    }

    /// Undoes a [`RecentMatchUsers::remember`] that remembered a call refused as a match id
    /// conflict (the first match's record is gone from this instance's memory, or never was in it).
    pub fn forget(&self, match_id: &str) {
        let mut inner = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.users.remove(match_id);
        inner.order.retain(|remembered| remembered != match_id);
    }

    pub fn users(&self, match_id: &str) -> Vec<String> {
        let inner = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.users.get(match_id).cloned().unwrap_or_default()
    }
}

/// Nakama's error body (`{"error", "message", "code"}`; gRPC code inside, HTTP status outside).
#[derive(Debug, Default, Deserialize)]
struct NakamaErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: Option<i64>,
}

/// Reads a match's players from its placement record (`Err`: the store cannot say now). Given by
/// `main`, so the sink need not know the store.
pub type MatchPlayers =
    Arc<dyn Fn(String) -> bridge::placement::BoxFuture<'static, Result<Vec<String>, String>> + Send + Sync>;

/// [`OutcomeSink`] for Nakama placements (source `nakama`).
pub struct NakamaRpcSink {
    client: reqwest::Client,
    url: reqwest::Url,
    authorization: HeaderValue,
    users: RecentMatchUsers,
    /// For a failure whose users this instance does not remember: another instance took the hook
    /// call (its recovery or outbox pushes), or this one restarted since, or forgot the match.
    match_players: Option<MatchPlayers>,
    metrics: Option<NakamaMetrics>,
    /// Statuses already reported loudly; repeats are logged quietly (the engine still warns).
    reported: Mutex<HashSet<u16>>,
}

impl NakamaRpcSink {
    /// `None` when `nakama.rpc_url` is empty (no push configured).
    pub fn from_settings(
        settings: &NakamaSettings,
        users: RecentMatchUsers,
        metrics: Option<NakamaMetrics>,
    ) -> Result<Option<Self>, NakamaError> {
        if settings.rpc_url.is_empty() {
            return Ok(None);
        }
        let url = rpc_endpoint(settings.rpc_url.expose(), &settings.rpc_id)?;
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:", settings.http_key.expose()));
        let mut authorization = HeaderValue::from_str(&format!("Basic {credentials}"))
            .map_err(|_| NakamaError::Config("nakama.http_key cannot be sent in a header".to_owned()))?;
        // Keeps the key out of any debug output of the request.
        authorization.set_sensitive(true);
        let client = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(2)))
            .build()
            .map_err(|e| NakamaError::Config(format!("building the HTTP client: {e}")))?;
        Ok(Some(Self {
            client,
            url,
            authorization,
            users,
            match_players: None,
            metrics,
            reported: Mutex::new(HashSet::new()),
        }))
    }

    /// Where a failure's users are found when they are not remembered (see [`MatchPlayers`]).
    pub fn with_match_players(mut self, match_players: MatchPlayers) -> Self {
        self.match_players = Some(match_players);
        self
    }

    /// The users a failure is pushed to: remembered from the hook call, else the record's players.
    async fn failed_users(&self, match_id: &str) -> Result<Vec<String>, DeliveryError> {
        let remembered = self.users.users(match_id);
        match &self.match_players {
            Some(lookup) if remembered.is_empty() => {
                lookup(match_id.to_owned()).await.map_err(|error| DeliveryError {
                    sink: SOURCE.to_owned(),
                    message: format!("cannot read the match's users: {error}"),
                    permanent: false,
                })
            }
            _ => Ok(remembered),
        }
    }

    fn count(&self, result: &'static str) {
        if let Some(metrics) = &self.metrics {
            metrics.push(result);
        }
    }

    fn rejected(&self, status: u16, body: &str) -> DeliveryError {
        let detail: NakamaErrorBody = serde_json::from_str(body).unwrap_or_default();
        let hint = match status {
            401 => "Nakama refused nakama.http_key (it must equal Nakama's runtime.http_key)",
            404 => "Nakama has no RPC named nakama.rpc_id (is the module from examples/nakama loaded?)",
            _ => "Nakama's RPC refused the result",
        };
        let first_time = self.reported.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(status);
        if first_time {
            tracing::error!(
                status,
                nakama_code = detail.code,
                nakama_message = %detail.message,
                rpc = %self.url.path(),
                "{hint}: Nakama pushes fail and are not retried until this is fixed"
            );
        } else {
            tracing::debug!(status, "Nakama push refused again");
        }
        DeliveryError {
            sink: SOURCE.to_owned(),
            message: format!("{hint} (HTTP {status}: {})", detail.message),
            permanent: true,
        }
    }
}

impl OutcomeSink for NakamaRpcSink {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn wants(&self, source: &str) -> bool {
        source == SOURCE
    }

    fn deliver<'a>(
        &'a self,
        _source: &'a str,
        outcome: &'a Outcome,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>> {
        Box::pin(async move {
            let failed_users = match outcome {
                Outcome::Failed(failure) => self.failed_users(&failure.match_id).await?,
                Outcome::Placed(_) => Vec::new(),
            };
            let body = push_body(outcome, failed_users);
            let sent = self
                .client
                .post(self.url.clone())
                .header(AUTHORIZATION, self.authorization.clone())
                .json(&body)
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(error) => {
                    self.count("retry");
                    return Err(DeliveryError {
                        sink: SOURCE.to_owned(),
                        // Without the URL: it is ours, and reqwest's text may quote it with the query.
                        message: format!("Nakama unreachable: {}", error.without_url()),
                        permanent: false,
                    });
                }
            };
            let status = response.status();
            if status.is_success() {
                self.count("delivered");
                return Ok(());
            }
            let text = response.text().await.unwrap_or_default();
            let code = status.as_u16();
            if status.is_client_error() && code != 408 && code != 429 {
                self.count("rejected");
                return Err(self.rejected(code, &text));
            }
            self.count("retry");
            Err(DeliveryError {
                sink: SOURCE.to_owned(),
                message: format!("Nakama answered HTTP {code}"),
                permanent: false,
            })
        })
    }
}

/// `<base>/v2/rpc/<rpc_id>?unwrap`: the raw JSON body reaches the RPC as its payload.
pub fn rpc_endpoint(base: &str, rpc_id: &str) -> Result<reqwest::Url, NakamaError> {
    let mut url =
        reqwest::Url::parse(base).map_err(|e| NakamaError::Config(format!("nakama.rpc_url: {e}")))?;
    url.path_segments_mut()
        .map_err(|_| NakamaError::Config("nakama.rpc_url cannot have a path".to_owned()))?
        .pop_if_empty()
        .extend(["v2", "rpc", rpc_id]);
    url.set_query(Some("unwrap"));
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_keeps_a_base_path_and_asks_for_unwrap() {
        assert_eq!(
            rpc_endpoint("http://nakama:7350", "gameye_bridge_result").unwrap().as_str(),
            "http://nakama:7350/v2/rpc/gameye_bridge_result?unwrap"
        );
        assert_eq!(
            rpc_endpoint("https://n.example/api/", "r").unwrap().as_str(),
            "https://n.example/api/v2/rpc/r?unwrap"
        );
    }

    #[test]
    fn remembers_a_bounded_number_of_matches() {
        let users = RecentMatchUsers::default();
        for i in 0..REMEMBERED_MATCHES + 5 {
            assert!(users.remember(&format!("m{i}"), vec![format!("u{i}")]));
        }
        assert!(users.users("m0").is_empty());
        assert_eq!(
            users.users(&format!("m{}", REMEMBERED_MATCHES + 4)),
            vec![format!("u{}", REMEMBERED_MATCHES + 4)]
        );
    }

    #[test]
    fn a_known_match_keeps_its_users_and_only_what_was_remembered_is_forgotten() {
        let users = RecentMatchUsers::default();
        assert!(users.remember("m", vec!["first".to_owned()]));
        assert!(!users.remember("m", vec!["other".to_owned()]), "another call under a known id");
        assert_eq!(users.users("m"), ["first"]);
        assert!(users.remember("n", vec!["u".to_owned()]));
        users.forget("n");
        assert!(users.users("n").is_empty());
        assert_eq!(users.users("m"), ["first"]);
    }
}

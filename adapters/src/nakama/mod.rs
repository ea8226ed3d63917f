//! The Nakama adapter: reading what a matchmaker-matched hook sends (Go, JS and Lua runtime shapes,
//! or an envelope with match id and latencies), verifying hook signatures and refusing replayed ones,
//! reading Nakama events and which seats they release, and pushing outcomes to a Nakama module RPC.
//! The HTTP handlers live in the http adapter and call these functions; this module knows nothing
//! of HTTP serving.

mod events;
mod hook;
mod push;
mod replay;
mod signature;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

pub use events::{
    EventsAccepted, EventsBody, LeavePlan, MAX_EVENTS_PER_REQUEST, MAX_USERS_PER_REQUEST, NakamaEvent,
    SeatsReleased, parse_events,
};
pub use hook::{
    DERIVED_MATCH_ID_PREFIX, ExplicitLatency, HookRules, MatchedEntry, MatchedHook, PROPERTY_LABEL_PREFIX,
    parse_matched, read_hook,
};
pub use push::{
    FailedPush, MatchPlayers, NakamaRpcSink, PlacedPush, RecentMatchUsers, push_body, rpc_endpoint,
};
pub use replay::{Claimed, ReplayGuard};
pub use signature::{SIGNATURE_HEADER, SignatureVerifier, SignedRequest, TIMESTAMP_HEADER, sign};

/// The source name of Nakama placements (part of their session ids).
pub const SOURCE: &str = "nakama";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NakamaError {
    /// A hook signature that does not verify. The reason is for the log; callers get a plain 401.
    #[error("bad hook signature: {0}")]
    BadSignature(&'static str),
    #[error("nakama configuration: {0}")]
    Config(String),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PushLabels {
    /// delivered, retry, rejected
    result: &'static str,
}

/// Nakama events received and pushes made.
#[derive(Clone, Default)]
pub struct NakamaMetrics {
    events: Family<EventLabels, Counter>,
    pushes: Family<PushLabels, Counter>,
    replays: Counter,
}

impl NakamaMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "nakama_events",
            "Nakama events received, by kind (session_end and leave remove their users' seats)",
            metrics.events.clone(),
        );
        registry.register("nakama_pushes", "Pushes to Nakama's RPC, by result", metrics.pushes.clone());
        registry.register(
            "nakama_replays",
            "Signed Nakama event requests refused because their signature was used already",
            metrics.replays.clone(),
        );
        metrics
    }

    pub fn event(&self, event: &NakamaEvent) {
        self.events.get_or_create(&EventLabels { kind: event.kind() }).inc();
    }

    pub fn replay(&self) {
        self.replays.inc();
    }

    fn push(&self, result: &'static str) {
        self.pushes.get_or_create(&PushLabels { result }).inc();
    }
}

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub operation: &'static str,
    /// HTTP status, or `timeout` / `unreachable` / `undecodable`.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: &'static str,
}

/// Gameye call counts by status, and call latency, per Session API operation.
#[derive(Clone)]
pub struct GameyeMetrics {
    pub(crate) calls: Family<CallLabels, Counter>,
    pub(crate) duration: Family<OperationLabels, Histogram>,
}

impl GameyeMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let calls = Family::<CallLabels, Counter>::default();
        let duration = Family::<OperationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register("gameye_calls", "Gameye Session API calls by operation and status", calls.clone());
        registry.register(
            "gameye_call_duration_seconds",
            "Gameye Session API call latency",
            duration.clone(),
        );
        Self { calls, duration }
    }
}

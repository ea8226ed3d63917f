//! Reading latencies from any JSON number, rounded up to whole milliseconds.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Unexpected, Visitor};

use super::MAX_LATENCY_MS;

/// Deserializes a `location → latency` map whose values may be JSON integers or floats.
pub(super) fn deserialize_map<'de, D>(deserializer: D) -> Result<BTreeMap<String, u32>, D::Error>
where
    D: Deserializer<'de>,
{
    let wire = BTreeMap::<String, WireLatency>::deserialize(deserializer)?;
    Ok(wire.into_iter().map(|(location, ms)| (location, ms.0)).collect())
}

/// One latency as read: in range and rounded up.
struct WireLatency(u32);

impl<'de> Deserialize<'de> for WireLatency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_f64(LatencyVisitor)
    }
}

struct LatencyVisitor;

impl Visitor<'_> for LatencyVisitor {
    type Value = WireLatency;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        write!(formatter, "a latency in milliseconds from 0 to {MAX_LATENCY_MS}")
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<WireLatency, E> {
        match u32::try_from(value) {
            Ok(ms) if ms <= MAX_LATENCY_MS => Ok(WireLatency(ms)),
            _ => Err(E::invalid_value(Unexpected::Unsigned(value), &self)),
        }
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<WireLatency, E> {
        match u64::try_from(value) {
            Ok(unsigned) => self.visit_u64(unsigned),
            Err(_) => Err(E::invalid_value(Unexpected::Signed(value), &self)),
        }
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<WireLatency, E> {
        let rounded_up = value.ceil();
        // The value itself must be non-negative: -0.5 rounds up to -0.0, which the range holds.
        if value.is_finite() && value >= 0.0 && rounded_up <= f64::from(MAX_LATENCY_MS) {
            // In range and integral, so the cast is exact.
            Ok(WireLatency(rounded_up as u32))
        } else {
            Err(E::invalid_value(Unexpected::Float(value), &self))
        }
    }
}

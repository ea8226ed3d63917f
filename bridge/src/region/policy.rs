//! How the region chooser weighs latencies: the `[placement]` settings that shape a choice.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The rules the region chooser applies. Every field has a default, so a configuration may set
/// only what it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegionPolicy {
    /// What "best" means among the allowed locations. Default: `minimax`.
    pub objective: Objective,
    /// Latency caps that relax as a match ages, GameLift-style. Empty: no cap.
    /// Default: 60 ms from 0 s, 100 ms from 15 s, 180 ms from 30 s.
    pub caps: Vec<LatencyCap>,
    /// What a player's missing latency to a location means. Default: `exclude`.
    pub missing_latency: MissingLatency,
    /// What to do when no location meets the cap. Default: `best_effort`.
    pub on_cap_exceeded: CapExceeded,
    /// Tie-breaker after the objective: listed locations come before unlisted ones, in list order.
    pub preference_order: Vec<String>,
    /// The order used when no player reported any latency; the configured `GAMEYE_API_REGION`
    /// belongs first here.
    pub default_order: Vec<String>,
}

impl Default for RegionPolicy {
    fn default() -> Self {
        Self {
            objective: Objective::default(),
            caps: vec![
                LatencyCap { after_s: 0, max_ms: 60 },
                LatencyCap { after_s: 15, max_ms: 100 },
                LatencyCap { after_s: 30, max_ms: 180 },
            ],
            missing_latency: MissingLatency::default(),
            on_cap_exceeded: CapExceeded::default(),
            preference_order: Vec::new(),
            default_order: Vec::new(),
        }
    }
}

/// The ranking objective among allowed locations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Lowest worst-player latency, ties broken by mean: no player is sacrificed for the others.
    #[default]
    Minimax,
    /// Lowest mean latency (GameLift's default), ties broken by worst-player latency.
    Mean,
}

/// From a match age of `after_s` seconds on, no player's latency to the chosen location may
/// exceed `max_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyCap {
    /// Match age in seconds from which this cap applies.
    pub after_s: u64,
    /// Highest allowed latency of any single player, in milliseconds (inclusive).
    pub max_ms: u32,
}

/// What a missing latency (a player reported some locations but not this one) means.
///
/// Written as `"exclude"` or `{ "penalty_ms": 250 }`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingLatency {
    /// The location is ruled out, as GameLift does.
    #[default]
    Exclude,
    /// The player is assumed to have this latency (ms) there; it counts for the objective and the
    /// cap like a reported one.
    #[serde(rename = "penalty_ms")]
    Penalty(u32),
}

/// What to do when every candidate location exceeds the cap in force.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapExceeded {
    /// Rank locations beyond the cap after those within it, so the best one is taken anyway and
    /// the assignment says `latency_cap_exceeded: true`.
    #[default]
    BestEffort,
    /// Never return a location beyond the cap; fail with `NO_LOCATION` if none is within it.
    Fail,
}

/// A region policy that contradicts itself, naming the offending setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidPolicy {
    /// The setting, e.g. `caps[1].max_ms`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl RegionPolicy {
    /// The cap in force for a match of this age, in ms; `None` when no caps are configured.
    ///
    /// The first cap applies from age 0 even if its `after_s` is later, and a later cap never
    /// tightens an earlier one (the highest `max_ms` among the caps reached wins), so caps only
    /// ever relax as a match ages, whatever the configuration's order.
    pub fn cap_in_force(&self, match_age: Duration) -> Option<u32> {
        let first_start = self.caps.iter().map(|cap| cap.after_s).min()?;
        let reached = match_age.max(Duration::from_secs(first_start));
        self.caps.iter().filter(|cap| Duration::from_secs(cap.after_s) <= reached).map(|cap| cap.max_ms).max()
    }

    /// Checks what configuration could get wrong: caps must be listed by increasing `after_s`
    /// with non-decreasing `max_ms`, the first from 0 s, and no location may be listed twice in
    /// an order.
    pub fn validate(&self) -> Result<(), InvalidPolicy> {
        let invalid = |field: String, message: String| Err(InvalidPolicy { field, message });
        if let Some(first) = self.caps.first()
            && first.after_s != 0
        {
            return invalid(
                "caps[0].after_s".into(),
                format!("is {} but the first cap must start at 0", first.after_s),
            );
        }
        for (index, pair) in self.caps.windows(2).enumerate() {
            let (earlier, later) = (pair[0], pair[1]);
            if later.after_s <= earlier.after_s {
                return invalid(
                    format!("caps[{}].after_s", index + 1),
                    format!("must be greater than the previous cap's {}", earlier.after_s),
                );
            }
            if later.max_ms < earlier.max_ms {
                return invalid(
                    format!("caps[{}].max_ms", index + 1),
                    format!(
                        "is lower than the previous cap's {}: caps may only relax as a match ages",
                        earlier.max_ms
                    ),
                );
            }
        }
        for (name, order) in
            [("preference_order", &self.preference_order), ("default_order", &self.default_order)]
        {
            let mut seen = HashSet::new();
            for (index, location) in order.iter().enumerate() {
                if location.is_empty() {
                    return invalid(format!("{name}[{index}]"), "must not be empty".into());
                }
                if !seen.insert(location) {
                    return invalid(format!("{name}[{index}]"), format!("lists {location} twice"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn default_caps_relax_at_15_and_30_seconds() {
        let policy = RegionPolicy::default();
        assert_eq!(policy.cap_in_force(secs(0)), Some(60));
        assert_eq!(policy.cap_in_force(Duration::from_millis(14_999)), Some(60));
        assert_eq!(policy.cap_in_force(secs(15)), Some(100));
        assert_eq!(policy.cap_in_force(secs(29)), Some(100));
        assert_eq!(policy.cap_in_force(secs(30)), Some(180));
        assert_eq!(policy.cap_in_force(secs(3600)), Some(180));
    }

    #[test]
    fn no_caps_means_no_cap() {
        let policy = RegionPolicy { caps: vec![], ..RegionPolicy::default() };
        assert_eq!(policy.cap_in_force(secs(10)), None);
    }

    #[test]
    fn a_late_first_cap_applies_from_the_start_and_a_tighter_later_cap_never_tightens() {
        let policy = RegionPolicy {
            caps: vec![
                LatencyCap { after_s: 20, max_ms: 90 },
                LatencyCap { after_s: 10, max_ms: 50 },
                LatencyCap { after_s: 40, max_ms: 70 },
            ],
            ..RegionPolicy::default()
        };
        assert_eq!(policy.cap_in_force(secs(0)), Some(50));
        assert_eq!(policy.cap_in_force(secs(20)), Some(90));
        assert_eq!(policy.cap_in_force(secs(50)), Some(90));
        let tied = RegionPolicy {
            caps: vec![LatencyCap { after_s: 12, max_ms: 20 }, LatencyCap { after_s: 12, max_ms: 21 }],
            ..RegionPolicy::default()
        };
        assert_eq!(tied.cap_in_force(secs(0)), Some(21), "tied caps: the loosest wins");
    }

    #[test]
    fn validate_accepts_the_default_and_names_bad_settings() {
        assert_eq!(RegionPolicy::default().validate(), Ok(()));
        let field_of = |policy: RegionPolicy| policy.validate().unwrap_err().field;
        let base = RegionPolicy::default();
        let mut late_start = base.clone();
        late_start.caps[0].after_s = 5;
        assert_eq!(field_of(late_start), "caps[0].after_s");
        let mut tightening = base.clone();
        tightening.caps[2].max_ms = 90;
        assert_eq!(field_of(tightening), "caps[2].max_ms");
        let mut unordered = base.clone();
        unordered.caps[1].after_s = 30;
        assert_eq!(field_of(unordered), "caps[2].after_s");
        let mut twice = base.clone();
        twice.default_order = vec!["eu-west-1".into(), "us-east-1".into(), "eu-west-1".into()];
        assert_eq!(field_of(twice), "default_order[2]");
        let mut empty = base;
        empty.preference_order = vec![String::new()];
        assert_eq!(field_of(empty), "preference_order[0]");
    }

    #[test]
    fn reads_a_partial_configuration_with_the_documented_spelling() {
        let policy: RegionPolicy = serde_json::from_value(json!({
            "objective": "mean",
            "missing_latency": {"penalty_ms": 250},
            "on_cap_exceeded": "fail",
            "caps": [{"after_s": 0, "max_ms": 80}]
        }))
        .unwrap();
        assert_eq!(policy.objective, Objective::Mean);
        assert_eq!(policy.missing_latency, MissingLatency::Penalty(250));
        assert_eq!(policy.on_cap_exceeded, CapExceeded::Fail);
        assert_eq!(policy.caps, vec![LatencyCap { after_s: 0, max_ms: 80 }]);
        assert!(policy.default_order.is_empty());
        let exclude: MissingLatency = serde_json::from_value(json!("exclude")).unwrap();
        assert_eq!(exclude, MissingLatency::Exclude);
        assert_eq!(
            serde_json::to_value(RegionPolicy::default()).unwrap()["on_cap_exceeded"],
            json!("best_effort")
        );
    }
}

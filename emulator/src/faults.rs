//! Fault injection: rules that make chosen operations slow, hang or fail, rolled with a seedable RNG.

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

/// An operation of the spec, named by its `operationId`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    /// POST /session.
    SessionRun,
    /// GET /session.
    SessionList,
    /// GET /session/{id}.
    DescribeSession,
    /// DELETE /session/{id}.
    SessionStop,
    /// PUT /session/player/join.
    JoinSession,
    /// DELETE /session/player/leave.
    LeaveSession,
    /// GET /artifacts.
    Artifacts,
    /// GET /available-location/{image}.
    GetAvailableLocations,
    /// GET /tag/{region}/{image}/{version}.
    TagExists,
    /// GET /logs.
    StreamLogs,
}

/// One fault rule, as written in the world file and in `PUT /_emulator/faults`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// The operation it applies to.
    pub operation: Operation,
    /// Only requests about this location (the body's for session-run, the session's for
    /// session-scoped operations, the region for tag-exists, the `location` filter for session-list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Answer this status with an `ErrorResponse` instead of performing the operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Chance in [0, 1] that a matching request is affected; 1 when absent.
    #[serde(default = "always")]
    pub probability: f64,
    /// Latency added before anything else happens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Never answer (until the client gives up or the emulator shuts down).
    #[serde(default, skip_serializing_if = "is_false")]
    pub hang: bool,
    /// With `status`: answer a `text/html` page, as a proxy in front of the API does.
    #[serde(default, skip_serializing_if = "is_false")]
    pub non_json: bool,
    /// Perform the operation first, then delay, hang or answer `status` in place of its answer:
    /// the operation took effect but its caller cannot tell (a proxy timing out on a slow
    /// backend, a connection lost on the way back).
    #[serde(default, skip_serializing_if = "is_false")]
    pub after: bool,
}

fn always() -> f64 {
    1.0
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl FaultRule {
    /// Checks the values serde cannot; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.probability) {
            return Err(format!("probability {} is not within [0, 1]", self.probability));
        }
        if let Some(status) = self.status
            && !(100..=599).contains(&status)
        {
            return Err(format!("status {status} is not an HTTP status code"));
        }
        if self.non_json && self.status.is_none() {
            return Err("non_json needs a status to answer".to_owned());
        }
        Ok(())
    }

    fn matches(&self, op: Operation, location: Option<&str>) -> bool {
        self.operation == op && self.location.as_deref().is_none_or(|wanted| Some(wanted) == location)
    }
}

/// What the rules decided for one request.
#[derive(Debug, Default, PartialEq)]
pub struct FaultPlan {
    /// Wait this long first.
    pub delay: Duration,
    /// Then, if any, do this instead of the operation.
    pub action: Option<FaultAction>,
    /// What happens after the operation was performed (the `after` rules).
    pub after: AfterPlan,
}

/// The `after` rules' part of a [`FaultPlan`]: applied to the operation's answer.
#[derive(Debug, Default, PartialEq)]
pub struct AfterPlan {
    /// Wait this long before answering.
    pub delay: Duration,
    /// Then, if any, do this instead of answering.
    pub action: Option<FaultAction>,
}

/// How a request ends when a fault replaces the operation.
#[derive(Debug, PartialEq)]
pub enum FaultAction {
    /// Never answer.
    Hang,
    /// Answer this status, with a JSON `ErrorResponse` or (non_json) an HTML page.
    Respond {
        /// The status to answer.
        status: u16,
        /// HTML instead of JSON.
        non_json: bool,
    },
}

/// The rules in force and the dice they are rolled with.
pub struct FaultInjector {
    rules: Vec<FaultRule>,
    rng: StdRng,
}

impl FaultInjector {
    /// Rules from the world; the same seed and the same request sequence give the same faults.
    pub fn new(rules: Vec<FaultRule>, seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        FaultInjector { rules, rng }
    }

    /// The rules in force.
    pub fn rules(&self) -> &[FaultRule] {
        &self.rules
    }

    /// Whether some rule for `op` is restricted to a location.
    pub fn has_location_rule(&self, op: Operation) -> bool {
        self.rules.iter().any(|r| r.operation == op && r.location.is_some())
    }

    /// Replaces every rule.
    pub fn replace(&mut self, rules: Vec<FaultRule>) {
        self.rules = rules;
    }

    /// Rolls every matching rule in order: delays add up (before the operation, or after it for
    /// `after` rules); the first firing rule with `hang` or `status` ends the roll. Non-matching
    /// rules consume no randomness, so adding a rule for another operation does not change this
    /// operation's sequence.
    pub fn plan(&mut self, op: Operation, location: Option<&str>) -> FaultPlan {
        let mut plan = FaultPlan::default();
        for rule in &self.rules {
            if !rule.matches(op, location) || self.rng.random::<f64>() >= rule.probability {
                continue;
            }
            let (delay, action) = if rule.after {
                (&mut plan.after.delay, &mut plan.after.action)
            } else {
                (&mut plan.delay, &mut plan.action)
            };
            *delay += Duration::from_millis(rule.delay_ms.unwrap_or(0));
            if rule.hang {
                *action = Some(FaultAction::Hang);
                break;
            }
            if let Some(status) = rule.status {
                *action = Some(FaultAction::Respond { status, non_json: rule.non_json });
                break;
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> FaultRule {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn location_rule_only_matches_its_location() {
        let mut f = FaultInjector::new(
            vec![rule(r#"{"operation":"session-run","location":"eu-west-1","status":420}"#)],
            Some(1),
        );
        assert_eq!(f.plan(Operation::SessionRun, Some("us-east-1")), FaultPlan::default());
        assert_eq!(f.plan(Operation::SessionList, Some("eu-west-1")), FaultPlan::default());
        assert_eq!(
            f.plan(Operation::SessionRun, Some("eu-west-1")).action,
            Some(FaultAction::Respond { status: 420, non_json: false })
        );
    }

    #[test]
    fn delays_add_up_until_a_terminal_rule() {
        let mut f = FaultInjector::new(
            vec![
                rule(r#"{"operation":"session-list","delay_ms":10}"#),
                rule(r#"{"operation":"session-list","delay_ms":5,"hang":true}"#),
                rule(r#"{"operation":"session-list","status":500}"#),
            ],
            Some(1),
        );
        let plan = f.plan(Operation::SessionList, None);
        assert_eq!(plan.delay, Duration::from_millis(15));
        assert_eq!(plan.action, Some(FaultAction::Hang));
    }

    #[test]
    fn after_rules_plan_the_answer_and_leave_the_operation_alone() {
        let mut f = FaultInjector::new(
            vec![
                rule(r#"{"operation":"session-run","delay_ms":10}"#),
                rule(r#"{"operation":"session-run","delay_ms":20,"after":true}"#),
                rule(r#"{"operation":"session-run","status":504,"after":true}"#),
                rule(r#"{"operation":"session-run","status":500}"#),
            ],
            Some(1),
        );
        let plan = f.plan(Operation::SessionRun, None);
        assert_eq!(plan.delay, Duration::from_millis(10));
        assert_eq!(plan.action, None, "the operation is performed");
        assert_eq!(plan.after.delay, Duration::from_millis(20));
        assert_eq!(plan.after.action, Some(FaultAction::Respond { status: 504, non_json: false }));
    }

    #[test]
    fn validation_rejects_out_of_range_values() {
        assert!(rule(r#"{"operation":"session-run","probability":1.5}"#).validate().is_err());
        assert!(rule(r#"{"operation":"session-run","status":42}"#).validate().is_err());
        assert!(rule(r#"{"operation":"session-run","non_json":true}"#).validate().is_err());
        assert!(rule(r#"{"operation":"session-run","status":502,"non_json":true}"#).validate().is_ok());
        assert!(serde_json::from_str::<FaultRule>(r#"{"operation":"nope"}"#).is_err());
        assert!(serde_json::from_str::<FaultRule>(r#"{"operation":"session-run","x":1}"#).is_err());
    }
}

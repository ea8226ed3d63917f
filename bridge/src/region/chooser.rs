//! The region chooser: candidates, latencies and policy in, ranked locations out. Pure.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use super::{CapExceeded, MissingLatency, NoLocation, Objective, RankedLocation, RegionChoice};
use super::{RegionPolicy, candidate_locations};

/// Everything the chooser needs to know about one match at one moment.
#[derive(Debug, Clone, Copy)]
pub struct RegionInput<'a> {
    /// The locations Gameye lists for the image.
    pub available: &'a [String],
    /// The request's `locations`, when it names any (already alias-mapped).
    pub requested: Option<&'a [String]>,
    /// Locations cooling down after a 420.
    pub cooling: &'a HashSet<String>,
    /// One map per player, Gameye location id → latency in ms (already alias-mapped, see
    /// [`super::LocationAliases::map_latencies`]). Player order does not matter.
    pub player_latencies: &'a [BTreeMap<String, u32>],
    /// How long ago matchmaking started (`requested_at`, else since the bridge accepted the
    /// match); zero when in the future.
    pub match_age: Duration,
}

/// Ranks the locations a match may go to, best first.
///
/// - Candidates: see [`candidate_locations`].
/// - Only players who reported at least one latency constrain the choice; a player who reported
///   none (a FlexMatch ticket without latencies, say) neither rules out nor ranks anything.
/// - No constraining player at all: the policy's `default_order` locations come first, in that
///   order, then the other candidates by preference order, then name. No cap applies.
/// - Otherwise, per candidate: a constraining player without a latency there rules it out
///   (`exclude`) or counts as the penalty (`penalty_ms`); the worst and mean latency over the
///   constraining players are compared with the cap in force at `match_age` (inclusive).
///   Locations are ranked within the cap first, then by the objective (`minimax`: worst, then
///   mean; `mean`: mean, then worst), then preference order (listed first, in list order), then
///   name. In `fail` mode locations beyond the cap are dropped; in `best_effort` mode they stay,
///   after all locations within it, so the engine falls back on them only when nothing within the
///   cap is left.
///
/// The result depends only on the sets given, not on the order of `available` or of the players.
///
/// A failure that only the cool-downs caused (every location the players could use is cooling
/// down, the others are ruled out or beyond the cap) is [`NoLocation::AllCoolingDown`]: asking
/// again when the cool-downs end may succeed.
pub fn choose_region(input: RegionInput<'_>, policy: &RegionPolicy) -> Result<RegionChoice, NoLocation> {
    let candidates = candidate_locations(input.available, input.requested, input.cooling)?;
    match rank(candidates, &input, policy) {
        Err(reason) if !reason.is_transient() && !input.cooling.is_empty() => {
            let without_cool_downs = candidate_locations(input.available, input.requested, &HashSet::new())?;
            match rank(without_cool_downs, &input, policy) {
                Ok(_) => Err(NoLocation::AllCoolingDown),
                Err(_) => Err(reason),
            }
        }
        ranked => ranked,
    }
}

fn rank(
    candidates: Vec<String>,
    input: &RegionInput<'_>,
    policy: &RegionPolicy,
) -> Result<RegionChoice, NoLocation> {
    let preference = Positions::of(&policy.preference_order);
    let constraining: Vec<&BTreeMap<String, u32>> =
        input.player_latencies.iter().filter(|latencies| !latencies.is_empty()).collect();
    if constraining.is_empty() {
        return Ok(in_default_order(candidates, policy, &preference));
    }

    let cap_ms = policy.cap_in_force(input.match_age);
    let mut scored: Vec<Scored> = candidates
        .into_iter()
        .filter_map(|location| score(location, &constraining, policy.missing_latency, cap_ms))
        .collect();
    if scored.is_empty() {
        return Err(NoLocation::MissingLatency);
    }
    scored.sort_by(|a, b| {
        b.within_cap
            .cmp(&a.within_cap)
            .then_with(|| objective_order(policy.objective, a, b))
            .then_with(|| preference.order(&a.location, &b.location))
            .then_with(|| a.location.cmp(&b.location))
    });

    if policy.on_cap_exceeded == CapExceeded::Fail {
        // Sorted within-cap first, so a first entry beyond the cap means all are.
        if let Some(cap_ms) = cap_ms
            && !scored[0].within_cap
        {
            return Err(NoLocation::AboveCap {
                cap_ms,
                best_worst_ms: scored.iter().map(|s| s.worst_ms).min().unwrap_or_default(),
                relaxes_later: policy.cap_in_force(Duration::MAX) > Some(cap_ms),
            });
        }
        scored.retain(|s| s.within_cap);
    }
    let players = constraining.len();
    let ranked = scored.into_iter().map(|s| s.ranked(players)).collect();
    Ok(RegionChoice::new(ranked, cap_ms))
}

/// A candidate's figures over the constraining players, kept as integers so ties are exact.
struct Scored {
    location: String,
    worst_ms: u32,
    total_ms: u64,
    within_cap: bool,
}

impl Scored {
    fn ranked(self, players: usize) -> RankedLocation {
        RankedLocation {
            location: self.location,
            worst_ms: Some(self.worst_ms),
            mean_ms: Some(self.total_ms as f64 / players as f64),
            within_cap: self.within_cap,
        }
    }
}

/// Scores one candidate; `None` when a player's missing latency rules it out.
fn score(
    location: String,
    constraining: &[&BTreeMap<String, u32>],
    missing: MissingLatency,
    cap_ms: Option<u32>,
) -> Option<Scored> {
    let mut worst_ms = 0;
    let mut total_ms = 0u64;
    for latencies in constraining {
        let ms = match (latencies.get(&location), missing) {
            (Some(&ms), _) => ms,
            (None, MissingLatency::Penalty(ms)) => ms,
            (None, MissingLatency::Exclude) => return None,
        };
        worst_ms = worst_ms.max(ms);
        total_ms += u64::from(ms);
    }
    let within_cap = cap_ms.is_none_or(|cap| worst_ms <= cap);
    Some(Scored { location, worst_ms, total_ms, within_cap })
}

// Every candidate is scored over the same players, so comparing totals is comparing means.
fn objective_order(objective: Objective, a: &Scored, b: &Scored) -> Ordering {
    match objective {
        Objective::Minimax => (a.worst_ms, a.total_ms).cmp(&(b.worst_ms, b.total_ms)),
        Objective::Mean => (a.total_ms, a.worst_ms).cmp(&(b.total_ms, b.worst_ms)),
    }
}

fn in_default_order(
    mut candidates: Vec<String>,
    policy: &RegionPolicy,
    preference: &Positions,
) -> RegionChoice {
    let default = Positions::of(&policy.default_order);
    candidates
        .sort_by(|a, b| default.order(a, b).then_with(|| preference.order(a, b)).then_with(|| a.cmp(b)));
    let ranked = candidates
        .into_iter()
        .map(|location| RankedLocation { location, worst_ms: None, mean_ms: None, within_cap: true })
        .collect();
    RegionChoice::new(ranked, None)
}

/// Positions in a configured order: listed locations come first, in list order.
struct Positions<'a>(HashMap<&'a str, usize>);

impl<'a> Positions<'a> {
    fn of(order: &'a [String]) -> Self {
        let mut positions = HashMap::new();
        for (index, location) in order.iter().enumerate() {
            positions.entry(location.as_str()).or_insert(index);
        }
        Self(positions)
    }

    fn order(&self, a: &str, b: &str) -> Ordering {
        let position = |location: &str| self.0.get(location).copied().unwrap_or(usize::MAX);
        position(a).cmp(&position(b))
    }
}

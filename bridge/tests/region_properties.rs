//! Properties of the region chooser, checked against a plain re-statement of its rules.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use bridge::{
    CapExceeded, LatencyCap, LocationAliases, MissingLatency, NoLocation, Objective, RegionChoice,
    RegionInput, RegionPolicy, choose_region,
};
use proptest::prelude::*;
use proptest::sample::select;

const POOL: [&str; 6] = ["ap", "eu-c", "eu-w", "sa", "us-e", "us-w"];

#[derive(Debug, Clone)]
struct Case {
    available: Vec<String>,
    requested: Option<Vec<String>>,
    cooling: HashSet<String>,
    players: Vec<BTreeMap<String, u32>>,
    policy: RegionPolicy,
    age_s: u64,
}

impl Case {
    fn choose(&self) -> Result<RegionChoice, NoLocation> {
        self.choose_at(self.age_s)
    }

    fn choose_at(&self, age_s: u64) -> Result<RegionChoice, NoLocation> {
        let input = RegionInput {
            available: &self.available,
            requested: self.requested.as_deref(),
            cooling: &self.cooling,
            player_latencies: &self.players,
            match_age: Duration::from_secs(age_s),
        };
        choose_region(input, &self.policy)
    }

    /// available ∩ requested − cooling, as a set.
    fn candidates(&self) -> BTreeSet<String> {
        self.available
            .iter()
            .filter(|l| self.requested.as_ref().is_none_or(|r| r.contains(l)))
            .filter(|l| !self.cooling.contains(*l))
            .cloned()
            .collect()
    }

    fn has_latency_data(&self) -> bool {
        self.players.iter().any(|p| !p.is_empty())
    }

    /// (worst, total) over the players who reported anything; `None` when a missing latency
    /// excludes the location.
    fn score(&self, location: &str) -> Option<(u32, u64)> {
        let mut figures = Vec::new();
        for player in self.players.iter().filter(|p| !p.is_empty()) {
            match (player.get(location), self.policy.missing_latency) {
                (Some(&ms), _) | (None, MissingLatency::Penalty(ms)) => figures.push(ms),
                (None, MissingLatency::Exclude) => return None,
            }
        }
        let worst = figures.iter().copied().max()?;
        Some((worst, figures.iter().map(|&ms| u64::from(ms)).sum()))
    }

    /// The loosest cap among those started by `age_s`; the earliest ones count as started at 0.
    fn cap_at(&self, age_s: u64) -> Option<u32> {
        let first_start = self.policy.caps.iter().map(|c| c.after_s).min()?;
        self.policy
            .caps
            .iter()
            .filter(|c| c.after_s <= age_s || c.after_s == first_start)
            .map(|c| c.max_ms)
            .max()
    }

    fn within_cap(&self, location: &str, age_s: u64) -> bool {
        match (self.score(location), self.cap_at(age_s)) {
            (Some((worst, _)), Some(cap)) => worst <= cap,
            _ => true,
        }
    }

    /// Which rule leaves no location, if one does (without the cool-down rule for lasting failures).
    fn expected_error(&self) -> Option<&'static str> {
        let candidates = self.candidates();
        let scored: Vec<&String> = candidates.iter().filter(|l| self.score(l).is_some()).collect();
        let fail_mode = self.policy.on_cap_exceeded == CapExceeded::Fail;
        if candidates.is_empty() {
            Some("no candidates")
        } else if !self.has_latency_data() {
            None
        } else if scored.is_empty() {
            Some("missing latency")
        } else if fail_mode && !scored.iter().any(|l| self.within_cap(l, self.age_s)) {
            Some("above cap")
        } else {
            None
        }
    }

    /// The objective as a key to minimise.
    fn objective_key(&self, location: &str) -> (u64, u64) {
        let (worst, total) = self.score(location).expect("scored");
        match self.policy.objective {
            Objective::Minimax => (u64::from(worst), total),
            Objective::Mean => (total, u64::from(worst)),
        }
    }
}

fn names(max: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(select(&POOL[..]).prop_map(String::from), 0..max)
}

fn policy() -> impl Strategy<Value = RegionPolicy> {
    let caps = prop::collection::vec((0u64..60, 20u32..250), 0..4)
        .prop_map(|caps| caps.into_iter().map(|(after_s, max_ms)| LatencyCap { after_s, max_ms }).collect());
    let missing = prop_oneof![Just(MissingLatency::Exclude), (0u32..300).prop_map(MissingLatency::Penalty)];
    (
        select(&[Objective::Minimax, Objective::Mean][..]),
        caps,
        missing,
        select(&[CapExceeded::BestEffort, CapExceeded::Fail][..]),
        names(4),
        names(4),
    )
        .prop_map(|(objective, caps, missing_latency, on_cap_exceeded, preference, default)| {
            RegionPolicy {
                objective,
                caps,
                missing_latency,
                on_cap_exceeded,
                preference_order: preference,
                default_order: default,
            }
        })
}

fn case() -> impl Strategy<Value = Case> {
    let player = prop::collection::btree_map(select(&POOL[..]).prop_map(String::from), 0u32..300, 0..6);
    (
        names(8),
        prop::option::of(names(6)),
        prop::collection::hash_set(select(&POOL[..]).prop_map(String::from), 0..3),
        prop::collection::vec(player, 1..5),
        policy(),
        0u64..90,
    )
        .prop_map(|(available, requested, cooling, players, policy, age_s)| Case {
            available,
            requested,
            cooling,
            players,
            policy,
            age_s,
        })
}

fn locations(choice: &RegionChoice) -> Vec<String> {
    choice.ranked().iter().map(|r| r.location.clone()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn answers_exactly_when_the_rules_leave_a_location(case in case()) {
        let candidates = case.candidates();
        let scored: Vec<&String> = candidates.iter().filter(|l| case.score(l).is_some()).collect();
        let mut expected_error = case.expected_error();
        // A lasting failure that only the cool-downs cause says so (they end).
        let lasting = match expected_error {
            Some("missing latency") => true,
            Some("above cap") => case.cap_at(u64::MAX) <= case.cap_at(case.age_s),
            _ => false,
        };
        let uncooled = Case { cooling: HashSet::new(), ..case.clone() };
        if lasting && uncooled.expected_error().is_none() {
            expected_error = Some("cooling");
        }
        match (case.choose(), expected_error) {
            (Err(NoLocation::AllCoolingDown), Some("cooling")) => {}
            (Ok(_), None) => {}
            (Err(NoLocation::MissingLatency), Some("missing latency")) => {}
            (Err(NoLocation::AboveCap { cap_ms, best_worst_ms, .. }), Some("above cap")) => {
                prop_assert_eq!(Some(cap_ms), case.cap_at(case.age_s));
                let best = scored.iter().map(|l| case.score(l).unwrap().0).min();
                prop_assert_eq!(Some(best_worst_ms), best);
            }
            (
                Err(NoLocation::NoneAvailable | NoLocation::NoneRequestedAvailable | NoLocation::AllCoolingDown),
                Some("no candidates"),
            ) => {}
            (got, expected) => prop_assert!(false, "got {:?}, expected {:?}", got, expected),
        }
    }

    #[test]
    fn returns_only_candidates_each_once_and_all_that_the_mode_allows(case in case()) {
        let Ok(choice) = case.choose() else { return Ok(()) };
        let returned = locations(&choice);
        let unique: BTreeSet<String> = returned.iter().cloned().collect();
        prop_assert_eq!(unique.len(), returned.len(), "duplicates in {:?}", returned);
        let expected: BTreeSet<String> = case
            .candidates()
            .into_iter()
            .filter(|l| !case.has_latency_data() || case.score(l).is_some())
            .filter(|l| case.policy.on_cap_exceeded == CapExceeded::BestEffort || case.within_cap(l, case.age_s))
            .collect();
        prop_assert_eq!(unique, expected);
    }

    #[test]
    fn the_chosen_location_is_never_beaten_on_the_objective_by_an_allowed_one(case in case()) {
        prop_assume!(case.has_latency_data());
        let Ok(choice) = case.choose() else { return Ok(()) };
        let chosen = &choice.chosen().location;
        let scored: Vec<String> = case.candidates().into_iter().filter(|l| case.score(l).is_some()).collect();
        let within: Vec<&String> = scored.iter().filter(|l| case.within_cap(l, case.age_s)).collect();
        let rivals: Vec<&String> = if within.is_empty() { scored.iter().collect() } else { within };
        prop_assert!(rivals.contains(&chosen), "{} is not allowed", chosen);
        for rival in rivals {
            prop_assert!(
                case.objective_key(chosen) <= case.objective_key(rival),
                "{} {:?} beats the chosen {} {:?}",
                rival, case.objective_key(rival), chosen, case.objective_key(chosen)
            );
        }
        prop_assert_eq!(choice.cap_exceeded(), !case.within_cap(chosen, case.age_s));
    }

    #[test]
    fn the_ranking_is_sorted_and_reports_true_figures(case in case()) {
        prop_assume!(case.has_latency_data());
        let Ok(choice) = case.choose() else { return Ok(()) };
        let players = case.players.iter().filter(|p| !p.is_empty()).count() as f64;
        for ranked in choice.ranked() {
            let (worst, total) = case.score(&ranked.location).unwrap();
            prop_assert_eq!(ranked.worst_ms, Some(worst));
            prop_assert_eq!(ranked.mean_ms, Some(total as f64 / players));
            prop_assert_eq!(ranked.within_cap, case.within_cap(&ranked.location, case.age_s));
        }
        for pair in choice.ranked().windows(2) {
            let key = |r: &bridge::RankedLocation| (!r.within_cap, case.objective_key(&r.location));
            prop_assert!(key(&pair[0]) <= key(&pair[1]), "{:?} before {:?}", pair[0], pair[1]);
        }
    }

    #[test]
    fn fail_mode_never_exceeds_the_cap(case in case()) {
        let mut case = case;
        case.policy.on_cap_exceeded = CapExceeded::Fail;
        let Ok(choice) = case.choose() else { return Ok(()) };
        prop_assert!(!choice.cap_exceeded());
        if let (true, Some(cap)) = (case.has_latency_data(), case.cap_at(case.age_s)) {
            for ranked in choice.ranked() {
                let (worst, _) = case.score(&ranked.location).unwrap();
                prop_assert!(worst <= cap, "{} has worst {} over cap {}", ranked.location, worst, cap);
            }
        }
    }

    #[test]
    fn relaxation_is_monotone(case in case(), extra_s in 0u64..60) {
        let older = case.age_s + extra_s;
        let within = |age_s| -> Option<BTreeSet<String>> {
            case.choose_at(age_s).ok().map(|choice| {
                choice.ranked().iter().filter(|r| r.within_cap).map(|r| r.location.clone()).collect()
            })
        };
        match (within(case.age_s), within(older)) {
            (Some(young), Some(old)) => prop_assert!(young.is_subset(&old), "{:?} ⊄ {:?}", young, old),
            (Some(young), None) => prop_assert!(false, "older match lost every location: {:?}", young),
            (None, _) => {}
        }
        let young_cap = case.policy.cap_in_force(Duration::from_secs(case.age_s));
        let old_cap = case.policy.cap_in_force(Duration::from_secs(older));
        prop_assert!(young_cap <= old_cap);
        prop_assert_eq!(young_cap, case.cap_at(case.age_s));
    }

    #[test]
    fn input_order_does_not_change_the_answer(case in case()) {
        let mut shuffled = case.clone();
        shuffled.available.reverse();
        shuffled.players.reverse();
        if let Some(requested) = shuffled.requested.as_mut() {
            requested.reverse();
        }
        prop_assert_eq!(case.choose(), shuffled.choose());
    }

    #[test]
    fn without_latency_data_the_default_order_leads(case in case()) {
        let mut case = case;
        case.players = vec![BTreeMap::new(); case.players.len()];
        let Ok(choice) = case.choose() else { return Ok(()) };
        let candidates = case.candidates();
        let mut expected_lead: Vec<String> = Vec::new();
        for location in &case.policy.default_order {
            if candidates.contains(location) && !expected_lead.contains(location) {
                expected_lead.push(location.clone());
            }
        }
        let returned = locations(&choice);
        prop_assert_eq!(&returned[..expected_lead.len()], &expected_lead[..]);
        prop_assert!(choice.ranked().iter().all(|r| r.within_cap && r.worst_ms.is_none()));
    }

    #[test]
    fn aliases_keep_each_locations_lowest_latency(
        reported in prop::collection::btree_map(select(&POOL[..]).prop_map(String::from), 0u32..300, 0..6),
        targets in prop::collection::vec(select(&["eu", "us"][..]), POOL.len()),
    ) {
        let aliases: LocationAliases = POOL
            .iter()
            .zip(&targets)
            .take(4)
            .map(|(from, to)| ((*from).to_owned(), (*to).to_owned()))
            .collect();
        let mapped = aliases.map_latencies(&reported);
        for (name, &ms) in &reported {
            let id = aliases.resolve(name);
            prop_assert!(mapped[id] <= ms);
        }
        for (id, &ms) in &mapped {
            prop_assert!(reported.iter().any(|(name, &r)| aliases.resolve(name) == id && r == ms));
        }
    }
}

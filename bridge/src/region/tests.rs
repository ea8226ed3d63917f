//! Hand-made cases of the region chooser, each showing one rule.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::*;

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|name| (*name).to_owned()).collect()
}

fn player(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
    pairs.iter().map(|&(name, ms)| (name.to_owned(), ms)).collect()
}

/// A policy without caps, so only the rule under test decides.
fn uncapped() -> RegionPolicy {
    RegionPolicy { caps: vec![], ..RegionPolicy::default() }
}

fn choose(
    available: &[&str],
    players: &[BTreeMap<String, u32>],
    age_s: u64,
    policy: &RegionPolicy,
) -> Result<RegionChoice, NoLocation> {
    let available = names(available);
    let input = RegionInput {
        available: &available,
        requested: None,
        cooling: &HashSet::new(),
        player_latencies: players,
        match_age: Duration::from_secs(age_s),
    };
    choose_region(input, policy)
}

fn order(choice: &RegionChoice) -> Vec<&str> {
    choice.ranked().iter().map(|r| r.location.as_str()).collect()
}

#[test]
fn minimax_protects_the_worst_player_while_mean_favours_the_majority() {
    let players = [player(&[("eu", 20), ("us", 100)]), player(&[("eu", 150), ("us", 90)])];
    let minimax = choose(&["eu", "us"], &players, 0, &uncapped()).unwrap();
    assert_eq!(order(&minimax), ["us", "eu"]);
    assert_eq!(minimax.chosen().worst_ms, Some(100));
    assert_eq!(minimax.chosen().mean_ms, Some(95.0));
    let mean_policy = RegionPolicy { objective: Objective::Mean, ..uncapped() };
    let mean = choose(&["eu", "us"], &players, 0, &mean_policy).unwrap();
    assert_eq!(order(&mean), ["eu", "us"]);
    assert_eq!(mean.chosen().mean_ms, Some(85.0));
}

#[test]
fn minimax_ties_are_broken_by_mean_before_name() {
    let players = [player(&[("aa", 50), ("zz", 50)]), player(&[("aa", 40), ("zz", 10)])];
    let choice = choose(&["aa", "zz"], &players, 0, &uncapped()).unwrap();
    assert_eq!(order(&choice), ["zz", "aa"]);
}

#[test]
fn mean_ties_are_broken_by_worst_before_name() {
    let players = [player(&[("aa", 10), ("zz", 30)]), player(&[("aa", 50), ("zz", 30)])];
    let policy = RegionPolicy { objective: Objective::Mean, ..uncapped() };
    let choice = choose(&["aa", "zz"], &players, 0, &policy).unwrap();
    assert_eq!(order(&choice), ["zz", "aa"]);
}

#[test]
fn full_ties_go_to_preference_order_then_name() {
    let players = [player(&[("a", 30), ("b", 30), ("c", 30), ("d", 30)])];
    let policy = RegionPolicy { preference_order: names(&["c", "b"]), ..uncapped() };
    let choice = choose(&["a", "b", "c", "d"], &players, 0, &policy).unwrap();
    assert_eq!(order(&choice), ["c", "b", "a", "d"]);
}

#[test]
fn a_missing_latency_excludes_the_location_or_costs_the_penalty() {
    let players = [player(&[("eu", 30), ("us", 80)]), player(&[("us", 70)])];
    let excluded = choose(&["eu", "us"], &players, 0, &uncapped()).unwrap();
    assert_eq!(order(&excluded), ["us"]);
    let penalty = RegionPolicy { missing_latency: MissingLatency::Penalty(40), ..uncapped() };
    let charged = choose(&["eu", "us"], &players, 0, &penalty).unwrap();
    assert_eq!(order(&charged), ["eu", "us"]);
    assert_eq!(charged.chosen().worst_ms, Some(40));
    assert_eq!(charged.chosen().mean_ms, Some(35.0));
}

#[test]
fn a_penalty_counts_against_the_cap() {
    let players = [player(&[("eu", 30), ("us", 50)]), player(&[("us", 55)])];
    let policy = RegionPolicy {
        missing_latency: MissingLatency::Penalty(70),
        on_cap_exceeded: CapExceeded::Fail,
        ..RegionPolicy::default()
    };
    let choice = choose(&["eu", "us"], &players, 0, &policy).unwrap();
    assert_eq!(order(&choice), ["us"]);
}

#[test]
fn every_location_missing_someones_latency_is_no_location() {
    let players = [player(&[("eu", 30)]), player(&[("us", 30)])];
    let result = choose(&["eu", "us"], &players, 0, &uncapped());
    assert_eq!(result, Err(NoLocation::MissingLatency));
}

#[test]
fn a_player_without_latencies_does_not_constrain() {
    let players = [player(&[("us", 40), ("eu", 90)]), player(&[])];
    let choice = choose(&["eu", "us"], &players, 0, &uncapped()).unwrap();
    assert_eq!(order(&choice), ["us", "eu"]);
    assert_eq!(choice.chosen().mean_ms, Some(40.0));
}

#[test]
fn without_latency_data_the_default_order_leads_then_preference_then_name() {
    let policy = RegionPolicy {
        default_order: names(&["us-east-1", "eu-west-1", "not-available"]),
        preference_order: names(&["us-west-2"]),
        ..RegionPolicy::default()
    };
    let available = ["ap-northeast-1", "eu-central-1", "eu-west-1", "us-west-2", "us-east-1"];
    let choice = choose(&available, &[player(&[]), player(&[])], 0, &policy).unwrap();
    assert_eq!(order(&choice), ["us-east-1", "eu-west-1", "us-west-2", "ap-northeast-1", "eu-central-1"]);
    assert!(!choice.cap_exceeded());
    assert_eq!(choice.chosen().worst_ms, None);
    assert_eq!(choice.cap_ms(), None);
}

#[test]
fn best_effort_takes_the_best_location_beyond_the_cap_and_says_so() {
    let players = [player(&[("eu", 70), ("us", 120)])];
    let choice = choose(&["eu", "us"], &players, 0, &RegionPolicy::default()).unwrap();
    assert_eq!(order(&choice), ["eu", "us"]);
    assert!(choice.cap_exceeded());
    assert_eq!(choice.cap_ms(), Some(60));
}

#[test]
fn best_effort_ranks_locations_within_the_cap_before_better_ones_beyond_it() {
    // Within the cap only by the mean: "b" has the lower mean, but its worst player is over 60 ms.
    let players = [player(&[("a", 55), ("b", 61)]), player(&[("a", 55), ("b", 1)])];
    let policy = RegionPolicy { objective: Objective::Mean, ..RegionPolicy::default() };
    let choice = choose(&["a", "b"], &players, 0, &policy).unwrap();
    assert_eq!(order(&choice), ["a", "b"]);
    assert!(!choice.cap_exceeded());
    assert!(!choice.ranked()[1].within_cap);
}

#[test]
fn fail_mode_drops_locations_beyond_the_cap_or_fails() {
    let policy = RegionPolicy { on_cap_exceeded: CapExceeded::Fail, ..RegionPolicy::default() };
    let mixed = [player(&[("eu", 60), ("us", 61)])];
    let choice = choose(&["eu", "us"], &mixed, 0, &policy).unwrap();
    assert_eq!(order(&choice), ["eu"], "the cap is inclusive");
    let far = [player(&[("eu", 70), ("us", 120)])];
    assert_eq!(
        choose(&["eu", "us"], &far, 0, &policy),
        Err(NoLocation::AboveCap { cap_ms: 60, best_worst_ms: 70, relaxes_later: true })
    );
    let at_loosest = choose(&["eu", "us"], &[player(&[("eu", 190)])], 45, &policy);
    assert!(matches!(at_loosest, Err(NoLocation::AboveCap { relaxes_later: false, .. })));
}

#[test]
fn the_cap_relaxes_as_the_match_ages() {
    let policy = RegionPolicy { on_cap_exceeded: CapExceeded::Fail, ..RegionPolicy::default() };
    let players = [player(&[("eu", 90)])];
    assert!(choose(&["eu"], &players, 14, &policy).is_err());
    let older = choose(&["eu"], &players, 15, &policy).unwrap();
    assert_eq!(older.cap_ms(), Some(100));
    assert_eq!(order(&older), ["eu"]);
}

#[test]
fn requested_and_cooling_locations_narrow_the_ranking() {
    let available = names(&["eu", "us", "ap"]);
    let requested = names(&["eu", "us"]);
    let cooling: HashSet<String> = names(&["eu"]).into_iter().collect();
    let players = [player(&[("eu", 10), ("us", 50), ("ap", 5)])];
    let input = RegionInput {
        available: &available,
        requested: Some(&requested),
        cooling: &cooling,
        player_latencies: &players,
        match_age: Duration::ZERO,
    };
    let choice = choose_region(input, &uncapped()).unwrap();
    assert_eq!(order(&choice), ["us"]);
}

/// Cool-downs end: when they alone leave nothing the players can use, the match may be placed
/// later (`NO_CAPACITY`, retryable), where a location nobody can use would stay so.
#[test]
fn a_failure_the_cool_downs_alone_cause_says_every_location_is_cooling_down() {
    let available = names(&["eu", "de", "us"]);
    let cooling: HashSet<String> = names(&["eu", "de"]).into_iter().collect();
    let eu_only = [player(&[("eu", 30), ("de", 35)])];
    let fail_mode = RegionPolicy { on_cap_exceeded: CapExceeded::Fail, ..RegionPolicy::default() };
    let input = |players| RegionInput {
        available: &available,
        requested: None,
        cooling: &cooling,
        player_latencies: players,
        match_age: Duration::from_secs(45),
    };
    // `us` is ruled out (nobody reported it): only the cooling locations were usable.
    assert_eq!(choose_region(input(&eu_only), &RegionPolicy::default()), Err(NoLocation::AllCoolingDown));
    // `us` beyond the loosest cap, in fail mode.
    let us_far = [player(&[("eu", 30), ("de", 35), ("us", 250)])];
    assert_eq!(choose_region(input(&us_far), &fail_mode), Err(NoLocation::AllCoolingDown));
    // Nothing usable even without the cool-downs: the reason stands.
    let elsewhere = [player(&[("ap", 30)])];
    assert_eq!(choose_region(input(&elsewhere), &RegionPolicy::default()), Err(NoLocation::MissingLatency));
    let all_far = [player(&[("eu", 230), ("de", 235), ("us", 250)])];
    assert!(matches!(
        choose_region(input(&all_far), &fail_mode),
        Err(NoLocation::AboveCap { relaxes_later: false, .. })
    ));
}

#[test]
fn aliases_map_reported_names_before_choosing() {
    let aliases: LocationAliases = [("frankfurt", "eu-central-1"), ("dublin", "eu-west-1")]
        .into_iter()
        .map(|(from, to)| (from.to_owned(), to.to_owned()))
        .collect();
    let reported = [
        player(&[("frankfurt", 20), ("dublin", 35)]),
        player(&[("frankfurt", 45), ("eu-west-1", 25), ("dublin", 50)]),
    ];
    let players: Vec<_> = reported.iter().map(|p| aliases.map_latencies(p)).collect();
    let choice = choose(&["eu-west-1", "eu-central-1"], &players, 0, &uncapped()).unwrap();
    assert_eq!(order(&choice), ["eu-west-1", "eu-central-1"]);
    assert_eq!(choice.chosen().worst_ms, Some(35));
}

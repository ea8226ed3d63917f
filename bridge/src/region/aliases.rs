//! Location aliases: the names players and matchmakers report, mapped to Gameye location ids.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A map from a reported location name (e.g. an AWS region a client pinged) to the Gameye
/// location id it stands for. Names without an alias are taken to be Gameye ids already.
///
/// Matching is exact (case-sensitive) and one step deep: an alias's target is not looked up again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LocationAliases(BTreeMap<String, String>);

impl LocationAliases {
    /// Aliases from `reported name → Gameye id` pairs.
    pub fn new(aliases: BTreeMap<String, String>) -> Self {
        Self(aliases)
    }

    /// The Gameye id for a reported name.
    pub fn resolve<'a>(&'a self, reported: &'a str) -> &'a str {
        self.0.get(reported).map_or(reported, String::as_str)
    }

    /// One player's latencies keyed by Gameye id. When several reported names map to the same id,
    /// the lowest latency is kept: the player can reach that location at least that fast.
    pub fn map_latencies(&self, reported: &BTreeMap<String, u32>) -> BTreeMap<String, u32> {
        let mut mapped = BTreeMap::new();
        for (name, &ms) in reported {
            mapped
                .entry(self.resolve(name).to_owned())
                .and_modify(|kept: &mut u32| *kept = (*kept).min(ms))
                .or_insert(ms);
        }
        mapped
    }

    /// Location names mapped to Gameye ids, in order, keeping the first of any duplicates.
    pub fn map_locations(&self, reported: &[String]) -> Vec<String> {
        let mut mapped: Vec<String> = Vec::with_capacity(reported.len());
        for name in reported {
            let id = self.resolve(name);
            if !mapped.iter().any(|kept| kept == id) {
                mapped.push(id.to_owned());
            }
        }
        mapped
    }
}

impl FromIterator<(String, String)> for LocationAliases {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        Self(pairs.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aliases() -> LocationAliases {
        [("frankfurt", "eu-central-1"), ("eu-central", "eu-central-1"), ("virginia", "us-east-1")]
            .into_iter()
            .map(|(from, to)| (from.to_owned(), to.to_owned()))
            .collect()
    }

    fn latencies(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|&(name, ms)| (name.to_owned(), ms)).collect()
    }

    #[test]
    fn resolves_aliases_and_passes_other_names_through() {
        let aliases = aliases();
        assert_eq!(aliases.resolve("frankfurt"), "eu-central-1");
        assert_eq!(aliases.resolve("eu-west-1"), "eu-west-1");
        assert_eq!(aliases.resolve("Frankfurt"), "Frankfurt");
    }

    #[test]
    fn two_names_for_one_location_keep_the_lower_latency() {
        let mapped = aliases().map_latencies(&latencies(&[
            ("frankfurt", 40),
            ("eu-central", 25),
            ("eu-central-1", 30),
            ("virginia", 90),
        ]));
        assert_eq!(mapped, latencies(&[("eu-central-1", 25), ("us-east-1", 90)]));
    }

    #[test]
    fn mapped_locations_keep_order_and_drop_duplicates() {
        let names = ["virginia", "eu-west-1", "us-east-1", "frankfurt"].map(String::from);
        assert_eq!(
            aliases().map_locations(&names),
            ["us-east-1", "eu-west-1", "eu-central-1"].map(String::from)
        );
    }

    #[test]
    fn reads_a_plain_table() {
        let aliases: LocationAliases = serde_json::from_str(r#"{"frankfurt": "eu-central-1"}"#).unwrap();
        assert_eq!(aliases.resolve("frankfurt"), "eu-central-1");
    }
}

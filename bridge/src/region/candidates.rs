//! The candidate set: where a match may go before latencies are considered.

use std::collections::HashSet;

use super::NoLocation;

/// The locations a match may be placed in: those `available` for the image, narrowed to the
/// request's `requested` locations when it names any, minus those `cooling` down after a 420.
///
/// The result keeps the order of `available` and holds no duplicates. An empty set is an error
/// saying which step emptied it.
pub fn candidate_locations(
    available: &[String],
    requested: Option<&[String]>,
    cooling: &HashSet<String>,
) -> Result<Vec<String>, NoLocation> {
    let mut seen = HashSet::new();
    let unique_available: Vec<&String> =
        available.iter().filter(|location| seen.insert(location.as_str())).collect();
    if unique_available.is_empty() {
        return Err(NoLocation::NoneAvailable);
    }
    let allowed: Vec<&String> = match requested {
        Some(requested) => {
            unique_available.into_iter().filter(|location| requested.contains(location)).collect()
        }
        None => unique_available,
    };
    if allowed.is_empty() {
        return Err(NoLocation::NoneRequestedAvailable);
    }
    let candidates: Vec<String> =
        allowed.into_iter().filter(|location| !cooling.contains(*location)).cloned().collect();
    if candidates.is_empty() {
        return Err(NoLocation::AllCoolingDown);
    }
    Ok(candidates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| (*name).to_owned()).collect()
    }

    fn set(list: &[&str]) -> HashSet<String> {
        names(list).into_iter().collect()
    }

    #[test]
    fn intersects_with_the_request_and_removes_cooling_locations_in_available_order() {
        let available = names(&["us-east-1", "eu-west-1", "eu-central-1", "ap-northeast-1"]);
        let requested = names(&["eu-central-1", "eu-west-1", "us-east-1", "sa-east-1"]);
        let result = candidate_locations(&available, Some(&requested), &set(&["us-east-1"]));
        assert_eq!(result, Ok(names(&["eu-west-1", "eu-central-1"])));
    }

    #[test]
    fn no_request_list_allows_every_available_location_once() {
        let available = names(&["eu-west-1", "us-east-1", "eu-west-1"]);
        let result = candidate_locations(&available, None, &HashSet::new());
        assert_eq!(result, Ok(names(&["eu-west-1", "us-east-1"])));
    }

    #[test]
    fn an_empty_set_says_which_step_emptied_it() {
        let available = names(&["eu-west-1"]);
        assert_eq!(candidate_locations(&[], None, &HashSet::new()), Err(NoLocation::NoneAvailable));
        assert_eq!(
            candidate_locations(&available, Some(&names(&["us-east-1"])), &HashSet::new()),
            Err(NoLocation::NoneRequestedAvailable)
        );
        assert_eq!(
            candidate_locations(&available, None, &set(&["eu-west-1"])),
            Err(NoLocation::AllCoolingDown)
        );
    }
}

//! The query of GET /session: `all`, exact-match filters, `playerCount[lt|gt]`, `filter[..]`, `filterNot[..]`.
//!
//! The spec documents no 4xx for this operation, so nothing here can fail: an unparseable value is
//! ignored rather than rejected.

use super::query::is_true;
use crate::sessions::{Session, Status};

/// The parsed query.
#[derive(Debug, Default)]
pub struct ListQuery {
    /// Every active status, not only `running`.
    pub all: bool,
    /// `location=`.
    pub location: Option<String>,
    image: Option<String>,
    tag: Option<String>,
    host: Option<String>,
    player_lt: Option<usize>,
    player_gt: Option<usize>,
    /// `filter[k]=v`: every pair must be among the user labels.
    filter: Vec<(String, String)>,
    /// `filterNot[k]=v`: no pair may be among the user labels.
    filter_not: Vec<(String, String)>,
}

impl ListQuery {
    /// Parses a raw query string (`None` = no query).
    pub fn parse(raw: Option<&str>) -> Self {
        let mut q = ListQuery::default();
        for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            let value = value.into_owned();
            match key.as_ref() {
                "all" => q.all = is_true(&value),
                "location" => q.location = Some(value),
                "image" => q.image = Some(value),
                "tag" => q.tag = Some(value),
                "host" => q.host = Some(value),
                "playerCount[lt]" => q.player_lt = value.trim().parse().ok().or(q.player_lt),
                "playerCount[gt]" => q.player_gt = value.trim().parse().ok().or(q.player_gt),
                key => {
                    if let Some(label) = bracketed(key, "filter") {
                        q.filter.push((label.to_owned(), value));
                    } else if let Some(label) = bracketed(key, "filterNot") {
                        q.filter_not.push((label.to_owned(), value));
                    }
                }
            }
        }
        q
    }

    /// One `filter[k]=v` pair, if any: only sessions carrying it can match.
    pub fn first_filter(&self) -> Option<&(String, String)> {
        self.filter.first()
    }

    /// Whether an active session with status `status` belongs in the answer.
    pub fn matches(&self, s: &Session, status: Status) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        let label_is = |(k, v): &(String, String)| s.user_labels.get(k) == Some(v);
        let players = s.players.len();
        (self.all || status == Status::Running)
            && eq(&self.location, &s.location)
            && eq(&self.image, &s.image)
            && eq(&self.tag, &s.tag)
            && self.host.as_deref().is_none_or(|h| h == s.host.to_string())
            && self.player_lt.is_none_or(|lt| players < lt)
            && self.player_gt.is_none_or(|gt| players > gt)
            && self.filter.iter().all(label_is)
            && !self.filter_not.iter().any(label_is)
    }
}

/// `name[inner]` → `inner`.
fn bracketed<'k>(key: &'k str, name: &str) -> Option<&'k str> {
    key.strip_prefix(name)?.strip_prefix('[')?.strip_suffix(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_deep_objects_and_ignores_garbage() {
        let q = ListQuery::parse(Some(
            "all=true&filter%5Bmode%5D=ranked&filterNot[region]=eu&playerCount[lt]=x&playerCount[gt]=2&zzz=1",
        ));
        assert!(q.all);
        assert_eq!(q.filter, vec![("mode".to_owned(), "ranked".to_owned())]);
        assert_eq!(q.filter_not, vec![("region".to_owned(), "eu".to_owned())]);
        assert_eq!(q.player_lt, None);
        assert_eq!(q.player_gt, Some(2));
        assert!(!ListQuery::parse(Some("all=maybe")).all);
        assert!(!ListQuery::parse(None).all);
    }
}

//! Query-string helpers shared by the handlers that must never reject a query.

use std::collections::HashMap;

/// A raw query as a map; the last value of a repeated key wins.
pub fn query_map(raw: Option<&str>) -> HashMap<String, String> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes()).into_owned().collect()
}

/// Booleans as Gameye's Go backend reads them (strconv.ParseBool's spellings of true); anything
/// else is false.
pub fn is_true(v: &str) -> bool {
    matches!(v, "true" | "True" | "TRUE" | "1" | "t" | "T")
}

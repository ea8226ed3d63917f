//! Durations as Gameye and the world file write them.

use std::time::Duration;

/// Parses a Go-style duration (`"1h"`, `"2h30m"`, `"90m"`, `"1.5h"`, `"45s"`): one or more
/// `<number><unit>` pairs with units `h`, `m` or `s`, as Gameye's Go backend accepts for `ttl`.
///
/// Returns `None` for anything else, including an empty string and a bare number without unit.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit = rest.chars().next()?;
        let seconds = match unit {
            'h' => 3600.0,
            'm' => 60.0,
            's' => 1.0,
            _ => return None,
        };
        rest = &rest[unit.len_utf8()..];
        total += number * seconds;
    }
    // 100 years: beyond that the value is a typo, and Duration::from_secs_f64 would panic on overflow.
    (total.is_finite() && total <= 3_153_600_000.0).then(|| Duration::from_secs_f64(total))
}

/// Serde helper for world durations written for humans (`"1s"`, `"250ms"`, `"0s"`).
pub(crate) mod human {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| D::Error::custom(format!("{s:?}: {e}")))
    }

    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*v).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_go_duration("2h30m"), Some(Duration::from_secs(9000)));
        assert_eq!(parse_go_duration("90m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        for bad in ["", "1", "h", "1x", "1h30", "-1h", "1 h", "1.2.3h", "99999999999h"] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }
}

//! Session lifetimes: `"1h"`, `"90m"`, `"2h30m"` or integer seconds, as Gameye's users write them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A positive session lifetime in whole seconds.
///
/// Read from a string of `h`/`m`/`s` parts in that order (`"2h30m"`, `"45s"`), a string of digits
/// (seconds), or a JSON integer (seconds). Written back exactly as `"2h30m"`; Gameye itself takes
/// only minutes, see [`Ttl::to_gameye`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl {
    seconds: u64,
}

/// A TTL that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ttl {input:?}: {reason}")]
pub struct ParseTtlError {
    input: String,
    reason: &'static str,
}

impl Ttl {
    /// A TTL of `seconds`; `None` for zero.
    pub fn from_secs(seconds: u64) -> Option<Self> {
        (seconds > 0).then_some(Self { seconds })
    }

    /// The lifetime in seconds.
    pub fn as_secs(self) -> u64 {
        self.seconds
    }

    /// The lifetime as a duration.
    pub fn as_duration(self) -> Duration {
        Duration::from_secs(self.seconds)
    }

    /// The form Gameye's spec accepts: hours and minutes, rounded up to a whole minute as Gameye
    /// would round it anyway (`"1h"`, `"2h30m"`, `"1m"` for 45 s).
    pub fn to_gameye(self) -> String {
        let minutes = self.seconds.div_ceil(60);
        match (minutes / 60, minutes % 60) {
            (0, m) => format!("{m}m"),
            (h, 0) => format!("{h}h"),
            (h, m) => format!("{h}h{m}m"),
        }
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (hours, minutes, seconds) = (self.seconds / 3600, self.seconds % 3600 / 60, self.seconds % 60);
        for (value, unit) in [(hours, 'h'), (minutes, 'm'), (seconds, 's')] {
            if value > 0 {
                write!(formatter, "{value}{unit}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for Ttl {
    type Err = ParseTtlError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason| ParseTtlError { input: input.to_owned(), reason };
        if input.is_empty() {
            return Err(fail("empty"));
        }
        if input.bytes().all(|b| b.is_ascii_digit()) {
            let seconds = input.parse().map_err(|_| fail("too large"))?;
            return Ttl::from_secs(seconds).ok_or_else(|| fail("must be positive"));
        }
        let mut seconds: u64 = 0;
        let mut number: Option<u64> = None;
        // Units must come in this order, each at most once.
        let mut units_left: &[(char, u64)] = &[('h', 3600), ('m', 60), ('s', 1)];
        for c in input.chars() {
            if let Some(digit) = c.to_digit(10) {
                let value = number.unwrap_or(0);
                number = Some(
                    value
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(u64::from(digit)))
                        .ok_or_else(|| fail("too large"))?,
                );
                continue;
            }
            let position = units_left.iter().position(|&(unit, _)| unit == c);
            let (Some(position), Some(value)) = (position, number.take()) else {
                return Err(fail("expected numbers with units h, m, s in that order, like 2h30m"));
            };
            let part = value.checked_mul(units_left[position].1);
            seconds = part.and_then(|part| seconds.checked_add(part)).ok_or_else(|| fail("too large"))?;
            units_left = &units_left[position + 1..];
        }
        if number.is_some() {
            return Err(fail("a number needs a unit (h, m or s)"));
        }
        Ttl::from_secs(seconds).ok_or_else(|| fail("must be positive"))
    }
}

impl Serialize for Ttl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ttl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TtlVisitor)
    }
}

struct TtlVisitor;

impl Visitor<'_> for TtlVisitor {
    type Value = Ttl;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str(r#"a duration like "1h", "90m", "2h30m", or a number of seconds"#)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Ttl, E> {
        value.parse().map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Ttl, E> {
        Ttl::from_secs(value).ok_or_else(|| E::invalid_value(de::Unexpected::Unsigned(0), &self))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Ttl, E> {
        let seconds =
            u64::try_from(value).map_err(|_| E::invalid_value(de::Unexpected::Signed(value), &self))?;
        self.visit_u64(seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ttl(input: &str) -> Result<u64, ParseTtlError> {
        input.parse::<Ttl>().map(Ttl::as_secs)
    }

    #[test]
    fn reads_unit_strings_and_plain_seconds() {
        assert_eq!(ttl("1h"), Ok(3600));
        assert_eq!(ttl("90m"), Ok(5400));
        assert_eq!(ttl("2h30m"), Ok(9000));
        assert_eq!(ttl("1h0m5s"), Ok(3605));
        assert_eq!(ttl("45s"), Ok(45));
        assert_eq!(ttl("3600"), Ok(3600));
    }

    #[test]
    fn rejects_what_is_not_a_positive_duration() {
        for input in ["", "0", "0m", "1x", "h", "30m1h", "1h1h", "1h30", " 1h", "1.5h", "-1m"] {
            assert!(ttl(input).is_err(), "{input:?} should be rejected");
        }
        assert!(ttl("99999999999999999999").is_err());
        assert!(ttl("9999999999999999999h").is_err());
    }

    #[test]
    fn writes_back_exactly_and_for_gameye_in_whole_minutes() {
        let t: Ttl = "2h30m".parse().unwrap();
        assert_eq!(t.to_string(), "2h30m");
        assert_eq!(t.to_gameye(), "2h30m");
        let t = Ttl::from_secs(3605).unwrap();
        assert_eq!(t.to_string(), "1h5s");
        assert_eq!(t.to_gameye(), "1h1m");
        assert_eq!(Ttl::from_secs(45).unwrap().to_gameye(), "1m");
        assert_eq!(Ttl::from_secs(7200).unwrap().to_gameye(), "2h");
        assert_eq!(Ttl::from_secs(0), None);
    }

    #[test]
    fn json_accepts_strings_and_integers_and_round_trips() {
        let from_string: Ttl = serde_json::from_str(r#""90m""#).unwrap();
        let from_integer: Ttl = serde_json::from_str("5400").unwrap();
        assert_eq!(from_string, from_integer);
        assert_eq!(serde_json::to_string(&from_string).unwrap(), r#""1h30m""#);
        assert!(serde_json::from_str::<Ttl>("0").is_err());
        assert!(serde_json::from_str::<Ttl>("-60").is_err());
        assert!(serde_json::from_str::<Ttl>("1.5").is_err());
    }
}

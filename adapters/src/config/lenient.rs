//! Deserializers for values that come from environment variables, where `BRIDGE_GAMEYE__VERSION=2`
//! arrives as a number although the key is a string.

use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// A string that also accepts numbers and booleans, printed back as written.
pub fn string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    struct StringVisitor;
    impl Visitor<'_> for StringVisitor {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    deserializer.deserialize_any(StringVisitor)
}

/// A duration written as "500ms", "2s", "1h30m" (or a bare number of seconds).
pub mod duration {
    use super::*;
    use serde::Serializer;

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = super::string(deserializer)?;
        parse(&text).map_err(de::Error::custom)
    }

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*value).to_string().replace(' ', ""))
    }

    pub fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        if let Ok(seconds) = text.parse::<u64>() {
            return Ok(Duration::from_secs(seconds));
        }
        humantime::parse_duration(text)
            .map_err(|e| format!("`{text}` is not a duration like \"2s\" or \"1h30m\": {e}"))
    }
}

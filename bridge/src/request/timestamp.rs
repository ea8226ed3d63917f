//! `requested_at` as an optional RFC 3339 timestamp, with an error that shows the expected form.

use serde::{Deserialize, Deserializer, Serializer, de};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub(super) fn serialize<S: Serializer>(
    value: &Option<OffsetDateTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    time::serde::rfc3339::option::serialize(value, serializer)
}

pub(super) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<OffsetDateTime>, D::Error> {
    let Some(text) = Option::<String>::deserialize(deserializer)? else {
        return Ok(None);
    };
    OffsetDateTime::parse(&text, &Rfc3339).map(Some).map_err(|error| {
        de::Error::custom(format!(
            "expected an RFC 3339 timestamp like \"2026-11-21T10:00:00Z\", got {text:?} ({error})"
        ))
    })
}

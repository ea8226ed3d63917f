//! The Gameye session id of a match, derived so that every attempt, instance and restart agrees on it.

use uuid::Uuid;

/// The project's fixed UUIDv5 namespace for session ids. Changing it would let a redelivered match
/// create a second session, so it never changes.
pub const SESSION_NAMESPACE: Uuid = Uuid::from_u128(0x1197a711_3b1e_4de1_9fa8_323aa711f5ad);

/// The session id of `match_id` arriving from `source` (the door, e.g. `"nats"` or `"sns"`):
/// UUIDv5(`SESSION_NAMESPACE`, `source + ":" + match_id`).
///
/// The same inputs always give the same id, which is what makes a duplicate delivery find the
/// session an earlier attempt created (Gameye answers 409 to a reused id) instead of creating another.
pub fn session_id(source: &str, match_id: &str) -> Uuid {
    let name = [source, ":", match_id].concat();
    Uuid::new_v5(&SESSION_NAMESPACE, name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_value_matches_an_independent_uuidv5_implementation() {
        // Computed with Python: uuid.uuid5(UUID("1197a711-…-323aa711f5ad"), "http:m-123").
        let expected = Uuid::parse_str("e7f1f56f-6e29-5684-9756-06f32473a1de").unwrap();
        assert_eq!(session_id("http", "m-123"), expected);
    }

    #[test]
    fn id_is_a_version_5_uuid() {
        assert_eq!(session_id("nats", "m-1").get_version_num(), 5);
    }

    #[test]
    fn source_and_match_id_both_matter() {
        assert_ne!(session_id("nats", "m-1"), session_id("sns", "m-1"));
        assert_ne!(session_id("nats", "m-1"), session_id("nats", "m-2"));
    }
}

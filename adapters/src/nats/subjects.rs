//! The NATS subjects of the contract (DESIGN §1), all under the configurable `nats.prefix`.

/// Every subject the NATS door uses, derived from one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    /// Durable inbound matches (JetStream): `<prefix>.match.found`.
    pub fn match_found(&self) -> String {
        format!("{}.match.found", self.prefix)
    }

    /// Core-NATS request/reply: `<prefix>.match.request`.
    pub fn match_request(&self) -> String {
        format!("{}.match.request", self.prefix)
    }

    /// Matches given up on after `max_deliver` deliveries, or unreadable enough to have no match id.
    pub fn match_dead(&self) -> String {
        format!("{}.match.dead", self.prefix)
    }

    /// `{player_id, latencies}` reports for the latency store.
    pub fn player_latency(&self) -> String {
        format!("{}.player.latency", self.prefix)
    }

    /// `<prefix>.match.assigned.<match_id>`. Match ids are validated to hold no whitespace, `*` or
    /// `>`; a `.` in an id adds tokens, which `<prefix>.match.assigned.>` still captures.
    pub fn assigned(&self, match_id: &str) -> String {
        format!("{}.match.assigned.{match_id}", self.prefix)
    }

    pub fn failed(&self, match_id: &str) -> String {
        format!("{}.match.failed.{match_id}", self.prefix)
    }

    /// `<prefix>.session.ended.<session_id>`: the reconciler found the session gone.
    pub fn session_ended(&self, session_id: &str) -> String {
        format!("{}.session.ended.{session_id}", self.prefix)
    }

    /// Durable joins (JetStream): `<prefix>.session.players.join`, `{session_id, players}`.
    pub fn players_join(&self) -> String {
        format!("{}.session.players.join", self.prefix)
    }

    /// Durable leaves (JetStream): `<prefix>.session.players.leave`, `{session_id, players}`.
    pub fn players_leave(&self) -> String {
        format!("{}.session.players.leave", self.prefix)
    }

    /// The seat consumer's filter: `<prefix>.session.players.*` (the stream captures only join and
    /// leave, so the outcome subjects below, one token longer, never land in it).
    pub fn players_changes(&self) -> String {
        format!("{}.session.players.*", self.prefix)
    }

    /// `<prefix>.session.players.joined.<session_id>`: what a join did.
    pub fn players_joined(&self, session_id: &str) -> String {
        format!("{}.session.players.joined.{session_id}", self.prefix)
    }

    /// `<prefix>.session.players.left.<session_id>`: what a leave did.
    pub fn players_left(&self, session_id: &str) -> String {
        format!("{}.session.players.left.{session_id}", self.prefix)
    }

    /// `<prefix>.session.players.rejected.<session_id>`: a join or leave refused, with its error.
    pub fn players_rejected(&self, session_id: &str) -> String {
        format!("{}.session.players.rejected.{session_id}", self.prefix)
    }

    /// Joins and leaves given up on, or without a usable session id.
    pub fn players_dead(&self) -> String {
        format!("{}.session.players.dead", self.prefix)
    }

    /// Core-NATS request/reply: `<prefix>.backfill.request`.
    pub fn backfill_request(&self) -> String {
        format!("{}.backfill.request", self.prefix)
    }

    /// Everything the door's work-queue stream (`nats.stream`) captures: matches, joins and leaves.
    pub fn inbound(&self) -> Vec<String> {
        vec![self.match_found(), self.players_join(), self.players_leave()]
    }

    /// Everything a results stream captures: assignments, failures, seat outcomes and dead letters.
    pub fn results(&self) -> Vec<String> {
        vec![
            format!("{}.match.assigned.>", self.prefix),
            format!("{}.match.failed.>", self.prefix),
            self.match_dead(),
            format!("{}.session.players.joined.>", self.prefix),
            format!("{}.session.players.left.>", self.prefix),
            format!("{}.session.players.rejected.>", self.prefix),
            self.players_dead(),
        ]
    }
}

/// Whether `match_id` (taken from a payload that failed validation) is safe to put in a subject:
/// the rule a valid request's id meets ([`bridge::request::check_match_id`]), so a garbage id
/// cannot publish to a wildcard, an empty token or an unrelated subject.
pub fn usable_match_id(match_id: &str) -> bool {
    bridge::request::check_match_id(match_id).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_the_prefix() {
        let subjects = Subjects::new("acme");
        assert_eq!(subjects.match_found(), "acme.match.found");
        assert_eq!(subjects.match_request(), "acme.match.request");
        assert_eq!(subjects.assigned("m-1"), "acme.match.assigned.m-1");
        assert_eq!(subjects.failed("m-1"), "acme.match.failed.m-1");
        assert_eq!(subjects.player_latency(), "acme.player.latency");
        assert_eq!(subjects.players_join(), "acme.session.players.join");
        assert_eq!(subjects.players_leave(), "acme.session.players.leave");
        assert_eq!(subjects.players_rejected("s-1"), "acme.session.players.rejected.s-1");
        assert_eq!(subjects.backfill_request(), "acme.backfill.request");
        assert_eq!(
            subjects.inbound(),
            ["acme.match.found", "acme.session.players.join", "acme.session.players.leave"]
        );
        assert_eq!(
            subjects.results(),
            [
                "acme.match.assigned.>",
                "acme.match.failed.>",
                "acme.match.dead",
                "acme.session.players.joined.>",
                "acme.session.players.left.>",
                "acme.session.players.rejected.>",
                "acme.session.players.dead"
            ]
        );
    }

    #[test]
    fn unusable_ids_are_refused() {
        assert!(usable_match_id("m-123"));
        assert!(usable_match_id("a.b"));
        for bad in ["", "a b", "a*", ">", "a\nb", ".a", "a.", "a..b", &"x".repeat(129)] {
            assert!(!usable_match_id(bad), "{bad:?}");
        }
    }
}

//! The seat ledger of DESIGN §4: who plays on a running session, who holds a reserved seat, and
//! which session a backfill request should go to. Pure: times are passed in, ids are made by the
//! caller; the stores (`adapters::store`, port [`crate::ports::SeatStore`]) apply exactly these
//! rules atomically per session.
//!
//! # Semantics
//!
//! A session has a `capacity`, a set of `joined` players and `reservations` (id → players, expiry).
//! A player is in at most one of them: joined, or held by exactly one reservation, or neither.
//! Open seats = capacity − joined − players in unexpired reservations, and under every operation
//! `0 ≤ joined + reserved ≤ capacity`. A reservation is live while `expires_at > now`; every
//! operation first drops the reservations expired at its `now`.
//!
//! Every operation is all-or-nothing and returns a typed answer:
//!
//! - [`SessionSeats::create`]: the match's own players hold one reservation from placement until
//!   they join or it expires (more players than capacity → [`SeatError::SessionFull`]).
//! - [`SessionSeats::join`]: idempotent (an already joined player is reported, not counted twice);
//!   a player holding a live reservation consumes it, the others need free seats; if the batch does
//!   not fit, [`SeatError::SessionFull`] and nothing changes.
//! - [`SessionSeats::leave`]: idempotent; releases whatever seat each player holds (joined, or a
//!   reservation: a reserved player who gives up frees the seat at once).
//! - [`SessionSeats::reserve`]: all players or none ([`SeatError::NoSeats`]). Decisions: a player
//!   already *joined* here makes the whole reservation fail with [`SeatError::AlreadyJoined`] (a
//!   backfill for someone already playing here is a client mistake, and a store trying candidates
//!   in turn moves on to the next session); a player already holding a reservation *here* moves into
//!   the new one (the old one shrinks, or disappears when empty), so a retried backfill never holds
//!   two seats for one player. An empty player list is [`SeatError::NoPlayers`].
//! - [`SessionSeats::expire`]: drops the reservations expired at `now`, reporting them.
//! - [`SessionSeats::end`]: releases everything; an ended session refuses every operation after
//!   ([`SeatError::Ended`]), ending again included.
//! - [`SessionSeats::mark_running`]: `created → running` (backfill only considers running
//!   sessions); idempotent.
//!
//! Ordering of joins and leaves: a join or leave may carry an `order` (the NATS door passes the
//! message's JetStream stream sequence), so that changes applied out of order (a redelivery after
//! a newer change, two changes processed concurrently) end as the newest one says. Per player, the
//! session remembers the order of the last ordered change applied to them
//! ([`SessionSeats::last_order`], kept after they leave). An ordered change is skipped for a player
//! whose remembered order is the same (reported as `duplicate`: this change was applied before) or
//! newer (`stale`), and applied to the others, remembering its order for them; all-or-nothing
//! (`SessionFull`) counts only the players it applies to. An unordered change (`None`: the HTTP
//! and Nakama doors) is always applied and leaves the remembered orders as they are, so it takes
//! no part in ordering: a late ordered change older than an unordered one can still apply.
//!
//! Backfill choice: [`choose_backfill`] filters and ranks candidate sessions; the store then tries
//! to reserve in them in that order (a racing reservation may have filled the first).

mod backfill;
mod ledger;
mod requests;
#[cfg(test)]
mod tests;

pub use backfill::{BackfillCandidate, BackfillPlayer, BackfillQuery, RankedSession, choose_backfill};
pub use ledger::{
    EndReason, Ended, ExpiredReservation, Joined, JsonText, Left, NewSession, Reservation, Reserved,
    SeatError, SeatResult, SessionEnd, SessionInfo, SessionSeats, SessionStatus,
};
pub use requests::{
    BackfillBody, BackfillChoice, BackfillOutcome, BackfillResult, CheckedBackfill, MAX_PLAYERS_PER_CHANGE,
    PlayersBody, SessionPlayers, SessionPlayersBody, backfill_or_place, parse_backfill_request,
    parse_players_body, parse_session_players, reserve_or_new_match,
};

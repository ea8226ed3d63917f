//! Which running sessions a backfill request may go to, best first.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ledger::SessionStatus;

/// A session as backfill choice sees it (see [`super::SessionSeats::backfill_candidate`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillCandidate {
    pub session_id: Uuid,
    pub image: String,
    pub version: Option<String>,
    pub location: String,
    pub labels: BTreeMap<String, String>,
    pub status: SessionStatus,
    pub open_seats: u32,
    /// Players holding a live reservation here. A backfill asking for them again (a retry whose
    /// answer was lost) moves them into its reservation, so their seats count as open for it.
    #[serde(default)]
    pub reserved_players: BTreeSet<String>,
}

/// A requesting player: latencies in ms by location.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillPlayer {
    pub id: String,
    #[serde(default)]
    pub latencies: BTreeMap<String, u32>,
}

/// What a backfill asks for.
#[derive(Debug, Clone, Copy)]
pub struct BackfillQuery<'a> {
    pub image: &'a str,
    /// Only sessions of this version, when given.
    pub version: Option<&'a str>,
    /// Only sessions carrying all these labels (with these values).
    pub labels: &'a BTreeMap<String, String>,
    /// Only sessions in these locations, when given.
    pub locations: Option<&'a [String]>,
    pub players: &'a [BackfillPlayer],
    /// Every requesting player must have a latency ≤ this for the session's location.
    pub latency_cap_ms: u32,
}

/// An eligible session and why it ranks where it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankedSession {
    pub session_id: Uuid,
    pub location: String,
    /// Every requesting player holds a live reservation here already: a retry whose answer was
    /// lost (or a `create_if_none` retry of a match placed for them) is looking at its own seats.
    pub held: bool,
    /// The highest latency of any requesting player to the session's location.
    pub worst_latency_ms: u32,
    pub open_seats: u32,
}

impl RankedSession {
    /// Where the requesting players already hold their seats first (a retry gets the session it
    /// was given, not a better one that opened since, which would leave them two seats), then
    /// lowest worst latency, then fullest (fewest open seats: packs servers), then session id.
    pub fn rank(&self, other: &Self) -> Ordering {
        (!self.held, self.worst_latency_ms, self.open_seats, self.session_id).cmp(&(
            !other.held,
            other.worst_latency_ms,
            other.open_seats,
            other.session_id,
        ))
    }
}

/// The candidates eligible for `query`, best first. Eligible: same image (and version if asked),
/// labels ⊇ the requested labels, in one of the requested locations (if asked), running, at least
/// as many open seats as requesting players who do not hold a reservation there already (at
/// least one requesting player), and every requesting player has a
/// latency ≤ the cap for the session's location (a missing latency excludes it). Duplicate
/// candidates (same session id) are kept once.
pub fn choose_backfill(query: &BackfillQuery<'_>, candidates: &[BackfillCandidate]) -> Vec<RankedSession> {
    let requesting = query.players.iter().map(|p| p.id.as_str()).collect::<BTreeSet<_>>();
    if requesting.is_empty() {
        return Vec::new();
    }
    // As `SessionSeats::reserve` counts: a player moved from an earlier reservation needs no seat.
    let needed = |c: &BackfillCandidate| {
        requesting.iter().filter(|player| !c.reserved_players.contains(**player)).count()
    };
    let mut ranked: Vec<RankedSession> = candidates
        .iter()
        .filter(|c| c.image == query.image)
        .filter(|c| query.version.is_none_or(|v| c.version.as_deref() == Some(v)))
        .filter(|c| query.labels.iter().all(|(k, v)| c.labels.get(k) == Some(v)))
        .filter(|c| query.locations.is_none_or(|ls| ls.contains(&c.location)))
        .filter(|c| c.status == SessionStatus::Running)
        .filter(|c| c.open_seats as usize >= needed(c))
        .filter_map(|c| {
            let mut worst = 0;
            for player in query.players {
                let ms = *player.latencies.get(&c.location)?;
                if ms > query.latency_cap_ms {
                    return None;
                }
                worst = worst.max(ms);
            }
            Some(RankedSession {
                session_id: c.session_id,
                location: c.location.clone(),
                held: needed(c) == 0,
                worst_latency_ms: worst,
                open_seats: c.open_seats,
            })
        })
        .collect();
    ranked.sort_by(RankedSession::rank);
    let mut seen = std::collections::HashSet::new();
    ranked.retain(|r| seen.insert(r.session_id));
    ranked
}

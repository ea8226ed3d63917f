use std::time::Duration;

use crate::{LocationAliases, RegionPolicy};

/// What the engine is configured with (from `[placement]` and `[gameye]`).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub policy: RegionPolicy,
    pub aliases: LocationAliases,
    /// Image for requests that name none.
    pub default_image: String,
    /// Tag for requests that name none; `None` lets Gameye pick its highest-priority tag.
    pub default_version: Option<String>,
    pub default_ttl: Duration,
    /// How long a location that answered 420 is skipped.
    pub cooldown: Duration,
    /// Time budget of one placement, retries included.
    pub deadline: Duration,
    /// How long stored player latencies are kept.
    pub latency_keep_for: Duration,
    /// How long placement records are kept.
    pub keep_for: Duration,
    /// This instance's name in leases (each claim's lease adds its own number: `<owner>#<n>`).
    pub owner: String,
    /// The value of [`super::DEPLOYMENT_LABEL`] on every session this deployment starts.
    pub deployment: String,
    /// First and longest pause between retries of an unavailable Gameye (jittered, exponential).
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Seats of placed sessions (`[seats]`).
    pub seats: SeatSettings,
}

/// How placed sessions' seats are set up (`[seats]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatSettings {
    /// Seats of a session whose request names no `max_players` and whose image has no entry in `capacity`.
    pub default_capacity: u32,
    /// Seats per image.
    pub capacity: std::collections::BTreeMap<String, u32>,
    /// How long a backfill's reserved seats are held for a join.
    pub reservation_ttl: Duration,
    /// How long a placed match's own players' seats are held for their join (their server may
    /// still be starting).
    pub match_reservation_ttl: Duration,
    /// Telling Gameye who joined and left (the player-sync outbox).
    pub gameye_sync: PlayerSyncSettings,
    /// How long an image's backfill candidates are reused before its sessions are listed again
    /// (zero: list on every backfill). Reservations stay atomic either way.
    pub backfill_cache: Duration,
    /// `Some`: ends are owed to session-event sinks, like this; `None`: no sinks, nothing owed.
    pub end_announcements: Option<crate::ports::EndOwing>,
}

impl Default for SeatSettings {
    fn default() -> Self {
        Self {
            default_capacity: 16,
            capacity: Default::default(),
            reservation_ttl: Duration::from_secs(60),
            match_reservation_ttl: Duration::from_secs(300),
            gameye_sync: PlayerSyncSettings::default(),
            backfill_cache: Duration::from_millis(250),
            end_announcements: None,
        }
    }
}

/// How sessions whose players changed are synced to Gameye's player list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayerSyncSettings {
    /// How long a claimed session is left to its worker before another instance may take it.
    pub lease: Duration,
    /// The first retry delay after a failed sync; it doubles up to `retry_max` (plus up to 100 %
    /// jitter).
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for PlayerSyncSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(60),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        }
    }
}

impl SeatSettings {
    /// The request's `max_players`, else the image's configured capacity, else the default.
    pub fn capacity_for(&self, image: &str, max_players: Option<u32>) -> u32 {
        max_players.or_else(|| self.capacity.get(image).copied()).unwrap_or(self.default_capacity)
    }

    /// The seats of a match's session: [`SeatSettings::capacity_for`], and never fewer than the
    /// match's players (a match larger than the image's capacity is placed all the same).
    pub fn match_capacity(&self, image: &str, request: &crate::MatchRequest) -> u32 {
        let players = u32::try_from(request.players.len()).unwrap_or(u32::MAX);
        self.capacity_for(image, request.max_players).max(players)
    }
}

/// How much longer than the deadline a claim's lease runs: the time an owner has to write its
/// outcome after its last Gameye call ended.
pub const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// How long past the deadline an attempt that is about to fail may look whether a create whose
/// answer was lost started the session after all. Taken from the lease's margin, leaving the rest
/// (3 s; Redis operations are bounded at 2 s) for writing the outcome.
pub(super) const LAST_LOOK: Duration = Duration::from_secs(2);
const _: () = assert!(LAST_LOOK.as_millis() + 2_000 < LEASE_MARGIN.as_millis());

impl EngineSettings {
    /// How long a claim is exclusive: the whole deadline plus a margin, so an owner never needs to
    /// renew, and a crashed owner's work is taken over soon after its deadline passed.
    pub fn lease_for(&self) -> Duration {
        self.deadline + LEASE_MARGIN
    }

    /// How long an announcement may take (sinks are told concurrently, each retried for up to
    /// the deadline) plus a margin: the outbox leaves an owed outcome to whoever is announcing it
    /// for that long before it tries itself.
    pub fn announce_window(&self) -> Duration {
        self.deadline + Duration::from_secs(5)
    }
}

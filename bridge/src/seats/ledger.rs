//! One session's seats and the operations on them (see the module documentation for the rules).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::backfill::BackfillCandidate;

/// Where a session stands. Backfill only considers `running` sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Placed at Gameye, not yet seen running.
    Created,
    Running,
    /// Stopped, expired or gone: seats released, every operation refused.
    Ended,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Ended => "ended",
        }
    }

    /// The status named `name` (`created`, `running`, `ended`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "created" => Some(Self::Created),
            "running" => Some(Self::Running),
            "ended" => Some(Self::Ended),
            _ => None,
        }
    }
}

/// JSON text, valid by construction, kept as text: the seat ledger stores and returns it untouched,
/// so a placement serializes its metadata once and a store writes or reads it without decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonText(String);

impl JsonText {
    /// `value` as JSON text.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_string(value).map(Self)
    }

    /// `text` when it is one JSON value.
    pub fn parse(text: String) -> Result<Self, serde_json::Error> {
        serde_json::from_str::<serde::de::IgnoredAny>(&text)?;
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text decoded as `T`, when it is one.
    pub fn decode<'de, T: Deserialize<'de>>(&'de self) -> Option<T> {
        serde_json::from_str(&self.0).ok()
    }
}

impl Default for JsonText {
    fn default() -> Self {
        Self("null".to_owned())
    }
}

impl Serialize for JsonText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let value: serde_json::Value = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        value.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Self::of(&value).map_err(serde::de::Error::custom)
    }
}

/// What a session is, fixed at creation: what backfill filters on, plus `metadata`, opaque JSON
/// the seat ledger stores and returns untouched (connection details such as host and ports, the
/// match id, whatever the caller needs to answer a backfill with).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub location: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub metadata: JsonText,
}

/// Seats held for players who have not joined yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub players: BTreeSet<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl Reservation {
    /// Live while `expires_at > now`.
    pub fn is_live(&self, now: OffsetDateTime) -> bool {
        self.expires_at > now
    }
}

/// A session to record at placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub session_id: Uuid,
    pub capacity: u32,
    /// `created` or `running` (an `ended` session cannot be created).
    pub status: SessionStatus,
    pub info: SessionInfo,
    /// The match's own players: they hold one reservation (if any) from now until they join or
    /// it expires after `reservation_ttl`.
    pub players: Vec<String>,
    /// Players already in the session (an adopted session's, as Gameye lists them).
    pub joined: Vec<String>,
    pub reservation_ttl: Duration,
    pub now: OffsetDateTime,
}

/// One session's seats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSeats {
    pub session_id: Uuid,
    pub capacity: u32,
    pub status: SessionStatus,
    pub info: SessionInfo,
    pub joined: BTreeSet<String>,
    pub reservations: BTreeMap<Uuid, Reservation>,
    /// Per player, the order of the last *ordered* join or leave applied to them (a JetStream
    /// stream sequence): an ordered change not newer than this is skipped for the player. Kept
    /// after the player leaves (that is the point: a late, older join must not bring them back).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last_order: BTreeMap<String, u64>,
}

/// Why an operation changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeatError {
    /// No such session (never created, or its record expired). Only stores say this.
    #[error("no such session")]
    NotFound,
    /// The session exists already (or ended): a second create changes nothing.
    #[error("the session exists already")]
    AlreadyExists,
    #[error("the session has ended")]
    Ended,
    /// A join needs more free seats than there are.
    #[error("the session is full: {needed} players need a free seat, {open} of {capacity} are open")]
    SessionFull { capacity: u32, open: u32, needed: u32 },
    /// A reservation needs more free seats than there are.
    #[error("not enough open seats: {needed} needed, {open} open")]
    NoSeats { open: u32, needed: u32 },
    /// A reservation for players already playing in this session.
    #[error("already joined: {}", players.iter().cloned().collect::<Vec<_>>().join(", "))]
    AlreadyJoined { players: BTreeSet<String> },
    #[error("a reservation needs at least one player")]
    NoPlayers,
}

/// An operation's answer: what it did, or why it did nothing.
pub type SeatResult<T> = Result<T, SeatError>;

/// What a join did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Joined {
    /// Players who joined now (the ones Gameye is told about), reserved or not.
    pub joined: BTreeSet<String>,
    /// Those of `joined` who consumed a reservation.
    pub from_reservations: BTreeSet<String>,
    /// Players who had joined before: nothing changed for them.
    pub already_joined: BTreeSet<String>,
    /// Ordered joins only: players this very change (same order) was applied to before, i.e. a
    /// redelivery. Skipped: nothing changed for them.
    pub duplicate: BTreeSet<String>,
    /// Ordered joins only: players a newer change was applied to. Skipped: nothing changed.
    pub stale: BTreeSet<String>,
}

/// What a leave did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Left {
    /// Joined players who left (the ones Gameye is told about).
    pub left: BTreeSet<String>,
    /// Players whose reserved seat was released.
    pub released: BTreeSet<String>,
    /// Ordered leaves only: players this very change was applied to before (a redelivery).
    pub duplicate: BTreeSet<String>,
    /// Ordered leaves only: players a newer change was applied to (skipped).
    pub stale: BTreeSet<String>,
}

/// An ordered change's players sorted against the orders applied before.
struct OrderedPlayers {
    /// The players it applies to.
    current: BTreeSet<String>,
    duplicate: BTreeSet<String>,
    stale: BTreeSet<String>,
}

/// A reservation made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    pub reservation_id: Uuid,
    pub players: BTreeSet<String>,
    pub expires_at: OffsetDateTime,
    /// Players who held another reservation in this session and were moved into this one.
    pub moved: BTreeSet<String>,
}

/// A reservation dropped because it expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredReservation {
    pub reservation_id: Uuid,
    pub reservation: Reservation,
}

/// What ending a session released.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ended {
    /// Players who were joined.
    pub players: BTreeSet<String>,
    /// Reservations that were live.
    pub reservations: BTreeSet<Uuid>,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// Gameye no longer runs it (TTL expiry, the process exited, stopped elsewhere): the reconciler.
    Gone,
    /// Stopped through the bridge (`DELETE /v1/sessions/{id}`).
    Stopped,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gone => "gone",
            Self::Stopped => "stopped",
        }
    }

    /// The reason named `name` (`gone`, `stopped`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "gone" => Some(Self::Gone),
            "stopped" => Some(Self::Stopped),
            _ => None,
        }
    }
}

/// How a session ended, as its ended record keeps it: what the announcement of its end says, however
/// late it is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEnd {
    pub reason: EndReason,
    pub ended_at: OffsetDateTime,
    /// Players who were joined.
    pub players: BTreeSet<String>,
    /// Players who held a live reservation (they had not joined yet).
    pub reserved_players: BTreeSet<String>,
}

/// `now + ttl`, saturating.
fn after(now: OffsetDateTime, ttl: Duration) -> OffsetDateTime {
    now.checked_add(time::Duration::try_from(ttl).unwrap_or(time::Duration::MAX))
        .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc())
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl SessionSeats {
    /// Everyone with a seat: joined, or named in a reservation (expired ones too, until they are
    /// dropped). A player reserved and joined at once appears twice.
    pub fn seated_players(&self) -> impl Iterator<Item = &str> {
        self.joined
            .iter()
            .chain(self.reservations.values().flat_map(|r| r.players.iter()))
            .map(String::as_str)
    }

    /// Whether `player` is one of [`SessionSeats::seated_players`].
    pub fn holds(&self, player: &str) -> bool {
        self.seated_players().any(|seated| seated == player)
    }

    /// A session's seats at placement: its own players (deduplicated) hold one reservation with
    /// id `reservation_id`, unless there are none.
    pub fn create(new: &NewSession, reservation_id: Uuid) -> SeatResult<Self> {
        Self::create_at(new, reservation_id, new.now, new.reservation_ttl)
    }

    /// [`SessionSeats::create`] with `now` and the reservation's time to live given apart, as a
    /// store keeps them (rounded), so it need not copy `new` to round them.
    pub fn create_at(
        new: &NewSession,
        reservation_id: Uuid,
        now: OffsetDateTime,
        reservation_ttl: Duration,
    ) -> SeatResult<Self> {
        if new.status == SessionStatus::Ended {
            return Err(SeatError::Ended);
        }
        let joined: BTreeSet<String> = new.joined.iter().cloned().collect();
        // A player who is in already needs no reserved seat.
        let players: BTreeSet<String> =
            new.players.iter().filter(|p| !joined.contains(*p)).cloned().collect();
        if count(players.len() + joined.len()) > new.capacity {
            return Err(SeatError::SessionFull {
                capacity: new.capacity,
                open: new.capacity,
                needed: count(players.len() + joined.len()),
            });
        }
        let mut reservations = BTreeMap::new();
        if !players.is_empty() {
            let expires_at = after(now, reservation_ttl);
            reservations.insert(reservation_id, Reservation { players, expires_at });
        }
        Ok(Self {
            session_id: new.session_id,
            capacity: new.capacity,
            status: new.status,
            info: new.info.clone(),
            joined,
            reservations,
            last_order: BTreeMap::new(),
        })
    }

    /// Players in reservations live at `now`.
    pub fn reserved(&self, now: OffsetDateTime) -> u32 {
        count(self.live_reservations(now).map(|(_, r)| r.players.len()).sum())
    }

    /// capacity − joined − reserved (at `now`); 0 for an ended session.
    pub fn open_seats(&self, now: OffsetDateTime) -> u32 {
        if self.status == SessionStatus::Ended {
            return 0;
        }
        self.capacity.saturating_sub(count(self.joined.len())).saturating_sub(self.reserved(now))
    }

    /// The reservations live at `now`.
    pub fn live_reservations(&self, now: OffsetDateTime) -> impl Iterator<Item = (&Uuid, &Reservation)> {
        self.reservations.iter().filter(move |(_, r)| r.is_live(now))
    }

    /// The live reservation holding `player`, if any.
    pub fn reservation_of(&self, player: &str, now: OffsetDateTime) -> Option<Uuid> {
        self.live_reservations(now).find(|(_, r)| r.players.contains(player)).map(|(id, _)| *id)
    }

    /// This session as it stands at `now`: expired reservations left out.
    pub fn at(&self, now: OffsetDateTime) -> Self {
        self.clone().into_at(now)
    }

    /// [`SessionSeats::at`] without a copy.
    pub fn into_at(mut self, now: OffsetDateTime) -> Self {
        self.reservations.retain(|_, r| r.is_live(now));
        self
    }

    /// What backfill choice needs to know about this session at `now`.
    pub fn backfill_candidate(&self, now: OffsetDateTime) -> BackfillCandidate {
        BackfillCandidate {
            session_id: self.session_id,
            image: self.info.image.clone(),
            version: self.info.version.clone(),
            location: self.info.location.clone(),
            labels: self.info.labels.clone(),
            status: self.status,
            open_seats: self.open_seats(now),
            reserved_players: self.reserved_players(now),
        }
    }

    /// The players holding a live reservation at `now`.
    pub fn reserved_players(&self, now: OffsetDateTime) -> BTreeSet<String> {
        self.live_reservations(now).flat_map(|(_, reservation)| reservation.players.iter().cloned()).collect()
    }

    fn refuse_ended(&self) -> SeatResult<()> {
        if self.status == SessionStatus::Ended { Err(SeatError::Ended) } else { Ok(()) }
    }

    /// Removes `player` from whichever reservation holds them (dropping it when it empties).
    fn unreserve(&mut self, player: &str) -> bool {
        let Some(id) = self.reservations.iter().find(|(_, r)| r.players.contains(player)).map(|(id, _)| *id)
        else {
            return false;
        };
        let reservation = self.reservations.get_mut(&id).expect("found above");
        reservation.players.remove(player);
        if reservation.players.is_empty() {
            self.reservations.remove(&id);
        }
        true
    }

    /// Drops the reservations expired at `now` and reports them, in reservation id order.
    pub fn expire(&mut self, now: OffsetDateTime) -> Vec<ExpiredReservation> {
        let expired: Vec<Uuid> =
            self.reservations.iter().filter(|(_, r)| !r.is_live(now)).map(|(id, _)| *id).collect();
        expired
            .into_iter()
            .filter_map(|id| {
                self.reservations
                    .remove(&id)
                    .map(|reservation| ExpiredReservation { reservation_id: id, reservation })
            })
            .collect()
    }

    /// Sorts `players` by `order` against [`SessionSeats::last_order`]: an unordered change
    /// (`None`) applies to everyone; an ordered one skips players whose last order is the same
    /// (`duplicate`) or newer (`stale`).
    fn sort_by_order(&self, players: &[String], order: Option<u64>) -> OrderedPlayers {
        let mut sorted =
            OrderedPlayers { current: BTreeSet::new(), duplicate: BTreeSet::new(), stale: BTreeSet::new() };
        for player in players {
            let last = self.last_order.get(player).copied();
            let set = match (order, last) {
                (Some(order), Some(last)) if last == order => &mut sorted.duplicate,
                (Some(order), Some(last)) if last > order => &mut sorted.stale,
                _ => &mut sorted.current,
            };
            set.insert(player.clone());
        }
        sorted
    }

    /// Remembers `order` as the last one applied to `players` (an unordered change leaves the
    /// recorded orders alone: it has none to compare later changes with).
    fn record_order(&mut self, players: &BTreeSet<String>, order: Option<u64>) {
        if let Some(order) = order {
            for player in players {
                self.last_order.insert(player.clone(), order);
            }
        }
    }

    /// `players` join (see the module documentation); `order` as in [`SessionSeats::last_order`].
    pub fn join(
        &mut self,
        players: &[String],
        order: Option<u64>,
        now: OffsetDateTime,
    ) -> SeatResult<Joined> {
        self.refuse_ended()?;
        self.expire(now);
        let OrderedPlayers { current, duplicate, stale } = self.sort_by_order(players, order);
        let (already_joined, new): (BTreeSet<String>, BTreeSet<String>) =
            current.iter().cloned().partition(|p| self.joined.contains(p));
        let from_reservations: BTreeSet<String> =
            new.iter().filter(|p| self.reservation_of(p, now).is_some()).cloned().collect();
        let needed = count(new.len() - from_reservations.len());
        let open = self.open_seats(now);
        if needed > open {
            return Err(SeatError::SessionFull { capacity: self.capacity, open, needed });
        }
        for player in &from_reservations {
            self.unreserve(player);
        }
        self.joined.extend(new.iter().cloned());
        self.record_order(&current, order);
        Ok(Joined { joined: new, from_reservations, already_joined, duplicate, stale })
    }

    /// `players` leave or give up their reserved seats (see the module documentation); `order`
    /// as in [`SessionSeats::last_order`].
    pub fn leave(&mut self, players: &[String], order: Option<u64>, now: OffsetDateTime) -> SeatResult<Left> {
        self.refuse_ended()?;
        self.expire(now);
        let OrderedPlayers { current, duplicate, stale } = self.sort_by_order(players, order);
        let mut outcome = Left { duplicate, stale, ..Left::default() };
        for player in &current {
            if self.joined.remove(player) {
                outcome.left.insert(player.clone());
            } else if self.unreserve(player) {
                outcome.released.insert(player.clone());
            }
        }
        self.record_order(&current, order);
        Ok(outcome)
    }

    /// Reserves seats for all `players` or none, for `ttl` (see the module documentation).
    pub fn reserve(
        &mut self,
        reservation_id: Uuid,
        players: &[String],
        ttl: Duration,
        now: OffsetDateTime,
    ) -> SeatResult<Reserved> {
        self.refuse_ended()?;
        self.expire(now);
        let players: BTreeSet<String> = players.iter().cloned().collect();
        if players.is_empty() {
            return Err(SeatError::NoPlayers);
        }
        let joined: BTreeSet<String> = players.intersection(&self.joined).cloned().collect();
        if !joined.is_empty() {
            return Err(SeatError::AlreadyJoined { players: joined });
        }
        let moved: BTreeSet<String> =
            players.iter().filter(|p| self.reservation_of(p, now).is_some()).cloned().collect();
        let needed = count(players.len() - moved.len());
        let open = self.open_seats(now);
        if needed > open {
            return Err(SeatError::NoSeats { open, needed });
        }
        // A player moved out of a longer hold keeps it (a match's own players hold theirs for
        // `match_reservation_ttl` while their server starts): moving never shortens a seat's hold.
        let mut expires_at = after(now, ttl);
        for player in &moved {
            if let Some(held) = self.live_reservations(now).find(|(_, r)| r.players.contains(player)) {
                expires_at = expires_at.max(held.1.expires_at);
            }
            self.unreserve(player);
        }
        self.reservations.insert(reservation_id, Reservation { players: players.clone(), expires_at });
        Ok(Reserved { reservation_id, players, expires_at, moved })
    }

    /// `created → running`; idempotent.
    pub fn mark_running(&mut self) -> SeatResult<()> {
        self.refuse_ended()?;
        self.status = SessionStatus::Running;
        Ok(())
    }

    /// Releases every seat; the session refuses everything afterwards.
    pub fn end(&mut self, now: OffsetDateTime) -> SeatResult<Ended> {
        self.refuse_ended()?;
        self.expire(now);
        let outcome = Ended {
            players: std::mem::take(&mut self.joined),
            reservations: std::mem::take(&mut self.reservations).into_keys().collect(),
        };
        self.status = SessionStatus::Ended;
        Ok(outcome)
    }

    /// [`SessionSeats::end`], also answering the [`SessionEnd`] the ended record keeps.
    pub fn end_for(&mut self, reason: EndReason, now: OffsetDateTime) -> SeatResult<(Ended, SessionEnd)> {
        self.refuse_ended()?;
        self.expire(now);
        let reserved_players = self.reservations.values().flat_map(|r| r.players.iter().cloned()).collect();
        let ended = self.end(now)?;
        let end = SessionEnd { reason, ended_at: now, players: ended.players.clone(), reserved_players };
        Ok((ended, end))
    }
}

//! One owner's attempt at placing a match: choose, create, fail over, retry — within the deadline.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::future::{Either, select};
use time::OffsetDateTime;

use super::engine::Engine;
use super::settings::LAST_LOOK;
use super::{CAPACITY_LABEL, DEPLOYMENT_LABEL, MATCH_LABEL, SOURCE_LABEL};
use crate::ports::{
    Clock, Outcome, PlacementRecord, PlacementState, SessionApi, SessionApiError, SessionApiErrorKind,
    SessionSpec, StartedSession, StateStore,
};
use crate::{Assignment, Failure, FailureCode, MatchRequest, RegionInput, choose_region};

/// Why the attempt is still going round: remembered to name the failure if the deadline passes.
enum Setback {
    Unavailable(SessionApiError),
}

impl<A, S, C> Engine<A, S, C>
where
    A: SessionApi,
    S: StateStore,
    C: Clock,
{
    /// Never errors: every way of not placing is a [`Failure`] with its code.
    pub(super) async fn attempt(&self, record: &PlacementRecord) -> Outcome {
        let request = &record.request;
        let started = self.clock.now();
        // The lease was counted from the claim, and a door may have done other work since (the SNS
        // door records tickets in between): every Gameye call must still end, and the outcome be
        // written, before the lease runs out and recovery may start a second attempt.
        let deadline_at = match record.state {
            PlacementState::Pending { lease_until, .. } => {
                (started + self.settings.deadline).min(lease_until - super::LEASE_MARGIN)
            }
            _ => started + self.settings.deadline,
        };
        let image = request.image.clone().unwrap_or_else(|| self.settings.default_image.clone());
        let latencies = self.player_latencies(request).await;
        let requested = request.locations.as_deref().map(|l| self.settings.aliases.map_locations(l));
        // Without `requested_at`, the match is as old as the bridge has known it: the caps still
        // relax for a match that is retried.
        let age =
            (started - request.requested_at.unwrap_or(record.accepted_at)).try_into().unwrap_or_default();
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(self.settings.retry_min)
            .with_max_delay(self.settings.retry_max)
            .with_jitter()
            .without_max_times()
            .build();
        let mut setback: Option<Setback> = None;
        let fail = |code: FailureCode, message: String| {
            Outcome::Failed(Failure::new(&request.match_id, code, message))
        };
        // Where a create went unanswered (a timeout, a 5xx, a lost connection): it may have
        // started the session all the same. With the location's `within_cap`.
        let mut unclear_creates: Vec<(String, bool)> = Vec::new();

        let outcome = async {
            loop {
                // Each round starts afresh: only this round's trouble decides how it ends (a 503 in
                // an earlier round must not turn "every location is full" into a retry).
                if let Some(Setback::Unavailable(error)) = setback.take() {
                    let now = self.clock.now();
                    let pause = backoff.next().unwrap_or(self.settings.retry_max);
                    if now + pause >= deadline_at {
                        return fail(
                            FailureCode::UpstreamUnavailable,
                            format!("Gameye kept failing until the placement deadline: {error}"),
                        );
                    }
                    self.clock.sleep(pause).await;
                }

                let available = match self.by_deadline(deadline_at, self.api.available_locations(&image)).await {
                    Ok(available) => available.into_iter().map(|location| location.id).collect::<Vec<_>>(),
                    Err(error) if error.kind == SessionApiErrorKind::Unavailable => {
                        setback = Some(Setback::Unavailable(error));
                        continue;
                    }
                    Err(error) => {
                        return fail(code_for(error.kind), format!("listing locations for `{image}`: {error}"));
                    }
                };
                let cooling: HashSet<String> = match self.store.cooling(&available).await {
                    Ok(cooling) => cooling.into_iter().collect(),
                    Err(error) => {
                        tracing::warn!(%error, "cannot read location cool-downs; trying every location");
                        HashSet::new()
                    }
                };
                let input = RegionInput {
                    available: &available,
                    requested: requested.as_deref(),
                    cooling: &cooling,
                    player_latencies: &latencies,
                    match_age: age,
                };
                let choice = match choose_region(input, &self.settings.policy) {
                    Ok(choice) => choice,
                    Err(no_location) => {
                        return Outcome::Failed(Failure::no_location(&request.match_id, &no_location));
                    }
                };

                for ranked in choice.ranked() {
                    let answer_within = time_left(deadline_at, self.clock.now());
                    if answer_within.is_zero() {
                        setback = Some(Setback::Unavailable(out_of_time()));
                        break;
                    }
                    // Bounded by the client's own timeout: no second timer on every placement's path.
                    let spec = self.spec(record, &image, &ranked.location, answer_within);
                    match self.api.create_session(&spec).await {
                        Ok(started) => {
                            let started = self.fill_ports(record, started, deadline_at).await;
                            return Outcome::Placed(self.assignment(
                                record,
                                &image,
                                started,
                                !ranked.within_cap,
                                &latencies,
                            ));
                        }
                        Err(error) => match error.kind {
                            SessionApiErrorKind::Conflict => {
                                // An earlier attempt of this very placement created it: use that session.
                                match self.describe_by_deadline(record, deadline_at).await {
                                    Ok(existing) => {
                                        // Started by an earlier round's create whose answer was lost,
                                        // maybe at a location this round no longer ranks.
                                        let within_cap = choice
                                            .ranked()
                                            .iter()
                                            .find(|r| r.location == existing.location)
                                            .map(|r| r.within_cap)
                                            .or_else(|| {
                                                unclear_creates
                                                    .iter()
                                                    .find(|(location, _)| *location == existing.location)
                                                    .map(|&(_, within_cap)| within_cap)
                                            })
                                            .unwrap_or(true);
                                        return Outcome::Placed(self.assignment(
                                            record,
                                            &image,
                                            existing,
                                            !within_cap,
                                            &latencies,
                                        ));
                                    }
                                    Err(describe) if describe.kind == SessionApiErrorKind::NotFound => {
                                        return fail(
                                            FailureCode::NotFound,
                                            format!(
                                                "session {} was started by an earlier attempt and has ended since",
                                                record.session_id
                                            ),
                                        );
                                    }
                                    Err(describe) => {
                                        setback = Some(Setback::Unavailable(describe));
                                        break;
                                    }
                                }
                            }
                            SessionApiErrorKind::NoCapacity => {
                                if let Err(store_error) =
                                    self.store.cool_down(&ranked.location, self.settings.cooldown).await
                                {
                                    tracing::warn!(%store_error, location = %ranked.location, "cannot record a cool-down");
                                }
                                self.api.invalidate_locations(&image);
                                tracing::info!(match_id = %record.match_id, location = %ranked.location, "no capacity; trying the next location");
                                continue;
                            }
                            SessionApiErrorKind::Unavailable => {
                                unclear_creates.push((ranked.location.clone(), ranked.within_cap));
                                setback = Some(Setback::Unavailable(error));
                                break;
                            }
                            SessionApiErrorKind::NotFound => {
                                self.api.invalidate_locations(&image);
                                return fail(FailureCode::NotFound, format!("Gameye: {error}"));
                            }
                            kind => return fail(code_for(kind), format!("Gameye: {error}")),
                        },
                    }
                }
                if setback.is_none() {
                    // Every ranked location answered 420.
                    return fail(
                        FailureCode::NoCapacity,
                        "every eligible location is out of capacity".to_owned(),
                    );
                }
            }
        }
        .await;
        match outcome {
            Outcome::Failed(failure) if !unclear_creates.is_empty() => {
                Box::pin(self.last_look(record, &image, &latencies, deadline_at, &unclear_creates, failure))
                    .await
            }
            outcome => outcome,
        }
    }

    /// A create whose answer never came may still have started the session. Before the attempt
    /// fails, one look (`GET /session/{id}`, up to [`LAST_LOOK`] past the deadline, inside the
    /// lease's margin): a session found is this match's (its id is), so the match is placed there
    /// rather than reported failed while its server runs. Boxed: rarely run.
    async fn last_look(
        &self,
        record: &PlacementRecord,
        image: &str,
        latencies: &[BTreeMap<String, u32>],
        deadline_at: OffsetDateTime,
        unclear_creates: &[(String, bool)],
        failure: Failure,
    ) -> Outcome {
        let look = self.api.describe_session(record.session_id);
        match before(&self.clock, deadline_at + LAST_LOOK, look).await {
            Some(Ok(existing)) => {
                tracing::info!(
                    match_id = %record.match_id, session_id = %record.session_id, location = %existing.location,
                    "a create whose answer was lost had started the session; the match is placed there"
                );
                let within_cap = unclear_creates
                    .iter()
                    .find(|(location, _)| *location == existing.location)
                    .is_none_or(|(_, within_cap)| *within_cap);
                Outcome::Placed(self.assignment(record, image, existing, !within_cap, latencies))
            }
            Some(Err(error)) if error.kind == SessionApiErrorKind::NotFound => Outcome::Failed(failure),
            _ => {
                tracing::warn!(
                    match_id = %record.match_id, session_id = %record.session_id, code = ?failure.error.code,
                    "failing the match though a create whose answer was lost may have started its session (Gameye did not say); the reconciler adopts it if so"
                );
                Outcome::Failed(failure)
            }
        }
    }

    fn spec<'a>(
        &'a self,
        record: &'a PlacementRecord,
        image: &'a str,
        location: &'a str,
        answer_within: Duration,
    ) -> SessionSpec<'a> {
        let request = &record.request;
        let mut labels = request.labels.clone();
        labels.insert(MATCH_LABEL.to_owned(), record.match_id.clone());
        labels.insert(SOURCE_LABEL.to_owned(), record.source.clone());
        labels.insert(DEPLOYMENT_LABEL.to_owned(), self.settings.deployment.clone());
        labels.insert(
            CAPACITY_LABEL.to_owned(),
            self.settings.seats.match_capacity(image, request).to_string(),
        );
        SessionSpec {
            session_id: record.session_id,
            location,
            image,
            version: request.version.as_deref().or(self.settings.default_version.as_deref()),
            env: &request.env,
            args: &request.args,
            labels,
            ttl: self.session_ttl(request),
            answer_within,
        }
    }

    /// `call`'s answer, or an `Unavailable` error once the placement deadline has passed. No
    /// Gameye call outlives the deadline, so none outlives the lease (the deadline and a margin):
    /// an answer arriving later could contradict the instance that took the match over by then.
    /// (`create_session`, on every placement's path, is bounded by its spec's `answer_within`.)
    async fn by_deadline<T>(
        &self,
        deadline_at: OffsetDateTime,
        call: impl Future<Output = Result<T, SessionApiError>>,
    ) -> Result<T, SessionApiError> {
        before(&self.clock, deadline_at, call).await.unwrap_or_else(|| Err(out_of_time()))
    }

    /// `GET /session/{id}` of the match's session, by the deadline. Boxed: off the usual path, it
    /// need not enlarge every placement's future.
    async fn describe_by_deadline(
        &self,
        record: &PlacementRecord,
        deadline_at: OffsetDateTime,
    ) -> Result<StartedSession, SessionApiError> {
        Box::pin(self.by_deadline(deadline_at, self.api.describe_session(record.session_id))).await
    }

    /// Gameye has been seen answering 201 with `ports: []`; describe has the real mapping.
    async fn fill_ports(
        &self,
        record: &PlacementRecord,
        started: StartedSession,
        deadline_at: OffsetDateTime,
    ) -> StartedSession {
        if !started.ports.is_empty() {
            return started;
        }
        match self.describe_by_deadline(record, deadline_at).await {
            Ok(described) if !described.ports.is_empty() => {
                StartedSession { ports: described.ports, ..started }
            }
            _ => started,
        }
    }

    fn assignment(
        &self,
        record: &PlacementRecord,
        image: &str,
        session: StartedSession,
        latency_cap_exceeded: bool,
        latencies: &[BTreeMap<String, u32>],
    ) -> Assignment {
        let players: Vec<String> = record.request.players.iter().map(|p| p.id.clone()).collect();
        let latency_ms = players
            .iter()
            .zip(latencies)
            .filter_map(|(player, known)| known.get(&session.location).map(|ms| (player.clone(), *ms)))
            .collect();
        Assignment {
            match_id: record.match_id.clone(),
            session_id: record.session_id,
            image: image.to_owned(),
            location: session.location,
            host: session.host,
            ports: session.ports,
            players,
            latency_ms,
            placed_at: self.clock.now(),
            latency_cap_exceeded,
        }
    }

    /// Each player's latencies (alias-mapped), from the request or else the latency store.
    async fn player_latencies(&self, request: &MatchRequest) -> Vec<BTreeMap<String, u32>> {
        let missing: Vec<String> =
            request.players.iter().filter(|p| p.latencies.is_empty()).map(|p| p.id.clone()).collect();
        let stored = if missing.is_empty() {
            BTreeMap::new()
        } else {
            self.store.get_latencies(&missing).await.unwrap_or_else(|error| {
                tracing::warn!(%error, "cannot read stored latencies; placing without them");
                BTreeMap::new()
            })
        };
        request
            .players
            .iter()
            .map(|player| {
                let reported = if player.latencies.is_empty() {
                    stored.get(&player.id).cloned().unwrap_or_default()
                } else {
                    player.latencies.clone()
                };
                self.settings.aliases.map_latencies(&reported)
            })
            .collect()
    }
}

/// What is left of the time until `deadline_at`; zero once it has passed.
fn time_left(deadline_at: OffsetDateTime, now: OffsetDateTime) -> Duration {
    (deadline_at - now).try_into().unwrap_or_default()
}

/// `call`'s answer, or `None` once `deadline_at` (on `clock`) has passed. The call is polled
/// first: an answer that is ready at once (a cached listing) never starts the timer.
pub(super) async fn before<C: Clock, T>(
    clock: &C,
    deadline_at: OffsetDateTime,
    call: impl Future<Output = T>,
) -> Option<T> {
    let left = time_left(deadline_at, clock.now());
    if left.is_zero() {
        return None;
    }
    match select(pin!(call), pin!(clock.sleep(left))).await {
        Either::Left((answer, _)) => Some(answer),
        Either::Right(((), _)) => None,
    }
}

fn out_of_time() -> SessionApiError {
    SessionApiError {
        kind: SessionApiErrorKind::Unavailable,
        status: None,
        message: "no answer before the placement deadline".to_owned(),
    }
}

fn code_for(kind: SessionApiErrorKind) -> FailureCode {
    match kind {
        SessionApiErrorKind::Unauthorized | SessionApiErrorKind::Forbidden => FailureCode::Unauthorized,
        SessionApiErrorKind::QuotaExceeded => FailureCode::QuotaExceeded,
        SessionApiErrorKind::NotFound => FailureCode::NotFound,
        SessionApiErrorKind::Invalid | SessionApiErrorKind::Conflict => FailureCode::InvalidRequest,
        SessionApiErrorKind::NoCapacity => FailureCode::NoCapacity,
        SessionApiErrorKind::Unavailable => FailureCode::UpstreamUnavailable,
    }
}

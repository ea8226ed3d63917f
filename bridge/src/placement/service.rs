//! The engine as the doors see it: one object-safe trait, so a door holds an
//! `Arc<dyn PlacementService>` and knows nothing of the engine's adapters.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::engine::{Accepted, Answer, Engine, Job, PlaceError, Progress};
use crate::ValidatedMatch;
use crate::ports::{
    AvailableLocation, Clock, DeliveryError, Outcome, PlacementRecord, SessionApi, SessionApiError,
    StateStore,
};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What every door may ask of the placement engine.
pub trait PlacementService: Send + Sync + 'static {
    /// Places the match and waits for the outcome (see [`Engine::place`]).
    fn place<'a>(
        &'a self,
        source: &'a str,
        request: ValidatedMatch,
    ) -> BoxFuture<'a, Result<Progress, PlaceError>>;

    /// [`PlacementService::place`], with the outcome's JSON when this call placed the match (see
    /// [`Engine::place_answer`]).
    fn place_answer<'a>(
        &'a self,
        source: &'a str,
        request: ValidatedMatch,
    ) -> BoxFuture<'a, Result<Answer, PlaceError>> {
        Box::pin(async move {
            let progress = self.place(source, request).await?;
            Ok(Answer { progress, outcome_json: None })
        })
    }

    /// Claims the match durably without placing it (see [`Engine::accept`]).
    fn accept<'a>(
        &'a self,
        source: &'a str,
        request: ValidatedMatch,
    ) -> BoxFuture<'a, Result<Accepted, PlaceError>>;

    /// Runs an accepted job to its outcome; `'static`, so a door can spawn it.
    fn finish(self: Arc<Self>, job: Job) -> BoxFuture<'static, Result<Outcome, PlaceError>>;

    /// What a door that answered "accepted" spawns: finish the job, then announce the outcome.
    /// Failures are logged; a job whose outcome could not be recorded stays pending and the
    /// recovery loop finishes it once its lease ends.
    fn finish_and_announce(self: Arc<Self>, source: String, job: Job) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let match_id = job.match_id().to_owned();
            match self.clone().finish(job).await {
                Ok(outcome) => {
                    let _ = self.announce(&source, &outcome).await;
                }
                Err(error) => {
                    tracing::warn!(%match_id, %error, "background placement could not record its outcome")
                }
            }
        })
    }

    fn status<'a>(&'a self, match_id: &'a str) -> BoxFuture<'a, Result<Option<PlacementRecord>, PlaceError>>;

    /// Announces an outcome to the configured sinks that want `source` (see [`Engine::announce`]).
    fn announce<'a>(
        &'a self,
        source: &'a str,
        outcome: &'a Outcome,
    ) -> BoxFuture<'a, Result<(), DeliveryError>>;

    /// Whether any sink wants outcomes from `source`: doors skip spawning an announcement that
    /// would do nothing (the HTTP door without NATS or webhooks, on every placement).
    fn announces(&self, _source: &str) -> bool {
        true
    }

    /// Stores a player's latencies for later matches that arrive without them.
    fn put_latencies<'a>(
        &'a self,
        player_id: &'a str,
        latencies: &'a BTreeMap<String, u32>,
    ) -> BoxFuture<'a, Result<(), PlaceError>>;

    fn get_latencies<'a>(
        &'a self,
        player_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<BTreeMap<String, u32>>, PlaceError>>;

    /// Where `image` (default: the configured image) can run now, with ping addresses.
    fn available_locations<'a>(
        &'a self,
        image: &'a str,
    ) -> BoxFuture<'a, Result<Vec<AvailableLocation>, SessionApiError>>;

    /// The image used for matches that name none.
    fn default_image(&self) -> &str;

    /// How long stored latencies are kept.
    fn latency_keep_for(&self) -> std::time::Duration;
}

impl<A, S, C> PlacementService for Engine<A, S, C>
where
    A: SessionApi,
    S: StateStore,
    C: Clock,
{
    fn place<'a>(
        &'a self,
        source: &'a str,
        request: ValidatedMatch,
    ) -> BoxFuture<'a, Result<Progress, PlaceError>> {
        Box::pin(Engine::place(self, source, request))
    }

    fn place_answer<'a>(
        &'a self,
        source: &'a str,
        request: ValidatedMatch,
    ) -> BoxFuture<'a, Result<Answer, PlaceError>> {
        Box::pin(Engine::place_answer(self, source, request))
    }

    fn accept<'a>(
        &'a self,
        source: &'a str,
        request: ValidatedMatch,
    ) -> BoxFuture<'a, Result<Accepted, PlaceError>> {
        Box::pin(Engine::accept(self, source, request))
    }

    fn finish(self: Arc<Self>, job: Job) -> BoxFuture<'static, Result<Outcome, PlaceError>> {
        Box::pin(async move { Engine::finish(&self, job).await })
    }

    fn status<'a>(&'a self, match_id: &'a str) -> BoxFuture<'a, Result<Option<PlacementRecord>, PlaceError>> {
        Box::pin(Engine::status(self, match_id))
    }

    fn announce<'a>(
        &'a self,
        source: &'a str,
        outcome: &'a Outcome,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(Engine::announce(self, source, outcome))
    }

    fn announces(&self, source: &str) -> bool {
        Engine::announces(self, source)
    }

    fn put_latencies<'a>(
        &'a self,
        player_id: &'a str,
        latencies: &'a BTreeMap<String, u32>,
    ) -> BoxFuture<'a, Result<(), PlaceError>> {
        Box::pin(async move {
            self.store.put_latencies(player_id, latencies, self.settings.latency_keep_for).await?;
            Ok(())
        })
    }

    fn get_latencies<'a>(
        &'a self,
        player_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<BTreeMap<String, u32>>, PlaceError>> {
        Box::pin(async move {
            let mut found = self.store.get_latencies(&[player_id.to_owned()]).await?;
            Ok(found.remove(player_id))
        })
    }

    fn available_locations<'a>(
        &'a self,
        image: &'a str,
    ) -> BoxFuture<'a, Result<Vec<AvailableLocation>, SessionApiError>> {
        Box::pin(self.api.available_locations(image))
    }

    fn default_image(&self) -> &str {
        &self.settings.default_image
    }

    fn latency_keep_for(&self) -> std::time::Duration {
        self.settings.latency_keep_for
    }
}

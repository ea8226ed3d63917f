//! The door's JetStream streams: created if absent, and given the subjects this version needs when
//! an older version created them with fewer (JetStream's "get or create" never changes a stream).

use async_nats::jetstream::{self, stream};

use super::NatsError;
use super::subjects::Subjects;
use crate::config::NatsSettings;

/// Ensures the work-queue stream `nats.stream` (matches, joins, leaves) and, when configured, the
/// results stream; returns the work-queue stream. Every consumer runs this before it binds, so
/// whichever starts first brings both streams up to date. Only `required` (the caller's own
/// subjects) must be captured: a stream that cannot be given the other consumer's subjects (no
/// permission, another stream holds them) is logged, and fails only the consumer that needs them.
pub(crate) async fn ensure_streams(
    jetstream: &jetstream::Context,
    settings: &NatsSettings,
    subjects: &Subjects,
    required: &[String],
) -> Result<stream::Stream, NatsError> {
    let inbound = ensure_stream(
        required,
        jetstream,
        stream::Config {
            name: settings.stream.clone(),
            subjects: subjects.inbound(),
            storage: stream::StorageType::File,
            // Work-queue semantics: each message to one consumer, deleted once acknowledged.
            retention: stream::RetentionPolicy::WorkQueue,
            description: Some("gameye-bridge: matches to place, joins and leaves".to_owned()),
            ..Default::default()
        },
    )
    .await?;
    if !settings.results_stream.is_empty() {
        ensure_stream(
            &[],
            jetstream,
            stream::Config {
                name: settings.results_stream.clone(),
                subjects: subjects.results(),
                storage: stream::StorageType::File,
                max_age: settings.results_max_age,
                description: Some(
                    "gameye-bridge: assignments, failures, seat outcomes and dead letters".to_owned(),
                ),
                ..Default::default()
            },
        )
        .await?;
    }
    Ok(inbound)
}

/// Gets the stream named in `config`, creating it from `config` if absent. An existing stream
/// whose subjects do not cover all of `config.subjects` gets the missing ones added; the rest of
/// its configuration (which an operator may have tuned) stays as it is.
async fn ensure_stream(
    required: &[String],
    jetstream: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, NatsError> {
    let name = config.name.clone();
    let failed = |message: String| NatsError::Stream { stream: name.clone(), message };
    let wanted = config.subjects.clone();
    let stream = jetstream.get_or_create_stream(config).await.map_err(|e| failed(e.to_string()))?;
    let existing = &stream.cached_info().config;
    let missing: Vec<String> = wanted
        .into_iter()
        .filter(|subject| !existing.subjects.iter().any(|pattern| covers(pattern, subject)))
        .collect();
    if missing.is_empty() {
        return Ok(stream);
    }
    let mut updated = existing.clone();
    updated.subjects.extend(missing.iter().cloned());
    if let Err(error) = jetstream.update_stream(&updated).await {
        let needed: Vec<&String> = missing.iter().filter(|subject| required.contains(subject)).collect();
        if needed.is_empty() {
            tracing::warn!(stream = %name, missing = ?missing, %error, "cannot add subjects to the JetStream stream; the consumers that need them stay not ready");
            return Ok(stream);
        }
        return Err(failed(format!("adding {missing:?}: {error}")));
    }
    tracing::info!(stream = %name, added = ?missing, "JetStream stream now captures more subjects");
    jetstream.get_stream(&name).await.map_err(|e| failed(e.to_string()))
}

/// Whether the subject pattern `pattern` (`*` one token, `>` the rest) matches every subject
/// `subject` (itself possibly a pattern) matches.
fn covers(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for token in pattern.split('.') {
        match (token, subject_tokens.next()) {
            (">", Some(_)) => return true,
            // `*` matches one token, but not everything a `>` in the subject would.
            ("*", Some(next)) if next != ">" => {}
            (token, Some(next)) if token == next => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn patterns_cover_what_they_match() {
        assert!(covers("gameye.match.found", "gameye.match.found"));
        assert!(covers("gameye.>", "gameye.session.players.join"));
        assert!(covers("gameye.session.players.*", "gameye.session.players.join"));
        assert!(covers("gameye.session.>", "gameye.session.players.joined.>"));
        assert!(!covers("gameye.match.found", "gameye.session.players.join"));
        assert!(!covers("gameye.session.players.*", "gameye.session.players.joined.>"));
        assert!(!covers("gameye.session.players", "gameye.session.players.join"));
        assert!(!covers("gameye.session.players.join.x", "gameye.session.players.join"));
    }
}

//! GET /logs?id=&follow= (stream-logs): what the fake game server wrote, optionally followed live.

use std::time::Duration;

use axum::{
    body::Body,
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use futures::stream;

use super::{
    error::ApiError,
    guard::{authorize, inject_faults},
    query::{is_true, query_map},
    sessions::{location_of, session_not_found},
};
use crate::{
    faults::Operation,
    sessions::Session,
    state::{SharedState, now_ms},
    world::Scope,
};

/// Handler of GET /logs. Logs stay readable after the session stopped (the container still exists).
pub async fn stream_logs(
    State(state): State<SharedState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Some(Scope::LogsRead))?;
    let params = query_map(query.as_deref());
    // The spec documents no 400/422 here: a missing id names no session.
    let id = params.get("id").cloned().unwrap_or_default();
    let follow = params.get("follow").is_some_and(|v| is_true(v));
    let location = location_of(&state, Operation::StreamLogs, &id);
    let after = inject_faults(&state, Operation::StreamLogs, location.as_deref()).await?;
    let answer = logs_answer(state.clone(), id, follow);
    after.answer(&state, answer).await
}

/// The session's logs so far, then (with `follow`) as they come until it stops.
fn logs_answer(state: SharedState, id: String, follow: bool) -> Result<Response, ApiError> {
    let (first, cursor) = {
        let registry = state.sessions();
        let session = registry.get(&id).ok_or_else(|| session_not_found(&id))?;
        let mut cursor = Cursor::default();
        let text = cursor.advance(session, now_ms(), false);
        (text, (session.is_active() && follow).then_some(cursor))
    };
    let content_type = [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))];
    let Some(cursor) = cursor else {
        return Ok((content_type, first).into_response());
    };

    // Follow: every log_interval, whatever happened since plus a heartbeat, until the session stops.
    let interval = state.log_interval.max(Duration::from_millis(10));
    let follow = stream::unfold(
        (Some(first), cursor, state, id),
        move |(pending, mut cursor, state, id)| async move {
            if let Some(text) = pending {
                return Some((Ok::<_, std::convert::Infallible>(text), (None, cursor, state, id)));
            }
            if cursor.done {
                return None;
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = state.shutdown.cancelled() => return None,
            }
            let text = {
                let registry = state.sessions();
                let session = registry.get(&id)?;
                cursor.advance(session, now_ms(), true)
            };
            Some((Ok(text), (None, cursor, state, id)))
        },
    );
    Ok((content_type, Body::from_stream(follow)).into_response())
}

/// How far a reader got: lets a followed stream emit each line once.
#[derive(Default)]
struct Cursor {
    booted: bool,
    ready: bool,
    events: usize,
    done: bool,
}

impl Cursor {
    /// The lines not yet emitted at `now_ms`; `heartbeat` adds a status line while the session runs.
    fn advance(&mut self, s: &Session, now_ms: i64, heartbeat: bool) -> String {
        let mut out = String::new();
        let ready_ms = s.created_ms + s.running_at.saturating_duration_since(s.created_at).as_millis() as i64;
        let end_ms = s.stopped_at_ms.unwrap_or(now_ms);
        if !self.booted {
            self.booted = true;
            line(
                &mut out,
                s.created_ms,
                &format!("container {} created from {}:{} in {}", s.id, s.image, s.tag, s.location),
            );
            line(
                &mut out,
                s.created_ms,
                &format!(
                    "starting game server: {}",
                    [&["./server".to_owned()], s.args.as_slice()].concat().join(" ")
                ),
            );
        }
        // Events (joins before the server was ready, …) come after the ready lines: one ordering
        // for snapshots and followed streams alike.
        if !self.ready && ready_ms <= end_ms {
            self.ready = true;
            for p in &s.ports {
                line(
                    &mut out,
                    ready_ms,
                    &format!(
                        "listening on 0.0.0.0:{}/{} (host {}:{})",
                        p.container,
                        p.protocol.as_str(),
                        s.host,
                        p.host
                    ),
                );
            }
            line(&mut out, ready_ms, "server ready, waiting for players");
        }
        for (at, text) in s.events.iter().skip(self.events) {
            line(&mut out, *at, text);
        }
        self.events = s.events.len();
        if s.is_active() {
            if heartbeat {
                line(&mut out, now_ms, &format!("tick: {} players connected", s.players.len()));
            }
        } else {
            self.done = true;
        }
        out
    }
}

fn line(out: &mut String, at_ms: i64, text: &str) {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(at_ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default();
    out.push_str(&at);
    out.push(' ');
    out.push_str(text);
    out.push('\n');
}

//! GET /artifacts?session=&path= (artifacts): a real .tar.gz holding the asked-for file, once the session stopped.

use std::io::Write;

use axum::{
    body::Bytes,
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use flate2::{Compression, write::GzEncoder};

use super::{
    error::ApiError,
    guard::{authorize, inject_faults},
    query::query_map,
    sessions::location_of,
};
use crate::{faults::Operation, sessions::Session, state::SharedState, world::Scope};

/// Handler of GET /artifacts. The spec documents only 200/401/403/404, so a missing parameter is a 404 too.
pub async fn artifacts(
    State(state): State<SharedState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Some(Scope::ArtifactRead))?;
    let params = query_map(query.as_deref());
    let id = params.get("session").cloned().unwrap_or_default();
    let path = params.get("path").cloned().unwrap_or_default();
    let location = location_of(&state, Operation::Artifacts, &id);
    let after = inject_faults(&state, Operation::Artifacts, location.as_deref()).await?;
    let answer = archive_answer(&state, &id, &path);
    after.answer(&state, answer).await
}

/// The stopped session's artifact as a .tar.gz.
fn archive_answer(state: &SharedState, id: &str, path: &str) -> Result<Response, ApiError> {
    let archive = {
        let registry = state.sessions();
        let session =
            registry.get(id).ok_or_else(|| ApiError::not_found(format!("Could not find session {id:?}.")))?;
        if session.is_active() {
            return Err(ApiError::not_found(format!(
                "Session {id:?} is still running: artifacts are available after it terminated."
            )));
        }
        if path.is_empty() {
            return Err(ApiError::not_found("No artifact path was given."));
        }
        build_archive(session, path)
    };
    let archive = archive.map_err(|e| {
        ApiError::not_found("The artifact could not be read from the container.").with_details(e.to_string())
    })?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/x-tar")),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"artifact.tar.gz\""),
            ),
        ],
        Bytes::from(archive),
    )
        .into_response())
}

/// A .tar.gz with one file at `path` (or, for a path ending in `/`, that folder with one file in it).
fn build_archive(s: &Session, path: &str) -> std::io::Result<Vec<u8>> {
    let name = archive_name(path);
    let mtime = s.stopped_at_ms.unwrap_or(s.created_ms).max(0) as u64 / 1000;
    let content = format!(
        "artifact {path}\nsession {} ({}:{}) in {} on {}\nstopped at unix ms {}\n",
        s.id,
        s.image,
        s.tag,
        s.location,
        s.host,
        s.stopped_at_ms.unwrap_or_default(),
    );
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    let append = |tar: &mut tar::Builder<_>, name: &str, data: &[u8], dir: bool| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mtime(mtime);
        header.set_mode(if dir { 0o755 } else { 0o644 });
        header.set_entry_type(if dir { tar::EntryType::Directory } else { tar::EntryType::Regular });
        tar.append_data(&mut header, name, data)
    };
    if path.ends_with('/') {
        append(&mut tar, &format!("{name}/"), &[], true)?;
        append(&mut tar, &format!("{name}/session.log"), content.as_bytes(), false)?;
    } else {
        append(&mut tar, &name, content.as_bytes(), false)?;
    }
    let mut gz = tar.into_inner()?;
    gz.flush()?;
    gz.finish()
}

/// The container path as a safe relative name inside the archive: no root, no `.`/`..`, no control characters.
fn archive_name(path: &str) -> String {
    let name = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != "." && *c != "..")
        .map(|c| c.replace(|ch: char| ch.is_control(), "_"))
        .collect::<Vec<_>>()
        .join("/");
    if name.is_empty() { "artifact".to_owned() } else { name }
}

#[cfg(test)]
mod tests {
    use super::archive_name;

    #[test]
    fn names_are_relative_and_clean() {
        assert_eq!(archive_name("/home/game/crash.log"), "home/game/crash.log");
        assert_eq!(archive_name("/../etc/./passwd"), "etc/passwd");
        assert_eq!(archive_name("/"), "artifact");
        assert_eq!(archive_name("a\0b"), "a_b");
    }
}

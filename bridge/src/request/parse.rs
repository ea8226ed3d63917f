//! Reading a match request from a JSON body at a trust boundary, with errors that name the field.

use serde_json::error::Category;

use super::json_path::{key_segment, offset_of, path_at};
use super::{InvalidRequest, InvalidRequestKind, MatchRequest, ValidatedMatch};

/// Reads and validates a JSON match request. Errors name the field where possible: a body that
/// is not JSON is [`InvalidRequestKind::Malformed`], anything else refused is
/// [`InvalidRequestKind::Invalid`].
pub fn parse_match_request(body: &[u8]) -> Result<ValidatedMatch, InvalidRequest> {
    // serde would also read a struct from an array of its fields in order; nobody means that.
    if body.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'[') {
        return Err(InvalidRequest {
            kind: InvalidRequestKind::Invalid,
            field: None,
            message: "must be a JSON object, not an array".into(),
        });
    }
    let request: MatchRequest =
        serde_json::from_slice(body).map_err(|error| InvalidRequest::from_json(body, &error))?;
    request.validate()
}

impl InvalidRequest {
    /// Explains a serde_json error from reading `body`, naming the field it happened in
    /// (`players[1].id` for a missing id, `ttl` for an unreadable one); `field` is `None` when
    /// the body as a whole is at fault. Other doors use it for their own JSON shapes.
    pub fn from_json(body: &[u8], error: &serde_json::Error) -> Self {
        let kind = match error.classify() {
            Category::Data => InvalidRequestKind::Invalid,
            Category::Syntax | Category::Eof | Category::Io => InvalidRequestKind::Malformed,
        };
        let full = error.to_string();
        let location = format!(" at line {} column {}", error.line(), error.column());
        let message = full.strip_suffix(&location).unwrap_or(&full).to_owned();
        let mut field = if error.line() == 0 {
            String::new()
        } else {
            path_at(body, offset_of(body, error.line(), error.column()))
        };
        // serde reports a missing field after its object closed, so the path is the object's.
        if let Some(missing) = backticked_after(&message, "missing field `") {
            field.push_str(&key_segment(missing, field.is_empty()));
        }
        Self { kind, field: (!field.is_empty()).then_some(field), message }
    }
}

/// The text between `prefix` and the next backtick, when the message starts with `prefix`.
fn backticked_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split('`').next()
}

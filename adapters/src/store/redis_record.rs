//! A placement record as Redis keeps it: one string, so that a claim is one plain command
//! (`SET … NX PX … GET` creates it or returns what is there) instead of a Lua script, which costs
//! Redis several times more (bench/RESULTS.md, session 11).
//!
//! `<header>\n<meta JSON>[\n<outcome JSON>]`, where the header is
//! `<state>|<fence>|<owner>|<lease_until_ms>`: state `pending`, `placed` or `failed`;
//! `fence` kept across states (a takeover of a retryable failure still raises it); `owner` (with
//! `%`, `|` and newlines percent-encoded, so that a header prefix names one owner) and
//! `lease_until_ms` while pending, empty and 0 when done. The meta line holds
//! what was first accepted (`match_id`, `source`, `session_id`, `accepted_at_ms`, `request`) and is
//! never rewritten; the outcome line is the Assignment or Failure. Compact JSON has no raw newline.
//! The scripts that change a record compare a header prefix (`pending|<fence>|<owner>|`) and keep the
//! meta line as it is.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{from_millis, push_percent_encoded};
use bridge::MatchRequest;
use bridge::ports::{Claim, PlacementRecord, PlacementState, StoreError};

#[derive(Serialize)]
struct Meta<'a> {
    match_id: &'a str,
    source: &'a str,
    session_id: Uuid,
    accepted_at_ms: i64,
    request: &'a MatchRequest,
}

#[derive(Deserialize)]
struct OwnedMeta {
    match_id: String,
    source: String,
    session_id: Uuid,
    accepted_at_ms: i64,
    request: MatchRequest,
}

/// A record read back, with its fence (which a done record's state does not carry).
pub(super) struct Stored {
    pub record: PlacementRecord,
    pub fence: u64,
}

/// The value a claim creates: pending, owned by the claimant with fence 1.
pub(super) fn new_value(claim: &Claim, now_ms: i64, lease_until_ms: i64) -> Result<String, StoreError> {
    let meta = serde_json::to_string(&Meta {
        match_id: &claim.match_id,
        source: &claim.source,
        session_id: claim.session_id,
        accepted_at_ms: now_ms,
        request: &claim.request,
    })
    .map_err(|e| StoreError::permanent(format!("cannot encode the match request: {e}")))?;
    Ok(lines(pending_header(1, &claim.owner, lease_until_ms), &meta))
}

/// `old` taken over: pending again under `owner` with the next fence, what was first accepted kept.
pub(super) fn taken_over_value(old: &str, fence: u64, owner: &str, lease_until_ms: i64) -> Option<String> {
    let (_, rest) = old.split_once('\n')?;
    let meta = rest.split_once('\n').map_or(rest, |(meta, _)| meta);
    Some(lines(pending_header(fence, owner, lease_until_ms), meta))
}

/// `header`, a newline and `rest`. (Here and below strings are joined by hand, not with
/// `format!`: every placement builds several, and the formatting machinery costs more than the
/// copying.)
fn lines(mut header: String, rest: &str) -> String {
    header.reserve(rest.len() + 1);
    header.push('\n');
    header.push_str(rest);
    header
}

/// The header of a pending record.
pub(super) fn pending_header(fence: u64, owner: &str, lease_until_ms: i64) -> String {
    let mut header = owner_prefix(fence, owner);
    header.push_str(&lease_until_ms.to_string());
    header
}

/// The header prefix that says "pending, with this fence, owned by `owner`".
pub(super) fn owner_prefix(fence: u64, owner: &str) -> String {
    let mut prefix = String::with_capacity(owner.len() + 32);
    prefix.push_str("pending|");
    prefix.push_str(&fence.to_string());
    prefix.push('|');
    push_encoded_owner(&mut prefix, owner);
    prefix.push('|');
    prefix
}

/// The header of a final outcome.
pub(super) fn done_header(state: &str, fence: u64) -> String {
    [state, "|", &fence.to_string(), "||0"].concat()
}

fn push_encoded_owner(out: &mut String, owner: &str) {
    push_percent_encoded(out, owner, b"%|\n");
}

fn decode_owner(encoded: &str) -> String {
    encoded.replace("%0A", "\n").replace("%7C", "|").replace("%25", "%")
}

/// The state and lease of a stored value, from its header alone (the recovery scan's check).
pub(super) fn pending_lease(value: &str) -> Option<i64> {
    let header = value.split_once('\n').map_or(value, |(header, _)| header);
    let mut fields = header.split('|');
    if fields.next()? != "pending" {
        return None;
    }
    fields.nth(2)?.parse().ok()
}

/// A stored value read back.
pub(super) fn parse(value: &str) -> Result<Stored, StoreError> {
    let corrupt = |what: &str| StoreError::permanent(format!("placement record: {what}"));
    let (header, rest) = value.split_once('\n').ok_or_else(|| corrupt("no header line"))?;
    let (meta, outcome) = match rest.split_once('\n') {
        Some((meta, outcome)) => (meta, Some(outcome)),
        None => (rest, None),
    };
    let fields: Vec<&str> = header.split('|').collect();
    let [state, fence, owner, lease_until_ms] = fields[..] else {
        return Err(corrupt(&format!("header {header:?}")));
    };
    let fence: u64 = fence.parse().map_err(|_| corrupt("the fence is not a number"))?;
    let meta: OwnedMeta =
        serde_json::from_str(meta).map_err(|e| corrupt(&format!("unreadable meta line: {e}")))?;
    let corrupt = |what: &str| StoreError::permanent(format!("placement record {:?}: {what}", meta.match_id));
    let outcome = || outcome.ok_or_else(|| corrupt("no outcome line"));
    let state = match state {
        "pending" => PlacementState::Pending {
            owner: decode_owner(owner),
            fence,
            lease_until: from_millis(
                lease_until_ms.parse().map_err(|_| corrupt("the lease is not a number"))?,
            ),
        },
        "placed" => PlacementState::Placed {
            assignment: serde_json::from_str(outcome()?)
                .map_err(|e| corrupt(&format!("unreadable assignment: {e}")))?,
        },
        "failed" => PlacementState::Failed {
            failure: serde_json::from_str(outcome()?)
                .map_err(|e| corrupt(&format!("unreadable failure: {e}")))?,
        },
        other => return Err(corrupt(&format!("unknown state {other:?}"))),
    };
    let record = PlacementRecord {
        match_id: meta.match_id,
        source: meta.source,
        session_id: meta.session_id,
        request: meta.request,
        accepted_at: from_millis(meta.accepted_at_ms),
        state,
    };
    Ok(Stored { record, fence })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_with_separators_round_trip_and_never_share_a_prefix() {
        for owner in ["host-1:42", "a|b", "a%7Cb", "line\nbreak", "%", ""] {
            let header = pending_header(3, owner, 17);
            let value = format!("{header}\n{{}}");
            assert_eq!(pending_lease(&value), Some(17), "{owner:?}");
            assert!(header.starts_with(&owner_prefix(3, owner)));
            assert_eq!(header.split('|').count(), 4, "{owner:?}: {header}");
            let mut encoded = String::new();
            push_encoded_owner(&mut encoded, owner);
            assert_eq!(decode_owner(&encoded), owner);
        }
        // "a" must not pass for "a|b" (nor "a%" for "a%7Cb").
        assert!(!pending_header(1, "a|b", 5).starts_with(&owner_prefix(1, "a")));
        assert!(!pending_header(1, "a%7Cb", 5).starts_with(&owner_prefix(1, "a%")));
    }

    #[test]
    fn a_done_record_has_no_lease() {
        assert_eq!(pending_lease(&format!("{}\n{{}}\n{{}}", done_header("placed", 2))), None);
        assert_eq!(done_header("failed", 4), "failed|4||0");
    }
}

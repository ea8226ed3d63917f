//! `POST /v1/webhooks/sns` (Amazon SNS's HTTP(S) subscriber protocol: authenticated by its
//! signature, not by a bearer token) and `GET /v1/tickets/{ticket_id}` (behind tokens).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::{ApiError, ApiTokens, ErrorBody, auth};
use crate::sns::{IN_PROGRESS, Receipt, SnsDoor, SnsError, SnsErrorKind, TicketView};

/// The SNS routes: the webhook outside token authentication (SNS cannot send a token; every
/// message is verified instead), ticket polling behind it.
pub fn sns_router(door: Arc<SnsDoor>, tokens: ApiTokens) -> Router {
    let polling = Router::new()
        .route("/v1/tickets/{ticket_id}", get(get_ticket))
        .with_state(door.clone())
        .layer(axum::middleware::from_fn_with_state(tokens, auth::require_token));
    Router::new().route("/v1/webhooks/sns", post(receive)).with_state(door).merge(polling)
}

/// Amazon SNS delivers FlexMatch events here. Every message is verified (signature v1/v2, AWS
/// certificate URL, topic allowlist, age) before anything happens; a `MatchmakingSucceeded` is
/// recorded and answered 200 at once, and placed in the background. The body is JSON whatever
/// the Content-Type (SNS sends `text/plain`).
#[utoipa::path(
    post, path = "/v1/webhooks/sns", tag = "sns",
    request_body(content = String, content_type = "text/plain",
        description = "An SNS Notification, SubscriptionConfirmation or UnsubscribeConfirmation (JSON)"),
    params(("x-amz-sns-message-type" = Option<String>, Header, description = "Checked against the body's `Type`")),
    responses(
        (status = 200, description = "Verified and handled (or a duplicate MessageId: nothing done again)"),
        (status = 400, description = "Not an SNS message, unsigned (raw delivery), stale, or not a FlexMatch event", body = ErrorBody),
        (status = 403, description = "Bad signature or certificate, certificate URL not AWS's, topic not allowed", body = ErrorBody),
        (status = 409, description = "MATCH_ID_CONFLICT: a MatchmakingSucceeded whose matchId the bridge knows as another match (a bug upstream); nothing placed, its unmatched tickets recorded failed", body = ErrorBody),
        (status = 422, description = "The event does not make a valid match", body = ErrorBody),
        (status = 502, description = "The signing certificate could not be fetched or the confirmation failed; SNS retries", body = ErrorBody),
        (status = 500, description = "STORE_ERROR: the state store refused a write no retry fixes", body = ErrorBody),
        (status = 503, description = "The state store is unavailable, or IN_PROGRESS: another copy of this MessageId is being processed; SNS retries", body = ErrorBody),
    )
)]
pub async fn receive(
    State(door): State<Arc<SnsDoor>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Receipt>, ApiError> {
    let header_type = headers.get("x-amz-sns-message-type").and_then(|v| v.to_str().ok());
    door.receive(header_type, &body).await.map(Json).map_err(api_error)
}

/// A FlexMatch ticket's status: `searching`, `placing`, `placed` (with the assignment), `failed`,
/// `timed_out` or `cancelled`.
#[utoipa::path(
    get, path = "/v1/tickets/{ticket_id}", tag = "sns",
    params(("ticket_id" = String, Path, description = "The FlexMatch matchmaking ticket id")),
    responses(
        (status = 200, description = "Known ticket", body = TicketView),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown (or expired) ticket", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_ticket(
    State(door): State<Arc<SnsDoor>>,
    Path(ticket_id): Path<String>,
) -> Result<Json<TicketView>, ApiError> {
    door.ticket(&ticket_id)
        .await
        .map_err(api_error)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no ticket `{ticket_id}`")))
}

fn api_error(error: SnsError) -> ApiError {
    let status = match error.kind {
        SnsErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        SnsErrorKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        SnsErrorKind::Forbidden => StatusCode::FORBIDDEN,
        SnsErrorKind::Conflict => StatusCode::CONFLICT,
        SnsErrorKind::Unavailable if error.code == "STORE_UNAVAILABLE" || error.code == IN_PROGRESS => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        SnsErrorKind::Unavailable if error.code == "STORE_ERROR" => StatusCode::INTERNAL_SERVER_ERROR,
        SnsErrorKind::Unavailable => StatusCode::BAD_GATEWAY,
    };
    ApiError::new(status, error.code, error.message)
}

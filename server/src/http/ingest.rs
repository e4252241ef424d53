//! `POST /v1/ingest`: store a batch of readings for one site, exactly once per idempotency key.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::access::Routes;
use super::envelope::Envelope;
use super::json::EncodedJsonBody;
use super::openapi::schemas::{BatchBody, BatchReceiptEnvelope, ErrorEnvelope};
use crate::auth::Client;
use crate::auth::{Principal, Rule};
use crate::error::{ApiError, FieldError};
use crate::ingest::processor::{self, IngestError, Outcome};
use crate::ingest::request::{parse_batch, peek_identity};
use crate::ingest::Receipt;
use crate::metrics::IngestOutcome;
use crate::sites::SiteId;
use crate::state::AppState;

/// Set on a `200` that replays an earlier answer.
static IDEMPOTENT_REPLAY: HeaderName = HeaderName::from_static("idempotent-replay");

/// The ingest route, relative to the API root.
pub fn router() -> Routes {
    Routes::new().post("/ingest", Rule::Ingest, ingest)
}

/// This route's part of the API document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(ingest))]
pub struct Api;

/// Stores a batch of readings for one site, exactly once per idempotency key.
///
/// The same key with the same readings (in any order and spelling) is a replay: 200, the original
/// receipt, `Idempotent-Replay: true`. The same key with other readings is 409.
#[utoipa::path(
    post,
    path = "/ingest",
    tag = "ingest",
    params(
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 128, pattern = r"^[\x20-\x7e]+$",
         description = "Names this batch (per site); or send `batch_id` in the body. One of them is required."),
    ),
    request_body(content = BatchBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored: the batch's receipt.", body = BatchReceiptEnvelope),
        (status = 200, description = "A replay: the original receipt.", body = BatchReceiptEnvelope,
         headers(("Idempotent-Replay" = String, description = "`true`: this answer replays an earlier one."))),
        (status = 400, description = "The body is not JSON, or not sent as `application/json`.", body = ErrorEnvelope),
        (status = 404, description = "No such site.", body = ErrorEnvelope),
        (status = 409, description = "The key was used for this site with other readings.", body = ErrorEnvelope),
        (status = 413, description = "The body is over the limit.", body = ErrorEnvelope),
        (status = 422, description = "`details` names every problem.", body = ErrorEnvelope),
    )
)]
#[tracing::instrument(skip_all)]
async fn ingest(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<EncodedJsonBody, ApiError>,
) -> Response {
    let result = store(&state, &principal, &headers, body).await;
    answer(&state, result)
}

/// Counts an ingest request (v1 or v2) and renders its answer: 201 with the receipt when stored,
/// 200 with `Idempotent-Replay: true` when replayed, else the error envelope.
pub(super) fn answer<R: Receipt + Serialize>(
    state: &AppState,
    result: Result<Outcome<R>, ApiError>,
) -> Response {
    let outcome = match &result {
        Ok(Outcome::Stored(_)) => IngestOutcome::Created,
        Ok(Outcome::Replayed(_)) => IngestOutcome::Replayed,
        Err(ApiError::IdempotencyKeyReused(_)) => IngestOutcome::Conflict,
        Err(ApiError::SiteNotFound(_)) => IngestOutcome::NotFound,
        Err(ApiError::Unavailable(_)) => IngestOutcome::Unavailable,
        Err(ApiError::Internal(_)) => IngestOutcome::Error,
        Err(_) => IngestOutcome::Invalid,
    };
    state.metrics.ingest_request(outcome);
    match result {
        Ok(Outcome::Stored(receipt)) => {
            state.outbox_wake.notify_one();
            let (accepted, duplicate) = receipt.counts();
            state.metrics.readings(accepted, duplicate);
            Envelope::with_status(StatusCode::CREATED, receipt).into_response()
        }
        Ok(Outcome::Replayed(receipt)) => {
            let mut response = Envelope::ok(receipt).into_response();
            response
                .headers_mut()
                .insert(IDEMPOTENT_REPLAY.clone(), HeaderValue::from_static("true"));
            response
        }
        Err(error) => error.into_response(),
    }
}

async fn store(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    body: Result<EncodedJsonBody, ApiError>,
) -> Result<Outcome, ApiError> {
    let EncodedJsonBody(body) = body?;
    let header_key = headers.get("idempotency-key");
    // A retry is most often the very same bytes: answered from its receipt before any parsing,
    // once the caller is known to be allowed to write the site (keys are per site: a client that
    // may not write it can neither claim nor read one). A client limited to some sources is
    // answered only after its readings' sources are checked. The bytes are the decoded body's, so
    // the same batch compressed another way, or not at all, is the same bytes.
    let body_sha256: [u8; 32] = Sha256::digest(&body).into();
    let client = &principal.client;
    let stored = match peek_identity(&body, header_key) {
        Some((site, key)) => {
            may_write(client, site)?;
            match client.source_prefix {
                None => processor::find_batch(&state.pool, site, &key).await?,
                Some(_) => None,
            }
        }
        None => None,
    };
    if let Some(receipt) = stored.as_ref().and_then(|s| s.replay_of_body(&body_sha256)) {
        return Ok(Outcome::Replayed(receipt));
    }
    let now = chrono::Utc::now();
    let window = client.window(&state.settings.window);
    let mut batch = parse_batch(&body, header_key, &window, now)?;
    batch.body_sha256 = Some(body_sha256);
    may_write(client, batch.site.site_id)?;
    check_sources(client, batch.site.readings.iter().map(|r| r.source_id.as_str()))?;
    principal
        .limits
        .readings(batch.site.submitted)
        .map_err(ApiError::RateLimited)?;
    let stored = match (stored, client.source_prefix.is_some()) {
        (None, true) => processor::find_batch(&state.pool, batch.site.site_id, &batch.key).await?,
        (stored, _) => stored,
    };
    if stored.is_some() || !batch.outside_window.is_empty() {
        // Answered without a transaction: a replay, a reused key or readings outside the window.
        return processor::execute(
            state.pool.clone(),
            state.metrics.clone(),
            state.settings.topology,
            batch,
            stored,
        )
        .await
        .map_err(ApiError::from);
    }
    // The committer's workers run apart from this handler: a client that hangs up cancels the
    // wait for the answer, never a transaction halfway through its COPY.
    state.committer.store(batch).await.map_err(ApiError::from)
}

/// 403 unless `client` may write readings to `site`.
fn may_write(client: &Client, site: SiteId) -> Result<(), ApiError> {
    if client.may_write(site) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "this client may not write readings to site {}",
            site.get()
        )))
    }
}

/// 403 naming each source `client` may not write, if any.
pub(super) fn check_sources<'a>(
    client: &Client,
    sources: impl Iterator<Item = &'a str>,
) -> Result<(), ApiError> {
    let Some(prefix) = client.source_prefix.as_deref() else {
        return Ok(());
    };
    let mut refused: Vec<&str> = sources.filter(|source| !source.starts_with(prefix)).collect();
    refused.dedup();
    if refused.is_empty() {
        return Ok(());
    }
    let found = refused.len();
    let listed = refused
        .into_iter()
        .take(crate::ingest::bulk_request::MAX_LISTED_PROBLEMS)
        .map(|source| {
            FieldError::new(
                "readings.source_id",
                format!("{source:?} does not start with {prefix:?}, the prefix this client may write"),
            )
        })
        .collect();
    Err(ApiError::ForbiddenReadings(listed, found))
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        match error {
            IngestError::SiteNotFound(site) => Self::SiteNotFound(site.get().to_string()),
            IngestError::KeyReused(key) => Self::IdempotencyKeyReused(key.as_str().to_owned()),
            IngestError::OutsideWindow(details) => Self::Validation(details),
            IngestError::TotalOverflow => Self::invalid(
                "readings",
                "would take the site's total beyond the largest storable amount",
            ),
            IngestError::PartitionMissing(error) => {
                tracing::error!(%error, "a reading has no partition: run partition maintenance");
                Self::Unavailable(Some(error))
            }
            IngestError::FreshConflict(error) | IngestError::Database(error) => error.into(),
            IngestError::Inconsistent(what) => Self::Internal(anyhow::anyhow!(what)),
        }
    }
}

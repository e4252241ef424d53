//! `POST /v2/ingest`: store up to 50,000 readings for any number of sites in one transaction, as
//! JSON, NDJSON or CSV, exactly once per idempotency key.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderMap;
use axum::response::Response;
use sha2::{Digest, Sha256};
use tokio::sync::OwnedSemaphorePermit;

use super::access::Routes;
use super::encoding::{self, declared_length, Coding};
use super::openapi::schemas::{BulkBody as BulkJsonBody, BulkReceiptEnvelope, ErrorEnvelope};
use crate::auth::{Principal, Rule};
use crate::error::ApiError;
use crate::ingest::bulk_processor::{self, BulkError, BulkOutcome};
use crate::ingest::bulk_request::{parse_bulk, BulkFormat};
use crate::ingest::processor::Outcome;
use crate::ingest::IdempotencyKey;
use crate::state::AppState;

/// Bodies at least this large are parsed on rayon's pool, off the async workers.
const OFF_WORKER_BYTES: usize = 64 * 1024;

/// The memory a bulk request reserves per byte of its (decoded) body: the body, its parsed
/// readings and their copy to PostgreSQL.
pub const RESERVED_PER_BODY_BYTE: usize = 3;

/// The bulk ingest route, relative to the v2 root.
pub fn router(max_body_bytes: usize) -> Routes {
    Routes::new()
        .post("/ingest", Rule::Ingest, ingest)
        .body_limit(max_body_bytes)
}

/// A bulk body (decoded, when it was sent compressed), the format its `Content-Type` names, and
/// its share of the bulk memory budget.
#[derive(Debug)]
pub struct BulkBody(BulkFormat, Bytes, OwnedSemaphorePermit);

impl FromRequest<AppState> for BulkBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let content_type = request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let Some(format) = content_type.and_then(BulkFormat::from_content_type) else {
            return Err(ApiError::UnsupportedMediaType(
                "send readings as application/json, application/x-ndjson or text/csv".into(),
            ));
        };
        let coding = Coding::from_headers(request.headers())?;
        let limit = state.settings.max_bulk_body_bytes;
        // A compressed body's Content-Length says nothing of what it decodes to: it may take
        // the whole limit until it is read.
        let most = match coding {
            None => declared_length(request.headers()).map_or(limit, |length| length.min(limit)),
            Some(_) => limit,
        };
        let mut reservation = reserve(state, most)?;
        let body = encoding::read_body(request, state, coding, limit).await?;
        // Read, the body holds what it holds: the rest of the reservation goes back at once.
        let needed = budget_kib(state, body.len());
        if let Some(excess) = reservation.num_permits().checked_sub(needed).filter(|n| *n > 0) {
            drop(reservation.split(excess));
        }
        Ok(Self(format, body, reservation))
    }
}

/// The budget's units (KiB, at least one, at most the whole budget) that a body of `bytes` takes.
fn budget_kib(state: &AppState, bytes: usize) -> usize {
    let total = state.settings.bulk_memory_bytes / 1024;
    (bytes.saturating_mul(RESERVED_PER_BODY_BYTE) / 1024).clamp(1, total.max(1))
}

/// Reserves the memory of a body of at most `most` bytes (times [`RESERVED_PER_BODY_BYTE`]) from
/// the budget, before a byte of it is read; 503 with `Retry-After` when the budget is spent. A
/// request larger than the whole budget may still run alone.
fn reserve(state: &AppState, most: usize) -> Result<OwnedSemaphorePermit, ApiError> {
    state
        .bulk_memory
        .clone()
        .try_acquire_many_owned(budget_kib(state, most) as u32)
        .map_err(|_| {
            state
                .metrics
                .bulk_refused_busy
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ApiError::Busy(
                "the server is storing as many bulk uploads as its memory allows; retry shortly".into(),
            )
        })
}

/// This route's part of the API document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(ingest))]
pub struct Api;

/// Stores up to 50,000 readings for any number of sites in one transaction, exactly once per
/// idempotency key (per client).
///
/// NDJSON: one reading object (as in the JSON form) per line. CSV: a header line naming the
/// columns `site_id`, `timestamp`, `value` and optionally `source_id` and `unit`, then one reading
/// per line. Problems are named `readings[3].value` (JSON) or `line 4.value` (NDJSON, CSV).
#[utoipa::path(
    post,
    path = "/ingest",
    tag = "ingest",
    params(
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = r"^[\x20-\x7e]+$",
         description = "Names this request (per client). Required: a request without it is 422."),
    ),
    request_body(content(
        (BulkJsonBody = "application/json"),
        (String = "application/x-ndjson"),
        (String = "text/csv"),
    )),
    responses(
        (status = 201, description = "Stored: the request's receipt, one entry per site.", body = BulkReceiptEnvelope),
        (status = 200, description = "A replay: the original receipt.", body = BulkReceiptEnvelope,
         headers(("Idempotent-Replay" = String, description = "`true`: this answer replays an earlier one."))),
        (status = 400, description = "The body could not be read.", body = ErrorEnvelope),
        (status = 403, description = "Readings of sites or sources the client may not write; `details` lists them.", body = ErrorEnvelope),
        (status = 409, description = "The key was used by this client with other readings.", body = ErrorEnvelope),
        (status = 413, description = "The body is over the bulk limit.", body = ErrorEnvelope),
        (status = 415, description = "The `Content-Type` is not JSON, NDJSON or CSV.", body = ErrorEnvelope),
        (status = 422, description = "`details` names the first 100 problems.", body = ErrorEnvelope),
    )
)]
#[tracing::instrument(skip_all)]
async fn ingest(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<BulkBody, ApiError>,
) -> Response {
    let result = store(&state, &principal, &headers, body).await;
    super::ingest::answer(&state, result)
}

async fn store(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    body: Result<BulkBody, ApiError>,
) -> Result<BulkOutcome, ApiError> {
    // The reservation is held until the batch is stored and answered.
    let BulkBody(format, body, _reservation) = body?;
    let header_key = headers.get("idempotency-key").cloned();
    // A retry is most often the very same bytes: answered from its receipt before any parsing.
    // The bytes are the decoded body's (a retry may be compressed another way); the format is part
    // of what was sent: the same bytes under another Content-Type are not the same request.
    let body_sha256: [u8; 32] = Sha256::new()
        .chain_update(format!("{format:?}\n"))
        .chain_update(&body)
        .finalize()
        .into();
    let key = header_key
        .as_ref()
        .and_then(|v| IdempotencyKey::parse(v.to_str().ok()?).ok());
    // Bulk keys are the client's own: a retry finds only what this client stored.
    let client_id = principal.client.id;
    let stored = match &key {
        Some(key) => bulk_processor::find_batch(&state.pool, client_id, key).await?,
        None => None,
    };
    if let Some(receipt) = stored.as_ref().and_then(|s| s.replay_of_body(&body_sha256)) {
        return Ok(Outcome::Replayed(receipt));
    }
    let now = chrono::Utc::now();
    let window = principal.client.window(&state.settings.window);
    let large = body.len() >= OFF_WORKER_BYTES;
    let writer = principal.client.clone();
    let parse = move || parse_bulk(&body, format, header_key.as_ref(), &window, now, &writer);
    let mut batch = if large { on_rayon(parse).await?? } else { parse()? };
    batch.body_sha256 = Some(body_sha256);
    batch.client_id = client_id;
    principal
        .limits
        .readings(batch.submitted)
        .map_err(ApiError::RateLimited)?;
    // The processor runs as its own task: a client that hangs up cancels this handler, never a
    // transaction halfway through its COPY.
    let execute = bulk_processor::execute(
        state.pool.clone(),
        state.metrics.clone(),
        batch,
        stored,
        state.settings.topology,
    );
    let changes = state.change_signal.clone();
    let task = tokio::spawn(async move {
        let outcome = execute.await;
        if let Ok(Outcome::Stored(_)) = &outcome {
            changes.committed();
        }
        outcome
    });
    match task.await.map_err(|e| ApiError::Internal(e.into()))? {
        Ok(outcome) => Ok(outcome),
        Err(BulkError::SitesNotFound(details)) => Err(ApiError::Validation(details)),
        Err(BulkError::Ingest(error)) => Err(error.into()),
    }
}

/// Runs `work` on rayon's pool and waits for it without blocking an async worker.
async fn on_rayon<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        // A panic here would abort the process (rayon's default); caught, it drops the sender and
        // the request is answered 500 like any other panic.
        if let Ok(result) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
            let _ = sender.send(result);
        }
    });
    receiver
        .await
        .map_err(|_| ApiError::Internal(anyhow::anyhow!("parsing the request body panicked")))
}

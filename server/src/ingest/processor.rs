//! Executes an [`IngestBatch`] (v1, one site) in one transaction.
//!
//! 1. A key seen before (the common retry) is answered from its stored receipt when the payload
//!    hash matches, or refused (409) when it does not: no transaction, no lock. The caller looks
//!    the key up ([`find_batch`]), so that a byte-identical retry is answered before its readings
//!    are even parsed ([`super::StoredBatch::replay_of_body`]). Only then is a batch
//!    with readings outside the accepted window refused, so an old batch's retry is still a replay.
//! 2. Lock the site row and store the readings ([`store`]): the lock also proves the site exists;
//!    the store moves the site's total, count, times, version and hourly rollups by exactly what
//!    was newly stored. Readings newer than any stored for their source go straight in by COPY; if
//!    one turns out stored already, the whole transaction is run again with every reading
//!    conflict-checked.
//! 3. Claim the key (its primary key makes the claim unique), with the payload hash and the receipt.
//!    A retry that raced its original past step 1 and waited for the lock finds the key taken
//!    here: it rolls back and replays the original receipt.
//! 4. Append the batch's events to the site's outbox stream ([`crate::outbox::record`]) and commit:
//!    the readings, the total and the events land together or not at all. Only then is the client
//!    answered.
//!
//! Steps 3 and 4 are the batch's [`Closing`]. When every reading is fresh (the common case), the
//! receipt is known before the statement of step 2 runs, and that statement writes the closing too.
//!
//! The pool must come from [`crate::db::connect`], which gives each connection its staging table.

use sqlx::types::Json;
use std::sync::Arc;

use sqlx::PgPool;

use super::closing::{self, Closing};
use super::store::{self, Path, SiteOutcome};
use super::{BatchReceipt, IdempotencyKey, IngestBatch, StoredBatch};
use crate::db::citus::Topology;
use crate::error::FieldError;
use crate::metrics::Metrics;
use crate::sites::SiteId;

/// How a batch (or, with a [`super::bulk::BulkReceipt`], a bulk request) was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<R = BatchReceipt> {
    /// Stored now (201).
    Stored(R),
    /// Stored by an earlier request with the same key and payload; its receipt (200).
    Replayed(R),
}

/// Why a batch was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The site does not exist.
    #[error("site {} does not exist", .0.get())]
    SiteNotFound(SiteId),
    /// The key was used before for another payload.
    #[error("idempotency key {:?} was used for a different batch", .0.as_str())]
    KeyReused(IdempotencyKey),
    /// Readings outside the accepted window, in a batch that is not a retry.
    #[error("readings outside the accepted window")]
    OutsideWindow(Vec<FieldError>),
    /// The site's total would exceed what a bigint of milligrams holds.
    #[error("the site's total would overflow")]
    TotalOverflow,
    /// A reading fell into the default partition: a partition is missing.
    #[error("no partition exists for a reading; partition maintenance must run")]
    PartitionMissing(#[source] sqlx::Error),
    /// A reading the in-order path took for newer than any stored for its source was stored
    /// already (a writer that bypassed the site lock). Never answered: the processor stores the
    /// batch again with every reading conflict-checked.
    #[error("a reading taken for new was stored already")]
    FreshConflict(#[source] sqlx::Error),
    /// What the database stored and what the receipts would say disagree; nothing was committed.
    /// Never expected: it guards against a mistake in working out each batch's share.
    #[error("the stored readings and the receipts disagree: {0}")]
    Inconsistent(&'static str),
    /// The database failed.
    #[error(transparent)]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for IngestError {
    fn from(error: sqlx::Error) -> Self {
        let constraint = crate::db::citus::violated_constraint(&error);
        let code = error
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        if constraint.as_deref() == Some(partitioning::DEFAULT_PARTITION_GUARD) {
            Self::PartitionMissing(error)
        } else if code.as_deref() == Some("22003") {
            Self::TotalOverflow
        } else {
            Self::Database(error)
        }
    }
}

/// Stores `batch`, or replays or refuses it; see the module docs for the steps. `stored` is what
/// [`find_batch`] found under the batch's key (step 1, which the caller has done); `topology` is the
/// database's.
#[tracing::instrument(skip_all, fields(site_id = batch.site.site_id.get(), batch_id = batch.key.as_str(), readings = batch.site.readings.len()))]
pub async fn execute(
    pool: PgPool,
    metrics: Arc<Metrics>,
    topology: Topology,
    batch: IngestBatch,
    stored: Option<StoredBatch<BatchReceipt>>,
) -> Result<Outcome, IngestError> {
    if let Some(stored) = stored {
        return replay(&batch, stored);
    }
    if !batch.outside_window.is_empty() {
        return Err(IngestError::OutsideWindow(batch.outside_window));
    }
    match attempt(&pool, topology, &batch, Path::InOrder).await {
        Err(IngestError::FreshConflict(error)) => {
            tracing::warn!(%error, "a reading newer than any stored for its source was stored already: storing the batch with conflict checks");
            metrics.fresh_conflict();
            attempt(&pool, topology, &batch, Path::ConflictChecked).await
        }
        outcome => outcome,
    }
}

/// Steps 2 to 4, in one transaction.
async fn attempt(
    pool: &PgPool,
    topology: Topology,
    batch: &IngestBatch,
    path: Path,
) -> Result<Outcome, IngestError> {
    let site_id = batch.site.site_id;
    let mut tx = pool.begin().await?;
    let locked = store::lock(&mut tx, topology, &[site_id.get()]).await?;
    if locked.is_empty() {
        return Err(IngestError::SiteNotFound(site_id));
    }
    let close = |outcomes: &[SiteOutcome]| Closing::new(&[batch], outcomes);
    let parts = [&batch.site];
    match store::store_and_close(&mut tx, topology, &parts, &locked, path, &close).await {
        Ok(closing) => {
            tx.commit().await?;
            let receipt = closing
                .receipts
                .into_iter()
                .next()
                .expect("one receipt for one batch");
            Ok(Outcome::Stored(receipt))
        }
        Err(IngestError::Database(error)) if closing::is_key_taken(&error) => {
            // A retry of this key committed while this transaction waited for the site lock; its
            // readings were already stored, so this one stored nothing new. Answer as a replay.
            tx.rollback().await?;
            match find_batch(pool, site_id, &batch.key).await? {
                Some(stored) => replay(batch, stored),
                None => Err(IngestError::Database(error)),
            }
        }
        Err(error) => Err(error),
    }
}

/// The batch stored under `key` at `site`, if the key was used before.
#[tracing::instrument(skip(pool, key), fields(site_id = site.get()))]
pub async fn find_batch(
    pool: &PgPool,
    site: SiteId,
    key: &IdempotencyKey,
) -> Result<Option<StoredBatch<BatchReceipt>>, sqlx::Error> {
    let found = sqlx::query!(
        r#"select payload_sha256, body_sha256, receipt as "receipt: Json<BatchReceipt>"
             from ingest_batches where site_id = $1 and idempotency_key = $2"#,
        site.get(),
        key.as_str(),
    )
    .fetch_optional(pool)
    .await?;
    Ok(found.map(|row| StoredBatch {
        payload_sha256: row.payload_sha256,
        body_sha256: row.body_sha256,
        receipt: row.receipt.0,
    }))
}

/// The stored receipt for a retry with the same payload; 409 for another payload.
fn replay(batch: &IngestBatch, stored: StoredBatch<BatchReceipt>) -> Result<Outcome, IngestError> {
    stored
        .replay_of_payload(&batch.payload_sha256)
        .map(Outcome::Replayed)
        .ok_or_else(|| IngestError::KeyReused(batch.key.clone()))
}

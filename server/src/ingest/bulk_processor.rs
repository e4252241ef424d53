//! Executes a [`BulkBatch`] (v2, any number of sites) in one transaction.
//!
//! The steps are v1's ([`super::processor`]) for many sites at once:
//! 1. A key seen before is replayed (same payload) or refused (409), before any lock; only then is
//!    a request with readings outside the accepted window refused.
//! 2. Lock every site of the request in ascending id order ([`store::lock_sites`]): two bulk
//!    requests over overlapping sites (or a bulk request and a v1 batch) queue, never deadlock.
//!    A site that does not exist refuses the whole request.
//! 3. One binary COPY of all readings and one statement storing them ([`store::store`]).
//! 4. Claim the key in `bulk_batches`; a racing retry that finds it taken rolls back and replays.
//! 5. Append every site's events ([`crate::outbox::record`]) and commit.
//!
//! On Citus, steps 2, 3 and 5 run a site a statement ([`super::single_shard`]): each statement
//! stays on one site's shard.

use sqlx::types::Json;
use std::sync::Arc;

use sqlx::PgPool;

use super::bulk::{BulkBatch, BulkReceipt};
use super::processor::{IngestError, Outcome};
use super::single_shard;
use super::store::{self, Path};
use super::{IdempotencyKey, StoredBatch};
use crate::db::citus::Topology;
use crate::error::FieldError;
use crate::metrics::Metrics;
use crate::outbox;

/// How a bulk request was answered.
pub type BulkOutcome = Outcome<BulkReceipt>;

/// Why a bulk request was not stored.
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    /// Sites named by the request that do not exist, each with where it first appears.
    #[error("{} sites do not exist", .0.len())]
    SitesNotFound(Vec<FieldError>),
    /// Everything a v1 batch can fail with.
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

impl From<sqlx::Error> for BulkError {
    fn from(error: sqlx::Error) -> Self {
        Self::Ingest(error.into())
    }
}

/// Stores `batch`, or replays or refuses it; see the module docs for the steps. `stored` is what
/// [`find_batch`] found under the batch's key (step 1, which the caller has done).
#[tracing::instrument(skip_all, fields(batch_id = batch.key.as_str(), sites = batch.sites.len(), readings = batch.submitted))]
pub async fn execute(
    pool: PgPool,
    metrics: Arc<Metrics>,
    batch: BulkBatch,
    stored: Option<StoredBatch<BulkReceipt>>,
    topology: Topology,
) -> Result<BulkOutcome, BulkError> {
    if let Some(stored) = stored {
        return replay(&batch, stored);
    }
    if !batch.outside_window.is_empty() {
        return Err(IngestError::OutsideWindow(batch.outside_window).into());
    }

    match attempt(&pool, &batch, Path::InOrder, topology).await {
        Err(BulkError::Ingest(IngestError::FreshConflict(error))) => {
            tracing::warn!(%error, "a reading newer than any stored for its source was stored already: storing the request with conflict checks");
            metrics.fresh_conflict();
            attempt(&pool, &batch, Path::ConflictChecked, topology).await
        }
        outcome => outcome,
    }
}

/// Steps 2 to 5, in one transaction.
async fn attempt(
    pool: &PgPool,
    batch: &BulkBatch,
    path: Path,
    topology: Topology,
) -> Result<BulkOutcome, BulkError> {
    let mut tx = pool.begin().await?;
    let locked = store::lock(&mut tx, topology, &batch.site_ids()).await?;
    if locked.len() < batch.sites.len() {
        return Err(BulkError::SitesNotFound(missing_sites(batch, &locked)));
    }
    let parts: Vec<&store::SiteReadings> = batch.sites.iter().collect();
    let outcomes = match topology {
        Topology::Single => store::store(&mut tx, &parts, &locked, path, None).await?.0,
        Topology::Citus => single_shard::store(&mut tx, &parts, &locked, path).await?,
    };
    let receipt = BulkReceipt::new(&batch.key, &outcomes);
    let claimed = sqlx::query!(
        "insert into bulk_batches (client_id, idempotency_key, payload_sha256, body_sha256, receipt)
         values ($1, $2, $3, $4, $5)",
        batch.client_id,
        batch.key.as_str(),
        &batch.payload_sha256[..],
        batch.body_sha256.as_ref().map(|hash| &hash[..]),
        Json(&receipt) as _,
    )
    .execute(&mut *tx)
    .await;
    match claimed {
        Ok(_) => {
            let events: Vec<_> = outcomes
                .iter()
                .flat_map(|site| outbox::events_for_batch(&receipt.batch_id, site))
                .collect();
            let occurred_at = chrono::Utc::now();
            match topology {
                Topology::Single => outbox::record(&mut tx, occurred_at, &events).await?,
                Topology::Citus => outbox::record_by_site(&mut tx, occurred_at, &events).await?,
            }
            tx.commit().await?;
            Ok(BulkOutcome::Stored(receipt))
        }
        Err(error) if is_key_taken(&error) => {
            // A retry of this key committed while this transaction waited for the locks: answer
            // as a replay of it.
            tx.rollback().await?;
            match find_batch(pool, batch.client_id, &batch.key).await? {
                Some(stored) => replay(batch, stored),
                None => Err(error.into()),
            }
        }
        Err(error) => Err(error.into()),
    }
}

fn missing_sites(batch: &BulkBatch, locked: &[store::LockedSite]) -> Vec<FieldError> {
    batch
        .sites
        .iter()
        .zip(&batch.site_origins)
        .filter(|(group, _)| {
            // Both ascending by site id.
            locked
                .binary_search_by_key(&group.site_id.get(), |site| site.site_id.get())
                .is_err()
        })
        .take(crate::ingest::bulk_request::MAX_LISTED_PROBLEMS)
        .map(|(group, origin)| {
            FieldError::new(
                format!("{origin}.site_id"),
                format!("names site {}, which does not exist", group.site_id.get()),
            )
        })
        .collect()
}

/// The bulk request client `client_id` stored under `key`, if it used the key before.
#[tracing::instrument(skip_all, fields(batch_id = key.as_str()))]
pub async fn find_batch(
    pool: &PgPool,
    client_id: i64,
    key: &IdempotencyKey,
) -> Result<Option<StoredBatch<BulkReceipt>>, sqlx::Error> {
    let found = sqlx::query!(
        r#"select payload_sha256, body_sha256, receipt as "receipt: Json<BulkReceipt>"
             from bulk_batches where client_id = $1 and idempotency_key = $2"#,
        client_id,
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

fn is_key_taken(error: &sqlx::Error) -> bool {
    crate::db::citus::violated_constraint(error).as_deref() == Some("bulk_batches_pkey")
}

/// The stored receipt for a retry with the same payload; 409 for another payload.
fn replay(batch: &BulkBatch, stored: StoredBatch<BulkReceipt>) -> Result<BulkOutcome, BulkError> {
    stored
        .replay_of_payload(&batch.payload_sha256)
        .map(Outcome::Replayed)
        .ok_or_else(|| IngestError::KeyReused(batch.key.clone()).into())
}

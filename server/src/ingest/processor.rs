//! Executes an [`IngestBatch`] in one transaction.
//!
//! 1. A key seen before (the common retry) is answered from its stored receipt when the payload
//!    hash matches, or refused (409) when it does not: no transaction, no lock. Only then is a batch
//!    with readings outside the accepted window refused, so an old batch's retry is still a replay.
//! 2. Lock the site row (`for no key update`), which also proves the site exists. Every writer to a
//!    site queues here, before touching the unique index, so concurrent batches neither deadlock nor
//!    interleave.
//! 3. COPY the readings (binary) into the connection's staging table.
//! 4. One statement inserts them into `measurements` with `on conflict do nothing` and moves the
//!    site's total, count, first/last times and version, and its hourly rollups, by exactly what
//!    was newly stored.
//! 5. Claim the key (its primary key makes the claim unique), with the payload hash and the receipt.
//!    A retry that raced its original past step 1 and waited for the lock finds the key taken
//!    here: it rolls back and replays the original receipt.
//! 6. Append the batch's events to the site's outbox stream ([`crate::outbox::record`]) and commit:
//!    the readings, the total and the events land together or not at all. Only then is the client
//!    answered.
//!
//! The pool must come from [`crate::db::connect`], which gives each connection its staging table.

use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Transaction};

use super::copy::{self, COPY_STAGING};
use super::{BatchReceipt, IdempotencyKey, IngestBatch};
use crate::error::FieldError;
use crate::outbox;
use crate::quantity::Milligrams;
use crate::sites::{ComplianceStatus, SiteId};

/// How a batch was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored now (201).
    Stored(BatchReceipt),
    /// Stored by an earlier request with the same key and payload; its receipt (200).
    Replayed(BatchReceipt),
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
    /// The database failed.
    #[error(transparent)]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for IngestError {
    fn from(error: sqlx::Error) -> Self {
        let constraint = error
            .as_database_error()
            .and_then(|e| e.constraint())
            .map(str::to_owned);
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

/// The locked site row.
struct LockedSite {
    emission_limit_mg: i64,
    total_emissions_mg: i64,
}

/// Stores `batch`, or replays or refuses it; see the module docs for the steps.
#[tracing::instrument(skip_all, fields(site_id = batch.site_id.get(), batch_id = batch.key.as_str(), readings = batch.readings.len()))]
pub async fn execute(pool: PgPool, batch: IngestBatch) -> Result<Outcome, IngestError> {
    if let Some((hash, receipt)) = find_receipt(&pool, batch.site_id, &batch.key).await? {
        return replay(&batch, &hash, receipt);
    }
    if !batch.outside_window.is_empty() {
        return Err(IngestError::OutsideWindow(batch.outside_window));
    }

    let mut tx = pool.begin().await?;
    let site = sqlx::query_as!(
        LockedSite,
        "select emission_limit_mg, total_emissions_mg from sites where id = $1 for no key update",
        batch.site_id.get(),
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(site) = site else {
        return Err(IngestError::SiteNotFound(batch.site_id));
    };

    let (accepted, accepted_mg, total_mg) =
        store_readings(&mut tx, &batch)
            .await?
            .unwrap_or((0, 0, site.total_emissions_mg));
    let total = Milligrams::from_mg(total_mg);
    let submitted = batch.submitted as u64;
    let accepted = accepted as u64;
    let receipt = BatchReceipt {
        batch_id: batch.key.as_str().to_owned(),
        site_id: batch.site_id.get(),
        readings_submitted: submitted,
        readings_accepted: accepted,
        readings_duplicate: submitted - accepted,
        accepted_emissions: Milligrams::from_mg(accepted_mg),
        total_emissions_to_date: total,
        compliance_status: ComplianceStatus::of(total, Milligrams::from_mg(site.emission_limit_mg)),
        replayed: false,
    };
    let claimed = sqlx::query!(
        "insert into ingest_batches (site_id, idempotency_key, payload_sha256, receipt) values ($1, $2, $3, $4)",
        batch.site_id.get(),
        batch.key.as_str(),
        &batch.payload_sha256[..],
        Json(&receipt) as _,
    )
    .execute(&mut *tx)
    .await;
    match claimed {
        Ok(_) => {
            let limit = Milligrams::from_mg(site.emission_limit_mg);
            let events =
                outbox::events_for_batch(&receipt, Milligrams::from_mg(site.total_emissions_mg), limit);
            outbox::record(&mut tx, batch.site_id, chrono::Utc::now(), &events).await?;
            tx.commit().await?;
            Ok(Outcome::Stored(receipt))
        }
        Err(error) if is_key_taken(&error) => {
            // A retry of this key committed while this transaction waited for the site lock; its
            // readings were already stored, so this one stored nothing new. Answer as a replay.
            tx.rollback().await?;
            match find_receipt(&pool, batch.site_id, &batch.key).await? {
                Some((hash, stored)) => replay(&batch, &hash, stored),
                None => Err(IngestError::Database(error)),
            }
        }
        Err(error) => Err(error.into()),
    }
}

/// COPYs the readings into staging and moves them into `measurements`, updating the site by what was
/// newly stored. Returns `(accepted, accepted_mg, new_total_mg)`, or `None` when nothing was new.
async fn store_readings(
    tx: &mut Transaction<'static, Postgres>,
    batch: &IngestBatch,
) -> Result<Option<(i64, i64, i64)>, IngestError> {
    let mut copy_in = tx.copy_in_raw(COPY_STAGING).await?;
    copy_in.send(copy::encode(&batch.readings)).await?;
    copy_in.finish().await?;

    // Runtime-checked: it reads the connection's temporary staging table, which the macros'
    // compile-time connection does not have.
    let stored: Option<(i64, i64, i64)> = sqlx::query_as(
        "with stored as (
             insert into measurements (site_id, source_id, measured_at, value_mg)
             select $1, source_id, measured_at, value_mg from ingest_staging
             on conflict do nothing
             returning measured_at, value_mg
         ), rollup as (
             insert into hourly_rollups as r (site_id, hour, sum_mg, readings, min_mg, max_mg)
             select $1, date_trunc('hour', measured_at, 'UTC'), sum(value_mg)::bigint, count(*), min(value_mg), max(value_mg)
               from stored group by 2
             on conflict (site_id, hour) do update
                set sum_mg = r.sum_mg + excluded.sum_mg, readings = r.readings + excluded.readings,
                    min_mg = least(r.min_mg, excluded.min_mg), max_mg = greatest(r.max_mg, excluded.max_mg)
         ), summary as (
             select count(*) as accepted, coalesce(sum(value_mg), 0)::bigint as accepted_mg,
                    min(measured_at) as first_at, max(measured_at) as last_at
               from stored
         )
         update sites s
            set total_emissions_mg = s.total_emissions_mg + summary.accepted_mg,
                reading_count = s.reading_count + summary.accepted,
                first_reading_at = least(s.first_reading_at, summary.first_at),
                last_reading_at = greatest(s.last_reading_at, summary.last_at),
                version = s.version + 1
           from summary
          where s.id = $1 and summary.accepted > 0
      returning summary.accepted, summary.accepted_mg, s.total_emissions_mg",
    )
    .bind(batch.site_id.get())
    .fetch_optional(&mut **tx)
    .await?;
    Ok(stored)
}

/// The payload hash and receipt stored for `key` at `site`, if the key was used before.
#[tracing::instrument(skip(pool, key), fields(site_id = site.get()))]
pub async fn find_receipt(
    pool: &PgPool,
    site: SiteId,
    key: &IdempotencyKey,
) -> Result<Option<(Vec<u8>, BatchReceipt)>, sqlx::Error> {
    let found = sqlx::query!(
        r#"select payload_sha256, receipt as "receipt: Json<BatchReceipt>"
             from ingest_batches where site_id = $1 and idempotency_key = $2"#,
        site.get(),
        key.as_str(),
    )
    .fetch_optional(pool)
    .await?;
    Ok(found.map(|row| (row.payload_sha256, row.receipt.0)))
}

fn is_key_taken(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.constraint() == Some("ingest_batches_pkey"))
}

fn replay(batch: &IngestBatch, stored_hash: &[u8], receipt: BatchReceipt) -> Result<Outcome, IngestError> {
    if stored_hash == batch.payload_sha256 {
        Ok(Outcome::Replayed(BatchReceipt {
            replayed: true,
            ..receipt
        }))
    } else {
        Err(IngestError::KeyReused(batch.key.clone()))
    }
}

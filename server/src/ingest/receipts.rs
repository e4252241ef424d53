//! Receipt retention: idempotency keys and the answers they replay are kept for a replay window,
//! then deleted in small batches, so `ingest_batches` and `bulk_batches` do not grow for ever.
//!
//! A retry that arrives after its receipt is gone still counts nothing twice: its key is free, so
//! it is stored again, and every reading it carries is already stored under its identity (site,
//! source, time), so it answers 201 with all of them duplicates and moves no total.

use std::time::Duration;

use sqlx::PgPool;

/// Rows deleted per statement: short transactions, short locks.
const ROWS_PER_DELETE: i64 = 5_000;

/// Statements per pass at most, so one pass stays short however far behind it is.
const DELETES_PER_PASS: usize = 200;

/// Deletes receipts older than `keep`, in batches; returns how many. Rows are named by their keys,
/// not their `ctid`s: on Citus a `ctid` means something only inside one shard.
pub async fn prune(pool: &PgPool, keep: Duration) -> Result<u64, sqlx::Error> {
    let before = chrono::Utc::now() - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
    let mut deleted = 0;
    for _ in 0..DELETES_PER_PASS {
        let v1 = sqlx::query!(
            "delete from ingest_batches where (site_id, idempotency_key) in (
                 select site_id, idempotency_key from ingest_batches where created_at < $1 limit $2)",
            before,
            ROWS_PER_DELETE,
        )
        .execute(pool)
        .await?
        .rows_affected();
        let bulk = sqlx::query!(
            "delete from bulk_batches where (client_id, idempotency_key) in (
                 select client_id, idempotency_key from bulk_batches where created_at < $1 limit $2)",
            before,
            ROWS_PER_DELETE,
        )
        .execute(pool)
        .await?
        .rows_affected();
        deleted += v1 + bulk;
        if v1 < ROWS_PER_DELETE as u64 && bulk < ROWS_PER_DELETE as u64 {
            break;
        }
    }
    Ok(deleted)
}

/// How many receipts are kept, and since when.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    /// v1 receipts (`ingest_batches`).
    pub v1: i64,
    /// Bulk receipts (`bulk_batches`).
    pub bulk: i64,
    /// The oldest receipt's time, if any; read only when counting exactly.
    pub oldest: Option<chrono::DateTime<chrono::Utc>>,
}

/// Counts the receipts: from the planner's statistics, as cheap as the partitions' row estimates;
/// or, with `exact`, by scanning both tables, which also finds the oldest (their BRIN indexes on
/// `created_at` serve the pruning's range deletes, not a minimum).
pub async fn summary(pool: &PgPool, exact: bool) -> Result<Summary, sqlx::Error> {
    if !exact {
        let (v1, bulk) = sqlx::query_as(
            "select (select greatest(reltuples, 0)::bigint from pg_class where oid = 'ingest_batches'::regclass),
                    (select greatest(reltuples, 0)::bigint from pg_class where oid = 'bulk_batches'::regclass)",
        )
        .fetch_one(pool)
        .await?;
        return Ok(Summary {
            v1,
            bulk,
            oldest: None,
        });
    }
    let (v1, bulk, oldest) = sqlx::query_as(
        "select (select count(*) from ingest_batches), (select count(*) from bulk_batches),
                least((select min(created_at) from ingest_batches),
                      (select min(created_at) from bulk_batches))",
    )
    .fetch_one(pool)
    .await?;
    Ok(Summary { v1, bulk, oldest })
}

//! Moving rows out of the default partition into proper monthly partitions.
//!
//! The default partition refuses rows (`check (false)`), so rows get there only when that guard was
//! dropped or bypassed. pg_partman's `partition_data_time` moves them, one month per call and
//! transaction, creating the month's partition: an interrupted repair leaves every row either still
//! in the default partition or in its month, never both or neither, and simply runs again. The
//! readings themselves do not change, so site totals stay as they are. At the end the guard is put
//! back (or validated) so the default partition refuses rows again.

use serde::Serialize;
use sqlx::PgPool;

use crate::status::GuardState;
use crate::{quote_ident, DEFAULT_PARTITION, DEFAULT_PARTITION_GUARD, MEASUREMENTS_TABLE};

/// After each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RepairProgress {
    /// Batches done (one month each).
    pub batch: u32,
    /// Rows moved by this batch.
    pub moved: i64,
    /// Rows still in the default partition.
    pub remaining: i64,
}

/// What a repair did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepairReport {
    /// Rows moved into monthly partitions.
    pub moved: i64,
    /// Batches (months).
    pub batches: u32,
    /// Whether the default partition's guard had to be added or validated at the end.
    pub guard_restored: bool,
}

/// Why a repair stopped.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// pg_partman moved nothing although rows remain.
    #[error("{0} rows remain in the default partition and pg_partman moved none of them; see `plume partitions status` and docs/OPERATIONS.md")]
    Stuck(i64),
    /// Rows of retired months: moving them would recreate a retired month.
    #[error("{0} rows in the default partition belong to retired months; they were already counted and archived, so they cannot go back into measurements. Inspect and remove them by hand (see docs/OPERATIONS.md)")]
    Retired(i64),
    /// The rows could not be locked in time.
    #[error("{0} rows remain in the default partition and could not be locked within 5 s (another session is using them); run repair-default again")]
    Locked(i64),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Moves every row out of the default partition, a month per batch, reporting after each.
#[tracing::instrument(skip_all)]
pub async fn repair_default(
    pool: &PgPool,
    mut progress: impl FnMut(&RepairProgress),
) -> Result<RepairReport, RepairError> {
    let mut report = RepairReport::default();
    let retired: i64 = sqlx::query_scalar(&format!(
        "select count(*) from {} d, measurements_settings m where d.measured_at < m.retired_before",
        quote_ident(DEFAULT_PARTITION)
    ))
    .fetch_one(pool)
    .await?;
    if retired > 0 {
        return Err(RepairError::Retired(retired));
    }
    let count = format!("select count(*) from {}", quote_ident(DEFAULT_PARTITION));
    loop {
        let remaining: i64 = sqlx::query_scalar(&count).fetch_one(pool).await?;
        if remaining == 0 {
            break;
        }
        // Runtime-checked: an overloaded pg_partman function the macros cannot resolve. Without
        // analysing the whole table after every month (the maintenance job analyses what changed).
        let moved: i64 = sqlx::query_scalar(
            "select partman.partition_data_time($1, p_batch_count => 1, p_lock_wait => 5, p_analyze => false)",
        )
        .bind(MEASUREMENTS_TABLE)
        .fetch_one(pool)
        .await?;
        match moved {
            // pg_partman could not lock the rows within 5 s: someone is using them.
            -1 => return Err(RepairError::Locked(remaining)),
            0 => return Err(RepairError::Stuck(remaining)),
            _ => {}
        }
        report.moved += moved;
        report.batches += 1;
        progress(&RepairProgress {
            batch: report.batches,
            moved,
            remaining: remaining - moved,
        });
    }
    report.guard_restored = restore_guard(pool).await?;
    Ok(report)
}

/// Adds or validates the default partition's `check (false)` guard; returns whether it had to.
async fn restore_guard(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let state = guard_state(pool).await?;
    let table = quote_ident(DEFAULT_PARTITION);
    let guard = quote_ident(DEFAULT_PARTITION_GUARD);
    let sql = match state {
        GuardState::Valid => return Ok(false),
        GuardState::NotValidated => format!("alter table {table} validate constraint {guard}"),
        GuardState::Missing => format!("alter table {table} add constraint {guard} check (false)"),
    };
    sqlx::query(&sql).execute(pool).await?;
    tracing::info!(?state, "the default partition's guard is back in place");
    Ok(true)
}

/// The state of the default partition's guard constraint.
pub async fn guard_state(pool: &PgPool) -> Result<GuardState, sqlx::Error> {
    let validated = sqlx::query_scalar!(
        "select convalidated from pg_constraint where conname = $1 and conrelid = $2::text::regclass",
        DEFAULT_PARTITION_GUARD,
        DEFAULT_PARTITION,
    )
    .fetch_optional(pool)
    .await?;
    Ok(match validated {
        Some(true) => GuardState::Valid,
        Some(false) => GuardState::NotValidated,
        None => GuardState::Missing,
    })
}

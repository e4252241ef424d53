//! The partition maintenance job: keeps months premade ahead, the default partition watched, expired
//! months retired (when configured) and the planner's statistics fresh.
//!
//! It runs inside `plume serve` at start-up and then every `--maintenance-interval`, and once on
//! demand as `plume partitions maintain`. However many plume processes share a database, one runs it
//! at a time: a run holds a session advisory lock on a connection of its own, which it closes when
//! done (or when the run is cancelled), so the lock can never outlive the run. The others skip.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Connection as _;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::retention::{self, RetentionPolicy};
use crate::{
    create_months, month_start, months_ahead, next_month, partition_report, AcceptedWindow,
    MEASUREMENTS_TABLE,
};

/// The advisory lock key of the job (`"plumePM1"` as a big-endian integer).
pub const MAINTENANCE_LOCK: i64 = 0x706c_756d_6550_4d31;

/// What the job keeps.
#[derive(Debug, Clone)]
pub struct MaintenanceSettings {
    /// Every month of the accepted window must have a partition.
    pub window: AcceptedWindow,
    /// Months made ahead of the current one.
    pub premake_months: u32,
    /// Retire expired months, when set.
    pub retention: Option<RetentionPolicy>,
}

impl Default for MaintenanceSettings {
    fn default() -> Self {
        Self {
            window: AcceptedWindow::default(),
            premake_months: 4,
            retention: None,
        }
    }
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MaintenanceReport {
    /// `false` when another instance was running the job and this run did nothing.
    pub ran: bool,
    /// Partitions created.
    pub created: Vec<String>,
    /// Expired partitions detached by retention.
    pub detached: Vec<String>,
    /// Expired partitions dropped by retention (after archiving, when configured).
    pub dropped: Vec<String>,
    /// Rows in the default partition (there should be none; see `plume partitions repair-default`).
    pub default_rows: i64,
    /// Whole months after the current one that have a partition.
    pub months_ahead: i64,
    /// Partitions analysed because enough of them changed since their last analysis.
    pub analyzed: Vec<String>,
    /// Steps that failed (the others still ran); a run with any is counted as failed.
    pub errors: Vec<String>,
}

/// Why a run could not run at all (a failed step is reported in [`MaintenanceReport::errors`]
/// instead); the job logs it and tries again at the next tick.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Counters of the job in this process, for `/metrics`.
#[derive(Debug, Default)]
pub struct MaintenanceStats {
    succeeded: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
    last_success_unix: AtomicI64,
}

impl MaintenanceStats {
    /// Runs by outcome: `(succeeded, failed, skipped)`.
    pub fn runs(&self) -> (u64, u64, u64) {
        (
            self.succeeded.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.skipped.load(Ordering::Relaxed),
        )
    }

    /// When a run last succeeded here, as Unix seconds (0 when none has).
    pub fn last_success_unix(&self) -> i64 {
        self.last_success_unix.load(Ordering::Relaxed)
    }
}

/// The job.
#[derive(Debug, Clone)]
pub struct MaintenanceJob {
    /// The database.
    pub pool: PgPool,
    /// What to keep.
    pub settings: MaintenanceSettings,
    /// Time between runs.
    pub interval: Duration,
    /// Shared with `/metrics`.
    pub stats: Arc<MaintenanceStats>,
}

impl MaintenanceJob {
    /// Runs now, then every `interval` until `shutdown`. A failed run is logged and retried at the
    /// next tick; nothing here can stop the server.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let run = tokio::select! {
                // Every step is its own transaction: stopping between or within them loses nothing.
                _ = shutdown.cancelled() => return,
                run = self.run_once(Utc::now()) => run,
            };
            match run {
                Ok(report) if !report.errors.is_empty() => tracing::error!(
                    errors = ?report.errors,
                    "partition maintenance failed in part; retrying at the next tick"
                ),
                Ok(report) if report.ran => tracing::info!(
                    created = report.created.len(),
                    dropped = report.dropped.len(),
                    default_rows = report.default_rows,
                    months_ahead = report.months_ahead,
                    analyzed = report.analyzed.len(),
                    "partition maintenance done"
                ),
                Ok(_) => tracing::debug!("partition maintenance skipped: another instance is running it"),
                Err(error) => {
                    tracing::error!(%error, "partition maintenance failed; retrying at the next tick")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// One run as of `now` (the clock is the caller's, so tests can move it), recorded in
    /// `partition_maintenance_runs`. Each step runs even if an earlier one failed; failures are in
    /// the report's `errors`. `Err` only when the database cannot be reached at all.
    #[tracing::instrument(skip(self))]
    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<MaintenanceReport, MaintenanceError> {
        let result = self.locked_run(now).await;
        let counter = match &result {
            Ok(report) if !report.ran => &self.stats.skipped,
            Ok(report) if report.errors.is_empty() => &self.stats.succeeded,
            _ => &self.stats.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if matches!(&result, Ok(report) if report.ran && report.errors.is_empty()) {
            self.stats
                .last_success_unix
                .store(Utc::now().timestamp(), Ordering::Relaxed);
        }
        result
    }

    async fn locked_run(&self, now: DateTime<Utc>) -> Result<MaintenanceReport, MaintenanceError> {
        let Some(lock) = MaintenanceLock::try_acquire(&self.pool).await? else {
            return Ok(MaintenanceReport::default());
        };
        let started = Utc::now();
        let report = maintain(&self.pool, &self.settings, now).await;
        let recorded = sqlx::query!(
            "insert into partition_maintenance_runs (started_at, succeeded, report) values ($1, $2, $3)",
            started,
            report.errors.is_empty(),
            serde_json::to_value(&report).unwrap_or_default(),
        )
        .execute(&self.pool)
        .await;
        lock.release().await;
        recorded?;
        Ok(report)
    }
}

/// The job's session advisory lock, held on a connection of its own (outside the pool, so a pool
/// of one still works). `plume partitions retention --apply` and `repair-default` take it too, so
/// they never run alongside the job. Dropping it without [`MaintenanceLock::release`] closes the
/// connection, which releases the lock as well: it cannot outlive a cancelled run.
#[derive(Debug)]
pub struct MaintenanceLock {
    connection: PgConnection,
}

impl MaintenanceLock {
    /// Takes the lock, or `None` when another session holds it.
    pub async fn try_acquire(pool: &PgPool) -> Result<Option<Self>, sqlx::Error> {
        let mut connection = PgConnection::connect_with(&pool.connect_options()).await?;
        let locked = sqlx::query_scalar!(
            r#"select pg_try_advisory_lock($1) as "locked!""#,
            MAINTENANCE_LOCK
        )
        .fetch_one(&mut connection)
        .await?;
        Ok(locked.then_some(Self { connection }))
    }

    /// Releases the lock and closes its connection.
    pub async fn release(mut self) {
        let _ = sqlx::query_scalar!("select pg_advisory_unlock($1)", MAINTENANCE_LOCK)
            .fetch_one(&mut self.connection)
            .await;
        let _ = self.connection.close().await;
    }
}

/// The months that must have a partition at `now`: the accepted window and `premake` months beyond.
pub fn months_needed(settings: &MaintenanceSettings, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut months = settings.window.months(now);
    let mut month = months
        .last()
        .copied()
        .map_or_else(|| month_start(now), next_month);
    let last = (0..settings.premake_months).fold(month_start(now), |m, _| next_month(m));
    while month <= last {
        months.push(month);
        month = next_month(month);
    }
    months
}

/// The steps, each in its own transaction; a failed step is recorded and the next one runs.
async fn maintain(pool: &PgPool, settings: &MaintenanceSettings, now: DateTime<Utc>) -> MaintenanceReport {
    let mut report = MaintenanceReport {
        ran: true,
        ..MaintenanceReport::default()
    };
    let before = partition_report(pool)
        .await
        .map(|r| r.partitions)
        .unwrap_or_default();
    match create_months(pool, &months_needed(settings, now)).await {
        Ok(failed) => report.errors.extend(
            failed
                .into_iter()
                .map(|(month, e)| format!("creating the partition for {month}: {e}")),
        ),
        Err(error) => report.errors.push(format!("creating partitions: {error}")),
    }
    // pg_partman's own pass over the table (premaking by the database clock, its bookkeeping).
    // Runtime-checked: the function returns `void`, a type the query macros cannot describe.
    let partman = sqlx::query("select partman.run_maintenance($1, p_analyze => false, p_jobmon => false)")
        .bind(MEASUREMENTS_TABLE)
        .execute(pool)
        .await;
    if let Err(error) = partman {
        report.errors.push(format!("pg_partman maintenance: {error}"));
    }
    if let Some(policy) = &settings.retention {
        let mut retired = Vec::new();
        let applied = retention::apply(pool, policy, settings.window, now, |p| {
            retired.push(p.name.clone())
        })
        .await;
        report.detached = retired.clone();
        report.dropped = retired;
        if let Err(error) = applied {
            report.errors.push(format!("retention: {error}"));
        }
    }
    match partition_report(pool).await {
        Ok(after) => {
            report.created = after
                .partitions
                .iter()
                .filter(|p| !before.iter().any(|b| b.name == p.name))
                .map(|p| p.name.clone())
                .collect();
            report.months_ahead = months_ahead(&after, now);
        }
        Err(error) => report.errors.push(format!("reading the partitions: {error}")),
    }
    match default_rows(pool).await {
        Ok(rows) => report.default_rows = rows,
        Err(error) => report
            .errors
            .push(format!("checking the default partition: {error}")),
    }
    match analyze_changed(pool).await {
        Ok(analyzed) => report.analyzed = analyzed,
        Err(error) => report.errors.push(format!("analysing: {error}")),
    }
    report
}

/// Rows in the measurements table's default partition, by pg_partman's `check_default`.
pub async fn default_rows(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let rows = sqlx::query_scalar!(
        r#"select coalesce(sum(count), 0)::bigint as "rows!" from partman.check_default(p_exact_count => true)
            where default_table = $1"#,
        crate::DEFAULT_PARTITION_QUALIFIED,
    )
    .fetch_one(pool)
    .await?;
    Ok(rows)
}

/// Analyses the partitions whose rows changed by more than 10% (or 10,000 rows) since their last
/// analysis, or that were never analysed and hold rows. Autovacuum analyses partitions on its own
/// too; this catches a month that just took a large load before the planner needs it.
async fn analyze_changed(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    let changed = sqlx::query_scalar!(
        r#"select c.relname::text as "name!"
             from pg_inherits i
             join pg_class c on c.oid = i.inhrelid
             join pg_stat_user_tables s on s.relid = c.oid
            where i.inhparent = $1::text::regclass
              and (s.n_mod_since_analyze > greatest(10000, 0.1 * s.n_live_tup)
                   or (s.last_analyze is null and s.last_autoanalyze is null and s.n_live_tup > 0))
            order by 1"#,
        MEASUREMENTS_TABLE,
    )
    .fetch_all(pool)
    .await?;
    for name in &changed {
        sqlx::query(&format!("analyze {}", crate::quote_ident(name)))
            .execute(pool)
            .await?;
    }
    Ok(changed)
}

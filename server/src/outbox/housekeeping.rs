//! The outbox's housekeeping job: keeps the daily event log premade ahead and drops delivered days.

use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// The partitioned event log, as pg_partman knows it.
pub const EVENTS_TABLE: &str = "public.outbox_events";

/// The job, as run inside `plume serve` and `plume relay`.
#[derive(Debug, Clone)]
pub struct Housekeeping {
    /// The database.
    pub pool: PgPool,
    /// How long delivered events are kept.
    pub retention: Duration,
    /// Time between passes.
    pub interval: Duration,
}

impl Housekeeping {
    /// Runs a pass now and then every `interval` until `shutdown`. A failed pass is logged and
    /// retried at the next tick.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            match self.run_once().await {
                Ok(report) if report.ran => tracing::info!(
                    partitions_dropped = report.partitions_dropped,
                    default_rows_moved = report.default_rows_moved,
                    "outbox housekeeping done"
                ),
                Ok(_) => tracing::debug!("outbox housekeeping skipped: another instance is running it"),
                Err(error) => tracing::warn!(%error, "outbox housekeeping failed; retrying next tick"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// One pass: moves any events that fell into the log's default partition into proper days,
    /// premakes the days ahead, and drops whole days older than `retention` that hold no
    /// undelivered event. One instance at a time; the others skip (`ran: false`).
    pub async fn run_once(&self) -> Result<HousekeepingReport, sqlx::Error> {
        pass(&self.pool, self.retention).await
    }
}

/// What a housekeeping pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HousekeepingReport {
    /// `false` when another instance was doing it, and this pass did nothing.
    pub ran: bool,
    /// Days of the event log dropped.
    pub partitions_dropped: i32,
    /// Events found in the log's default partition and moved into daily partitions.
    pub default_rows_moved: i64,
}

/// [`Housekeeping::run_once`].
#[tracing::instrument(skip(pool))]
async fn pass(pool: &PgPool, retention: Duration) -> Result<HousekeepingReport, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let locked = sqlx::query_scalar!(
        r#"select pg_try_advisory_xact_lock(hashtext('plume.outbox.housekeeping')) as "locked!""#
    )
    .fetch_one(&mut *tx)
    .await?;
    if !locked {
        return Ok(HousekeepingReport::default());
    }
    // Creating and dropping partitions locks the log's parent table, and every ingest transaction
    // writes to it: rather than queue behind a long reader (and make ingestion queue behind us),
    // give up and try again at the next tick.
    sqlx::query!("set local lock_timeout = '2s'")
        .execute(&mut *tx)
        .await?;
    // Events in the default partition first: a day cannot be created while the default partition
    // holds rows for it, so premaking would fail on them for ever.
    let default_rows: i64 = sqlx::query_scalar("select count(*) from outbox_events_default")
        .fetch_one(&mut *tx)
        .await?;
    let mut default_rows_moved = 0;
    if default_rows > 0 {
        // Runtime-checked, like run_maintenance below: pg_partman's functions are overloaded or
        // return void, which the macros cannot describe.
        default_rows_moved =
            sqlx::query_scalar("select partman.partition_data_time($1, p_batch_count => 1000)")
                .bind(EVENTS_TABLE)
                .fetch_one(&mut *tx)
                .await?;
    }
    sqlx::query("select partman.run_maintenance($1, p_jobmon => false)")
        .bind(EVENTS_TABLE)
        .execute(&mut *tx)
        .await?;
    // A day is dropped when it ended more than `retention` before the oldest undelivered event
    // (or now): nothing undelivered is ever dropped, however far behind the relay is. Read first,
    // in its own statement: a table being read by the dropping statement cannot be dropped.
    let oldest_undelivered = sqlx::query_scalar!(
        "select min(e.created_at)
           from outbox_streams s
           join lateral (select created_at from outbox_events e
                          where e.site_id = s.site_id and e.seq = s.delivered_seq + 1
                          limit 1) e on true
          where s.head_seq > s.delivered_seq"
    )
    .fetch_one(&mut *tx)
    .await?;
    let reference = oldest_undelivered.map_or_else(Utc::now, |oldest| oldest.min(Utc::now()));
    let partitions_dropped: i32 = sqlx::query_scalar(
        "select partman.drop_partition_time($1, p_retention => make_interval(secs => $2),
                                            p_keep_table => false, p_reference_timestamp => $3)",
    )
    .bind(EVENTS_TABLE)
    .bind(retention.as_secs_f64())
    .bind(reference)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(HousekeepingReport {
        ran: true,
        partitions_dropped,
        default_rows_moved,
    })
}

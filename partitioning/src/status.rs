//! What the DBA sees with `plume partitions status`: every partition with its range, rows, size and
//! the health of its identity index, the default partition, how far ahead months are made, the
//! retention setting and the last maintenance run.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::{quote_ident, DEFAULT_PARTITION, MEASUREMENTS_TABLE};

/// One partition.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    /// Its table name.
    pub name: String,
    /// Its range (`None` for the default partition).
    pub from: Option<DateTime<Utc>>,
    /// Its range's exclusive end.
    pub to: Option<DateTime<Utc>>,
    /// Rows: exact with `--exact`, otherwise the planner's estimate (`None` when never analysed).
    pub rows: Option<i64>,
    /// Heap, indexes and TOAST, in bytes.
    pub total_bytes: i64,
    /// Whether it has a valid unique index for the reading identity. A partition without one would
    /// not deduplicate: never expected, always worth an alarm.
    pub identity_index_valid: bool,
}

/// The last maintenance run.
#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// Whether it succeeded.
    pub succeeded: bool,
    /// Its report (or error).
    pub report: serde_json::Value,
}

/// The measurements table as a whole.
#[derive(Debug, Clone, Serialize)]
pub struct TableStatus {
    /// Ranged partitions, oldest first.
    pub partitions: Vec<PartitionStatus>,
    /// Rows in the default partition (should be 0).
    pub default_rows: i64,
    /// Whether the default partition's `check (false)` guard is in place and validated.
    pub default_guard: GuardState,
    /// Whether `rows` are exact counts.
    pub exact: bool,
    /// Whole months after the current one with a partition.
    pub months_ahead: i64,
    /// pg_partman's premake setting.
    pub premake: i32,
    /// pg_partman's retention setting (`None`: plume retires months only on request or by its
    /// own policy; see `plume partitions retention`).
    pub retention: Option<String>,
    /// Months retired so far.
    pub retired_partitions: i64,
    /// The last maintenance run, by any instance.
    pub last_maintenance: Option<LastRun>,
}

/// The default partition's guard constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardState {
    /// Present and validated: the default partition refuses every row.
    Valid,
    /// Present but `not valid`: new rows are refused, old ones may be there.
    NotValidated,
    /// Missing: rows can land in the default partition.
    Missing,
}

/// Reads the status; `exact` counts every partition's rows (a full scan of each).
#[tracing::instrument(skip(pool))]
pub async fn status(pool: &PgPool, exact: bool, now: DateTime<Utc>) -> Result<TableStatus, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select c.relname::text as "name!",
                  substring(pg_get_expr(c.relpartbound, c.oid) from $$FROM \('([^']+)'\)$$)::timestamptz as "from",
                  substring(pg_get_expr(c.relpartbound, c.oid) from $$TO \('([^']+)'\)$$)::timestamptz as "to",
                  case when c.reltuples >= 0 then c.reltuples::bigint end as estimated_rows,
                  pg_total_relation_size(c.oid) as "total_bytes!",
                  exists (select 1 from pg_inherits ii join pg_index x on x.indexrelid = ii.inhrelid
                           where ii.inhparent = 'measurements_identity'::regclass and x.indrelid = c.oid
                             and x.indisvalid and x.indisready) as "identity_index_valid!"
             from pg_inherits i
             join pg_class c on c.oid = i.inhrelid
            where i.inhparent = $1::text::regclass
            order by 2 nulls last"#,
        MEASUREMENTS_TABLE,
    )
    .fetch_all(pool)
    .await?;
    let mut partitions = Vec::with_capacity(rows.len());
    for row in rows.into_iter().filter(|r| r.name != DEFAULT_PARTITION) {
        let counted = if exact {
            let sql = format!("select count(*) from {}", quote_ident(&row.name));
            Some(sqlx::query_scalar::<_, i64>(&sql).fetch_one(pool).await?)
        } else {
            row.estimated_rows
        };
        partitions.push(PartitionStatus {
            name: row.name,
            from: row.from,
            to: row.to,
            rows: counted,
            total_bytes: row.total_bytes,
            identity_index_valid: row.identity_index_valid,
        });
    }
    let months_ahead = crate::months_ahead(&crate::partition_report(pool).await?, now);
    let config = sqlx::query!(
        "select premake, retention from partman.part_config where parent_table = $1",
        MEASUREMENTS_TABLE
    )
    .fetch_one(pool)
    .await?;
    let default_guard = crate::repair::guard_state(pool).await?;
    let last_maintenance = sqlx::query_as!(
        LastRun,
        "select finished_at, succeeded, report from partition_maintenance_runs order by finished_at desc limit 1"
    )
    .fetch_optional(pool)
    .await?;
    let retired_partitions =
        sqlx::query_scalar!(r#"select count(distinct partition_name) as "count!" from retired_partitions"#)
            .fetch_one(pool)
            .await?;
    Ok(TableStatus {
        partitions,
        default_rows: crate::maintenance::default_rows(pool).await?,
        default_guard,
        exact,
        months_ahead,
        premake: config.premake,
        retention: config.retention,
        retired_partitions,
        last_maintenance,
    })
}

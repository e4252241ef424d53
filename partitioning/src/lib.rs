//! Everything about plume's partitioned `measurements` table.
//!
//! The table is `PARTITION BY RANGE (measured_at)` with one partition per calendar month (UTC),
//! created and premade by pg_partman, 4.7 or 5.x (see `migrations/V1__foundation.sql`). Nothing here
//! depends on the partitions' names, which differ between those versions: a partition is known by
//! its range, read from the catalog. This crate owns the rules around the table that the rest of
//! plume relies on:
//!
//! - [`AcceptedWindow`]: which reading timestamps the service accepts at all;
//! - [`ensure_window_covered`]: every month of that window has a real partition, so a valid reading
//!   never lands in the default partition (which refuses rows by a `check (false)` constraint);
//! - [`partition_report`]: what exists, for readiness checks and operators;
//! - [`maintenance`]: the job that keeps months premade, the default partition watched, expired
//!   months retired and statistics fresh;
//! - [`status`], [`repair`], [`retention`], [`verify`]: what `plume partitions ...` and
//!   `plume verify` do for DBAs;
//! - [`copy`]: the binary `COPY` format rows are written into it with.

pub mod copy;
pub mod maintenance;
pub mod repair;
pub mod retention;
pub mod status;
pub mod verify;

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use sqlx::PgPool;

/// The partitioned table holding every stored reading.
pub const MEASUREMENTS_TABLE: &str = "public.measurements";

/// The default partition; a `check (false)` constraint keeps it empty.
pub const DEFAULT_PARTITION: &str = "measurements_default";

/// The default partition, schema-qualified as pg_partman names it.
pub const DEFAULT_PARTITION_QUALIFIED: &str = "public.measurements_default";

/// The name of the constraint that keeps the default partition empty.
pub const DEFAULT_PARTITION_GUARD: &str = "measurements_default_rejects_rows";

/// The range of reading timestamps the service accepts, relative to the time of ingestion.
///
/// Readings older than `max_age` or more than `max_future` ahead are rejected at the edge; every month
/// between those bounds must have a partition (see [`ensure_window_covered`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptedWindow {
    /// How far back a reading may be (default 730 days).
    pub max_age: Duration,
    /// How far ahead of the server clock a reading may be (default [`DEFAULT_MAX_FUTURE_SECONDS`]):
    /// real clock skew, not more, or a writer could pre-write a future minute and make the real
    /// reading count as its duplicate.
    pub max_future: Duration,
    /// Nothing before this instant, whatever `max_age` says: the months before it were retired
    /// (see [`History::retired_before`]).
    pub not_before: Option<DateTime<Utc>>,
}

/// The default future skew: five minutes.
pub const DEFAULT_MAX_FUTURE_SECONDS: i64 = 300;

/// The most future skew an operator may allow: a day.
pub const MAX_FUTURE_SECONDS_LIMIT: i64 = 86_400;

impl Default for AcceptedWindow {
    fn default() -> Self {
        Self {
            max_age: Duration::days(730),
            max_future: Duration::seconds(DEFAULT_MAX_FUTURE_SECONDS),
            not_before: None,
        }
    }
}

/// Why a timestamp falls outside the [`AcceptedWindow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OutsideWindow {
    /// Older than `now - max_age`.
    #[error("is older than the accepted window of {0} days")]
    TooOld(i64),
    /// Later than `now + max_future` (in seconds).
    #[error("is more than {} in the future", describe_seconds(*.0))]
    TooFarAhead(i64),
}

/// `seconds` as people say it: "24 hours", "5 minutes", "90 seconds".
pub fn describe_seconds(seconds: i64) -> String {
    let (count, unit) = match seconds {
        s if s >= 3600 && s % 3600 == 0 => (s / 3600, "hour"),
        s if s >= 60 && s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{count} {unit}{}", if count == 1 { "" } else { "s" })
}

impl AcceptedWindow {
    /// The earliest accepted timestamp at `now`.
    pub fn earliest(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let by_age = now - self.max_age;
        self.not_before
            .map_or(by_age, |not_before| by_age.max(not_before))
    }

    /// The latest accepted timestamp at `now`.
    pub fn latest(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + self.max_future
    }

    /// Checks one reading's timestamp against the window at `now`.
    pub fn check(&self, at: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), OutsideWindow> {
        if at < self.earliest(now) {
            Err(OutsideWindow::TooOld(
                self.max_age.num_days().min((now - self.earliest(now)).num_days()),
            ))
        } else if at > self.latest(now) {
            Err(OutsideWindow::TooFarAhead(self.max_future.num_seconds()))
        } else {
            Ok(())
        }
    }

    /// The first instant of every UTC month the window touches at `now`, oldest first.
    pub fn months(&self, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let last = month_start(self.latest(now));
        let mut month = month_start(self.earliest(now));
        let mut months = Vec::new();
        while month <= last {
            months.push(month);
            month = next_month(month);
        }
        months
    }
}

/// `name` quoted as an SQL identifier (for table names read from the catalog).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The first instant of the UTC month containing `at`.
pub fn month_start(at: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0)
        .single()
        .expect("the first of a month at midnight UTC always exists")
}

/// The first instant of the UTC month after the one starting at `month`.
pub fn next_month(month: DateTime<Utc>) -> DateTime<Utc> {
    let (year, month) = if month.month() == 12 {
        (month.year() + 1, 1)
    } else {
        (month.year(), month.month() + 1)
    };
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .expect("the first of a month at midnight UTC always exists")
}

/// One child partition of the measurements table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The child table's name as pg_partman made it (`measurements_p2026_11` on 4.7,
    /// `measurements_p20261101` on 5.x); for display and DDL only, never parsed.
    pub name: String,
    /// Inclusive lower bound; `None` for the default partition.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive upper bound; `None` for the default partition.
    pub to: Option<DateTime<Utc>>,
}

/// What the measurements table looks like now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReport {
    /// Every ranged partition, oldest first.
    pub partitions: Vec<PartitionInfo>,
    /// Rows sitting in the default partition (always 0 while its guard constraint holds).
    pub default_rows: i64,
}

impl PartitionReport {
    /// The months in `months` that have no partition.
    pub fn missing_months(&self, months: &[DateTime<Utc>]) -> Vec<DateTime<Utc>> {
        months
            .iter()
            .copied()
            .filter(|month| {
                !self
                    .partitions
                    .iter()
                    .any(|p| p.from.is_some_and(|from| from <= *month) && p.to.is_some_and(|to| *month < to))
            })
            .collect()
    }
}

/// Reads the partitions of the measurements table and the default partition's row count.
#[tracing::instrument(skip(pool))]
pub async fn partition_report(pool: &PgPool) -> Result<PartitionReport, sqlx::Error> {
    // Bounds are read from the catalog rather than from partition names, so the report stays true
    // whatever naming pg_partman used.
    let rows = sqlx::query_as!(
        PartitionInfo,
        r#"select c.relname::text as "name!",
                  substring(pg_get_expr(c.relpartbound, c.oid) from $$FROM \('([^']+)'\)$$)::timestamptz as "from",
                  substring(pg_get_expr(c.relpartbound, c.oid) from $$TO \('([^']+)'\)$$)::timestamptz as "to"
             from pg_inherits i
             join pg_class c on c.oid = i.inhrelid
            where i.inhparent = $1::text::regclass
            order by 2 nulls last"#,
        MEASUREMENTS_TABLE,
    )
    .fetch_all(pool)
    .await?;
    let default_rows = sqlx::query_scalar!(r#"select count(*) as "rows!" from measurements_default"#)
        .fetch_one(pool)
        .await?;
    let partitions = rows.into_iter().filter(|p| p.name != DEFAULT_PARTITION).collect();
    Ok(PartitionReport {
        partitions,
        default_rows,
    })
}

/// What the measurements table's past constrains (the `measurements_settings` row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct History {
    /// Months before this were retired: never recreated, their readings never accepted again.
    pub retired_before: Option<DateTime<Utc>>,
    /// The widest accepted window, in days, any plume process has run with.
    pub widest_window_days: i32,
}

/// Reads the [`History`].
pub async fn history(pool: &PgPool) -> Result<History, sqlx::Error> {
    sqlx::query_as!(
        History,
        "select retired_before, widest_window_days from measurements_settings"
    )
    .fetch_one(pool)
    .await
}

/// Creates a partition for each of `months` that has none, one at a time (a month that fails does
/// not stop the others), never for a retired month. Returns the months it failed on, with why.
pub async fn create_months(
    pool: &PgPool,
    months: &[DateTime<Utc>],
) -> Result<Vec<(DateTime<Utc>, sqlx::Error)>, sqlx::Error> {
    let retired_before = history(pool).await?.retired_before;
    let report = partition_report(pool).await?;
    let mut missing = report.missing_months(months);
    missing.retain(|month| retired_before.is_none_or(|before| *month >= before));
    // Latest first: the months ahead matter most, since readings arrive now.
    missing.reverse();
    let mut failed = Vec::new();
    for month in missing {
        if let Err(error) = create_month(pool, month).await {
            tracing::error!(%month, %error, "creating a measurements partition failed");
            failed.push((month, error));
        }
    }
    Ok(failed)
}

/// Creates `month`'s partition unless it was retired meanwhile: the check and the creation share a
/// transaction holding the settings row `for share`, which retirement updates.
async fn create_month(pool: &PgPool, month: DateTime<Utc>) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let retired_before = sqlx::query_scalar!("select retired_before from measurements_settings for share")
        .fetch_one(&mut *tx)
        .await?;
    if retired_before.is_some_and(|before| month < before) {
        return Ok(());
    }
    sqlx::query_scalar!(
        "select partman.create_partition_time($1, $2)",
        MEASUREMENTS_TABLE,
        &[month]
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await
}

/// Whole months right after the current one that each have a partition, counting until the first
/// gap.
pub fn months_ahead(report: &PartitionReport, now: DateTime<Utc>) -> i64 {
    let mut month = next_month(month_start(now));
    let mut ahead = 0;
    while report.missing_months(&[month]).is_empty() {
        ahead += 1;
        month = next_month(month);
    }
    ahead
}

/// Makes sure every month of `window` at `now` has a partition, creating the missing ones through
/// pg_partman (never a retired month), lets pg_partman premake the months ahead, and records the
/// window as one retention must respect. Returns how many partitions were made.
///
/// Idempotent; run at start-up so that a window configured wider than the migration's default is
/// covered before the first reading arrives.
#[tracing::instrument(skip_all, fields(max_age_days = window.max_age.num_days()))]
pub async fn ensure_window_covered(
    pool: &PgPool,
    window: AcceptedWindow,
    now: DateTime<Utc>,
) -> Result<usize, sqlx::Error> {
    sqlx::query!(
        "update measurements_settings set widest_window_days = greatest(widest_window_days, $1)",
        window.max_age.num_days().min(i64::from(i32::MAX)) as i32,
    )
    .execute(pool)
    .await?;
    let before = partition_report(pool).await?;
    if let Some((month, error)) = create_months(pool, &window.months(now)).await?.into_iter().next() {
        tracing::error!(%month, "a month of the accepted window has no partition");
        return Err(error);
    }
    // Runtime-checked: the function returns `void`, a type the query macros cannot describe.
    sqlx::query("select partman.run_maintenance($1)")
        .bind(MEASUREMENTS_TABLE)
        .execute(pool)
        .await?;
    let after = partition_report(pool).await?;
    let created = after.partitions.len().saturating_sub(before.partitions.len());
    if created > 0 {
        tracing::info!(created, "created measurement partitions");
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn window_rejects_old_and_future_readings() {
        let window = AcceptedWindow::default();
        let now = at("2026-11-26T10:00:00Z");
        assert_eq!(window.check(at("2026-11-26T10:05:00Z"), now), Ok(()));
        assert_eq!(
            window.check(at("2026-11-26T10:05:01Z"), now),
            Err(OutsideWindow::TooFarAhead(300))
        );
        assert_eq!(
            OutsideWindow::TooFarAhead(300).to_string(),
            "is more than 5 minutes in the future"
        );
        let a_day = AcceptedWindow {
            max_future: Duration::hours(24),
            ..window
        };
        assert_eq!(a_day.check(at("2026-11-27T09:59:59Z"), now), Ok(()));
        assert_eq!(
            a_day
                .check(at("2026-11-27T10:00:01Z"), now)
                .unwrap_err()
                .to_string(),
            "is more than 24 hours in the future"
        );
        assert_eq!(window.check(at("2024-11-26T10:00:00Z"), now), Ok(()));
        assert_eq!(
            window.check(at("2024-11-26T09:59:59Z"), now),
            Err(OutsideWindow::TooOld(730))
        );
    }

    #[test]
    fn a_retirement_moves_the_earliest_accepted_time_forward() {
        let now = at("2026-11-26T10:00:00Z");
        let window = AcceptedWindow {
            not_before: Some(at("2025-01-01T00:00:00Z")),
            ..AcceptedWindow::default()
        };
        assert_eq!(window.earliest(now), at("2025-01-01T00:00:00Z"));
        assert!(window.check(at("2024-12-31T23:59:59Z"), now).is_err());
        assert_eq!(window.months(now)[0], at("2025-01-01T00:00:00Z"));
    }

    #[test]
    fn months_cover_the_window_across_year_ends() {
        let window = AcceptedWindow {
            max_age: Duration::days(40),
            max_future: Duration::hours(24),
            ..AcceptedWindow::default()
        };
        let months = window.months(at("2026-12-31T12:00:00Z"));
        assert_eq!(
            months,
            vec![
                at("2026-11-01T00:00:00Z"),
                at("2026-12-01T00:00:00Z"),
                at("2027-01-01T00:00:00Z")
            ]
        );
    }

    #[test]
    fn missing_months_are_those_without_a_range() {
        let report = PartitionReport {
            partitions: vec![PartitionInfo {
                name: "measurements_p2026_11".into(),
                from: Some(at("2026-11-01T00:00:00Z")),
                to: Some(at("2026-12-01T00:00:00Z")),
            }],
            default_rows: 0,
        };
        let months = [at("2026-11-01T00:00:00Z"), at("2026-12-01T00:00:00Z")];
        assert_eq!(report.missing_months(&months), vec![at("2026-12-01T00:00:00Z")]);
    }
}

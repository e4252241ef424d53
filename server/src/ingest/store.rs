//! The storage steps v1 and v2 ingestion share, run inside the caller's transaction.
//!
//! 1. [`lock_sites`]: lock the site rows (`for no key update`) in ascending id order. Every writer to
//!    a site queues here before touching the unique index, so concurrent batches neither deadlock
//!    (all take their locks in the same order) nor interleave.
//! 2. [`store`]: find which readings are newer than anything stored for their (site, source)
//!    ([`super::fresh`], from the `source_heads` table); binary COPY those straight into `measurements`, and the rest into the
//!    connection's staging table; then one statement inserts the staged ones with `on conflict do
//!    nothing` and moves each site's total, count, first/last times, version and hourly rollups by
//!    exactly what was newly stored (the staged rows that went in, plus the fresh ones' totals), and
//!    moves the sources' heads.
//!
//! The connection must come from [`crate::db::connect`], which gives it the staging table.

use std::collections::HashMap;
use std::sync::LazyLock;

use sqlx::{Postgres, Transaction};

use chrono::{DateTime, Utc};

use super::copy::{self, COPY_MEASUREMENTS, COPY_STAGING};
use super::fresh::{self, NewestStored, SourceSpan, Split};
use super::processor::IngestError;
use super::Reading;
use crate::quantity::Milligrams;
use crate::sites::{ComplianceStatus, SiteId};

/// One site's readings within a batch.
#[derive(Debug, Clone)]
pub struct SiteReadings {
    /// The site.
    pub site_id: SiteId,
    /// Distinct readings, sorted by identity (source, time); repeats inside the request removed.
    pub readings: Vec<Reading>,
    /// How many readings the request carried for this site, repeats included.
    pub submitted: usize,
}

/// A locked site row, as it was before this transaction's batch.
#[derive(Debug, Clone, Copy)]
pub struct LockedSite {
    /// The site.
    pub site_id: SiteId,
    /// Its emission limit.
    pub emission_limit: Milligrams,
    /// Its total before this batch.
    pub total_before: Milligrams,
    /// Its newest stored reading's time, if any.
    pub last_reading_at: Option<DateTime<Utc>>,
}

/// How [`store`] sends readings in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Readings newer than anything stored for their (site, source) go straight in by COPY.
    InOrder,
    /// Every reading goes through `on conflict do nothing`: the way back if the in-order path ever
    /// meets a stored reading it did not expect ([`IngestError::FreshConflict`]).
    ConflictChecked,
}

/// What a batch did to one site: the facts its receipt and its outbox events are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteOutcome {
    /// The site.
    pub site_id: SiteId,
    /// Readings the request carried for the site, repeats included.
    pub submitted: u64,
    /// Readings newly stored; the rest were repeats or stored before.
    pub accepted: u64,
    /// The sum of the newly stored readings.
    pub accepted_emissions: Milligrams,
    /// The site's total before the batch (exact: the site was locked).
    pub total_before: Milligrams,
    /// The site's total right after the batch.
    pub total_after: Milligrams,
    /// The site's emission limit.
    pub emission_limit: Milligrams,
}

impl SiteOutcome {
    /// Readings that were not newly stored.
    pub fn duplicate(&self) -> u64 {
        self.submitted - self.accepted
    }

    /// The site's status right after the batch.
    pub fn compliance_status(&self) -> ComplianceStatus {
        ComplianceStatus::of(self.total_after, self.emission_limit)
    }
}

/// Locks the rows of `sites` (sorted ascending, distinct) in that order and returns those that exist.
#[tracing::instrument(skip_all, fields(sites = sites.len()))]
pub async fn lock_sites(
    tx: &mut Transaction<'static, Postgres>,
    sites: &[i64],
) -> Result<Vec<LockedSite>, sqlx::Error> {
    // The row locks are taken as rows leave the ordered scan, so always in ascending id order.
    let rows = sqlx::query!(
        "select id, emission_limit_mg, total_emissions_mg, last_reading_at from sites
          where id = any($1) order by id for no key update",
        sites,
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            Some(LockedSite {
                site_id: SiteId::new(row.id)?,
                emission_limit: Milligrams::from_mg(row.emission_limit_mg),
                total_before: Milligrams::from_mg(row.total_emissions_mg),
                last_reading_at: row.last_reading_at,
            })
        })
        .collect())
}

/// Stores `groups` by `path`. `locked` must be the sites of `groups`, locked by [`lock_sites`], in
/// the same order. Returns each site's outcome, in that order.
#[tracing::instrument(skip_all, fields(sites = groups.len(), ?path))]
pub async fn store(
    tx: &mut Transaction<'static, Postgres>,
    groups: &[SiteReadings],
    locked: &[LockedSite],
    path: Path,
) -> Result<Vec<SiteOutcome>, IngestError> {
    let spans = fresh::source_spans(groups);
    let split = match path {
        Path::InOrder => fresh::split(groups, &newest_stored(tx, &spans, locked).await?),
        Path::ConflictChecked => Split {
            fresh: Vec::new(),
            late: groups
                .iter()
                .flat_map(|group| group.readings.iter().map(|r| (group.site_id, r)))
                .collect(),
        },
    };
    tracing::debug!(fresh = split.fresh.len(), late = split.late.len(), "split");
    if !split.fresh.is_empty() {
        copy_in(tx, COPY_MEASUREMENTS, &split.fresh)
            .await
            .map_err(|error| match error.as_database_error().and_then(|e| e.code()) {
                Some(code) if code == "23505" => IngestError::FreshConflict(error),
                _ => error.into(),
            })?;
    }
    if !split.late.is_empty() {
        copy_in(tx, COPY_STAGING, &split.late).await?;
    }
    let totals = fresh::totals(&split.fresh);
    let hours = &totals.hours;
    let sites = &totals.sites;
    // Runtime-checked: with late readings it reads the connection's temporary staging table, which
    // the macros' compile-time connection does not have. Without any, it leaves the table alone,
    // so the commit has no temporary table to empty.
    let statement = if split.late.is_empty() {
        &*APPLY_FRESH
    } else {
        &*APPLY_STAGED_AND_FRESH
    };
    let stored: Vec<(i64, i64, i64, i64)> = sqlx::query_as(statement)
        .bind(hours.iter().map(|h| h.site_id).collect::<Vec<_>>())
        .bind(hours.iter().map(|h| h.hour).collect::<Vec<_>>())
        .bind(hours.iter().map(|h| h.sum_mg).collect::<Vec<_>>())
        .bind(hours.iter().map(|h| h.readings).collect::<Vec<_>>())
        .bind(hours.iter().map(|h| h.min_mg).collect::<Vec<_>>())
        .bind(hours.iter().map(|h| h.max_mg).collect::<Vec<_>>())
        .bind(sites.iter().map(|s| s.site_id).collect::<Vec<_>>())
        .bind(sites.iter().map(|s| s.readings).collect::<Vec<_>>())
        .bind(sites.iter().map(|s| s.sum_mg).collect::<Vec<_>>())
        .bind(sites.iter().map(|s| s.first_at).collect::<Vec<_>>())
        .bind(sites.iter().map(|s| s.last_at).collect::<Vec<_>>())
        .bind(spans.iter().map(|s| s.site_id.get()).collect::<Vec<_>>())
        .bind(spans.iter().map(|s| s.source_id).collect::<Vec<_>>())
        .bind(spans.iter().map(|s| s.newest).collect::<Vec<_>>())
        .fetch_all(&mut **tx)
        .await?;

    let stored: HashMap<i64, (i64, i64, i64)> = stored
        .into_iter()
        .map(|(site, accepted, accepted_mg, total)| (site, (accepted, accepted_mg, total)))
        .collect();
    Ok(groups
        .iter()
        .zip(locked)
        .map(|(group, site)| {
            debug_assert_eq!(group.site_id, site.site_id);
            let (accepted, accepted_mg, total_after) = stored
                .get(&site.site_id.get())
                .map(|&(accepted, accepted_mg, total)| (accepted as u64, accepted_mg, total))
                .unwrap_or((0, 0, site.total_before.mg()));
            SiteOutcome {
                site_id: site.site_id,
                submitted: group.submitted as u64,
                accepted,
                accepted_emissions: Milligrams::from_mg(accepted_mg),
                total_before: site.total_before,
                total_after: Milligrams::from_mg(total_after),
                emission_limit: site.emission_limit,
            }
        })
        .collect())
}

/// The head of each (site, source) in `spans` that may have readings at or after its earliest one
/// in the batch. A site whose earliest reading is after its newest stored one (`last_reading_at`)
/// needs no look at all: the common case, answered without a query.
async fn newest_stored(
    tx: &mut Transaction<'static, Postgres>,
    spans: &[SourceSpan<'_>],
    locked: &[LockedSite],
) -> Result<NewestStored, sqlx::Error> {
    let wanted: Vec<&SourceSpan<'_>> = spans
        .iter()
        .filter(|span| {
            let last = locked
                .binary_search_by_key(&span.site_id.get(), |s| s.site_id.get())
                .ok()
                .and_then(|index| locked[index].last_reading_at);
            last.is_some_and(|last| span.earliest <= last)
        })
        .collect();
    if wanted.is_empty() {
        return Ok(NewestStored::new());
    }
    let rows = sqlx::query!(
        "select h.site_id, h.source_id, h.newest_at
           from source_heads h
           join unnest($1::bigint[], $2::text[]) as k(site_id, source_id)
             on h.site_id = k.site_id and h.source_id = k.source_id",
        &wanted.iter().map(|span| span.site_id.get()).collect::<Vec<_>>(),
        &wanted
            .iter()
            .map(|span| span.source_id.to_owned())
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| Some(((SiteId::new(row.site_id)?, row.source_id), row.newest_at)))
        .collect())
}

async fn copy_in(
    tx: &mut Transaction<'static, Postgres>,
    statement: &str,
    rows: &[fresh::SiteReading<'_>],
) -> Result<(), sqlx::Error> {
    let mut copy_in = tx.copy_in_raw(statement).await?;
    copy_in.send(copy::encode(rows)).await?;
    copy_in.finish().await?;
    Ok(())
}

/// The statement that applies a batch: `$1`..`$6` are the fresh readings' per-(site, hour) totals,
/// `$7`..`$11` their per-site totals, `$12`..`$14` the newest reading of each (site, source) in the
/// batch (all of which are stored once it commits, new or not); `stored` is what the staged
/// readings newly stored.
fn apply_statement(stored: &str) -> String {
    format!(
        "with stored as ({stored}),
         hours as (
             select site_id, date_trunc('hour', measured_at, 'UTC') as hour, sum(value_mg)::bigint as sum_mg,
                    count(*) as readings, min(value_mg) as min_mg, max(value_mg) as max_mg
               from stored group by 1, 2
             union all
             select * from unnest($1::bigint[], $2::timestamptz[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
         ), rollup as (
             insert into hourly_rollups as r (site_id, hour, sum_mg, readings, min_mg, max_mg)
             select site_id, hour, sum(sum_mg)::bigint, sum(readings)::bigint, min(min_mg), max(max_mg)
               from hours group by 1, 2
             on conflict (site_id, hour) do update
                set sum_mg = r.sum_mg + excluded.sum_mg, readings = r.readings + excluded.readings,
                    min_mg = least(r.min_mg, excluded.min_mg), max_mg = greatest(r.max_mg, excluded.max_mg)
         ), heads as (
             insert into source_heads as h (site_id, source_id, newest_at)
             select * from unnest($12::bigint[], $13::text[], $14::timestamptz[])
             on conflict (site_id, source_id) do update set newest_at = greatest(h.newest_at, excluded.newest_at)
         ), summary as (
             select site_id, sum(accepted)::bigint as accepted, sum(accepted_mg)::bigint as accepted_mg,
                    min(first_at) as first_at, max(last_at) as last_at
               from (
                   select site_id, count(*) as accepted, sum(value_mg)::bigint as accepted_mg,
                          min(measured_at) as first_at, max(measured_at) as last_at
                     from stored group by site_id
                   union all
                   select * from unnest($7::bigint[], $8::bigint[], $9::bigint[], $10::timestamptz[], $11::timestamptz[])
               ) parts
              group by site_id
         )
         update sites s
            set total_emissions_mg = s.total_emissions_mg + summary.accepted_mg,
                reading_count = s.reading_count + summary.accepted,
                first_reading_at = least(s.first_reading_at, summary.first_at),
                last_reading_at = greatest(s.last_reading_at, summary.last_at),
                version = s.version + 1
           from summary
          where s.id = summary.site_id
      returning s.id, summary.accepted, summary.accepted_mg, s.total_emissions_mg"
    )
}

/// Applies staged (late) readings and fresh ones.
static APPLY_STAGED_AND_FRESH: LazyLock<String> = LazyLock::new(|| {
    apply_statement(
        "insert into measurements (site_id, source_id, measured_at, value_mg)
         select site_id, source_id, measured_at, value_mg from ingest_staging
         on conflict do nothing
         returning site_id, measured_at, value_mg",
    )
});

/// Applies fresh readings only; staging is not touched.
static APPLY_FRESH: LazyLock<String> = LazyLock::new(|| {
    apply_statement("select null::bigint as site_id, null::timestamptz as measured_at, null::bigint as value_mg where false")
});

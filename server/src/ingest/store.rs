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

use super::closing::{self, Closing};
use super::copy::{self, COPY_MEASUREMENTS, COPY_STAGING};
use super::fresh::{self, NewestStored, PartTotals, SiteReading, SourceSpan, Split, Stored};
use super::processor::IngestError;
use super::single_shard;
use super::Reading;
use crate::db::citus::Topology;
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

/// [`lock_sites`] for Citus: one site a statement, in the same order, with the same answer. The
/// lock is taken by an `update` (that changes nothing), not a `select ... for update`: Citus blocks
/// a shard's writes while it moves the shard to another worker, and waits for the writers in
/// flight, but a locking read is not a write to it. A site locked by a read just before its shard
/// moved would be locked on the old copy only, while the transaction's writes go to the new one,
/// where a second writer locks the same site: a lost update (which [`check_totals`] catches, and
/// `plume-faults citus-rebalance` staged).
#[tracing::instrument(skip_all, fields(sites = sites.len()))]
pub async fn lock_sites_one_by_one(
    tx: &mut Transaction<'static, Postgres>,
    sites: &[i64],
) -> Result<Vec<LockedSite>, sqlx::Error> {
    let mut locked = Vec::with_capacity(sites.len());
    for &site in sites {
        let row = sqlx::query!(
            "update sites set version = version where id = $1
             returning id, emission_limit_mg, total_emissions_mg, last_reading_at",
            site,
        )
        .fetch_optional(&mut **tx)
        .await?;
        locked.extend(row.and_then(|row| {
            Some(LockedSite {
                site_id: SiteId::new(row.id)?,
                emission_limit: Milligrams::from_mg(row.emission_limit_mg),
                total_before: Milligrams::from_mg(row.total_emissions_mg),
                last_reading_at: row.last_reading_at,
            })
        }));
    }
    Ok(locked)
}

/// Locks `sites` as [`lock_sites`] does, in the statements `topology` wants.
pub async fn lock(
    tx: &mut Transaction<'static, Postgres>,
    topology: Topology,
    sites: &[i64],
) -> Result<Vec<LockedSite>, sqlx::Error> {
    match topology {
        Topology::Single => lock_sites(tx, sites).await,
        Topology::Citus => lock_sites_one_by_one(tx, sites).await,
    }
}

/// Stores `parts` (as [`store`]) and writes the [`Closing`] that `close` makes of their outcomes,
/// in the statements `topology` wants: on one node the closing rides in the apply statement when it
/// can; on Citus every statement stays on one site's shard ([`single_shard`]).
pub async fn store_and_close(
    tx: &mut Transaction<'static, Postgres>,
    topology: Topology,
    parts: &[&SiteReadings],
    locked: &[LockedSite],
    path: Path,
    close: Close<'_>,
) -> Result<Closing, IngestError> {
    let outcomes = match topology {
        Topology::Single => match store(tx, parts, locked, path, Some(close)).await? {
            (_, Some(written)) => return Ok(written),
            (outcomes, None) => outcomes,
        },
        Topology::Citus => single_shard::store(tx, parts, locked, path).await?,
    };
    let closing = close(&outcomes);
    match topology {
        Topology::Single => closing::write(tx, &closing).await?,
        Topology::Citus => closing::write_by_site(tx, &closing).await?,
    }
    Ok(closing)
}

/// Makes a transaction's [`Closing`] from its parts' outcomes.
pub type Close<'c> = &'c (dyn Fn(&[SiteOutcome]) -> Closing + Sync);

/// Stores `parts` by `path`: each part one batch's readings for one site, sorted by site, a site's
/// parts in the order their batches arrived. `locked` must hold every site of `parts`, locked by
/// [`lock_sites`], ascending. Returns each part's outcome, in order: what it would have done alone,
/// one after the other, its site's total moving part by part.
///
/// With `close`, when every reading is fresh, the closing it makes is written by the same statement
/// and returned; otherwise (`None`) the caller writes its own.
#[tracing::instrument(skip_all, fields(parts = parts.len(), ?path))]
pub async fn store(
    tx: &mut Transaction<'static, Postgres>,
    parts: &[&SiteReadings],
    locked: &[LockedSite],
    path: Path,
    close: Option<Close<'_>>,
) -> Result<(Vec<SiteOutcome>, Option<Closing>), IngestError> {
    let (spans, split) = split(tx, parts, locked, path, Topology::Single).await?;
    copy_fresh(tx, &split.fresh).await?;
    if !split.late.is_empty() {
        copy_in(
            tx,
            COPY_STAGING,
            copy::encode_staged(&split.late, &split.late_parts),
        )
        .await?;
    }
    let totals = fresh::totals(&split.fresh);
    let hours = &totals.hours;
    let sites = &totals.sites;
    let heads = fresh::heads(&spans);
    // Runtime-checked: with late readings it reads the connection's temporary staging table, which
    // the macros' compile-time connection does not have. Without any, it leaves the table alone,
    // so the commit has no temporary table to empty.
    // Every reading fresh: each part's outcome is known now, and so is the closing.
    let known = match split.late.is_empty() {
        true => {
            let nothing_staged = vec![PartTotals::default(); parts.len()];
            Some(outcomes(parts, locked, &split.fresh_by_part, &nothing_staged)?)
        }
        false => None,
    };
    let closing = match (&known, close) {
        (Some(known), Some(close)) => Some(close(known)),
        _ => None,
    };
    let statement = match (split.late.is_empty(), closing.is_some()) {
        (true, true) => &*APPLY_FRESH_AND_CLOSE,
        (true, false) => &*APPLY_FRESH,
        (false, _) => &*APPLY_STAGED_AND_FRESH,
    };
    let query = sqlx::query_as(statement)
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
        .bind(heads.iter().map(|h| h.0.get()).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.1).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.2).collect::<Vec<_>>());
    let query = match &closing {
        Some(closing) => closing.bind(query),
        None => query,
    };
    let rows: Vec<(i32, i64, i64, i64)> = query.fetch_all(&mut **tx).await?;

    let mut staged = vec![PartTotals::default(); parts.len()];
    let mut totals_after: HashMap<i64, i64> = HashMap::new();
    for (kind, key, readings, mg) in rows {
        match kind {
            STAGED_OF_PART => {
                let part = usize::try_from(key).ok().and_then(|index| staged.get_mut(index));
                let part = part.ok_or(IngestError::Inconsistent("a staged reading of no part"))?;
                *part = PartTotals {
                    readings: readings as u64,
                    sum_mg: mg,
                };
            }
            _ => {
                totals_after.insert(key, mg);
            }
        }
    }
    let outcomes = match known {
        Some(known) => known,
        None => outcomes(parts, locked, &split.fresh_by_part, &staged)?,
    };
    check_totals(&outcomes, locked, &totals_after)?;
    Ok((outcomes, closing))
}

/// The (site, source) spans of `parts` (sorted by site), and `parts` split by `path` into fresh and
/// late readings ([`fresh::split`]): in order against the heads they need, read in the statements
/// `topology` wants, or against anything stored.
pub(super) async fn split<'a>(
    tx: &mut Transaction<'static, Postgres>,
    parts: &[&'a SiteReadings],
    locked: &[LockedSite],
    path: Path,
    topology: Topology,
) -> Result<(Vec<SourceSpan<'a>>, Split<'a>), sqlx::Error> {
    debug_assert!(parts
        .windows(2)
        .all(|pair| pair[0].site_id.get() <= pair[1].site_id.get()));
    let spans = fresh::source_spans(parts);
    let newest = match path {
        Path::InOrder => {
            let wanted = heads_wanted(&spans, locked);
            Some(match topology {
                Topology::Single => newest_stored(tx, &wanted).await?,
                Topology::Citus => single_shard::newest_stored(tx, &wanted).await?,
            })
        }
        Path::ConflictChecked => None,
    };
    let split = fresh::split(parts, newest.as_ref().map_or(Stored::Anything, Stored::Newest));
    tracing::debug!(fresh = split.fresh.len(), late = split.late.len(), "split");
    Ok((spans, split))
}

/// Checks that every site's total moved, in the database, by exactly what its parts say they
/// stored: `totals_after` holds the total of each site whose row was updated.
pub(super) fn check_totals(
    outcomes: &[SiteOutcome],
    locked: &[LockedSite],
    totals_after: &HashMap<i64, i64>,
) -> Result<(), IngestError> {
    for site in locked {
        let by_parts = outcomes
            .iter()
            .rev()
            .find(|outcome| outcome.site_id == site.site_id)
            .map(|outcome| outcome.total_after.mg());
        let in_database = totals_after.get(&site.site_id.get()).copied();
        let agree = match in_database {
            Some(total) => by_parts == Some(total),
            None => by_parts.is_none_or(|total| total == site.total_before.mg()),
        };
        if !agree {
            return Err(IngestError::Inconsistent(
                "a site's total and its parts' receipts disagree",
            ));
        }
    }
    Ok(())
}

/// COPYs `fresh` (readings newer than any stored for their source) straight into `measurements`;
/// a unique violation means one was stored after all ([`IngestError::FreshConflict`]).
pub(super) async fn copy_fresh(
    tx: &mut Transaction<'static, Postgres>,
    fresh: &[SiteReading<'_>],
) -> Result<(), IngestError> {
    if fresh.is_empty() {
        return Ok(());
    }
    copy_in(tx, COPY_MEASUREMENTS, copy::encode(fresh))
        .await
        .map_err(|error| match crate::db::citus::is_unique_violation(&error) {
            true => IngestError::FreshConflict(error),
            false => error.into(),
        })
}

/// Each part's outcome from what it newly stored: its fresh readings and its staged (late) ones
/// that went in. A site's parts follow each other, each starting from the total the one before
/// left.
pub(super) fn outcomes(
    parts: &[&SiteReadings],
    locked: &[LockedSite],
    fresh: &[PartTotals],
    staged: &[PartTotals],
) -> Result<Vec<SiteOutcome>, IngestError> {
    let mut running: Option<(SiteId, Milligrams)> = None;
    let mut outcomes = Vec::with_capacity(parts.len());
    for (index, part) in parts.iter().enumerate() {
        let site = locked
            .binary_search_by_key(&part.site_id.get(), |site| site.site_id.get())
            .map(|found| locked[found])
            .map_err(|_| IngestError::Inconsistent("a part of a site that is not locked"))?;
        let total_before = match running {
            Some((id, total)) if id == part.site_id => total,
            _ => site.total_before,
        };
        let accepted = fresh[index].readings + staged[index].readings;
        let accepted_mg = fresh[index].sum_mg + staged[index].sum_mg;
        let total_after = total_before
            .mg()
            .checked_add(accepted_mg)
            .ok_or(IngestError::TotalOverflow)?;
        let total_after = Milligrams::from_mg(total_after);
        running = Some((part.site_id, total_after));
        outcomes.push(SiteOutcome {
            site_id: part.site_id,
            submitted: part.submitted as u64,
            accepted,
            accepted_emissions: Milligrams::from_mg(accepted_mg),
            total_before,
            total_after,
            emission_limit: site.emission_limit,
        });
    }
    Ok(outcomes)
}

/// The (site, source) spans whose heads must be read: those that may have readings stored at or
/// after their earliest one in the batch. A site whose earliest reading is after its newest stored
/// one (`last_reading_at`) needs no look at all: the common case, answered without a query.
fn heads_wanted<'s, 'a>(spans: &'s [SourceSpan<'a>], locked: &[LockedSite]) -> Vec<&'s SourceSpan<'a>> {
    spans
        .iter()
        .filter(|span| {
            let last = locked
                .binary_search_by_key(&span.site_id.get(), |s| s.site_id.get())
                .ok()
                .and_then(|index| locked[index].last_reading_at);
            last.is_some_and(|last| span.earliest <= last)
        })
        .collect()
}

/// The head of each (site, source) of `wanted`, in one statement.
async fn newest_stored(
    tx: &mut Transaction<'static, Postgres>,
    wanted: &[&SourceSpan<'_>],
) -> Result<NewestStored, sqlx::Error> {
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
    encoded: Vec<u8>,
) -> Result<(), sqlx::Error> {
    let mut copy_in = tx.copy_in_raw(statement).await?;
    copy_in.send(encoded).await?;
    copy_in.finish().await?;
    Ok(())
}

/// A row of the apply statement's answer that gives a part's staged readings that went in (the
/// other kind gives a site's total after the statement).
const STAGED_OF_PART: i32 = 0;

/// The statement that applies a group: `$1`..`$6` are the fresh readings' per-(site, hour) totals,
/// `$7`..`$11` their per-site totals, `$12`..`$14` the newest reading of each (site, source) in the
/// group (all of which are stored once it commits, new or not); `stored` is what the staged
/// readings newly stored, `stored_parts` the same with each one's part. It answers two kinds of
/// rows: ([`STAGED_OF_PART`], part, readings, sum) for each part with staged readings that went in,
/// and (1, site, 0, total) for each site whose total moved. `closing` is empty or
/// [`closing::ctes`].
fn apply_statement(stored: &str, stored_parts: &str, closing: &str) -> String {
    format!(
        "with stored as ({stored}),
         stored_parts as ({stored_parts}),
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
         ), updated as (
             update sites s
                set total_emissions_mg = s.total_emissions_mg + summary.accepted_mg,
                    reading_count = s.reading_count + summary.accepted,
                    first_reading_at = least(s.first_reading_at, summary.first_at),
                    last_reading_at = greatest(s.last_reading_at, summary.last_at),
                    version = s.version + 1
               from summary
              where s.id = summary.site_id
          returning s.id, s.total_emissions_mg
         ){closing}
         select {STAGED_OF_PART} as kind, part, count(*)::bigint, sum(value_mg)::bigint
           from stored_parts group by part
         union all
         select 1, id, 0::bigint, total_emissions_mg from updated"
    )
}

/// Applies staged (late) readings and fresh ones. No two staged readings are the same reading
/// ([`fresh::split`]), so each stored one is found again in staging with its part.
static APPLY_STAGED_AND_FRESH: LazyLock<String> = LazyLock::new(|| {
    apply_statement(
        "insert into measurements (site_id, source_id, measured_at, value_mg)
         select site_id, source_id, measured_at, value_mg from ingest_staging
         on conflict do nothing
         returning site_id, source_id, measured_at, value_mg",
        "select staged.part, stored.value_mg
           from stored join ingest_staging staged using (site_id, source_id, measured_at)",
        "",
    )
});

/// Stores nothing from staging.
const NOTHING_STAGED: [&str; 2] = [
    "select null::bigint as site_id, null::timestamptz as measured_at, null::bigint as value_mg where false",
    "select null::bigint as part, null::bigint as value_mg where false",
];

/// Applies fresh readings only; staging is not touched.
static APPLY_FRESH: LazyLock<String> =
    LazyLock::new(|| apply_statement(NOTHING_STAGED[0], NOTHING_STAGED[1], ""));

/// Applies fresh readings only and writes the transaction's [`Closing`] (its parameters follow the
/// fourteen of the apply statement).
static APPLY_FRESH_AND_CLOSE: LazyLock<String> =
    LazyLock::new(|| apply_statement(NOTHING_STAGED[0], NOTHING_STAGED[1], &closing::ctes()));

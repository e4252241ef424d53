//! The storage steps v1 and v2 ingestion share, run inside the caller's transaction.
//!
//! 1. [`lock_sites`]: lock the site rows (`for no key update`) in ascending id order. Every writer to
//!    a site queues here before touching the unique index, so concurrent batches neither deadlock
//!    (all take their locks in the same order) nor interleave.
//! 2. [`store`]: binary COPY of the readings into the connection's staging table, then one statement
//!    that inserts them into `measurements` with `on conflict do nothing` and moves each site's
//!    total, count, first/last times, version and hourly rollups by exactly what was newly stored.
//!
//! The connection must come from [`crate::db::connect`], which gives it the staging table.

use std::collections::HashMap;

use sqlx::{Postgres, Transaction};

use super::copy::{self, COPY_STAGING};
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
        "select id, emission_limit_mg, total_emissions_mg from sites
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
            })
        })
        .collect())
}

/// COPYs `groups` into staging and moves them into `measurements`. `locked` must be the sites of
/// `groups`, locked by [`lock_sites`], in the same order. Returns each site's outcome, in that order.
#[tracing::instrument(skip_all, fields(sites = groups.len()))]
pub async fn store(
    tx: &mut Transaction<'static, Postgres>,
    groups: &[SiteReadings],
    locked: &[LockedSite],
) -> Result<Vec<SiteOutcome>, sqlx::Error> {
    let mut copy_in = tx.copy_in_raw(COPY_STAGING).await?;
    copy_in.send(copy::encode(groups)).await?;
    copy_in.finish().await?;

    // Runtime-checked: it reads the connection's temporary staging table, which the macros'
    // compile-time connection does not have.
    let stored: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
        "with stored as (
             insert into measurements (site_id, source_id, measured_at, value_mg)
             select site_id, source_id, measured_at, value_mg from ingest_staging
             on conflict do nothing
             returning site_id, measured_at, value_mg
         ), rollup as (
             insert into hourly_rollups as r (site_id, hour, sum_mg, readings, min_mg, max_mg)
             select site_id, date_trunc('hour', measured_at, 'UTC'), sum(value_mg)::bigint, count(*),
                    min(value_mg), max(value_mg)
               from stored group by 1, 2
             on conflict (site_id, hour) do update
                set sum_mg = r.sum_mg + excluded.sum_mg, readings = r.readings + excluded.readings,
                    min_mg = least(r.min_mg, excluded.min_mg), max_mg = greatest(r.max_mg, excluded.max_mg)
         ), summary as (
             select site_id, count(*) as accepted, sum(value_mg)::bigint as accepted_mg,
                    min(measured_at) as first_at, max(measured_at) as last_at
               from stored group by site_id
         )
         update sites s
            set total_emissions_mg = s.total_emissions_mg + summary.accepted_mg,
                reading_count = s.reading_count + summary.accepted,
                first_reading_at = least(s.first_reading_at, summary.first_at),
                last_reading_at = greatest(s.last_reading_at, summary.last_at),
                version = s.version + 1
           from summary
          where s.id = summary.site_id
      returning s.id, summary.accepted, summary.accepted_mg, s.total_emissions_mg",
    )
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

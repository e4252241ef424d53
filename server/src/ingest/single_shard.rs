//! [`super::store::store`] as single-shard statements, for a Citus coordinator.
//!
//! On Citus a statement is cheap when it touches one shard: the coordinator hands it whole to the
//! worker that holds the shard. The single-node apply statement (one data-modifying CTE over every
//! site of a group, reading arrays) is planned across shards instead, each part of it fanned out
//! and queued on shard locks. Here each site's writes are plain statements on its id alone, the
//! rows listed as `values` ([`one_site_rows`]), the counts taken from `returning`. The tables are
//! colocated by site, so a transaction of one site's batches (as group commit makes them on
//! Citus) commits on one worker, without two-phase commit.
//!
//! Same inputs, same outcomes, same rows as the single-node statement: the suite runs on both.
//!
//! Per site: the heads read (only when a reading is not newer than the site's newest), the fresh
//! readings' `insert` (a COPY for a transaction of several sites: see [`insert_fresh`]), the late
//! readings' `insert ... on conflict do nothing returning`, the site's row (and the change feed's
//! copy of it, [`mirror`]), its rollups and its sources' heads; a statement lists at most
//! [`MAX_ROWS_A_STATEMENT`] rows.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

use super::fresh::{self, NewestStored, PartTotals, SiteReading, SourceSpan};
use super::processor::IngestError;
use super::store::{self, LockedSite, Path, SiteOutcome, SiteReadings};
use crate::changes::mirror;
use crate::db::citus::Topology;
use crate::db::citus::{one_site_rows, MAX_ROWS_A_STATEMENT};
use crate::sites::SiteRow;

/// Stores `parts` by `path`, as [`store::store`] does (same arguments, same outcomes) without its
/// closing: the caller writes it ([`super::closing::write_by_site`]).
#[tracing::instrument(skip_all, fields(parts = parts.len(), ?path))]
pub async fn store(
    tx: &mut Transaction<'static, Postgres>,
    parts: &[&SiteReadings],
    locked: &[LockedSite],
    path: Path,
) -> Result<Vec<SiteOutcome>, IngestError> {
    let (spans, split) = store::split(tx, parts, locked, path, Topology::Citus).await?;
    // One site: plain inserts, so that the transaction commits in one phase on its worker. Several
    // (a v2 request): they span workers and commit in two phases anyway, and one COPY is cheaper.
    let one_site = parts.windows(2).all(|pair| pair[0].site_id == pair[1].site_id);
    if one_site {
        for chunk in split.fresh.chunks(MAX_ROWS_A_STATEMENT) {
            insert_fresh(tx, chunk).await?;
        }
    } else {
        store::copy_fresh(tx, &split.fresh).await?;
    }

    // The late readings that went in, and each part's share of them.
    let mut staged = vec![PartTotals::default(); parts.len()];
    let mut stored: Vec<SiteReading<'_>> = split.fresh.clone();
    let late: Vec<(SiteReading<'_>, i64)> = split
        .late
        .iter()
        .copied()
        .zip(split.late_parts.iter().copied())
        .collect();
    for site_late in late.chunk_by(|a, b| a.0 .0 == b.0 .0) {
        for chunk in site_late.chunks(MAX_ROWS_A_STATEMENT) {
            for &((site, reading), part) in insert_late(tx, chunk).await? {
                let share = usize::try_from(part)
                    .ok()
                    .and_then(|part| staged.get_mut(part))
                    .ok_or(IngestError::Inconsistent("a late reading of no part"))?;
                share.readings += 1;
                share.sum_mg += reading.value.mg();
                stored.push((site, reading));
            }
        }
    }
    let outcomes = store::outcomes(parts, locked, &split.fresh_by_part, &staged)?;

    let totals = fresh::totals(&stored);
    let mut totals_after = HashMap::new();
    for site in &totals.sites {
        let row = sqlx::query_as!(
            SiteRow,
            r#"update sites
                set total_emissions_mg = total_emissions_mg + $2,
                    reading_count = reading_count + $3,
                    first_reading_at = least(first_reading_at, $4),
                    last_reading_at = greatest(last_reading_at, $5),
                    version = version + 1
              where id = $1
          returning id, name, emission_limit_mg, '{}' as "metadata!", total_emissions_mg, reading_count,
                    first_reading_at, last_reading_at, version, created_at"#,
            site.site_id,
            site.sum_mg,
            site.readings,
            site.first_at,
            site.last_at,
        )
        .fetch_one(&mut **tx)
        .await?;
        mirror::record(tx, &row).await?;
        totals_after.insert(site.site_id, row.total_emissions_mg);
    }
    store::check_totals(&outcomes, locked, &totals_after)?;
    let hours_by_site = totals.hours.chunk_by(|a, b| a.site_id == b.site_id);
    for hours in hours_by_site.flat_map(|hours| hours.chunks(MAX_ROWS_A_STATEMENT)) {
        let statement = format!(
            "insert into hourly_rollups as r (site_id, hour, sum_mg, readings, min_mg, max_mg)
             values {}
             on conflict (site_id, hour) do update
                set sum_mg = r.sum_mg + excluded.sum_mg, readings = r.readings + excluded.readings,
                    min_mg = least(r.min_mg, excluded.min_mg), max_mg = greatest(r.max_mg, excluded.max_mg)",
            one_site_rows(1, 5, hours.len())
        );
        let mut query = sqlx::query(&statement).bind(hours[0].site_id);
        for hour in hours {
            query = query
                .bind(hour.hour)
                .bind(hour.sum_mg)
                .bind(hour.readings)
                .bind(hour.min_mg)
                .bind(hour.max_mg);
        }
        query.execute(&mut **tx).await?;
    }
    let heads = fresh::heads(&spans);
    let heads_by_site = heads.chunk_by(|a, b| a.0 == b.0);
    for heads in heads_by_site.flat_map(|heads| heads.chunks(MAX_ROWS_A_STATEMENT)) {
        let statement = format!(
            "insert into source_heads as h (site_id, source_id, newest_at)
             values {}
             on conflict (site_id, source_id) do update set newest_at = greatest(h.newest_at, excluded.newest_at)",
            one_site_rows(1, 2, heads.len())
        );
        let mut query = sqlx::query(&statement).bind(heads[0].0.get());
        for &(_, source, newest) in heads {
            query = query.bind(source).bind(newest);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(outcomes)
}

/// Inserts `fresh` (one site's readings, newer than any stored for their source) as they are: a
/// unique violation means one was stored after all ([`IngestError::FreshConflict`]). Not by COPY,
/// as on one node: Citus commits a transaction that COPYed into a shard in two phases, even when
/// one worker took everything, and a plain `insert` lets a one-site transaction commit in one.
async fn insert_fresh(
    tx: &mut Transaction<'static, Postgres>,
    fresh: &[SiteReading<'_>],
) -> Result<(), IngestError> {
    let Some((site, _)) = fresh.first() else {
        return Ok(());
    };
    let statement = format!(
        "insert into measurements (site_id, source_id, measured_at, value_mg) values {}",
        one_site_rows(1, 3, fresh.len())
    );
    let mut query = sqlx::query(&statement).bind(site.get());
    for (_, reading) in fresh {
        query = query
            .bind(&reading.source_id)
            .bind(reading.measured_at)
            .bind(reading.value.mg());
    }
    query
        .execute(&mut **tx)
        .await
        .map_err(|error| match crate::db::citus::is_unique_violation(&error) {
            true => IngestError::FreshConflict(error),
            false => error.into(),
        })?;
    Ok(())
}

/// Inserts `late` (one site's readings, each with its part) with `on conflict do nothing`, and
/// returns those that went in.
async fn insert_late<'r, 'a>(
    tx: &mut Transaction<'static, Postgres>,
    late: &'r [(SiteReading<'a>, i64)],
) -> Result<Vec<&'r (SiteReading<'a>, i64)>, IngestError> {
    let Some(((site, _), _)) = late.first() else {
        return Ok(Vec::new());
    };
    let statement = format!(
        "insert into measurements (site_id, source_id, measured_at, value_mg)
         values {}
         on conflict do nothing
         returning source_id, measured_at",
        one_site_rows(1, 3, late.len())
    );
    let mut query = sqlx::query_as(&statement).bind(site.get());
    for ((_, reading), _) in late {
        query = query
            .bind(&reading.source_id)
            .bind(reading.measured_at)
            .bind(reading.value.mg());
    }
    // Each statement's text differs with its row count: not worth a prepared statement each.
    let went_in: Vec<(String, DateTime<Utc>)> = query.persistent(false).fetch_all(&mut **tx).await?;
    // No two late readings are the same reading ([`fresh::split`]).
    let by_identity: HashMap<(&str, DateTime<Utc>), &'r (SiteReading<'a>, i64)> = late
        .iter()
        .map(|row| ((row.0 .1.source_id.as_str(), row.0 .1.measured_at), row))
        .collect();
    went_in
        .iter()
        .map(|(source, at)| {
            by_identity
                .get(&(source.as_str(), *at))
                .copied()
                .ok_or(IngestError::Inconsistent(
                    "a stored late reading that was not sent",
                ))
        })
        .collect()
}

/// The head of each (site, source) of `wanted`, a site a statement.
pub(super) async fn newest_stored(
    tx: &mut Transaction<'static, Postgres>,
    wanted: &[&SourceSpan<'_>],
) -> Result<NewestStored, sqlx::Error> {
    let mut wanted = wanted.to_vec();
    wanted.sort_by_key(|span| span.site_id.get());
    let mut newest = NewestStored::new();
    for site_spans in wanted.chunk_by(|a, b| a.site_id == b.site_id) {
        let site = site_spans[0].site_id;
        let sources: Vec<String> = site_spans.iter().map(|span| span.source_id.to_owned()).collect();
        let rows = sqlx::query!(
            "select source_id, newest_at from source_heads where site_id = $1 and source_id = any($2)",
            site.get(),
            &sources,
        )
        .fetch_all(&mut **tx)
        .await?;
        newest.extend(rows.into_iter().map(|row| ((site, row.source_id), row.newest_at)));
    }
    Ok(newest)
}

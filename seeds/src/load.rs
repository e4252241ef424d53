//! Loading a synthetic [`Plan`] into the database: generation on rayon's threads, binary `COPY` on
//! several connections at once.
//!
//! Each site is one transaction: its row (with its total, count, first and last times and limit),
//! its readings, its hourly rollups and its source heads commit together or not at all. So
//! `plume verify` holds at every moment, an interrupted load leaves only whole sites, and running the
//! same plan again creates just the sites still missing (found by name, their shape checked).
//!
//! Readings go in ordered by month, then source, then time, which fills each monthly partition's
//! identity index from the right (packed pages, no random page splits).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use rayon::prelude::*;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::{mpsc, Mutex};

use crate::progress::Progress;
use crate::synthetic::{self, Plan};

/// The advisory lock key of a synthetic load (`"plumeSD1"` as a big-endian integer): two loads of the
/// same plan at once would both create the missing sites.
const SEED_LOCK: i64 = 0x706c_756d_6553_4431;

/// A site generated and encoded, ready for its transaction.
#[derive(Debug)]
struct ReadySite {
    id: i64,
    name: String,
    metadata: String,
    emission_limit_mg: i64,
    total_mg: i64,
    reading_count: i64,
    first_last: (DateTime<Utc>, DateTime<Utc>),
    head_sources: Vec<String>,
    head_times: Vec<DateTime<Utc>>,
    readings_copy: Vec<u8>,
    rollups_copy: Vec<u8>,
    over_limit: bool,
}

/// What a load did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Sites created by this load.
    pub sites_created: u64,
    /// Sites of the plan that existed already and were left alone.
    pub sites_present: u64,
    /// Readings stored by this load.
    pub readings_stored: u64,
    /// Of the sites created, how many are over their limit.
    pub sites_over_limit: u64,
    /// Time spent generating and loading (statistics excluded).
    pub load_time: Duration,
}

/// Loads every site of `plan` that does not exist yet, on `jobs` connections at once, counting
/// into `progress` (made by this function from what is missing; `on_start` receives it as soon as
/// the work is known). Afterwards refreshes the planner statistics of the tables it wrote to.
pub async fn load(
    pool: &PgPool,
    plan: &Plan,
    jobs: usize,
    on_start: impl FnOnce(&Arc<Progress>),
) -> anyhow::Result<LoadReport> {
    plan.check().map_err(anyhow::Error::msg)?;
    let mut lock = PgConnection::connect_with(&pool.connect_options()).await?;
    let locked = sqlx::query_scalar!(r#"select pg_try_advisory_lock($1) as "locked!""#, SEED_LOCK)
        .fetch_one(&mut lock)
        .await?;
    anyhow::ensure!(locked, "another synthetic load is running on this database");
    let result = load_locked(pool, plan, jobs.max(1), on_start).await;
    let _ = lock.close().await;
    result
}

async fn load_locked(
    pool: &PgPool,
    plan: &Plan,
    jobs: usize,
    on_start: impl FnOnce(&Arc<Progress>),
) -> anyhow::Result<LoadReport> {
    prepare_partitions(pool, plan).await?;
    let present = existing_indexes(pool, plan).await?;
    let missing: Vec<u32> = (0..plan.sites).filter(|i| !present.contains(i)).collect();
    let ids = reserve_ids(pool, missing.len()).await?;
    let progress = Arc::new(Progress::new(
        missing.len() as u64,
        missing.len() as u64 * plan.readings_per_site,
    ));
    on_start(&progress);

    // Generation runs ahead of the loaders by at most a few sites, so memory stays flat.
    let (sender, receiver) = mpsc::channel::<ReadySite>(jobs * 2);
    let generator = {
        let plan = plan.clone();
        let work: Vec<(u32, i64)> = missing.iter().copied().zip(ids).collect();
        std::thread::spawn(move || {
            let source_ids = plan.source_ids();
            // Sites go out in ascending id order, so that each partition's identity index grows at
            // its right edge; a few are generated at a time, in parallel.
            for wave in work.chunks(jobs * 2) {
                let ready: Vec<ReadySite> = wave
                    .par_iter()
                    .map(|(index, id)| ready_site(&plan, &source_ids, *index, *id))
                    .collect();
                for site in ready {
                    if sender.blocking_send(site).is_err() {
                        return; // the loaders stopped
                    }
                }
            }
        })
    };
    let receiver = Arc::new(Mutex::new(receiver));
    let failed = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = (0..jobs)
        .map(|_| {
            let (pool, receiver, failed) = (pool.clone(), receiver.clone(), failed.clone());
            let progress = progress.clone();
            tokio::spawn(async move {
                let mut over_limit = 0_u64;
                while !failed.load(Ordering::Relaxed) {
                    let Some(site) = receiver.lock().await.recv().await else {
                        break;
                    };
                    let name = site.name.clone();
                    if let Err(error) = store_site(&pool, &site).await {
                        failed.store(true, Ordering::Relaxed);
                        return Err(error).with_context(|| format!("loading site {name}"));
                    }
                    over_limit += u64::from(site.over_limit);
                    progress.site_done(site.reading_count as u64);
                }
                anyhow::Ok(over_limit)
            })
        })
        .collect();
    let mut sites_over_limit = 0;
    let mut first_error = None;
    for loader in loaders {
        match loader.await.context("a loader panicked")? {
            Ok(over) => sites_over_limit += over,
            Err(error) => first_error = first_error.or(Some(error)),
        }
    }
    // Every loader has stopped, so the generator's next send fails and it ends.
    drop(receiver);
    tokio::task::spawn_blocking(move || generator.join())
        .await?
        .map_err(|_| anyhow::anyhow!("generating readings panicked"))?;
    if let Some(error) = first_error {
        return Err(error);
    }
    progress.loaded();
    let load_time = progress.elapsed();
    if !missing.is_empty() {
        sqlx::query!("analyze sites, source_heads, hourly_rollups, measurements")
            .execute(pool)
            .await
            .context("refreshing planner statistics")?;
    }
    Ok(LoadReport {
        sites_created: missing.len() as u64,
        sites_present: present.len() as u64,
        readings_stored: progress.readings(),
        sites_over_limit,
        load_time,
    })
}

/// Makes sure every month of the plan has a partition, so no reading meets the default partition's
/// guard; refuses a range reaching months that retention has retired.
async fn prepare_partitions(pool: &PgPool, plan: &Plan) -> anyhow::Result<()> {
    let retired_before = partitioning::history(pool).await?.retired_before;
    if let Some(before) = retired_before.filter(|before| plan.from < *before) {
        anyhow::bail!("--from is before {before}, up to which retention has retired the months");
    }
    let failed = partitioning::create_months(pool, &plan.months()).await?;
    if let Some((month, error)) = failed.into_iter().next() {
        return Err(error).with_context(|| format!("creating the partition for {month}"));
    }
    Ok(())
}

/// Indexes of the plan's sites that exist already. A site of the same seed loaded with another
/// shape (or a site that merely has such a name) stops the load: the data set would mix shapes.
async fn existing_indexes(pool: &PgPool, plan: &Plan) -> anyhow::Result<HashSet<u32>> {
    let prefix = plan.name_prefix();
    let rows = sqlx::query!(
        r#"select name, metadata -> 'synthetic' ->> 'plan' as "plan" from sites where starts_with(name, $1)"#,
        prefix
    )
    .fetch_all(pool)
    .await?;
    let shape = plan.shape();
    let mut present = HashSet::new();
    for row in rows {
        anyhow::ensure!(
            row.plan.as_deref() == Some(shape.as_str()),
            "site {} exists but was not loaded with this shape ({shape}): it has {}; use another --seed",
            row.name,
            row.plan.as_deref().unwrap_or("no synthetic plan"),
        );
        if let Some(index) = row.name.strip_prefix(&prefix).and_then(|n| n.parse().ok()) {
            present.insert(index);
        }
    }
    Ok(present)
}

/// `count` fresh site ids, in ascending order, from the identity sequence of `sites`.
async fn reserve_ids(pool: &PgPool, count: usize) -> anyhow::Result<Vec<i64>> {
    let mut ids = sqlx::query_scalar!(
        r#"select nextval(pg_get_serial_sequence('sites', 'id')) as "id!" from generate_series(1, $1)"#,
        count as i32
    )
    .fetch_all(pool)
    .await?;
    ids.sort_unstable();
    Ok(ids)
}

/// Generates and encodes site `index` under `id`.
fn ready_site(plan: &Plan, source_ids: &[String], index: u32, id: i64) -> ReadySite {
    let site = synthetic::generate(plan, index);
    let at = |micros: i64| Utc.timestamp_micros(micros).single().unwrap_or_default();
    ReadySite {
        id,
        metadata:
            serde_json::json!({ "synthetic": { "seed": plan.seed, "index": index, "plan": plan.shape() } })
                .to_string(),
        emission_limit_mg: site.emission_limit_mg,
        total_mg: site.total_mg,
        reading_count: site.readings.len() as i64,
        first_last: (at(site.first_last_micros.0), at(site.first_last_micros.1)),
        head_sources: site
            .heads
            .iter()
            .map(|(s, _)| source_ids[usize::from(*s)].clone())
            .collect(),
        head_times: site.heads.iter().map(|(_, micros)| at(*micros)).collect(),
        readings_copy: site.readings_copy(id, source_ids),
        rollups_copy: site.rollups_copy(id),
        over_limit: site.is_over_limit(),
        name: site.name,
    }
}

/// One site, whole, in one transaction.
async fn store_site(pool: &PgPool, site: &ReadySite) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "insert into sites (id, name, emission_limit_mg, metadata, total_emissions_mg, reading_count,
                            first_reading_at, last_reading_at)
         overriding system value
         values ($1, $2, $3, $4::text::jsonb, $5, $6, $7, $8)",
        site.id,
        site.name,
        site.emission_limit_mg,
        site.metadata,
        site.total_mg,
        site.reading_count,
        site.first_last.0,
        site.first_last.1,
    )
    .execute(&mut *tx)
    .await?;
    for (statement, data) in [
        (
            "copy measurements (site_id, source_id, measured_at, value_mg) from stdin (format binary)",
            &site.readings_copy,
        ),
        (
            "copy hourly_rollups (site_id, hour, sum_mg, readings, min_mg, max_mg) from stdin (format binary)",
            &site.rollups_copy,
        ),
    ] {
        let mut copy_in = tx.copy_in_raw(statement).await?;
        copy_in.send(data.as_slice()).await?;
        copy_in.finish().await?;
    }
    sqlx::query!(
        "insert into source_heads (site_id, source_id, newest_at)
         select $1, * from unnest($2::text[], $3::timestamptz[])",
        site.id,
        &site.head_sources,
        &site.head_times,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

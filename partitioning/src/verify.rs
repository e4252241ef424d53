//! `plume verify`: every site's stored total, count and first/last reading time, and its hourly
//! rollups, against the rows.
//!
//! A site's figures must equal what its stored readings add up to, plus what retention retired
//! (`retired_partitions`: totals are lifetime figures). Readings for a site that does not exist are
//! drift too.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// A site whose stored figures differ from its readings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct SiteDrift {
    /// The site (from the readings when the site itself is missing).
    pub site_id: i64,
    /// Whether the site exists.
    pub site_exists: bool,
    /// The site's stored total, in milligrams.
    pub stored_total_mg: i64,
    /// What its readings add up to.
    pub rows_total_mg: i64,
    /// The site's stored count.
    pub stored_count: i64,
    /// How many readings it has.
    pub rows_count: i64,
    /// The site's stored first reading time.
    pub stored_first: Option<DateTime<Utc>>,
    /// Its earliest reading.
    pub rows_first: Option<DateTime<Utc>>,
    /// The site's stored last reading time.
    pub stored_last: Option<DateTime<Utc>>,
    /// Its latest reading.
    pub rows_last: Option<DateTime<Utc>>,
}

/// A site whose hourly rollups differ from its readings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct RollupDrift {
    /// The site.
    pub site_id: i64,
    /// Hours whose rollup (sum, count, min or max) differs from the readings, or exists on one side
    /// only.
    pub hours: i64,
    /// The first such hour.
    pub first_hour: DateTime<Utc>,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Sites checked.
    pub sites: i64,
    /// Sites whose figures drift, by site id.
    pub drift: Vec<SiteDrift>,
    /// Sites whose hourly rollups drift (retired months excepted: their rollups stay), by site id.
    pub rollup_drift: Vec<RollupDrift>,
}

impl Verification {
    /// Whether nothing drifts.
    pub fn is_clean(&self) -> bool {
        self.drift.is_empty() && self.rollup_drift.is_empty()
    }
}

/// Reconciles every site and its hourly rollups against its readings, in one pass over the
/// measurements and one consistent snapshot (so ingestion going on meanwhile shows no false drift).
#[tracing::instrument(skip(pool))]
pub async fn verify(pool: &PgPool) -> Result<Verification, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!("set transaction isolation level repeatable read")
        .execute(&mut *tx)
        .await?;
    // Lock first (a lock takes no snapshot): a retirement committing while this waited would
    // otherwise be half visible, its partition gone from the catalog but its aggregates not yet in
    // the snapshot.
    sqlx::query!("lock table measurements, retired_partitions in access share mode")
        .execute(&mut *tx)
        .await?;
    sqlx::query!(
        "create temporary table verify_hours on commit drop as
         select site_id, date_trunc('hour', measured_at, 'UTC') as hour, sum(value_mg)::bigint as sum_mg,
                count(*) as readings, min(value_mg) as min_mg, max(value_mg) as max_mg,
                min(measured_at) as first_at, max(measured_at) as last_at
           from measurements group by 1, 2"
    )
    .execute(&mut *tx)
    .await?;
    // Runtime-checked from here: the temporary table exists only in this transaction.
    let drift = sqlx::query_as::<_, SiteDrift>(
        r#"with readings as (
               select site_id, sum(sum_mg)::bigint as total, sum(readings)::bigint as n,
                      min(first_at) as first_at, max(last_at) as last_at
                 from verify_hours group by site_id
               union all
               select site_id, sum_mg, readings, first_reading_at, last_reading_at from retired_partitions
           ), per_site as (
               select site_id, sum(total)::bigint as total, sum(n)::bigint as n,
                      min(first_at) as first_at, max(last_at) as last_at
                 from readings group by site_id
           )
           select coalesce(s.id, p.site_id) as site_id,
                  s.id is not null as site_exists,
                  coalesce(s.total_emissions_mg, 0) as stored_total_mg,
                  coalesce(p.total, 0) as rows_total_mg,
                  coalesce(s.reading_count, 0) as stored_count,
                  coalesce(p.n, 0) as rows_count,
                  s.first_reading_at as stored_first, p.first_at as rows_first,
                  s.last_reading_at as stored_last, p.last_at as rows_last
             from sites s
             full join per_site p on p.site_id = s.id
            where s.id is null
               or (s.total_emissions_mg, s.reading_count) is distinct from (coalesce(p.total, 0), coalesce(p.n, 0))
               or s.first_reading_at is distinct from p.first_at
               or s.last_reading_at is distinct from p.last_at
            order by 1"#,
    )
    .fetch_all(&mut *tx)
    .await?;
    let rollup_drift = sqlx::query_as::<_, RollupDrift>(
        "with kept as (
             select r.* from hourly_rollups r, measurements_settings m
              where m.retired_before is null or r.hour >= m.retired_before
         )
         select coalesce(v.site_id, k.site_id) as site_id, count(*) as hours,
                min(coalesce(v.hour, k.hour)) as first_hour
           from verify_hours v
           full join kept k on k.site_id = v.site_id and k.hour = v.hour
          where (v.sum_mg, v.readings, v.min_mg, v.max_mg) is distinct from (k.sum_mg, k.readings, k.min_mg, k.max_mg)
          group by 1
          order by 1",
    )
    .fetch_all(&mut *tx)
    .await?;
    let sites = sqlx::query_scalar!(r#"select count(*) as "sites!" from sites"#)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Verification {
        sites,
        drift,
        rollup_drift,
    })
}

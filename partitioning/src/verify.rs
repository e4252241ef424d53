//! `plume verify`: every site's stored total, count and first/last reading time against the rows.
//!
//! A site's figures must equal what its stored readings add up to, plus what retention retired
//! (`retired_partitions`: totals are lifetime figures). Readings for a site that does not exist are
//! drift too.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// A site whose stored figures differ from its readings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

/// The outcome of a verification.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Sites checked.
    pub sites: i64,
    /// Those that drift, by site id.
    pub drift: Vec<SiteDrift>,
}

/// Reconciles every site against its readings (one pass over the measurements).
#[tracing::instrument(skip(pool))]
pub async fn verify(pool: &PgPool) -> Result<Verification, sqlx::Error> {
    let drift = sqlx::query_as!(
        SiteDrift,
        r#"with readings as (
               select site_id, sum(value_mg)::bigint as total, count(*) as n,
                      min(measured_at) as first_at, max(measured_at) as last_at
                 from measurements group by site_id
               union all
               select site_id, sum_mg, readings, first_reading_at, last_reading_at from retired_partitions
           ), per_site as (
               select site_id, sum(total)::bigint as total, sum(n)::bigint as n,
                      min(first_at) as first_at, max(last_at) as last_at
                 from readings group by site_id
           )
           select coalesce(s.id, p.site_id) as "site_id!",
                  s.id is not null as "site_exists!",
                  coalesce(s.total_emissions_mg, 0) as "stored_total_mg!",
                  coalesce(p.total, 0) as "rows_total_mg!",
                  coalesce(s.reading_count, 0) as "stored_count!",
                  coalesce(p.n, 0) as "rows_count!",
                  s.first_reading_at as stored_first, p.first_at as rows_first,
                  s.last_reading_at as stored_last, p.last_at as rows_last
             from sites s
             full join per_site p on p.site_id = s.id
            where s.id is null
               or (s.total_emissions_mg, s.reading_count) is distinct from (coalesce(p.total, 0), coalesce(p.n, 0))
               or s.first_reading_at is distinct from p.first_at
               or s.last_reading_at is distinct from p.last_at
            order by 1"#
    )
    .fetch_all(pool)
    .await?;
    let sites = sqlx::query_scalar!(r#"select count(*) as "sites!" from sites"#)
        .fetch_one(pool)
        .await?;
    Ok(Verification { sites, drift })
}

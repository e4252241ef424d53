//! A site's series: exact sums, counts, minima and maxima per hour, day or month, read from the
//! hourly rollups (never from raw readings), days and months added up from whole hours.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::params::SeriesRequest;
use super::Bucket;
use crate::quantity::Milligrams;
use crate::sites::SiteId;

/// The hours of site `$1` from `$2` to `$3`: rollup rows as stored. Checked at run time, not by
/// the query macros, so that the plan test can `EXPLAIN` this very text.
pub const HOURS_SQL: &str = "select hour as start, sum_mg, readings, min_mg, max_mg
       from hourly_rollups
      where site_id = $1 and hour >= $2 and hour < $3
      order by hour";

/// The buckets of site `$1` starting at `$2[i]` and ending before `$3[i]`: one index range of
/// rollups added up per bucket. Bucket bounds come from the caller, so no row pays for a time-zone
/// conversion (`date_trunc(..., 'UTC')` on every rollup made a year of months three times slower).
pub const BUCKETS_SQL: &str = "select b.start, r.sum_mg, r.readings, r.min_mg, r.max_mg
       from unnest($2::timestamptz[], $3::timestamptz[]) as b (start, stop)
      cross join lateral (
            select sum(sum_mg)::bigint as sum_mg, sum(readings)::bigint as readings,
                   min(min_mg) as min_mg, max(max_mg) as max_mg
              from hourly_rollups
             where site_id = $1 and hour >= b.start and hour < b.stop) r
      where r.readings is not null
      order by b.start";

#[derive(sqlx::FromRow)]
struct SeriesRow {
    start: DateTime<Utc>,
    sum_mg: i64,
    readings: i64,
    min_mg: i64,
    max_mg: i64,
}

/// One bucket that has readings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS, utoipa::ToSchema)]
pub struct SeriesBucket {
    /// The bucket's first instant (UTC).
    #[serde(serialize_with = "crate::sites::rfc3339")]
    #[ts(type = "string")]
    pub start: DateTime<Utc>,
    /// Sum of its readings, kg with six decimals.
    #[ts(type = "string")]
    pub sum: Milligrams,
    /// How many readings.
    pub count: i64,
    /// Smallest reading.
    #[ts(type = "string")]
    pub min: Milligrams,
    /// Largest reading.
    #[ts(type = "string")]
    pub max: Milligrams,
}

/// The buckets of `request` that have readings, in time order. Buckets without readings are left
/// out (a client wanting zeros fills them in from `start`).
#[tracing::instrument(skip(pool), fields(site_id = site.get()))]
pub async fn series(
    pool: &PgPool,
    site: SiteId,
    request: SeriesRequest,
) -> Result<Vec<SeriesBucket>, sqlx::Error> {
    let rows = match request.bucket {
        Bucket::Hour => {
            sqlx::query_as::<_, SeriesRow>(HOURS_SQL)
                .bind(site.get())
                .bind(request.range.from)
                .bind(request.range.to)
                .fetch_all(pool)
                .await?
        }
        Bucket::Day | Bucket::Month => {
            let starts = request.bucket.starts(request.range);
            let stops: Vec<_> = starts.iter().map(|start| request.bucket.after(*start)).collect();
            sqlx::query_as::<_, SeriesRow>(BUCKETS_SQL)
                .bind(site.get())
                .bind(&starts)
                .bind(&stops)
                .fetch_all(pool)
                .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|row| SeriesBucket {
            start: row.start,
            sum: Milligrams::from_mg(row.sum_mg),
            count: row.readings,
            min: Milligrams::from_mg(row.min_mg),
            max: Milligrams::from_mg(row.max_mg),
        })
        .collect())
}

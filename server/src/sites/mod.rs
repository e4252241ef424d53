//! Sites: what they are, how they are stored, and their compliance status.
//!
//! This module owns the `sites` table. Its running totals are written only by the ingest
//! processor, inside the same transaction that stores the readings they count.

pub mod request;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};
use sqlx::PgPool;

use serde_json::value::RawValue;
use ts_rs::TS;

use crate::db::citus::Topology;
use crate::quantity::Milligrams;

/// A site's id: a positive integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SiteId(i64);

impl SiteId {
    /// Accepts positive ids only.
    pub fn new(id: i64) -> Option<Self> {
        (id > 0).then_some(Self(id))
    }

    /// The id as stored.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// Whether a site's total is over its limit. Exactly at the limit is still within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS, utoipa::ToSchema)]
pub enum ComplianceStatus {
    /// total ≤ limit.
    #[serde(rename = "Within Limit")]
    #[ts(rename = "Within Limit")]
    WithinLimit,
    /// total > limit.
    #[serde(rename = "Limit Exceeded")]
    #[ts(rename = "Limit Exceeded")]
    LimitExceeded,
}

impl ComplianceStatus {
    /// The status of `total` against `limit`.
    pub fn of(total: Milligrams, limit: Milligrams) -> Self {
        if total > limit {
            Self::LimitExceeded
        } else {
            Self::WithinLimit
        }
    }
}

/// A stored site, as the database holds it.
#[derive(Debug, Clone)]
pub struct SiteRow {
    /// The id.
    pub id: i64,
    /// 1 to 200 characters.
    pub name: String,
    /// Milligrams; > 0.
    pub emission_limit_mg: i64,
    /// A JSON object, as PostgreSQL's `jsonb` renders it (numbers exact).
    pub metadata: String,
    /// Milligrams stored so far; equals the sum of the site's rows in `measurements`.
    pub total_emissions_mg: i64,
    /// Readings stored so far; equals the count of the site's rows in `measurements`.
    pub reading_count: i64,
    /// The earliest stored reading's time.
    pub first_reading_at: Option<DateTime<Utc>>,
    /// The latest stored reading's time.
    pub last_reading_at: Option<DateTime<Utc>>,
    /// Increases on every change.
    pub version: i64,
    /// When the site was created.
    pub created_at: DateTime<Utc>,
}

impl SiteRow {
    fn total(&self) -> Milligrams {
        Milligrams::from_mg(self.total_emissions_mg)
    }

    fn limit(&self) -> Milligrams {
        Milligrams::from_mg(self.emission_limit_mg)
    }
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_string()).expect("{} is JSON")
}

/// Timestamps in responses: RFC 3339 in UTC with a `Z`.
pub(crate) fn rfc3339<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

pub(crate) fn rfc3339_opt<S: Serializer>(
    at: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => rfc3339(at, serializer),
        None => serializer.serialize_none(),
    }
}

/// A site as the API shows it.
#[derive(Debug, Clone, Serialize, TS, utoipa::ToSchema)]
pub struct Site {
    /// The id.
    pub id: i64,
    /// The name.
    pub name: String,
    /// The limit, kg with 6 decimals.
    #[ts(type = "string")]
    pub emission_limit: Milligrams,
    /// Free-form metadata, written out as stored.
    #[ts(type = "Record<string, unknown>")]
    #[schema(value_type = Object)]
    pub metadata: Box<RawValue>,
    /// The running total, kg with 6 decimals.
    #[ts(type = "string")]
    pub total_emissions_to_date: Milligrams,
    /// Over the limit or not.
    pub compliance_status: ComplianceStatus,
    /// When it was created.
    #[serde(serialize_with = "rfc3339")]
    #[ts(type = "string")]
    pub created_at: DateTime<Utc>,
}

impl From<SiteRow> for Site {
    fn from(row: SiteRow) -> Self {
        Self {
            compliance_status: ComplianceStatus::of(row.total(), row.limit()),
            emission_limit: row.limit(),
            total_emissions_to_date: row.total(),
            id: row.id,
            name: row.name,
            metadata: RawValue::from_string(row.metadata).unwrap_or_else(|_| empty_object()),
            created_at: row.created_at,
        }
    }
}

/// A site's metrics as the API shows them.
#[derive(Debug, Clone, Serialize, TS, utoipa::ToSchema)]
pub struct SiteMetrics {
    /// The site.
    pub site_id: i64,
    /// Its name.
    pub name: String,
    /// The limit.
    #[ts(type = "string")]
    pub emission_limit: Milligrams,
    /// The running total.
    #[ts(type = "string")]
    pub total_emissions_to_date: Milligrams,
    /// Over the limit or not.
    pub compliance_status: ComplianceStatus,
    /// total / limit in percent, 2 decimals, rounded half up.
    #[schema(pattern = r"^[0-9]+\.[0-9]{2}$", example = "145.20")]
    pub utilization_pct: String,
    /// Readings stored.
    pub reading_count: i64,
    /// Earliest reading time, or null.
    #[serde(serialize_with = "rfc3339_opt")]
    #[ts(type = "string | null")]
    pub first_reading_at: Option<DateTime<Utc>>,
    /// Latest reading time, or null.
    #[serde(serialize_with = "rfc3339_opt")]
    #[ts(type = "string | null")]
    pub last_reading_at: Option<DateTime<Utc>>,
    /// Increases on every change.
    pub version: i64,
}

impl From<SiteRow> for SiteMetrics {
    fn from(row: SiteRow) -> Self {
        Self {
            site_id: row.id,
            compliance_status: ComplianceStatus::of(row.total(), row.limit()),
            utilization_pct: row.total().percent_of(row.limit()),
            emission_limit: row.limit(),
            total_emissions_to_date: row.total(),
            name: row.name,
            reading_count: row.reading_count,
            first_reading_at: row.first_reading_at,
            last_reading_at: row.last_reading_at,
            version: row.version,
        }
    }
}

/// Stores a new site (on Citus, with the change feed's copy of it).
#[tracing::instrument(skip(pool, new_site), fields(name = %new_site.name))]
pub async fn create(
    pool: &PgPool,
    topology: Topology,
    new_site: &request::NewSite,
) -> Result<SiteRow, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query_as!(
        SiteRow,
        r#"insert into sites (name, emission_limit_mg, metadata) values ($1, $2, $3::text::jsonb)
         returning id, name, emission_limit_mg, metadata::text as "metadata!", total_emissions_mg, reading_count,
                   first_reading_at, last_reading_at, version, created_at"#,
        new_site.name,
        new_site.emission_limit.mg(),
        new_site.metadata,
    )
    .fetch_one(&mut *tx)
    .await?;
    if topology == Topology::Citus {
        crate::changes::mirror::record(&mut tx, &row).await?;
    }
    tx.commit().await?;
    Ok(row)
}

/// One site, if it exists.
#[tracing::instrument(skip(pool), fields(site_id = id.get()))]
pub async fn find(pool: &PgPool, id: SiteId) -> Result<Option<SiteRow>, sqlx::Error> {
    sqlx::query_as!(
        SiteRow,
        r#"select id, name, emission_limit_mg, metadata::text as "metadata!", total_emissions_mg, reading_count,
                first_reading_at, last_reading_at, version, created_at
           from sites where id = $1"#,
        id.get(),
    )
    .fetch_optional(pool)
    .await
}

/// Up to `limit` sites with ids above `after`, in id order (keyset pagination).
#[tracing::instrument(skip(pool))]
pub async fn list(
    pool: &PgPool,
    after: i64,
    limit: i64,
    only: Option<&[i64]>,
) -> Result<Vec<SiteRow>, sqlx::Error> {
    sqlx::query_as!(
        SiteRow,
        r#"select id, name, emission_limit_mg, metadata::text as "metadata!", total_emissions_mg, reading_count,
                first_reading_at, last_reading_at, version, created_at
           from sites where id > $1 and ($3::bigint[] is null or id = any($3))
          order by id limit $2"#,
        after,
        limit,
        only as Option<&[i64]>,
    )
    .fetch_all(pool)
    .await
}

/// The oldest site with this name, if any (the demo seed skips sites that exist by name).
#[tracing::instrument(skip(pool))]
pub async fn find_by_name(pool: &PgPool, name: &str) -> Result<Option<SiteRow>, sqlx::Error> {
    sqlx::query_as!(
        SiteRow,
        r#"select id, name, emission_limit_mg, metadata::text as "metadata!", total_emissions_mg, reading_count,
                first_reading_at, last_reading_at, version, created_at
           from sites where name = $1 order by id limit 1"#,
        name,
    )
    .fetch_optional(pool)
    .await
}

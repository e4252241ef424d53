//! The change feed on Citus: its own copy of each site's metrics, on the coordinator.
//!
//! On one node the feed reads `sites`, stamped with the writing transaction's id by a trigger. On
//! Citus, `sites` lives on the workers, whose transaction ids mean nothing to the coordinator, and
//! triggers are refused. So every transaction that changes a site also writes the site's new
//! metrics to `site_feed`, a table kept on the coordinator, with the coordinator's transaction id
//! ([`record`]). The feed then reads `site_feed` exactly as it reads `sites` on one node: a
//! snapshot of the coordinator is the cursor, and a change is reported once its transaction is
//! visible to the reading snapshot, whatever order transactions commit in.
//!
//! Citus commits the coordinator's part of a transaction together with the workers' (after a
//! worker's one-phase commit, or with two-phase commit across workers), so a site's copy is visible
//! exactly when its change is. [`reconcile`] rewrites the copies that differ from `sites` (a
//! database distributed before this table existed, or a coordinator lost between a worker's commit
//! and its own); `plume serve` runs it at start on Citus.

use sqlx::{PgConnection, PgPool};

use crate::sites::SiteRow;

/// Writes `site` (its row as the caller's transaction just left it) to the feed's copy.
pub async fn record(connection: &mut PgConnection, site: &SiteRow) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into site_feed (id, name, emission_limit_mg, total_emissions_mg, reading_count,
                                first_reading_at, last_reading_at, version, created_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         on conflict (id) do update
            set name = excluded.name, emission_limit_mg = excluded.emission_limit_mg,
                total_emissions_mg = excluded.total_emissions_mg, reading_count = excluded.reading_count,
                first_reading_at = excluded.first_reading_at, last_reading_at = excluded.last_reading_at,
                version = excluded.version, change_xid = pg_current_xact_id()",
        site.id,
        site.name,
        site.emission_limit_mg,
        site.total_emissions_mg,
        site.reading_count,
        site.first_reading_at,
        site.last_reading_at,
        site.version,
        site.created_at,
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Copies to the feed every site whose copy is missing or differs from its row; returns how many.
pub async fn reconcile(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let copied = sqlx::query!(
        "insert into site_feed (id, name, emission_limit_mg, total_emissions_mg, reading_count,
                                first_reading_at, last_reading_at, version, created_at)
         select id, name, emission_limit_mg, total_emissions_mg, reading_count,
                first_reading_at, last_reading_at, version, created_at
           from sites
         on conflict (id) do update
            set name = excluded.name, emission_limit_mg = excluded.emission_limit_mg,
                total_emissions_mg = excluded.total_emissions_mg, reading_count = excluded.reading_count,
                first_reading_at = excluded.first_reading_at, last_reading_at = excluded.last_reading_at,
                version = excluded.version, change_xid = pg_current_xact_id()
          where (site_feed.version, site_feed.total_emissions_mg, site_feed.name, site_feed.emission_limit_mg)
                is distinct from (excluded.version, excluded.total_emissions_mg, excluded.name, excluded.emission_limit_mg)",
    )
    .execute(pool)
    .await?;
    Ok(copied.rows_affected())
}

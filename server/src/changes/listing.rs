//! The first answer of the change feed, in pages: every site in scope, by id, a page at a time, with
//! the snapshot the first page was read in. Polling from that snapshot afterwards reports every site
//! changed since, including those of later pages (again, newer): nothing is missed, and no answer's
//! size grows with the number of sites.

use sqlx::PgPool;

use super::snapshot::Snapshot;
use crate::db::citus::Topology;
use crate::sites::SiteMetrics;

/// The most sites one page holds, and the default.
pub const MAX_PAGE: i64 = 1000;

/// One page of the listing.
#[derive(Debug)]
pub struct Page {
    /// The snapshot the page was read in.
    pub snapshot: Snapshot,
    /// The sites with ids above the page's start, in id order; metrics only.
    pub sites: Vec<SiteMetrics>,
    /// The id to continue after, when the page is full (more may follow).
    pub next_after: Option<i64>,
}

/// Up to `limit` sites with ids above `after`, only those of `scope` if given, and the snapshot of
/// the reading statement. Metadata is not read.
pub async fn page(
    pool: &PgPool,
    topology: Topology,
    after: i64,
    limit: i64,
    scope: Option<&[i64]>,
) -> Result<Page, sqlx::Error> {
    let statement = format!(
        r#"with now as (select pg_current_snapshot() as snapshot),
                page as (select s.id, s.name, s.emission_limit_mg, s.total_emissions_mg, s.reading_count,
                                s.first_reading_at, s.last_reading_at, s.version, s.created_at
                           from {} s
                          where s.id > $1 and ($3::bigint[] is null or s.id = any($3))
                          order by s.id
                          limit $2)
           select now.snapshot::text as snapshot, page.*, '{{}}'::text as metadata
             from now left join page on true
            order by page.id"#,
        super::feed_table(topology)
    );
    let rows = sqlx::query(&statement)
        .bind(after)
        .bind(limit)
        .bind(scope)
        .fetch_all(pool)
        .await?;
    let snapshot = super::statement_snapshot(&rows)?;
    let mut sites = Vec::with_capacity(rows.len());
    for row in rows {
        if let Some(stored) = super::site_row(&row)? {
            sites.push(SiteMetrics::from(stored));
        }
    }
    let next_after = (sites.len() as i64 == limit)
        .then(|| sites.last().map(|site| site.site_id))
        .flatten();
    Ok(Page {
        snapshot,
        sites,
        next_after,
    })
}

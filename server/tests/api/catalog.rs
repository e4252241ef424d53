//! Partitions as the catalog knows them: tests find a child table by the range it covers, never by
//! the name pg_partman gave it (4.7 names a month `measurements_p2026_11` and a day
//! `outbox_events_p2026_11_26`; 5.x `measurements_p20261101` and `outbox_events_p20261126`).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// One ranged partition.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Range {
    /// The child table.
    pub name: String,
    /// Inclusive lower bound.
    pub from: DateTime<Utc>,
    /// Exclusive upper bound.
    pub to: DateTime<Utc>,
}

/// The ranged partitions of `parent` (the default partition left out), oldest first.
pub async fn ranges(pool: &PgPool, parent: &str) -> Vec<Range> {
    sqlx::query_as(
        r#"select c.relname::text as name,
                  substring(pg_get_expr(c.relpartbound, c.oid) from $$FROM \('([^']+)'\)$$)::timestamptz as "from",
                  substring(pg_get_expr(c.relpartbound, c.oid) from $$TO \('([^']+)'\)$$)::timestamptz as "to"
             from pg_inherits i
             join pg_class c on c.oid = i.inhrelid
            where i.inhparent = $1::regclass
              and pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
            order by 2"#,
    )
    .bind(parent)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The partition of `parent` whose range holds `at`, if one does.
pub async fn partition_holding(pool: &PgPool, parent: &str, at: DateTime<Utc>) -> Option<String> {
    ranges(pool, parent)
        .await
        .into_iter()
        .find(|range| range.from <= at && at < range.to)
        .map(|range| range.name)
}

//! Citus: plume's tables distributed by site over a cluster of PostgreSQL nodes.
//!
//! `plume migrate --citus` runs the usual migrations on the coordinator, then [`distribute`]s:
//! `sites` by its id, and every table keyed by a site (`measurements`, `hourly_rollups`,
//! `source_heads`, `ingest_batches`, the outbox's three tables) by `site_id`, colocated with
//! `sites`, so that everything one batch touches lives on one worker. `bulk_batches` (a v2
//! request's receipt, which spans sites) is distributed by client. The small shared tables (tokens,
//! sessions, audit, maintenance bookkeeping) stay on the coordinator, where every plume process
//! connects. pg_partman keeps managing the monthly and daily partitions from the coordinator:
//! partitions it attaches later are distributed with their parent.
//!
//! Every plume process finds out at start which kind of database it serves ([`Topology::detect`]),
//! says so in its log and on `/ready`, and in the distributed one stores each v1 batch in a
//! transaction of its own (group commit would join several workers in one two-phase commit).

use anyhow::Context;
use sqlx::PgPool;

/// What kind of database plume serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Topology {
    /// One PostgreSQL server.
    #[default]
    Single,
    /// A Citus coordinator, plume's tables distributed by site.
    Citus,
}

/// The distributed tables, in the order they are distributed, with their distribution column.
/// `sites` comes first: the others are colocated with it.
pub const DISTRIBUTED: [(&str, &str); 8] = [
    ("sites", "id"),
    ("measurements", "site_id"),
    ("hourly_rollups", "site_id"),
    ("source_heads", "site_id"),
    ("ingest_batches", "site_id"),
    ("outbox_streams", "site_id"),
    ("outbox_events", "site_id"),
    ("outbox_dead", "site_id"),
];

/// Distributed by client, apart from the sites: one bulk request's receipt covers many sites.
const BY_CLIENT: (&str, &str) = ("bulk_batches", "client_id");

impl Topology {
    /// Citus when `sites` is a distributed table of a Citus coordinator, else single.
    pub async fn detect(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let distributed: bool = sqlx::query_scalar(
            "select exists (select from pg_extension where extname = 'citus')
                    and to_regclass('pg_catalog.pg_dist_partition') is not null",
        )
        .fetch_one(pool)
        .await?;
        if !distributed {
            return Ok(Self::Single);
        }
        Ok(if is_distributed(pool, "sites").await? {
            Self::Citus
        } else {
            Self::Single
        })
    }
}

/// A multi-row `values` list of `rows` rows for one site, for a statement Citus sends whole to the
/// one worker that holds the site: `$1` (the site id) and the next `shared - 1` parameters open
/// every row, followed by `columns` parameters of the row's own, numbered on from there. So
/// `one_site_rows(1, 2, 2)` is `($1, $2, $3), ($1, $4, $5)`. (An `insert ... select` from arrays,
/// as the single-node statements use, goes through the coordinator on Citus.)
pub fn one_site_rows(shared: usize, columns: usize, rows: usize) -> String {
    let mut list = String::with_capacity(rows * (shared + columns) * 8);
    let mut next = shared + 1;
    for row in 0..rows {
        if row > 0 {
            list.push_str(", ");
        }
        list.push('(');
        let shared = (1..=shared).map(|n| format!("${n}"));
        let own = (next..next + columns).map(|n| format!("${n}"));
        list.push_str(&shared.chain(own).collect::<Vec<_>>().join(", "));
        list.push(')');
        next += columns;
    }
    list
}

/// The rows [`one_site_rows`] may list in one statement: with the widest row (five parameters of
/// its own) that stays well under PostgreSQL's 65,535 parameters.
pub const MAX_ROWS_A_STATEMENT: usize = 5_000;

/// What [`distribute`] did.
#[derive(Debug, Default)]
pub struct Distributed {
    /// Tables distributed by this run.
    pub tables: Vec<&'static str>,
    /// Tables found distributed already.
    pub already: Vec<&'static str>,
    /// Active workers.
    pub workers: i64,
}

/// Distributes plume's tables over the Citus cluster `owner` is the coordinator of; idempotent.
/// Run after the migrations, as the schema's owner. Refuses a database without Citus or without an
/// active worker, naming what is missing.
pub async fn distribute(owner: &PgPool) -> anyhow::Result<Distributed> {
    let citus: Option<String> =
        sqlx::query_scalar("select extversion from pg_extension where extname = 'citus'")
            .fetch_optional(owner)
            .await?;
    anyhow::ensure!(
        citus.is_some(),
        "--citus needs the citus extension in this database (create extension citus, on the coordinator and every worker, then register the workers with citus_add_node)"
    );
    let workers: i64 = sqlx::query_scalar("select count(*) from citus_get_active_worker_nodes()")
        .fetch_one(owner)
        .await
        .context("listing the cluster's workers")?;
    anyhow::ensure!(
        workers > 0,
        "the Citus coordinator has no active worker: register them with citus_add_node first"
    );
    let mut done = Distributed {
        workers,
        ..Distributed::default()
    };
    // The change feed's trigger stamps `sites` with the writing transaction's id; Citus refuses
    // triggers on distributed tables, and a worker's transaction ids mean nothing on the
    // coordinator. The feed is off on Citus (`http::changes`). Once `sites` is distributed, Citus
    // refuses even to drop a trigger, so only before.
    if !is_distributed(owner, "sites").await? {
        sqlx::query("drop trigger if exists sites_stamp_change on sites")
            .execute(owner)
            .await?;
    }
    let tables = DISTRIBUTED.iter().map(|&(table, column)| {
        let colocate = if table == "sites" { "default" } else { "sites" };
        (table, column, colocate)
    });
    let by_client = std::iter::once((BY_CLIENT.0, BY_CLIENT.1, "none"));
    for (table, column, colocate) in tables.chain(by_client) {
        if is_distributed(owner, table).await? {
            done.already.push(table);
            continue;
        }
        tracing::info!(table, column, "distributing");
        sqlx::query("select create_distributed_table($1, $2, colocate_with => $3)")
            .bind(table)
            .bind(column)
            .bind(colocate)
            .execute(owner)
            .await
            .with_context(|| format!("distributing {table} by {column}"))?;
        done.tables.push(table);
    }
    Ok(done)
}

/// Whether `table` is a distributed table of this Citus coordinator.
async fn is_distributed(pool: &PgPool, table: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select exists (select from pg_dist_partition where logicalrelid = to_regclass($1))")
        .bind(table)
        .fetch_one(pool)
        .await
}

/// Makes database `name` on a Citus cluster, for tests and benchmarks (in production the DBA makes
/// it): on every worker and on the coordinator, each with the citus and pg_partman extensions, and
/// the workers registered in it. `admin_url` is a superuser URL of a coordinator database in which
/// the workers are registered (as `scripts/citus/citus-cluster.sh` leaves its `postgres`); the
/// workers are reached as the same user. Returns the new database's URL on the coordinator.
pub async fn create_database(admin_url: &str, name: &str) -> anyhow::Result<String> {
    let coordinator = reqwest::Url::parse(admin_url).context("the coordinator's URL")?;
    let admin = super::connect_plain(admin_url).await?;
    let workers: Vec<(String, i32)> = sqlx::query_as(
        "select node_name::text, node_port::int from citus_get_active_worker_nodes() order by 2",
    )
    .fetch_all(&admin)
    .await
    .context("listing the coordinator's workers")?;
    admin.close().await;
    anyhow::ensure!(!workers.is_empty(), "the Citus coordinator has no active worker");
    let on_node = |host: &str, port: i32, database: &str| -> anyhow::Result<String> {
        let mut url = coordinator.clone();
        url.set_host(Some(host))?;
        url.set_port(Some(u16::try_from(port)?))
            .map_err(|()| anyhow::anyhow!("no port in {host}"))?;
        url.set_path(database);
        Ok(url.to_string())
    };
    let here = (
        coordinator.host_str().unwrap_or("localhost").to_owned(),
        i32::from(coordinator.port().unwrap_or(5432)),
    );
    for (host, port) in workers.iter().chain([&here]) {
        let node = super::connect_plain(&on_node(host, *port, coordinator.path())?).await?;
        sqlx::query(&format!("create database {}", partitioning::quote_ident(name)))
            .execute(&node)
            .await
            .with_context(|| format!("creating {name} on {host}:{port}"))?;
        node.close().await;
        let database = super::connect_plain(&on_node(host, *port, name)?).await?;
        sqlx::raw_sql(
            "set client_min_messages = warning;
             create extension citus;
             create schema partman;
             create extension pg_partman schema partman;",
        )
        .execute(&database)
        .await
        .with_context(|| format!("adding citus and pg_partman to {name} on {host}:{port}"))?;
        database.close().await;
    }
    let url = on_node(&here.0, here.1, name)?;
    let database = super::connect_plain(&url).await?;
    sqlx::query("select citus_set_coordinator_host($1, $2)")
        .bind(&here.0)
        .bind(here.1)
        .execute(&database)
        .await?;
    for (host, port) in &workers {
        sqlx::query("select citus_add_node($1, $2)")
            .bind(host)
            .bind(port)
            .execute(&database)
            .await
            .with_context(|| format!("registering {host}:{port}"))?;
    }
    database.close().await;
    Ok(url)
}

/// The constraint `error` reports as violated, by the name plume gave it. On a Citus coordinator a
/// worker's error names the shard's copy (`ingest_batches_pkey_102008`), and an error from a COPY
/// that Citus forwarded carries the name only in its message, with SQLSTATE XX000.
pub fn violated_constraint(error: &sqlx::Error) -> Option<String> {
    let error = error.as_database_error()?;
    let name = match error.constraint() {
        Some(name) => name.to_owned(),
        None => {
            let (_, rest) = error.message().split_once("constraint \"")?;
            rest.split_once('"')?.0.to_owned()
        }
    };
    Some(without_shard_suffix(&name).to_owned())
}

/// Whether `error` is a unique violation (SQLSTATE 23505, or the message Citus forwards as XX000).
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|error| {
        error.code().as_deref() == Some("23505")
            || (error.code().as_deref() == Some("XX000")
                && error
                    .message()
                    .starts_with("duplicate key value violates unique constraint"))
    })
}

/// `name` without the `_<shard id>` Citus appends to a shard's copy of a constraint; none of
/// plume's own constraint names ends in `_` and digits.
fn without_shard_suffix(name: &str) -> &str {
    match name.rsplit_once('_') {
        Some((base, shard)) if !shard.is_empty() && shard.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sites_rows_share_the_leading_parameters() {
        assert_eq!(one_site_rows(1, 2, 2), "($1, $2, $3), ($1, $4, $5)");
        assert_eq!(one_site_rows(2, 1, 3), "($1, $2, $3), ($1, $2, $4), ($1, $2, $5)");
        assert_eq!(one_site_rows(1, 0, 1), "($1)");
    }

    #[test]
    fn a_shards_constraint_is_named_as_plume_named_it() {
        assert_eq!(
            without_shard_suffix("ingest_batches_pkey_103097"),
            "ingest_batches_pkey"
        );
        assert_eq!(without_shard_suffix("ingest_batches_pkey"), "ingest_batches_pkey");
        assert_eq!(
            without_shard_suffix("measurements_default_rejects_rows"),
            "measurements_default_rejects_rows"
        );
        assert_eq!(without_shard_suffix("x_"), "x_");
    }
}

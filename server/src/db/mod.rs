//! The database: the connection pool, the embedded PostgreSQL cluster and the migrations runner.

pub mod citus;
pub mod embedded;
pub mod installation;
pub mod migrate;
pub mod partman_dialect;
pub mod roles;
mod supervisor;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Executor, PgPool};

use self::embedded::{ClusterOptions, EmbeddedCluster};

/// The database the embedded cluster serves plume from.
pub const EMBEDDED_DATABASE: &str = "plume";

/// Created once per connection rather than per batch: a temporary table made in every ingest
/// transaction would churn the system catalogs. `on commit delete rows` empties it at each commit.
const CREATE_STAGING_TABLE: &str = "create temporary table if not exists ingest_staging (
    site_id bigint not null,
    source_id text not null,
    measured_at timestamptz not null,
    value_mg bigint not null,
    part bigint not null
) on commit delete rows";

/// Pool sizing and timeouts.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Upper bound on open connections.
    pub max_connections: u32,
    /// How long a request waits for a free connection before the service answers 503.
    pub acquire_timeout: Duration,
    /// How long one statement may run before PostgreSQL cancels it (the request answers 503).
    pub statement_timeout: Duration,
    /// How long a statement may wait for a lock (a site's row, a partition) before PostgreSQL
    /// gives up (the request answers 503, and a retry is safe).
    pub lock_timeout: Duration,
    /// Plan every prepared statement once (`plan_cache_mode = force_generic_plan`) and prune
    /// partitions when it starts, instead of planning it again at each run. For a pool whose
    /// statements are few and always the same shape, with a partition-key bound as a parameter:
    /// PostgreSQL prices a generic plan with every partition in it, so it would otherwise plan
    /// such a statement afresh at every run, over every partition.
    pub generic_plans: bool,
    /// Whether sqlx logs the pool's statements (slow ones as warnings, with their text). Off for a
    /// pool that runs statements carrying a password or its verifier.
    pub statement_logging: bool,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(60),
            lock_timeout: Duration::from_secs(30),
            generic_plans: false,
            statement_logging: true,
        }
    }
}

/// Opens a pool whose connections each carry plume's session state (the ingest staging table).
pub async fn connect(database_url: &str, settings: &PoolSettings) -> Result<PgPool, sqlx::Error> {
    let millis = |d: Duration| format!("{}ms", d.as_millis().max(1));
    let mut options = PgConnectOptions::from_str(database_url)?
        .application_name("plume")
        .options([
            ("statement_timeout", millis(settings.statement_timeout)),
            ("lock_timeout", millis(settings.lock_timeout)),
        ]);
    if settings.generic_plans {
        options = options.options([("plan_cache_mode", "force_generic_plan")]);
    }
    if !settings.statement_logging {
        options = options.disable_statement_logging();
    }
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .after_connect(|connection, _meta| {
            Box::pin(async move {
                connection.execute(CREATE_STAGING_TABLE).await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await
}

/// Where plume's database is: a given URL, or an embedded cluster under a data directory.
#[derive(Debug, Clone)]
pub enum DatabaseSource {
    /// An existing PostgreSQL database (with pg_partman installed).
    Url {
        /// The connection the service runs on (the application role, or a single role for all).
        url: String,
        /// The connection of the role that owns the schema, for migrations and partition
        /// maintenance; `None` when `url` is that role too.
        owner_url: Option<String>,
    },
    /// A private cluster plume starts, kept in this directory. It owns the schema as the cluster's
    /// superuser and serves as the application role [`roles::EMBEDDED_APP_ROLE`].
    Embedded(PathBuf),
}

/// An open, migrated database, and the embedded cluster behind it if plume started one.
#[derive(Debug)]
pub struct Database {
    /// The pool everything on the request path uses: the application role, with DML only when the
    /// roles are split.
    pub pool: PgPool,
    /// The URL the pool connects to.
    pub url: String,
    /// A small pool as the role that owns the schema: migrations, partition maintenance and the
    /// outbox's daily partitions (DDL). The same pool as [`Database::pool`] without a split.
    pub owner: PgPool,
    /// `Some` while plume runs its own cluster; stopped by [`Database::close`].
    cluster: Option<EmbeddedCluster>,
}

/// Most connections of the owner's pool: one maintenance run and the outbox housekeeping at a time.
const OWNER_CONNECTIONS: u32 = 4;

impl Database {
    /// Connects (starting the embedded cluster first if asked to), applies pending migrations as the
    /// owner and, with split roles, grants the application role what the service needs.
    pub async fn open(source: &DatabaseSource, settings: &PoolSettings) -> anyhow::Result<Self> {
        let (url, owner_url, cluster) = match source {
            DatabaseSource::Url { url, owner_url } => (url.clone(), owner_url.clone(), None),
            DatabaseSource::Embedded(dir) => {
                let (port, cluster) = match embedded::running_port(dir, &installation::default_bin_dir()) {
                    // Another plume process runs this cluster: share it, and leave stopping it to that one.
                    Some(port) => {
                        tracing::info!(port, data_dir = %dir.display(), "using the embedded PostgreSQL already running");
                        (port, None)
                    }
                    None => {
                        let cluster = start_embedded(dir).await?;
                        (cluster.port(), Some(cluster))
                    }
                };
                let owner_url = embedded::url_on(dir, port, EMBEDDED_DATABASE);
                let app_url = roles::embedded_app_url(dir, port, &owner_url)
                    .await
                    .context("setting up the embedded application role")?;
                (app_url, Some(owner_url), cluster)
            }
        };
        let owner_url = owner_url.unwrap_or_else(|| url.clone());
        migrate::run(&owner_url).await.context("migrating the database")?;
        let pool = connect(&url, settings)
            .await
            .context("connecting to the database")?;
        let owner = if owner_url == url {
            pool.clone()
        } else {
            let owner_settings = PoolSettings {
                max_connections: OWNER_CONNECTIONS,
                ..settings.clone()
            };
            let owner = connect(&owner_url, &owner_settings)
                .await
                .context("connecting to the database as its owner")?;
            roles::grant_to_app_role(&owner, &pool)
                .await
                .context("granting the application role its privileges")?;
            owner
        };
        Ok(Self {
            pool,
            url,
            owner,
            cluster,
        })
    }

    /// Whether this process started the embedded cluster it uses.
    pub fn is_embedded(&self) -> bool {
        self.cluster.is_some()
    }

    /// Closes the pools and stops the embedded cluster, if any.
    pub async fn close(self) {
        self.pool.close().await;
        self.owner.close().await;
        if let Some(cluster) = self.cluster {
            let _ = tokio::task::spawn_blocking(move || cluster.stop()).await;
            tracing::info!("embedded PostgreSQL stopped");
        }
    }
}

/// Starts the embedded cluster under `dir` and creates plume's database in it.
async fn start_embedded(dir: &Path) -> anyhow::Result<EmbeddedCluster> {
    let options = ClusterOptions::new(dir);
    let cluster = tokio::task::spawn_blocking(move || EmbeddedCluster::start(&options))
        .await?
        .context("starting the embedded PostgreSQL")?;
    tracing::info!(port = cluster.port(), data_dir = %dir.display(), "embedded PostgreSQL started");
    create_database_if_missing(&cluster.url("postgres"), EMBEDDED_DATABASE).await?;
    Ok(cluster)
}

/// `url` with its database (the path) replaced by `database`; the query string is kept.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(base, query)| (base, Some(query)));
    let authority = base.find("://").map_or(0, |at| at + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |at| authority + at);
    let query = query.map(|query| format!("?{query}")).unwrap_or_default();
    format!("{}/{database}{query}", &base[..path])
}

/// Creates `name` on the server behind `admin_url` unless it exists.
pub async fn create_database_if_missing(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let admin = connect_plain(admin_url).await?;
    let exists = sqlx::query_scalar!(
        r#"select exists (select 1 from pg_database where datname = $1) as "exists!""#,
        name
    )
    .fetch_one(&admin)
    .await?;
    if !exists {
        // Utility statements take no parameters: the name is quoted as an identifier.
        admin
            .execute(format!("create database {}", partitioning::quote_ident(name)).as_str())
            .await?;
    }
    admin.close().await;
    Ok(())
}

/// A small pool without plume's session state, for administrative statements.
pub async fn connect_plain(database_url: &str) -> Result<PgPool, sqlx::Error> {
    // Among its statements is the one setting the embedded cluster's application password: none
    // of them is logged.
    let options = PgConnectOptions::from_str(database_url)?.disable_statement_logging();
    PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn a_database_url_names_another_database_and_keeps_its_options() {
        assert_eq!(
            with_database(
                "postgres://postgres:pw@127.0.0.1:5432/postgres?sslmode=disable",
                "test_1"
            ),
            "postgres://postgres:pw@127.0.0.1:5432/test_1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:1", "t"), "postgres://h:1/t");
    }
}

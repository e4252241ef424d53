//! Schema migrations: the plain SQL files in `migrations/`, embedded in the binary and run by refinery.
//!
//! refinery runs them over a sqlx connection (see [`Migrator`]), so migrations connect exactly as the
//! rest of plume does: the same URL parameters, the same TLS (`sslmode`, `sslrootcert`).

use std::str::FromStr;

use refinery::Migration;
use refinery_core::traits::r#async::{AsyncMigrate, AsyncQuery, AsyncTransaction};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection, PgPool, Row};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// Errors running migrations.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Could not connect.
    #[error("connecting to run migrations: {0}")]
    Connect(#[from] sqlx::Error),
    /// A migration failed; refinery says which.
    #[error("running migrations: {0}")]
    Run(#[from] refinery::Error),
    /// Applying the first migrations for pg_partman 5 failed.
    #[error("running migrations for pg_partman 5: {0}")]
    Dialect(#[from] super::partman_dialect::DialectError),
}

/// Applies every migration not yet applied to the database at `database_url`; returns the names of
/// the ones applied now.
#[tracing::instrument(skip_all)]
pub async fn run(database_url: &str) -> Result<Vec<String>, MigrateError> {
    let options = PgConnectOptions::from_str(database_url)?.application_name("plume migrate");
    let mut migrator = Migrator(PgConnection::connect_with(&options).await?);
    let result = apply_pending(&mut migrator).await;
    let _ = migrator.0.close().await;
    let applied = result?;
    for name in &applied {
        tracing::info!(migration = %name, "applied migration");
    }
    Ok(applied)
}

/// The migrations pg_partman 5 needs in its own words first (see [`super::partman_dialect`]), then
/// refinery's run of the rest.
async fn apply_pending(migrator: &mut Migrator) -> Result<Vec<String>, MigrateError> {
    let mut applied = super::partman_dialect::apply(&mut migrator.0, &migrations()).await?;
    let report = embedded::migrations::runner().run_async(migrator).await?;
    applied.extend(report.applied_migrations().iter().map(ToString::to_string));
    Ok(applied)
}

/// The migrations built into this binary.
pub fn migrations() -> Vec<refinery::Migration> {
    embedded::migrations::runner().get_migrations().to_vec()
}

/// The version of the newest migration built into this binary.
pub fn latest_version() -> i64 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

/// Whether the database has every migration this binary knows of.
pub async fn is_current(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let applied = sqlx::query_scalar!("select max(version)::bigint from refinery_schema_history")
        .fetch_one(pool)
        .await?;
    Ok(applied == Some(latest_version()))
}

/// refinery's driver for a sqlx connection. Each call runs in a transaction of its own, as refinery's
/// own drivers do; statements go through the simple query protocol, so one migration file may hold
/// many statements.
struct Migrator(PgConnection);

#[async_trait::async_trait]
impl AsyncTransaction for Migrator {
    type Error = sqlx::Error;

    async fn execute(&mut self, queries: &[&str]) -> Result<usize, Self::Error> {
        let connection = &mut self.0;
        connection.execute("begin").await?;
        for query in queries {
            if let Err(error) = connection.execute(sqlx::raw_sql(query)).await {
                let _ = connection.execute("rollback").await;
                return Err(error);
            }
        }
        connection.execute("commit").await?;
        Ok(queries.len())
    }
}

#[async_trait::async_trait]
impl AsyncQuery<Vec<Migration>> for Migrator {
    /// Reads refinery's history table: version, name, applied_on (RFC 3339 text), checksum (text).
    async fn query(&mut self, query: &str) -> Result<Vec<Migration>, Self::Error> {
        let connection = &mut self.0;
        let rows = connection.fetch_all(sqlx::raw_sql(query)).await?;
        let decode = |e: Box<dyn std::error::Error + Send + Sync>| sqlx::Error::Decode(e);
        rows.iter()
            .map(|row| {
                let version: i32 = row.try_get(0)?;
                let name: String = row.try_get(1)?;
                let applied_on: String = row.try_get(2)?;
                let checksum: String = row.try_get(3)?;
                let applied_on =
                    OffsetDateTime::parse(&applied_on, &Rfc3339).map_err(|e| decode(Box::new(e)))?;
                let checksum = checksum.parse::<u64>().map_err(|e| decode(Box::new(e)))?;
                Ok(Migration::applied(version, name, applied_on, checksum))
            })
            .collect()
    }
}

impl AsyncMigrate for Migrator {}

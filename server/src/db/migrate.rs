//! Schema migrations: the plain SQL files in `migrations/`, embedded in the binary and run by refinery.
//!
//! refinery drives its own `tokio-postgres` connection here and nowhere else; the rest of plume talks
//! to PostgreSQL through sqlx.

use sqlx::PgPool;

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// Errors running migrations.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Could not connect.
    #[error("connecting to run migrations: {0}")]
    Connect(#[from] tokio_postgres::Error),
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
    let (mut client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    let result = apply_pending(&mut client).await;
    drop(client);
    let _ = driver.await;
    let applied = result?;
    for name in &applied {
        tracing::info!(migration = %name, "applied migration");
    }
    Ok(applied)
}

/// The migrations pg_partman 5 needs in its own words first (see [`super::partman_dialect`]), then
/// refinery's run of the rest.
async fn apply_pending(client: &mut tokio_postgres::Client) -> Result<Vec<String>, MigrateError> {
    let mut applied = super::partman_dialect::apply(client, &migrations()).await?;
    let report = embedded::migrations::runner().run_async(client).await?;
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

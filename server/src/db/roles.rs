//! Least privilege: the role that owns plume's schema runs the migrations and the partition
//! maintenance (DDL); the application role the service runs as reads and writes rows and nothing
//! else. It cannot create, alter or drop a table, detach a partition or touch pg_partman.

use partitioning::quote_ident;
use sqlx::{Executor, PgPool};

use super::embedded;

/// The application role of the embedded cluster, whose owner is the cluster's superuser.
pub const EMBEDDED_APP_ROLE: &str = "plume_app";

/// Grants `role` what the service needs in the current database, now and for the tables and
/// sequences the owner creates later (new migrations, new partitions). Run as the owner.
/// Idempotent.
pub async fn grant(owner: &PgPool, role: &str) -> Result<(), sqlx::Error> {
    let role = quote_ident(role);
    let database: String = sqlx::query_scalar("select current_database()::text")
        .fetch_one(owner)
        .await?;
    let database = quote_ident(&database);
    let statements = [
        // TEMPORARY: the ingest path stages each batch in a temporary table of its connection.
        format!("grant connect, temporary on database {database} to {role}"),
        format!("grant usage on schema public to {role}"),
        format!("grant select, insert, update, delete on all tables in schema public to {role}"),
        format!("grant usage, select on all sequences in schema public to {role}"),
        format!("alter default privileges in schema public grant select, insert, update, delete on tables to {role}"),
        format!("alter default privileges in schema public grant usage, select on sequences to {role}"),
        // The migration history is the owner's record.
        format!("revoke insert, update, delete on refinery_schema_history from {role}"),
    ];
    let mut transaction = owner.begin().await?;
    for statement in &statements {
        transaction.execute(statement.as_str()).await?;
    }
    transaction.commit().await
}

/// Grants the role `app` connects as, unless it is the owner itself.
pub async fn grant_to_app_role(owner: &PgPool, app: &PgPool) -> Result<(), sqlx::Error> {
    let current = "select current_user::text";
    let owner_role: String = sqlx::query_scalar(current).fetch_one(owner).await?;
    let app_role: String = sqlx::query_scalar(current).fetch_one(app).await?;
    if app_role != owner_role {
        grant(owner, &app_role).await?;
    }
    Ok(())
}

/// Creates (or re-keys) the embedded cluster's application role with the password kept in its data
/// directory; returns the URL of plume's database as that role.
pub async fn embedded_app_url(
    data_dir: &std::path::Path,
    port: u16,
    owner_url: &str,
) -> anyhow::Result<String> {
    let password = embedded::app_password(data_dir)?;
    let owner = super::connect_plain(owner_url).await?;
    let exists: bool = sqlx::query_scalar("select exists (select 1 from pg_roles where rolname = $1)")
        .bind(EMBEDDED_APP_ROLE)
        .fetch_one(&owner)
        .await?;
    let verb = if exists { "alter" } else { "create" };
    // Utility statements take no parameters. The password goes as its SCRAM verifier (base64 and
    // `$:` only), so not even PostgreSQL's own statement log could show it; the name is a constant.
    let verifier = crate::sql_access::scram::verifier(&password);
    let statement = format!("{verb} role {EMBEDDED_APP_ROLE} login password '{verifier}'");
    owner.execute(statement.as_str()).await?;
    owner.close().await;
    Ok(format!(
        "postgres://{EMBEDDED_APP_ROLE}:{password}@127.0.0.1:{port}/{}",
        super::EMBEDDED_DATABASE
    ))
}

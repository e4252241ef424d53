//! `plume sql-access ...`: login roles for SQL clients, made and dropped as the schema's owner. A
//! generated password is printed once, to standard output, and never logged.

use anyhow::Context;

use crate::config::{SqlAccessGrantArgs, SqlAccessListArgs, SqlAccessRevokeArgs};
use crate::db::{Database, PoolSettings};
use crate::sql_access::{self, AccessError, NewPassword};

/// What the database says when the owner may not manage roles, and what to do about it.
const NEEDS_CREATEROLE: &str =
    "the owner's role must be allowed to create roles (CREATEROLE, or a superuser): \
     run this with such a role's URL as DATABASE_URL";

/// `plume sql-access grant`.
pub async fn grant(args: SqlAccessGrantArgs) -> anyhow::Result<()> {
    let grant = args.grant()?;
    // The role's statement carries its password's verifier: sqlx must not log it, even as slow.
    let settings = PoolSettings {
        statement_logging: false,
        ..args.database.pool_settings()
    };
    let database = Database::open(&args.database.source()?, &settings).await?;
    let result = sql_access::grant(&database.owner, &grant).await;
    database.close().await;
    let granted = match result {
        Ok(granted) => granted,
        Err(AccessError::Database(error)) => {
            return Err(error).context(format!("granting SQL access; {NEEDS_CREATEROLE}"))
        }
        Err(error) => anyhow::bail!("{error}"),
    };
    let role = grant.role.as_str();
    let sites = match &grant.sites {
        None => "every site".to_owned(),
        Some(ids) => {
            let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
            format!("sites {}", ids.join(", "))
        }
    };
    println!(
        "{} role {role}: reads plume_sql.sites, plume_sql.readings and plume_sql.hourly of {sites} in database {}, \
         at most {} connections at once",
        if granted.created { "created" } else { "updated" },
        granted.database,
        grant.connection_limit,
    );
    match (&granted.generated_password, &grant.password) {
        (Some(password), _) => println!(
            "its password, shown this once (PostgreSQL keeps only a SCRAM verifier of it):\n{password}"
        ),
        (None, NewPassword::Given(_)) => println!("its password is the one in --password-file"),
        (None, _) => println!("its password is unchanged (--new-password sets a new one)"),
    }
    Ok(())
}

/// `plume sql-access revoke`.
pub async fn revoke(args: SqlAccessRevokeArgs) -> anyhow::Result<()> {
    let database = Database::open(&args.database.source()?, &args.database.pool_settings()).await?;
    let result = sql_access::revoke(&database.owner, &args.role).await;
    database.close().await;
    let ended = match result {
        Ok(ended) => ended,
        Err(AccessError::Database(error)) => {
            return Err(error).context(format!(
                "revoking SQL access (a role that holds privileges in another database cannot be dropped); {NEEDS_CREATEROLE}"
            ))
        }
        Err(error) => anyhow::bail!("{error}"),
    };
    println!(
        "role {} dropped: it reads nothing any more ({ended} open sessions ended)",
        args.role.as_str()
    );
    Ok(())
}

/// `plume sql-access list`.
pub async fn list(args: SqlAccessListArgs) -> anyhow::Result<()> {
    let database = Database::open(&args.database.source()?, &args.database.pool_settings()).await?;
    let listed = sql_access::list(&database.owner).await;
    database.close().await;
    let readers = listed.context("listing SQL access roles")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&readers)?);
        return Ok(());
    }
    println!(
        "{:<24}  {:<24}  {:<11}  {:<16}  {:<16}  state",
        "role", "sites", "connections", "granted", "changed"
    );
    for reader in readers {
        let sites = match &reader.site_ids {
            None => "all".to_owned(),
            Some(ids) if ids.is_empty() => "none".to_owned(),
            Some(ids) => ids.iter().map(i64::to_string).collect::<Vec<_>>().join(","),
        };
        let connections = match reader.connection_limit {
            Some(-1) => "unlimited".to_owned(),
            Some(limit) => limit.to_string(),
            None => "-".to_owned(),
        };
        let state = if reader.role_exists {
            "live"
        } else {
            "role dropped outside plume"
        };
        println!(
            "{:<24}  {:<24}  {:<11}  {:<16}  {:<16}  {state}",
            reader.role,
            sites,
            connections,
            reader.granted_at.format("%Y-%m-%d %H:%M"),
            reader.updated_at.format("%Y-%m-%d %H:%M"),
        );
    }
    Ok(())
}

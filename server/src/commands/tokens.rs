//! `plume tokens ...`: clients and their tokens, for whoever holds the database. A token's secret
//! is printed once, to standard output, and never logged.

use anyhow::Context;
use chrono::Utc;

use crate::auth::store::{self, CreateError, NewClient, Revoked};
use crate::auth::{audit, Kind, Scope};
use crate::config::{TokenAuditArgs, TokenCreateArgs, TokenListArgs, TokenRevokeArgs, TokenRotateArgs};
use crate::db::Database;

/// `plume tokens create`.
pub async fn create(args: TokenCreateArgs) -> anyhow::Result<()> {
    let client = new_client(&args)?;
    let lifetime = match args.expires {
        Some(expires) => chrono::Duration::from_std(expires).context("--expires is too long")?,
        None => args.kind.default_lifetime(),
    };
    let expires_at = Utc::now() + lifetime;
    let database = Database::open(&args.database.source()?, &args.database.pool_settings()).await?;
    let created = store::create_client(&database.pool, &client, expires_at, false).await;
    database.close().await;
    let (client_id, token) = match created {
        Ok(created) => created,
        Err(error @ CreateError::NameTaken(_)) => anyhow::bail!("{error}: choose another --name"),
        Err(CreateError::Database(error)) => return Err(error).context("creating the client"),
    };
    if args.json {
        let created = serde_json::json!({
            "client_id": client_id,
            "client": client.name,
            "kind": client.kind,
            "scope": client.scope,
            "token_id": token.id,
            "token": token.text,
            "expires_at": expires_at,
        });
        println!("{created}");
    } else {
        println!(
            "created client {client_id} {:?} ({}, {}), token {} expiring {}",
            client.name,
            client.kind.as_str(),
            describe(&client.scope),
            token.id,
            expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        println!(
            "the token, shown this once (plume keeps only its hash):\n{}",
            token.text
        );
    }
    Ok(())
}

/// The client `args` describe, or why they do not make one.
fn new_client(args: &TokenCreateArgs) -> anyhow::Result<NewClient> {
    let name = args.name.trim();
    anyhow::ensure!(
        (1..=100).contains(&name.chars().count()),
        "--name must be 1 to 100 characters"
    );
    let scope = match args.kind {
        Kind::Admin => Scope::all(),
        Kind::Metrics => {
            anyhow::ensure!(
                args.sites.is_empty() && !args.all_sites,
                "a metrics client reads /metrics only: it takes no --site or --all-sites"
            );
            Scope::sites(Vec::new())
        }
        Kind::Ingest | Kind::Read if args.all_sites => Scope::all(),
        Kind::Ingest | Kind::Read => {
            anyhow::ensure!(
                !args.sites.is_empty(),
                "an {} client needs --site ID (repeatable) or --all-sites",
                args.kind.as_str()
            );
            anyhow::ensure!(args.sites.len() <= 10_000, "at most 10,000 --site");
            Scope::sites(args.sites.clone())
        }
    };
    anyhow::ensure!(
        !args.export || args.kind == Kind::Read,
        "--export is for read clients (admins may always export)"
    );
    anyhow::ensure!(
        args.source_prefix.is_none() || args.kind == Kind::Ingest,
        "--source-prefix is for ingest clients"
    );
    anyhow::ensure!(
        args.readings_rate.is_none() || args.kind == Kind::Ingest,
        "--readings-rate is for ingest clients"
    );
    anyhow::ensure!(
        args.max_future_skew.is_none() || args.kind == Kind::Ingest,
        "--max-future-skew is for ingest clients"
    );
    if let Some(prefix) = &args.source_prefix {
        anyhow::ensure!(
            (1..=200).contains(&prefix.chars().count()),
            "--source-prefix must be 1 to 200 characters"
        );
    }
    Ok(NewClient {
        name: name.to_owned(),
        kind: args.kind,
        scope,
        source_prefix: args.source_prefix.clone(),
        can_export: args.export,
        requests_per_second: args.rate,
        readings_per_second: args.readings_rate,
        max_future_skew_seconds: args.max_future_skew.map(|skew| skew.as_secs() as u32),
    })
}

fn describe(scope: &Scope) -> String {
    match scope.listed() {
        None => "all sites".to_owned(),
        Some([]) => "no sites".to_owned(),
        Some(sites) => {
            let ids: Vec<String> = sites.iter().map(i64::to_string).collect();
            format!("sites {}", ids.join(", "))
        }
    }
}

/// `plume tokens list`.
pub async fn list(args: TokenListArgs) -> anyhow::Result<()> {
    let database = Database::open(&args.database.source()?, &args.database.pool_settings()).await?;
    let listed = store::list(&database.pool).await;
    database.close().await;
    let tokens = listed.context("listing tokens")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&tokens)?);
        return Ok(());
    }
    let stamp = |at: Option<chrono::DateTime<Utc>>| {
        at.map_or_else(|| "-".to_owned(), |at| at.format("%Y-%m-%d %H:%M").to_string())
    };
    println!(
        "{:<16}  {:<24}  {:<7}  {:<20}  {:<16}  {:<16}  {:<16}  state",
        "token", "client", "kind", "scope", "created", "expires", "last used"
    );
    for token in tokens {
        let scope = describe(&Scope {
            all_sites: token.all_sites,
            site_ids: token.site_ids.clone(),
        });
        let state = match token.revoked_at {
            Some(_) => "revoked",
            None if token.expires_at <= Utc::now() => "expired",
            None if token.single_use => "sign-in link",
            None => "live",
        };
        println!(
            "{:<16}  {:<24}  {:<7}  {:<20}  {:<16}  {:<16}  {:<16}  {state}",
            token.token_id,
            token.client,
            token.kind,
            scope,
            stamp(Some(token.created_at)),
            stamp(Some(token.expires_at)),
            stamp(token.last_used_at),
        );
    }
    Ok(())
}

/// `plume tokens revoke`.
pub async fn revoke(args: TokenRevokeArgs) -> anyhow::Result<()> {
    let database = Database::open(&args.database.source()?, &args.database.pool_settings()).await?;
    let revoked = store::revoke(&database.pool, &args.which).await;
    database.close().await;
    match revoked.context("revoking")? {
        Some(Revoked::Token(id)) => println!("token {id} revoked"),
        Some(Revoked::Client(name)) => println!("client {name:?} and all its tokens revoked"),
        None => anyhow::bail!(
            "no live token has the id {:?} and no live client has that name (see plume tokens list)",
            args.which
        ),
    }
    Ok(())
}

/// `plume tokens rotate`.
pub async fn rotate(args: TokenRotateArgs) -> anyhow::Result<()> {
    let grace = chrono::Duration::from_std(args.grace).context("--grace is too long")?;
    let database = Database::open(&args.database.source()?, &args.database.pool_settings()).await?;
    let rotated = store::rotate(&database.pool, &args.token_id, grace).await;
    database.close().await;
    let (token, old_ends) = rotated?;
    if args.json {
        let rotated = serde_json::json!({
            "token_id": token.id,
            "token": token.text,
            "old_token_id": args.token_id,
            "old_token_expires_at": old_ends,
        });
        println!("{rotated}");
    } else {
        println!(
            "new token {}; the old token {} works until {}",
            token.id,
            args.token_id,
            old_ends.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        println!(
            "the new token, shown this once (plume keeps only its hash):\n{}",
            token.text
        );
    }
    Ok(())
}

/// `plume tokens audit`.
pub async fn audit(args: TokenAuditArgs) -> anyhow::Result<()> {
    let since = Utc::now() - chrono::Duration::from_std(args.since).context("--since is too long")?;
    let database = Database::open(&args.database.source()?, &args.database.pool_settings()).await?;
    let rows = audit::since(&database.pool, since, 10_000).await;
    database.close().await;
    for row in rows.context("reading the audit trail")? {
        if args.json {
            println!("{}", serde_json::to_string(&row)?);
        } else {
            println!(
                "{}  {:<16}  {:<6}  client {:<5}  token {:<16}  {:<15}  {}",
                row.at.format("%Y-%m-%d %H:%M:%S"),
                row.action,
                row.outcome,
                row.client_id.map_or_else(|| "-".to_owned(), |id| id.to_string()),
                row.token_id.as_deref().unwrap_or("-"),
                row.remote_addr.as_deref().unwrap_or("-"),
                row.detail,
            );
        }
    }
    Ok(())
}

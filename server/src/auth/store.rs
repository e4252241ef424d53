//! The auth tables: clients, tokens, sessions and the audit trail. Every change of trust (a token
//! created, rotated or revoked, a session ended) is announced on [`CHANNEL`] in the same
//! transaction, so every plume process drops what it cached the moment it commits.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};

use super::audit::AuditEntry;
use super::token::NewToken;
use super::{Client, Kind, Scope};

/// The channel revocations are announced on. Payloads: `token:<id>`, `client:<id>`,
/// `session:<hash hex>`, or `*` (check everything).
pub const CHANNEL: &str = "plume_auth";

/// What a new client is.
#[derive(Debug, Clone)]
pub struct NewClient {
    /// Its unique name.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// Its sites.
    pub scope: Scope,
    /// The prefix its source ids must start with.
    pub source_prefix: Option<String>,
    /// Whether a read client may export.
    pub can_export: bool,
    /// Its own request rate.
    pub requests_per_second: Option<u32>,
    /// Its own readings rate.
    pub readings_per_second: Option<u32>,
    /// Its own future skew, in seconds.
    pub max_future_skew_seconds: Option<u32>,
}

impl NewClient {
    /// A client of `kind` over `scope` with no further restriction and its kind's default limits.
    pub fn new(name: impl Into<String>, kind: Kind, scope: Scope) -> Self {
        Self {
            name: name.into(),
            kind,
            scope,
            source_prefix: None,
            can_export: false,
            requests_per_second: None,
            readings_per_second: None,
            max_future_skew_seconds: None,
        }
    }
}

/// A token that may be used: not revoked, not expired, its client not revoked.
#[derive(Debug, Clone)]
pub struct LiveToken {
    /// The token's public id.
    pub id: String,
    /// The hash of its secret.
    pub secret_sha256: Vec<u8>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// A sign-in link's token.
    pub single_use: bool,
    /// Its client.
    pub client: Client,
}

/// Why a client could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The name is taken.
    #[error("a client named {0:?} exists already")]
    NameTaken(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Creates a client and its first token, recording both in the audit trail.
pub async fn create_client(
    pool: &PgPool,
    client: &NewClient,
    expires_at: DateTime<Utc>,
    single_use: bool,
) -> Result<(i64, NewToken), CreateError> {
    let mut tx = pool.begin().await?;
    let created = sqlx::query_scalar!(
        "insert into auth_clients (name, kind, all_sites, site_ids, source_prefix, can_export,
                                   requests_per_second, readings_per_second, max_future_skew_seconds)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         on conflict (name) do nothing
         returning id",
        client.name,
        client.kind.as_str(),
        client.scope.all_sites,
        &client.scope.site_ids,
        client.source_prefix,
        client.can_export,
        client.requests_per_second.map(|rate| rate as i32),
        client.readings_per_second.map(|rate| rate as i32),
        client.max_future_skew_seconds.map(|seconds| seconds as i32),
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(client_id) = created else {
        return Err(CreateError::NameTaken(client.name.clone()));
    };
    let token = add_token(&mut tx, client_id, client.kind, expires_at, single_use).await?;
    AuditEntry::ok("client.created")
        .by(client_id, &token.id)
        .detail(serde_json::json!({
            "name": client.name,
            "kind": client.kind.as_str(),
            "all_sites": client.scope.all_sites,
            "site_ids": client.scope.site_ids,
            "expires_at": expires_at,
        }))
        .insert(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((client_id, token))
}

/// The name of the admin client the embedded default creates for the dashboard's sign-in links.
pub const SIGN_IN_CLIENT: &str = "admin";

/// A one-time sign-in token for the dashboard, valid until `expires_at`, of the `admin` client;
/// on a database without any client, the `admin` client is created first. `None` when clients
/// exist but `admin` does not (or was revoked): then the operator mints tokens.
pub async fn sign_in_token(
    pool: &PgPool,
    expires_at: DateTime<Utc>,
) -> Result<Option<NewToken>, sqlx::Error> {
    let admin = sqlx::query_scalar!(
        "select id from auth_clients where name = $1 and kind = 'admin' and revoked_at is null",
        SIGN_IN_CLIENT
    )
    .fetch_optional(pool)
    .await?;
    match admin {
        Some(client_id) => {
            let mut tx = pool.begin().await?;
            let token = add_token(&mut tx, client_id, Kind::Admin, expires_at, true).await?;
            AuditEntry::ok("sign_in_link.created")
                .by(client_id, &token.id)
                .insert(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Some(token))
        }
        None => {
            let any = sqlx::query_scalar!(r#"select exists (select 1 from auth_clients) as "any!""#)
                .fetch_one(pool)
                .await?;
            if any {
                return Ok(None);
            }
            let admin = NewClient::new(SIGN_IN_CLIENT, Kind::Admin, Scope::all());
            match create_client(pool, &admin, expires_at, true).await {
                Ok((_, token)) => Ok(Some(token)),
                // Another process created it at the same moment: its link is the one printed.
                Err(CreateError::NameTaken(_)) => Ok(None),
                Err(CreateError::Database(error)) => Err(error),
            }
        }
    }
}

/// Adds a token to `client_id`.
async fn add_token(
    tx: &mut Transaction<'_, Postgres>,
    client_id: i64,
    kind: Kind,
    expires_at: DateTime<Utc>,
    single_use: bool,
) -> Result<NewToken, sqlx::Error> {
    let token = NewToken::generate(kind);
    sqlx::query!(
        "insert into auth_tokens (id, client_id, secret_sha256, expires_at, single_use)
         values ($1, $2, $3, $4, $5)",
        token.id,
        client_id,
        &token.secret_sha256[..],
        expires_at,
        single_use,
    )
    .execute(&mut **tx)
    .await?;
    Ok(token)
}

/// The token `id` with its client, if it may be used now.
pub async fn live_token(pool: &PgPool, id: &str) -> Result<Option<LiveToken>, sqlx::Error> {
    let row = sqlx::query!(
        r#"select t.id, t.secret_sha256, t.expires_at, t.single_use,
                  c.id as client_id, c.name, c.kind, c.all_sites, c.site_ids, c.source_prefix,
                  c.can_export, c.requests_per_second, c.readings_per_second,
                  c.max_future_skew_seconds
             from auth_tokens t join auth_clients c on c.id = t.client_id
            where t.id = $1 and t.revoked_at is null and c.revoked_at is null
              and t.expires_at > now()"#,
        id,
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|row| {
        Some(LiveToken {
            id: row.id,
            secret_sha256: row.secret_sha256,
            expires_at: row.expires_at,
            single_use: row.single_use,
            client: Client {
                id: row.client_id,
                name: row.name,
                kind: Kind::parse(&row.kind)?,
                scope: if row.all_sites {
                    Scope::all()
                } else {
                    Scope::sites(row.site_ids)
                },
                source_prefix: row.source_prefix,
                can_export: row.can_export,
                requests_per_second: row.requests_per_second.map(|rate| rate as u32),
                readings_per_second: row.readings_per_second.map(|rate| rate as u32),
                max_future_skew_seconds: row.max_future_skew_seconds.map(|seconds| seconds as u32),
            },
        })
    }))
}

/// Which of `ids` may still be used.
pub async fn live_token_ids(pool: &PgPool, ids: &[String]) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "select t.id from auth_tokens t join auth_clients c on c.id = t.client_id
          where t.id = any($1) and t.revoked_at is null and c.revoked_at is null
            and t.expires_at > now()",
        ids,
    )
    .fetch_all(pool)
    .await
}

/// Records that `ids` were used (called by each process's sweep, not per request).
pub async fn touch_tokens(pool: &PgPool, ids: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update auth_tokens set last_used_at = now() where id = any($1)",
        ids
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Uses up a sign-in link's token (the session it starts lives on); `false` if it was used already.
pub async fn use_up(pool: &PgPool, token_id: &str) -> Result<bool, sqlx::Error> {
    let used = sqlx::query!(
        "update auth_tokens set used_at = now()
          where id = $1 and single_use and used_at is null",
        token_id
    )
    .execute(pool)
    .await?;
    Ok(used.rows_affected() == 1)
}

/// One token as `plume tokens list` shows it (never its secret).
#[derive(Debug, Clone, Serialize)]
pub struct TokenListing {
    /// The token's id.
    pub token_id: String,
    /// Its client's id.
    pub client_id: i64,
    /// Its client's name.
    pub client: String,
    /// Its client's kind.
    pub kind: String,
    /// Every site, or…
    pub all_sites: bool,
    /// …these.
    pub site_ids: Vec<i64>,
    /// The source prefix, if restricted.
    pub source_prefix: Option<String>,
    /// Whether a read client may export.
    pub can_export: bool,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// When it was last loaded by a process to serve a request.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it (or its client) was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// A sign-in link's token.
    pub single_use: bool,
}

/// Every token, newest first.
pub async fn list(pool: &PgPool) -> Result<Vec<TokenListing>, sqlx::Error> {
    sqlx::query_as!(
        TokenListing,
        r#"select t.id as token_id, c.id as client_id, c.name as client, c.kind, c.all_sites,
                  c.site_ids, c.source_prefix, c.can_export, t.created_at, t.expires_at,
                  t.last_used_at, coalesce(t.revoked_at, c.revoked_at) as revoked_at, t.single_use
             from auth_tokens t join auth_clients c on c.id = t.client_id
            order by t.created_at desc, t.id"#
    )
    .fetch_all(pool)
    .await
}

/// What `plume tokens revoke` revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Revoked {
    /// One token.
    Token(String),
    /// A client, with every token it has.
    Client(String),
}

/// Revokes the token with id `which`, or else the client named `which` (all its tokens and
/// sessions); `None` when neither exists or it was revoked already.
pub async fn revoke(pool: &PgPool, which: &str) -> Result<Option<Revoked>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let token = sqlx::query!(
        "update auth_tokens set revoked_at = now() where id = $1 and revoked_at is null
         returning client_id",
        which
    )
    .fetch_optional(&mut *tx)
    .await?;
    let revoked = if let Some(token) = token {
        announce(&mut *tx, &format!("token:{which}")).await?;
        AuditEntry::ok("token.revoked")
            .by(token.client_id, which)
            .insert(&mut *tx)
            .await?;
        Revoked::Token(which.to_owned())
    } else {
        let client = sqlx::query_scalar!(
            "update auth_clients set revoked_at = now() where name = $1 and revoked_at is null
             returning id",
            which
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(client_id) = client else {
            return Ok(None);
        };
        announce(&mut *tx, &format!("client:{client_id}")).await?;
        AuditEntry::ok("client.revoked")
            .by(client_id, "")
            .detail(serde_json::json!({ "name": which }))
            .insert(&mut *tx)
            .await?;
        Revoked::Client(which.to_owned())
    };
    tx.commit().await?;
    Ok(Some(revoked))
}

/// Why a token could not be rotated.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// No usable token has that id.
    #[error("no live token has the id {0:?} (see plume tokens list)")]
    NotFound(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Gives the client of token `id` a new token with the same lifetime, and lets the old one work
/// only for `grace` more. Returns the new token and when the old one stops.
pub async fn rotate(
    pool: &PgPool,
    id: &str,
    grace: chrono::Duration,
) -> Result<(NewToken, DateTime<Utc>), RotateError> {
    let mut tx = pool.begin().await?;
    let old = sqlx::query!(
        r#"select t.client_id, c.kind, t.expires_at - t.created_at as "lifetime!"
             from auth_tokens t join auth_clients c on c.id = t.client_id
            where t.id = $1 and t.revoked_at is null and c.revoked_at is null
              and t.expires_at > now() and not t.single_use
            for update of t"#,
        id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| RotateError::NotFound(id.to_owned()))?;
    let kind = Kind::parse(&old.kind).ok_or_else(|| RotateError::NotFound(id.to_owned()))?;
    let now = Utc::now();
    let lifetime = chrono::Duration::microseconds(old.lifetime.microseconds)
        + chrono::Duration::days(i64::from(old.lifetime.days) + 30 * i64::from(old.lifetime.months));
    let token = add_token(&mut tx, old.client_id, kind, now + lifetime, false).await?;
    let old_ends = sqlx::query_scalar!(
        "update auth_tokens set expires_at = least(expires_at, $2) where id = $1 returning expires_at",
        id,
        now + grace,
    )
    .fetch_one(&mut *tx)
    .await?;
    announce(&mut *tx, &format!("token:{id}")).await?;
    AuditEntry::ok("token.rotated")
        .by(old.client_id, id)
        .detail(serde_json::json!({ "new_token_id": token.id, "old_token_ends": old_ends }))
        .insert(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((token, old_ends))
}

/// Tells every process to drop what it cached about `what` (see [`CHANNEL`]); delivered when the
/// caller's transaction commits.
pub async fn announce<'e>(executor: impl PgExecutor<'e>, what: &str) -> Result<(), sqlx::Error> {
    sqlx::query!("select pg_notify($1, $2)", CHANNEL, what)
        .execute(executor)
        .await?;
    Ok(())
}

/// A dashboard session as the cache holds it.
#[derive(Debug, Clone)]
pub struct LiveSession {
    /// The token it was signed in with.
    pub token_id: String,
    /// When it ends unless used before.
    pub idle_expires_at: DateTime<Utc>,
    /// When it ends whatever happens.
    pub expires_at: DateTime<Utc>,
}

/// Starts a session for `token_id`, stored as `id_sha256`.
pub async fn create_session(
    pool: &PgPool,
    id_sha256: &[u8; 32],
    token_id: &str,
    idle: chrono::Duration,
    absolute: chrono::Duration,
) -> Result<LiveSession, sqlx::Error> {
    let now = Utc::now();
    let session = LiveSession {
        token_id: token_id.to_owned(),
        idle_expires_at: now + idle.min(absolute),
        expires_at: now + absolute,
    };
    sqlx::query!(
        "insert into auth_sessions (id_sha256, token_id, idle_expires_at, expires_at)
         values ($1, $2, $3, $4)",
        &id_sha256[..],
        token_id,
        session.idle_expires_at,
        session.expires_at,
    )
    .execute(pool)
    .await?;
    Ok(session)
}

/// The session stored as `id_sha256`, if it has not ended.
pub async fn live_session(pool: &PgPool, id_sha256: &[u8; 32]) -> Result<Option<LiveSession>, sqlx::Error> {
    sqlx::query_as!(
        LiveSession,
        "select token_id, idle_expires_at, expires_at from auth_sessions
          where id_sha256 = $1 and ended_at is null
            and idle_expires_at > now() and expires_at > now()",
        &id_sha256[..]
    )
    .fetch_optional(pool)
    .await
}

/// Of the sessions `hashes`, the ones still live, with their idle expiry moved to `idle` from now
/// for those in `used`.
pub async fn refresh_sessions(
    pool: &PgPool,
    hashes: &[Vec<u8>],
    used: &[Vec<u8>],
    idle: chrono::Duration,
) -> Result<Vec<(Vec<u8>, DateTime<Utc>)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"update auth_sessions
              set idle_expires_at = case when id_sha256 = any($2)
                                         then least(expires_at, now() + $3::interval)
                                         else idle_expires_at end
            where id_sha256 = any($1) and ended_at is null
              and idle_expires_at > now() and expires_at > now()
        returning id_sha256, idle_expires_at"#,
        hashes,
        used,
        sqlx::postgres::types::PgInterval::try_from(idle).unwrap_or_default(),
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.id_sha256, row.idle_expires_at))
        .collect())
}

/// Ends the session stored as `id_sha256` (sign-out), in every process.
pub async fn end_session(pool: &PgPool, id_sha256: &[u8; 32]) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let ended = sqlx::query!(
        "update auth_sessions set ended_at = now() where id_sha256 = $1 and ended_at is null",
        &id_sha256[..]
    )
    .execute(&mut *tx)
    .await?;
    announce(&mut *tx, &format!("session:{}", hex::encode(id_sha256))).await?;
    tx.commit().await?;
    Ok(ended.rows_affected() == 1)
}

/// Deletes what no longer matters: audit rows older than `audit_retention`, sessions ended a day
/// ago, and sign-in links a day past their expiry. Returns the rows deleted.
pub async fn delete_expired(pool: &PgPool, audit_retention: chrono::Duration) -> Result<u64, sqlx::Error> {
    let audit = sqlx::query!(
        "delete from auth_audit where at < now() - $1::interval",
        sqlx::postgres::types::PgInterval::try_from(audit_retention).unwrap_or_default(),
    )
    .execute(pool)
    .await?
    .rows_affected();
    let sessions = sqlx::query!(
        "delete from auth_sessions
          where coalesce(ended_at, least(idle_expires_at, expires_at)) < now() - interval '1 day'"
    )
    .execute(pool)
    .await?
    .rows_affected();
    let links = sqlx::query!(
        "delete from auth_tokens t
          where t.single_use and t.expires_at < now() - interval '1 day'
            and not exists (select 1 from auth_sessions s where s.token_id = t.id)"
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(audit + sessions + links)
}

//! SQL access for dashboards and BI tools (Grafana, Metabase, notebooks): login roles that read the
//! views of the `plume_sql` schema and nothing else, each over every site or over a list of them.
//!
//! This module owns `plume_sql_acl.readers`, the list the views filter their rows by, and the roles
//! themselves. Everything runs as the schema's owner, which must also be allowed to create roles
//! (`CREATEROLE`, or a superuser). A reader's password is set as a SCRAM verifier made here
//! ([`scram`]), so the password never reaches the server.

pub mod scram;

use std::time::Duration;

use chrono::{DateTime, Utc};
use partitioning::quote_ident;
use rand::RngCore;
use serde::Serialize;
use sqlx::{Executor, PgPool};

/// The schema of views a reader may read.
pub const VIEWS_SCHEMA: &str = "plume_sql";

/// A name plume may give a reader role: 1 to 63 lowercase ASCII letters, digits and underscores,
/// not starting with a digit or with `pg_` (PostgreSQL's own), and none of the names PostgreSQL
/// reserves for roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleName(String);

impl RoleName {
    /// Accepts a name of the form above.
    pub fn parse(text: &str) -> Result<Self, String> {
        let valid = (1..=63).contains(&text.len())
            && text.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && text
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !text.starts_with("pg_")
            && !["public", "none", "current_user", "current_role", "session_user"].contains(&text);
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "{text:?} is not a role name plume makes: 1 to 63 of a-z, 0-9 and _, not starting with a digit or pg_"
            ))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What `plume sql-access grant` asks for.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The login role, made if missing.
    pub role: RoleName,
    /// The sites the role may see; `None` for every site, including later ones.
    pub sites: Option<Vec<i64>>,
    /// The password to set.
    pub password: NewPassword,
    /// Most connections the role may hold at once (so a dashboard cannot starve the service).
    pub connection_limit: u32,
    /// The role's default statement timeout.
    pub statement_timeout: Duration,
}

/// Which password a grant sets.
#[derive(Clone)]
pub enum NewPassword {
    /// A generated one for a new role; an existing role keeps its own.
    IfNew,
    /// A generated one, replacing the old.
    Generate,
    /// This one (from a file).
    Given(String),
}

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::IfNew => "IfNew",
            Self::Generate => "Generate",
            Self::Given(_) => "Given(..)",
        })
    }
}

/// What a grant did. Its `Debug` leaves the password out.
#[derive(Clone)]
pub struct Granted {
    /// The role did not exist before.
    pub created: bool,
    /// The password set, when plume generated it; shown once, stored nowhere.
    pub generated_password: Option<String>,
    /// The database the role may connect to.
    pub database: String,
}

impl std::fmt::Debug for Granted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Granted")
            .field("created", &self.created)
            .field(
                "generated_password",
                &self.generated_password.as_ref().map(|_| ".."),
            )
            .field("database", &self.database)
            .finish()
    }
}

/// A reader, as `plume sql-access list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Reader {
    /// The role's name.
    pub role: String,
    /// Its sites; `None` for every site.
    pub site_ids: Option<Vec<i64>>,
    /// When it was first granted.
    pub granted_at: DateTime<Utc>,
    /// When its grant last changed.
    pub updated_at: DateTime<Utc>,
    /// Whether the role still exists (one dropped outside plume can read nothing).
    pub role_exists: bool,
    /// Its connection limit (-1: none), when it exists.
    pub connection_limit: Option<i32>,
}

/// Why a grant or a revoke was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The name belongs to a role plume did not make a reader (the owner, the application role, a
    /// person's role): plume changes only its own readers.
    #[error(
        "a role named {0} exists and is not a reader made by `plume sql-access grant`; choose another --role"
    )]
    NotAReader(String),
    /// No reader has that name.
    #[error("no reader is named {0} (see `plume sql-access list`)")]
    NoSuchReader(String),
    /// Some of the sites do not exist.
    #[error("no site has the id {0:?}")]
    UnknownSites(Vec<i64>),
    /// The database failed or refused (e.g. the owner may not create roles).
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Creates `grant.role` (or updates plume's reader of that name): a login role with usage on
/// [`VIEWS_SCHEMA`], select on its views, connect on this database and nothing else, which sees
/// the rows of `grant.sites` only. Run as the owner. One transaction: all of it or nothing.
#[tracing::instrument(skip_all, fields(role = grant.role.as_str()))]
pub async fn grant(owner: &PgPool, grant: &Grant) -> Result<Granted, AccessError> {
    let name = grant.role.as_str();
    let mut tx = owner.begin().await?;
    // One grant at a time (a second waits, then sees the first's row); the views' readers, which
    // take the weakest lock, never wait.
    tx.execute("lock table plume_sql_acl.readers in share row exclusive mode")
        .await?;
    let state = sqlx::query!(
        r#"select exists (select from pg_roles where rolname = $1::text) as "role_exists!",
                  exists (select from plume_sql_acl.readers where role_name = $1::text) as "is_reader!",
                  current_database()::text as "database!""#,
        name
    )
    .fetch_one(&mut *tx)
    .await?;
    if state.role_exists && !state.is_reader {
        return Err(AccessError::NotAReader(name.to_owned()));
    }
    if let Some(sites) = &grant.sites {
        let unknown = sqlx::query_scalar!(
            r#"select coalesce(array_agg(id order by id), '{}') as "unknown!"
                 from unnest($1::bigint[]) as wanted (id)
                where not exists (select from sites s where s.id = wanted.id)"#,
            sites
        )
        .fetch_one(&mut *tx)
        .await?;
        if !unknown.is_empty() {
            return Err(AccessError::UnknownSites(unknown));
        }
    }

    let generated_password = match grant.password {
        NewPassword::IfNew if state.role_exists => None,
        NewPassword::IfNew | NewPassword::Generate => Some(new_password()),
        NewPassword::Given(_) => None,
    };
    let password = match &grant.password {
        NewPassword::Given(password) => Some(password),
        _ => generated_password.as_ref(),
    };
    // Utility statements take no parameters: the name is checked and quoted, and the password
    // goes as a verifier of base64 and `$:` only.
    let password_clause = password
        .map(|password| format!(" password '{}'", scram::verifier(password)))
        .unwrap_or_default();
    let role = quote_ident(name);
    let database = quote_ident(&state.database);
    let limit = grant.connection_limit;
    let timeout_ms = grant.statement_timeout.as_millis().max(1);
    let mut statements = vec![if state.role_exists {
        format!("alter role {role} login connection limit {limit}{password_clause}")
    } else {
        format!(
            "create role {role} login nosuperuser nocreatedb nocreaterole noinherit noreplication \
             nobypassrls connection limit {limit}{password_clause}"
        )
    }];
    statements.extend([
        format!("grant connect on database {database} to {role}"),
        format!("grant usage on schema {VIEWS_SCHEMA} to {role}"),
        // Exactly select: whatever else was granted on the views before goes.
        format!("revoke all on all tables in schema {VIEWS_SCHEMA} from {role}"),
        format!("grant select on all tables in schema {VIEWS_SCHEMA} to {role}"),
        // Session defaults in this database: the views by their bare names, UTC times, nothing
        // written by mistake, no query running for ever. Defaults only: the role may change them
        // for its session, which gives it nothing the grants do not.
        format!("alter role {role} in database {database} set search_path = {VIEWS_SCHEMA}"),
        format!("alter role {role} in database {database} set timezone = 'UTC'"),
        format!("alter role {role} in database {database} set default_transaction_read_only = on"),
        format!("alter role {role} in database {database} set statement_timeout = '{timeout_ms}ms'"),
    ]);
    for statement in &statements {
        tx.execute(statement.as_str()).await?;
    }
    let sites: Option<&[i64]> = grant.sites.as_deref();
    sqlx::query!(
        "insert into plume_sql_acl.readers (role_name, site_ids) values ($1::text, $2)
         on conflict (role_name) do update set site_ids = excluded.site_ids, updated_at = now()",
        name,
        sites
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(created = !state.role_exists, "granted SQL access");
    Ok(Granted {
        created: !state.role_exists,
        generated_password,
        database: state.database,
    })
}

/// Removes plume's reader `role`: its row (so the views show it nothing from the commit on), its
/// privileges here and the role itself; then ends its open sessions where the owner may.
/// Returns how many sessions were ended.
#[tracing::instrument(skip_all, fields(role = role.as_str()))]
pub async fn revoke(owner: &PgPool, role: &RoleName) -> Result<u64, AccessError> {
    let name = role.as_str();
    let mut tx = owner.begin().await?;
    let removed = sqlx::query!(
        "delete from plume_sql_acl.readers where role_name = $1::text",
        name
    )
    .execute(&mut *tx)
    .await?;
    if removed.rows_affected() == 0 {
        return Err(AccessError::NoSuchReader(name.to_owned()));
    }
    let state = sqlx::query!(
        r#"select exists (select from pg_roles where rolname = $1::text) as "role_exists!",
                  current_database()::text as "database!",
                  array(select pid from pg_stat_activity where usename = $1::text) as "sessions!""#,
        name
    )
    .fetch_one(&mut *tx)
    .await?;
    if state.role_exists {
        let quoted = quote_ident(name);
        let database = quote_ident(&state.database);
        for statement in [
            format!("revoke all on all tables in schema {VIEWS_SCHEMA} from {quoted}"),
            format!("revoke all on schema {VIEWS_SCHEMA} from {quoted}"),
            format!("revoke all on database {database} from {quoted}"),
            format!("alter role {quoted} in database {database} reset all"),
            // Fails, undoing all of this, if the role holds privileges in another database.
            format!("drop role {quoted}"),
        ] {
            tx.execute(statement.as_str()).await?;
        }
    }
    tx.commit().await?;
    let mut ended = 0;
    for pid in state.sessions {
        // Needs a superuser or pg_signal_backend; without, the sessions stay open but can read
        // nothing, having no privileges left.
        if let Ok(true) = sqlx::query_scalar::<_, bool>("select pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(owner)
            .await
        {
            ended += 1;
        }
    }
    tracing::info!(sessions_ended = ended, "revoked SQL access");
    Ok(ended)
}

/// Every reader, by name.
#[tracing::instrument(skip_all)]
pub async fn list(owner: &PgPool) -> Result<Vec<Reader>, sqlx::Error> {
    sqlx::query_as!(
        Reader,
        r#"select r.role_name::text as "role!", r.site_ids, r.granted_at, r.updated_at,
                  (a.oid is not null) as "role_exists!", a.rolconnlimit as "connection_limit?"
             from plume_sql_acl.readers r
             left join pg_roles a on a.rolname = r.role_name
            order by r.role_name"#
    )
    .fetch_all(owner)
    .await
}

/// A new password: 24 random bytes as 32 URL-safe characters (fit for a URL as they are).
fn new_password() -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let mut bytes = [0_u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A password from a file is usable as it is: 16 to 128 printable ASCII characters, no spaces
/// (so that SCRAM's normalisation leaves it unchanged and a client sends what plume hashed).
pub fn check_password(password: &str) -> Result<(), String> {
    if !(16..=128).contains(&password.len()) {
        return Err("the password must be 16 to 128 characters".into());
    }
    if !password.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the password must be printable ASCII without spaces".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_plain_lowercase_identifiers() {
        assert!(RoleName::parse("grafana").is_ok());
        assert!(RoleName::parse("_metabase_2").is_ok());
        for refused in [
            "",
            "public",
            "Grafana",
            "2fast",
            "pg_reader",
            "a-b",
            "a b",
            "x\"y",
            &"a".repeat(64),
        ] {
            assert!(RoleName::parse(refused).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn generated_passwords_pass_the_file_rule() {
        let password = new_password();
        assert_eq!(password.len(), 32);
        assert_eq!(check_password(&password), Ok(()));
        assert!(check_password("short").is_err());
        assert!(check_password("sixteen chars with spaces").is_err());
    }
}

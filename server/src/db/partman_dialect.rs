//! The first two migrations in pg_partman 5's words, for fresh databases whose pg_partman is 5 or
//! later.
//!
//! `V1__foundation.sql` and `V2__outbox.sql` register their tables with pg_partman 4's arguments
//! (`p_type => 'native'`, `p_interval => 'monthly'` / `'daily'`), which pg_partman 5 refuses. Those
//! files never change: every existing database ran them as written, and refinery refuses to go on
//! when an applied migration's checksum differs from the file's. So, before refinery runs, plume
//! applies them itself on a database that has not got them yet and whose pg_partman is 5 or later,
//! with only those arguments translated (`'range'`, `'1 month'` / `'1 day'`: the same partition
//! sets), each in one transaction together with its row in refinery's history, written as refinery
//! writes it (same name, same checksum). refinery then sees them applied and goes on from V3. On
//! pg_partman 4 and on every database that already has them, this does nothing.

use refinery::Migration;
use sqlx::{Connection, Executor, PgConnection};

/// The words each migration needs changed for pg_partman 5: `(version, [(4.x text, 5.x text)])`.
/// Each 4.x text occurs exactly once in its migration.
const TRANSLATIONS: &[(u32, &[(&str, &str)])] = &[
    (
        1,
        &[
            ("p_type => 'native'", "p_type => 'range'"),
            ("p_interval => 'monthly'", "p_interval => '1 month'"),
        ],
    ),
    (
        2,
        &[
            ("p_type => 'native'", "p_type => 'range'"),
            ("p_interval => 'daily'", "p_interval => '1 day'"),
        ],
    ),
];

/// refinery's history table, as refinery creates it.
const HISTORY_TABLE: &str = "create table refinery_schema_history (
    version int4 primary key,
    name varchar(255),
    applied_on varchar(255),
    checksum varchar(255))";

/// Serialises plume processes translating at the same time (`"plumeP5M"` as a big-endian integer).
const DIALECT_LOCK: i64 = 0x706c_756d_6550_354d;

/// Why the translated migrations could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum DialectError {
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A migration does not read as expected (never, while migrations stay as they landed).
    #[error("migration V{0} does not contain {1:?} exactly once")]
    Untranslatable(u32, &'static str),
}

/// The major version of the pg_partman this database has, or would get from `create extension`;
/// `None` when the server has no pg_partman at all.
pub async fn partman_major(connection: &mut PgConnection) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar(
        "select split_part(coalesce(installed_version, default_version), '.', 1)::int
           from pg_available_extensions where name = 'pg_partman'",
    )
    .fetch_optional(connection)
    .await
}

/// `sql` with each of `words` translated; fails unless each occurs exactly once.
pub fn translate(version: u32, sql: &str, words: &[(&'static str, &str)]) -> Result<String, DialectError> {
    let mut translated = sql.to_owned();
    for (from, to) in words {
        if translated.matches(from).count() != 1 {
            return Err(DialectError::Untranslatable(version, from));
        }
        translated = translated.replacen(from, to, 1);
    }
    Ok(translated)
}

/// Applies the migrations of [`TRANSLATIONS`] not yet in refinery's history, translated, when the
/// database's pg_partman is 5 or later; returns the names of those applied (`V1__foundation`).
#[tracing::instrument(skip_all)]
pub async fn apply(
    connection: &mut PgConnection,
    migrations: &[Migration],
) -> Result<Vec<String>, DialectError> {
    if partman_major(connection).await?.is_none_or(|major| major < 5) {
        return Ok(Vec::new());
    }
    let mut applied = Vec::new();
    for (version, words) in TRANSLATIONS {
        let Some(migration) = migrations.iter().find(|m| m.version() == *version) else {
            continue;
        };
        let sql = translate(*version, migration.sql().unwrap_or_default(), words)?;
        let mut tx = connection.begin().await?;
        sqlx::query("select pg_advisory_xact_lock($1)")
            .bind(DIALECT_LOCK)
            .execute(&mut *tx)
            .await?;
        let has_history: bool =
            sqlx::query_scalar("select to_regclass('refinery_schema_history') is not null")
                .fetch_one(&mut *tx)
                .await?;
        let done = has_history
            && sqlx::query_scalar::<_, bool>(
                "select exists (select 1 from refinery_schema_history where version = $1)",
            )
            .bind(*version as i32)
            .fetch_one(&mut *tx)
            .await?;
        if done {
            continue;
        }
        if !has_history {
            tx.execute(HISTORY_TABLE).await?;
        }
        tx.execute(sqlx::raw_sql(&sql)).await?;
        let applied_on = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        sqlx::query(
            "insert into refinery_schema_history (version, name, applied_on, checksum) values ($1, $2, $3, $4)",
        )
        .bind(*version as i32)
        .bind(migration.name())
        .bind(applied_on)
        .bind(migration.checksum().to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::debug!(migration = %migration, "applied in pg_partman 5's words");
        applied.push(migration.to_string());
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_translation_finds_its_words_once_in_the_embedded_migrations() {
        let migrations = crate::db::migrate::migrations();
        for (version, words) in TRANSLATIONS {
            let migration = migrations.iter().find(|m| m.version() == *version).unwrap();
            let translated = translate(*version, migration.sql().unwrap(), words).unwrap();
            assert!(!translated.contains("'native'"), "V{version}: {translated}");
            for (_, to) in words.iter() {
                assert!(translated.contains(to));
            }
        }
    }

    #[test]
    fn a_migration_without_the_words_is_refused() {
        let refused = translate(9, "select 1", &[("p_type => 'native'", "p_type => 'range'")]);
        assert!(matches!(refused, Err(DialectError::Untranslatable(9, _))));
    }
}

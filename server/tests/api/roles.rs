//! Least privilege: the application role reads and writes rows and can change no schema; `plume
//! migrate --grant-app-role` makes such a role; `plume serve` runs on one with an owner beside it.
//! (Every other test's server runs as the application role too: see the harness.)

use plume::db;
use sqlx::{Executor, PgPool};

use crate::helpers::*;

/// The SQLSTATE of `statement` run on `pool`, or `None` when it succeeds.
async fn refusal(pool: &PgPool, statement: &str) -> Option<String> {
    match pool.execute(statement).await {
        Ok(_) => None,
        Err(sqlx::Error::Database(error)) => error.code().map(|c| c.into_owned()),
        Err(other) => panic!("{statement}: {other}"),
    }
}

/// A partition of `measurements`, named from the catalog.
async fn a_partition(pool: &PgPool) -> String {
    sqlx::query_scalar(
        "select inhrelid::regclass::text from pg_inherits
          where inhparent = 'measurements'::regclass order by 1 limit 1",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// What the application role must not do, each refused with `insufficient_privilege` (42501).
async fn assert_no_ddl(app: &PgPool, partition: &str) {
    let denied = Some("42501".to_string());
    for statement in [
        "create table intruder (id int)".to_string(),
        format!("drop table {partition}"),
        format!("alter table measurements detach partition {partition}"),
        "alter table sites add column intruder int".to_string(),
        "truncate sites".to_string(),
        "select partman.run_maintenance()".to_string(),
        "delete from refinery_schema_history".to_string(),
    ] {
        assert_eq!(refusal(app, &statement).await, denied, "{statement}");
    }
}

#[tokio::test]
async fn the_application_role_reads_and_writes_rows_and_changes_no_schema() {
    let app = spawn_app().await;
    let site = app.create_site("Least privilege", "1000").await;
    let response = app
        .ingest("k1", &batch(site, &[("s1", &hours_ago(1), "2.5")]))
        .await;
    assert_eq!(response.status(), 201, "ingestion works as the application role");

    let role: String = sqlx::query_scalar("select current_user::text")
        .fetch_one(&app.app_pool)
        .await
        .unwrap();
    assert_ne!(role, "postgres", "the server runs as the application role");
    let partition = a_partition(&app.pool).await;
    assert_no_ddl(&app.app_pool, &partition).await;
    // The partition is still there, whole.
    let rows: i64 = sqlx::query_scalar("select count(*) from measurements")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn migrate_grants_a_new_role_exactly_the_rows() {
    let owner_url = fresh_database().await;
    let owner = db::connect_plain(&owner_url).await.unwrap();
    let role = format!("granted_{}", uuid::Uuid::new_v4().simple());
    owner
        .execute(format!("create role {role} login password 'granted-role-password'").as_str())
        .await
        .unwrap();

    let output = run_plume(&["migrate", "--grant-app-role", &role], &owner_url);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains(&role));

    let (_, rest) = owner_url.split_once('@').unwrap();
    let role_url = format!("postgres://{role}:granted-role-password@{rest}");
    let granted = db::connect(&role_url, &Default::default()).await.unwrap();
    assert_eq!(
        refusal(
            &granted,
            "insert into sites (name, emission_limit_mg) values ('granted', 1)"
        )
        .await,
        None
    );
    assert_no_ddl(&granted, &a_partition(&owner).await).await;

    // The service runs on it, with the owner for migrations and maintenance.
    let output = run_plume(
        &["partitions", "status", "--owner-database-url", &owner_url],
        &role_url,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    granted.close().await;
    owner.close().await;
}

/// The embedded default splits the roles itself: its superuser owns the schema, and the service
/// runs as `plume_app`, whose password is kept beside the superuser's. A data directory made when
/// the cluster trusted every local connection is secured on its next start.
#[tokio::test]
async fn the_embedded_cluster_serves_as_its_application_role_and_secures_an_old_trusting_one() {
    use plume::db::embedded::{APP_PASSWORD_FILE, PASSWORD_FILE};
    use plume::db::{Database, DatabaseSource};
    use std::os::unix::fs::PermissionsExt;

    let dir = std::env::temp_dir().join(format!("plume-roles-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = DatabaseSource::Embedded(dir.clone());
    let current_user = |pool: PgPool| async move {
        sqlx::query_scalar::<_, String>("select current_user::text")
            .fetch_one(&pool)
            .await
            .unwrap()
    };

    let database = Database::open(&source, &Default::default()).await.unwrap();
    assert_eq!(current_user(database.pool.clone()).await, "plume_app");
    assert_eq!(current_user(database.owner.clone()).await, "postgres");
    let partition = a_partition(&database.owner).await;
    assert_no_ddl(&database.pool, &partition).await;
    let mode = std::fs::metadata(dir.join(APP_PASSWORD_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    database.close().await;

    // As a data directory from before passwords: every line trusts, and there is no password file.
    let hba_path = dir.join("pgdata/pg_hba.conf");
    let hba = std::fs::read_to_string(&hba_path).unwrap();
    std::fs::write(&hba_path, hba.replace("scram-sha-256", "trust")).unwrap();
    std::fs::remove_file(dir.join(PASSWORD_FILE)).unwrap();

    let database = Database::open(&source, &Default::default()).await.unwrap();
    assert!(dir.join(PASSWORD_FILE).exists(), "a new superuser password");
    let hba = std::fs::read_to_string(&hba_path).unwrap();
    assert!(
        !hba.lines()
            .any(|l| !l.starts_with('#') && l.split_whitespace().last() == Some("trust")),
        "no line trusts any more:\n{hba}"
    );
    let port = database.owner.connect_options().get_port();
    let stranger = sqlx::PgPool::connect(&format!("postgres://postgres@127.0.0.1:{port}/postgres")).await;
    assert!(stranger.is_err(), "no password, no connection");
    assert_eq!(current_user(database.pool.clone()).await, "plume_app");
    database.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

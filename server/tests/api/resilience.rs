//! The database going away mid-batch, and clients going away mid-request.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use sqlx::{Connection, Executor};

use crate::helpers::*;

/// Waits until a plume backend is blocked on a lock, and returns its pid.
async fn blocked_backend(app: &TestApp) -> i32 {
    for _ in 0..200 {
        let pid: Option<i32> = sqlx::query_scalar(
            "select pid from pg_stat_activity
              where application_name = 'plume' and wait_event_type = 'Lock' and datname = current_database()",
        )
        .fetch_optional(&app.pool)
        .await
        .unwrap();
        if let Some(pid) = pid {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no plume backend became blocked");
}

#[tokio::test]
async fn a_connection_killed_mid_batch_is_503_and_the_retry_counts_once() {
    let app = spawn_app().await;
    let id = app.create_site("Flaky", "100").await;
    let body = json!({"site_id": id, "readings": readings("a", &hours_ago(2), 100, "0.25")});

    // Hold the site's lock so the batch stops inside its transaction, then kill its connection.
    let mut holding = app.hold_site_lock(id).await;
    let request = {
        let client = app.client.clone();
        let url = format!("{}/v1/ingest", app.address);
        let body = body.clone();
        tokio::spawn(async move {
            status_and_body(
                client
                    .post(url)
                    .header("Idempotency-Key", "flaky-1")
                    .json(&body)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        })
    };
    let pid = blocked_backend(&app).await;
    sqlx::query("select pg_terminate_backend($1)")
        .bind(pid)
        .execute(&app.pool)
        .await
        .unwrap();
    let (status, response) = request.await.unwrap();
    holding.execute("rollback").await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{response}");
    assert_eq!(response["error"]["code"], "UNAVAILABLE");
    assert_eq!(app.assert_totals_match_rows(id).await, (0, 0));

    // The sensor retries with the same key: stored once, counted once.
    let (status, receipt) = status_and_body(app.ingest("flaky-1", &body).await).await;
    assert_eq!(status, StatusCode::CREATED, "{receipt}");
    assert_eq!(receipt["data"]["readings_accepted"], 100);
    let (status, _) = status_and_body(app.ingest("flaky-1", &body).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.assert_totals_match_rows(id).await, (25_000_000, 100));
}

#[tokio::test]
async fn a_client_hanging_up_mid_request_leaves_a_complete_batch_or_none() {
    let app = spawn_app().await;
    let id = app.create_site("Impatient", "100").await;
    let body = json!({"site_id": id, "readings": readings("a", &hours_ago(2), 100, "0.5")});

    let mut holding = app.hold_site_lock(id).await;
    // The client gives up while the batch waits inside its transaction.
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", app.admin_token).parse().unwrap(),
    );
    let impatient = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let gave_up = impatient
        .post(format!("{}/v1/ingest", app.address))
        .header("Idempotency-Key", "hangup-1")
        .json(&body)
        .send()
        .await;
    assert!(gave_up.is_err());
    blocked_backend(&app).await;
    holding.execute("rollback").await.unwrap();

    // The batch still completes on its own (it runs apart from the request)...
    let mut committed = false;
    for _ in 0..200 {
        let claimed: i64 =
            sqlx::query_scalar("select count(*) from ingest_batches where idempotency_key = 'hangup-1'")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        if claimed == 1 {
            committed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(committed, "the abandoned batch was not stored");
    // ...so the sensor's first retry is a replay.
    let (status, replay) = status_and_body(app.ingest("hangup-1", &body).await).await;
    assert_eq!(status, StatusCode::OK, "{replay}");
    assert_eq!(app.assert_totals_match_rows(id).await, (50_000_000, 100));
    // And the pool is healthy afterwards.
    let (status, _) = status_and_body(
        app.ingest("hangup-2", &batch(id, &[("b", &hours_ago(1), "1")]))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn an_unreachable_database_is_503() {
    // A service whose database server is not there at all (nothing listens on the port).
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy(&format!("postgres://postgres@127.0.0.1:{closed_port}/plume"))
        .unwrap();
    let database_url = fresh_database().await;
    let app = spawn_app_on(&database_url, unreachable, Default::default()).await;
    let (status, body) = status_and_body(
        app.ingest("gone-1", &batch(1, &[("a", &hours_ago(1), "1")]))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "UNAVAILABLE");
    for path in ["/v1/sites/1", "/v1/sites", "/ready"] {
        let (status, body) = status_and_body(app.get(path).await).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(body["error"]["code"], "UNAVAILABLE", "{path}");
    }
    let (status, _) = status_and_body(app.get("/health").await).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_closed_pool_is_503() {
    let app = spawn_app().await;
    let id = app.create_site("Gone", "100").await;
    app.app_pool.close().await;
    let (status, body) = status_and_body(
        app.ingest("gone-1", &batch(id, &[("a", &hours_ago(1), "1")]))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "UNAVAILABLE");
}

#[tokio::test]
async fn the_service_recovers_when_its_connections_are_killed() {
    let app = spawn_app().await;
    let id = app.create_site("Restarted", "100").await;
    assert_eq!(
        app.ingest("before", &batch(id, &[("a", &hours_ago(2), "1")]))
            .await
            .status(),
        StatusCode::CREATED
    );
    // As after a database restart: every connection the service holds is gone.
    let killed: i64 = sqlx::query_scalar(
        "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity
          where application_name = 'plume' and datname = current_database()) t",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(killed >= 1);
    let (status, body) = status_and_body(
        app.ingest("after", &batch(id, &[("a", &hours_ago(1), "2")]))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(app.assert_totals_match_rows(id).await, (3_000_000, 2));
}

#[tokio::test]
async fn a_command_finds_the_embedded_cluster_another_process_already_runs() {
    let (data_dir, port) = crate::helpers::test_cluster();
    let bin_dir = plume::db::installation::default_bin_dir();
    assert_eq!(plume::db::embedded::running_port(&data_dir, &bin_dir), Some(port));
    let elsewhere = tempfile::tempdir().unwrap();
    assert_eq!(
        plume::db::embedded::running_port(elsewhere.path(), &bin_dir),
        None
    );
}

#[tokio::test]
async fn the_embedded_cluster_refuses_whoever_lacks_its_password() {
    use std::os::unix::fs::PermissionsExt;
    let (data_dir, port) = crate::helpers::test_cluster();
    let password_file = data_dir.join(plume::db::embedded::PASSWORD_FILE);
    let mode = std::fs::metadata(&password_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "readable by plume's user only");
    let stranger =
        sqlx::PgConnection::connect(&format!("postgres://postgres@127.0.0.1:{port}/postgres")).await;
    assert!(stranger.is_err(), "no password, no connection");
    let guesser =
        sqlx::PgConnection::connect(&format!("postgres://postgres:guess@127.0.0.1:{port}/postgres")).await;
    assert!(guesser.is_err());
    let url = plume::db::embedded::url_on(&data_dir, port, "postgres");
    let mut plume = sqlx::PgConnection::connect(&url).await.unwrap();
    let one: i32 = sqlx::query_scalar("select 1")
        .fetch_one(&mut plume)
        .await
        .unwrap();
    assert_eq!(one, 1);
}

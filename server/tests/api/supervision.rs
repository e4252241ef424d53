//! The embedded cluster is supervised: when its server dies, plume answers 503 while it starts it
//! again, and then serves again by itself with nothing acknowledged lost.

use std::time::{Duration, Instant};

use plume::db::embedded;
use plume::db::{Database, DatabaseSource, PoolSettings};
use plume::state::Settings;
use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn a_killed_embedded_server_is_started_again_and_nothing_acknowledged_is_lost() {
    let dir = std::env::temp_dir().join(format!("plume-supervised-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    // Requests give up on a connection after half a second: shorter than the supervisor's first
    // backoff, so a request while the server is down is answered 503 rather than held until it is up.
    let settings = PoolSettings {
        acquire_timeout: Duration::from_millis(500),
        ..PoolSettings::default()
    };
    let database = Database::open(&DatabaseSource::Embedded(dir.clone()), &settings)
        .await
        .unwrap();
    let port = database.owner.connect_options().get_port();
    let owner_url = embedded::url_on(&dir, port, plume::db::EMBEDDED_DATABASE);
    let app = spawn_app_on(&owner_url, database.pool.clone(), Settings::default()).await;
    let id = app.create_site("Supervised", "1000").await;
    let first = app
        .ingest("before", &batch(id, &[("s", &hours_ago(2), "1")]))
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);

    let pid_file = std::fs::read_to_string(dir.join("pgdata/postmaster.pid")).unwrap();
    let pid = pid_file.lines().next().unwrap().trim().to_owned();
    let kill = |signal: &str| {
        std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
    };
    assert!(kill("-9").success());
    let died = Instant::now();
    while kill("-0").success() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // While it is down (the supervisor waits a second before starting it again): 503, retryable,
    // and nothing half-stored.
    let during = app
        .ingest("during", &batch(id, &[("s", &hours_ago(1), "2")]))
        .await;
    assert_eq!(during.status(), StatusCode::SERVICE_UNAVAILABLE);
    // `/ready` says so too (it caches its answer for a second).
    let not_ready = loop {
        match app.get("/ready").await.status() {
            StatusCode::SERVICE_UNAVAILABLE => break true,
            _ if died.elapsed() > Duration::from_millis(1500) => break false,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert!(not_ready, "/ready said not ready while the server was down");

    // The same batch, retried under its key until it is stored.
    let recovered = loop {
        let response = app
            .ingest("during", &batch(id, &[("s", &hours_ago(1), "2")]))
            .await;
        match response.status() {
            StatusCode::CREATED => break died.elapsed(),
            StatusCode::SERVICE_UNAVAILABLE if died.elapsed() < Duration::from_secs(60) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            other => panic!("{other}: {}", response.text().await.unwrap()),
        }
    };
    eprintln!("serving again {recovered:?} after the kill");
    let pid_file = std::fs::read_to_string(dir.join("pgdata/postmaster.pid")).unwrap();
    assert_ne!(pid_file.lines().next().unwrap().trim(), pid, "a new server");
    // Ready again, once its cached answer from the outage has expired.
    let mut ready = app.get("/ready").await.status();
    for _ in 0..30 {
        if ready == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        ready = app.get("/ready").await.status();
    }
    assert_eq!(ready, StatusCode::OK);
    assert_eq!(app.assert_totals_match_rows(id).await, (3_000_000, 2));
    drop(app);
    database.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

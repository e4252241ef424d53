//! Long polls: `/v2/changes` and `/v2/sites/{id}/metrics?version&wait`, within one process and
//! across two; a transaction that commits late; timeouts, the waiter cap, shutdown, and a listener
//! that loses its connection.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use plume::db::{self, PoolSettings};
use plume::state::Settings;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::{Connection, Executor};

use crate::helpers::{batch, hours_ago, spawn_app, spawn_app_on, spawn_app_with, status_and_body, TestApp};

/// Changes `site` in `connection`'s transaction (outside plume: a writer the test controls) as a
/// plume process would on the app's database: on Citus, with the change feed's copy of the site.
async fn change_site(app: &TestApp, connection: &mut sqlx::PgConnection, site: i64) {
    sqlx::query("update sites set version = version + 1, reading_count = reading_count where id = $1")
        .bind(site)
        .execute(&mut *connection)
        .await
        .unwrap();
    if app.state.settings.topology == plume::db::citus::Topology::Citus {
        sqlx::query(
            "insert into site_feed (id, name, emission_limit_mg, total_emissions_mg, reading_count,
                                    first_reading_at, last_reading_at, version, created_at)
             select id, name, emission_limit_mg, total_emissions_mg, reading_count,
                    first_reading_at, last_reading_at, version, created_at
               from sites where id = $1
             on conflict (id) do update set version = excluded.version, change_xid = pg_current_xact_id()",
        )
        .bind(site)
        .execute(&mut *connection)
        .await
        .unwrap();
    }
}

/// `GET /v2/changes` with `cursor` (if any) and `wait`: the changed sites and the next cursor.
async fn changes(app: &TestApp, cursor: Option<&str>, wait: f64) -> (Vec<Value>, String) {
    let path = match cursor {
        Some(cursor) => format!("/v2/changes?cursor={cursor}&wait={wait}"),
        None => format!("/v2/changes?wait={wait}"),
    };
    let (status, body) = status_and_body(app.get(&path).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let cursor = body["meta"]["cursor"].as_str().unwrap().to_owned();
    (body["data"].as_array().unwrap().clone(), cursor)
}

/// Sends `GET path` in the background (a waiting long poll); the task ends with its JSON body.
fn in_background(app: &TestApp, path: String) -> tokio::task::JoinHandle<Value> {
    let (client, url) = (app.client.clone(), format!("{}{path}", app.address));
    tokio::spawn(async move { client.get(url).send().await.unwrap().json().await.unwrap() })
}

/// The `path` of each problem an error envelope names.
fn problem_paths(body: &Value) -> Vec<&str> {
    let details = body["error"]["details"].as_array().unwrap();
    details.iter().map(|d| d["path"].as_str().unwrap()).collect()
}

fn ids(sites: &[Value]) -> Vec<i64> {
    sites
        .iter()
        .map(|site| site["site_id"].as_i64().unwrap())
        .collect()
}

async fn ingest_one(app: &TestApp, site: i64, key: &str, minutes_ago: i64) {
    let at = (chrono::Utc::now() - chrono::Duration::minutes(minutes_ago))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let response = app.ingest(key, &batch(site, &[("s1", &at, "1.5")])).await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

/// Until the change listener has connected, a waiter could miss a notification sent meanwhile (it
/// would still see the change at its timeout): tests that time a wake-up wait for it first.
async fn listening(app: &TestApp) {
    for _ in 0..200 {
        if app.metric("plume_changes_heads_read_total").await >= 1.0
            && app.metric("plume_changes_listener_connects_total").await >= 1.0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the change listener did not connect");
}

#[tokio::test]
async fn without_a_cursor_every_site_then_only_what_changed() {
    let app = spawn_app().await;
    let first = app.create_site("Changes A", "100").await;
    let second = app.create_site("Changes B", "100").await;

    let (all, cursor) = changes(&app, None, 0.0).await;
    assert_eq!(ids(&all), vec![first, second]);
    assert_eq!(all[0]["compliance_status"], "Within Limit");
    let (none, same) = changes(&app, Some(&cursor), 0.0).await;
    assert!(none.is_empty());
    assert_eq!(same, cursor, "nothing changed: the same cursor");

    ingest_one(&app, second, "changes-1", 5).await;
    let (changed, next) = changes(&app, Some(&cursor), 0.0).await;
    assert_eq!(ids(&changed), vec![second]);
    assert_eq!(changed[0]["total_emissions_to_date"], "1.500000");
    assert_eq!(changed[0]["reading_count"], 1);
    assert_ne!(next, cursor);
    let (none, _) = changes(&app, Some(&next), 0.0).await;
    assert!(none.is_empty(), "a change is reported once");
}

#[tokio::test]
async fn a_waiting_request_answers_when_a_change_commits() {
    let app = spawn_app().await;
    let site = app.create_site("Waited on", "100").await;
    listening(&app).await;
    let (_, cursor) = changes(&app, None, 0.0).await;

    let started = Instant::now();
    let waiter = in_background(&app, format!("/v2/changes?cursor={cursor}&wait=30"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "nothing changed yet");
    ingest_one(&app, site, "waited-1", 3).await;
    let body = waiter.await.unwrap();
    assert_eq!(ids(body["data"].as_array().unwrap()), vec![site]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woken by the commit, not the timeout"
    );

    // Polling again with the cursor just given is answered from memory: no database read.
    let next = body["meta"]["cursor"].as_str().unwrap();
    let reads = app.metric("plume_changes_request_reads_total").await;
    let (none, same) = changes(&app, Some(next), 0.3).await;
    assert!(none.is_empty());
    assert_eq!(same, next);
    assert_eq!(app.metric("plume_changes_request_reads_total").await, reads);
}

/// The heart of "no change is skipped": a transaction that took its id first and commits last.
#[tokio::test]
async fn a_transaction_that_commits_late_is_not_skipped() {
    let app = spawn_app().await;
    let early = app.create_site("Starts first", "100").await;
    let late = app.create_site("Commits first", "100").await;
    let (_, cursor) = changes(&app, None, 0.0).await;

    // The early transaction changes its site and stays open.
    let mut open = sqlx::PgConnection::connect(&app.database_url).await.unwrap();
    open.execute("begin").await.unwrap();
    change_site(&app, &mut open, early).await;
    // A later transaction commits through the API.
    ingest_one(&app, late, "late-1", 4).await;
    let (changed, after_late) = changes(&app, Some(&cursor), 0.0).await;
    assert_eq!(
        ids(&changed),
        vec![late],
        "the open transaction's change is not visible yet"
    );

    // A long poll from that cursor is waiting when the early transaction commits (and, as another
    // plume process would after its commit, notifies).
    let waiter = in_background(&app, format!("/v2/changes?cursor={after_late}&wait=30"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    open.execute("commit").await.unwrap();
    sqlx::query("select pg_notify('plume_changes', '')")
        .execute(&app.pool)
        .await
        .unwrap();
    let body = waiter.await.unwrap();
    assert_eq!(
        ids(body["data"].as_array().unwrap()),
        vec![early],
        "committed after the cursor was issued"
    );

    // And read back without waiting, from the same cursor.
    let (changed, _) = changes(&app, Some(&after_late), 0.0).await;
    assert_eq!(ids(&changed), vec![early]);
}

#[tokio::test]
async fn a_wait_with_no_change_answers_empty_with_the_same_cursor() {
    let app = spawn_app().await;
    app.create_site("Quiet", "100").await;
    let (_, cursor) = changes(&app, None, 0.0).await;
    let started = Instant::now();
    let (none, same) = changes(&app, Some(&cursor), 1.0).await;
    let waited = started.elapsed();
    assert!(none.is_empty(), "{none:?}");
    assert_eq!(same, cursor);
    // Up to 10% jitter, never longer than asked (plus the request itself).
    assert!(waited >= Duration::from_millis(880), "{waited:?}");
}

#[tokio::test]
async fn waiters_are_released_at_once_on_shutdown() {
    let app = spawn_app().await;
    let site = app.create_site("Shut", "100").await;
    let (_, cursor) = changes(&app, None, 0.0).await;
    let waiters: Vec<_> = (0..3)
        .map(|i| {
            let client = app.client.clone();
            let url = match i {
                0 => format!("{}/v2/changes?cursor={cursor}&wait=60", app.address),
                _ => format!("{}/v2/sites/{site}/metrics?version=1&wait=60", app.address),
            };
            tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    app.shut_down();
    for waiter in waiters {
        let status = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("released at once")
            .unwrap();
        assert_eq!(status, StatusCode::OK);
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn waiters_beyond_the_maximum_are_refused_with_503() {
    let settings = Settings {
        max_waiters: 2,
        ..Settings::default()
    };
    let app = spawn_app_with(settings, PoolSettings::default()).await;
    let site = app.create_site("Capped", "100").await;
    let (_, cursor) = changes(&app, None, 0.0).await;
    let url = format!("{}/v2/changes?cursor={cursor}&wait=30", app.address);
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let (client, url) = (app.client.clone(), url.clone());
            tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert_eq!(app.metric("plume_changes_waiting").await, 2.0);
    let (status, body) =
        status_and_body(app.get(&format!("/v2/changes?cursor={cursor}&wait=30")).await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "UNAVAILABLE");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("2 requests are already waiting"));
    // Asking without waiting is still answered.
    let (status, _) = status_and_body(app.get(&format!("/v2/changes?cursor={cursor}")).await).await;
    assert_eq!(status, StatusCode::OK);

    ingest_one(&app, site, "capped-1", 2).await;
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(app.metric("plume_changes_waiting").await, 0.0);
    // Their places are free again.
    let (status, _) = status_and_body(app.get(&format!("/v2/changes?cursor={cursor}&wait=1")).await).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_answer_at_once_when_newer_else_when_the_site_changes() {
    let app = spawn_app().await;
    let site = app.create_site("Versioned", "100").await;
    let other = app.create_site("Other", "100").await;
    listening(&app).await;
    let version = app.metrics(site).await["version"].as_i64().unwrap();

    let (status, body) = status_and_body(
        app.get(&format!(
            "/v2/sites/{site}/metrics?version={}&wait=30",
            version - 1
        ))
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["version"], version, "newer than asked: at once");

    let waiter = in_background(
        &app,
        format!("/v2/sites/{site}/metrics?version={version}&wait=30"),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    ingest_one(&app, other, "versioned-other", 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "another site's change does not answer");
    ingest_one(&app, site, "versioned-1", 2).await;
    let body = waiter.await.unwrap();
    assert_eq!(body["data"]["version"], version + 1);
    assert_eq!(body["data"]["total_emissions_to_date"], "1.500000");

    let started = Instant::now();
    let (status, body) = status_and_body(
        app.get(&format!(
            "/v2/sites/{site}/metrics?version={}&wait=1",
            version + 1
        ))
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["data"]["version"],
        version + 1,
        "on timeout: the metrics as they are"
    );
    assert!(started.elapsed() >= Duration::from_millis(880));
}

#[tokio::test]
async fn bad_parameters_are_named_and_unknown_sites_are_404() {
    let app = spawn_app().await;
    let (status, body) = status_and_body(app.get("/v2/changes?cursor=nonsense&wait=-1").await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem_paths(&body), ["cursor", "wait"]);
    let (status, body) = status_and_body(app.get("/v2/sites/1/metrics?version=x&wait=soon").await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem_paths(&body), ["version", "wait"]);
    let (status, _) = status_and_body(app.get("/v2/sites/999/metrics?version=1&wait=5").await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A well-formed cursor naming transactions this database has not reached: another database's.
    let foreign = plume::changes::Snapshot::parse("4000000000:4000000000:")
        .unwrap()
        .to_cursor();
    let (status, body) = status_and_body(app.get(&format!("/v2/changes?cursor={foreign}")).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["details"][0]["path"], "cursor");
}

#[tokio::test]
async fn a_commit_through_one_process_wakes_waiters_on_another() {
    let one = spawn_app().await;
    let other_pool = db::connect(
        &crate::helpers::app_url(&one.database_url),
        &PoolSettings::default(),
    )
    .await
    .unwrap();
    let two = spawn_app_on(&one.database_url, other_pool, Settings::default()).await;
    let site = one.create_site("Shared", "100").await;
    listening(&two).await;
    let (_, cursor) = changes(&two, None, 0.0).await;
    let version = two.metrics(site).await["version"].as_i64().unwrap();

    let started = Instant::now();
    let feed = in_background(&two, format!("/v2/changes?cursor={cursor}&wait=30"));
    let metrics = in_background(
        &two,
        format!("/v2/sites/{site}/metrics?version={version}&wait=30"),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    ingest_one(&one, site, "shared-1", 2).await;
    assert_eq!(ids(feed.await.unwrap()["data"].as_array().unwrap()), vec![site]);
    assert_eq!(metrics.await.unwrap()["data"]["version"], version + 1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woken by the commit, not the timeout"
    );
}

/// Notifications sent while the listener is away are lost; the reconnect itself wakes every waiter,
/// which then finds the change.
#[tokio::test]
async fn after_the_listener_reconnects_every_waiter_looks_again() {
    let app = spawn_app().await;
    let site = app.create_site("Reconnected", "100").await;
    listening(&app).await;
    let (_, cursor) = changes(&app, None, 0.0).await;
    let waiter = in_background(&app, format!("/v2/changes?cursor={cursor}&wait=30"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A change that notifies nobody, then the listener's connection is cut.
    let mut writer = app.pool.acquire().await.unwrap();
    change_site(&app, &mut writer, site).await;
    drop(writer);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "no notification, no wake-up");
    sqlx::query(
        "select pg_terminate_backend(pid) from pg_stat_activity
          where datname = current_database() and application_name = 'plume-changes'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let body = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("woken by the reconnect")
        .unwrap();
    assert_eq!(ids(body["data"].as_array().unwrap()), vec![site]);
    assert!(app.metric("plume_changes_listener_connects_total").await >= 2.0);
}

/// Many writers on many sites while a client follows the feed: at the end, the client has seen
/// every site's last version, and nothing was reported twice for one change.
#[tokio::test]
async fn a_client_following_the_feed_under_concurrent_writers_misses_nothing() {
    let app = spawn_app().await;
    let mut sites = Vec::new();
    for i in 0..6 {
        sites.push(app.create_site(&format!("Busy {i}"), "100000").await);
    }
    let (_, mut cursor) = changes(&app, None, 0.0).await;
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let (client, address, sites) = (app.client.clone(), app.address.clone(), sites.clone());
            tokio::spawn(async move {
                for n in 0..15 {
                    let site = sites[(writer + n) % sites.len()];
                    let at = hours_ago(1 + (writer * 100 + n) as i64);
                    let body = batch(site, &[("s", &at, "0.5")]);
                    let response = client
                        .post(format!("{address}/v1/ingest"))
                        .header("Idempotency-Key", format!("busy-{writer}-{n}"))
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), StatusCode::CREATED);
                }
            })
        })
        .collect();
    let mut seen: HashMap<i64, i64> = HashMap::new();
    while !writers.iter().all(|writer| writer.is_finished()) {
        let (changed, next) = changes(&app, Some(&cursor), 0.2).await;
        follow(changed, &mut seen);
        cursor = next;
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let (changed, _) = changes(&app, Some(&cursor), 0.0).await;
    follow(changed, &mut seen);
    for site in sites {
        let stored: i64 = sqlx::query_scalar("select version from sites where id = $1")
            .bind(site)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(seen.get(&site), Some(&stored), "site {site}");
    }
}

/// Records each site's version; a site reported again must have a newer one.
fn follow(changed: Vec<Value>, seen: &mut HashMap<i64, i64>) {
    for site in changed {
        let version = site["version"].as_i64().unwrap();
        let id = site["site_id"].as_i64().unwrap();
        let before = seen.insert(id, version).unwrap_or(0);
        assert!(version > before, "site {id}: version {version} after {before}");
    }
}

/// The first answer comes in pages of at most `limit` sites (1,000 by default), each continued with
/// the first page's cursor: a change made while a client pages is reported by the poll after.
#[tokio::test]
async fn the_first_answer_comes_in_pages_and_misses_no_change_made_meanwhile() {
    let app = spawn_app().await;
    let mut sites = Vec::new();
    for n in 0..5 {
        sites.push(app.create_site(&format!("Paged {n}"), "100").await);
    }
    let page = |path: String| {
        let app = &app;
        async move {
            let (status, body) = status_and_body(app.get(&path).await).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body
        }
    };
    let first = page("/v2/changes?limit=2".into()).await;
    let cursor = first["meta"]["cursor"].as_str().unwrap().to_owned();
    assert_eq!(ids(first["data"].as_array().unwrap()), sites[..2]);
    let after = first["meta"]["next_after"].as_i64().unwrap();
    assert_eq!(after, sites[1]);

    // A site of the first page changes while the client reads the next ones.
    ingest_one(&app, sites[0], "while-paging", 5).await;

    let second = page(format!("/v2/changes?cursor={cursor}&after={after}&limit=2")).await;
    assert_eq!(ids(second["data"].as_array().unwrap()), sites[2..4]);
    assert_eq!(
        second["meta"]["cursor"],
        cursor.as_str(),
        "the first page's cursor"
    );
    let after = second["meta"]["next_after"].as_i64().unwrap();
    let last = page(format!("/v2/changes?cursor={cursor}&after={after}&limit=2")).await;
    assert_eq!(ids(last["data"].as_array().unwrap()), sites[4..]);
    assert!(last["meta"].get("next_after").is_none(), "the last page");

    let (changed, _) = changes(&app, Some(&cursor), 0.0).await;
    assert_eq!(ids(&changed), [sites[0]], "the change made while paging");
    assert_eq!(changed[0]["reading_count"], 1);

    for bad in ["limit=0", "limit=1001", "after=-1", "after=x"] {
        let (status, body) = status_and_body(app.get(&format!("/v2/changes?{bad}")).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
    }
}

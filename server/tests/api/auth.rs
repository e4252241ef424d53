//! Authorization beyond the route table: writes outside a client's scope store nothing and claim
//! nothing, idempotency keys cannot be squatted, revocation reaches every process within a second
//! (and within a sweep when its notification is lost), expiry and rotation, scope filtering of lists,
//! exports and the change feed, and per-client rate limits.

use std::time::{Duration, Instant};

use plume::auth::store::{self, NewClient};
use plume::auth::{token, Kind, Scope};
use plume::db::{self, PoolSettings};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    batch, client_with_token, hours_ago, mint, mint_client, spawn_app, spawn_app_on, status_and_body, TestApp,
};

fn ingest_client(name: &str, sites: Vec<i64>) -> NewClient {
    NewClient::new(name, Kind::Ingest, Scope::sites(sites))
}

async fn post_v1(client: &reqwest::Client, app: &TestApp, key: &str, body: &Value) -> (StatusCode, Value) {
    let response = client
        .post(format!("{}/v1/ingest", app.address))
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    status_and_body(response).await
}

async fn post_csv(client: &reqwest::Client, app: &TestApp, key: &str, csv: String) -> (StatusCode, Value) {
    let response = client
        .post(format!("{}/v2/ingest", app.address))
        .header("idempotency-key", key)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    status_and_body(response).await
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.pool).await.unwrap()
}

#[tokio::test]
async fn a_write_outside_the_scope_stores_nothing_and_claims_no_key() {
    let app = spawn_app().await;
    let a = app.create_site("A", "100").await;
    let b = app.create_site("B", "100").await;
    let sensor_a = client_with_token(&mint_client(&app.pool, &ingest_client("sensor-a", vec![a])).await);
    let sensor_b = client_with_token(&mint_client(&app.pool, &ingest_client("sensor-b", vec![b])).await);

    let into_b = batch(b, &[("s", &hours_ago(1), "5")]);
    let (status, body) = post_v1(&sensor_a, &app, "k-1", &into_b).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "FORBIDDEN");
    assert_eq!(count(&app, "select count(*) from measurements").await, 0);
    assert_eq!(count(&app, "select count(*) from ingest_batches").await, 0);
    assert_eq!(count(&app, "select count(*) from outbox_events").await, 0);

    // B's own sensor can still use that key on B: nobody squatted it.
    let (status, _) = post_v1(&sensor_b, &app, "k-1", &into_b).await;
    assert_eq!(status, StatusCode::CREATED);

    // A's stored batch replayed with B's token is refused, not answered with A's receipt.
    let into_a = batch(a, &[("s", &hours_ago(1), "7")]);
    assert_eq!(
        post_v1(&sensor_a, &app, "k-a", &into_a).await.0,
        StatusCode::CREATED
    );
    let (status, body) = post_v1(&sensor_b, &app, "k-a", &into_a).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["data"].is_null());
    app.assert_totals_match_rows(a).await;
    assert_eq!(app.metrics(a).await["total_emissions_to_date"], "7.000000");
}

#[tokio::test]
async fn a_bulk_request_touching_a_foreign_site_names_every_such_reading_and_stores_nothing() {
    let app = spawn_app().await;
    let a = app.create_site("A", "100").await;
    let b = app.create_site("B", "100").await;
    let sensor_a = client_with_token(&mint_client(&app.pool, &ingest_client("gateway-a", vec![a])).await);
    let t = hours_ago(3);
    let csv =
        format!("site_id,source_id,timestamp,value\n{a},s,{t},1\n{b},s,{t},1\n{a},t,{t},1\n{b},t,{t},1\n");
    let (status, body) = post_csv(&sensor_a, &app, "bulk-1", csv).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let paths: Vec<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["line 3.site_id", "line 5.site_id"]);
    assert_eq!(count(&app, "select count(*) from measurements").await, 0);
    assert_eq!(count(&app, "select count(*) from bulk_batches").await, 0);
}

#[tokio::test]
async fn bulk_keys_belong_to_their_client() {
    let app = spawn_app().await;
    let a = app.create_site("A", "100").await;
    let one = client_with_token(&mint_client(&app.pool, &ingest_client("gateway-1", vec![a])).await);
    let two = client_with_token(&mint_client(&app.pool, &ingest_client("gateway-2", vec![a])).await);
    let csv = |source: &str| {
        format!(
            "site_id,source_id,timestamp,value\n{a},{source},{},2\n",
            hours_ago(2)
        )
    };
    let (status, first) = post_csv(&one, &app, "shared-key", csv("one")).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, second) = post_csv(&two, &app, "shared-key", csv("two")).await;
    assert_eq!(status, StatusCode::CREATED, "both stored: {second}");
    // Each client's retry replays its own request.
    let (status, replay) = post_csv(&two, &app, "shared-key", csv("two")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replay["data"]["readings_accepted"], 1);
    assert_eq!(app.assert_totals_match_rows(a).await, (4_000_000, 2));
}

#[tokio::test]
async fn a_source_prefix_limits_what_a_sensor_may_write() {
    let app = spawn_app().await;
    let a = app.create_site("A", "100").await;
    let mut north = ingest_client("north", vec![a]);
    north.source_prefix = Some("north-".into());
    let north = client_with_token(&mint_client(&app.pool, &north).await);
    let forged = batch(
        a,
        &[("north-1", &hours_ago(1), "1"), ("south-1", &hours_ago(1), "1")],
    );
    let (status, body) = post_v1(&north, &app, "forge", &forged).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["details"][0]["path"], "readings.source_id");
    let csv = format!(
        "site_id,source_id,timestamp,value\n{a},south-2,{},1\n",
        hours_ago(2)
    );
    let (status, body) = post_csv(&north, &app, "forge-bulk", csv).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["details"][0]["path"], "line 2.source_id");
    let own = batch(a, &[("north-1", &hours_ago(1), "1")]);
    assert_eq!(post_v1(&north, &app, "own", &own).await.0, StatusCode::CREATED);
    assert_eq!(app.assert_totals_match_rows(a).await, (1_000_000, 1));
}

/// Polls `GET /v1/sites` with `client` until it is refused 401; how long that took.
async fn until_refused(client: &reqwest::Client, address: &str) -> Duration {
    let started = Instant::now();
    loop {
        let status = client
            .get(format!("{address}/v1/sites"))
            .send()
            .await
            .unwrap()
            .status();
        if status == StatusCode::UNAUTHORIZED {
            return started.elapsed();
        }
        assert_eq!(status, StatusCode::OK);
        assert!(started.elapsed() < Duration::from_secs(15), "never refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A long poll of the session `cookie` on `address`, waiting in the background (from the cursor of
/// a first poll); ends with its status and how long it waited.
async fn waiting_long_poll(address: &str, cookie: &str) -> tokio::task::JoinHandle<(StatusCode, Duration)> {
    let client = reqwest::Client::new();
    let first = client
        .get(format!("{address}/v2/changes"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let (_, first) = status_and_body(first).await;
    let url = format!(
        "{address}/v2/changes?cursor={}&wait=30",
        first["meta"]["cursor"].as_str().unwrap()
    );
    let cookie = cookie.to_owned();
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let response = client.get(url).header("cookie", cookie).send().await.unwrap();
        (response.status(), started.elapsed())
    });
    // Until it is surely waiting on the server.
    tokio::time::sleep(Duration::from_millis(300)).await;
    poll
}

async fn second_process(app: &TestApp) -> TestApp {
    let pool = db::connect(
        &crate::helpers::app_url(&app.database_url),
        &PoolSettings::default(),
    )
    .await
    .unwrap();
    spawn_app_on(&app.database_url, pool, Default::default()).await
}

#[tokio::test]
async fn a_revoked_token_is_refused_by_every_process_within_a_second_and_its_long_poll_ends() {
    let app = spawn_app().await;
    let other = second_process(&app).await;
    let token = mint(&app.pool, "viewer", Kind::Read, Scope::all()).await;
    let viewer = client_with_token(&token);
    for process in [&app, &other] {
        let status = viewer
            .get(format!("{}/v1/sites", process.address))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::OK, "cached in both processes");
    }
    // A dashboard session of the same token, waiting in a long poll on the other process.
    let signed_in = reqwest::Client::new()
        .post(format!("{}/v2/session", app.address))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), StatusCode::CREATED);
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let poll = waiting_long_poll(&other.address, &cookie).await;

    let id = token::parse(&token).unwrap().id;
    let revoked_at = Instant::now();
    store::revoke(&app.pool, &id).await.unwrap();
    let (first, second) = tokio::join!(
        until_refused(&viewer, &app.address),
        until_refused(&viewer, &other.address)
    );
    assert!(
        first < Duration::from_secs(1) && second < Duration::from_secs(1),
        "{first:?} {second:?}"
    );
    let (status, waited) = poll.await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        revoked_at.elapsed() < Duration::from_secs(2) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_revocation_whose_notification_is_lost_is_noticed_at_the_next_sweep() {
    let app = spawn_app().await;
    let token = mint(&app.pool, "viewer", Kind::Read, Scope::all()).await;
    let viewer = client_with_token(&token);
    assert_eq!(
        viewer
            .get(format!("{}/v1/sites", app.address))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // Revoked behind plume's back: no NOTIFY.
    sqlx::query("update auth_tokens set revoked_at = now() where id = $1")
        .bind(token::parse(&token).unwrap().id)
        .execute(&app.pool)
        .await
        .unwrap();
    let took = until_refused(&viewer, &app.address).await;
    assert!(
        took <= plume::auth::cache::SWEEP_EVERY + Duration::from_secs(1),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_token_stops_at_its_expiry_and_a_rotated_one_at_the_end_of_its_grace() {
    let app = spawn_app().await;
    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let (_, expiring) = store::create_client(&app.pool, &ingest_client("short-lived", vec![1]), soon, false)
        .await
        .unwrap();
    let expiring = client_with_token(&expiring.text);
    let metrics = |client: &reqwest::Client| {
        let request = client.get(format!("{}/v1/sites/1/metrics", app.address)).send();
        async move { request.await.unwrap().status() }
    };
    // Site 1 does not exist: 404 is "authenticated".
    assert_eq!(metrics(&expiring).await, StatusCode::NOT_FOUND);
    tokio::time::sleep_until(tokio::time::Instant::now() + (soon - chrono::Utc::now()).to_std().unwrap())
        .await;
    assert_eq!(metrics(&expiring).await, StatusCode::UNAUTHORIZED);

    let old = mint(&app.pool, "rotating", Kind::Read, Scope::all()).await;
    let old_client = client_with_token(&old);
    assert_eq!(metrics(&old_client).await, StatusCode::NOT_FOUND);
    let old_id = token::parse(&old).unwrap().id;
    let (new, old_ends) = store::rotate(&app.pool, &old_id, chrono::Duration::seconds(2))
        .await
        .unwrap();
    let new_client = client_with_token(&new.text);
    assert_eq!(
        metrics(&old_client).await,
        StatusCode::NOT_FOUND,
        "within the grace"
    );
    assert_eq!(metrics(&new_client).await, StatusCode::NOT_FOUND);
    tokio::time::sleep((old_ends - chrono::Utc::now()).to_std().unwrap() + Duration::from_millis(50)).await;
    assert_eq!(
        metrics(&old_client).await,
        StatusCode::UNAUTHORIZED,
        "after the grace"
    );
    assert_eq!(metrics(&new_client).await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn lists_and_exports_show_only_the_sites_in_scope() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for name in ["one", "two", "three", "four"] {
        ids.push(app.create_site(name, "100").await);
    }
    let (one, three) = (ids[0], ids[2]);
    for (key, site) in [("k1", one), ("k2", ids[1]), ("k3", three)] {
        let response = app.ingest(key, &batch(site, &[("s", &hours_ago(1), "1")])).await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let mut reader = NewClient {
        can_export: true,
        kind: Kind::Read,
        ..ingest_client("two-sites", vec![one, three])
    };
    reader.source_prefix = None;
    let reader = client_with_token(&mint_client(&app.pool, &reader).await);

    let mut seen = Vec::new();
    let mut path = "/v1/sites?limit=1".to_owned();
    loop {
        let (status, body) =
            status_and_body(reader.get(format!("{}{path}", app.address)).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        seen.extend(
            body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_i64().unwrap()),
        );
        match body["meta"]["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/sites?limit=1&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, vec![one, three]);

    let day = chrono::Utc::now().date_naive();
    let range = format!(
        "from={}T00:00:00Z&to={}T00:00:00Z",
        day - chrono::Duration::days(1),
        day + chrono::Duration::days(1)
    );
    let csv = reader
        .get(format!("{}/v2/export?format=csv&{range}", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sites: std::collections::BTreeSet<i64> = csv
        .lines()
        .skip(1)
        .map(|line| line.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(sites.into_iter().collect::<Vec<_>>(), vec![one, three]);
    let outside = reader
        .get(format!("{}/v2/export?format=csv&site_id={}", app.address, ids[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(outside.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn two_scopes_waiting_at_once_never_see_each_others_sites() {
    let app = spawn_app().await;
    let a = app.create_site("A", "100").await;
    let b = app.create_site("B", "100").await;
    let watcher = |sites: Vec<i64>, name: &'static str| {
        let pool = app.pool.clone();
        async move {
            let client = NewClient {
                kind: Kind::Read,
                ..ingest_client(name, sites)
            };
            client_with_token(&mint_client(&pool, &client).await)
        }
    };
    let (of_a, of_b) = (
        watcher(vec![a], "watch-a").await,
        watcher(vec![b], "watch-b").await,
    );
    let first = |client: reqwest::Client| {
        let url = format!("{}/v2/changes", app.address);
        async move {
            let (_, body) = status_and_body(client.get(url).send().await.unwrap()).await;
            let ids: Vec<i64> = body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["site_id"].as_i64().unwrap())
                .collect();
            (ids, body["meta"]["cursor"].as_str().unwrap().to_owned())
        }
    };
    let (ids_a, cursor_a) = first(of_a.clone()).await;
    let (ids_b, cursor_b) = first(of_b.clone()).await;
    assert_eq!((ids_a, ids_b), (vec![a], vec![b]));
    let wait = |client: reqwest::Client, cursor: String| {
        let url = format!("{}/v2/changes?cursor={cursor}&wait=3", app.address);
        tokio::spawn(async move { status_and_body(client.get(url).send().await.unwrap()).await.1 })
    };
    let (waiting_a, waiting_b) = (wait(of_a, cursor_a), wait(of_b, cursor_b));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = app
        .ingest("wake-a", &batch(a, &[("s", &hours_ago(1), "1")]))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let (woken_a, woken_b) = (waiting_a.await.unwrap(), waiting_b.await.unwrap());
    let ids = |body: &Value| -> Vec<i64> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["site_id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(ids(&woken_a), vec![a]);
    assert_eq!(ids(&woken_b), Vec::<i64>::new(), "B's watcher saw nothing of A");
}

#[tokio::test]
async fn a_throttled_client_gets_429_and_leaves_the_others_at_full_speed() {
    let app = spawn_app().await;
    let a = app.create_site("A", "100").await;
    let mut slow = ingest_client("slow", vec![a]);
    slow.requests_per_second = Some(2);
    let slow = client_with_token(&mint_client(&app.pool, &slow).await);
    let fast = client_with_token(&mint_client(&app.pool, &ingest_client("fast", vec![a])).await);
    let get = |client: &reqwest::Client| client.get(format!("{}/v1/sites/{a}/metrics", app.address)).send();
    let mut throttled = None;
    for _ in 0..10 {
        let response = get(&slow).await.unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some(response);
            break;
        }
    }
    let throttled = throttled.expect("a burst of 10 at 2/s is throttled");
    let retry_after: u64 = throttled.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after));
    let (_, body) = status_and_body(throttled).await;
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    for _ in 0..50 {
        assert_eq!(
            get(&fast).await.unwrap().status(),
            StatusCode::OK,
            "the other client is untouched"
        );
    }
}

#[tokio::test]
async fn an_unauthenticated_upload_is_refused_before_its_body_is_read() {
    let app = spawn_app().await;
    // Announces 32 MiB and sends none of it: the 401 comes back anyway.
    let mut stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!(
        "POST /v2/ingest HTTP/1.1\r\nhost: x\r\ncontent-type: text/csv\r\ncontent-length: {}\r\nidempotency-key: k\r\n\r\n",
        32 * 1024 * 1024
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}

#[tokio::test]
async fn a_session_is_a_cookie_the_page_cannot_read_and_cookie_writes_need_their_origin() {
    let app = spawn_app().await;
    let response = reqwest::Client::new()
        .post(format!("{}/v2/session", app.address))
        .json(&json!({ "token": app.admin_token }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let set_cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let host = app.address.trim_start_matches("http://").to_owned();
    let create = |origin: Option<String>| {
        let mut request = reqwest::Client::new()
            .post(format!("{}/v1/sites", app.address))
            .header("cookie", &cookie)
            .json(&json!({"name": "by cookie", "emission_limit": "1"}));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        async move { status_and_body(request.send().await.unwrap()).await.0 }
    };
    assert_eq!(
        create(Some("http://evil.example".into())).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(create(None).await, StatusCode::FORBIDDEN);
    assert_eq!(create(Some(format!("http://{host}"))).await, StatusCode::CREATED);
    assert_eq!(
        count(&app, "select count(*) from sites where name = 'by cookie'").await,
        1
    );

    // A long poll of the session, waiting while it signs out.
    let poll = waiting_long_poll(&app.address, &cookie).await;

    // Signed out: the cookie no longer works, in this process or any other.
    let out = reqwest::Client::new()
        .delete(format!("{}/v2/session", app.address))
        .header("cookie", &cookie)
        .header("origin", format!("http://{host}"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let after = reqwest::Client::new()
        .get(format!("{}/v2/session", app.address))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    let (status, waited) = poll.await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "sign-out ends the long poll");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let audited = count(&app, "select count(*) from auth_audit where action in ('session.created', 'session.ended', 'site.created')").await;
    assert!(audited >= 3, "{audited}");
}

#[tokio::test]
async fn the_cli_creates_lists_rotates_and_revokes_tokens() {
    let app = spawn_app().await;
    let output = crate::helpers::run_plume(
        &[
            "tokens", "create", "--kind", "ingest", "--name", "sensor-7", "--site", "1", "--json",
        ],
        &app.database_url,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created: Value = serde_json::from_slice(&output.stdout).unwrap();
    let token = created["token"].as_str().unwrap();
    let id = created["token_id"].as_str().unwrap();
    assert!(token.starts_with("plume_ingest_") && token.contains(id));
    assert!(created["client_id"].as_i64().is_some());
    let listed = crate::helpers::run_plume(&["tokens", "list", "--json"], &app.database_url);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.contains(id) && !listed.contains(token.split('_').nth(3).unwrap()));
    let rotated = crate::helpers::run_plume(
        &["tokens", "rotate", id, "--grace", "1h", "--json"],
        &app.database_url,
    );
    assert!(rotated.status.success());
    let revoked = crate::helpers::run_plume(&["tokens", "revoke", "sensor-7"], &app.database_url);
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let refused = crate::helpers::run_plume(
        &["tokens", "create", "--kind", "read", "--name", "x"],
        &app.database_url,
    );
    assert!(!refused.status.success(), "a read client needs a scope");
    let audit = crate::helpers::run_plume(&["tokens", "audit", "--json"], &app.database_url);
    let audit = String::from_utf8_lossy(&audit.stdout).into_owned();
    for action in ["client.created", "token.rotated", "client.revoked"] {
        assert!(audit.contains(action), "{action} in {audit}");
    }
}

#[tokio::test]
async fn with_auth_off_every_caller_is_an_admin_and_ready_says_so() {
    let off = plume::state::Settings {
        auth: plume::auth::cache::AuthSettings {
            mode: plume::auth::cache::AuthMode::Off,
            ..Default::default()
        },
        ..Default::default()
    };
    let app = crate::helpers::spawn_app_with(off, PoolSettings::default()).await;
    let stranger = reqwest::Client::new();
    let created = stranger
        .post(format!("{}/v1/sites", app.address))
        .json(&json!({"name": "open", "emission_limit": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let (_, ready) = status_and_body(
        stranger
            .get(format!("{}/ready", app.address))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        ready["data"]["auth"].as_str().unwrap().starts_with("off"),
        "{ready}"
    );
}

#[tokio::test]
async fn the_database_url_can_come_from_a_secret_file() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("database-url");
    std::fs::write(&file, format!("{}\n", app.database_url)).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_plume"))
        .args(["tokens", "list", "--json", "--database-url-file"])
        .arg(&file)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["client"].as_str().unwrap().starts_with("harness-admin")));
    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_plume"))
        .args(["tokens", "list", "--database-url-file", "/nonexistent/url"])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--database-url-file"));
}

#[tokio::test]
async fn one_client_may_force_only_a_few_change_feed_reads_a_second() {
    let app = spawn_app().await;
    let viewer = client_with_token(&mint(&app.pool, "poller", Kind::Read, Scope::all()).await);
    let mut statuses = Vec::new();
    for _ in 0..15 {
        // No cursor: each is read from the database.
        let response = viewer
            .get(format!("{}/v2/changes", app.address))
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
    }
    let limit = plume::auth::limits::FEED_READS_PER_SECOND as usize * 2;
    assert!(
        statuses[..limit].iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    // Another client is not held back by this one.
    let (status, _) = status_and_body(app.get("/v2/changes").await).await;
    assert_eq!(status, StatusCode::OK);
}

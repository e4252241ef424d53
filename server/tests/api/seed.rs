//! `plume seed --synthetic`: whole sites with exact figures, the same data for the same seed, a
//! rerun that adds nothing, and readings ingested afterwards that meet the loaded ones correctly.

use reqwest::StatusCode;
use seeds::synthetic::Plan;
use serde_json::json;

use crate::helpers::{fresh_database, run_plume, spawn_app, status_and_body};

pub fn plan(seed: u64) -> Plan {
    Plan {
        sites: 6,
        readings_per_site: 900,
        sources: 3,
        from: "2026-01-20T00:00:00Z".parse().unwrap(),
        to: "2026-03-10T00:00:00Z".parse().unwrap(),
        seed,
    }
}

/// Per site name: total, count, and a digest of every reading in identity order.
async fn fingerprint(pool: &sqlx::PgPool) -> Vec<(String, i64, i64, String)> {
    sqlx::query_as(
        "select s.name, s.total_emissions_mg, s.reading_count,
                md5(string_agg(m.source_id || '@' || m.measured_at || '=' || m.value_mg, ','
                               order by m.source_id, m.measured_at))
           from sites s join measurements m on m.site_id = s.id
          group by s.name, s.total_emissions_mg, s.reading_count
          order by s.name",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_synthetic_load_keeps_every_figure_exact_and_a_rerun_adds_nothing() {
    let app = spawn_app().await;

    let report = seeds::load::load(&app.pool, &plan(5), 2, |_| {}).await.unwrap();

    assert_eq!(
        (report.sites_created, report.sites_present, report.readings_stored),
        (6, 0, 5_400)
    );
    let verification = partitioning::verify::verify(&app.pool).await.unwrap();
    assert!(verification.is_clean(), "{verification:?}");
    let ids: Vec<i64> = sqlx::query_scalar("select id from sites order by id")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let mut over = 0;
    for id in &ids {
        let (_, count) = app.assert_totals_match_rows(*id).await;
        assert_eq!(count, 900);
        over += u64::from(app.metrics(*id).await["compliance_status"] == "Limit Exceeded");
    }
    assert!(over >= 1, "no site ends over its limit");
    assert_eq!(over, report.sites_over_limit);
    let heads_behind: i64 = sqlx::query_scalar(
        "select count(*) from (select site_id, source_id, max(measured_at) as newest from measurements group by 1, 2) m
           full join source_heads h using (site_id, source_id)
          where h.newest_at is distinct from m.newest",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(heads_behind, 0, "source heads differ from the newest readings");

    let again = seeds::load::load(&app.pool, &plan(5), 2, |_| {}).await.unwrap();

    assert_eq!(
        (again.sites_created, again.sites_present, again.readings_stored),
        (0, 6, 0)
    );
    let reshaped = Plan {
        readings_per_site: 901,
        ..plan(5)
    };
    let refused = seeds::load::load(&app.pool, &reshaped, 2, |_| {})
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("not loaded with this shape"),
        "{refused:#}"
    );
    let rows: i64 = sqlx::query_scalar("select count(*) from measurements")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 5_400);
}

#[tokio::test]
async fn the_same_seed_loads_the_same_readings_into_another_database_and_another_seed_does_not() {
    let (first, second, third) = (
        fresh_database().await,
        fresh_database().await,
        fresh_database().await,
    );
    let mut pools = Vec::new();
    for (url, seed) in [(&first, 9), (&second, 9), (&third, 10)] {
        let pool = plume::db::connect_plain(url).await.unwrap();
        // One job in one database and three in another: the data must not depend on it.
        let jobs = if seed == 9 && url == &first { 1 } else { 3 };
        seeds::load::load(&pool, &plan(seed), jobs, |_| {}).await.unwrap();
        pools.push(pool);
    }

    let fingerprints = [
        fingerprint(&pools[0]).await,
        fingerprint(&pools[1]).await,
        fingerprint(&pools[2]).await,
    ];

    assert_eq!(fingerprints[0].len(), 6);
    assert_eq!(fingerprints[0], fingerprints[1]);
    let digests = |f: &Vec<(String, i64, i64, String)>| f.iter().map(|row| row.3.clone()).collect::<Vec<_>>();
    assert_ne!(digests(&fingerprints[0]), digests(&fingerprints[2]));
}

#[tokio::test]
async fn readings_ingested_after_a_load_are_stored_once_and_take_the_in_order_path() {
    let app = spawn_app().await;
    seeds::load::load(&app.pool, &plan(6), 2, |_| {}).await.unwrap();
    let site: i64 = sqlx::query_scalar("select id from sites order by id limit 1")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let (loaded_total, _) = app.assert_totals_match_rows(site).await;
    let (source, newest, value): (String, chrono::DateTime<chrono::Utc>, i64) = sqlx::query_as(
        "select source_id, measured_at, value_mg from measurements where site_id = $1
          order by measured_at desc limit 1",
    )
    .bind(site)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let repeat = (
        newest.to_rfc3339(),
        format!("{}.{:06}", value / 1_000_000, value % 1_000_000),
    );
    let later = (newest + chrono::Duration::hours(1)).to_rfc3339();
    let body = json!({"site_id": site, "readings": [
        {"source_id": source, "timestamp": repeat.0, "value": repeat.1},
        {"source_id": source, "timestamp": later, "value": "2.5"},
    ]});

    let (status, answer) = status_and_body(app.ingest("after-the-load", &body).await).await;

    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["data"]["readings_accepted"], 1);
    assert_eq!(answer["data"]["readings_duplicate"], 1);
    let (total, count) = app.assert_totals_match_rows(site).await;
    assert_eq!((total, count), (loaded_total + 2_500_000, 901));
    assert_eq!(app.metric("plume_ingest_fresh_conflicts_total").await, 0.0);
}

#[tokio::test]
async fn the_command_loads_a_plan_and_explains_what_it_refuses() {
    let url = fresh_database().await;
    let run = |args: Vec<&'static str>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || run_plume(&args, &url))
    };

    let loaded = run(vec![
        "seed",
        "--synthetic",
        "--sites",
        "2",
        "--readings-per-site",
        "100",
        "--sources",
        "2",
        "--from",
        "2026-02-01",
        "--to",
        "2026-02-03",
        "--seed",
        "3",
    ])
    .await
    .unwrap();
    let backwards = run(vec![
        "seed",
        "--synthetic",
        "--from",
        "2026-02-03",
        "--to",
        "2026-02-01",
    ])
    .await
    .unwrap();
    let crowded = run(vec![
        "seed",
        "--synthetic",
        "--sites",
        "1",
        "--readings-per-site",
        "100000",
        "--sources",
        "1",
        "--from",
        "2026-02-01",
        "--to",
        "2026-02-01T01:00:00Z",
    ])
    .await
    .unwrap();
    let without_synthetic = run(vec!["seed", "--sites", "3"]).await.unwrap();
    let future = run(vec![
        "seed",
        "--synthetic",
        "--from",
        "2026-01-01",
        "--to",
        "2999-01-01",
    ])
    .await
    .unwrap();

    let stdout = String::from_utf8_lossy(&loaded.stdout);
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    assert!(stdout.contains("2 sites created"), "{stdout}");
    assert!(stdout.contains("200 readings stored"), "{stdout}");
    let pool = plume::db::connect_plain(&url).await.unwrap();
    assert!(partitioning::verify::verify(&pool).await.unwrap().is_clean());
    for (output, message) in [
        (backwards, "--from must be before --to"),
        (crowded, "do not fit between --from and --to"),
        (without_synthetic, "--synthetic"),
        (future, "readings cannot come from the future"),
    ] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(stderr.contains(message), "{stderr}");
    }
}

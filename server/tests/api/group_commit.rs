//! Group commit: v1 batches for different sites stored in one transaction, each answered exactly as
//! if alone; a group that cannot commit falls back to one batch at a time.

use plume::ingest::group::store_together;
use plume::ingest::processor::{IngestError, Outcome};
use plume::ingest::{IdempotencyKey, IngestBatch, Reading};
use plume::quantity::Milligrams;
use plume::sites::{ComplianceStatus, SiteId};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

/// `batches` stored together through the app's pool, as its group committer would.
async fn store(app: &TestApp, batches: Vec<IngestBatch>) -> Vec<Result<Outcome, IngestError>> {
    store_together(
        &app.app_pool,
        &app.state.metrics,
        app.state.settings.topology,
        batches,
    )
    .await
}

/// A batch of `n` readings of `mg` from source "a", one a minute from `start`.
fn batch_of(site: i64, key: &str, start: &str, n: usize, mg: i64) -> IngestBatch {
    let minutes: Vec<i64> = (0..n as i64).collect();
    batch_at(site, key, start, &minutes, mg)
}

fn stored(outcome: &Result<Outcome, IngestError>) -> &plume::ingest::BatchReceipt {
    match outcome {
        Ok(Outcome::Stored(receipt)) => receipt,
        other => panic!("expected a stored batch, got {other:?}"),
    }
}

#[tokio::test]
async fn batches_for_several_sites_share_a_transaction_and_each_gets_its_own_receipt() {
    let app = spawn_app().await;
    let a = app.create_site("A", "1000").await;
    let b = app.create_site("B", "0.003").await;
    let start = hours_ago(5);
    let first = json!({"site_id": a, "readings": readings("a", &start, 1, "0.002")});
    assert_eq!(app.ingest("a-0", &first).await.status(), StatusCode::CREATED);

    // A repeats its stored minute and adds two; B crosses its limit; site 999999 does not exist.
    let batches = vec![
        batch_of(b, "b-1", &start, 2, 2_000),
        batch_of(a, "a-1", &start, 3, 2_000),
        batch_of(999_999, "x-1", &start, 1, 1),
    ];
    let outcomes = store(&app, batches).await;

    let (b_receipt, a_receipt) = (stored(&outcomes[0]), stored(&outcomes[1]));
    assert!(matches!(outcomes[2], Err(IngestError::SiteNotFound(_))));
    assert_eq!((b_receipt.site_id, b_receipt.readings_accepted), (b, 2));
    assert_eq!(b_receipt.total_emissions_to_date, Milligrams::from_mg(4_000));
    assert_eq!(
        (
            a_receipt.site_id,
            a_receipt.readings_accepted,
            a_receipt.readings_duplicate
        ),
        (a, 2, 1)
    );
    assert_eq!(a_receipt.total_emissions_to_date, Milligrams::from_mg(6_000));
    assert_eq!(app.metric("plume_ingest_group_commits_total").await, 1.0);
    assert_eq!(app.assert_totals_match_rows(a).await, (6_000, 3));
    assert_eq!(app.assert_totals_match_rows(b).await, (4_000, 2));
    let events: Vec<(i64, String)> =
        sqlx::query_as("select site_id, event_type from outbox_events order by site_id, seq")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let expected = [
        (a, "measurements.ingested"),
        (a, "measurements.ingested"),
        (b, "measurements.ingested"),
        (b, "site.limit_exceeded"),
    ];
    assert_eq!(
        events.iter().map(|(s, t)| (*s, t.as_str())).collect::<Vec<_>>(),
        expected
    );

    // A retry of A's batch over HTTP is answered from the receipt the group stored.
    let retry = json!({"site_id": a, "readings": readings("a", &start, 3, "0.002")});
    let (status, body) = status_and_body(app.ingest("a-1", &retry).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["readings_accepted"], 2);
    assert_eq!(body["data"]["total_emissions_to_date"], "0.006000");
}

#[tokio::test]
async fn a_group_that_cannot_commit_stores_its_batches_one_at_a_time() {
    let app = spawn_app().await;
    let a = app.create_site("A", "1000").await;
    let b = app.create_site("B", "1000").await;
    let start = hours_ago(5);
    let original = json!({"site_id": a, "readings": readings("a", &start, 2, "0.002")});
    assert_eq!(app.ingest("a-1", &original).await.status(), StatusCode::CREATED);

    // A retry of a-1 that missed the original's receipt (it was looked up before the original
    // committed) makes the group's key claim fail.
    let batches = vec![
        batch_of(a, "a-1", &start, 2, 2_000),
        batch_of(b, "b-1", &start, 2, 1_000),
    ];
    let outcomes = store(&app, batches).await;

    match &outcomes[0] {
        Ok(Outcome::Replayed(receipt)) => assert_eq!(receipt.readings_accepted, 2),
        other => panic!("expected a replay, got {other:?}"),
    }
    assert_eq!(stored(&outcomes[1]).readings_accepted, 2);
    assert_eq!(app.metric("plume_ingest_group_commits_total").await, 0.0);
    assert_eq!(app.assert_totals_match_rows(a).await, (4_000, 2));
    assert_eq!(app.assert_totals_match_rows(b).await, (2_000, 2));
}

/// A batch with one reading of `mg` at each of `minutes` after `start` (negative: before it).
fn batch_at(site: i64, key: &str, start: &str, minutes: &[i64], mg: i64) -> IngestBatch {
    let start: chrono::DateTime<chrono::Utc> = start.parse().unwrap();
    let readings = minutes
        .iter()
        .map(|&minute| Reading {
            source_id: "a".into(),
            measured_at: start + chrono::Duration::minutes(minute),
            value: Milligrams::from_mg(mg),
        })
        .collect();
    IngestBatch::new(
        SiteId::new(site).unwrap(),
        IdempotencyKey::parse(key).unwrap(),
        readings,
    )
}

#[tokio::test]
async fn one_sites_batches_share_a_transaction_each_answered_as_if_stored_alone_in_turn() {
    let app = spawn_app().await;
    let a = app.create_site("A", "0.010").await;
    let b = app.create_site("B", "1000").await;
    let start = hours_ago(5);
    let first = json!({"site_id": a, "readings": readings("a", &start, 1, "0.002")});
    assert_eq!(app.ingest("a-0", &first).await.status(), StatusCode::CREATED);

    // a-1 repeats the stored minute; a-2 overlaps a-1; a-3 goes back before everything stored
    // (through staging) and crosses the limit; a-4 repeats a-3's late reading and adds another.
    let batches = vec![
        batch_at(a, "a-1", &start, &[0, 1, 2], 2_000),
        batch_at(a, "a-2", &start, &[2, 3, 4], 2_000),
        batch_at(b, "b-1", &start, &[0], 1_000),
        batch_at(a, "a-3", &start, &[-10, 5], 1_000),
        batch_at(a, "a-4", &start, &[-20, -10], 1_000),
    ];
    let outcomes = store(&app, batches).await;

    let summary: Vec<(u64, u64, i64, bool)> = [0, 1, 3, 4]
        .iter()
        .map(|&index| {
            let receipt = stored(&outcomes[index]);
            (
                receipt.readings_accepted,
                receipt.readings_duplicate,
                receipt.total_emissions_to_date.mg(),
                receipt.compliance_status == ComplianceStatus::LimitExceeded,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (2, 1, 6_000, false),
            (2, 1, 10_000, false),
            (2, 0, 12_000, true),
            (1, 1, 13_000, true),
        ]
    );
    assert_eq!(stored(&outcomes[2]).readings_accepted, 1);
    assert_eq!(app.metric("plume_ingest_group_commits_total").await, 1.0);
    assert_eq!(app.assert_totals_match_rows(a).await, (13_000, 8));
    assert_eq!(app.assert_totals_match_rows(b).await, (1_000, 1));

    // One event per batch that stored something, in the order the batches arrived, and the
    // limit's crossing once, right after the batch that crossed it.
    let events: Vec<(String, String)> = sqlx::query_as(
        "select event_type, data->>'batch_id' from outbox_events where site_id = $1 order by seq",
    )
    .bind(a)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let events: Vec<(&str, &str)> = events.iter().map(|(t, b)| (t.as_str(), b.as_str())).collect();
    assert_eq!(
        events,
        [
            ("measurements.ingested", "a-0"),
            ("measurements.ingested", "a-1"),
            ("measurements.ingested", "a-2"),
            ("measurements.ingested", "a-3"),
            ("site.limit_exceeded", "a-3"),
            ("measurements.ingested", "a-4"),
        ]
    );

    // Each retry over HTTP replays its own batch's receipt.
    let at_2 = start.parse::<chrono::DateTime<chrono::Utc>>().unwrap() + chrono::Duration::minutes(2);
    let retry = json!({"site_id": a, "readings": readings("a", &at_2.to_rfc3339(), 3, "0.002")});
    let (status, body) = status_and_body(app.ingest("a-2", &retry).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["readings_accepted"], 2);
    assert_eq!(body["data"]["total_emissions_to_date"], "0.010000");
    assert_eq!(body["data"]["compliance_status"], "Within Limit");
}

#[tokio::test]
async fn a_key_sent_twice_into_one_group_is_stored_once_and_replayed_once() {
    let app = spawn_app().await;
    let a = app.create_site("A", "1000").await;
    let b = app.create_site("B", "1000").await;
    let start = hours_ago(5);

    // The second a-1 is a client's retry of the first; the third reuses the key for other readings.
    let batches = vec![
        batch_at(a, "a-1", &start, &[0, 1], 2_000),
        batch_at(b, "b-1", &start, &[0], 1_000),
        batch_at(a, "a-1", &start, &[0, 1], 2_000),
        batch_at(a, "a-1", &start, &[7], 2_000),
    ];
    let outcomes = store(&app, batches).await;

    assert_eq!(stored(&outcomes[0]).readings_accepted, 2);
    assert_eq!(stored(&outcomes[1]).readings_accepted, 1);
    match &outcomes[2] {
        Ok(Outcome::Replayed(receipt)) => assert_eq!(receipt.readings_accepted, 2),
        other => panic!("expected a replay, got {other:?}"),
    }
    assert!(matches!(outcomes[3], Err(IngestError::KeyReused(_))));
    // The group itself committed: the repeats did not send it back to one batch at a time.
    assert_eq!(app.metric("plume_ingest_group_commits_total").await, 1.0);
    assert_eq!(app.assert_totals_match_rows(a).await, (4_000, 2));
    assert_eq!(app.assert_totals_match_rows(b).await, (1_000, 1));
}

/// `--group-max-batches 1` turns grouping off: many batches at once, each in a transaction of its
/// own, all stored.
#[tokio::test]
async fn with_grouping_off_every_batch_commits_alone() {
    let settings = plume::state::Settings {
        group: plume::ingest::group::GroupSettings {
            max_batches: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    let app = spawn_app_with(settings, plume::db::PoolSettings::default()).await;
    let site = app.create_site("Alone", "1000000").await;
    let start = hours_ago(10);
    let requests = (0..24).map(|n| {
        let body = json!({"site_id": site, "readings": readings(&format!("s{n}"), &start, 20, "1")});
        let app = &app;
        async move { app.ingest(&format!("alone-{n}"), &body).await.status() }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(
        statuses.iter().all(|status| *status == StatusCode::CREATED),
        "{statuses:?}"
    );
    assert_eq!(app.assert_totals_match_rows(site).await, (480_000_000, 480));
    assert_eq!(app.metric("plume_ingest_group_commits_total").await, 0.0);
}

//! Group commit: v1 batches for different sites stored in one transaction, each answered exactly as
//! if alone; a group that cannot commit falls back to one batch at a time.

use plume::ingest::group::store_together;
use plume::ingest::processor::{IngestError, Outcome};
use plume::ingest::{IdempotencyKey, IngestBatch, Reading};
use plume::quantity::Milligrams;
use plume::sites::SiteId;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

/// A batch of `n` readings of `mg` from source "a", one a minute from `start`.
fn batch_of(site: i64, key: &str, start: &str, n: usize, mg: i64) -> IngestBatch {
    let start: chrono::DateTime<chrono::Utc> = start.parse().unwrap();
    let readings = (0..n)
        .map(|i| Reading {
            source_id: "a".into(),
            measured_at: start + chrono::Duration::minutes(i as i64),
            value: Milligrams::from_mg(mg),
        })
        .collect();
    IngestBatch::new(
        SiteId::new(site).unwrap(),
        IdempotencyKey::parse(key).unwrap(),
        readings,
    )
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
    let outcomes = store_together(&app.app_pool, &app.state.metrics, batches).await;

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
    let outcomes = store_together(&app.app_pool, &app.state.metrics, batches).await;

    match &outcomes[0] {
        Ok(Outcome::Replayed(receipt)) => assert_eq!(receipt.readings_accepted, 2),
        other => panic!("expected a replay, got {other:?}"),
    }
    assert_eq!(stored(&outcomes[1]).readings_accepted, 2);
    assert_eq!(app.metric("plume_ingest_group_commits_total").await, 0.0);
    assert_eq!(app.assert_totals_match_rows(a).await, (4_000, 2));
    assert_eq!(app.assert_totals_match_rows(b).await, (2_000, 2));
}

//! What a v1 transaction writes after its readings: each batch's key claim (with its receipt) and
//! its outbox events. When every reading of the transaction is fresh, each receipt is known before
//! the statement that applies the readings runs, so [`super::store::store`] writes the closing in
//! that very statement (a round trip less, and no separate insert for events); otherwise the
//! caller writes it with [`write`] once the statement has answered.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::{Postgres, Transaction};

use super::store::SiteOutcome;
use super::{BatchReceipt, IngestBatch};
use crate::db::citus::one_site_rows;
use crate::outbox::{self, NewEvent};

/// The key claims and events of v1 batches, with the receipts they store.
#[derive(Debug)]
pub struct Closing {
    /// Each batch's receipt, in the order of the batches.
    pub receipts: Vec<BatchReceipt>,
    sites: Vec<i64>,
    keys: Vec<String>,
    payloads: Vec<Vec<u8>>,
    bodies: Vec<Option<Vec<u8>>>,
    stored_receipts: Vec<Value>,
    events: Vec<NewEvent>,
    occurred_at: DateTime<Utc>,
}

impl Closing {
    /// The closing of `batches`, whose outcomes (in the same order) are `outcomes`.
    pub fn new(batches: &[&IngestBatch], outcomes: &[SiteOutcome]) -> Self {
        debug_assert_eq!(batches.len(), outcomes.len());
        let receipts: Vec<BatchReceipt> = batches
            .iter()
            .zip(outcomes)
            .map(|(batch, site)| BatchReceipt::stored(&batch.key, site))
            .collect();
        let events = receipts
            .iter()
            .zip(outcomes)
            .flat_map(|(receipt, site)| outbox::events_for_batch(&receipt.batch_id, site))
            .collect();
        Self {
            sites: batches.iter().map(|batch| batch.site.site_id.get()).collect(),
            keys: batches
                .iter()
                .map(|batch| batch.key.as_str().to_owned())
                .collect(),
            payloads: batches
                .iter()
                .map(|batch| batch.payload_sha256.to_vec())
                .collect(),
            bodies: batches
                .iter()
                .map(|batch| batch.body_sha256.map(|hash| hash.to_vec()))
                .collect(),
            stored_receipts: receipts
                .iter()
                .map(|receipt| serde_json::to_value(receipt).expect("a receipt serialises"))
                .collect(),
            receipts,
            events,
            occurred_at: Utc::now(),
        }
    }

    /// Binds the parameters of [`ctes`] (`$15` to `$24`), after the apply statement's fourteen.
    pub(super) fn bind<'q, O>(
        &'q self,
        query: QueryAs<'q, Postgres, O, PgArguments>,
    ) -> QueryAs<'q, Postgres, O, PgArguments> {
        let events = &self.events;
        query
            .bind(&self.sites)
            .bind(&self.keys)
            .bind(&self.payloads)
            .bind(&self.bodies)
            .bind(&self.stored_receipts)
            .bind(events.iter().map(|e| e.site_id.get()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.event_id).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.data.clone()).collect::<Vec<_>>())
            .bind(self.occurred_at)
    }
}

/// The closing as common table expressions of the apply statement: the claims, then the events
/// appended to their sites' streams exactly as [`outbox::record`] does.
pub(super) fn ctes() -> String {
    format!(
        ",
         claim as (
             insert into ingest_batches (site_id, idempotency_key, payload_sha256, body_sha256, receipt)
             select * from unnest($15::bigint[], $16::text[], $17::bytea[], $18::bytea[], $19::jsonb[])
         ), {}",
        outbox::append_events_ctes(20)
    )
}

/// Writes `closing` in statements of its own: the claims, then the events.
pub async fn write(tx: &mut Transaction<'static, Postgres>, closing: &Closing) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into ingest_batches (site_id, idempotency_key, payload_sha256, body_sha256, receipt)
         select * from unnest($1::bigint[], $2::text[], $3::bytea[], $4::bytea[], $5::jsonb[])",
        &closing.sites,
        &closing.keys,
        &closing.payloads,
        &closing.bodies as &[Option<Vec<u8>>],
        &closing.stored_receipts,
    )
    .execute(&mut **tx)
    .await?;
    outbox::record(tx, closing.occurred_at, &closing.events).await
}

/// [`write`] as single-shard statements, for a Citus coordinator: each site's claims in one
/// statement, then its events ([`outbox::record_by_site`]).
pub async fn write_by_site(
    tx: &mut Transaction<'static, Postgres>,
    closing: &Closing,
) -> Result<(), sqlx::Error> {
    let mut start = 0;
    while start < closing.sites.len() {
        let site = closing.sites[start];
        let end = start + closing.sites[start..].iter().take_while(|&&s| s == site).count();
        let statement = format!(
            "insert into ingest_batches (site_id, idempotency_key, payload_sha256, body_sha256, receipt)
             values {}",
            one_site_rows(1, 4, end - start)
        );
        let mut query = sqlx::query(&statement).bind(site);
        for batch in start..end {
            query = query
                .bind(&closing.keys[batch])
                .bind(&closing.payloads[batch])
                .bind(&closing.bodies[batch])
                .bind(&closing.stored_receipts[batch]);
        }
        query.execute(&mut **tx).await?;
        start = end;
    }
    outbox::record_by_site(tx, closing.occurred_at, &closing.events).await
}

/// Whether `error` is a batch's key found claimed already (by a retry that committed first).
pub fn is_key_taken(error: &sqlx::Error) -> bool {
    crate::db::citus::violated_constraint(error).as_deref() == Some("ingest_batches_pkey")
}

//! The transactional outbox: the alerting service hears about every stored batch and every limit
//! breach, because the events are written in the very transaction that stores the readings.
//!
//! - [`record`] appends events to a site's stream inside the ingest transaction: committed with
//!   the readings or rolled back with them, never one without the other.
//! - [`relay`] claims streams with `for update skip locked` and a lease, delivers their events in
//!   order through a [`sink::Sink`] and moves each stream's cursor; failures back off and, after
//!   enough attempts or age, are dead-lettered, never dropped.
//! - [`admin`] is what operators need: status, listing and re-queueing dead events.
//! - [`housekeeping`] premakes the event log's daily partitions and drops delivered days.
//!
//! Delivery is at least once: a relay that dies after a webhook answered but before the cursor
//! moved delivers that event again, with the same `event_id`, which consumers deduplicate on.

pub mod admin;
pub mod housekeeping;
pub mod relay;
pub mod report;
pub mod sink;
mod streams;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::ingest::BatchReceipt;
use crate::quantity::Milligrams;
use crate::sites::{ComplianceStatus, SiteId};

/// What an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// A batch stored at least one new reading for a site.
    MeasurementsIngested,
    /// A site's total went from at most its limit to above it.
    LimitExceeded,
}

impl EventType {
    /// The name consumers see, in the body's `type` and the `X-Plume-Event-Type` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MeasurementsIngested => "measurements.ingested",
            Self::LimitExceeded => "site.limit_exceeded",
        }
    }
}

/// An event about to be written.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Unique for ever; what consumers deduplicate on.
    pub event_id: Uuid,
    /// What it reports.
    pub event_type: EventType,
    /// The type-specific fields of the body.
    pub data: Value,
}

/// An event as stored in the outbox.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The site whose stream it is in.
    pub site_id: i64,
    /// Its place in the site's stream, from 1, in commit order.
    pub seq: i64,
    /// Unique for ever.
    pub event_id: Uuid,
    /// `measurements.ingested` or `site.limit_exceeded`.
    pub event_type: String,
    /// When the ingest transaction stored the batch (taken just before its commit).
    pub occurred_at: DateTime<Utc>,
    /// When it was written (the ingest transaction's start); the log's partition key.
    pub created_at: DateTime<Utc>,
    /// The type-specific fields of the body.
    pub data: Value,
}

/// `measurements.ingested` fields.
#[derive(Debug, Serialize)]
struct Ingested<'a> {
    batch_id: &'a str,
    readings_accepted: u64,
    accepted_emissions: Milligrams,
    total_emissions_to_date: Milligrams,
    compliance_status: ComplianceStatus,
}

/// `site.limit_exceeded` fields.
#[derive(Debug, Serialize)]
struct LimitExceeded<'a> {
    batch_id: &'a str,
    emission_limit: Milligrams,
    total_emissions_before: Milligrams,
    total_emissions_to_date: Milligrams,
    compliance_status: ComplianceStatus,
}

/// The events a stored batch causes: `measurements.ingested` when it stored anything new, and
/// `site.limit_exceeded` when it moved the total from `total_before` (≤ `limit`) to above `limit`.
/// The caller holds the site's lock, so `total_before` is exact and only one batch can cross.
pub fn events_for_batch(
    receipt: &BatchReceipt,
    total_before: Milligrams,
    limit: Milligrams,
) -> Vec<NewEvent> {
    let mut events = Vec::new();
    if receipt.readings_accepted == 0 {
        return events;
    }
    let ingested = Ingested {
        batch_id: &receipt.batch_id,
        readings_accepted: receipt.readings_accepted,
        accepted_emissions: receipt.accepted_emissions,
        total_emissions_to_date: receipt.total_emissions_to_date,
        compliance_status: receipt.compliance_status,
    };
    events.push(NewEvent {
        event_id: Uuid::new_v4(),
        event_type: EventType::MeasurementsIngested,
        data: serde_json::to_value(ingested).expect("event fields serialise"),
    });
    if total_before <= limit && receipt.total_emissions_to_date > limit {
        let exceeded = LimitExceeded {
            batch_id: &receipt.batch_id,
            emission_limit: limit,
            total_emissions_before: total_before,
            total_emissions_to_date: receipt.total_emissions_to_date,
            compliance_status: ComplianceStatus::LimitExceeded,
        };
        events.push(NewEvent {
            event_id: Uuid::new_v4(),
            event_type: EventType::LimitExceeded,
            data: serde_json::to_value(exceeded).expect("event fields serialise"),
        });
    }
    events
}

/// Appends `events` to `site`'s stream in the caller's transaction, numbering them after the
/// stream's last event. The stream row stays locked until the transaction ends, so a site's
/// sequence numbers follow commit order. Call it last before commit: the lock is then held for the
/// shortest time, and the relay's `skip locked` claim passes over the stream only briefly.
#[tracing::instrument(skip_all, fields(site_id = site.get(), events = events.len()))]
pub async fn record(
    tx: &mut Transaction<'static, Postgres>,
    site: SiteId,
    occurred_at: DateTime<Utc>,
    events: &[NewEvent],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let types: Vec<String> = events.iter().map(|e| e.event_type.as_str().to_owned()).collect();
    let data: Vec<Value> = events.iter().map(|e| e.data.clone()).collect();
    sqlx::query!(
        "with stream as (
             insert into outbox_streams as s (site_id, head_seq) values ($1, cardinality($2::uuid[]))
             on conflict (site_id) do update set head_seq = s.head_seq + excluded.head_seq
             returning head_seq
         )
         insert into outbox_events (site_id, seq, event_id, event_type, occurred_at, data)
         select $1, stream.head_seq - cardinality($2::uuid[]) + e.n, e.event_id, e.event_type, $5, e.data
           from stream, unnest($2::uuid[], $3::text[], $4::jsonb[]) with ordinality as e(event_id, event_type, data, n)",
        site.get(),
        &ids,
        &types,
        &data,
        occurred_at,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(accepted: u64, total_mg: i64) -> BatchReceipt {
        BatchReceipt {
            batch_id: "b-1".into(),
            site_id: 1,
            readings_submitted: accepted,
            readings_accepted: accepted,
            readings_duplicate: 0,
            accepted_emissions: Milligrams::from_mg(5),
            total_emissions_to_date: Milligrams::from_mg(total_mg),
            compliance_status: ComplianceStatus::of(Milligrams::from_mg(total_mg), Milligrams::from_mg(100)),
            replayed: false,
        }
    }

    fn types(events: &[NewEvent]) -> Vec<&'static str> {
        events.iter().map(|e| e.event_type.as_str()).collect()
    }

    #[test]
    fn a_batch_that_stored_nothing_causes_no_event() {
        let events = events_for_batch(
            &receipt(0, 200),
            Milligrams::from_mg(200),
            Milligrams::from_mg(100),
        );
        assert!(events.is_empty());
    }

    #[test]
    fn crossing_the_limit_adds_limit_exceeded_after_ingested() {
        let events = events_for_batch(
            &receipt(1, 101),
            Milligrams::from_mg(96),
            Milligrams::from_mg(100),
        );
        assert_eq!(types(&events), ["measurements.ingested", "site.limit_exceeded"]);
        assert_eq!(events[1].data["emission_limit"], "0.000100");
        assert_eq!(events[0].data["total_emissions_to_date"], "0.000101");
    }

    #[test]
    fn reaching_the_limit_exactly_or_staying_above_it_is_not_a_crossing() {
        let at_limit = events_for_batch(
            &receipt(1, 100),
            Milligrams::from_mg(95),
            Milligrams::from_mg(100),
        );
        assert_eq!(types(&at_limit), ["measurements.ingested"]);
        let above = events_for_batch(
            &receipt(1, 110),
            Milligrams::from_mg(105),
            Milligrams::from_mg(100),
        );
        assert_eq!(types(&above), ["measurements.ingested"]);
        let from_limit = events_for_batch(
            &receipt(1, 101),
            Milligrams::from_mg(100),
            Milligrams::from_mg(100),
        );
        assert_eq!(
            types(&from_limit),
            ["measurements.ingested", "site.limit_exceeded"]
        );
    }
}

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
pub mod signature;
pub mod sink;
mod streams;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::ingest::store::SiteOutcome;
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
    /// The site whose stream it goes to.
    pub site_id: SiteId,
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

/// The events a stored batch causes at one site: `measurements.ingested` when it stored anything
/// new, and `site.limit_exceeded` when it moved the total from at most the limit to above it. The
/// caller holds the site's lock, so `total_before` is exact and only one batch can cross.
pub fn events_for_batch(batch_id: &str, site: &SiteOutcome) -> Vec<NewEvent> {
    let mut events = Vec::new();
    if site.accepted == 0 {
        return events;
    }
    let ingested = Ingested {
        batch_id,
        readings_accepted: site.accepted,
        accepted_emissions: site.accepted_emissions,
        total_emissions_to_date: site.total_after,
        compliance_status: site.compliance_status(),
    };
    events.push(NewEvent {
        site_id: site.site_id,
        event_id: Uuid::new_v4(),
        event_type: EventType::MeasurementsIngested,
        data: serde_json::to_value(ingested).expect("event fields serialise"),
    });
    let limit = site.emission_limit;
    if site.total_before <= limit && site.total_after > limit {
        let exceeded = LimitExceeded {
            batch_id,
            emission_limit: limit,
            total_emissions_before: site.total_before,
            total_emissions_to_date: site.total_after,
            compliance_status: ComplianceStatus::LimitExceeded,
        };
        events.push(NewEvent {
            site_id: site.site_id,
            event_id: Uuid::new_v4(),
            event_type: EventType::LimitExceeded,
            data: serde_json::to_value(exceeded).expect("event fields serialise"),
        });
    }
    events
}

/// The common table expressions that append events to their sites' streams, numbering each site's
/// events after its stream's last one in the order given, and lowering each stream's
/// `pending_since` to the events' `created_at` (both are the transaction's `now()`); the last one
/// (`appended`) inserts them.
/// Parameters from `$first`: site ids, event ids, types, data (arrays, one entry an event), then
/// when they occurred. [`record`] runs them alone; the ingest's closing runs them inside its
/// statement (`crate::ingest::closing`).
pub(crate) fn append_events_ctes(first: usize) -> String {
    let [sites, ids, types, data, occurred_at] = [0, 1, 2, 3, 4].map(|n| first + n);
    format!(
        "event as (
             select e.*, row_number() over (partition by e.site_id order by e.n) as nth,
                    count(*) over (partition by e.site_id) as site_events
               from unnest(${sites}::bigint[], ${ids}::uuid[], ${types}::text[], ${data}::jsonb[])
                    with ordinality as e(site_id, event_id, event_type, data, n)
         ), stream as (
             insert into outbox_streams as s (site_id, head_seq, pending_since)
             select distinct site_id, site_events, now() from event order by site_id
             on conflict (site_id) do update
                set head_seq = s.head_seq + excluded.head_seq,
                    pending_since = least(s.pending_since, excluded.pending_since)
             returning site_id, head_seq
         ), appended as (
             insert into outbox_events (site_id, seq, event_id, event_type, occurred_at, data)
             select e.site_id, stream.head_seq - e.site_events + e.nth, e.event_id, e.event_type, ${occurred_at}, e.data
               from event e join stream using (site_id)
         )"
    )
}

/// Appends `events` to their sites' streams in the caller's transaction, numbering each site's
/// events after its stream's last one, in the order given. Each stream row stays locked until the
/// transaction ends, so a site's sequence numbers follow commit order. The caller holds the locks
/// of the events' sites (taken in ascending order), so no two writers wait on each other's streams.
/// Call it last before commit: the stream locks are then held for the shortest time, and the
/// relay's `skip locked` claim passes over those streams only briefly.
#[tracing::instrument(skip_all, fields(events = events.len()))]
pub async fn record(
    tx: &mut Transaction<'static, Postgres>,
    occurred_at: DateTime<Utc>,
    events: &[NewEvent],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let sites: Vec<i64> = events.iter().map(|e| e.site_id.get()).collect();
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let types: Vec<String> = events.iter().map(|e| e.event_type.as_str().to_owned()).collect();
    let data: Vec<Value> = events.iter().map(|e| e.data.clone()).collect();
    // The CTEs run to completion whether or not the query reads them.
    static RECORD: LazyLock<String> = LazyLock::new(|| format!("with {} select 1", append_events_ctes(1)));
    sqlx::query(&RECORD)
        .bind(&sites)
        .bind(&ids)
        .bind(&types)
        .bind(&data)
        .bind(occurred_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// [`record`] as single-shard statements, for a Citus coordinator: per site, its stream's head
/// moved (and locked) by one statement, then its events inserted by another, numbered after the
/// head the first returned. Same rows, same order, same locks.
#[tracing::instrument(skip_all, fields(events = events.len()))]
pub async fn record_by_site(
    tx: &mut Transaction<'static, Postgres>,
    occurred_at: DateTime<Utc>,
    events: &[NewEvent],
) -> Result<(), sqlx::Error> {
    let mut by_site: BTreeMap<i64, Vec<&NewEvent>> = BTreeMap::new();
    for event in events {
        by_site.entry(event.site_id.get()).or_default().push(event);
    }
    for (site, events) in by_site {
        let count = events.len() as i64;
        let head = sqlx::query_scalar!(
            "insert into outbox_streams as s (site_id, head_seq, pending_since) values ($1, $2, now())
             on conflict (site_id) do update
                set head_seq = s.head_seq + excluded.head_seq,
                    pending_since = least(s.pending_since, excluded.pending_since)
             returning head_seq",
            site,
            count,
        )
        .fetch_one(&mut **tx)
        .await?;
        let statement = format!(
            "insert into outbox_events (site_id, occurred_at, seq, event_id, event_type, data) values {}",
            crate::db::citus::one_site_rows(2, 4, events.len())
        );
        let mut query = sqlx::query(&statement).bind(site).bind(occurred_at);
        for (nth, event) in (1..).zip(&events) {
            query = query
                .bind(head - count + nth)
                .bind(event.event_id)
                .bind(event.event_type.as_str())
                .bind(&event.data);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch that stored `accepted` readings and took the total from `before_mg` to `after_mg`,
    /// at a site whose limit is 100 mg.
    fn events(accepted: u64, before_mg: i64, after_mg: i64) -> Vec<NewEvent> {
        let site = SiteOutcome {
            site_id: SiteId::new(1).unwrap(),
            submitted: accepted,
            accepted,
            accepted_emissions: Milligrams::from_mg(after_mg - before_mg),
            total_before: Milligrams::from_mg(before_mg),
            total_after: Milligrams::from_mg(after_mg),
            emission_limit: Milligrams::from_mg(100),
        };
        events_for_batch("b-1", &site)
    }

    fn types(events: &[NewEvent]) -> Vec<&'static str> {
        events.iter().map(|e| e.event_type.as_str()).collect()
    }

    #[test]
    fn a_batch_that_stored_nothing_causes_no_event() {
        let events = events(0, 200, 200);
        assert!(events.is_empty());
    }

    #[test]
    fn crossing_the_limit_adds_limit_exceeded_after_ingested() {
        let events = events(1, 96, 101);
        assert_eq!(types(&events), ["measurements.ingested", "site.limit_exceeded"]);
        assert_eq!(events[1].data["emission_limit"], "0.000100");
        assert_eq!(events[0].data["total_emissions_to_date"], "0.000101");
    }

    #[test]
    fn reaching_the_limit_exactly_or_staying_above_it_is_not_a_crossing() {
        let at_limit = events(1, 95, 100);
        assert_eq!(types(&at_limit), ["measurements.ingested"]);
        let above = events(1, 105, 110);
        assert_eq!(types(&above), ["measurements.ingested"]);
        let from_limit = events(1, 100, 101);
        assert_eq!(
            types(&from_limit),
            ["measurements.ingested", "site.limit_exceeded"]
        );
    }
}

//! Demo data: a handful of sites at different compliance levels, with readings.
//!
//! The data is `seeds/demo.json`, built into the binary. Readings go through the same
//! [`processor`](crate::ingest::processor) as the API, so totals are exact and idempotency holds.
//! Seeding is idempotent: a site that already exists by name is left alone.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::Deserialize;
use sqlx::PgPool;

use crate::db::citus::Topology;
use crate::ingest::processor::{self, Outcome};
use crate::ingest::{IdempotencyKey, IngestBatch, Reading};
use crate::metrics::Metrics;
use crate::quantity::{MassUnit, Milligrams};
use crate::sites::{self, request::NewSite, SiteId};

const DEMO: &str = include_str!("../../seeds/demo.json");

#[derive(Debug, Deserialize)]
struct DemoFile {
    sites: Vec<DemoSite>,
}

#[derive(Debug, Deserialize)]
struct DemoSite {
    name: String,
    emission_limit: String,
    metadata: serde_json::Value,
    sources: Vec<String>,
    readings_per_source: usize,
    interval_minutes: i64,
    values: Vec<String>,
}

/// What a seeding run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SeedReport {
    /// Sites created now.
    pub sites_created: usize,
    /// Sites that existed already and were skipped.
    pub sites_skipped: usize,
    /// Readings stored now.
    pub readings_stored: u64,
}

/// Loads the demo sites that do not exist yet, with readings ending at the last full hour before `now`.
pub async fn seed_demo(pool: &PgPool, now: DateTime<Utc>) -> anyhow::Result<SeedReport> {
    let demo: DemoFile = serde_json::from_str(DEMO).context("seeds/demo.json is not valid")?;
    let end = now.duration_trunc(Duration::hours(1))? - Duration::hours(1);
    let mut report = SeedReport::default();
    let metrics = Arc::new(Metrics::default());
    let topology = Topology::detect(pool).await?;
    for site in demo.sites {
        if sites::find_by_name(pool, &site.name).await?.is_some() {
            report.sites_skipped += 1;
            continue;
        }
        let new_site = NewSite {
            name: site.name.clone(),
            emission_limit: parse_kg(&site.emission_limit)?,
            metadata: site.metadata.to_string(),
        };
        let row = sites::create(pool, topology, &new_site).await?;
        let site_id = SiteId::new(row.id).context("a new site has a positive id")?;
        for (source_index, source) in site.sources.iter().enumerate() {
            let readings = (0..site.readings_per_source)
                .map(|i| {
                    let value = &site.values[(i + source_index) % site.values.len()];
                    Ok(Reading {
                        source_id: source.clone(),
                        measured_at: end - Duration::minutes(site.interval_minutes * i as i64),
                        value: parse_kg(value)?,
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            for (chunk_index, chunk) in readings.chunks(crate::ingest::MAX_READINGS_PER_BATCH).enumerate() {
                let key = IdempotencyKey::parse(&format!("demo-{}-{source}-{chunk_index}", row.id))
                    .map_err(anyhow::Error::msg)?;
                let stored = processor::find_batch(pool, site_id, &key).await?;
                let batch = IngestBatch::new(site_id, key, chunk.to_vec());
                if let Outcome::Stored(receipt) =
                    processor::execute(pool.clone(), metrics.clone(), topology, batch, stored).await?
                {
                    report.readings_stored += receipt.readings_accepted;
                }
            }
        }
        report.sites_created += 1;
    }
    tracing::info!(?report, "demo data seeded");
    Ok(report)
}

fn parse_kg(text: &str) -> anyhow::Result<Milligrams> {
    Milligrams::parse_json(text, MassUnit::Kilograms, Milligrams::from_mg(i64::MAX))
        .map_err(|e| anyhow::anyhow!("demo quantity {text:?} {e}"))
}

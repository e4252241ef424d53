//! Data for plume's databases at scale.
//!
//! [`synthetic`] generates realistic methane readings for many sites, deterministically from a
//! seed and in parallel; [`load`] writes them with parallel binary `COPY`, each site in one
//! transaction together with its totals, hourly rollups and source heads, so that every figure the
//! read side and `plume verify` use is what ingesting the same readings would have made. What it
//! does not make: outbox events (a synthetic history is not news for the alerting service, so a
//! seeded site over its limit never raises `site.limit_exceeded`), batch receipts, and site
//! versions beyond 1.
//!
//! (The small demo data set, `demo.json`, is loaded by the server through its ingest path.)

pub mod load;
pub mod progress;
pub mod synthetic;

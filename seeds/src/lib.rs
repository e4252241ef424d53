//! Data for plume's databases at scale.
//!
//! [`synthetic`] generates realistic methane readings for many sites, deterministically from a
//! seed and in parallel; [`load`] writes them with parallel binary `COPY`, each site in one
//! transaction together with its totals, hourly rollups and source heads, so that the database is
//! exactly what ingesting the same readings through the API would have made of it.
//!
//! (The small demo data set, `demo.json`, is loaded by the server through its ingest path.)

pub mod load;
pub mod progress;
pub mod synthetic;

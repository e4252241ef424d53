//! The v2 bulk command: one request, up to [`MAX_READINGS_PER_BULK`] readings for any number of
//! sites, stored in one transaction under one global idempotency key.
//!
//! A body becomes a [`BulkBatch`] once, at the edge ([`super::bulk_request::parse_bulk`]); the
//! [`super::bulk_processor`] executes it and answers with a [`BulkReceipt`].

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::store::{SiteOutcome, SiteReadings};
use super::{IdempotencyKey, Origin, Reading, Receipt};
use crate::error::FieldError;
use crate::quantity::Milligrams;
use crate::sites::{ComplianceStatus, SiteId};

/// At most this many readings per bulk request.
pub const MAX_READINGS_PER_BULK: usize = 50_000;

/// A validated bulk request, ready for the processor.
#[derive(Debug, Clone)]
pub struct BulkBatch {
    /// Names this request for retries, within its client's own namespace.
    pub key: IdempotencyKey,
    /// The client whose key it is (0 without authentication).
    pub client_id: i64,
    /// Each site's distinct readings, sites in ascending id order (the order their locks are taken).
    pub sites: Vec<SiteReadings>,
    /// Where each site of `sites` first appears in the request (`readings[3]`, `line 4`), to name it
    /// if the site does not exist.
    pub site_origins: Vec<Origin>,
    /// How many readings the request carried, repeats included.
    pub submitted: usize,
    /// SHA-256 of the canonical payload: the same readings in any order, spelling or format (JSON,
    /// NDJSON or CSV) hash alike.
    pub payload_sha256: [u8; 32],
    /// SHA-256 of the request body as received, if the batch came from one: stored so that a
    /// byte-identical retry is answered before its readings are parsed.
    pub body_sha256: Option<[u8; 32]>,
    /// Readings outside the accepted window (the first problems found). Refused (422) unless the
    /// request is the retry of one already stored under its key, which is replayed.
    pub outside_window: Vec<FieldError>,
}

impl BulkBatch {
    /// Builds the command from readings already validated one by one, each with its site and where
    /// it was in the request, in request order; identical repeats are allowed (conflicting ones are
    /// refused at the edge before this).
    pub fn new(key: IdempotencyKey, mut all_readings: Vec<(SiteId, Reading, Origin)>) -> Self {
        let submitted = all_readings.len();
        // Stable: among repeats, the first in the request keeps its origin.
        all_readings.sort_by(|(sa, a, _), (sb, b, _)| (sa, a).cmp(&(sb, b)));
        let payload_sha256 = canonical_hash(&all_readings);
        let mut sites: Vec<SiteReadings> = Vec::new();
        let mut site_origins = Vec::new();
        for (site_id, reading, origin) in all_readings {
            match sites.last_mut() {
                Some(group) if group.site_id == site_id => {
                    group.submitted += 1;
                    if group.readings.last() != Some(&reading) {
                        group.readings.push(reading);
                    }
                    let first = site_origins.last_mut().expect("one origin per site");
                    *first = origin.min(*first);
                }
                _ => {
                    sites.push(SiteReadings {
                        site_id,
                        readings: vec![reading],
                        submitted: 1,
                    });
                    site_origins.push(origin);
                }
            }
        }
        Self {
            key,
            client_id: 0,
            sites,
            site_origins,
            submitted,
            payload_sha256,
            body_sha256: None,
            outside_window: Vec::new(),
        }
    }

    /// The sites, ascending.
    pub fn site_ids(&self) -> Vec<i64> {
        self.sites.iter().map(|group| group.site_id.get()).collect()
    }

    /// Distinct readings over all sites.
    pub fn distinct_readings(&self) -> usize {
        self.sites.iter().map(|group| group.readings.len()).sum()
    }
}

/// Hashes the sorted readings with unambiguous framing, so that two requests hash alike exactly
/// when they carry the same readings for the same sites (repeats count).
fn canonical_hash(sorted_readings: &[(SiteId, Reading, Origin)]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"plume.v2.bulk");
    hasher.update((sorted_readings.len() as u64).to_be_bytes());
    for (site_id, reading, _) in sorted_readings {
        hasher.update(site_id.get().to_be_bytes());
        hasher.update((reading.source_id.len() as u64).to_be_bytes());
        hasher.update(reading.source_id.as_bytes());
        hasher.update(reading.measured_at.timestamp_micros().to_be_bytes());
        hasher.update(reading.value.mg().to_be_bytes());
    }
    hasher.finalize().into()
}

/// The outcome of a bulk request, exactly as answered and stored for its retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BulkReceipt {
    /// The idempotency key.
    pub batch_id: String,
    /// Readings in the request, repeats included.
    pub readings_submitted: u64,
    /// Readings newly stored, over all sites.
    pub readings_accepted: u64,
    /// `readings_submitted - readings_accepted`.
    pub readings_duplicate: u64,
    /// The sum of the newly stored readings, over all sites.
    pub accepted_emissions: Milligrams,
    /// One entry per site in the request, ascending by site id.
    pub sites: Vec<SiteBreakdown>,
    /// `true` when this answer is a replay of the stored one.
    pub replayed: bool,
}

/// What a bulk request did to one site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SiteBreakdown {
    /// The site.
    pub site_id: i64,
    /// Readings for this site in the request, repeats included.
    pub readings_submitted: u64,
    /// Readings newly stored for this site.
    pub readings_accepted: u64,
    /// `readings_submitted - readings_accepted`.
    pub readings_duplicate: u64,
    /// The sum of this site's newly stored readings.
    pub accepted_emissions: Milligrams,
    /// The site's total right after this request.
    pub total_emissions_to_date: Milligrams,
    /// The site's status right after this request.
    pub compliance_status: ComplianceStatus,
}

impl BulkReceipt {
    /// The receipt of a request stored now, from each site's outcome.
    pub fn new(key: &IdempotencyKey, outcomes: &[SiteOutcome]) -> Self {
        let sites: Vec<SiteBreakdown> = outcomes
            .iter()
            .map(|site| SiteBreakdown {
                site_id: site.site_id.get(),
                readings_submitted: site.submitted,
                readings_accepted: site.accepted,
                readings_duplicate: site.duplicate(),
                accepted_emissions: site.accepted_emissions,
                total_emissions_to_date: site.total_after,
                compliance_status: site.compliance_status(),
            })
            .collect();
        let submitted = sites.iter().map(|s| s.readings_submitted).sum();
        let accepted = sites.iter().map(|s| s.readings_accepted).sum();
        // At most 50,000 readings of at most 10^12 mg each: far inside an i64.
        let accepted_mg = sites.iter().map(|s| s.accepted_emissions.mg()).sum();
        Self {
            batch_id: key.as_str().to_owned(),
            readings_submitted: submitted,
            readings_accepted: accepted,
            readings_duplicate: submitted - accepted,
            accepted_emissions: Milligrams::from_mg(accepted_mg),
            sites,
            replayed: false,
        }
    }
}

impl Receipt for BulkReceipt {
    fn into_replay(self) -> Self {
        Self {
            replayed: true,
            ..self
        }
    }

    fn counts(&self) -> (u64, u64) {
        (self.readings_accepted, self.readings_duplicate)
    }
}

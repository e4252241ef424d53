//! Batch ingestion: the [`IngestBatch`] command and the processor that stores it.
//!
//! A request becomes an `IngestBatch` once, at the edge ([`request::parse_batch`]): validated,
//! deduplicated within itself, sorted by reading identity and hashed. The [`processor`] then
//! executes it in one transaction. Nothing past the edge sees unchecked input.

pub mod bulk;
pub mod bulk_processor;
pub mod bulk_request;
pub mod closing;
pub mod copy;
pub mod fresh;
pub mod group;
pub mod processor;
pub mod receipts;
pub mod request;
pub mod single_shard;
pub mod store;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use self::store::{SiteOutcome, SiteReadings};
use crate::error::FieldError;
use crate::quantity::Milligrams;
use crate::sites::{ComplianceStatus, SiteId};

/// At most this many readings per v1 batch.
pub const MAX_READINGS_PER_BATCH: usize = 100;

/// The largest value one reading may carry: 1,000 tonnes.
pub const MAX_READING: Milligrams = Milligrams::from_mg(1_000 * 1_000_000_000);

/// A client-chosen key naming one batch for one site; 1 to 128 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Checks `text` against the key rules.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.is_empty() || text.len() > 128 {
            return Err("must be 1 to 128 characters long");
        }
        if !text.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err("must contain only printable ASCII characters");
        }
        Ok(Self(text.to_owned()))
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a reading is in a request, for problem paths: `readings[3]` (a JSON array index) or
/// `line 4` (an NDJSON or CSV line, from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// The index in a JSON `readings` array.
    Index(usize),
    /// The line of an NDJSON or CSV body.
    Line(usize),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Index(index) => write!(f, "readings[{index}]"),
            Self::Line(line) => write!(f, "line {line}"),
        }
    }
}

/// One validated reading.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reading {
    /// The sensor or stream within the site ("" when the client sent none).
    pub source_id: String,
    /// When it was measured, to the microsecond.
    pub measured_at: DateTime<Utc>,
    /// How much methane.
    pub value: Milligrams,
}

/// A validated batch, ready for the processor.
#[derive(Debug, Clone)]
pub struct IngestBatch {
    /// Names this batch for retries.
    pub key: IdempotencyKey,
    /// The site and its distinct readings, sorted by identity (source, time), repeats inside the
    /// request removed, with how many the request carried.
    pub site: SiteReadings,
    /// SHA-256 of the canonical payload: same readings in any order and spelling, same hash.
    pub payload_sha256: [u8; 32],
    /// SHA-256 of the request body as received, if the batch came from one: stored so that a
    /// byte-identical retry is answered before its readings are parsed.
    pub body_sha256: Option<[u8; 32]>,
    /// Readings outside the accepted window. Such a batch is refused (422) unless it is the retry of
    /// a batch already stored under its key, which is replayed: the window moves on, the receipt
    /// does not.
    pub outside_window: Vec<FieldError>,
}

impl IngestBatch {
    /// Builds the command from readings already validated one by one; `all_readings` is every reading
    /// of the request in any order, with identical repeats allowed (conflicting ones are refused at
    /// the edge before this).
    pub fn new(site_id: SiteId, key: IdempotencyKey, mut all_readings: Vec<Reading>) -> Self {
        all_readings.sort_unstable();
        let payload_sha256 = canonical_hash(site_id, &all_readings);
        let submitted = all_readings.len();
        all_readings.dedup();
        Self {
            key,
            site: SiteReadings {
                site_id,
                readings: all_readings,
                submitted,
            },
            payload_sha256,
            body_sha256: None,
            outside_window: Vec::new(),
        }
    }
}

/// Hashes the site and the sorted readings with unambiguous framing, so that two requests hash alike
/// exactly when they carry the same readings (order of readings, number spelling, unit and UTC
/// offset do not matter; repeats do).
fn canonical_hash(site_id: SiteId, sorted_readings: &[Reading]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"plume.v1.batch");
    hasher.update(site_id.get().to_be_bytes());
    hasher.update((sorted_readings.len() as u64).to_be_bytes());
    for reading in sorted_readings {
        hasher.update((reading.source_id.len() as u64).to_be_bytes());
        hasher.update(reading.source_id.as_bytes());
        hasher.update(reading.measured_at.timestamp_micros().to_be_bytes());
        hasher.update(reading.value.mg().to_be_bytes());
    }
    hasher.finalize().into()
}

/// What v1 and v2 receipts have in common: a retry is answered with them again, and a stored
/// request is counted by them.
pub trait Receipt: Clone {
    /// The receipt with `replayed` set.
    fn into_replay(self) -> Self;
    /// `(readings_accepted, readings_duplicate)`.
    fn counts(&self) -> (u64, u64);
}

/// A batch stored before under a key: what a retry of it is checked against and answered with.
#[derive(Debug, Clone)]
pub struct StoredBatch<R> {
    /// SHA-256 of its canonical payload.
    pub payload_sha256: Vec<u8>,
    /// SHA-256 of its request body as received, if known.
    pub body_sha256: Option<Vec<u8>>,
    /// Its receipt.
    pub receipt: R,
}

impl<R: Receipt> StoredBatch<R> {
    /// The receipt as a replay, if `body_sha256` is byte for byte the stored body's hash.
    pub fn replay_of_body(&self, body_sha256: &[u8; 32]) -> Option<R> {
        (self.body_sha256.as_deref() == Some(&body_sha256[..])).then(|| self.receipt.clone().into_replay())
    }

    /// The receipt as a replay, if `payload_sha256` is the stored canonical payload's hash; `None`
    /// when the key was used for another payload (409).
    pub fn replay_of_payload(self, payload_sha256: &[u8; 32]) -> Option<R> {
        (self.payload_sha256 == payload_sha256[..]).then(|| self.receipt.into_replay())
    }
}

/// The outcome of a batch, exactly as answered to the client and stored for its retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS, utoipa::ToSchema)]
pub struct BatchReceipt {
    /// The idempotency key.
    pub batch_id: String,
    /// The site.
    pub site_id: i64,
    /// Readings in the request, repeats included.
    pub readings_submitted: u64,
    /// Readings newly stored by this batch.
    pub readings_accepted: u64,
    /// `readings_submitted - readings_accepted`: repeats within the batch and readings stored before.
    pub readings_duplicate: u64,
    /// The sum of the newly stored readings.
    #[ts(type = "string")]
    pub accepted_emissions: Milligrams,
    /// The site's total right after this batch.
    #[ts(type = "string")]
    pub total_emissions_to_date: Milligrams,
    /// The site's status right after this batch.
    pub compliance_status: ComplianceStatus,
    /// `true` when this answer is a replay of the stored one.
    pub replayed: bool,
}

impl BatchReceipt {
    /// The receipt of a batch stored now under `key`, from what it did to its site.
    pub fn stored(key: &IdempotencyKey, site: &SiteOutcome) -> Self {
        Self {
            batch_id: key.as_str().to_owned(),
            site_id: site.site_id.get(),
            readings_submitted: site.submitted,
            readings_accepted: site.accepted,
            readings_duplicate: site.duplicate(),
            accepted_emissions: site.accepted_emissions,
            total_emissions_to_date: site.total_after,
            compliance_status: site.compliance_status(),
            replayed: false,
        }
    }
}

impl Receipt for BatchReceipt {
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

//! Service counters, exported in the Prometheus text format on `/metrics`.
//!
//! The label sets are fixed and small, so each counter is an array of atomics indexed by an enum:
//! no locking and no allocation on the ingest path.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use partitioning::maintenance::MaintenanceStats;

/// How an ingest request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// 201: stored.
    Created,
    /// 200: answered from the stored receipt.
    Replayed,
    /// 409: key reused with another payload.
    Conflict,
    /// 400/413/422: refused input.
    Invalid,
    /// 404: no such site.
    NotFound,
    /// 503: database unavailable.
    Unavailable,
    /// 500.
    Error,
}

impl IngestOutcome {
    const ALL: [Self; 7] = [
        Self::Created,
        Self::Replayed,
        Self::Conflict,
        Self::Invalid,
        Self::NotFound,
        Self::Unavailable,
        Self::Error,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Replayed => "replayed",
            Self::Conflict => "conflict",
            Self::Invalid => "invalid",
            Self::NotFound => "not_found",
            Self::Unavailable => "unavailable",
            Self::Error => "error",
        }
    }
}

/// Counters of the running process.
#[derive(Debug, Default)]
pub struct Metrics {
    ingest_requests: [AtomicU64; 7],
    readings_accepted: AtomicU64,
    readings_duplicate: AtomicU64,
    duplicate_requests_replay: AtomicU64,
    duplicate_requests_key_reused: AtomicU64,
    fresh_conflicts: AtomicU64,
    group_commits: AtomicU64,
    grouped_batches: AtomicU64,
    /// Receipts deleted by the housekeeping once past the replay window.
    pub receipts_pruned: AtomicU64,
    /// Bulk requests answered 503 because the bulk memory budget was spent.
    pub bulk_refused_busy: AtomicU64,
    /// The outbox relay's counters.
    pub outbox: OutboxCounters,
    /// The partition maintenance job's counters, shared with the job.
    pub maintenance: Arc<MaintenanceStats>,
}

impl Metrics {
    /// Counts one ingest request by outcome.
    pub fn ingest_request(&self, outcome: IngestOutcome) {
        let index = IngestOutcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.ingest_requests[index].fetch_add(1, Ordering::Relaxed);
        match outcome {
            IngestOutcome::Replayed => self.duplicate_requests_replay.fetch_add(1, Ordering::Relaxed),
            IngestOutcome::Conflict => self.duplicate_requests_key_reused.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    /// Counts the readings of a stored batch.
    pub fn readings(&self, accepted: u64, duplicate: u64) {
        self.readings_accepted.fetch_add(accepted, Ordering::Relaxed);
        self.readings_duplicate.fetch_add(duplicate, Ordering::Relaxed);
    }

    /// Counts a batch whose in-order path met a reading stored behind the site lock, and which was
    /// stored again with conflict checks.
    pub fn fresh_conflict(&self) {
        self.fresh_conflicts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a transaction that stored `batches` v1 batches together.
    pub fn group_commit(&self, batches: usize) {
        self.group_commits.fetch_add(1, Ordering::Relaxed);
        self.grouped_batches.fetch_add(batches as u64, Ordering::Relaxed);
    }

    fn render_maintenance(&self, out: &mut String) {
        let (succeeded, failed, skipped) = self.maintenance.runs();
        let name = "plume_maintenance_runs_total";
        let _ = writeln!(out, "# HELP {name} Partition maintenance runs by this process, by outcome (skipped: another instance held the job).\n# TYPE {name} counter");
        for (outcome, count) in [("success", succeeded), ("failure", failed), ("skipped", skipped)] {
            let _ = writeln!(out, "{name}{{outcome=\"{outcome}\"}} {count}");
        }
        let name = "plume_maintenance_last_success_timestamp_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} When partition maintenance last succeeded in this process (0: not yet).\n# TYPE {name} gauge\n{name} {}",
            self.maintenance.last_success_unix()
        );
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        out.push_str("# HELP plume_ingest_requests_total Ingest requests by outcome.\n");
        out.push_str("# TYPE plume_ingest_requests_total counter\n");
        for (outcome, counter) in IngestOutcome::ALL.iter().zip(&self.ingest_requests) {
            let _ = writeln!(
                out,
                "plume_ingest_requests_total{{outcome=\"{}\"}} {}",
                outcome.label(),
                load(counter)
            );
        }
        let name = "plume_ingest_fresh_conflicts_total";
        let _ = writeln!(
            out,
            "# HELP {name} Batches whose in-order path met a reading stored without the site lock, stored again with conflict checks (0 unless something writes behind plume).\n# TYPE {name} counter\n{name} {}",
            load(&self.fresh_conflicts)
        );
        for (name, help, counter) in [
            (
                "plume_ingest_group_commits_total",
                "Transactions that stored several v1 batches together.",
                &self.group_commits,
            ),
            (
                "plume_ingest_grouped_batches_total",
                "v1 batches stored in a shared transaction.",
                &self.grouped_batches,
            ),
            (
                "plume_receipts_pruned_total",
                "Idempotency receipts deleted once past the replay window (--receipt-retention-days).",
                &self.receipts_pruned,
            ),
            (
                "plume_bulk_refused_busy_total",
                "Bulk requests answered 503 before their body was read: the bulk memory budget (--bulk-memory-mib) was spent.",
                &self.bulk_refused_busy,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                load(counter)
            );
        }
        out.push_str(
            "# HELP plume_ingest_readings_total Readings in stored batches: newly stored or already known.\n",
        );
        out.push_str("# TYPE plume_ingest_readings_total counter\n");
        let _ = writeln!(
            out,
            "plume_ingest_readings_total{{outcome=\"accepted\"}} {}",
            load(&self.readings_accepted)
        );
        let _ = writeln!(
            out,
            "plume_ingest_readings_total{{outcome=\"duplicate\"}} {}",
            load(&self.readings_duplicate)
        );
        out.push_str(
            "# HELP plume_ingest_duplicate_requests_total Requests whose idempotency key was seen before.\n",
        );
        out.push_str("# TYPE plume_ingest_duplicate_requests_total counter\n");
        let _ = writeln!(
            out,
            "plume_ingest_duplicate_requests_total{{reason=\"replay\"}} {}",
            load(&self.duplicate_requests_replay)
        );
        let _ = writeln!(
            out,
            "plume_ingest_duplicate_requests_total{{reason=\"key_reused\"}} {}",
            load(&self.duplicate_requests_key_reused)
        );
        self.outbox.render(&mut out);
        self.render_maintenance(&mut out);
        out
    }
}

/// Upper bounds, in seconds, of the delivery latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0,
];

/// What this process's outbox relay did.
#[derive(Debug, Default)]
pub struct OutboxCounters {
    delivered: AtomicU64,
    failed_attempts: AtomicU64,
    dead_lettered: AtomicU64,
    /// Deliveries by latency bucket (the last one is `+Inf`), cumulative only when rendered.
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_micros: AtomicU64,
}

impl OutboxCounters {
    /// Counts a delivered event, `latency` after it was written.
    pub fn delivered(&self, latency: chrono::Duration) {
        let micros = latency.num_microseconds().unwrap_or(i64::MAX).max(0) as u64;
        let seconds = micros as f64 / 1e6;
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed delivery attempt.
    pub fn failed_attempt(&self) {
        self.failed_attempts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a dead-lettered event.
    pub fn dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let counters = [
            (
                "plume_outbox_delivered_total",
                "Events delivered by this process's relay.",
                &self.delivered,
            ),
            (
                "plume_outbox_failed_attempts_total",
                "Failed delivery attempts by this process's relay.",
                &self.failed_attempts,
            ),
            (
                "plume_outbox_dead_lettered_total",
                "Events this process's relay dead-lettered.",
                &self.dead_lettered,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                load(counter)
            );
        }
        let name = "plume_outbox_delivery_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} From an event being written to its delivery.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (index, counter) in self.latency_buckets.iter().enumerate() {
            cumulative += load(counter);
            let bound = LATENCY_BUCKETS
                .get(index)
                .map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let sum = load(&self.latency_sum_micros) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

//! Sensors and gateways that retry: each posts request after request, and re-sends a request that
//! failed (no answer, 5xx, 429) under the same idempotency key with the same body until it is
//! acknowledged. The ledger is their own record of what plume acknowledged, which the checks hold
//! the database to.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use plume_bench::credentials::BearerToken;

/// Readings in each v1 batch.
const V1_READINGS: u64 = 50;
/// Readings in each v2 bulk request, spread over [`V2_SITES`] sites.
const V2_READINGS: u64 = 2_000;
const V2_SITES: u64 = 5;
/// The readings lie in the last this many days, one a second; each client has a span of its own
/// there, and starts over on new sources when it has used it up.
const DAYS_BACK: u64 = 80;

/// What kind of client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    V1,
    V2,
}

/// A request, and what it adds to each site once stored.
#[derive(Debug, Clone)]
struct Planned {
    key: String,
    path: &'static str,
    content_type: &'static str,
    body: Bytes,
    /// (site, readings, milligrams) for each site it writes to.
    adds: Vec<(i64, i64, i64)>,
}

/// What the clients saw.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Requests acknowledged (201 stored, or 200 answered from a stored receipt).
    pub(crate) acknowledged: u64,
    /// Attempts after a request's first.
    pub(crate) retried: u64,
    /// Answers refused for the client's own fault (4xx other than 408/429): a bug, never expected.
    pub(crate) rejected: Vec<String>,
    /// Answers with a 5xx other than 503 (the documented answer to a fault): never expected.
    pub(crate) unexpected: Vec<String>,
    /// Failed attempts by what failed: an HTTP status, or `no answer`.
    pub(crate) failures: BTreeMap<String, u64>,
    /// Per site: readings and milligrams the acknowledged requests carried.
    pub(crate) sites: BTreeMap<i64, (i64, i64)>,
    /// The acknowledged requests' keys (each one's batch id) with the sites each wrote to.
    pub(crate) batches: Vec<(String, Vec<i64>)>,
    /// Each acknowledgement: when its (last) attempt was sent, and when the answer arrived.
    pub(crate) acked_at: Vec<(Instant, Instant)>,
    /// The v1 requests' latencies, from the first attempt to the acknowledgement, with when
    /// each was acknowledged.
    pub(crate) v1_latencies: Vec<(Instant, Duration)>,
    /// The longest any one attempt waited for its answer (or its failure).
    pub(crate) longest_attempt: Duration,
    /// Requests given up on when the run ended without an acknowledgement.
    pub(crate) unresolved: u64,
}

impl Ledger {
    /// How long after `from` the first write sent at or after `from` was acknowledged: a request
    /// sent before the fault and answered after it does not count.
    pub(crate) fn first_ack_after(&self, from: Instant) -> Option<Duration> {
        self.acked_at
            .iter()
            .filter(|(sent, _)| *sent >= from)
            .map(|(_, acked)| *acked)
            .min()
            .map(|acked| acked.duration_since(from))
    }
}

/// A fleet of clients posting to a plume (whose address may move) until told to stop.
#[derive(Debug)]
pub(crate) struct Fleet {
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    /// After `stop`, pending requests keep being retried until this deadline passes.
    give_up: Arc<Mutex<Option<Instant>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Who the clients are and where they send.
#[derive(Debug, Clone)]
pub(crate) struct FleetOptions {
    pub(crate) address: String,
    pub(crate) sites: Vec<i64>,
    pub(crate) v1_clients: usize,
    pub(crate) v2_clients: usize,
    /// A pause between one client's requests (0: back to back).
    pub(crate) pause: Duration,
}

impl Fleet {
    /// Starts the clients.
    pub(crate) fn start(options: &FleetOptions, token: &BearerToken) -> anyhow::Result<Self> {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let give_up = Arc::new(Mutex::new(None));
        let clients = (options.v1_clients + options.v2_clients).max(1) as u64;
        let span = DAYS_BACK * 24 * 3600 / clients;
        let base = Utc::now() - chrono::Duration::days(DAYS_BACK as i64);
        let kinds = std::iter::repeat_n(Api::V1, options.v1_clients)
            .chain(std::iter::repeat_n(Api::V2, options.v2_clients));
        let mut tasks = Vec::new();
        for (client, api) in kinds.enumerate() {
            let http = token
                .client_builder()
                .timeout(Duration::from_secs(90))
                .connect_timeout(Duration::from_secs(2))
                .build()?;
            let client = Client {
                id: client as u64,
                api,
                http,
                options: options.clone(),
                base: base + chrono::Duration::seconds((client as u64 * span) as i64),
                span,
                ledger: ledger.clone(),
                stop: stop.clone(),
                give_up: give_up.clone(),
            };
            tasks.push(tokio::spawn(client.run()));
        }
        Ok(Self {
            ledger,
            stop,
            give_up,
            tasks,
        })
    }

    /// Stops sending new requests, retries the pending ones for at most `drain`, and returns the
    /// ledger.
    pub(crate) async fn finish(self, drain: Duration) -> Ledger {
        *self.give_up.lock().unwrap() = Some(Instant::now() + drain);
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        std::mem::take(&mut *self.ledger.lock().unwrap())
    }

    /// A fleet that has finished, holding `ledger`.
    pub(crate) fn settled(ledger: Ledger) -> Self {
        Self {
            ledger: Arc::new(Mutex::new(ledger)),
            stop: Arc::new(AtomicBool::new(true)),
            give_up: Arc::new(Mutex::new(None)),
            tasks: Vec::new(),
        }
    }

    /// The latencies of the v1 requests acknowledged since `from`.
    pub(crate) fn v1_latencies_since(&self, from: Instant) -> Vec<Duration> {
        let ledger = self.ledger.lock().unwrap();
        ledger
            .v1_latencies
            .iter()
            .filter(|(at, _)| *at >= from)
            .map(|(_, latency)| *latency)
            .collect()
    }

    /// Acknowledgements so far.
    pub(crate) fn acknowledged(&self) -> u64 {
        self.ledger.lock().unwrap().acknowledged
    }

    /// The first acknowledgement at or after `from`, waiting at most `limit` for it.
    pub(crate) async fn first_ack_after(&self, from: Instant, limit: Duration) -> Option<Duration> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(after) = self.ledger.lock().unwrap().first_ack_after(from) {
                return Some(after);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[derive(Debug)]
struct Client {
    id: u64,
    api: Api,
    http: reqwest::Client,
    options: FleetOptions,
    base: DateTime<Utc>,
    /// Seconds of this client's span.
    span: u64,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    give_up: Arc<Mutex<Option<Instant>>>,
}

impl Client {
    async fn run(self) {
        let mut n = 0;
        while !self.stop.load(Ordering::Relaxed) {
            let planned = self.plan(n);
            n += 1;
            self.send_until_acknowledged(&planned).await;
            if !self.options.pause.is_zero() {
                tokio::time::sleep(self.options.pause).await;
            }
        }
    }

    /// The `n`th request: unique readings (this client's sources, one a second from its own
    /// start), so that each acknowledged request adds exactly its readings.
    fn plan(&self, n: u64) -> Planned {
        let sites = &self.options.sites;
        let (readings, spread) = match self.api {
            Api::V1 => (V1_READINGS, 1),
            Api::V2 => (V2_READINGS, V2_SITES.min(sites.len() as u64)),
        };
        let first = (self.id * 7 + n * 3) % sites.len() as u64;
        let mut adds: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
        let mut lines = Vec::with_capacity(readings as usize);
        for i in 0..readings {
            let offset = n * readings + i;
            let site = sites[((first + i % spread) % sites.len() as u64) as usize];
            let at = self.base + chrono::Duration::seconds((offset % self.span) as i64);
            let mg = 1_000 + (offset * 7919 % 100_000) as i64;
            let entry = adds.entry(site).or_default();
            entry.0 += 1;
            entry.1 += mg;
            lines.push((site, format!("fault-{}-{}", self.id, offset / self.span), at, mg));
        }
        let kg = |mg: i64| format!("{}.{:06}", mg / 1_000_000, mg % 1_000_000);
        let when = |at: &DateTime<Utc>| at.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let (path, content_type, body) = match self.api {
            Api::V1 => {
                let mut body = format!(r#"{{"site_id":{},"readings":["#, lines[0].0);
                for (i, (_, source, at, mg)) in lines.iter().enumerate() {
                    if i > 0 {
                        body.push(',');
                    }
                    let _ = write!(
                        body,
                        r#"{{"source_id":"{source}","timestamp":"{}","value":"{}"}}"#,
                        when(at),
                        kg(*mg)
                    );
                }
                body.push_str("]}");
                ("/v1/ingest", "application/json", body)
            }
            Api::V2 => {
                let mut body = String::with_capacity(lines.len() * 90);
                for (site, source, at, mg) in &lines {
                    let _ = writeln!(
                        body,
                        r#"{{"site_id":{site},"source_id":"{source}","timestamp":"{}","value":"{}"}}"#,
                        when(at),
                        kg(*mg)
                    );
                }
                ("/v2/ingest", "application/x-ndjson", body)
            }
        };
        Planned {
            key: format!("fault-{}-{}-{n}", self.id, uuid::Uuid::new_v4().simple()),
            path,
            content_type,
            body: Bytes::from(body),
            adds: adds
                .into_iter()
                .map(|(site, (count, mg))| (site, count, mg))
                .collect(),
        }
    }

    async fn send_until_acknowledged(&self, planned: &Planned) {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            if attempt > 0 {
                self.ledger.lock().unwrap().retried += 1;
            }
            attempt += 1;
            let attempt_started = Instant::now();
            let sent = self
                .http
                .post(format!("{}{}", self.options.address, planned.path))
                .header("content-type", planned.content_type)
                .header("idempotency-key", &planned.key)
                .body(planned.body.clone())
                .send()
                .await;
            {
                let mut ledger = self.ledger.lock().unwrap();
                ledger.longest_attempt = ledger.longest_attempt.max(attempt_started.elapsed());
            }
            let mut wait = Duration::from_millis(100 * u64::from(attempt.min(20)));
            match sent {
                Ok(response) if response.status().is_success() => {
                    // The body is read so that a cut-off answer counts as no answer.
                    if response.bytes().await.is_ok() {
                        self.acknowledge(planned, started, attempt_started);
                        return;
                    }
                    self.failed("no answer".into());
                }
                Ok(response) => {
                    let status = response.status();
                    if let Some(after) = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                    {
                        wait = Duration::from_secs(after.min(2)).max(wait);
                    }
                    let text = response.text().await.unwrap_or_default();
                    if status.is_server_error() && status != 503 {
                        // docs/API.md: a fault is 503 UNAVAILABLE, safe to retry; any other 5xx
                        // is a bug. Retried all the same, so that the checks still see the end.
                        self.ledger.lock().unwrap().unexpected.push(format!(
                            "{} {status}: {}",
                            planned.key,
                            text.chars().take(300).collect::<String>()
                        ));
                    }
                    if status.is_client_error() && status != 408 && status != 429 {
                        self.ledger.lock().unwrap().rejected.push(format!(
                            "{} {status}: {}",
                            planned.key,
                            text.chars().take(300).collect::<String>()
                        ));
                        return;
                    }
                    self.failed(status.as_u16().to_string());
                }
                Err(_) => self.failed("no answer".into()),
            }
            let give_up = *self.give_up.lock().unwrap();
            if give_up.is_some_and(|at| Instant::now() > at) {
                self.ledger.lock().unwrap().unresolved += 1;
                return;
            }
            tokio::time::sleep(wait.min(Duration::from_secs(2))).await;
        }
    }

    fn acknowledge(&self, planned: &Planned, started: Instant, attempt_started: Instant) {
        let mut ledger = self.ledger.lock().unwrap();
        ledger.acknowledged += 1;
        ledger.acked_at.push((attempt_started, Instant::now()));
        if self.api == Api::V1 {
            ledger.v1_latencies.push((Instant::now(), started.elapsed()));
        }
        for (site, count, mg) in &planned.adds {
            let entry = ledger.sites.entry(*site).or_default();
            entry.0 += count;
            entry.1 += mg;
        }
        let sites = planned.adds.iter().map(|(site, _, _)| *site).collect();
        ledger.batches.push((planned.key.clone(), sites));
    }

    fn failed(&self, what: String) {
        *self.ledger.lock().unwrap().failures.entry(what).or_default() += 1;
    }
}

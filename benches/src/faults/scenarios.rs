//! The scenarios: each sets up its world, runs the load, stages its fault, and checks.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use axum::body::Bytes;

use crate::clients::{Fleet, FleetOptions, Ledger};
use crate::proxy::Proxy;
use crate::receiver::{Mode, Webhook};
use crate::world::{self, Fixtures, Plume, Postgres, Store};
use crate::{checks, Args, Report, Scenario};

/// How long plume may take to answer /ready again after it was started or its database came back.
pub(crate) const READY_LIMIT: Duration = Duration::from_secs(120);

pub(crate) async fn run(args: &Args) -> anyhow::Result<Report> {
    match &args.scenario {
        Scenario::KillPlume => kill_plume(args).await,
        Scenario::DbCrash => db_crash(args).await,
        Scenario::DbCrashEmbedded => db_crash_embedded(args).await,
        Scenario::Partition {
            fault_seconds,
            request_timeout,
        } => partition(args, *fault_seconds, *request_timeout).await,
        Scenario::DiskFull {
            fault_seconds,
            disk_mib,
        } => disk_full(args, *fault_seconds, *disk_mib).await,
        Scenario::Webhook { fault_seconds } => webhook(args, *fault_seconds).await,
        Scenario::Flood {
            flood_clients,
            flood_mib,
            bulk_memory_mib,
        } => flood(args, *flood_clients, *flood_mib, *bulk_memory_mib).await,
        Scenario::Soak {
            minutes,
            fault_every,
            pause_ms,
        } => soak(args, *minutes, *fault_every, *pause_ms).await,
        Scenario::CitusRebalance { coordinator_url } => crate::citus::rebalance(args, coordinator_url).await,
    }
}

/// How long after the load the outbox may take to deliver everything when no relay was killed:
/// a relay that loses its database mid-delivery writes its progress back as soon as the database
/// is back, rather than leave its streams leased for a minute.
const OUTBOX_DRAIN_BOUND: Duration = Duration::from_secs(20);

/// The bound when a relay was killed: its leases (a minute by default) run out first.
const KILLED_RELAY_DRAIN_BOUND: Duration = Duration::from_secs(80);

/// A recovery measured as the first acknowledged write sent after the fault's end, `what` saying
/// so in the scenario's words.
pub(crate) fn first_write(took: Option<Duration>, what: &'static str) -> Option<(&'static str, Duration)> {
    took.map(|took| (what, took))
}

/// The clients of `args`, against `plume`.
pub(crate) fn fleet(
    args: &Args,
    fixtures: &Fixtures,
    plume: &Plume,
    pause: Duration,
) -> anyhow::Result<Fleet> {
    let options = FleetOptions {
        address: plume.address(),
        sites: fixtures.sites.clone(),
        v1_clients: args.v1_clients,
        v2_clients: args.v2_clients,
        pause,
    };
    Fleet::start(&options, &fixtures.token)
}

pub(crate) fn seconds(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A scenario's world on a PostgreSQL of its own: the server, its sites and ingest client, the
/// webhook, and plume serving it.
struct Stage {
    pg: Postgres,
    fixtures: Fixtures,
    webhook: Webhook,
    plume: Plume,
}

impl Stage {
    /// Creates `sites` sites and an ingest client on `pg`, starts the webhook, and plume with
    /// `extra` arguments on `url` (the server's own when `None`: a proxy's otherwise).
    async fn start(
        args: &Args,
        pg: Postgres,
        url: Option<String>,
        sites: usize,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let fixtures = Fixtures::create(&pg.url, sites).await?;
        let webhook = Webhook::start().await?;
        let store = Store::Url(url.unwrap_or_else(|| pg.url.clone()));
        let plume = Plume::start(&args.plume_binary, store, &webhook.url(), extra).await?;
        Ok(Self {
            pg,
            fixtures,
            webhook,
            plume,
        })
    }

    /// Ends the load, runs every check into `report`, and stops plume and PostgreSQL.
    async fn finish(
        self,
        args: &Args,
        report: &mut Report,
        fleet: Fleet,
        requeued: &HashSet<String>,
    ) -> anyhow::Result<Ledger> {
        let ledger = conclude(
            args,
            report,
            fleet,
            &self.fixtures,
            &self.webhook,
            &self.pg.url,
            requeued,
        )
        .await?;
        drop(self.plume);
        self.pg.stop().await;
        Ok(ledger)
    }
}

/// Ends the load and runs every check into `report`.
pub(crate) async fn conclude(
    args: &Args,
    report: &mut Report,
    fleet: Fleet,
    fixtures: &Fixtures,
    webhook: &Webhook,
    url: &str,
    requeued: &HashSet<String>,
) -> anyhow::Result<Ledger> {
    let ledger = fleet.finish(seconds(args.drain_seconds)).await;
    report.acknowledged = ledger.acknowledged;
    report.retried = ledger.retried;
    report.failures = ledger.failures.clone();
    checks::integrity(
        &fixtures.pool,
        &ledger,
        &args.plume_binary,
        url,
        &mut report.findings,
    )
    .await?;
    let drained = checks::outbox(
        &fixtures.pool,
        webhook,
        &ledger,
        requeued,
        seconds(args.drain_seconds),
        &mut report.findings,
    )
    .await?;
    report.notes.push(format!(
        "outbox drained {:.1} s after the load",
        drained.as_secs_f64()
    ));
    let bound = report.outbox_bound.unwrap_or(OUTBOX_DRAIN_BOUND);
    if drained > bound {
        report.findings.problems.push(format!(
            "the outbox took {:.1} s after the load to deliver everything; the bound is {} s",
            drained.as_secs_f64(),
            bound.as_secs()
        ));
    }
    report.notes.push(format!(
        "longest wait for an answer {:.1} s",
        ledger.longest_attempt.as_secs_f64()
    ));
    Ok(ledger)
}

async fn kill_plume(args: &Args) -> anyhow::Result<Report> {
    let mut report = Report {
        scenario: "kill -9 of plume".into(),
        outbox_bound: Some(KILLED_RELAY_DRAIN_BOUND),
        ..Report::default()
    };
    let pg = Postgres::start(None, &args.pg_settings).await?;
    let mut stage = Stage::start(args, pg, None, args.sites, &[]).await?;
    let fleet = fleet(args, &stage.fixtures, &stage.plume, Duration::ZERO)?;
    tokio::time::sleep(seconds(args.load_seconds)).await;
    stage.plume.kill();
    tokio::time::sleep(seconds(1)).await;
    let restarted = Instant::now();
    stage.plume.restart()?;
    let ready = stage.plume.wait_until_ready(READY_LIMIT).await?;
    report.recovery = first_write(
        fleet.first_ack_after(restarted, READY_LIMIT).await,
        "first acknowledged write sent after stage.plume's restart",
    );
    report
        .notes
        .push(format!("ready {:.1} s after its start", ready.as_secs_f64()));
    tokio::time::sleep(seconds(args.load_seconds)).await;
    stage.finish(args, &mut report, fleet, &HashSet::new()).await?;
    Ok(report)
}

async fn db_crash(args: &Args) -> anyhow::Result<Report> {
    let mut report = Report {
        scenario: "PostgreSQL crash (external)".into(),
        ..Report::default()
    };
    let pg = Postgres::start(None, &args.pg_settings).await?;
    let stage = Stage::start(args, pg, None, args.sites, &[]).await?;
    let fleet = fleet(args, &stage.fixtures, &stage.plume, Duration::ZERO)?;
    tokio::time::sleep(seconds(args.load_seconds)).await;
    let crashed = Instant::now();
    stage.pg.crash()?;
    report.recovery = first_write(
        fleet.first_ack_after(crashed, READY_LIMIT).await,
        "first acknowledged write sent after the crash (PostgreSQL's restart and recovery included)",
    );
    tokio::time::sleep(seconds(args.load_seconds)).await;
    stage.finish(args, &mut report, fleet, &HashSet::new()).await?;
    Ok(report)
}

async fn db_crash_embedded(args: &Args) -> anyhow::Result<Report> {
    let mut report = Report {
        scenario: "PostgreSQL crash (embedded)".into(),
        ..Report::default()
    };
    let dir = tempfile::Builder::new()
        .prefix("plume-faults-")
        .tempdir_in("/tmp")?;
    let data_dir = dir.path().join("data");
    let webhook = Webhook::start().await?;
    let plume = Plume::start(
        &args.plume_binary,
        Store::Embedded(data_dir.clone()),
        &webhook.url(),
        &[],
    )
    .await?;
    let url = world::embedded_url(&data_dir)?;
    let fixtures = Fixtures::create(&url, args.sites).await?;
    let fleet = fleet(args, &fixtures, &plume, Duration::ZERO)?;
    tokio::time::sleep(seconds(args.load_seconds)).await;
    let crashed = Instant::now();
    world::crash_postmaster(&data_dir.join("pgdata"))?;
    let not_ready = saw_not_ready(&plume, seconds(10)).await;
    report.recovery = first_write(
        fleet.first_ack_after(crashed, READY_LIMIT).await,
        "first acknowledged write sent after the crash (PostgreSQL's restart and recovery included)",
    );
    report.notes.push(match not_ready {
        Some(after) => format!("/ready answered 503 {} ms after the crash", after.as_millis()),
        None => "/ready never said not ready".into(),
    });
    if not_ready.is_none() {
        report
            .findings
            .problems
            .push("/ready kept answering 200 while PostgreSQL was down".into());
    }
    tokio::time::sleep(seconds(args.load_seconds)).await;
    // The pool's connections died with the server: checks use a new one.
    let pool = match plume::db::connect(&url, &plume::db::PoolSettings::default()).await {
        Ok(pool) => pool,
        Err(error) => {
            let ledger = fleet.finish(seconds(args.drain_seconds)).await;
            report.acknowledged = ledger.acknowledged;
            report.retried = ledger.retried;
            report.failures = ledger.failures;
            report.findings.problems.push(format!(
                "PostgreSQL never came back ({error}); {} requests were never acknowledged",
                ledger.unresolved
            ));
            return Ok(report);
        }
    };
    let fixtures = Fixtures { pool, ..fixtures };
    conclude(
        args,
        &mut report,
        fleet,
        &fixtures,
        &webhook,
        &url,
        &HashSet::new(),
    )
    .await?;
    drop(plume);
    drop(dir);
    Ok(report)
}

/// How long after now `/ready` first answers anything but 200 (an answer, not a timeout of this
/// client's), watched for at most `limit`.
async fn saw_not_ready(plume: &Plume, limit: Duration) -> Option<Duration> {
    let http = reqwest::Client::builder().timeout(seconds(10)).build().ok()?;
    let started = Instant::now();
    while started.elapsed() < limit {
        let answer = http.get(format!("{}/ready", plume.address())).send().await;
        if answer.is_ok_and(|r| !r.status().is_success()) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// How much later than plume's request timeout an answer may come: the client's own view includes
/// the loopback round trip and the runtime's scheduling on a loaded machine.
const ANSWER_MARGIN: Duration = Duration::from_secs(2);

async fn partition(args: &Args, fault_seconds: u64, request_timeout: u64) -> anyhow::Result<Report> {
    let mut report = Report {
        scenario: format!("network silent for {fault_seconds} s"),
        ..Report::default()
    };
    let pg = Postgres::start(None, &args.pg_settings).await?;
    let proxy = Proxy::start(pg.address).await?;
    let url = pg.url_via(proxy.port);
    let stage = Stage::start(
        args,
        pg,
        Some(url),
        args.sites,
        &["--request-timeout", &format!("{request_timeout}s")],
    )
    .await?;
    let fleet = fleet(args, &stage.fixtures, &stage.plume, Duration::ZERO)?;
    tokio::time::sleep(seconds(args.load_seconds)).await;
    proxy.silence();
    let silenced = Instant::now();
    let before = fleet.acknowledged();
    let not_ready = saw_not_ready(&stage.plume, seconds(fault_seconds)).await;
    tokio::time::sleep(seconds(fault_seconds).saturating_sub(silenced.elapsed())).await;
    let during = fleet.acknowledged() - before;
    proxy.heal();
    let healed = Instant::now();
    report.recovery = first_write(
        fleet.first_ack_after(healed, READY_LIMIT).await,
        "first acknowledged write sent after the network healed",
    );
    report.notes.push(match not_ready {
        Some(after) => format!(
            "/ready answered 503 {:.1} s into the silence",
            after.as_secs_f64()
        ),
        None => "/ready never said not ready".into(),
    });
    report
        .notes
        .push(format!("{during} requests acknowledged during the silence"));
    tokio::time::sleep(seconds(args.load_seconds)).await;
    let ledger = stage.finish(args, &mut report, fleet, &HashSet::new()).await?;
    let bound = seconds(request_timeout) + ANSWER_MARGIN;
    if ledger.longest_attempt > bound {
        report.findings.problems.push(format!(
            "a request waited {:.1} s for its answer; stage.plume's request timeout bounds it at {request_timeout} s",
            ledger.longest_attempt.as_secs_f64()
        ));
    }
    Ok(report)
}

/// A tmpfs mounted for the scenario, unmounted when dropped (before its directory is removed).
struct Mount {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mount {
    fn tmpfs(mib: u64) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("plume-faults-disk-")
            .tempdir_in("/tmp")?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0755"), "tmpfs"])
            .arg(dir.path())
            .status()
            .context("running mount")?;
        ensure!(
            status.success(),
            "mounting a tmpfs failed: the disk-full scenario needs root"
        );
        Ok(Self {
            path: dir.path().to_owned(),
            _dir: dir,
        })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Writes `path` until the filesystem is full; returns the bytes written.
fn fill(path: &Path) -> anyhow::Result<u64> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    let chunk = vec![0xA5u8; 1024 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(error) if error.kind() == std::io::ErrorKind::StorageFull => break,
            Err(error) => return Err(error.into()),
        }
    }
    Ok(written)
}

async fn disk_full(args: &Args, fault_seconds: u64, disk_mib: u64) -> anyhow::Result<Report> {
    let mut report = Report {
        scenario: format!("database disk full for {fault_seconds} s"),
        ..Report::default()
    };
    let mount = Mount::tmpfs(disk_mib)?;
    let pg = Postgres::start(Some(&mount.path.join("cluster")), &args.pg_settings).await?;
    let mut stage = Stage::start(args, pg, None, args.sites, &[]).await?;
    let fleet = fleet(args, &stage.fixtures, &stage.plume, Duration::ZERO)?;
    tokio::time::sleep(seconds(args.load_seconds)).await;
    let filler = mount.path.join("filler");
    let filled = Instant::now();
    let mut written = fill(&filler)?;
    let before = fleet.acknowledged();
    // PostgreSQL frees space as it recycles WAL: keep the disk full for the whole fault.
    while filled.elapsed() < seconds(fault_seconds) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        written += fill(&filler.with_extension(format!("{}", filled.elapsed().as_millis())))?;
    }
    let during = fleet.acknowledged() - before;
    for entry in std::fs::read_dir(&mount.path)? {
        let path = entry?.path();
        if path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("filler"))
        {
            std::fs::remove_file(path)?;
        }
    }
    let freed = Instant::now();
    report.recovery = first_write(
        fleet.first_ack_after(freed, READY_LIMIT).await,
        "first acknowledged write sent after space was freed",
    );
    report.notes.push(format!(
        "{} MiB written to fill the disk; {during} requests acknowledged while it was full",
        written / (1024 * 1024)
    ));
    tokio::time::sleep(seconds(args.load_seconds)).await;
    // PostgreSQL may have restarted while its disk was full: the checks use new connections.
    stage.fixtures.pool = plume::db::connect(&stage.pg.url, &plume::db::PoolSettings::default()).await?;
    stage.finish(args, &mut report, fleet, &HashSet::new()).await?;
    drop(mount);
    Ok(report)
}

async fn webhook(args: &Args, fault_seconds: u64) -> anyhow::Result<Report> {
    let mut report = Report {
        scenario: format!("webhook down, failing, then slow, {fault_seconds} s each"),
        ..Report::default()
    };
    let pg = Postgres::start(None, &args.pg_settings).await?;
    let stage = Stage::start(
        args,
        pg,
        None,
        args.sites,
        &["--alert-webhook-timeout-secs", "1", "--relay-max-attempts", "4"],
    )
    .await?;
    let fleet = fleet(args, &stage.fixtures, &stage.plume, Duration::ZERO)?;
    tokio::time::sleep(seconds(args.load_seconds)).await;
    for mode in [Mode::Down, Mode::Failing, Mode::Slow(seconds(3))] {
        stage.webhook.set_mode(mode).await?;
        tokio::time::sleep(seconds(fault_seconds)).await;
    }
    stage.webhook.set_mode(Mode::Healthy).await?;
    let healed = Instant::now();
    let drained = backlog_drained(&stage.fixtures, seconds(args.drain_seconds)).await?;
    report.recovery = drained.map(|took| {
        (
            "the backlog of the failure delivered (or dead-lettered) after the stage.webhook came back",
            took,
        )
    });
    tokio::time::sleep(seconds(args.load_seconds).saturating_sub(healed.elapsed())).await;
    let ledger = fleet.finish(seconds(args.drain_seconds)).await;
    // The events that used up their attempts wait in the dead letters.
    let dead = wait_for_backlog(&stage.fixtures, &stage.webhook, seconds(args.drain_seconds)).await?;
    report.notes.push(format!(
        "{} failed deliveries; {} events dead-lettered",
        stage.webhook.refused(),
        dead.len(),
    ));
    if dead.is_empty() {
        report
            .findings
            .problems
            .push("no event was dead-lettered: the scenario did not reach the dead letters".into());
    }
    let status = Command::new(&args.plume_binary)
        .args(["outbox", "retry-dead", "--all", "--database-url", &stage.pg.url])
        .env("RUST_LOG", "error")
        .status()?;
    ensure!(status.success(), "stage.plume outbox retry-dead failed");
    // Holds the ledger to the database and the stage.webhook to the outbox, as every scenario does.
    let replay = Fleet::settled(ledger);
    stage.finish(args, &mut report, replay, &dead).await?;
    Ok(report)
}

/// How long from now until every event written so far is delivered or dead-lettered, waiting
/// at most `limit`.
async fn backlog_drained(fixtures: &Fixtures, limit: Duration) -> anyhow::Result<Option<Duration>> {
    let started = Instant::now();
    let heads: Vec<(i64, i64)> = sqlx::query_as("select site_id, head_seq from outbox_streams")
        .fetch_all(&fixtures.pool)
        .await?;
    let (sites, heads): (Vec<i64>, Vec<i64>) = heads.into_iter().unzip();
    while started.elapsed() < limit {
        let behind: i64 = sqlx::query_scalar(
            "select count(*) from outbox_streams s join unnest($1::bigint[], $2::bigint[]) h(site_id, head)
                 using (site_id) where s.delivered_seq < h.head",
        )
        .bind(&sites)
        .bind(&heads)
        .fetch_one(&fixtures.pool)
        .await?;
        if behind == 0 {
            return Ok(Some(started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(None)
}

/// Waits until every event is delivered or dead-lettered; returns the dead-lettered events' ids.
async fn wait_for_backlog(
    fixtures: &Fixtures,
    webhook: &Webhook,
    limit: Duration,
) -> anyhow::Result<HashSet<String>> {
    let started = Instant::now();
    loop {
        let (events, dead): (i64, i64) =
            sqlx::query_as("select (select count(*) from outbox_events), (select count(*) from outbox_dead)")
                .fetch_one(&fixtures.pool)
                .await?;
        if webhook.distinct() as i64 + dead >= events || started.elapsed() > limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar("select event_id from outbox_dead")
        .fetch_all(&fixtures.pool)
        .await?;
    Ok(ids.into_iter().map(|id| id.to_string()).collect())
}

/// What the rest of plume may hold beside its bulk memory budget: the v1 batches in flight,
/// connection buffers, caches, the allocator's slack.
const HEADROOM_MIB: u64 = 256;

async fn flood(
    args: &Args,
    flood_clients: usize,
    flood_mib: usize,
    bulk_memory_mib: u64,
) -> anyhow::Result<Report> {
    let mut report = Report {
        scenario: format!("{flood_clients} bulk uploads of {flood_mib} MiB at once"),
        ..Report::default()
    };
    let pg = Postgres::start(None, &args.pg_settings).await?;
    let mut stage = Stage::start(
        args,
        pg,
        None,
        args.sites + 1,
        &["--bulk-memory-mib", &bulk_memory_mib.to_string()],
    )
    .await?;
    // The last site takes the flood; the clients keep to the others.
    let flood_site = stage.fixtures.sites[args.sites];
    stage.fixtures.sites.truncate(args.sites);
    let fleet = Fleet::start(
        &FleetOptions {
            address: stage.plume.address(),
            sites: stage.fixtures.sites.clone(),
            v1_clients: args.v1_clients,
            v2_clients: 0,
            pause: Duration::ZERO,
        },
        &stage.fixtures.token,
    )?;
    tokio::time::sleep(seconds(args.load_seconds)).await;
    let calm = fleet.v1_latencies_since(Instant::now() - seconds(args.load_seconds));
    let body = flood_body(flood_site, flood_mib * 1024 * 1024);
    let flood_started = Instant::now();
    let http = stage
        .fixtures
        .token
        .client_builder()
        .timeout(seconds(300))
        .build()?;
    let uploads: Vec<_> = (0..flood_clients)
        .map(|n| {
            let request = http
                .post(format!("{}/v2/ingest", stage.plume.address()))
                .header("content-type", "application/json")
                .header("idempotency-key", format!("flood-{n}"))
                .body(body.clone());
            tokio::spawn(async move {
                match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let retry_after = response.headers().contains_key("retry-after");
                        let _ = response.bytes().await;
                        (Some(status), retry_after)
                    }
                    Err(_) => (None, false),
                }
            })
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::<String, u64>::new();
    let mut refused_without_retry_after = 0;
    for upload in uploads {
        let (status, retry_after) = upload.await?;
        let what = status.map_or("no answer".into(), |s| s.to_string());
        if matches!(status, Some(429 | 503)) && !retry_after {
            refused_without_retry_after += 1;
        }
        *statuses.entry(what).or_default() += 1;
    }
    let flood_took = flood_started.elapsed();
    let during = fleet.v1_latencies_since(flood_started);
    let peak = stage.plume.peak_rss();
    report.notes.push(format!(
        "uploads answered {} in {:.1} s",
        statuses
            .iter()
            .map(|(s, n)| format!("{n}× {s}"))
            .collect::<Vec<_>>()
            .join(", "),
        flood_took.as_secs_f64()
    ));
    report
        .notes
        .push(format!("stage.plume's peak RSS {} MiB", peak / (1024 * 1024)));
    let bound = (bulk_memory_mib + HEADROOM_MIB) * 1024 * 1024;
    if peak > bound {
        report.findings.problems.push(format!(
            "stage.plume's peak RSS {} MiB is over its bound of {} MiB (--bulk-memory-mib {bulk_memory_mib} + {HEADROOM_MIB} MiB)",
            peak / (1024 * 1024),
            bound / (1024 * 1024)
        ));
    }
    report.notes.push(format!(
        "v1 batches: p50 {} ms, p99 {} ms before the flood; p50 {} ms, p99 {} ms during it ({} batches)",
        percentile(&calm, 0.5),
        percentile(&calm, 0.99),
        percentile(&during, 0.5),
        percentile(&during, 0.99),
        during.len()
    ));
    if refused_without_retry_after > 0 {
        report.findings.problems.push(format!(
            "{refused_without_retry_after} refusals came without Retry-After"
        ));
    }
    if statuses.keys().any(|s| s.starts_with('5') && s != "503") {
        report
            .findings
            .problems
            .push("an upload was answered with a 5xx other than 503".into());
    }
    let flood_rows: i64 = sqlx::query_scalar("select count(*) from measurements where site_id = $1")
        .bind(flood_site)
        .fetch_one(&stage.fixtures.pool)
        .await?;
    let stored_any = statuses.contains_key("201");
    if flood_rows != if stored_any { FLOOD_READINGS as i64 } else { 0 } {
        report.findings.problems.push(format!(
            "the flood's site holds {flood_rows} readings; its body has {FLOOD_READINGS}"
        ));
    }
    stage.finish(args, &mut report, fleet, &HashSet::new()).await?;
    Ok(report)
}

/// Readings in a flood body: the most one bulk request may hold.
const FLOOD_READINGS: usize = plume::ingest::bulk::MAX_READINGS_PER_BULK;

/// A JSON bulk body of [`FLOOD_READINGS`] readings for `site`, padded with spaces to `bytes`.
fn flood_body(site: i64, bytes: usize) -> Bytes {
    use std::fmt::Write;
    let start = chrono::Utc::now() - chrono::Duration::days(3);
    let mut body = String::with_capacity(bytes);
    body.push_str(r#"{"readings":["#);
    for i in 0..FLOOD_READINGS {
        if i > 0 {
            body.push(',');
        }
        let at = start + chrono::Duration::seconds(i as i64);
        let _ = write!(
            body,
            r#"{{"site_id":{site},"source_id":"flood","timestamp":"{}","value":"0.001"}}"#,
            at.format("%Y-%m-%dT%H:%M:%SZ")
        );
    }
    body.push_str("]}");
    let padding = bytes.saturating_sub(body.len());
    body.extend(std::iter::repeat_n(' ', padding));
    Bytes::from(body)
}

/// The nearest-rank `p` percentile of `latencies`, in milliseconds (0 when empty).
fn percentile(latencies: &[Duration], p: f64) -> u128 {
    if latencies.is_empty() {
        return 0;
    }
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    plume_bench::nearest_rank(&sorted, p).as_millis()
}

async fn soak(args: &Args, minutes: u64, fault_every: u64, pause_ms: u64) -> anyhow::Result<Report> {
    let mut report = Report {
        scenario: format!("soak: {minutes} min, a fault every {fault_every} s"),
        outbox_bound: Some(KILLED_RELAY_DRAIN_BOUND),
        ..Report::default()
    };
    let pg = Postgres::start(None, &args.pg_settings).await?;
    let proxy = Proxy::start(pg.address).await?;
    let url = pg.url_via(proxy.port);
    let mut stage = Stage::start(args, pg, Some(url), args.sites, &[]).await?;
    let fleet = fleet(
        args,
        &stage.fixtures,
        &stage.plume,
        Duration::from_millis(pause_ms),
    )?;
    let started = Instant::now();
    let end = started + seconds(minutes * 60);
    let mut next_fault = started + seconds(fault_every);
    let mut next_sample = started + seconds(60);
    let mut faults = 0usize;
    let mut recoveries = Vec::new();
    let mut last_acked = 0;
    println!("minute  RSS MB  acknowledged/s  v1 p50 ms  v1 p99 ms");
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if Instant::now() >= next_sample {
            let minute = fleet.v1_latencies_since(next_sample - seconds(60));
            let acked = fleet.acknowledged();
            println!(
                "{:>6}  {:>6}  {:>14}  {:>9}  {:>9}",
                started.elapsed().as_secs() / 60,
                stage.plume.rss() / 1_000_000,
                (acked - last_acked) / 60,
                percentile(&minute, 0.5),
                percentile(&minute, 0.99)
            );
            last_acked = acked;
            next_sample += seconds(60);
        }
        if Instant::now() >= next_fault {
            let (what, ended) = match faults % 3 {
                0 => {
                    stage.plume.kill();
                    tokio::time::sleep(seconds(1)).await;
                    let at = Instant::now();
                    stage.plume.restart()?;
                    stage.plume.wait_until_ready(READY_LIMIT).await?;
                    ("stage.plume killed", at)
                }
                1 => {
                    let at = Instant::now();
                    stage.pg.crash()?;
                    ("PostgreSQL crashed", at)
                }
                _ => {
                    proxy.silence();
                    tokio::time::sleep(seconds(10)).await;
                    proxy.heal();
                    ("network silent for 10 s", Instant::now())
                }
            };
            let recovery = fleet.first_ack_after(ended, READY_LIMIT).await;
            println!(
                "fault at {} s: {what}; first acknowledged write {} ms after",
                started.elapsed().as_secs(),
                recovery.map_or("never".into(), |r| r.as_millis().to_string())
            );
            recoveries.extend(recovery);
            faults += 1;
            next_fault += seconds(fault_every);
        }
    }
    report.notes.push(format!(
        "{faults} faults; slowest recovery {} ms; stage.plume's peak RSS {} MB",
        recoveries.iter().max().map_or(0, |r| r.as_millis()),
        stage.plume.peak_rss() / 1_000_000
    ));
    report.recovery = recoveries.iter().max().map(|took| {
        (
            "the slowest recovery: first acknowledged write after a fault ended",
            *took,
        )
    });
    stage.finish(args, &mut report, fleet, &HashSet::new()).await?;
    Ok(report)
}

//! `plume-faults`: plume under the faults of a real deployment, checked for what matters. Each
//! scenario runs real `plume serve` processes on a real PostgreSQL with clients that retry under
//! the same idempotency key until acknowledged, stages one fault, lets plume recover, then checks
//! that no acknowledged reading is missing and none is counted twice (against the clients' own
//! ledger and with `plume verify`), and that the webhook received every event of every
//! acknowledged batch, in per-site order, with no gap. It prints what it measured: requests
//! acknowledged and retried, readings lost and double-counted (both must be 0), and the time from
//! the fault's end to the first acknowledged write. Exit status 1 when a check fails.
//!
//! See docs/RELIABILITY.md for what each scenario stages and the figures of a run.

mod checks;
mod citus;
mod clients;
mod proxy;
mod receiver;
mod scenarios;
mod world;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Stages a fault under load and checks that nothing acknowledged was lost or counted twice.
#[derive(Debug, Parser)]
#[command(name = "plume-faults")]
struct Args {
    /// The plume binary to run as the service.
    #[arg(long, default_value = "target/debug/plume", global = true)]
    plume_binary: PathBuf,
    /// Seconds of load before the fault, and again after recovery.
    #[arg(long, default_value_t = 5, global = true)]
    load_seconds: u64,
    /// Clients posting v1 batches (50 readings, one site each).
    #[arg(long, default_value_t = 8, global = true)]
    v1_clients: usize,
    /// Clients posting v2 bulk requests (2,000 readings over 5 sites each).
    #[arg(long, default_value_t = 2, global = true)]
    v2_clients: usize,
    /// Sites the clients write to.
    #[arg(long, default_value_t = 20, global = true)]
    sites: usize,
    /// Most seconds the clients keep retrying their pending requests after the load, and the
    /// outbox is given to deliver every event, before the run counts as failed.
    #[arg(long, default_value_t = 120, global = true)]
    drain_seconds: u64,
    /// A PostgreSQL setting (`name=value`) for the scenario's own server, beyond its durable
    /// defaults; repeatable. E.g. `synchronous_commit=off` shows what a crash then loses.
    #[arg(long = "pg-setting", global = true, value_parser = parse_setting)]
    pg_settings: Vec<(String, String)>,
    /// Also append the result, as a Markdown table row, to this file.
    #[arg(long, global = true)]
    results: Option<PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not name=value"))?;
    Ok((name.trim().to_owned(), value.trim().to_owned()))
}

#[derive(Debug, Clone, Subcommand)]
enum Scenario {
    /// `kill -9` of plume mid-load, started again after a second; clients retry meanwhile.
    KillPlume,
    /// PostgreSQL crashes mid-load (`pg_ctl stop -m immediate`) and is started again by its
    /// supervisor (an external server: plume runs with --database-url).
    DbCrash,
    /// The embedded PostgreSQL crashes mid-load; plume notices, answers 503 and starts it again.
    DbCrashEmbedded,
    /// The network between plume and PostgreSQL goes silent (connections kept, no byte passes)
    /// for --fault-seconds, through a proxy this tool runs.
    Partition {
        /// How long the network stays silent.
        #[arg(long, default_value_t = 30)]
        fault_seconds: u64,
        /// plume's --request-timeout, in seconds: the bound on every answer the scenario checks.
        #[arg(long, default_value_t = 10)]
        request_timeout: u64,
    },
    /// The database's disk fills up (PostgreSQL on a tmpfs of its own, filled by a file until
    /// writes fail) for --fault-seconds, then the file is removed. Needs root (it mounts).
    DiskFull {
        /// How long the disk stays full.
        #[arg(long, default_value_t = 15)]
        fault_seconds: u64,
        /// The tmpfs's size in MiB.
        #[arg(long, default_value_t = 768)]
        disk_mib: u64,
    },
    /// The alerting webhook is down, then answers 500, then answers too late, each for
    /// --fault-seconds; events that use up their attempts are dead-lettered, and
    /// `plume outbox retry-dead --all` delivers them once it is back.
    Webhook {
        /// How long each of the three failures lasts.
        #[arg(long, default_value_t = 10)]
        fault_seconds: u64,
    },
    /// --flood-clients clients each post one --flood-mib MiB bulk body at once, while the v1
    /// clients keep posting; reports plume's peak memory and the v1 batches' latency.
    Flood {
        /// Clients in the flood.
        #[arg(long, default_value_t = 200)]
        flood_clients: usize,
        /// Each flood body's size, in MiB (at most plume's --max-bulk-body-bytes).
        #[arg(long, default_value_t = 32)]
        flood_mib: usize,
        /// plume's --bulk-memory-mib. Its peak memory must stay under this plus
        /// HEADROOM_MIB (the rest of the service).
        #[arg(long, default_value_t = 512)]
        bulk_memory_mib: u64,
    },
    /// A long run at a steady rate with a fault every --fault-every seconds (plume killed,
    /// PostgreSQL crashed, the network silent for 10 s, in turn), sampling plume's memory and the
    /// v1 latency each minute.
    Soak {
        /// Minutes to run.
        #[arg(long, default_value_t = 30)]
        minutes: u64,
        /// Seconds between faults.
        #[arg(long, default_value_t = 180)]
        fault_every: u64,
        /// Each client's pause between requests, in milliseconds: sets the rate.
        #[arg(long, default_value_t = 100)]
        pause_ms: u64,
    },
    /// On a Citus cluster: every shard of one worker moved to the other (`citus_drain_node`), then
    /// spread over both again (`citus_rebalance_start`), while plume ingests. The cluster is the
    /// caller's (scripts/citus/citus-cluster.sh starts one); the scenario makes its own database
    /// on it.
    CitusRebalance {
        /// A superuser URL of a database on the coordinator in which the workers are registered
        /// (the cluster script's `postgres`); add `?sslmode=disable` for Citus's self-signed
        /// certificates.
        #[arg(long, env = "PLUME_FAULTS_CITUS_URL")]
        coordinator_url: String,
    },
}

/// What a scenario measured, and what its checks found.
#[derive(Debug, Default)]
struct Report {
    scenario: String,
    acknowledged: u64,
    retried: u64,
    failures: BTreeMap<String, u64>,
    findings: checks::Findings,
    /// What recovery means in the scenario, and how long it took: by default, from the fault's
    /// end to the first acknowledged write sent after it.
    recovery: Option<(&'static str, Duration)>,
    /// Other figures, in words.
    notes: Vec<String>,
    /// How long after the load the outbox may take to deliver its last event, when longer than
    /// the suite's usual bound (a killed relay's leases must run out first).
    outbox_bound: Option<Duration>,
}

impl Report {
    fn print(&self) {
        let failures: Vec<String> = self
            .failures
            .iter()
            .map(|(what, n)| format!("{n}× {what}"))
            .collect();
        println!("scenario {}:", self.scenario);
        println!(
            "  acknowledged {} requests, {} retries (failed attempts: {})",
            self.acknowledged,
            self.retried,
            if failures.is_empty() {
                "none".into()
            } else {
                failures.join(", ")
            }
        );
        println!(
            "  lost {} readings, double-counted {}",
            self.findings.lost, self.findings.double_counted
        );
        match self.recovery {
            Some((what, took)) => println!("  {what}: {} ms", took.as_millis()),
            None => println!("  recovery: none seen"),
        }
        println!("  outbox: {}", self.findings.outbox);
        for note in &self.notes {
            println!("  {note}");
        }
        for problem in &self.findings.problems {
            println!("  PROBLEM: {problem}");
        }
        println!("  {}", if self.passed() { "passed" } else { "FAILED" });
    }

    fn passed(&self) -> bool {
        self.findings.problems.is_empty() && self.findings.lost == 0 && self.findings.double_counted == 0
    }

    fn markdown_row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            self.scenario,
            self.acknowledged,
            self.retried,
            self.findings.lost,
            self.findings.double_counted,
            self.recovery.map_or("–".into(), |(what, took)| format!(
                "{:.1} s ({what})",
                took.as_secs_f64()
            )),
            self.findings.outbox,
            self.notes.join("; "),
        )
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter("warn,sqlx=error")
        .init();
    anyhow::ensure!(
        args.plume_binary.exists(),
        "{} does not exist: build it first (cargo build -p plume) or give --plume-binary",
        args.plume_binary.display()
    );
    let started = std::time::Instant::now();
    let report = scenarios::run(&args).await?;
    report.print();
    println!("  took {} s", started.elapsed().as_secs());
    if let Some(path) = &args.results {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        writeln!(file, "{}", report.markdown_row())?;
    }
    if !report.passed() {
        std::process::exit(1);
    }
    Ok(())
}

//! Command-line and environment configuration: one `clap` parser, whose doc comments are `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use partitioning::maintenance::MaintenanceSettings;
use partitioning::retention::RetentionPolicy;
use partitioning::AcceptedWindow;

use crate::auth::cache::{AuthMode, AuthSettings};
use crate::auth::Kind;
use crate::db::{DatabaseSource, PoolSettings};
use crate::http::server::ServeLimits;
use crate::outbox::relay::RelayConfig;
use crate::outbox::sink::WebhookSink;
use crate::query::export::ExportLimits;
use crate::sql_access::{Grant, NewPassword, RoleName};
use crate::state::Settings;

/// plume: exact, retry-safe storage for methane emission readings.
///
/// Without DATABASE_URL, plume runs its own PostgreSQL cluster (with pg_partman) under --data-dir,
/// from the newest PostgreSQL installed on this machine that has pg_partman (or the one whose bin
/// directory PLUME_PG_BIN_DIR names).
#[derive(Debug, Parser)]
#[command(name = "plume", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, env = "PLUME_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (migrating first; with the embedded database, seeding demo data on first start).
    Serve(Box<ServeArgs>),
    /// Apply pending database migrations and create the partitions the accepted window needs, then exit.
    Migrate(MigrateArgs),
    /// Load data into the database.
    Seed(SeedArgs),
    /// Run only the outbox relay (and its housekeeping), delivering events to the alerting service.
    Relay(RelayCommandArgs),
    /// Inspect the outbox and re-queue dead-lettered events.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Inspect and maintain the measurements table's monthly partitions (for DBAs).
    #[command(subcommand)]
    Partitions(PartitionsCommand),
    /// Check every site's total, count and first/last reading time against its stored readings;
    /// exits with status 1 if any site drifts.
    Verify(VerifyArgs),
    /// Create, list, rotate and revoke API tokens, and read the audit trail. Whoever can run this
    /// against the database is trusted with everything.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Login roles for Grafana, Metabase and other SQL clients: each reads the documented views of
    /// the `plume_sql` schema (sites, readings, hourly), over every site or only some, and nothing
    /// else (docs/GRAFANA.md). Run as the schema's owner, which must be allowed to create roles
    /// (CREATEROLE, or a superuser).
    #[command(subcommand)]
    SqlAccess(SqlAccessCommand),
}

/// `plume sql-access ...`.
#[derive(Debug, Subcommand)]
pub enum SqlAccessCommand {
    /// Create a login role that may read plume_sql's views (or update one made so before: its
    /// sites, its connection limit, its password with --new-password or --password-file), and print
    /// a generated password once. The role may connect to this database, use the plume_sql schema
    /// and select from its views: nothing in `public`, no writes, no other schema. Its sessions
    /// default to search_path plume_sql, UTC, read-only transactions and --statement-timeout.
    Grant(SqlAccessGrantArgs),
    /// Drop a role made by `grant`: it sees no rows from the moment this commits, loses its
    /// privileges, and its open sessions are ended where the owner may end them.
    Revoke(SqlAccessRevokeArgs),
    /// Every role made by `grant`, with its sites and connection limit (never a password).
    List(SqlAccessListArgs),
}

/// `plume sql-access grant`.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("scope").required(true).args(["sites", "all_sites"])))]
pub struct SqlAccessGrantArgs {
    /// The login role: 1 to 63 of a-z, 0-9 and _. A role of that name that `grant` did not make
    /// (the owner, the application role, a person) is refused.
    #[arg(long, value_name = "NAME", value_parser = RoleName::parse)]
    pub role: RoleName,
    /// A site the role may read (repeatable): the views show it no other site's rows. For an
    /// existing role, the list replaces the one it had.
    #[arg(long = "site", value_name = "ID", value_parser = clap::value_parser!(i64).range(1..))]
    pub sites: Vec<i64>,
    /// Every site, including sites created later.
    #[arg(long, conflicts_with = "sites")]
    pub all_sites: bool,
    /// Set the password read from this file (16 to 128 printable ASCII characters, no spaces;
    /// surrounding whitespace is ignored) instead of generating one.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Give an existing role a new generated password (the old one stops working). A new role
    /// always gets one.
    #[arg(long, conflicts_with = "password_file")]
    pub new_password: bool,
    /// Most connections the role may hold at once, so that a dashboard cannot take the ones the
    /// service needs (set Grafana's "Max open" to it or less).
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub connection_limit: u32,
    /// The role's default statement timeout (e.g. 60s, 5m): a query running longer is cancelled.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub statement_timeout: Duration,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

impl SqlAccessGrantArgs {
    /// The grant these arguments ask for; an error when --password-file cannot be used.
    pub fn grant(&self) -> anyhow::Result<Grant> {
        let password = match (&self.password_file, self.new_password) {
            (Some(path), _) => {
                let password = read_secret(path, "--password-file")?;
                crate::sql_access::check_password(&password)
                    .map_err(|why| anyhow::anyhow!("--password-file {}: {why}", path.display()))?;
                NewPassword::Given(password)
            }
            (None, true) => NewPassword::Generate,
            (None, false) => NewPassword::IfNew,
        };
        Ok(Grant {
            role: self.role.clone(),
            sites: (!self.all_sites).then(|| self.sites.clone()),
            password,
            connection_limit: self.connection_limit,
            statement_timeout: self.statement_timeout,
        })
    }
}

/// `plume sql-access revoke`.
#[derive(Debug, Clone, Args)]
pub struct SqlAccessRevokeArgs {
    /// The role to drop (one that `grant` made).
    #[arg(long, value_name = "NAME", value_parser = RoleName::parse)]
    pub role: RoleName,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// `plume sql-access list`.
#[derive(Debug, Clone, Args)]
pub struct SqlAccessListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// `plume tokens ...`.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a client with its first token, and print the token (once: it is stored only hashed).
    Create(TokenCreateArgs),
    /// Every token: id, client, kind, scope, created, expires, last used (never a secret).
    List(TokenListArgs),
    /// Revoke a token (by its id) or a client with all its tokens (by its name); every plume
    /// process refuses it within a second, and its open sessions and long polls end.
    Revoke(TokenRevokeArgs),
    /// Give a token's client a new token; the old one keeps working until --grace ends.
    Rotate(TokenRotateArgs),
    /// The audit trail: tokens created, rotated and revoked, sites created, sign-ins, denials.
    Audit(TokenAuditArgs),
}

/// `plume tokens create`.
#[derive(Debug, Clone, Args)]
pub struct TokenCreateArgs {
    /// What the client is: ingest (a sensor or gateway), read (viewers, data teams), admin
    /// (everything) or metrics (Prometheus).
    #[arg(long, value_enum)]
    pub kind: Kind,
    /// A unique name for the client, e.g. the sensor's tag.
    #[arg(long)]
    pub name: String,
    /// A site the client may use (repeatable). Ingest and read clients need --site or --all-sites.
    #[arg(long = "site", value_name = "ID", value_parser = clap::value_parser!(i64).range(1..))]
    pub sites: Vec<i64>,
    /// Every site, including ones created later.
    #[arg(long, conflicts_with = "sites")]
    pub all_sites: bool,
    /// A read client may also use /v2/export.
    #[arg(long)]
    pub export: bool,
    /// An ingest client may write only source ids that start with this.
    #[arg(long, value_name = "P")]
    pub source_prefix: Option<String>,
    /// How long the token works, e.g. 90d, 12h (default: 365d for ingest and metrics, 90d for
    /// read, 30d for admin).
    #[arg(long, value_parser = parse_duration)]
    pub expires: Option<Duration>,
    /// Requests a second the client may make, e.g. 50/s (default: 200/s ingest, 100/s read,
    /// 10/s metrics; admins are not limited).
    #[arg(long, value_name = "N/s", value_parser = parse_rate)]
    pub rate: Option<u32>,
    /// Readings a second an ingest client may send, e.g. 100000/s (default 200000/s).
    #[arg(long, value_name = "N/s", value_parser = parse_rate)]
    pub readings_rate: Option<u32>,
    /// How far ahead of the server's clock this ingest client's readings may be (e.g. 30s, 1h; at
    /// most 24h), instead of the server's --max-future-skew.
    #[arg(long, value_name = "DURATION", value_parser = parse_future_skew)]
    pub max_future_skew: Option<Duration>,
    /// Print one JSON object (with `client_id`, `token_id` and `token`) instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// `plume tokens list`.
#[derive(Debug, Clone, Args)]
pub struct TokenListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// `plume tokens revoke`.
#[derive(Debug, Clone, Args)]
pub struct TokenRevokeArgs {
    /// A token id (16 hex digits, from `plume tokens list`) or a client name.
    #[arg(value_name = "ID")]
    pub which: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// `plume tokens rotate`.
#[derive(Debug, Clone, Args)]
pub struct TokenRotateArgs {
    /// The id of the token to replace.
    #[arg(value_name = "ID")]
    pub token_id: String,
    /// How long the old token keeps working, e.g. 24h, 30m.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub grace: Duration,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// `plume tokens audit`.
#[derive(Debug, Clone, Args)]
pub struct TokenAuditArgs {
    /// How far back, e.g. 7d, 12h.
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    pub since: Duration,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// Parses `50/s` (or a bare `50`): a positive rate per second.
fn parse_rate(text: &str) -> Result<u32, String> {
    let number = text.trim().strip_suffix("/s").unwrap_or(text.trim());
    match number.parse::<u32>() {
        Ok(rate) if rate > 0 => Ok(rate),
        _ => Err(format!("{text:?} is not a rate like 50/s")),
    }
}

/// `plume partitions ...`.
#[derive(Debug, Subcommand)]
pub enum PartitionsCommand {
    /// Every partition with its range, rows, size and identity index; the default partition;
    /// months made ahead; retention; the last maintenance run.
    Status(PartitionStatusArgs),
    /// Run the maintenance job once now and print its report.
    Maintain(MaintainArgs),
    /// Move rows out of the default partition into monthly partitions (creating them), a month per
    /// transaction; safe to interrupt and run again.
    RepairDefault(RepairDefaultArgs),
    /// List the months older than --keep (a dry run), or with --apply archive and drop them.
    Retention(RetentionArgs),
}

/// `plume partitions status`.
#[derive(Debug, Clone, Args)]
pub struct PartitionStatusArgs {
    /// Count every partition's rows exactly (scans them all) instead of the planner's estimates.
    #[arg(long)]
    pub exact: bool,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// `plume partitions maintain`.
#[derive(Debug, Clone, Args)]
pub struct MaintainArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub window: WindowArgs,
    #[command(flatten)]
    pub retention: RetentionPolicyArgs,
}

/// `plume partitions repair-default`.
#[derive(Debug, Clone, Args)]
pub struct RepairDefaultArgs {
    /// Print JSON lines (one per batch, then the report) instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// `plume partitions retention`.
#[derive(Debug, Clone, Args)]
pub struct RetentionArgs {
    /// Whole months to keep before the current one; older months expire. Must cover the accepted
    /// window, so that no month that still accepts readings is dropped.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1200))]
    pub keep: u32,
    /// Write each expired month to DIR as compressed CSV with a manifest (rows, sum, SHA-256),
    /// read it back and check it, before dropping the month.
    #[arg(long, value_name = "DIR")]
    pub archive_dir: Option<PathBuf>,
    /// Drop without archiving (only with --apply, instead of --archive-dir): the readings are gone
    /// for good; their per-site counts and sums are kept.
    #[arg(long, conflicts_with = "archive_dir")]
    pub no_archive: bool,
    /// Archive and drop the expired months (needs --archive-dir or --no-archive). Without it, only
    /// list them.
    #[arg(long)]
    pub apply: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub window: WindowArgs,
}

/// `plume verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// The maintenance job's retention, off unless set.
#[derive(Debug, Clone, Args)]
pub struct RetentionPolicyArgs {
    /// Let the maintenance job retire months older than this many whole months (it must cover the
    /// accepted window). Off by default: readings are kept for ever.
    #[arg(long, env = "PLUME_PARTITION_RETENTION_MONTHS", requires = "partition_archive_dir", value_parser = clap::value_parser!(u32).range(1..=1200))]
    pub partition_retention_months: Option<u32>,
    /// Where the job archives each retired month (compressed CSV and manifest) before dropping it;
    /// required with --partition-retention-months.
    #[arg(
        long,
        env = "PLUME_PARTITION_ARCHIVE_DIR",
        requires = "partition_retention_months"
    )]
    pub partition_archive_dir: Option<PathBuf>,
}

/// The maintenance job's settings from the window and retention options.
pub fn maintenance_settings(window: &WindowArgs, retention: &RetentionPolicyArgs) -> MaintenanceSettings {
    MaintenanceSettings {
        window: window.window(),
        retention: retention.policy(),
        ..MaintenanceSettings::default()
    }
}

impl RetentionPolicyArgs {
    /// The policy, if retention is on.
    pub fn policy(&self) -> Option<RetentionPolicy> {
        self.partition_retention_months
            .map(|keep_months| RetentionPolicy {
                keep_months,
                archive_dir: self.partition_archive_dir.clone(),
            })
    }
}

/// The shortest webhook signing secret accepted: a guessable one would let anybody forge alerts.
pub const MIN_WEBHOOK_SECRET_BYTES: usize = 32;

/// A secret kept in a file (its surrounding whitespace trimmed); the error names the option, never
/// the content.
fn read_secret(path: &std::path::Path, option: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| anyhow::anyhow!("{option} {}: {error}", path.display()))?;
    let secret = text.trim();
    anyhow::ensure!(!secret.is_empty(), "{option} {} is empty", path.display());
    Ok(secret.to_owned())
}

/// Parses `90s`, `30m`, `1h` or `2d` (a bare number is seconds).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 30m or 1h"))?;
    let seconds = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown unit {other:?}: use s, m, h or d")),
    };
    match number.checked_mul(seconds) {
        Some(0) | None => Err("must be at least one second".into()),
        Some(total) => Ok(Duration::from_secs(total)),
    }
}

/// `plume outbox ...`.
#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Pending, in-flight and dead events, the oldest pending age and the backlog of each site.
    Status(OutboxStatusArgs),
    /// Put dead-lettered events back in their sites' streams (same event id) to be delivered again.
    RetryDead(RetryDeadArgs),
}

/// `plume outbox status`.
#[derive(Debug, Clone, Args)]
pub struct OutboxStatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// `plume outbox retry-dead`.
#[derive(Debug, Clone, Args)]
#[group(id = "which", required = true, multiple = false, args = ["event", "all"])]
pub struct RetryDeadArgs {
    /// The id of the dead event to re-queue.
    #[arg(long)]
    pub event: Option<uuid::Uuid>,
    /// Re-queue every dead event.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// How the outbox is delivered.
#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    /// Alerting webhook to POST every event to (repeatable, or comma-separated in the variable).
    /// Without one, events are delivered to the log as structured lines.
    #[arg(
        long = "alert-webhook-url",
        env = "PLUME_ALERT_WEBHOOK_URL",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub webhook_urls: Vec<reqwest::Url>,
    /// Shared secret for the `X-Plume-Signature-256` HMAC-SHA256 of each body (required with a URL).
    ///
    /// Give it twice to rotate (the new secret first, the old second): each event is then signed
    /// with both, and receivers move to the new one at their own pace.
    #[arg(
        long = "alert-webhook-secret",
        env = "PLUME_ALERT_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub webhook_secret: Vec<String>,
    /// A file holding the signing secret (a Docker or Kubernetes secret), instead of
    /// --alert-webhook-secret.
    #[arg(
        long = "alert-webhook-secret-file",
        env = "PLUME_ALERT_WEBHOOK_SECRET_FILE",
        conflicts_with = "webhook_secret"
    )]
    pub webhook_secret_file: Option<PathBuf>,
    /// Seconds one webhook request may take before it counts as failed.
    #[arg(long = "alert-webhook-timeout-secs", env = "PLUME_ALERT_WEBHOOK_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub webhook_timeout_secs: u64,
    /// Sites whose events are delivered at the same time.
    #[arg(long, env = "PLUME_RELAY_CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub relay_concurrency: u32,
    /// Failed attempts after which an event is dead-lettered.
    #[arg(long, env = "PLUME_RELAY_MAX_ATTEMPTS", default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..))]
    pub relay_max_attempts: u32,
    /// Hours after which an event that still fails is dead-lettered.
    #[arg(long, env = "PLUME_RELAY_MAX_AGE_HOURS", default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..))]
    pub relay_max_age_hours: u32,
    /// Days delivered events are kept in the outbox before their day is dropped.
    #[arg(long, env = "PLUME_OUTBOX_RETENTION_DAYS", default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub outbox_retention_days: u32,
}

impl RelayArgs {
    /// The relay's pacing.
    pub fn relay_config(&self) -> RelayConfig {
        let delivery_timeout = Duration::from_secs(self.webhook_timeout_secs);
        RelayConfig {
            concurrency: self.relay_concurrency as usize,
            delivery_timeout,
            lease: (delivery_timeout * 6).max(Duration::from_secs(60)),
            max_attempts: self.relay_max_attempts,
            max_age: Duration::from_secs(u64::from(self.relay_max_age_hours) * 3600),
            ..RelayConfig::default()
        }
    }

    /// How long delivered events are kept.
    pub fn retention(&self) -> Duration {
        Duration::from_secs(u64::from(self.outbox_retention_days) * 24 * 3600)
    }

    /// The webhook sink, or `None` for the log sink; an error when a URL comes without a secret.
    pub fn webhook_sink(&self) -> anyhow::Result<Option<WebhookSink>> {
        if self.webhook_urls.is_empty() {
            return Ok(None);
        }
        let secrets = match &self.webhook_secret_file {
            Some(path) => vec![read_secret(path, "--alert-webhook-secret-file")?],
            None => self.webhook_secret.clone(),
        };
        anyhow::ensure!(
            !secrets.is_empty(),
            "--alert-webhook-url needs --alert-webhook-secret (PLUME_ALERT_WEBHOOK_SECRET) or --alert-webhook-secret-file to sign events"
        );
        anyhow::ensure!(
            secrets.len() <= 2,
            "give --alert-webhook-secret at most twice: the new secret, then the old"
        );
        for secret in &secrets {
            anyhow::ensure!(
                secret.len() >= MIN_WEBHOOK_SECRET_BYTES,
                "a webhook signing secret must be at least {MIN_WEBHOOK_SECRET_BYTES} bytes (e.g. `openssl rand -base64 32`)"
            );
        }
        let timeout = Duration::from_secs(self.webhook_timeout_secs);
        let secrets = secrets.into_iter().map(String::into_bytes).collect();
        Ok(Some(WebhookSink::with_secrets(
            self.webhook_urls.clone(),
            secrets,
            timeout,
        )?))
    }
}

/// `plume relay`.
#[derive(Debug, Clone, Args)]
pub struct RelayCommandArgs {
    /// Address to serve `/health`, `/ready` and `/metrics` on (the relay's counters and the outbox
    /// gauges); without it, the relay serves no HTTP.
    #[arg(long, env = "PLUME_RELAY_LISTEN")]
    pub listen: Option<SocketAddr>,
    #[command(flatten)]
    pub relay: RelayArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// How to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the database is.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("database_url_given").args(["database_url", "database_url_file"])))]
pub struct DatabaseArgs {
    /// PostgreSQL URL (the database needs the pg_partman extension available). Without it, plume
    /// runs its own PostgreSQL under --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// A file holding the PostgreSQL URL (a Docker or Kubernetes secret), instead of --database-url.
    #[arg(long, env = "PLUME_DATABASE_URL_FILE", conflicts_with = "database_url")]
    pub database_url_file: Option<PathBuf>,
    /// PostgreSQL URL as the role that owns plume's schema, for migrations and partition
    /// maintenance (DDL); --database-url then names the application role, which only reads and
    /// writes rows (grant it with `plume migrate --grant-app-role`). Without it, one role does all.
    #[arg(
        long,
        env = "PLUME_OWNER_DATABASE_URL",
        hide_env_values = true,
        requires = "database_url_given"
    )]
    pub owner_database_url: Option<String>,
    /// A file holding the owner's PostgreSQL URL, instead of --owner-database-url.
    #[arg(
        long,
        env = "PLUME_OWNER_DATABASE_URL_FILE",
        conflicts_with = "owner_database_url",
        requires = "database_url_given"
    )]
    pub owner_database_url_file: Option<PathBuf>,
    /// Directory of the embedded PostgreSQL cluster (used only without --database-url).
    #[arg(long, env = "PLUME_DATA_DIR", default_value = ".plume")]
    pub data_dir: PathBuf,
    /// Most database connections held open.
    #[arg(long, env = "PLUME_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// Seconds a request waits for a free connection before answering 503.
    #[arg(long, env = "PLUME_DB_ACQUIRE_TIMEOUT_SECS", default_value_t = 5)]
    pub db_acquire_timeout_secs: u64,
    /// How long one statement may run before PostgreSQL cancels it (e.g. 60s); the request
    /// answers 503 and may be retried.
    #[arg(long, env = "PLUME_DB_STATEMENT_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub db_statement_timeout: Duration,
    /// How long a statement may wait for a lock before PostgreSQL gives up (e.g. 30s); the request
    /// answers 503 and may be retried.
    #[arg(long, env = "PLUME_DB_LOCK_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub db_lock_timeout: Duration,
}

impl DatabaseArgs {
    /// The database to use; an error when --database-url-file cannot be read.
    pub fn source(&self) -> anyhow::Result<DatabaseSource> {
        let url = match (&self.database_url_file, &self.database_url) {
            (Some(path), _) => read_secret(path, "--database-url-file")?,
            (None, Some(url)) if !url.is_empty() => url.clone(),
            _ => return Ok(DatabaseSource::Embedded(self.data_dir.clone())),
        };
        let owner_url = match (&self.owner_database_url_file, &self.owner_database_url) {
            (Some(path), _) => Some(read_secret(path, "--owner-database-url-file")?),
            (None, Some(url)) if !url.is_empty() => Some(url.clone()),
            _ => None,
        };
        Ok(DatabaseSource::Url { url, owner_url })
    }

    /// Pool settings.
    pub fn pool_settings(&self) -> PoolSettings {
        PoolSettings {
            max_connections: self.db_max_connections.max(1),
            acquire_timeout: Duration::from_secs(self.db_acquire_timeout_secs),
            statement_timeout: self.db_statement_timeout,
            lock_timeout: self.db_lock_timeout,
            generic_plans: false,
            statement_logging: true,
        }
    }
}

/// Which readings are accepted.
#[derive(Debug, Clone, Args)]
pub struct WindowArgs {
    /// How many days back a reading's timestamp may be. Every month of that window gets a partition.
    #[arg(long, env = "PLUME_ACCEPTED_WINDOW_DAYS", default_value_t = 730, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub accepted_window_days: u32,
    /// How far ahead of this server's clock a reading's timestamp may be (e.g. 5m, 2h; at most
    /// 24h): clock skew of the sensors. More lets a writer pre-write future minutes, and a real
    /// reading of such a minute counts as a duplicate. An ingest client may have its own
    /// (`plume tokens create --max-future-skew`).
    #[arg(long, env = "PLUME_MAX_FUTURE_SKEW", default_value = "5m", value_parser = parse_future_skew)]
    pub max_future_skew: Duration,
}

impl WindowArgs {
    /// The accepted window.
    pub fn window(&self) -> AcceptedWindow {
        AcceptedWindow {
            max_age: chrono::Duration::days(i64::from(self.accepted_window_days)),
            max_future: chrono::Duration::from_std(self.max_future_skew).unwrap_or_default(),
            not_before: None,
        }
    }
}

/// A future skew: a duration of at most 24 hours.
pub fn parse_future_skew(text: &str) -> Result<Duration, String> {
    let skew = parse_duration(text)?;
    if skew.as_secs() > partitioning::MAX_FUTURE_SECONDS_LIMIT as u64 {
        return Err("at most 24h".into());
    }
    Ok(skew)
}

/// `plume serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "PLUME_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes (larger ones get 413). A compressed v1 ingest body
    /// is held to it both as sent and once decompressed.
    #[arg(long, env = "PLUME_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Largest v2 bulk request body accepted, in bytes (50,000 readings as JSON take about 6 MB). A
    /// compressed body is held to it both as sent and once decompressed.
    #[arg(long, env = "PLUME_MAX_BULK_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_bulk_body_bytes: usize,
    /// Memory, in MiB, that the v2 bulk requests in flight may hold together (each reserves three
    /// times its body: the bytes, the parsed readings, the copy to PostgreSQL; a compressed body,
    /// whose decompressed size is unknown until read, three times the largest body while it is
    /// read); a request that does not fit is answered 503 with Retry-After before its body is read.
    /// Bounds the process's memory under a flood of uploads; small v1 batches are not affected.
    #[arg(long, env = "PLUME_BULK_MEMORY_MIB", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub bulk_memory_mib: u32,
    /// The most long polls (`wait=` on `/v2/changes` and `/v2/sites/{id}/metrics`) waiting at once;
    /// more are answered 503. Each costs memory only, no database connection.
    #[arg(long, env = "PLUME_MAX_WAITERS", default_value_t = 10_000)]
    pub max_waiters: usize,
    /// Most connections open at once; more are closed as they arrive. Raise the open-file limit
    /// (`ulimit -n`) with it: plume raises its own soft limit to the hard one at start.
    #[arg(long, env = "PLUME_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// How long a client may take to send a request's headers, and how long an idle keep-alive
    /// connection is kept (e.g. 10s).
    #[arg(long, env = "PLUME_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// How long a request may take, its body included, except long polls and exports (e.g. 60s):
    /// a 32 MiB bulk body must arrive within it. Past it: 503, and a retry is safe.
    #[arg(long, env = "PLUME_REQUEST_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Host names (or addresses) requests may name in their `Host` header, comma-separated; others
    /// get 421. Default: on a loopback --listen, only localhost, 127.0.0.1 and [::1] (a defence
    /// against DNS rebinding); elsewhere any host.
    #[arg(long, env = "PLUME_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// The longest an export may run before it is ended (e.g. 1h): it holds a database snapshot
    /// that keeps VACUUM from cleaning up behind it.
    #[arg(long, env = "PLUME_EXPORT_MAX_DURATION", default_value = "1h", value_parser = parse_duration)]
    pub export_max_duration: Duration,
    /// The slowest an export's client may read on average, in bytes a second, after its first 30
    /// seconds; a slower one is ended and its slot freed.
    #[arg(long, env = "PLUME_EXPORT_MIN_RATE", default_value_t = 64 * 1024)]
    pub export_min_rate: u64,
    /// How long, in microseconds, a busy group-commit worker waits for more v1 batches to store in
    /// one transaction with those already queued (only while its last transaction held more than
    /// one batch: under a light load no batch waits). 0 never waits. Longer makes fewer, larger
    /// transactions at the cost of this much latency; see docs/BENCHMARKS.md.
    #[arg(long, env = "PLUME_GROUP_LINGER_US", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub group_linger_us: u64,
    /// Group-commit workers, each storing the v1 batches of its share of the sites one transaction
    /// at a time. More let more transactions run at once on a database with cores to spare; see
    /// docs/BENCHMARKS.md for how many suit two cores.
    #[arg(long, env = "PLUME_GROUP_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub group_workers: u16,
    /// The most v1 batches one group-commit transaction holds (1 turns grouping off: each batch
    /// in a transaction of its own).
    #[arg(long, env = "PLUME_GROUP_MAX_BATCHES", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub group_max_batches: u16,
    /// Do not load the demo data (otherwise loaded when the embedded database has no sites yet).
    #[arg(long, env = "PLUME_NO_DEMO")]
    pub no_demo: bool,
    /// Do not run the outbox relay in this process (run `plume relay` elsewhere instead).
    #[arg(long, env = "PLUME_NO_RELAY")]
    pub no_relay: bool,
    #[command(flatten)]
    pub relay: RelayArgs,
    /// Do not run partition maintenance in this process (when pg_partman's background worker or
    /// cron runs `plume partitions maintain` instead; see docs/OPERATIONS.md).
    #[arg(long, env = "PLUME_NO_MAINTENANCE")]
    pub no_maintenance: bool,
    /// Time between partition maintenance runs (premaking months, checking the default partition,
    /// retention, statistics): e.g. 1h, 30m.
    #[arg(long, env = "PLUME_MAINTENANCE_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub maintenance_interval: Duration,
    #[command(flatten)]
    pub retention: RetentionPolicyArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub window: WindowArgs,
}

/// Authentication options of `plume serve`.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// `enforce`: every API route needs a token (see `plume tokens create`) or a dashboard session.
    /// `off`: nothing is checked and every caller acts as an admin; for local experiments only.
    #[arg(long = "auth", env = "PLUME_AUTH", value_enum, default_value_t = AuthMode::Enforce)]
    pub mode: AuthMode,
    /// Also serve `/health`, `/ready` and `/metrics` without tokens on this address, for a
    /// Prometheus server or a load balancer on a private network (the main listener still asks
    /// `/metrics` for a metrics or admin token).
    #[arg(long, env = "PLUME_OPS_LISTEN")]
    pub ops_listen: Option<SocketAddr>,
    /// A dashboard session not used for this long ends (e.g. 30m, 2h).
    #[arg(long, env = "PLUME_SESSION_IDLE_TIMEOUT", default_value = "30m", value_parser = parse_duration)]
    pub session_idle_timeout: Duration,
    /// A dashboard session ends this long after sign-in, however busy (e.g. 12h, 1d).
    #[arg(long, env = "PLUME_SESSION_LIFETIME", default_value = "12h", value_parser = parse_duration)]
    pub session_lifetime: Duration,
    /// Days an ingest request's receipt (its idempotency key and answer) is kept: a retry within
    /// them is answered with the original receipt; a later one is stored again and finds all its
    /// readings duplicates (201, nothing counted twice). At least 7.
    #[arg(long, env = "PLUME_RECEIPT_RETENTION_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(7..=36_500))]
    pub receipt_retention_days: u32,
    /// Days the audit trail (`auth_audit`) is kept.
    #[arg(long, env = "PLUME_AUDIT_RETENTION_DAYS", default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub audit_retention_days: u32,
}

impl AuthArgs {
    /// The handlers' auth settings.
    pub fn settings(&self) -> AuthSettings {
        let duration = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        AuthSettings {
            mode: self.mode,
            session_idle: duration(self.session_idle_timeout),
            session_absolute: duration(self.session_lifetime),
        }
    }
}

impl ServeArgs {
    /// The handlers' settings.
    pub fn settings(&self) -> Settings {
        Settings {
            window: self.window.window(),
            max_body_bytes: self.max_body_bytes,
            max_bulk_body_bytes: self.max_bulk_body_bytes,
            bulk_memory_bytes: self.bulk_memory_mib as usize * 1024 * 1024,
            max_waiters: self.max_waiters,
            group: crate::ingest::group::GroupSettings {
                workers: usize::from(self.group_workers),
                linger: Duration::from_micros(self.group_linger_us),
                max_batches: usize::from(self.group_max_batches),
                topology: crate::db::citus::Topology::Single,
            },
            auth: self.auth.settings(),
            allowed_hosts: if self.allowed_hosts.is_empty() {
                crate::http::server::default_allowed_hosts(self.listen)
            } else {
                Some(self.allowed_hosts.clone())
            },
            exports: ExportLimits {
                max_duration: self.export_max_duration,
                min_bytes_per_second: self.export_min_rate,
                ..ExportLimits::default()
            },
            limits: ServeLimits {
                max_connections: self.max_connections as usize,
                header_read_timeout: self.header_read_timeout,
                request_timeout: self.request_timeout,
            },
            // Found from the database when serving starts.
            topology: crate::db::citus::Topology::Single,
        }
    }
}

/// `plume migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// After migrating, grant this existing role what the service needs and nothing more: read and
    /// write plume's rows (now and in tables made later), temporary tables; no DDL. Run as the
    /// schema's owner. Idempotent.
    #[arg(long, value_name = "ROLE")]
    pub grant_app_role: Option<String>,
    /// Then distribute plume's tables over the Citus cluster this database is the coordinator of:
    /// `sites` and every per-site table by site id, colocated (one site's rows on one worker);
    /// bulk receipts by client; tokens, sessions and bookkeeping stay on the coordinator. Needs the
    /// citus extension in the database on every node and the workers registered
    /// (`citus_add_node`). Idempotent. The change feed (`/v2/changes`) is not available on Citus.
    #[arg(long)]
    pub citus: bool,
    #[command(flatten)]
    pub window: WindowArgs,
}

/// `plume seed`: the demo data, or synthetic data at scale.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("data").required(true).args(["demo", "synthetic"])))]
pub struct SeedArgs {
    /// Load the demo sites and their readings (idempotent: sites that exist by name are skipped).
    #[arg(long)]
    pub demo: bool,
    /// Generate realistic synthetic sites and readings (a regular cadence per source, a daily
    /// cycle, noise, leak spikes, about one site in twenty over its limit) and load them by
    /// parallel binary COPY, with their totals and hourly rollups. Each site is loaded in one
    /// transaction; sites are named `synthetic-<seed>-<n>`, and a rerun of the same seed adds only
    /// the ones still missing.
    #[arg(long)]
    pub synthetic: bool,
    #[command(flatten)]
    pub synthetic_plan: SyntheticArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub window: WindowArgs,
}

/// The shape of `plume seed --synthetic`.
#[derive(Debug, Clone, Args)]
pub struct SyntheticArgs {
    /// Sites to generate.
    #[arg(long, default_value_t = 10, requires = "synthetic")]
    pub sites: u32,
    /// Readings per site, spread evenly over its sources and the time range.
    #[arg(long, default_value_t = 10_000, requires = "synthetic")]
    pub readings_per_site: u64,
    /// Sources (sensors) per site.
    #[arg(long, default_value_t = 10, requires = "synthetic")]
    pub sources: u32,
    /// First day (UTC) of the readings: YYYY-MM-DD or an RFC 3339 time. Default: 365 days before --to.
    #[arg(long, value_parser = parse_day_or_time, requires = "synthetic")]
    pub from: Option<DateTime<Utc>>,
    /// End of the readings, exclusive: YYYY-MM-DD or an RFC 3339 time. Default: today, 00:00 UTC.
    #[arg(long, value_parser = parse_day_or_time, requires = "synthetic")]
    pub to: Option<DateTime<Utc>>,
    /// Seed: the same seed and shape give the same data.
    #[arg(long, default_value_t = 1, requires = "synthetic")]
    pub seed: u64,
    /// Sites loaded at once, each on its own connection. Default: one per CPU.
    #[arg(long, requires = "synthetic", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,
}

impl SyntheticArgs {
    /// The plan these arguments describe, at `now`.
    pub fn plan(&self, now: DateTime<Utc>) -> seeds::synthetic::Plan {
        let today = chrono::DurationRound::duration_trunc(now, chrono::Duration::days(1)).unwrap_or(now);
        let to = self.to.unwrap_or(today);
        seeds::synthetic::Plan {
            sites: self.sites,
            readings_per_site: self.readings_per_site,
            sources: self.sources,
            from: self.from.unwrap_or(to - chrono::Duration::days(365)),
            to,
            seed: self.seed,
        }
    }

    /// Connections loading at once.
    pub fn jobs(&self) -> usize {
        self.jobs
            .map(|jobs| jobs as usize)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get))
    }
}

/// `2026-01-31` (midnight UTC) or an RFC 3339 time.
fn parse_day_or_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(day) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(day.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| format!("{text:?} is neither a day (YYYY-MM-DD) nor an RFC 3339 time"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit_or_mean_seconds() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn rates_are_per_second() {
        assert_eq!(parse_rate("50/s"), Ok(50));
        assert_eq!(parse_rate("50"), Ok(50));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn seed_ranges_take_a_day_or_a_time() {
        let midnight: DateTime<Utc> = "2026-01-31T00:00:00Z".parse().unwrap();
        assert_eq!(parse_day_or_time("2026-01-31"), Ok(midnight));
        assert_eq!(parse_day_or_time("2026-01-31T02:00:00+02:00"), Ok(midnight));
        assert!(parse_day_or_time("31/01/2026").is_err());
    }
}

//! What a scenario runs: a PostgreSQL of its own (durable, supervised, so that it comes back after
//! a crash as a service manager would bring it back), and plume as real `plume serve` processes
//! that can be killed and started again on the same address.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use plume::db::embedded::{self, ClusterOptions, EmbeddedCluster};
use plume::db::{self, installation, migrate, PoolSettings};
use plume_bench::credentials::BearerToken;
use plume_bench::SECRET;
use sqlx::PgPool;

/// Where a plume process finds its database.
#[derive(Debug, Clone)]
pub(crate) enum Store {
    /// `--database-url`.
    Url(String),
    /// `--data-dir`: plume runs (and supervises) the cluster itself.
    Embedded(PathBuf),
}

/// A PostgreSQL cluster the scenario controls, and the migrated database plume uses in it.
#[derive(Debug)]
pub(crate) struct Postgres {
    cluster: Option<EmbeddedCluster>,
    data_dir: PathBuf,
    /// The database's URL, as the superuser.
    pub(crate) url: String,
    /// The server's loopback address.
    pub(crate) address: std::net::SocketAddr,
    _dir: Option<tempfile::TempDir>,
}

impl Postgres {
    /// A durable cluster under `data_dir` (a new temporary directory when `None`) with a fresh,
    /// migrated database; `settings` add to or replace its own.
    pub(crate) async fn start(
        data_dir: Option<&Path>,
        settings: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let (dir, data_dir) = match data_dir {
            Some(path) => (None, path.to_owned()),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("plume-faults-")
                    .tempdir_in("/tmp")?;
                let path = dir.path().join("cluster");
                (Some(dir), path)
            }
        };
        // Small enough to fit a small disk of its own (the disk-full scenario).
        let mut all: Vec<(String, String)> = [
            ("shared_buffers", "128MB"),
            ("max_wal_size", "64MB"),
            ("min_wal_size", "32MB"),
            ("max_connections", "300"),
        ]
        .iter()
        .filter(|(name, _)| !settings.iter().any(|(given, _)| given == name))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
        all.extend(settings.iter().cloned());
        let options = ClusterOptions {
            settings: all,
            ..ClusterOptions::new(&data_dir)
        };
        let cluster = tokio::task::spawn_blocking(move || EmbeddedCluster::start(&options))
            .await?
            .context("starting PostgreSQL")?;
        let port = cluster.port();
        db::create_database_if_missing(&cluster.url("postgres"), "faults").await?;
        let url = cluster.url("faults");
        migrate::run(&url).await.context("migrating")?;
        Ok(Self {
            cluster: Some(cluster),
            data_dir,
            url,
            address: ([127, 0, 0, 1], port).into(),
            _dir: dir,
        })
    }

    /// The server's URL for the database, through `port` instead of the server's own.
    pub(crate) fn url_via(&self, port: u16) -> String {
        self.url
            .replace(&format!(":{}/", self.address.port()), &format!(":{port}/"))
    }

    /// Crashes the server as `pg_ctl stop -m immediate` does (SIGQUIT to the postmaster: every
    /// backend exits at once, without a checkpoint). Its supervisor starts it again, and it
    /// recovers from its WAL.
    pub(crate) fn crash(&self) -> anyhow::Result<()> {
        crash_postmaster(&self.data_dir.join("pgdata"))
    }

    /// Stops the server and removes its files (unless they were given).
    pub(crate) async fn stop(mut self) {
        if let Some(cluster) = self.cluster.take() {
            let _ = tokio::task::spawn_blocking(move || cluster.stop()).await;
        }
    }
}

/// SIGQUIT to the postmaster of the cluster in `pgdata`: PostgreSQL's immediate shutdown.
pub(crate) fn crash_postmaster(pgdata: &Path) -> anyhow::Result<()> {
    let pid_file = pgdata.join("postmaster.pid");
    let text =
        std::fs::read_to_string(&pid_file).with_context(|| format!("reading {}", pid_file.display()))?;
    let pid = text.lines().next().context("an empty postmaster.pid")?.trim();
    let status = Command::new("kill").args(["-QUIT", pid]).status()?;
    ensure!(status.success(), "kill -QUIT {pid} failed");
    Ok(())
}

/// A migrated database's pool as the superuser, with sites and an ingest client in it.
#[derive(Debug)]
pub(crate) struct Fixtures {
    pub(crate) pool: PgPool,
    pub(crate) sites: Vec<i64>,
    pub(crate) token: BearerToken,
}

impl Fixtures {
    /// Creates `sites` sites (limits no total reaches, so that every batch makes one event per
    /// site) and an ingest client over all of them.
    pub(crate) async fn create(url: &str, sites: usize) -> anyhow::Result<Self> {
        let settings = PoolSettings {
            max_connections: 4,
            ..PoolSettings::default()
        };
        let pool = db::connect(url, &settings).await?;
        let sites: Vec<i64> = sqlx::query_scalar(
            "insert into sites (name, emission_limit_mg)
             select 'fault ' || g || ' ' || gen_random_uuid(), 1000000000000000 from generate_series(1, $1) g
             returning id",
        )
        .bind(sites as i64)
        .fetch_all(&pool)
        .await?;
        let token = BearerToken::ingest(&pool, &format!("faults-{}", uuid::Uuid::new_v4().simple())).await?;
        Ok(Self { pool, sites, token })
    }
}

/// A `plume serve` process on a fixed loopback port.
#[derive(Debug)]
pub(crate) struct Plume {
    binary: PathBuf,
    port: u16,
    store: Store,
    extra: Vec<String>,
    child: Option<Child>,
    /// Peak resident memory of earlier processes on this port, in bytes.
    earlier_peak: u64,
}

impl Plume {
    /// Starts `binary serve` on a free port and waits until it is ready.
    pub(crate) async fn start(
        binary: &Path,
        store: Store,
        webhook: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        extra.extend(["--alert-webhook-url".into(), webhook.into()]);
        let mut plume = Self {
            binary: binary.to_owned(),
            port,
            store,
            extra,
            child: None,
            earlier_peak: 0,
        };
        plume.spawn()?;
        plume.wait_until_ready(Duration::from_secs(120)).await?;
        Ok(plume)
    }

    /// Its base URL.
    pub(crate) fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(&self.binary);
        command
            .args(["serve", "--no-demo", "--log-format", "json"])
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(&self.extra)
            .env(
                "PLUME_ALERT_WEBHOOK_SECRET",
                String::from_utf8_lossy(SECRET).as_ref(),
            )
            .env(
                "RUST_LOG",
                std::env::var("PLUME_FAULTS_LOG").unwrap_or_else(|_| "error".into()),
            )
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null());
        match &self.store {
            Store::Url(url) => command.args(["--database-url", url]),
            Store::Embedded(dir) => command.arg("--data-dir").arg(dir),
        };
        self.child = Some(
            command
                .spawn()
                .with_context(|| format!("starting {}", self.binary.display()))?,
        );
        Ok(())
    }

    /// Waits until `/ready` answers 200, for at most `limit`.
    pub(crate) async fn wait_until_ready(&mut self, limit: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let url = format!("{}/ready", self.address());
        loop {
            if let Some(child) = &mut self.child {
                ensure!(child.try_wait()?.is_none(), "plume serve exited");
            }
            if http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(started.elapsed());
            }
            ensure!(started.elapsed() < limit, "plume was not ready after {limit:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`: no shutdown of any kind.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(peak) = plume_bench::service::process_memory(child.id(), "VmHWM") {
                self.earlier_peak = self.earlier_peak.max(peak);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (after [`Plume::kill`]).
    pub(crate) fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    /// The highest peak resident memory of every process run on this port so far, in bytes.
    pub(crate) fn peak_rss(&self) -> u64 {
        let now = self
            .child
            .as_ref()
            .and_then(|child| plume_bench::service::process_memory(child.id(), "VmHWM").ok())
            .unwrap_or(0);
        now.max(self.earlier_peak)
    }

    /// Its resident memory now, in bytes.
    pub(crate) fn rss(&self) -> u64 {
        self.child
            .as_ref()
            .and_then(|child| plume_bench::service::process_memory(child.id(), "VmRSS").ok())
            .unwrap_or(0)
    }

    /// Stops it as a service manager would (SIGTERM), waiting for it to exit.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}

impl Drop for Plume {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The superuser URL of the embedded cluster under `data_dir` that a plume process runs.
pub(crate) fn embedded_url(data_dir: &Path) -> anyhow::Result<String> {
    let port = embedded::running_port(data_dir, &installation::default_bin_dir())
        .context("the embedded PostgreSQL is not running")?;
    Ok(embedded::url_on(data_dir, port, db::EMBEDDED_DATABASE))
}

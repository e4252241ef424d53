//! The service under load: inside the load tool, or the real `plume` binary in a process of its
//! own, whose peak memory and CPU time can then be read.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{start_service, BenchDatabase, Receiver, SECRET};
use anyhow::{ensure, Context};
use plume::state::{AppState, Settings};
use tokio_util::sync::CancellationToken;

/// A running service.
#[derive(Debug)]
pub enum Service {
    /// Served by this process.
    InProcess {
        /// Its base URL.
        address: String,
        /// Stops it when dropped.
        _stop: tokio_util::sync::DropGuard,
    },
    /// A `plume serve` child process.
    Process {
        /// Its base URL.
        address: String,
        child: Child,
    },
}

impl Service {
    /// Serves `db` inside this process with `settings`, its relay delivering to `receiver`.
    pub async fn in_process(
        db: &BenchDatabase,
        receiver: &Receiver,
        settings: Settings,
    ) -> anyhow::Result<Self> {
        let state = AppState::new(db.pool.clone(), settings);
        let shutdown = CancellationToken::new();
        let address = start_service(db, &state, receiver, &shutdown).await?;
        Ok(Self::InProcess {
            address,
            _stop: shutdown.drop_guard(),
        })
    }

    /// Starts `binary serve` on `db`, its relay delivering to `receiver`, and waits until it is ready.
    pub async fn process(
        binary: &Path,
        db: &BenchDatabase,
        receiver: &Receiver,
        pool: u32,
    ) -> anyhow::Result<Self> {
        Self::process_with(binary, db, receiver, pool, &[]).await
    }

    /// [`Service::process`] with `extra` arguments for `plume serve`.
    pub async fn process_with(
        binary: &Path,
        db: &BenchDatabase,
        receiver: &Receiver,
        pool: u32,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let address = format!("http://127.0.0.1:{port}");
        let child = Command::new(binary)
            .args(["serve", "--no-demo", "--log-format", "json"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", &db.url])
            .args(["--db-max-connections", &pool.to_string()])
            .args(["--alert-webhook-url", receiver.url.as_str()])
            .args(extra)
            .env(
                "PLUME_ALERT_WEBHOOK_SECRET",
                String::from_utf8_lossy(SECRET).as_ref(),
            )
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut service = Self::Process { address, child };
        service.wait_until_ready().await?;
        Ok(service)
    }

    /// The base URL.
    pub fn address(&self) -> &str {
        match self {
            Self::InProcess { address, .. } | Self::Process { address, .. } => address,
        }
    }

    /// The child's peak resident memory so far, in bytes (`VmHWM`); `None` in process.
    pub fn peak_rss(&self) -> anyhow::Result<Option<u64>> {
        self.memory("VmHWM")
    }

    /// The child's resident memory now, in bytes (`VmRSS`); `None` in process.
    pub fn rss(&self) -> anyhow::Result<Option<u64>> {
        self.memory("VmRSS")
    }

    /// The CPU time the child has used so far, user and system, all threads; `None` in process.
    /// The server's own work, apart from the load tool's and PostgreSQL's on the same cores.
    pub fn cpu_time(&self) -> anyhow::Result<Option<Duration>> {
        let Self::Process { child, .. } = self else {
            return Ok(None);
        };
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id()))?;
        // The fields after the command name, which is in parentheses and may hold spaces:
        // utime and stime are the 14th and 15th of the whole line, in clock ticks.
        let after_name = stat
            .rsplit_once(')')
            .context("no command name in the server's /proc stat")?
            .1;
        let mut fields = after_name.split_whitespace().skip(11);
        let mut ticks =
            || -> anyhow::Result<u64> { Ok(fields.next().context("a short /proc stat line")?.parse()?) };
        let ticks = ticks()? + ticks()?;
        let per_second = rustix::param::clock_ticks_per_second();
        Ok(Some(Duration::from_secs_f64(ticks as f64 / per_second as f64)))
    }

    fn memory(&self, field: &str) -> anyhow::Result<Option<u64>> {
        let Self::Process { child, .. } = self else {
            return Ok(None);
        };
        process_memory(child.id(), field).map(Some)
    }

    async fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let url = format!("{}/ready", self.address());
        for _ in 0..300 {
            if let Self::Process { child, .. } = self {
                ensure!(child.try_wait()?.is_none(), "plume serve exited at start-up");
            }
            if http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("plume serve was not ready after 30 s")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Self::Process { child, .. } = self {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}

/// A process's memory figure `field` of `/proc/<pid>/status` (`VmHWM`, the peak resident set;
/// `VmRSS`, the resident set now), in bytes.
pub fn process_memory(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(kib * 1024)
}

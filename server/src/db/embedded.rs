//! A private PostgreSQL cluster run from the PostgreSQL binaries installed on the machine (the newest
//! major with pg_partman; see [`super::installation`]).
//!
//! `plume serve` uses it when no `DATABASE_URL` is given, and the test harness starts one per test
//! run. The server process is tied to its owner by a pipe: a small supervisor shell waits for the
//! pipe to close and then asks PostgreSQL for a fast shutdown, so the cluster stops when plume stops,
//! even if plume is killed or panics; if the server exits on its own, it is started again (see
//! `supervisor.rs`). PostgreSQL refuses to run as root; when plume runs as root the
//! cluster runs as the `postgres` user that the Debian packages create.

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::installation::{self, INSTALL_HINT};
use super::supervisor::{Launch, Supervisor};

/// The unprivileged user the cluster runs as when plume runs as root.
const SERVICE_USER: &str = "postgres";

/// Errors starting or stopping the embedded cluster; each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The PostgreSQL server binaries are not where they should be.
    #[error("PostgreSQL is not installed (no {0}): install it with `{INSTALL_HINT}`, or name its bin directory in PLUME_PG_BIN_DIR")]
    PostgresMissing(PathBuf),
    /// pg_partman is not installed for this PostgreSQL.
    #[error("pg_partman is not installed for the PostgreSQL in {0} (no {1}): install it with `apt-get install postgresql-{2}-partman`")]
    PartmanMissing(PathBuf, PathBuf, String),
    /// Running as root but the `postgres` user does not exist.
    #[error("running as root, the embedded PostgreSQL needs the unprivileged user `postgres`, which does not exist: install PostgreSQL with `{INSTALL_HINT}`")]
    NoServiceUser,
    /// The `postgres` user cannot reach the data directory.
    #[error("the embedded PostgreSQL runs as user `postgres`, which cannot reach {0}; choose a --data-dir it can reach, e.g. /var/tmp/plume")]
    Unreachable(PathBuf),
    /// A command failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// What was being done.
        what: String,
        /// What it printed or why it failed.
        detail: String,
    },
    /// The server did not start accepting connections in time.
    #[error("PostgreSQL did not start within {0:?}; its log ({1}) says:\n{2}")]
    StartTimeout(Duration, PathBuf, String),
    /// A file-system operation failed.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// How to run the cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The directory holding `pgdata/` and `postgres.log`; created when missing.
    pub data_dir: PathBuf,
    /// Where the PostgreSQL server binaries are.
    pub bin_dir: PathBuf,
    /// A throwaway cluster (tests): fsync and synchronous commit off, and the data directory removed
    /// when the server stops. Never for data anyone wants to keep.
    pub ephemeral: bool,
    /// Extra `-c name=value` server settings.
    pub settings: Vec<(String, String)>,
}

impl ClusterOptions {
    /// Durable defaults for a cluster kept under `data_dir`, run from the server that made it (or,
    /// for a new one, the newest with pg_partman; see [`installation::bin_dir_for_cluster`]).
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            bin_dir: installation::bin_dir_for_cluster(&data_dir.join("pgdata")),
            data_dir,
            ephemeral: false,
            settings: Vec::new(),
        }
    }
}

/// A running cluster, started again by its supervisor if it exits on its own; stopped by
/// [`EmbeddedCluster::stop`] or, failing that, when its owner exits.
#[derive(Debug)]
pub struct EmbeddedCluster {
    port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    supervisor: Supervisor,
}

impl EmbeddedCluster {
    /// Initialises the cluster if needed and starts it on a free loopback port. Blocking.
    pub fn start(options: &ClusterOptions) -> Result<Self, ClusterError> {
        check_installation(&options.bin_dir)?;
        let data_dir = std::path::absolute(&options.data_dir)
            .map_err(|e| ClusterError::Io(format!("resolving {}", options.data_dir.display()), e))?;
        let options = &ClusterOptions {
            data_dir,
            ..options.clone()
        };
        let run_as = if is_root() { Some(service_user()?) } else { None };
        let pgdata = options.data_dir.join("pgdata");
        let log_path = options.data_dir.join("postgres.log");
        fs::create_dir_all(&pgdata)
            .map_err(|e| ClusterError::Io(format!("creating {}", pgdata.display()), e))?;
        if let Some((uid, gid)) = run_as {
            for path in [&options.data_dir, &pgdata] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .map_err(|e| ClusterError::Io(format!("handing {} to postgres", path.display()), e))?;
            }
            if !run(as_user(run_as, Command::new("test").arg("-w").arg(&pgdata)))
                .is_ok_and(|o| o.status.success())
            {
                return Err(ClusterError::Unreachable(options.data_dir.clone()));
            }
        }
        if !pgdata.join("PG_VERSION").exists() {
            initdb(options, &pgdata, run_as)?;
        }
        let data_dir = options.data_dir.clone();

        let port = free_port()?;
        let mut server = vec![
            options.bin_dir.join("postgres").display().to_string(),
            "-D".into(),
            pgdata.display().to_string(),
        ];
        let mut settings = vec![
            ("listen_addresses".to_string(), "127.0.0.1".to_string()),
            ("port".into(), port.to_string()),
            ("unix_socket_directories".into(), String::new()),
            ("max_connections".into(), "200".into()),
        ];
        if options.ephemeral {
            for name in ["fsync", "synchronous_commit", "full_page_writes"] {
                settings.push((name.into(), "off".into()));
            }
        }
        settings.extend(options.settings.iter().cloned());
        for (name, value) in settings {
            server.push("-c".into());
            server.push(format!("{name}={value}"));
        }
        let remove = if options.ephemeral {
            options.data_dir.as_os_str().to_owned()
        } else {
            Default::default()
        };
        let launch = Launch {
            run_as,
            log: log_path.as_os_str().to_owned(),
            remove,
            server,
        };
        let supervisor =
            Supervisor::start(launch).map_err(|e| ClusterError::Io("starting postgres".into(), e))?;
        let mut cluster = Self {
            port,
            data_dir,
            log_path,
            supervisor,
        };
        cluster.wait_until_ready(&options.bin_dir, Duration::from_secs(60))?;
        if !options.data_dir.join(PASSWORD_FILE).exists() {
            cluster.require_password(&options.bin_dir, &pgdata)?;
        }
        cluster.supervisor.watch();
        Ok(cluster)
    }

    /// A connection URL for `database` as the superuser `postgres`, with its password.
    pub fn url(&self, database: &str) -> String {
        url_on(&self.data_dir, self.port, database)
    }

    /// The TCP port the server listens on (loopback only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (fast shutdown) and waits for it to exit. Blocking.
    pub fn stop(mut self) {
        self.supervisor.stop();
    }

    /// Secures a cluster initialised before passwords (with `trust`, which makes every local user a
    /// superuser): gives the superuser a new password, kept in [`PASSWORD_FILE`], and makes every
    /// `trust` line of `pg_hba.conf` ask for it.
    fn require_password(&self, bin_dir: &Path, pgdata: &Path) -> Result<(), ClusterError> {
        let password = new_password();
        let psql = |sql: &str| -> Result<(), ClusterError> {
            let output = run(Command::new(bin_dir.join("psql"))
                .args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
                .args(["-p", &self.port.to_string(), "-v", "ON_ERROR_STOP=1", "-c", sql]))?;
            if output.status.success() {
                Ok(())
            } else {
                Err(ClusterError::Command {
                    what: "securing the cluster made with trust".into(),
                    detail: String::from_utf8_lossy(&output.stderr).into_owned(),
                })
            }
        };
        psql(&format!(
            "set password_encryption = 'scram-sha-256'; alter role postgres password '{password}'"
        ))?;
        write_private(&self.data_dir.join(PASSWORD_FILE), &password)?;
        let hba_path = pgdata.join("pg_hba.conf");
        let hba = fs::read_to_string(&hba_path)
            .map_err(|e| ClusterError::Io(format!("reading {}", hba_path.display()), e))?;
        let secured: String = hba
            .lines()
            .map(|line| match line.split_whitespace().last() {
                Some("trust") if !line.trim_start().starts_with('#') => {
                    format!(
                        "{}scram-sha-256\n",
                        line.trim_end().strip_suffix("trust").unwrap_or(line)
                    )
                }
                _ => format!("{line}\n"),
            })
            .collect();
        fs::write(&hba_path, secured)
            .map_err(|e| ClusterError::Io(format!("writing {}", hba_path.display()), e))?;
        psql("select pg_reload_conf()")?;
        tracing::warn!(data_dir = %self.data_dir.display(), "the embedded PostgreSQL trusted every local connection; it now asks for a password, kept in {PASSWORD_FILE}");
        Ok(())
    }

    fn wait_until_ready(&mut self, bin_dir: &Path, limit: Duration) -> Result<(), ClusterError> {
        let started = Instant::now();
        loop {
            let ready = Command::new(bin_dir.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            let exited = self.supervisor.has_exited();
            if exited || started.elapsed() > limit {
                let mut log = String::new();
                if let Ok(mut file) = fs::File::open(&self.log_path) {
                    let _ = file.read_to_string(&mut log);
                }
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
                return Err(ClusterError::StartTimeout(limit, self.log_path.clone(), tail));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The port of a cluster already running from `data_dir` (another plume process's), if one answers.
/// Commands such as `plume outbox status` use it instead of starting a second server on the same
/// files, which PostgreSQL would refuse.
pub fn running_port(data_dir: &Path, bin_dir: &Path) -> Option<u16> {
    // postmaster.pid: pid, data directory, start time, port, socket directory, listen address, ...
    let pid_file = fs::read_to_string(data_dir.join("pgdata/postmaster.pid")).ok()?;
    let port: u16 = pid_file.lines().nth(3)?.trim().parse().ok()?;
    let ready = Command::new(bin_dir.join("pg_isready"))
        .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    ready.then_some(port)
}

/// The file in the data directory that holds the superuser's password (0600, the plume user's).
pub const PASSWORD_FILE: &str = "password";

/// The URL of `database` on the cluster of `data_dir` listening on `port`, with the superuser's
/// password from [`PASSWORD_FILE`] (a cluster made before passwords has none, and trusts loopback).
pub fn url_on(data_dir: &Path, port: u16, database: &str) -> String {
    match fs::read_to_string(data_dir.join(PASSWORD_FILE)) {
        Ok(password) => format!(
            "postgres://postgres:{}@127.0.0.1:{port}/{database}",
            password.trim()
        ),
        Err(_) => format!("postgres://postgres@127.0.0.1:{port}/{database}"),
    }
}

/// Checks that PostgreSQL and pg_partman are installed where `bin_dir` says.
pub fn check_installation(bin_dir: &Path) -> Result<(), ClusterError> {
    let postgres = bin_dir.join("postgres");
    if !postgres.exists() {
        return Err(ClusterError::PostgresMissing(postgres));
    }
    let control = installation::partman_control(bin_dir)
        .unwrap_or_else(|| PathBuf::from("extension/pg_partman.control"));
    if !control.exists() {
        let major = installation::major_of(bin_dir).map_or_else(|| "<major>".to_string(), |m| m.to_string());
        return Err(ClusterError::PartmanMissing(
            bin_dir.to_path_buf(),
            control,
            major,
        ));
    }
    Ok(())
}

/// Initialises the cluster with a random superuser password (scram-sha-256 for every connection):
/// any other local user or process reaching the loopback port is refused, where `trust` would make
/// it a superuser able to run `COPY ... PROGRAM`. The password is kept in [`PASSWORD_FILE`], readable
/// by the plume user only; initdb reads it from a file of its own, deleted after.
fn initdb(options: &ClusterOptions, pgdata: &Path, run_as: Option<(u32, u32)>) -> Result<(), ClusterError> {
    let password = new_password();
    write_private(&options.data_dir.join(PASSWORD_FILE), &password)?;
    let pwfile = pgdata.with_file_name("initdb-password");
    write_private(&pwfile, &password)?;
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))
            .map_err(|e| ClusterError::Io(format!("handing {} to postgres", pwfile.display()), e))?;
    }
    let mut command = Command::new(options.bin_dir.join("initdb"));
    command
        .arg("-D")
        .arg(pgdata)
        .args([
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
        ])
        .arg(format!("--pwfile={}", pwfile.display()));
    if options.ephemeral {
        command.arg("--no-sync");
    }
    let output = run(as_user(run_as, &mut command));
    let _ = fs::remove_file(&pwfile);
    let output = output?;
    if !output.status.success() {
        return Err(ClusterError::Command {
            what: "initdb".into(),
            detail: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(())
}

/// The file in the data directory that holds the application role's password (0600).
pub const APP_PASSWORD_FILE: &str = "app-password";

/// The application role's password, kept in [`APP_PASSWORD_FILE`]; made on first use.
pub fn app_password(data_dir: &Path) -> Result<String, ClusterError> {
    let path = data_dir.join(APP_PASSWORD_FILE);
    match fs::read_to_string(&path) {
        Ok(password) => Ok(password.trim().to_string()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let password = new_password();
            write_private(&path, &password)?;
            Ok(password)
        }
        Err(error) => Err(ClusterError::Io(format!("reading {}", path.display()), error)),
    }
}

/// 48 hexadecimal digits from the operating system's random source.
fn new_password() -> String {
    let mut secret = [0u8; 24];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
    hex::encode(secret)
}

/// Writes `contents` to `path`, readable and writable by its owner only.
fn write_private(path: &Path, contents: &str) -> Result<(), ClusterError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| std::io::Write::write_all(&mut file, contents.as_bytes()))
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o600)))
        .map_err(|e| ClusterError::Io(format!("writing {}", path.display()), e))
}

pub(super) fn as_user(run_as: Option<(u32, u32)>, command: &mut Command) -> &mut Command {
    if run_as.is_some() {
        // runuser keeps the environment and file descriptors (our lifeline pipe among them).
        let program = command.get_program().to_owned();
        let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
        let mut wrapped = Command::new("runuser");
        wrapped.args(["-u", SERVICE_USER, "--"]).arg(program).args(args);
        *command = wrapped;
    }
    command
}

fn run(command: &mut Command) -> Result<std::process::Output, ClusterError> {
    command.output().map_err(|e| ClusterError::Command {
        what: format!("{:?}", command.get_program()),
        detail: e.to_string(),
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn service_user() -> Result<(u32, u32), ClusterError> {
    let id = |flag: &str| -> Option<u32> {
        let output = Command::new("id").args([flag, SERVICE_USER]).output().ok()?;
        if !output.status.success() {
            return None;
        }
        String::from_utf8_lossy(&output.stdout).trim().parse().ok()
    };
    match (id("-u"), id("-g")) {
        (Some(uid), Some(gid)) => Ok((uid, gid)),
        _ => Err(ClusterError::NoServiceUser),
    }
}

fn free_port() -> Result<u16, ClusterError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| ClusterError::Io("finding a free port".into(), e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| ClusterError::Io("finding a free port".into(), e))
}

//! Keeps the embedded PostgreSQL running. A small bash script starts the server and waits for
//! either of two things: its standard input (plume's lifeline pipe) closing, when it asks the server
//! for a fast shutdown and exits; or the server exiting on its own (a crash, `kill -9`, `pg_ctl
//! stop -m immediate`), when it exits too. A watchdog thread notices the second and starts the
//! script again, after a backoff (1 s doubling to 30 s, back to 1 s once the server has stayed up a
//! minute): PostgreSQL replays its write-ahead log and accepts connections again, and the pool
//! reconnects by itself. Meanwhile requests answer 503 `UNAVAILABLE` and `/ready` says not ready.

use std::ffi::OsString;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The script: `$1` the log file, `$2` a directory to remove after a requested stop (an ephemeral
/// cluster's), then the server's command line. Exit 0 after a requested stop, 3 when the server
/// exited on its own (then nothing is removed: the watchdog starts the server again).
const SCRIPT: &str = r#"log="$1"; remove="$2"; shift 2
exec 3<&0
"$@" >>"$log" 2>&1 </dev/null & pid=$!
cat <&3 >/dev/null & lifeline=$!
wait -n "$pid" "$lifeline"
if kill -0 "$pid" 2>/dev/null; then
    kill -INT "$pid"; wait "$pid"
    if [ -n "$remove" ]; then rm -rf "$remove"; fi
    exit 0
fi
kill "$lifeline" 2>/dev/null
exit 3"#;

/// How long a server must stay up before the backoff starts again from its shortest.
const STABLE: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const LONGEST_BACKOFF: Duration = Duration::from_secs(30);
/// How often the watchdog looks.
const TICK: Duration = Duration::from_millis(250);

/// How to start the script: as which user, logging where, running what.
#[derive(Debug, Clone)]
pub(super) struct Launch {
    /// `Some((uid, gid))` to run as PostgreSQL's service user (plume runs as root).
    pub(super) run_as: Option<(u32, u32)>,
    pub(super) log: OsString,
    pub(super) remove: OsString,
    pub(super) server: Vec<String>,
}

impl Launch {
    fn spawn(&self) -> std::io::Result<(Child, ChildStdin)> {
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(SCRIPT)
            .arg("plume-postgres")
            .arg(&self.log)
            .arg(&self.remove)
            .args(&self.server);
        let mut child = super::embedded::as_user(self.run_as, &mut command)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let lifeline = child.stdin.take().expect("stdin is piped");
        Ok((child, lifeline))
    }
}

#[derive(Debug)]
struct Running {
    script: Child,
    /// Dropping it closes the pipe: the script stops the server.
    lifeline: Option<ChildStdin>,
}

#[derive(Debug)]
struct Shared {
    launch: Launch,
    running: Mutex<Running>,
}

impl Shared {
    fn running(&self) -> MutexGuard<'_, Running> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The running script, and once [`Supervisor::watch`] was called, the watchdog restarting it.
#[derive(Debug)]
pub(super) struct Supervisor {
    shared: Arc<Shared>,
    watchdog: Option<(JoinHandle<()>, mpsc::Sender<()>)>,
}

impl Supervisor {
    /// Starts the server (not waiting for it to accept connections).
    pub(super) fn start(launch: Launch) -> std::io::Result<Self> {
        let (script, lifeline) = launch.spawn()?;
        let running = Running {
            script,
            lifeline: Some(lifeline),
        };
        Ok(Self {
            shared: Arc::new(Shared {
                launch,
                running: Mutex::new(running),
            }),
            watchdog: None,
        })
    }

    /// Whether the server has exited (before [`Supervisor::watch`]: it failed to start).
    pub(super) fn has_exited(&self) -> bool {
        matches!(self.shared.running().script.try_wait(), Ok(Some(_)))
    }

    /// From now on, starts the server again whenever it exits on its own.
    pub(super) fn watch(&mut self) {
        if self.watchdog.is_none() {
            let (stop, stopped) = mpsc::channel();
            let shared = self.shared.clone();
            let thread = std::thread::Builder::new()
                .name("plume-postgres-watchdog".into())
                .spawn(move || watch(&shared, &stopped))
                .expect("starting the embedded PostgreSQL's watchdog");
            self.watchdog = Some((thread, stop));
        }
    }

    /// Stops the watchdog, then the server (fast shutdown), and waits for both. Idempotent.
    pub(super) fn stop(&mut self) {
        if let Some((thread, stop)) = self.watchdog.take() {
            drop(stop);
            let _ = thread.join();
        }
        let mut running = self.shared.running();
        if running.lifeline.take().is_some() {
            let _ = running.script.wait();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The watchdog's loop: until `stopped` (its sender dropped), restart the script when it exits.
fn watch(shared: &Shared, stopped: &mpsc::Receiver<()>) {
    let asked_to_stop =
        |wait: Duration| !matches!(stopped.recv_timeout(wait), Err(RecvTimeoutError::Timeout));
    let mut backoff = FIRST_BACKOFF;
    let mut up_since = Instant::now();
    loop {
        if asked_to_stop(TICK) {
            return;
        }
        let exited = shared.running().script.try_wait().ok().flatten();
        let Some(status) = exited else { continue };
        if up_since.elapsed() >= STABLE {
            backoff = FIRST_BACKOFF;
        }
        tracing::error!(%status, backoff_ms = backoff.as_millis() as u64, "the embedded PostgreSQL exited; starting it again");
        if asked_to_stop(backoff) {
            return;
        }
        backoff = (backoff * 2).min(LONGEST_BACKOFF);
        match shared.launch.spawn() {
            Ok((script, lifeline)) => {
                *shared.running() = Running {
                    script,
                    lifeline: Some(lifeline),
                };
                up_since = Instant::now();
                tracing::warn!("the embedded PostgreSQL was started again; it replays its log before it accepts connections");
            }
            // The exited script stays in place: the next tick tries again, after a longer wait.
            Err(error) => tracing::error!(%error, "starting the embedded PostgreSQL again failed"),
        }
    }
}

//! The change feed: which sites changed since a client last looked, and long polls that answer the
//! moment one does, in every plume process behind a load balancer.
//!
//! - Every site row carries the id of the transaction that last changed it (`change_xid`, stamped by
//!   a trigger). A client's cursor is a [`Snapshot`]; the sites changed since it are the ones whose
//!   transaction it did not see. That follows commit order, so no change is ever skipped. On Citus
//!   the feed reads the same from its copy of the sites on the coordinator ([`mirror`]).
//! - After a commit that changed sites, the process sends one `NOTIFY` (see [`ChangeSignal`]). Each
//!   process LISTENs on one connection of its own and, on a notification, reads the changed sites
//!   once into a [`Head`] that every waiting request checks in memory: a thousand waiters cost one
//!   query, and none of them holds a database connection while it waits.
//! - After the listener reconnects, the process reads a new head whatever was missed, which wakes
//!   every waiter; waiters are bounded, and all are released at once when the process shuts down.

pub mod listing;
pub mod mirror;
pub mod snapshot;

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::value::RawValue;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgPool, Row};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use snapshot::Snapshot;

use crate::auth::{self, cache::Auth};
use crate::db::citus::Topology;
use crate::sites::{SiteId, SiteMetrics, SiteRow};

/// The channel plume's processes notify and listen on.
const CHANNEL: &str = "plume_changes";

/// The payload of the notifier's heartbeat, which asks for no new head.
const HEARTBEAT: &str = "heartbeat";

/// How often each process's notifier sends a heartbeat.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

/// A listener that hears nothing for this long reconnects (its connection may be half-open).
const SILENCE: Duration = Duration::from_secs(35);

/// How many heads back a head's horizon reaches.
const HEADS_KEPT: usize = 4;

/// The longest wait a client may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Tells this process's notifier that a transaction which changed sites has committed. Cheap to
/// clone; a burst of commits becomes one `NOTIFY`.
#[derive(Debug, Clone, Default)]
pub struct ChangeSignal(Arc<Notify>);

impl ChangeSignal {
    /// Call after the commit (never before: a notification must find the change committed).
    pub fn committed(&self) {
        self.0.notify_one();
    }
}

/// One site's metrics and the transaction that last changed it.
#[derive(Debug)]
struct Changed {
    xid: u64,
    metrics: SiteMetrics,
}

/// The sites read at one snapshot: every site whose last change has an id at or above `horizon`.
#[derive(Debug)]
pub struct Head {
    snapshot: Snapshot,
    horizon: u64,
    sites: Vec<Changed>,
    /// Answers already built from this head: waiters that ask the same question (most hold the
    /// same cursor) share one, serialised once.
    answers: Mutex<Vec<Asked>>,
}

/// A question a head answered (what the waiter had seen, what it waits for) and its answer.
type Asked = (Snapshot, Watch, Option<Arc<Answer>>);

/// What a waiter waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watch {
    /// Any site's change.
    Every,
    /// A change of any of these sites (ascending): a client whose scope lists its sites. Its
    /// answers are its own, never shared with a waiter of another scope.
    In(Arc<[i64]>),
    /// A change of `site` that takes its version above `version`.
    Site {
        /// The site.
        site: SiteId,
        /// The version the client has.
        version: i64,
    },
}

impl Watch {
    fn site(&self) -> Option<SiteId> {
        match self {
            Self::Every | Self::In(_) => None,
            Self::Site { site, .. } => Some(*site),
        }
    }

    fn accepts(&self, metrics: &SiteMetrics) -> bool {
        match self {
            Self::Every => true,
            Self::In(sites) => sites.binary_search(&metrics.site_id).is_ok(),
            Self::Site { site, version } => metrics.site_id == site.get() && metrics.version > *version,
        }
    }
}

/// A long poll's answer: the metrics as JSON (an array of sites for [`Watch::Every`], the one
/// site's object for [`Watch::Site`]) and the cursor to send next.
#[derive(Debug)]
pub struct Answer {
    /// Serialised once, written into every response as is.
    pub data: Box<RawValue>,
    /// The next cursor.
    pub cursor: String,
}

/// The most distinct questions a head remembers answers to.
const ANSWERS_KEPT: usize = 8;

impl Head {
    /// The snapshot this was read at: the cursor for what it holds.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// What `watch` has to answer, given that the client saw `seen`: `None` if this head cannot
    /// tell (see [`Self::changed_since`]); `Some(None)` if nothing it waits for changed.
    pub fn answer(&self, seen: &Snapshot, watch: &Watch) -> Option<Option<Arc<Answer>>> {
        let mut answers = self
            .answers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, _, answer)) = answers.iter().find(|(s, w, _)| s == seen && w == watch) {
            return Some(answer.clone());
        }
        let changed: Vec<&SiteMetrics> = self.changed_since(seen)?.filter(|m| watch.accepts(m)).collect();
        // Metrics always serialise; were one not to, no answer must pass for "nothing changed".
        let data = match watch {
            _ if changed.is_empty() => None,
            Watch::Every | Watch::In(_) => {
                Some(serde_json::value::to_raw_value(&changed).expect("metrics serialise"))
            }
            Watch::Site { .. } => {
                Some(serde_json::value::to_raw_value(changed[0]).expect("metrics serialise"))
            }
        };
        let answer = data.map(|data| {
            Arc::new(Answer {
                data,
                cursor: self.snapshot.to_cursor(),
            })
        });
        if answers.len() < ANSWERS_KEPT {
            answers.push((seen.clone(), watch.clone(), answer.clone()));
        }
        Some(answer)
    }

    /// The sites this head shows changed since `seen`, if it can tell: it can when it holds every
    /// site that can have changed since (every transaction `seen` did not see has an id at or above
    /// `seen.xmin()`).
    pub fn changed_since<'a>(&'a self, seen: &'a Snapshot) -> Option<impl Iterator<Item = &'a SiteMetrics>> {
        (seen.xmin() >= self.horizon).then(|| {
            self.sites
                .iter()
                .filter(|site| !seen.saw(site.xid))
                .map(|site| &site.metrics)
        })
    }
}

/// Why a wait did not start or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// As many requests are waiting as the process allows.
    #[error("{0} requests are already waiting")]
    TooManyWaiters(usize),
    /// Reading the database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The process's view of the change feed. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ChangeHub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    /// Where the sites are read from ([`feed_table`]).
    topology: Topology,
    heads: watch::Sender<Option<Arc<Head>>>,
    refresh: Notify,
    waiters: Arc<Semaphore>,
    max_waiters: usize,
    closing: CancellationToken,
    heads_read: AtomicU64,
    requests_read: AtomicU64,
    listener_connects: AtomicU64,
    auth: Auth,
}

impl ChangeHub {
    /// Starts the listener, the head reader and the notifier for `signal` (so it must be called
    /// inside a Tokio runtime). They hold two connections of their own, apart from `pool`, and stop
    /// on [`Self::close`].
    /// Revocations heard on the same listener go to `auth`.
    pub fn start(
        pool: PgPool,
        topology: Topology,
        signal: ChangeSignal,
        max_waiters: usize,
        auth: Auth,
    ) -> Self {
        let own = PgPoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .connect_lazy_with(own_connections(pool.connect_options().as_ref()));
        let hub = Self {
            inner: Arc::new(Inner {
                pool,
                topology,
                heads: watch::Sender::new(None),
                refresh: Notify::new(),
                waiters: Arc::new(Semaphore::new(max_waiters)),
                max_waiters,
                closing: CancellationToken::new(),
                heads_read: AtomicU64::new(0),
                requests_read: AtomicU64::new(0),
                listener_connects: AtomicU64::new(0),
                auth,
            }),
        };
        hub.inner.refresh.notify_one();
        tokio::spawn(hub.clone().listen(own.clone()));
        tokio::spawn(hub.clone().read_heads());
        tokio::spawn(hub.clone().notify(own, signal));
        hub
    }

    /// Releases every waiter at once (each answers as on a timeout) and stops the background tasks.
    pub fn close(&self) {
        self.inner.closing.cancel();
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> usize {
        self.inner.max_waiters - self.inner.waiters.available_permits()
    }

    /// The feed's gauges and counters, in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let lines = [
            (
                "plume_changes_waiting",
                "gauge",
                "Long polls waiting now.",
                self.waiting() as u64,
            ),
            (
                "plume_changes_heads_read_total",
                "counter",
                "Reads of the changed sites after a notification or a reconnect (one serves every waiter).",
                load(&self.inner.heads_read),
            ),
            (
                "plume_changes_request_reads_total",
                "counter",
                "Reads of the changed sites for one request (a poll without a cursor or that will not wait, a cursor the head cannot answer).",
                load(&self.inner.requests_read),
            ),
            (
                "plume_changes_listener_connects_total",
                "counter",
                "Connections of the change listener (more than one: it reconnected).",
                load(&self.inner.listener_connects),
            ),
        ];
        for (name, kind, help, value) in lines {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
    }

    /// The latest head, once one has been read.
    pub fn latest(&self) -> Option<Arc<Head>> {
        self.inner.heads.borrow().clone()
    }

    /// Reads from the database the sites changed since `since` (all sites for
    /// [`Snapshot::origin`]), only `site` if given.
    pub async fn read(&self, since: &Snapshot, site: Option<SiteId>) -> Result<Head, sqlx::Error> {
        self.inner.requests_read.fetch_add(1, Ordering::Relaxed);
        read_head(&self.inner.pool, self.inner.topology, Some(since.xmin()), site).await
    }

    /// Waits until something `watch` waits for has changed since `seen`, and answers with it and
    /// the next cursor; `None` when `wait` passed or the process is shutting down first.
    pub async fn wait(
        &self,
        mut seen: Snapshot,
        watch: Watch,
        wait: Duration,
    ) -> Result<Option<Arc<Answer>>, WaitError> {
        let _permit = self.enter()?;
        let deadline = Instant::now() + wait;
        let mut heads = self.inner.heads.subscribe();
        // The head already published may be newer than `seen`: check it before waiting for the next.
        let mut head = heads.borrow_and_update().clone();
        loop {
            if let Some(mut head) = head.take() {
                let found = match head.answer(&seen, &watch) {
                    Some(found) => found,
                    // Not enough in memory to tell (a head was missed): read the database.
                    None => {
                        head = Arc::new(self.read(&seen, watch.site()).await?);
                        head.answer(&seen, &watch).expect("read from seen's horizon")
                    }
                };
                match found {
                    Some(answer) => return Ok(Some(answer)),
                    // Nothing changed between `seen` and this head: a later head is as good a
                    // cursor, and the next head covers it. (An earlier one is not: it would show
                    // again what `seen` had seen.)
                    None if head.snapshot.saw_all_of(&seen) => seen = head.snapshot.clone(),
                    None => {}
                }
            }
            tokio::select! {
                changed = heads.changed() => {
                    if changed.is_err() {
                        return Ok(None);
                    }
                    head = heads.borrow_and_update().clone();
                }
                () = tokio::time::sleep_until(deadline) => return Ok(None),
                () = self.inner.closing.cancelled() => return Ok(None),
            }
        }
    }

    fn enter(&self) -> Result<OwnedSemaphorePermit, WaitError> {
        self.inner
            .waiters
            .clone()
            .try_acquire_owned()
            .map_err(|_| WaitError::TooManyWaiters(self.inner.max_waiters))
    }

    /// LISTENs on a connection of its own; asks for a new head on every change notification and
    /// after every (re)connection, since notifications sent while it was away are lost. A listener
    /// that hears nothing, not even the heartbeat, for [`SILENCE`] is taken for a dead connection.
    async fn listen(self, own: PgPool) {
        let closing = self.inner.closing.clone();
        let mut backoff = Duration::from_millis(100);
        while !closing.is_cancelled() {
            let connected = tokio::select! {
                connected = connect_listener(&own) => connected,
                () = closing.cancelled() => return,
            };
            let started = Instant::now();
            match connected {
                Ok(mut listener) => {
                    self.inner.listener_connects.fetch_add(1, Ordering::Relaxed);
                    self.inner.refresh.notify_one();
                    // Revocations announced while it was away are lost too.
                    self.inner.auth.resync();
                    let lost = tokio::select! {
                        lost = self.hear(&mut listener) => lost,
                        () = closing.cancelled() => return,
                    };
                    tracing::warn!(reason = %lost, "the change listener lost its connection; reconnecting");
                }
                Err(error) => tracing::warn!(%error, "the change listener cannot connect; retrying"),
            }
            // A connection that failed at once is retried with growing pauses, not in a tight loop.
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
            } else {
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = closing.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }

    /// Passes notifications on until the connection is lost; returns why.
    async fn hear(&self, listener: &mut PgListener) -> String {
        loop {
            match tokio::time::timeout(SILENCE, listener.try_recv()).await {
                Ok(Ok(Some(notification))) if notification.channel() == auth::store::CHANNEL => {
                    self.inner.auth.heard(notification.payload());
                }
                Ok(Ok(Some(notification))) => {
                    if notification.payload() != HEARTBEAT {
                        self.inner.refresh.notify_one();
                    }
                }
                Ok(Ok(None)) => return "connection closed".to_owned(),
                Ok(Err(error)) => return error.to_string(),
                Err(_) => return format!("nothing heard for {} s", SILENCE.as_secs()),
            }
        }
    }

    /// Reads a new head whenever asked; requests made during a read are served by one more read.
    /// Each head holds the sites changed since the head [`HEADS_KEPT`] reads before it, so a waiter
    /// that missed a few heads can still tell from memory.
    async fn read_heads(self) {
        let closing = self.inner.closing.clone();
        let mut recent_xmins: VecDeque<u64> = VecDeque::with_capacity(HEADS_KEPT);
        loop {
            tokio::select! {
                () = self.inner.refresh.notified() => {}
                () = closing.cancelled() => return,
            }
            let horizon = recent_xmins.iter().copied().min();
            match read_head(&self.inner.pool, self.inner.topology, horizon, None).await {
                Ok(head) => {
                    self.inner.heads_read.fetch_add(1, Ordering::Relaxed);
                    if recent_xmins.len() == HEADS_KEPT {
                        recent_xmins.pop_front();
                    }
                    recent_xmins.push_back(head.snapshot.xmin());
                    self.inner.heads.send_replace(Some(Arc::new(head)));
                }
                Err(error) => {
                    tracing::warn!(%error, "reading changed sites failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                        () = closing.cancelled() => return,
                    }
                    self.inner.refresh.notify_one();
                }
            }
        }
    }

    /// Sends one `NOTIFY` per burst of commits signalled, and a heartbeat every [`HEARTBEAT_EVERY`],
    /// on a connection of its own.
    async fn notify(self, own: PgPool, signal: ChangeSignal) {
        let closing = self.inner.closing.clone();
        let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
        loop {
            let payload = tokio::select! {
                () = signal.0.notified() => "",
                _ = heartbeat.tick() => HEARTBEAT,
                () = closing.cancelled() => return,
            };
            if let Err(error) = send_notification(&own, payload).await {
                // Nothing is lost: waiters elsewhere see the change at their next head or poll.
                tracing::warn!(%error, "notifying other processes failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                if payload.is_empty() {
                    signal.committed();
                }
            }
        }
    }
}

/// Tells every plume process listening on `pool`'s database that sites may have changed (for
/// writers outside `plume serve`, such as `plume seed`).
pub async fn announce(pool: &PgPool) -> Result<(), sqlx::Error> {
    send_notification(pool, "").await
}

/// One `NOTIFY` on the channel: `""` for a change, [`HEARTBEAT`] for the heartbeat.
async fn send_notification(pool: &PgPool, payload: &str) -> Result<(), sqlx::Error> {
    sqlx::query("select pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload)
        .execute(pool)
        .await
        .map(|_| ())
}

async fn connect_listener(own: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(own).await?;
    // A lost connection is reported (and handled above) rather than silently replaced.
    listener.eager_reconnect(false);
    listener.listen_all([CHANNEL, auth::store::CHANNEL]).await?;
    Ok(listener)
}

/// The listener's and notifier's connections: named, and not waiting for the disk to confirm a
/// notification (it carries no data; the commit it announces was confirmed already).
fn own_connections(app: &PgConnectOptions) -> PgConnectOptions {
    app.clone()
        .application_name("plume-changes")
        .options([("synchronous_commit", "off")])
}

/// The snapshot a statement that left-joins `sites` to `pg_current_snapshot()` read in (its column
/// `snapshot`, on every row; there is always one).
fn statement_snapshot(rows: &[sqlx::postgres::PgRow]) -> Result<Snapshot, sqlx::Error> {
    let first = rows.first().ok_or(sqlx::Error::RowNotFound)?;
    let text: String = first.try_get("snapshot")?;
    Snapshot::parse(&text).ok_or_else(|| sqlx::Error::Protocol(format!("not a snapshot: {text}")))
}

/// The site of a row that left-joins `sites` to the reading statement's snapshot (`None`: no site).
fn site_row(row: &sqlx::postgres::PgRow) -> Result<Option<SiteRow>, sqlx::Error> {
    let Some(id) = row.try_get::<Option<i64>, _>("id")? else {
        return Ok(None);
    };
    Ok(Some(SiteRow {
        id,
        name: row.try_get("name")?,
        emission_limit_mg: row.try_get("emission_limit_mg")?,
        metadata: row.try_get("metadata")?,
        total_emissions_mg: row.try_get("total_emissions_mg")?,
        reading_count: row.try_get("reading_count")?,
        first_reading_at: row.try_get("first_reading_at")?,
        last_reading_at: row.try_get("last_reading_at")?,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
    }))
}

/// The sites whose last change has an id at or above `horizon` (the snapshot's own xmin if none),
/// only `site` if given, read in one statement with the snapshot it saw.
/// Heads hold metrics only: the sites' metadata (up to 16 KiB each) is not read.
async fn read_head(
    pool: &PgPool,
    topology: Topology,
    horizon: Option<u64>,
    site: Option<SiteId>,
) -> Result<Head, sqlx::Error> {
    let statement = format!(
        r#"with now as (select pg_current_snapshot() as snapshot)
           select now.snapshot::text as snapshot, pg_snapshot_xmin(now.snapshot)::text as own_xmin,
                  s.id, s.name, s.emission_limit_mg, '{{}}'::text as metadata, s.total_emissions_mg,
                  s.reading_count, s.first_reading_at, s.last_reading_at, s.version, s.created_at,
                  s.change_xid::text as change_xid
             from now
             left join {} s
               on s.change_xid >= coalesce($1::text::xid8, pg_snapshot_xmin(now.snapshot))
              and ($2::bigint is null or s.id = $2)
            order by s.id"#,
        feed_table(topology)
    );
    let rows = sqlx::query(&statement)
        .bind(horizon.map(|xid| xid.to_string()))
        .bind(site.map(SiteId::get))
        .fetch_all(pool)
        .await?;
    let snapshot = statement_snapshot(&rows)?;
    let own_xmin: String = rows[0].try_get("own_xmin")?;
    let horizon = match horizon {
        Some(horizon) => horizon,
        None => parse_xid(&own_xmin)?,
    };
    let mut sites = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(stored) = site_row(&row)? else {
            continue;
        };
        let xid: String = row.try_get("change_xid")?;
        sites.push(Changed {
            xid: parse_xid(&xid)?,
            metrics: stored.into(),
        });
    }
    Ok(Head {
        snapshot,
        horizon,
        sites,
        answers: Mutex::new(Vec::new()),
    })
}

/// The table the feed reads the sites from: `sites` itself on one node, its copy on the
/// coordinator on Citus ([`mirror`]).
fn feed_table(topology: Topology) -> &'static str {
    match topology {
        Topology::Single => "sites",
        Topology::Citus => "site_feed",
    }
}

fn parse_xid(text: &str) -> Result<u64, sqlx::Error> {
    text.parse()
        .map_err(|_| sqlx::Error::Protocol(format!("not a transaction id: {text}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(id: i64, xid: u64) -> Changed {
        let row = SiteRow {
            id,
            name: format!("site {id}"),
            emission_limit_mg: 1,
            metadata: "{}".to_owned(),
            total_emissions_mg: 0,
            reading_count: 0,
            first_reading_at: None,
            last_reading_at: None,
            version: 1,
            created_at: chrono::Utc::now(),
        };
        Changed {
            xid,
            metrics: row.into(),
        }
    }

    fn snapshot(text: &str) -> Snapshot {
        Snapshot::parse(text).unwrap()
    }

    fn ids<'a>(changed: impl Iterator<Item = &'a SiteMetrics>) -> Vec<i64> {
        changed.map(|metrics| metrics.site_id).collect()
    }

    #[test]
    fn a_head_answers_for_cursors_it_covers_and_only_those() {
        // Read at 120:125:122, holding every site changed by a transaction from 110 on.
        let head = Head {
            snapshot: snapshot("120:125:122"),
            horizon: 110,
            sites: vec![site(1, 111), site(2, 118), site(3, 121), site(4, 124)],
            answers: Mutex::new(Vec::new()),
        };
        // A cursor that saw up to 118 (119 still running then): 121 and 124 are new to it.
        assert_eq!(ids(head.changed_since(&snapshot("119:119:")).unwrap()), [3, 4]);
        // One that had seen 121 but not 118 (a late committer): 118 is reported.
        assert_eq!(ids(head.changed_since(&snapshot("118:122:118")).unwrap()), [2, 4]);
        // A cursor from before the horizon may have missed sites the head no longer holds.
        assert!(head.changed_since(&snapshot("105:109:")).is_none());
        // The head's own snapshot: nothing new.
        assert_eq!(
            ids(head.changed_since(head.snapshot()).unwrap()),
            Vec::<i64>::new()
        );
    }

    #[test]
    fn waiters_asking_the_same_question_share_one_answer() {
        let head = Head {
            snapshot: snapshot("120:125:122"),
            horizon: 110,
            sites: vec![site(1, 111), site(3, 121)],
            answers: Mutex::new(Vec::new()),
        };
        let seen = snapshot("119:119:");
        let first = head.answer(&seen, &Watch::Every).unwrap().unwrap();
        let second = head.answer(&seen, &Watch::Every).unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &second), "serialised once");
        let sites: Vec<serde_json::Value> = serde_json::from_str(first.data.get()).unwrap();
        assert_eq!(sites.len(), 1);
        assert_eq!(sites[0]["site_id"], 3);
        assert_eq!(
            Snapshot::from_cursor(&first.cursor).as_ref(),
            Some(head.snapshot())
        );

        let site_3 = SiteId::new(3).unwrap();
        let newer = head
            .answer(
                &seen,
                &Watch::Site {
                    site: site_3,
                    version: 0,
                },
            )
            .unwrap()
            .unwrap();
        let object: serde_json::Value = serde_json::from_str(newer.data.get()).unwrap();
        assert_eq!(object["site_id"], 3, "one site's object");
        let known = Watch::Site {
            site: site_3,
            version: 1,
        };
        assert!(
            head.answer(&seen, &known).unwrap().is_none(),
            "not above the version held"
        );
        assert!(
            head.answer(&snapshot("100:100:"), &Watch::Every).is_none(),
            "cannot tell"
        );
    }

    #[test]
    fn a_scoped_answer_holds_only_its_sites_and_is_not_shared() {
        let head = Head {
            snapshot: snapshot("120:125:122"),
            horizon: 110,
            sites: vec![site(1, 111), site(3, 121), site(4, 121)],
            answers: Mutex::new(Vec::new()),
        };
        let seen = snapshot("110:110:");
        let scoped = head
            .answer(&seen, &Watch::In(Arc::from(vec![1, 4])))
            .unwrap()
            .unwrap();
        let every = head.answer(&seen, &Watch::Every).unwrap().unwrap();
        let ids = |answer: &Answer| {
            let sites: Vec<serde_json::Value> = serde_json::from_str(answer.data.get()).unwrap();
            sites
                .iter()
                .map(|s| s["site_id"].as_i64().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&scoped), vec![1, 4]);
        assert_eq!(ids(&every), vec![1, 3, 4]);
        let other = head
            .answer(&seen, &Watch::In(Arc::from(vec![3])))
            .unwrap()
            .unwrap();
        assert_eq!(ids(&other), vec![3]);
    }
}

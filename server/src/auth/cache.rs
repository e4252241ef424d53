//! [`Auth`]: authenticates requests against an in-process cache of tokens and sessions, so the
//! steady state costs no database round trip.
//!
//! - A token id seen for the first time is read from the database once; later requests compare the
//!   secret's hash with the cached one in constant time and check the expiry in memory.
//! - Revocations, rotations and sign-outs are announced on `plume_auth` (see [`store::CHANNEL`]) and
//!   heard by each process's listener, which drops the entry and ends its open long polls at once.
//! - In case a notification is lost, a sweep re-reads every cached token and session every
//!   [`SWEEP_EVERY`]; the same sweep records when tokens were last used and keeps used sessions alive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::audit::DenialSampler;
use super::limits::ClientLimits;
use super::store::{self, LiveSession, LiveToken};
use super::token::{self, same_secret};
use super::{Client, Principal};

/// How often every cached credential is checked against the database: the longest a revocation
/// whose notification was lost goes unnoticed.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// How long an unknown token id is remembered as unknown (so a flood of made-up tokens with good
/// checksums costs one lookup per id and sweep, not one per request).
const UNKNOWN_FOR: Duration = SWEEP_EVERY;

/// The most entries each map holds; past it the map is emptied (and refilled from the database).
const MAX_ENTRIES: usize = 100_000;

/// Whether requests must authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Every route but the open ones needs a credential (the default).
    Enforce,
    /// No credentials are checked: every request acts as an admin. For local experiments only.
    Off,
}

/// How sessions behave.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Enforce or off.
    pub mode: AuthMode,
    /// A session not used for this long ends.
    pub session_idle: chrono::Duration,
    /// A session ends this long after sign-in, however busy.
    pub session_absolute: chrono::Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            mode: AuthMode::Enforce,
            session_idle: chrono::Duration::minutes(30),
            session_absolute: chrono::Duration::hours(12),
        }
    }
}

/// Why a credential was refused (the client is told none of this: every case answers the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No credential at all.
    Missing,
    /// Not something plume issues (bad shape or checksum).
    Malformed,
    /// Well-formed, but no live token or session has that id.
    Unknown,
    /// A known id with the wrong secret (or kind).
    WrongSecret,
    /// Past its expiry.
    Expired,
    /// A sign-in link's token used as a bearer token.
    SignInOnly,
    /// The database could not be asked.
    Unavailable,
}

impl Refusal {
    /// The reason as the audit trail records it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Unknown => "unknown or revoked",
            Self::WrongSecret => "wrong secret",
            Self::Expired => "expired",
            Self::SignInOnly => "sign-in link used as a token",
            Self::Unavailable => "database unavailable",
        }
    }
}

#[derive(Debug)]
struct TokenEntry {
    id: Arc<str>,
    client: Arc<Client>,
    secret_sha256: Vec<u8>,
    expires_at: DateTime<Utc>,
    single_use: bool,
    ended: CancellationToken,
    used: AtomicBool,
    limits: Arc<ClientLimits>,
}

#[derive(Debug)]
struct SessionEntry {
    token: Arc<TokenEntry>,
    idle_expires_at: Mutex<DateTime<Utc>>,
    expires_at: DateTime<Utc>,
    ended: CancellationToken,
    used: AtomicBool,
}

impl SessionEntry {
    fn live_at(&self, now: DateTime<Utc>) -> bool {
        let idle = *self.idle_expires_at.lock().unwrap_or_else(|p| p.into_inner());
        now < idle && now < self.expires_at && !self.ended.is_cancelled()
    }
}

/// Authentication for one process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    settings: AuthSettings,
    tokens: Mutex<HashMap<String, Arc<TokenEntry>>>,
    unknown: Mutex<HashMap<String, Instant>>,
    sessions: Mutex<HashMap<[u8; 32], Arc<SessionEntry>>>,
    limits: Mutex<HashMap<i64, Arc<ClientLimits>>>,
    sweep_now: Notify,
    closing: CancellationToken,
    /// Sampling of denials for the audit trail.
    denials: DenialSampler,
    denied: AtomicU64,
    loads: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Auth {
    /// Authentication over `pool`; starts the sweep (so it must be called inside a Tokio runtime).
    pub fn start(pool: PgPool, settings: AuthSettings) -> Self {
        let auth = Self {
            inner: Arc::new(Inner {
                pool,
                settings,
                tokens: Mutex::default(),
                unknown: Mutex::default(),
                sessions: Mutex::default(),
                limits: Mutex::default(),
                sweep_now: Notify::new(),
                closing: CancellationToken::new(),
                denials: DenialSampler::default(),
                denied: AtomicU64::new(0),
                loads: AtomicU64::new(0),
            }),
        };
        if auth.enforced() {
            tokio::spawn(auth.clone().sweep_forever());
        }
        auth
    }

    /// Whether credentials are checked.
    pub fn enforced(&self) -> bool {
        self.inner.settings.mode == AuthMode::Enforce
    }

    /// The session settings.
    pub fn settings(&self) -> &AuthSettings {
        &self.inner.settings
    }

    /// The database.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Stops the sweep.
    pub fn close(&self) {
        self.inner.closing.cancel();
    }

    /// Whether this denial goes into the audit trail (a few a second); counts it either way.
    pub fn sample_denial(&self) -> bool {
        self.inner.denied.fetch_add(1, Ordering::Relaxed);
        self.inner.denials.sample()
    }

    /// `plume_auth_denied_total` and `plume_auth_cache_loads_total`, in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        for (name, help, value) in [
            (
                "plume_auth_denied_total",
                "Requests refused 401 or 403.",
                self.inner.denied.load(Ordering::Relaxed),
            ),
            (
                "plume_auth_cache_loads_total",
                "Tokens and sessions read from the database (not served from the cache).",
                self.inner.loads.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
    }

    /// The principal a bearer token (or Basic password) stands for.
    pub async fn bearer(&self, text: &str) -> Result<Principal, Refusal> {
        let entry = self.verified(text).await?;
        if entry.single_use {
            return Err(Refusal::SignInOnly);
        }
        entry.used.store(true, Ordering::Relaxed);
        Ok(principal(&entry, entry.ended.clone(), false))
    }

    /// The principal a session cookie stands for.
    pub async fn session(&self, cookie: &str) -> Result<Principal, Refusal> {
        let hash = token::session_hash(cookie).ok_or(Refusal::Malformed)?;
        let cached = lock(&self.inner.sessions).get(&hash).cloned();
        let session = match cached {
            Some(session) => session,
            None => {
                self.inner.loads.fetch_add(1, Ordering::Relaxed);
                let live = store::live_session(&self.inner.pool, &hash)
                    .await
                    .map_err(|_| Refusal::Unavailable)?
                    .ok_or(Refusal::Unknown)?;
                self.remember_session(hash, live).await?
            }
        };
        let now = Utc::now();
        if !session.live_at(now) {
            self.forget_session(&hash);
            return Err(Refusal::Expired);
        }
        self.live(&session.token)?;
        session.used.store(true, Ordering::Relaxed);
        session.token.used.store(true, Ordering::Relaxed);
        Ok(principal(&session.token, session.ended.clone(), true))
    }

    /// Signs in with a token: checks it like a bearer token (a sign-in link's token is used up),
    /// starts a session and returns the cookie's value, the principal and the session.
    pub async fn sign_in(&self, text: &str) -> Result<(String, Principal, LiveSession), Refusal> {
        let entry = self.verified(text).await?;
        if entry.single_use {
            let used = store::use_up(&self.inner.pool, &entry.id)
                .await
                .map_err(|_| Refusal::Unavailable)?;
            if !used {
                return Err(Refusal::Unknown);
            }
        }
        let (cookie, hash) = token::new_session_id();
        let settings = &self.inner.settings;
        let live = store::create_session(
            &self.inner.pool,
            &hash,
            &entry.id,
            settings.session_idle,
            settings.session_absolute,
        )
        .await
        .map_err(|_| Refusal::Unavailable)?;
        let session = self.remember_session(hash, live.clone()).await?;
        Ok((
            cookie,
            principal(&session.token, session.ended.clone(), true),
            live,
        ))
    }

    /// Ends the session of `cookie` in every process.
    pub async fn sign_out(&self, cookie: &str) -> Result<(), sqlx::Error> {
        if let Some(hash) = token::session_hash(cookie) {
            store::end_session(&self.inner.pool, &hash).await?;
            self.forget_session(&hash);
        }
        Ok(())
    }

    /// A notification on `plume_auth` (see [`store::CHANNEL`]).
    pub fn heard(&self, payload: &str) {
        match payload.split_once(':') {
            Some(("token", id)) => self.forget_token(id),
            Some(("client", id)) => {
                let id: i64 = id.parse().unwrap_or(-1);
                let ended: Vec<String> = lock(&self.inner.tokens)
                    .iter()
                    .filter(|(_, entry)| entry.client.id == id)
                    .map(|(token, _)| token.clone())
                    .collect();
                for token in ended {
                    self.forget_token(&token);
                }
            }
            Some(("session", hash)) => {
                if let Some(hash) = hex::decode(hash).ok().and_then(|h| <[u8; 32]>::try_from(h).ok()) {
                    self.forget_session(&hash);
                }
            }
            _ => self.inner.sweep_now.notify_one(),
        }
    }

    /// Notifications may have been missed (the listener reconnected): check everything now.
    pub fn resync(&self) {
        self.inner.sweep_now.notify_one();
    }

    /// The live token `text` is: well formed, known, of its kind, with its secret.
    async fn verified(&self, text: &str) -> Result<Arc<TokenEntry>, Refusal> {
        let parsed = token::parse(text).ok_or(Refusal::Malformed)?;
        let entry = self.token_entry(&parsed.id).await?;
        if entry.client.kind != parsed.kind || !same_secret(&entry.secret_sha256, &parsed.secret_sha256) {
            return Err(Refusal::WrongSecret);
        }
        self.live(&entry)?;
        Ok(entry)
    }

    fn live(&self, entry: &TokenEntry) -> Result<(), Refusal> {
        if entry.ended.is_cancelled() {
            return Err(Refusal::Unknown);
        }
        if Utc::now() >= entry.expires_at {
            self.forget_token(&entry.id);
            return Err(Refusal::Expired);
        }
        Ok(())
    }

    async fn token_entry(&self, id: &str) -> Result<Arc<TokenEntry>, Refusal> {
        if let Some(entry) = lock(&self.inner.tokens).get(id) {
            return Ok(entry.clone());
        }
        if lock(&self.inner.unknown)
            .get(id)
            .is_some_and(|at| at.elapsed() < UNKNOWN_FOR)
        {
            return Err(Refusal::Unknown);
        }
        self.inner.loads.fetch_add(1, Ordering::Relaxed);
        match store::live_token(&self.inner.pool, id).await {
            Ok(Some(live)) => Ok(self.remember_token(live)),
            Ok(None) => {
                let mut unknown = lock(&self.inner.unknown);
                if unknown.len() >= MAX_ENTRIES {
                    unknown.clear();
                }
                unknown.insert(id.to_owned(), Instant::now());
                Err(Refusal::Unknown)
            }
            Err(_) => Err(Refusal::Unavailable),
        }
    }

    fn remember_token(&self, live: LiveToken) -> Arc<TokenEntry> {
        let limits = {
            let mut limits = lock(&self.inner.limits);
            if limits.len() >= MAX_ENTRIES {
                limits.clear();
            }
            limits
                .entry(live.client.id)
                .or_insert_with(|| Arc::new(ClientLimits::for_client(&live.client)))
                .clone()
        };
        let entry = Arc::new(TokenEntry {
            id: Arc::from(live.id.as_str()),
            client: Arc::new(live.client),
            secret_sha256: live.secret_sha256,
            expires_at: live.expires_at,
            single_use: live.single_use,
            ended: CancellationToken::new(),
            used: AtomicBool::new(true),
            limits,
        });
        let mut tokens = lock(&self.inner.tokens);
        if tokens.len() >= MAX_ENTRIES {
            tokens.clear();
        }
        // Two requests may load the same token at once: both get the first one stored.
        tokens.entry(live.id).or_insert(entry).clone()
    }

    async fn remember_session(
        &self,
        hash: [u8; 32],
        live: LiveSession,
    ) -> Result<Arc<SessionEntry>, Refusal> {
        let token = self.token_entry(&live.token_id).await?;
        let session = Arc::new(SessionEntry {
            ended: token.ended.child_token(),
            token,
            idle_expires_at: Mutex::new(live.idle_expires_at),
            expires_at: live.expires_at,
            used: AtomicBool::new(false),
        });
        let mut sessions = lock(&self.inner.sessions);
        if sessions.len() >= MAX_ENTRIES {
            sessions.clear();
        }
        Ok(sessions.entry(hash).or_insert(session).clone())
    }

    fn forget_token(&self, id: &str) {
        if let Some(entry) = lock(&self.inner.tokens).remove(id) {
            entry.ended.cancel();
        }
        lock(&self.inner.sessions).retain(|_, session| *session.token.id != *id);
    }

    fn forget_session(&self, hash: &[u8; 32]) {
        if let Some(session) = lock(&self.inner.sessions).remove(hash) {
            session.ended.cancel();
        }
    }

    async fn sweep_forever(self) {
        let closing = self.inner.closing.clone();
        loop {
            tokio::select! {
                () = tokio::time::sleep(SWEEP_EVERY) => {}
                () = self.inner.sweep_now.notified() => {}
                () = closing.cancelled() => return,
            }
            if let Err(error) = self.sweep().await {
                tracing::warn!(%error, "checking cached tokens and sessions failed; retrying");
            }
        }
    }

    /// Checks every cached token and session against the database, dropping (and ending the long
    /// polls of) those no longer live; records use.
    pub async fn sweep(&self) -> Result<(), sqlx::Error> {
        lock(&self.inner.unknown).clear();
        let (ids, used): (Vec<String>, Vec<String>) = {
            let tokens = lock(&self.inner.tokens);
            let ids = tokens.keys().cloned().collect();
            let used = tokens
                .iter()
                .filter(|(_, entry)| entry.used.swap(false, Ordering::Relaxed))
                .map(|(id, _)| id.clone())
                .collect();
            (ids, used)
        };
        if !ids.is_empty() {
            let live = store::live_token_ids(&self.inner.pool, &ids).await?;
            for id in ids.iter().filter(|id| !live.contains(id)) {
                self.forget_token(id);
            }
        }
        if !used.is_empty() {
            store::touch_tokens(&self.inner.pool, &used).await?;
        }
        let (hashes, used): (Vec<Vec<u8>>, Vec<Vec<u8>>) = {
            let sessions = lock(&self.inner.sessions);
            let hashes = sessions.keys().map(|hash| hash.to_vec()).collect();
            let used = sessions
                .iter()
                .filter(|(_, session)| session.used.swap(false, Ordering::Relaxed))
                .map(|(hash, _)| hash.to_vec())
                .collect();
            (hashes, used)
        };
        if hashes.is_empty() {
            return Ok(());
        }
        let live =
            store::refresh_sessions(&self.inner.pool, &hashes, &used, self.inner.settings.session_idle)
                .await?;
        for hash in &hashes {
            let hash: [u8; 32] = hash[..].try_into().expect("stored as 32 bytes");
            match live.iter().find(|(live, _)| live[..] == hash[..]) {
                Some((_, idle)) => {
                    if let Some(session) = lock(&self.inner.sessions).get(&hash) {
                        *lock(&session.idle_expires_at) = *idle;
                    }
                }
                None => self.forget_session(&hash),
            }
        }
        Ok(())
    }
}

fn principal(entry: &TokenEntry, ended: CancellationToken, by_session: bool) -> Principal {
    Principal {
        client: entry.client.clone(),
        token_id: entry.id.clone(),
        by_session,
        ended,
        limits: entry.limits.clone(),
    }
}

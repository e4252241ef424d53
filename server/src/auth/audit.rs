//! The audit trail (`auth_audit`): who created, rotated and revoked tokens, created sites, signed
//! in and out, and a sample of who was refused. Rows are written beside the change they record, or
//! (for sign-ins and denials) in the background, never holding up the request.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};

use super::limits::Bucket;

/// Denials recorded per second in one process, at most: an attacker trying tokens in a loop
/// must not fill the table (the rest are counted on `/metrics`).
const DENIALS_PER_SECOND: u32 = 5;

/// One row of the audit trail, built up and then inserted.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// What happened: `client.created`, `token.rotated`, `session.created`, `request.denied`, …
    pub action: &'static str,
    /// `ok` or `denied`.
    pub outcome: &'static str,
    /// The client that acted or was acted on.
    pub client_id: Option<i64>,
    /// The token that acted or was acted on.
    pub token_id: Option<String>,
    /// The request it happened in.
    pub request_id: Option<String>,
    /// Where the request came from.
    pub remote_addr: Option<String>,
    /// Anything else worth keeping (never a secret).
    pub detail: serde_json::Value,
}

impl AuditEntry {
    /// Something that was done.
    pub fn ok(action: &'static str) -> Self {
        Self::new(action, "ok")
    }

    /// Something that was refused.
    pub fn denied(action: &'static str) -> Self {
        Self::new(action, "denied")
    }

    fn new(action: &'static str, outcome: &'static str) -> Self {
        Self {
            action,
            outcome,
            client_id: None,
            token_id: None,
            request_id: None,
            remote_addr: None,
            detail: serde_json::json!({}),
        }
    }

    /// By (or about) this client and token (`""` for none).
    pub fn by(mut self, client_id: i64, token_id: &str) -> Self {
        self.client_id = Some(client_id);
        self.token_id = (!token_id.is_empty()).then(|| token_id.to_owned());
        self
    }

    /// In this request, from this address.
    pub fn request(mut self, request_id: String, remote_addr: Option<String>) -> Self {
        self.request_id = (!request_id.is_empty()).then_some(request_id);
        self.remote_addr = remote_addr;
        self
    }

    /// With details.
    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }

    /// Inserts the row with `executor` (in the caller's transaction, if it is one).
    pub async fn insert<'e>(&self, executor: impl PgExecutor<'e>) -> Result<(), sqlx::Error> {
        sqlx::query!(
            "insert into auth_audit (action, outcome, client_id, token_id, request_id, remote_addr, detail)
             values ($1, $2, $3, $4, $5, $6, $7)",
            self.action,
            self.outcome,
            self.client_id,
            self.token_id,
            self.request_id,
            self.remote_addr,
            self.detail,
        )
        .execute(executor)
        .await?;
        Ok(())
    }

    /// Inserts the row in the background; a failure is logged, never the request's.
    pub fn spawn_insert(self, pool: &PgPool) {
        let pool = pool.clone();
        tokio::spawn(async move {
            if let Err(error) = self.insert(&pool).await {
                tracing::warn!(%error, action = self.action, "writing the audit trail failed");
            }
        });
    }
}

/// Lets through a few denials a second for the audit trail.
#[derive(Debug)]
pub struct DenialSampler(Mutex<Option<Bucket>>);

impl Default for DenialSampler {
    fn default() -> Self {
        Self(Mutex::new(None))
    }
}

impl DenialSampler {
    /// Whether this denial is recorded.
    pub fn sample(&self) -> bool {
        let mut bucket = self.0.lock().unwrap_or_else(|p| p.into_inner());
        bucket
            .get_or_insert_with(|| Bucket::per_second(DENIALS_PER_SECOND))
            .take(1.0)
            .is_ok()
    }
}

/// One row as `plume tokens audit` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    /// When.
    pub at: DateTime<Utc>,
    /// What.
    pub action: String,
    /// `ok` or `denied`.
    pub outcome: String,
    /// Which client.
    pub client_id: Option<i64>,
    /// Which token.
    pub token_id: Option<String>,
    /// Which request.
    pub request_id: Option<String>,
    /// From where.
    pub remote_addr: Option<String>,
    /// Anything else.
    pub detail: serde_json::Value,
}

/// The audit rows since `since`, oldest first, at most `limit`.
pub async fn since(pool: &PgPool, since: DateTime<Utc>, limit: i64) -> Result<Vec<AuditRow>, sqlx::Error> {
    sqlx::query_as!(
        AuditRow,
        "select at, action, outcome, client_id, token_id, request_id, remote_addr, detail
           from auth_audit where at >= $1 order by at, id limit $2",
        since,
        limit,
    )
    .fetch_all(pool)
    .await
}

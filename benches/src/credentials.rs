//! The benchmarks' credentials: clients minted straight into the bench database as soon as it
//! exists (as `plume tokens create` would), and HTTP clients that send the token on every request.
//!
//! A token's text is never printed: [`BearerToken`]'s `Debug` shows its kind only, and the header
//! value reqwest sends is marked sensitive, so that neither a log nor an error message holds it.

use std::fmt;
use std::sync::Arc;

use anyhow::Context;
use plume::auth::store::{self, NewClient};
use plume::auth::{Kind, Scope};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use sqlx::PgPool;

/// An ingest client's own rates in the benchmarks, far above what two cores can ingest, so that the
/// per-client limits are checked on every request but never throttle one: requests a second,
/// readings a second.
pub const UNTHROTTLED_INGEST: (u32, u32) = (1_000_000, 100_000_000);

/// A client's bearer token, minted for one benchmark run.
#[derive(Clone)]
pub struct BearerToken {
    kind: Kind,
    text: Arc<str>,
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BearerToken({}, redacted)", self.kind.as_str())
    }
}

impl BearerToken {
    /// Creates `client` with a token of its kind's default lifetime.
    pub async fn mint(pool: &PgPool, client: &NewClient) -> anyhow::Result<Self> {
        let expires_at = chrono::Utc::now() + client.kind.default_lifetime();
        let (_, token) = store::create_client(pool, client, expires_at, false)
            .await
            .with_context(|| format!("creating the {} client {:?}", client.kind.as_str(), client.name))?;
        Ok(Self {
            kind: client.kind,
            text: token.text.into(),
        })
    }

    /// A new admin client (every route, every site, no per-client limits), uniquely named so that
    /// a kept database (`--reuse-database`) takes a new one on every run.
    pub async fn admin(pool: &PgPool) -> anyhow::Result<Self> {
        let admin = NewClient::new(
            format!("bench-admin-{}", uuid::Uuid::new_v4().simple()),
            Kind::Admin,
            Scope::all(),
        );
        Self::mint(pool, &admin).await
    }

    /// A new ingest client named `name` over every site, at [`UNTHROTTLED_INGEST`]: what sensors
    /// use, with limits that never bite.
    pub async fn ingest(pool: &PgPool, name: &str) -> anyhow::Result<Self> {
        let (requests_per_second, readings_per_second) = UNTHROTTLED_INGEST;
        let client = NewClient {
            requests_per_second: Some(requests_per_second),
            readings_per_second: Some(readings_per_second),
            ..NewClient::new(name, Kind::Ingest, Scope::all())
        };
        Self::mint(pool, &client).await
    }

    /// The `Authorization` header's value, marked sensitive.
    pub fn header_value(&self) -> HeaderValue {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.text))
            .expect("a plume token is a valid header value");
        value.set_sensitive(true);
        value
    }

    /// The `Authorization` header line, CRLF-terminated, for a client that writes HTTP/1.1 itself.
    pub fn header_line(&self) -> String {
        format!("Authorization: Bearer {}\r\n", self.text)
    }

    /// A reqwest client builder that sends the token on every request.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, self.header_value());
        reqwest::Client::builder().default_headers(headers)
    }

    /// A reqwest client that sends the token on every request.
    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        Ok(self.client_builder().build()?)
    }
}

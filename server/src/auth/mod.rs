//! Who may do what: clients, their tokens and sessions, the rule each route declares, and the
//! per-client limits.
//!
//! A client has one [`Kind`] and a [`Scope`]; its tokens are its credentials. A request is
//! authenticated by a bearer token (or the token as an HTTP Basic password, or a dashboard session
//! cookie) into a [`Principal`], checked against its route's [`Rule`], then against the sites it
//! names by the handler. Tokens and sessions are checked against an in-process cache
//! ([`cache::Auth`]); revocations reach every process through `NOTIFY` within a second, and a sweep
//! re-checks every cached credential every few seconds in case a notification is lost.

pub mod audit;
pub mod cache;
pub mod limits;
pub mod store;
pub mod token;

use std::sync::Arc;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::sites::SiteId;
use limits::ClientLimits;

/// The kinds of client, each with its own token prefix and its own rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A sensor or gateway: writes readings to the sites in its scope and reads their metrics.
    Ingest,
    /// A dashboard viewer or data team: every read of the sites in its scope (exports only with
    /// the export permission).
    Read,
    /// An operator: everything, including creating sites.
    Admin,
    /// A Prometheus server: `/metrics` only.
    Metrics,
}

impl Kind {
    /// The name used in tokens, the database and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Read => "read",
            Self::Admin => "admin",
            Self::Metrics => "metrics",
        }
    }

    /// The kind named `text`.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Ingest, Self::Read, Self::Admin, Self::Metrics]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }

    /// How long a token of this kind lives unless its creator says otherwise.
    pub fn default_lifetime(self) -> chrono::Duration {
        match self {
            // Sensors are installed once and rarely visited: a year.
            Self::Ingest | Self::Metrics => chrono::Duration::days(365),
            Self::Read => chrono::Duration::days(90),
            // The most powerful tokens live shortest.
            Self::Admin => chrono::Duration::days(30),
        }
    }
}

/// The sites a client may touch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scope {
    /// Every site, including ones created later.
    pub all_sites: bool,
    /// The listed sites (ascending, no repeats), when not all.
    pub site_ids: Vec<i64>,
}

impl Scope {
    /// Every site.
    pub fn all() -> Self {
        Self {
            all_sites: true,
            site_ids: Vec::new(),
        }
    }

    /// Only `sites`.
    pub fn sites(mut sites: Vec<i64>) -> Self {
        sites.sort_unstable();
        sites.dedup();
        Self {
            all_sites: false,
            site_ids: sites,
        }
    }

    /// Whether `site` is in scope.
    pub fn contains(&self, site: SiteId) -> bool {
        self.all_sites || self.site_ids.binary_search(&site.get()).is_ok()
    }

    /// The listed sites, or `None` for every site.
    pub fn listed(&self) -> Option<&[i64]> {
        (!self.all_sites).then_some(&self.site_ids[..])
    }
}

/// A client as the cache holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// Its id (0 for the unrestricted principal of `--auth off`).
    pub id: i64,
    /// Its unique name.
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// Which sites it may touch.
    pub scope: Scope,
    /// The prefix every source id it writes must start with, if restricted.
    pub source_prefix: Option<String>,
    /// Whether a read client may export.
    pub can_export: bool,
    /// Its own request rate, if not the default for its kind.
    pub requests_per_second: Option<u32>,
    /// Its own readings rate, if not the default.
    pub readings_per_second: Option<u32>,
    /// How far ahead of the server's clock its readings may be (seconds), if not the server's.
    pub max_future_skew_seconds: Option<u32>,
}

impl Client {
    /// The accepted window for this client's readings: the server's, with its own future skew.
    pub fn window(&self, server: &partitioning::AcceptedWindow) -> partitioning::AcceptedWindow {
        match self.max_future_skew_seconds {
            Some(seconds) => partitioning::AcceptedWindow {
                max_future: chrono::Duration::seconds(i64::from(seconds)),
                ..*server
            },
            None => *server,
        }
    }

    /// Whether the client may write readings to `site`.
    pub fn may_write(&self, site: SiteId) -> bool {
        matches!(self.kind, Kind::Ingest | Kind::Admin) && self.scope.contains(site)
    }

    /// Whether the client may write readings from `source`.
    pub fn may_write_source(&self, source: &str) -> bool {
        self.source_prefix
            .as_deref()
            .is_none_or(|prefix| source.starts_with(prefix))
    }

    /// Whether the client may read `site` (its metrics, at least).
    pub fn may_read(&self, site: SiteId) -> bool {
        self.kind != Kind::Metrics && self.scope.contains(site)
    }
}

/// An authenticated caller: its client, the token it used, and whether it came through a session.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Who.
    pub client: Arc<Client>,
    /// The public id of the token presented (or that signed the session in).
    pub token_id: Arc<str>,
    /// Authenticated by the dashboard's session cookie (so unsafe requests need a matching Origin).
    pub by_session: bool,
    /// Cancelled when the token, its client or the session is revoked, expires or signs out: an
    /// open long poll ends with it.
    pub ended: CancellationToken,
    /// The client's rate limits and slots.
    pub limits: Arc<ClientLimits>,
}

impl Principal {
    /// The principal of every request under `--auth off`: an admin of all sites, unlimited.
    pub fn unrestricted() -> Self {
        Self {
            client: Arc::new(Client {
                id: 0,
                name: "auth-off".to_owned(),
                kind: Kind::Admin,
                scope: Scope::all(),
                source_prefix: None,
                can_export: true,
                requests_per_second: None,
                readings_per_second: None,
                max_future_skew_seconds: None,
            }),
            token_id: Arc::from("-"),
            by_session: false,
            ended: CancellationToken::new(),
            limits: Arc::new(ClientLimits::unlimited()),
        }
    }
}

/// What a route requires of its caller. Every route declares one (see `http::access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Anyone, without credentials: `/health`, `/ready`, the dashboard's files, signing in.
    Open,
    /// Any valid credential (e.g. who am I, sign out).
    AnyClient,
    /// `metrics` or `admin`.
    Metrics,
    /// `admin` only.
    Admin,
    /// `read` or `admin`; the handler limits it to the sites in scope.
    Read,
    /// `read` with the export permission, or `admin`.
    Export,
    /// `ingest` or `admin`; the handler checks every site and source written.
    Ingest,
    /// `read`, `ingest` or `admin`: a site's metrics.
    SiteMetrics,
}

impl Rule {
    /// Whether `client` passes this rule (before any site check).
    pub fn allows(self, client: &Client) -> bool {
        use Kind::{Admin, Ingest, Metrics, Read};
        match self {
            Self::Open | Self::AnyClient => true,
            Self::Metrics => matches!(client.kind, Metrics | Admin),
            Self::Admin => client.kind == Admin,
            Self::Read => matches!(client.kind, Read | Admin),
            Self::Export => client.kind == Admin || (client.kind == Read && client.can_export),
            Self::Ingest => matches!(client.kind, Ingest | Admin),
            Self::SiteMetrics => matches!(client.kind, Read | Ingest | Admin),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(kind: Kind, scope: Scope) -> Client {
        Client {
            id: 1,
            name: "c".into(),
            kind,
            scope,
            source_prefix: Some("north-".into()),
            can_export: false,
            requests_per_second: None,
            readings_per_second: None,
            max_future_skew_seconds: None,
        }
    }

    #[test]
    fn scopes_hold_their_sites_only() {
        let site = |id| SiteId::new(id).unwrap();
        let scoped = client(Kind::Ingest, Scope::sites(vec![7, 3, 7]));
        assert_eq!(scoped.scope.site_ids, vec![3, 7]);
        assert!(scoped.may_write(site(3)) && scoped.may_write(site(7)));
        assert!(!scoped.may_write(site(4)));
        assert!(client(Kind::Read, Scope::all()).may_read(site(99)));
        assert!(!client(Kind::Read, Scope::all()).may_write(site(99)));
        assert!(!client(Kind::Metrics, Scope::all()).may_read(site(99)));
        assert!(scoped.may_write_source("north-1") && !scoped.may_write_source("south-1"));
    }

    #[test]
    fn each_rule_admits_its_kinds() {
        let all = Scope::all();
        let admits = |rule: Rule| {
            [Kind::Ingest, Kind::Read, Kind::Admin, Kind::Metrics]
                .into_iter()
                .filter(|kind| rule.allows(&client(*kind, all.clone())))
                .collect::<Vec<_>>()
        };
        assert_eq!(admits(Rule::Metrics), vec![Kind::Admin, Kind::Metrics]);
        assert_eq!(admits(Rule::Admin), vec![Kind::Admin]);
        assert_eq!(admits(Rule::Read), vec![Kind::Read, Kind::Admin]);
        assert_eq!(admits(Rule::Export), vec![Kind::Admin]);
        assert_eq!(admits(Rule::Ingest), vec![Kind::Ingest, Kind::Admin]);
        assert_eq!(
            admits(Rule::SiteMetrics),
            vec![Kind::Ingest, Kind::Read, Kind::Admin]
        );
        let exporter = Client {
            can_export: true,
            ..client(Kind::Read, all)
        };
        assert!(Rule::Export.allows(&exporter));
    }
}

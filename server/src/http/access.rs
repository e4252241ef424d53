//! Who may call each route, and the middleware that enforces it before any body is read.
//!
//! Every route is added through [`Routes`], which takes the route's [`Rule`] beside its handler, so
//! the rule sits next to the route it guards and the table of every route and rule can be listed
//! (the auth tests walk it). The [`authorize`] middleware runs after routing: it finds the rule of
//! the matched route and method, authenticates the caller (bearer token, the token as a Basic
//! password, or the dashboard's session cookie), checks the rule, the Origin of cookie-borne unsafe
//! requests and the client's request rate, and hands the handler a [`Principal`]. A route without a
//! rule is refused (500): default deny.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::handler::Handler;
use axum::http::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN};
use axum::http::request::Parts;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::envelope::current_request_id;
use crate::auth::audit::AuditEntry;
use crate::auth::cache::Refusal;
use crate::auth::{Principal, Rule};
use crate::error::ApiError;
use crate::state::AppState;

/// The dashboard's session cookie.
pub const SESSION_COOKIE: &str = "plume_session";

/// One declared route: method, full path pattern and rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// The method.
    pub method: Method,
    /// The path as routed, e.g. `/v1/sites/{id}`.
    pub path: String,
    /// Who may call it.
    pub rule: Rule,
}

/// Routes with their rules. The only way routes are added to the app.
#[derive(Debug, Default)]
pub struct Routes {
    router: Router<AppState>,
    declared: Vec<Declared>,
}

impl Routes {
    /// No routes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// `GET path` (and `HEAD`), callable as `rule` says.
    pub fn get<H, T>(self, path: &str, rule: Rule, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.on(Method::GET, path, rule, handler)
    }

    /// `POST path`, callable as `rule` says.
    pub fn post<H, T>(self, path: &str, rule: Rule, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.on(Method::POST, path, rule, handler)
    }

    /// `DELETE path`, callable as `rule` says.
    pub fn delete<H, T>(self, path: &str, rule: Rule, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.on(Method::DELETE, path, rule, handler)
    }

    fn on<H, T>(mut self, method: Method, path: &str, rule: Rule, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a routable method");
        self.router = self.router.route(path, on(filter, handler));
        self.declared.push(Declared {
            method,
            path: path.to_owned(),
            rule,
        });
        self
    }

    /// Limits the bodies of the routes added so far to `bytes` (instead of the app's limit).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.router = self
            .router
            .route_layer(axum::extract::DefaultBodyLimit::max(bytes));
        self
    }

    /// Adds `other`'s routes.
    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.declared.extend(other.declared);
        self
    }

    /// Adds `other`'s routes under `prefix`.
    pub fn nest(mut self, prefix: &str, other: Routes) -> Self {
        self.router = self.router.nest(prefix, other.router);
        self.declared
            .extend(other.declared.into_iter().map(|declared| Declared {
                path: format!("{prefix}{}", declared.path),
                ..declared
            }));
        self
    }

    /// The router and the table of rules.
    pub fn into_parts(self) -> (Router<AppState>, AccessTable) {
        let mut rules: HashMap<String, Vec<(Method, Rule)>> = HashMap::new();
        for declared in &self.declared {
            rules
                .entry(declared.path.clone())
                .or_default()
                .push((declared.method.clone(), declared.rule));
        }
        (
            self.router,
            AccessTable {
                rules,
                declared: self.declared,
            },
        )
    }
}

/// Every route's rule, by method and path pattern.
#[derive(Debug, Clone, Default)]
pub struct AccessTable {
    /// By path pattern: each method's rule (looked up per request without allocating).
    rules: HashMap<String, Vec<(Method, Rule)>>,
    declared: Vec<Declared>,
}

impl AccessTable {
    /// Every declared route, in the order added.
    pub fn declared(&self) -> &[Declared] {
        &self.declared
    }

    /// The rule for `method` on the route `path`: its own; for a method the route does not have, or
    /// no route at all, any client (who then gets 405 or 404, and a stranger 401, so that the
    /// routes cannot be mapped without a token); `None` for a route that declared nothing.
    fn rule(&self, method: &Method, path: Option<&str>) -> Option<Rule> {
        let Some(path) = path else {
            return Some(Rule::AnyClient);
        };
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        let methods = self.rules.get(path)?;
        let declared = methods.iter().find(|(m, _)| m == method);
        Some(declared.map_or(Rule::AnyClient, |(_, rule)| *rule))
    }
}

/// The access middleware's state.
#[derive(Debug, Clone)]
pub struct Guard {
    /// The app's state.
    pub state: AppState,
    /// Every route's rule.
    pub table: Arc<AccessTable>,
}

/// Middleware: the route's rule, then authentication, authorization, CSRF and rate checks; the
/// handler runs with the [`Principal`] in the request's extensions.
pub async fn authorize(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let Some(rule) = guard.table.rule(request.method(), path.as_deref()) else {
        tracing::error!(path, "the route declares no access rule: refused");
        return ApiError::Internal(anyhow::anyhow!("route without an access rule")).into_response();
    };
    if rule == Rule::Open {
        return next.run(request).await;
    }
    let state = &guard.state;
    let principal = if state.auth.enforced() {
        match authenticate(state, request.headers()).await {
            Ok(principal) => principal,
            // Not the caller's fault, and worth a retry.
            Err(Refusal::Unavailable) => return ApiError::Unavailable(None).into_response(),
            Err(refusal) => return deny(state, &request, None, refusal.as_str(), ApiError::Unauthenticated),
        }
    } else {
        Principal::unrestricted()
    };
    let span = tracing::Span::current();
    span.record("client_id", principal.client.id);
    span.record("token_id", &*principal.token_id);
    if !rule.allows(&principal.client) {
        let error = ApiError::Forbidden(format!(
            "a {} client may not call this route",
            principal.client.kind.as_str()
        ));
        return deny(state, &request, Some(&principal), "rule", error);
    }
    if principal.by_session && !is_safe(request.method()) && !same_origin(&request) {
        let error = ApiError::Forbidden("a request from another origin (Origin does not match)".into());
        return deny(state, &request, Some(&principal), "origin", error);
    }
    if let Err(throttled) = principal.limits.request() {
        return ApiError::RateLimited(throttled).into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// A 401 or 403, with a sampled row in the audit trail.
fn deny(
    state: &AppState,
    request: &Request,
    principal: Option<&Principal>,
    reason: &str,
    error: ApiError,
) -> Response {
    if state.auth.sample_denial() {
        let mut entry = AuditEntry::denied("request.denied")
            .request(current_request_id(), remote_addr(request))
            .detail(serde_json::json!({
                "reason": reason,
                "method": request.method().as_str(),
                "path": request.uri().path(),
            }));
        if let Some(principal) = principal {
            entry = entry.by(principal.client.id, &principal.token_id);
        }
        entry.spawn_insert(state.auth.pool());
    }
    error.into_response()
}

async fn authenticate(state: &AppState, headers: &axum::http::HeaderMap) -> Result<Principal, Refusal> {
    if let Some(header) = headers.get(AUTHORIZATION) {
        let text = header.to_str().map_err(|_| Refusal::Malformed)?;
        return state
            .auth
            .bearer(&credential(text).ok_or(Refusal::Malformed)?)
            .await;
    }
    match session_cookie(headers) {
        Some(cookie) => state.auth.session(cookie).await,
        None => Err(Refusal::Missing),
    }
}

/// The token in an `Authorization` header: `Bearer <token>`, or `Basic` with the token as the
/// password (any user name), for devices that can only send Basic.
fn credential(header: &str) -> Option<String> {
    let (scheme, value) = header.trim().split_once(' ')?;
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(value.to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = String::from_utf8(STANDARD.decode(value).ok()?).ok()?;
        return decoded.split_once(':').map(|(_, password)| password.to_owned());
    }
    None
}

/// The session cookie's value, if the request carries one.
pub fn session_cookie(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether the request's `Origin` is the origin it was sent to (its `Host`, over http or https).
/// A cookie-borne unsafe request without one is refused too: browsers send it on every POST.
pub fn same_origin(request: &Request) -> bool {
    let headers = request.headers();
    let (Some(origin), Some(host)) = (
        headers.get(ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(HOST).and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|authority| authority.eq_ignore_ascii_case(host))
}

/// The peer's address, when the server was started with connection info.
pub fn remote_addr(request: &Request) -> Option<String> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.to_string())
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    /// The caller, as [`authorize`] found it; a handler reached without it (a route added around
    /// [`Routes`]) refuses, never serves anonymously.
    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a handler ran without an access rule")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_bearer_or_the_basic_password() {
        assert_eq!(credential("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(credential("bearer  abc ").as_deref(), Some("abc"));
        let basic = format!("Basic {}", STANDARD.encode("sensor-7:abc"));
        assert_eq!(credential(&basic).as_deref(), Some("abc"));
        assert_eq!(credential("Digest abc"), None);
        assert_eq!(credential("Basic !!!"), None);
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(COOKIE, "a=1; plume_session=abc; b=2".parse().unwrap());
        assert_eq!(session_cookie(&headers), Some("abc"));
        headers.insert(COOKIE, "plume_sessionx=abc".parse().unwrap());
        assert_eq!(session_cookie(&headers), None);
    }

    #[test]
    fn no_module_adds_a_route_around_the_table() {
        // Each endpoint module adds its routes through `Routes`, whose rules the middleware enforces.
        for (file, source) in [
            ("bulk.rs", include_str!("bulk.rs")),
            ("changes.rs", include_str!("changes.rs")),
            ("dashboard.rs", include_str!("dashboard.rs")),
            ("health.rs", include_str!("health.rs")),
            ("ingest.rs", include_str!("ingest.rs")),
            ("mod.rs", include_str!("mod.rs")),
            ("openapi.rs", include_str!("openapi.rs")),
            ("query.rs", include_str!("query.rs")),
            ("session.rs", include_str!("session.rs")),
            ("sites.rs", include_str!("sites.rs")),
        ] {
            let forbidden = [".route(", ".route_service(", ".nest_service("];
            assert!(
                !forbidden.iter().any(|call| source.contains(call)),
                "{file} adds a route without an access rule: use access::Routes"
            );
        }
    }
}

//! `/v2/session`: the dashboard signs in once with a token and is then recognised by an HttpOnly,
//! `SameSite=Strict` session cookie, so no token is ever kept in the browser's storage.

use axum::extract::{FromRequest, Request, State};
use axum::http::header::{HeaderValue, SET_COOKIE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::access::{remote_addr, same_origin, session_cookie, Routes, SESSION_COOKIE};
use super::envelope::{current_request_id, Envelope};
use super::json::{self, JsonBody};
use super::openapi::schemas::{ErrorEnvelope, SessionEnvelope, SignInBody};
use crate::auth::audit::AuditEntry;
use crate::auth::{Kind, Principal, Rule};
use crate::error::ApiError;
use crate::state::AppState;

/// The session routes, relative to `/v2`.
pub fn router() -> Routes {
    Routes::new()
        // Open: this is where a credential is first presented.
        .post("/session", Rule::Open, sign_in)
        .get("/session", Rule::AnyClient, who_am_i)
        .delete("/session", Rule::AnyClient, sign_out)
}

/// These routes' part of the API document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(sign_in, who_am_i, sign_out))]
pub struct Api;

/// Who is signed in, and what the dashboard may offer them.
#[derive(Debug, Clone, Serialize, ts_rs::TS, utoipa::ToSchema)]
pub struct SessionInfo {
    /// The client's id.
    pub client_id: i64,
    /// The client's name.
    pub client_name: String,
    /// `ingest`, `read`, `admin` or `metrics`.
    pub kind: String,
    /// Whether every site is in scope.
    pub all_sites: bool,
    /// The sites in scope, when not all.
    pub site_ids: Vec<i64>,
    /// Whether the client may write readings (to the sites in scope).
    pub can_write: bool,
    /// Whether the client may create sites.
    pub can_create_sites: bool,
    /// Whether the client may export.
    pub can_export: bool,
}

impl SessionInfo {
    fn of(principal: &Principal) -> Self {
        let client = &principal.client;
        Self {
            client_id: client.id,
            client_name: client.name.clone(),
            kind: client.kind.as_str().to_owned(),
            all_sites: client.scope.all_sites,
            site_ids: client.scope.site_ids.clone(),
            can_write: matches!(client.kind, Kind::Ingest | Kind::Admin),
            can_create_sites: client.kind == Kind::Admin,
            can_export: Rule::Export.allows(client),
        }
    }
}

#[derive(Debug, Deserialize)]
struct SignIn<'a> {
    #[serde(borrow)]
    token: json::Field<'a>,
}

/// Signs in with `{"token": "..."}`: 201 with the session's client and the cookie, or 401.
#[utoipa::path(
    post,
    path = "/session",
    tag = "session",
    request_body(content = SignInBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Signed in: the session's client, and its cookie.", body = SessionEnvelope,
         headers(("Set-Cookie" = String, description = "`plume_session=...; Path=/; HttpOnly; SameSite=Strict`"))),
        (status = 400, description = "The body is not JSON, or not sent as `application/json`.", body = ErrorEnvelope),
        (status = 401, description = "Not a working token.", body = ErrorEnvelope,
         headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"plume\"`"))),
        (status = 403, description = "An `Origin` that is not the server's own, or authentication is off.", body = ErrorEnvelope),
        (status = 413, description = "The body is over the limit.", body = ErrorEnvelope),
        (status = 415, description = "The body came with a `Content-Encoding`: this endpoint takes none.", body = ErrorEnvelope,
         headers(("Accept-Encoding" = String, description = "`identity`"))),
        (status = 422, description = "No `token` string.", body = ErrorEnvelope),
    )
)]
#[tracing::instrument(skip_all)]
async fn sign_in(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    // A page on another site must not sign a browser in under someone else's token.
    if request.headers().contains_key(axum::http::header::ORIGIN) && !same_origin(&request) {
        return Err(ApiError::Forbidden("a sign-in from another origin".into()));
    }
    let secure = is_https(&request);
    let remote = remote_addr(&request);
    let JsonBody(body) = JsonBody::from_request(request, &state).await?;
    let parsed: SignIn<'_> = json::parse(&body)?;
    let token = json::present(parsed.token)
        .ok_or_else(|| ApiError::invalid("token", "is required"))
        .and_then(|raw| json::string(raw).map_err(|message| ApiError::invalid("token", message)))?;
    if !state.auth.enforced() {
        return Err(ApiError::Forbidden(
            "authentication is off: there is nothing to sign in to".into(),
        ));
    }
    let (cookie, principal, session) = match state.auth.sign_in(&token).await {
        Ok(signed_in) => signed_in,
        Err(refusal) => {
            AuditEntry::denied("session.created")
                .request(current_request_id(), remote)
                .detail(serde_json::json!({ "reason": refusal.as_str() }))
                .spawn_insert(state.auth.pool());
            return Err(ApiError::Unauthenticated);
        }
    };
    tracing::Span::current().record("client_id", principal.client.id);
    AuditEntry::ok("session.created")
        .by(principal.client.id, &principal.token_id)
        .request(current_request_id(), remote)
        .spawn_insert(state.auth.pool());
    let max_age = (session.expires_at - chrono::Utc::now()).num_seconds().max(0);
    let secure = if secure { "; Secure" } else { "" };
    let set_cookie =
        format!("{SESSION_COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    let mut response =
        Envelope::with_status(StatusCode::CREATED, SessionInfo::of(&principal)).into_response();
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_str(&set_cookie).expect("hex and ASCII"),
    );
    Ok(response)
}

/// The signed-in client (or the token's, for a bearer token).
#[utoipa::path(
    get,
    path = "/session",
    tag = "session",
    responses((status = 200, description = "The caller.", body = SessionEnvelope))
)]
#[tracing::instrument(skip_all)]
async fn who_am_i(principal: Principal) -> Envelope<SessionInfo> {
    Envelope::ok(SessionInfo::of(&principal))
}

/// Ends the session in every process (its open long polls end with it) and clears the cookie.
#[utoipa::path(
    delete,
    path = "/session",
    tag = "session",
    responses((status = 204, description = "Signed out; the cookie is cleared.",
               headers(("Set-Cookie" = String, description = "`plume_session=; ...; Max-Age=0`"))))
)]
#[tracing::instrument(skip_all)]
async fn sign_out(
    State(state): State<AppState>,
    principal: Principal,
    request: Request,
) -> Result<Response, ApiError> {
    if let Some(cookie) = session_cookie(request.headers()).filter(|_| principal.by_session) {
        state.auth.sign_out(cookie).await?;
        AuditEntry::ok("session.ended")
            .by(principal.client.id, &principal.token_id)
            .request(current_request_id(), remote_addr(&request))
            .spawn_insert(state.auth.pool());
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_static("plume_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(response)
}

/// Whether the browser reached plume over https (directly or through a proxy that says so).
fn is_https(request: &Request) -> bool {
    let headers = request.headers();
    headers
        .get("x-forwarded-proto")
        .is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"))
        || headers
            .get(axum::http::header::ORIGIN)
            .is_some_and(|origin| origin.as_bytes().starts_with(b"https://"))
}

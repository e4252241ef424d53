//! `/v1/sites`: create, list, read, and read metrics.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use super::access::Routes;
use super::envelope::current_request_id;
use super::envelope::Envelope;
use super::json::JsonBody;
use super::openapi::schemas::{
    ErrorEnvelope, NewSiteBody, SiteEnvelope, SiteMetricsEnvelope, SitePageEnvelope,
};
use crate::auth::audit::AuditEntry;
use crate::auth::{Principal, Rule};
use crate::error::ApiError;
use crate::sites::{self, request, Site, SiteId, SiteMetrics};
use crate::state::AppState;

/// Sites per page when the client does not say.
const DEFAULT_PAGE: i64 = 50;
/// The most sites one page may hold.
const MAX_PAGE: i64 = 500;

/// The site routes, relative to the API root.
pub fn router() -> Routes {
    Routes::new()
        .get("/sites", Rule::Read, list_sites)
        .post("/sites", Rule::Admin, create_site)
        .get("/sites/{id}", Rule::Read, get_site)
        .get("/sites/{id}/metrics", Rule::SiteMetrics, get_metrics)
}

/// These routes' part of the API document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(list_sites, create_site, get_site, get_metrics))]
pub struct Api;

/// Creates a site.
#[utoipa::path(
    post,
    path = "/sites",
    tag = "sites",
    request_body(content = NewSiteBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The site, created.", body = SiteEnvelope),
        (status = 400, description = "The body is not JSON, or not sent as `application/json`.", body = ErrorEnvelope),
        (status = 413, description = "The body is over the limit.", body = ErrorEnvelope),
        (status = 415, description = "The body came with a `Content-Encoding`: this endpoint takes none.", body = ErrorEnvelope,
         headers(("Accept-Encoding" = String, description = "`identity`"))),
        (status = 422, description = "`details` names every bad field.", body = ErrorEnvelope),
    )
)]
#[tracing::instrument(skip_all)]
async fn create_site(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody,
) -> Result<Envelope<Site>, ApiError> {
    let new_site = request::parse_new_site(&body)?;
    let row = sites::create(&state.pool, state.settings.topology, &new_site).await?;
    state.change_signal.committed();
    tracing::info!(site_id = row.id, "site created");
    AuditEntry::ok("site.created")
        .by(principal.client.id, &principal.token_id)
        .request(current_request_id(), None)
        .detail(serde_json::json!({ "site_id": row.id, "name": row.name }))
        .spawn_insert(&state.pool);
    Ok(Envelope::with_status(StatusCode::CREATED, row.into()))
}

#[derive(Debug, Deserialize)]
struct ListParams {
    limit: Option<String>,
    cursor: Option<String>,
}

/// Lists the sites in the client's scope, a page at a time, in id order.
#[utoipa::path(
    get,
    path = "/sites",
    tag = "sites",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Sites per page (default 50)."),
        ("cursor" = Option<String>, Query, description = "The previous page's `meta.next_cursor`."),
    ),
    responses(
        (status = 200, description = "A page of sites.", body = SitePageEnvelope),
        (status = 422, description = "A bad `limit` or `cursor`.", body = ErrorEnvelope),
    )
)]
#[tracing::instrument(skip_all)]
async fn list_sites(
    State(state): State<AppState>,
    principal: Principal,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Envelope<Vec<Site>>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let limit = match params.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(text) => text
            .parse()
            .ok()
            .filter(|limit| (1..=MAX_PAGE).contains(limit))
            .ok_or_else(|| ApiError::invalid("limit", format!("must be an integer from 1 to {MAX_PAGE}")))?,
    };
    let after = match params.cursor.as_deref() {
        None | Some("") => 0,
        Some(cursor) => decode_cursor(cursor)
            .ok_or_else(|| ApiError::invalid("cursor", "is not a cursor this API issued"))?,
    };
    let in_scope = principal.client.scope.listed();
    let mut rows = sites::list(&state.pool, after, limit + 1, in_scope).await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|row| Value::String(encode_cursor(row.id)))
    } else {
        None
    };
    let data = rows.into_iter().map(Site::from).collect();
    Ok(Envelope::ok(data).meta("next_cursor", next_cursor.unwrap_or(Value::Null)))
}

/// Reads a site.
#[utoipa::path(
    get,
    path = "/sites/{id}",
    tag = "sites",
    params(("id" = i64, Path, description = "The site's id.")),
    responses(
        (status = 200, description = "The site.", body = SiteEnvelope),
        (status = 404, description = "No such site, or not in the client's scope.", body = ErrorEnvelope),
        (status = 422, description = "The id is not an integer.", body = ErrorEnvelope),
    )
)]
#[tracing::instrument(skip_all)]
async fn get_site(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<Envelope<Site>, ApiError> {
    let id = readable_site(&principal, id)?;
    let row = sites::find(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::SiteNotFound(id.get().to_string()))?;
    Ok(Envelope::ok(row.into()))
}

/// Reads a site's metrics: its total, status, reading count and version.
#[utoipa::path(
    get,
    path = "/sites/{id}/metrics",
    tag = "sites",
    params(("id" = i64, Path, description = "The site's id.")),
    responses(
        (status = 200, description = "The site's metrics.", body = SiteMetricsEnvelope),
        (status = 404, description = "No such site, or not in the client's scope.", body = ErrorEnvelope),
        (status = 422, description = "The id is not an integer.", body = ErrorEnvelope),
    )
)]
#[tracing::instrument(skip_all)]
async fn get_metrics(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<Envelope<SiteMetrics>, ApiError> {
    let id = readable_site(&principal, id)?;
    let row = sites::find(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::SiteNotFound(id.get().to_string()))?;
    Ok(Envelope::ok(row.into()))
}

/// An id that is not an integer is 422; an integer that cannot name a site (0, negative, too
/// large) is simply not found.
pub(super) fn parse_site_id(id: Result<Path<String>, PathRejection>) -> Result<SiteId, ApiError> {
    let Ok(Path(text)) = id else {
        return Err(ApiError::invalid("id", "must be a positive integer"));
    };
    let digits = text.strip_prefix('-').unwrap_or(&text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::invalid("id", "must be a positive integer"));
    }
    text.parse::<i64>()
        .ok()
        .and_then(SiteId::new)
        .ok_or(ApiError::SiteNotFound(text))
}

/// The site in the path, if `principal` may read it: a site out of scope is "not found", exactly
/// like a missing one, so the API tells nobody which sites exist beyond their own.
pub(super) fn readable_site(
    principal: &Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<SiteId, ApiError> {
    let site = parse_site_id(id)?;
    if principal.client.may_read(site) {
        Ok(site)
    } else {
        Err(ApiError::SiteNotFound(site.get().to_string()))
    }
}

/// Cursors are opaque to clients: the last id seen, tagged and encoded.
fn encode_cursor(last_id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("site:{last_id}"))
}

fn decode_cursor(cursor: &str) -> Option<i64> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix("site:")?
        .parse()
        .ok()
        .filter(|id: &i64| *id >= 0)
}

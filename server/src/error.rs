//! The HTTP boundary's one error type and the error envelope it renders.
//!
//! Every failure leaves the service as `{"error": {"code", "message", "details"}, "meta":
//! {"request_id"}}` with a stable machine code. Database and unexpected errors become an opaque 500
//! (or a 503 while the database is unreachable), logged once here with the request id.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::http::envelope;

/// One problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS, utoipa::ToSchema)]
pub struct FieldError {
    /// Where the problem is, e.g. `readings[3].timestamp`.
    pub path: String,
    /// What is wrong with it, in plain words.
    pub message: String,
}

impl FieldError {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Everything an endpoint can answer with instead of success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not JSON, or not declared as JSON.
    #[error("{0}")]
    Malformed(String),
    /// 422: the request is well-formed but its content is not acceptable.
    #[error("the request is not valid")]
    Validation(Vec<FieldError>),
    /// 422: more problems than are listed; the count of all of them.
    #[error("the request has {found} problems; the first {listed} are listed", found = .1, listed = .0.len())]
    TooManyProblems(Vec<FieldError>, usize),
    /// 415: the body's `Content-Type` is not one the endpoint reads.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 415: the body's `Content-Encoding` is not one the endpoint decodes; answered with the
    /// `Accept-Encoding` it does decode (`accepted`).
    #[error("{message}")]
    UnsupportedEncoding {
        /// What was sent, and what to send instead.
        message: String,
        /// The `Accept-Encoding` answered: the codings the endpoint decodes, or `identity`.
        accepted: &'static str,
    },
    /// 401: no credential, or one that is malformed, unknown, wrong, expired or revoked (all
    /// answered alike, so a caller learns nothing about which).
    #[error("authentication required: send Authorization: Bearer <token>")]
    Unauthenticated,
    /// 403: authenticated, but not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    /// 403: readings the client may not write (their sites or sources), one entry each.
    #[error("the request writes {found} readings this client may not write; the first {listed} are listed", found = .1, listed = .0.len())]
    ForbiddenReadings(Vec<FieldError>, usize),
    /// 429: the client is over one of its limits; retry after the time given.
    #[error("too many {}: retry after {} s", .0.what, .0.retry_after_secs)]
    RateLimited(crate::auth::limits::Throttled),
    /// 404: no site with that id (as the client wrote it).
    #[error("site {0} does not exist")]
    SiteNotFound(String),
    /// 404: no such route.
    #[error("no such resource: {0}")]
    NotFound(String),
    /// 405: the route exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: the idempotency key was used before with another payload.
    #[error("idempotency key {0:?} was already used for a different batch")]
    IdempotencyKeyReused(String),
    /// 413: the body is larger than allowed.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 413: the compressed body decodes to more than allowed (decoding stopped there).
    #[error("the request body is larger than {0} bytes once decompressed: the limit applies to the decompressed body")]
    DecodedTooLarge(usize),
    /// 503: the database cannot be reached now; retrying later is safe.
    #[error("the database is unavailable")]
    Unavailable(#[source] Option<sqlx::Error>),
    /// 503: the service is at a limit it sets itself (e.g. exports running at once); retry later.
    #[error("{0}")]
    Busy(String),
    /// 500: anything else; the client sees no detail, the log sees everything.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// A 422 with a single problem.
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(path, message)])
    }

    fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            Self::Malformed(_) => (StatusCode::BAD_REQUEST, ErrorCode::MalformedRequest),
            Self::Validation(_) | Self::TooManyProblems(..) => {
                (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::ValidationError)
            }
            Self::UnsupportedMediaType(_) | Self::UnsupportedEncoding { .. } => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
            ),
            Self::Unauthenticated => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated),
            Self::Forbidden(_) | Self::ForbiddenReadings(..) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            Self::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited),
            Self::SiteNotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::SiteNotFound),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::MethodNotAllowed),
            Self::IdempotencyKeyReused(_) => (StatusCode::CONFLICT, ErrorCode::IdempotencyKeyReused),
            Self::PayloadTooLarge(_) | Self::DecodedTooLarge(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge)
            }
            Self::Unavailable(_) | Self::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        }
    }
}

/// The stable machine codes of the error envelope: the one list, which the OpenAPI document
/// enumerates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// 400: the body is not JSON, or not declared as JSON.
    MalformedRequest,
    /// 422: the request is well-formed but its content is not acceptable.
    ValidationError,
    /// 415: the body's `Content-Type` is not one the endpoint reads.
    UnsupportedMediaType,
    /// 401: no usable credential.
    Unauthenticated,
    /// 403: not allowed.
    Forbidden,
    /// 429: over a limit.
    RateLimited,
    /// 404: no such site (or not in the client's scope).
    SiteNotFound,
    /// 404: no such route.
    NotFound,
    /// 405: no such method on the route.
    MethodNotAllowed,
    /// 409: the idempotency key was used for another payload.
    IdempotencyKeyReused,
    /// 413: the body is too large.
    PayloadTooLarge,
    /// 503: retry later.
    Unavailable,
    /// 500: anything else.
    Internal,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 13] = [
        Self::MalformedRequest,
        Self::ValidationError,
        Self::UnsupportedMediaType,
        Self::Unauthenticated,
        Self::Forbidden,
        Self::RateLimited,
        Self::SiteNotFound,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::IdempotencyKeyReused,
        Self::PayloadTooLarge,
        Self::Unavailable,
        Self::Internal,
    ];

    /// The code as the envelope writes it, e.g. `VALIDATION_ERROR`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedRequest => "MALFORMED_REQUEST",
            Self::ValidationError => "VALIDATION_ERROR",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::RateLimited => "RATE_LIMITED",
            Self::SiteNotFound => "SITE_NOT_FOUND",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::Unavailable => "UNAVAILABLE",
            Self::Internal => "INTERNAL",
        }
    }
}

impl From<sqlx::Error> for ApiError {
    /// Connection-level failures are 503 (retry later); everything else is an opaque 500.
    fn from(error: sqlx::Error) -> Self {
        if is_unavailable(&error) {
            Self::Unavailable(Some(error))
        } else {
            Self::Internal(error.into())
        }
    }
}

/// Whether `error` means the database cannot be reached (as opposed to a bug or bad data).
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
            true
        }
        sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // Transient conditions, all safe to retry after the rollback:
            // class 08 connection exceptions; class 53 insufficient resources (too many connections,
            // out of memory or disk); 57014 statement cancelled or timed out; 57P01-57P03 shutdown
            // or not yet accepting connections; 40001/40P01 serialization failure or deadlock;
            // 55P03 lock not available; 25006 read-only transaction (a failover in progress).
            code.starts_with("08")
                || code.starts_with("53")
                || matches!(
                    code.as_ref(),
                    "57014" | "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "55P03" | "25006"
                )
        }),
        _ => false,
    }
}

/// The `error` member of an error envelope.
#[derive(Debug, Serialize, ts_rs::TS, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable machine code, e.g. `VALIDATION_ERROR`.
    #[schema(value_type = ErrorCode)]
    pub code: String,
    /// What went wrong, in plain words.
    pub message: String,
    /// One entry per bad field (validation errors only).
    pub details: Vec<FieldError>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match &self {
            Self::Internal(source) => tracing::error!(error = ?source, "request failed"),
            Self::Unavailable(source) => tracing::warn!(error = ?source, "database unavailable"),
            _ => {}
        }
        let details = match &self {
            Self::Validation(details)
            | Self::TooManyProblems(details, _)
            | Self::ForbiddenReadings(details, _) => details.clone(),
            _ => Vec::new(),
        };
        let message = match &self {
            Self::Validation(details) if details.len() == 1 => {
                format!("{} {}", details[0].path, details[0].message)
            }
            Self::Validation(details) => format!("the request has {} invalid fields", details.len()),
            other => other.to_string(),
        };
        let body = ErrorBody {
            code: code.as_str().to_owned(),
            message,
            details,
        };
        let mut response = envelope::error(status, &body);
        match &self {
            Self::Unauthenticated => {
                response.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer realm=\"plume\""),
                );
            }
            Self::RateLimited(throttled) => {
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from(throttled.retry_after_secs),
                );
            }
            // RFC 9110 §15.5.16: a 415 for a coding names the codings that would have been read.
            Self::UnsupportedEncoding { accepted, .. } => {
                response.headers_mut().insert(
                    axum::http::header::ACCEPT_ENCODING,
                    axum::http::HeaderValue::from_static(accepted),
                );
            }
            // At capacity: worth trying again in a moment.
            Self::Busy(_) => {
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("1"),
                );
            }
            _ => {}
        }
        response
    }
}

//! [`RequestError`]: every way a request can fail, as an HTTP status and a
//! JSON body naming the field at fault. Internals (store errors, addresses,
//! tokens) never reach the body; they are logged instead.
//!
//! [`MAX_BODY_BYTES`] is here, beside the error that names it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Largest request body accepted, in bytes (413 above). A command's
/// parameters are at most a few hundred numbers (M1M3's force arrays):
/// 64 KiB is many times that, and bounds what one request can cost.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A refused or failed request. Each variant says what the caller should do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    /// The body is not JSON, or a field is missing, of the wrong type, or
    /// not in the command's schema (unknown command, bad parameter): fix
    /// the field named in `field` and send again. Nothing was sent.
    #[error("{message}")]
    BadRequest { field: Option<String>, message: String },
    /// No token, a malformed `Authorization` header, or a token the
    /// commander does not know: send `Authorization: Bearer <token>`.
    #[error("{0}")]
    Unauthenticated(String),
    /// The token is known but may not do this (read-only, or not for this
    /// CSC or command): ask for a token with that scope.
    #[error("{0}")]
    Forbidden(String),
    /// No such CSC instance is running: check `csc` and `salindex`.
    #[error("{0}")]
    UnknownCsc(String),
    /// No such route: see `/openapi.json`.
    #[error("{0}")]
    NotFound(String),
    /// The route exists with another method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("the request body is larger than {MAX_BODY_BYTES} bytes")]
    PayloadTooLarge,
    /// The CSC refused the command (e.g. not allowed in its current state)
    /// or it failed; the reason is the CSC's own. Change the CSC's state or
    /// the command, then send again.
    #[error("{0}")]
    Refused(String),
    /// The token sent more requests than its rate allows: wait
    /// `retry_after_s` seconds (the `Retry-After` header).
    #[error("too many requests for this token: retry in {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    /// The CSC's command queue is full: retry shortly.
    #[error("{0}")]
    Busy(String),
    /// No final acknowledgement within the command's timeout. The command
    /// may still complete: check the CSC's state before sending it again.
    #[error("{0}")]
    Timeout(String),
    /// A dependency (the audit store, the middleware) cannot be reached;
    /// the message says which, never why (that is logged). Retry later.
    #[error("{0}")]
    Unavailable(String),
}

impl RequestError {
    /// A 400 naming `field` (`"params.azimuth"`, `"salindex"`, …); the
    /// message starts with the field so it reads on its own.
    pub fn field(field: impl Into<String>, reason: impl std::fmt::Display) -> RequestError {
        let field = field.into();
        RequestError::BadRequest {
            message: format!("{field}: {reason}"),
            field: Some(field),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            RequestError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            RequestError::Forbidden(_) => StatusCode::FORBIDDEN,
            RequestError::UnknownCsc(_) | RequestError::NotFound(_) => StatusCode::NOT_FOUND,
            RequestError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            RequestError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::Refused(_) => StatusCode::CONFLICT,
            RequestError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            RequestError::Busy(_) | RequestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            RequestError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// A stable, machine-readable name of the variant (the body's `error`).
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::BadRequest { .. } => "bad_request",
            RequestError::Unauthenticated(_) => "unauthenticated",
            RequestError::Forbidden(_) => "forbidden",
            RequestError::UnknownCsc(_) => "unknown_csc",
            RequestError::NotFound(_) => "not_found",
            RequestError::MethodNotAllowed(_) => "method_not_allowed",
            RequestError::PayloadTooLarge => "payload_too_large",
            RequestError::Refused(_) => "refused",
            RequestError::RateLimited { .. } => "rate_limited",
            RequestError::Busy(_) => "busy",
            RequestError::Timeout(_) => "timeout",
            RequestError::Unavailable(_) => "unavailable",
        }
    }

    /// The request field at fault, if one is.
    pub fn field_name(&self) -> Option<&str> {
        match self {
            RequestError::BadRequest { field, .. } => field.as_deref(),
            RequestError::UnknownCsc(_) => Some("csc"),
            _ => None,
        }
    }

    /// The body for the replaced system's route (`POST /cmd/`): its client
    /// shows `ack`; `error` and `field` are additions it ignores.
    pub fn into_love_response(self) -> Response {
        self.respond("ack")
    }

    fn respond(self, message_key: &str) -> Response {
        let mut body = serde_json::Map::new();
        body.insert("error".into(), self.code().into());
        body.insert(message_key.into(), self.to_string().into());
        if let Some(field) = self.field_name() {
            body.insert("field".into(), field.into());
        }
        let mut response = (self.status(), Json(serde_json::Value::Object(body))).into_response();
        let headers = response.headers_mut();
        match &self {
            RequestError::RateLimited { retry_after_s } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
            }
            RequestError::Busy(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            }
            RequestError::Unauthenticated(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

/// The native routes' body: `{"error": code, "message": text, "field"?: name}`.
impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        self.respond("message")
    }
}

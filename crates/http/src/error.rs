//! The one error model. Handlers and extractors return [`ApiError`]; layers below
//! us answer with bare statuses (413, 503 on timeout, 500 on panic). Either way
//! [`render_errors`] turns the answer into the JSON shape of the surface that
//! was called, with the request id, and nothing else.

use std::borrow::Cow;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use crate::RequestId;

/// An answer to a request that went wrong: a status, a stable machine code and a
/// message safe to show anyone. Internal detail belongs in the log, not here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: Cow<'static, str>,
    /// Answer with `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750).
    pub challenge: bool,
    /// Answer with `Retry-After`, in whole seconds rounded up.
    pub retry_after: Option<std::time::Duration>,
    /// Fields the surface's clients read beside the code (Supabase Auth's
    /// `weak_password.reasons`), merged into the JSON body.
    pub details: Option<Box<Value>>,
    /// The status the body names when the wire carries another: Supabase Storage
    /// answers most refusals with 400 and the real status in `statusCode`.
    pub reported_status: Option<StatusCode>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            challenge: false,
            retry_after: None,
            details: None,
            reported_status: None,
        }
    }

    /// Sent as 400, naming `status` in the body (Supabase Storage's dialect).
    pub fn reported_as_bad_request(mut self) -> Self {
        self.reported_status = Some(self.status);
        self.status = StatusCode::BAD_REQUEST;
        self
    }

    pub fn with_retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    pub fn with_challenge(mut self) -> Self {
        self.challenge = true;
        self
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unexpected_failure",
            "The server could not complete the request.",
        )
    }

    /// The generic error for a status produced by a layer or a framework rejection.
    fn for_status(status: StatusCode) -> Self {
        let (code, message) = match status {
            StatusCode::BAD_REQUEST => ("bad_request", "The request is malformed."),
            StatusCode::UNAUTHORIZED => ("unauthorized", "Authentication is required."),
            StatusCode::FORBIDDEN => ("forbidden", "Not allowed."),
            StatusCode::NOT_FOUND => ("not_found", "No such resource."),
            StatusCode::METHOD_NOT_ALLOWED => {
                ("method_not_allowed", "This method is not allowed here.")
            }
            StatusCode::PAYLOAD_TOO_LARGE => {
                ("payload_too_large", "The request body is too large.")
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported_media_type",
                "The content type is not supported.",
            ),
            StatusCode::UNPROCESSABLE_ENTITY => {
                ("validation_failed", "The request body is invalid.")
            }
            StatusCode::SERVICE_UNAVAILABLE => (
                "request_timeout",
                "The request took too long and was stopped.",
            ),
            status if status.is_client_error() => ("bad_request", "The request was refused."),
            _ => return Self::internal(),
        };
        Self::new(status, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// Which API a path belongs to; each speaks its clients' error dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Auth,
    Rest,
    Storage,
    Plain,
}

impl Surface {
    pub fn of(path: &str) -> Self {
        let under = |prefix: &str| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if under("/auth/v1") {
            Surface::Auth
        } else if under("/rest/v1") || under("/functions/v1") {
            // Functions answer refusals in PostgREST's shape, as `rpc` does.
            Surface::Rest
        } else if under("/storage/v1") {
            Surface::Storage
        } else {
            Surface::Plain
        }
    }
}

const API_VERSION_HEADER: &str = "x-supabase-api-version";

fn body(error: &ApiError, surface: Surface, request_id: &str, versioned_auth: bool) -> Value {
    let status = error.status.as_u16();
    match surface {
        // Supabase Auth: auth-js sends X-Supabase-Api-Version and reads `code`
        // as the string code; older clients read `error_code` and `msg`.
        Surface::Auth if versioned_auth => json!({
            "code": error.code, "message": error.message, "request_id": request_id,
        }),
        Surface::Auth => json!({
            "code": status, "error_code": error.code, "msg": error.message, "error_id": request_id,
        }),
        Surface::Rest => json!({
            "code": error.code, "message": error.message, "details": null, "hint": null,
            "request_id": request_id,
        }),
        Surface::Storage => json!({
            "statusCode": error.reported_status.map_or(status, |reported| reported.as_u16()).to_string(),
            "code": error.code, "error": error.code, "message": error.message,
            "request_id": request_id,
        }),
        Surface::Plain => json!({
            "code": error.code, "message": error.message, "request_id": request_id,
        }),
    }
}

/// Marks a response whose status and body the app's own function chose
/// (`/functions/v1`): it goes out as written, not as a Gatehouse error.
#[derive(Debug, Clone, Copy)]
pub struct Authored;

pub async fn render_errors<F: Future<Output = Response>>(
    request: Request,
    next: impl FnOnce(Request) -> F,
) -> Response {
    let surface = Surface::of(request.uri().path());
    let api_version = request.headers().get(API_VERSION_HEADER).cloned();
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.as_str().to_owned())
        .unwrap_or_default();
    let response = next(request).await;
    let status = response.status();
    let authored = response.extensions().get::<Authored>().is_some();
    if authored || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let error = parts
        .extensions
        .remove::<ApiError>()
        .unwrap_or_else(|| ApiError::for_status(status));
    let mut json = body(&error, surface, &request_id, api_version.is_some());
    if let (Some(Value::Object(details)), Value::Object(body)) =
        (error.details.as_deref(), &mut json)
    {
        for (key, value) in details {
            body.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    parts.status = error.status;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if error.challenge {
        parts.headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
    }
    if let Some(wait) = error.retry_after {
        let seconds = seconds_up(wait);
        parts
            .headers
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    if let (Surface::Auth, Some(version)) = (surface, api_version) {
        parts.headers.insert(API_VERSION_HEADER, version);
    }
    Response::from_parts(parts, Body::from(json.to_string()))
}

/// Whole seconds, rounded up: what `Retry-After` and `RateLimit`'s `t` carry.
pub(crate) fn seconds_up(duration: std::time::Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// A panic becomes a generic 500; what it said goes to the log only.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("non-string panic payload");
    tracing::error!(target: "gatehouse::panic", detail, "a request handler panicked");
    ApiError::internal().into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surfaces_follow_path_prefixes() {
        for (path, surface) in [
            ("/auth/v1/token", Surface::Auth),
            ("/auth/v1", Surface::Auth),
            ("/rest/v1/orders", Surface::Rest),
            ("/storage/v1/object/x", Surface::Storage),
            ("/auth/v10/token", Surface::Plain),
            ("/health", Surface::Plain),
        ] {
            assert_eq!(Surface::of(path), surface, "{path}");
        }
    }

    #[test]
    fn shapes_per_surface() {
        let error = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no_api_key",
            "No API key found in request",
        );
        let auth = body(&error, Surface::Auth, "rid", true);
        assert_eq!(auth["code"], "no_api_key");
        assert_eq!(auth["message"], "No API key found in request");
        let legacy = body(&error, Surface::Auth, "rid", false);
        assert_eq!(legacy["code"], 401);
        assert_eq!(legacy["error_code"], "no_api_key");
        assert_eq!(legacy["msg"], "No API key found in request");
        let rest = body(&error, Surface::Rest, "rid", false);
        assert_eq!(rest["code"], "no_api_key");
        assert!(rest["details"].is_null() && rest["hint"].is_null());
        let storage = body(&error, Surface::Storage, "rid", false);
        assert_eq!(storage["statusCode"], "401");
        for shape in [auth, rest, storage] {
            assert_eq!(shape["request_id"], "rid");
        }
        assert_eq!(legacy["error_id"], "rid");
    }

    #[test]
    fn unknown_server_statuses_say_nothing_specific() {
        let error = ApiError::for_status(StatusCode::BAD_GATEWAY);
        assert_eq!(error, ApiError::internal());
    }
}

//! Admission, one layer for what every request must be before the rest of the
//! stack sees it: its client address (see `client_ip`), no more header lines or
//! head bytes than configured (431), a request target no longer than
//! `max_url_bytes` (414), and a JSON body no deeper than `max_json_depth` (400;
//! the body is read here within the body limit and the request timeout).
//! One layer rather than three: each `from_fn` layer clones the stack below it on
//! every request, and the three cost a tenth of a point read (bench/README.md).
//! Slow heads, connections per address and a hard cap on heads (a multiple of the
//! limits here) are bounded where connections are accepted (the server's listener).

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode, header};

use crate::{ApiError, AppState};

pub async fn admit<F: Future<Output = Response>>(
    state: &AppState,
    mut request: Request,
    next: impl FnOnce(Request) -> F,
) -> Response {
    let settings = state.settings();
    crate::client_ip::assign(&mut request, &settings.trusted_proxies);
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    let headers = request.headers();
    let head_bytes = target
        + headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    if headers.len() > settings.max_headers || head_bytes > settings.max_header_bytes {
        return refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            "The request headers are too many or too large.",
        );
    }
    if target > settings.max_url_bytes {
        return refuse(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            "The request URL is too long.",
        );
    }
    // The data API reads a body without a content type as JSON, so it is checked too.
    let is_json = match request.headers().get(header::CONTENT_TYPE) {
        None => !matches!(*request.method(), Method::GET | Method::HEAD),
        Some(kind) => kind
            .to_str()
            .is_ok_and(|kind| kind.to_ascii_lowercase().contains("json")),
    };
    if !is_json || crate::routes::storage_objects::is_upload(request.method(), request.uri().path())
    {
        return next(request).await;
    }
    let (parts, body) = request.into_parts();
    let reading = to_bytes(body, settings.body_limit);
    let bytes = match tokio::time::timeout(settings.request_timeout, reading).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "The request body is too large.",
            );
        }
        Err(_) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "The request body arrived too slowly.",
            );
        }
    };
    if !within_depth(&bytes, settings.max_json_depth) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "json_too_deep",
            "The JSON body is nested too deeply.",
        );
    }
    next(Request::from_parts(parts, Body::from(bytes))).await
}

fn refuse(status: StatusCode, code: &'static str, message: &'static str) -> Response {
    ApiError::new(status, code, message).into_response()
}

/// Whether no array or object in `json` sits more than `max` levels deep. Only
/// brackets outside strings count; invalid JSON is the parser's to refuse.
fn within_depth(json: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in json {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::within_depth;

    #[test]
    fn depth_counts_brackets_outside_strings_only() {
        assert!(within_depth(br#"{"a":[1,{"b":2}]}"#, 3));
        assert!(!within_depth(br#"{"a":[1,{"b":2}]}"#, 2));
        assert!(within_depth(br#"{"a":"[[[[[[\"[[["}"#, 1));
        assert!(!within_depth(&[b'['; 100], 32));
        assert!(within_depth(b"", 1));
    }
}

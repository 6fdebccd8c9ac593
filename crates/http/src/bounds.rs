//! Request bounds the router cannot express: the length of the request target
//! (414) and the nesting depth of JSON bodies (400), checked before any handler
//! parses them. Header count, header bytes, slow heads and connections per
//! address are bounded where connections are accepted (the server's listener).

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};

use crate::{ApiError, AppState};

pub async fn url_length(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target > state.settings().max_url_bytes {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            "The request URL is too long.",
        )
        .into_response();
    }
    next.run(request).await
}

/// Runs inside the time limit, and reads at most the body limit, so reading the
/// body here is bounded by both.
pub async fn json_depth(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|kind| kind.to_ascii_lowercase().contains("json"));
    if !is_json {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, state.settings().body_limit).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "The request body is too large.",
        )
        .into_response();
    };
    if !within_depth(&bytes, state.settings().max_json_depth) {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "json_too_deep",
            "The JSON body is nested too deeply.",
        )
        .into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
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

//! `Idempotency-Key` on data writes (POST, PATCH and DELETE under `/rest/v1`) and
//! admin user creation (the routes `lib.rs` layers it on), over the records of
//! `gatehouse-idempotency`: the first response (status, headers that describe it,
//! body) is kept per caller and key for 24 hours and replayed to retries; the same
//! key with another request gets 422; a retry while the first is still running gets
//! 409, so a write never runs twice. Routes that answer with credentials (sign-in, sign-up,
//! refresh) are left out on purpose: replaying them would mean storing tokens.
//!
//! Follows draft-ietf-httpapi-idempotency-key-header: the key is a string (a
//! quoted sf-string or a bare token), at most 255 printable characters.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gatehouse_idempotency::{Answer, Claim, Records, fingerprint, hex_digest};
use gatehouse_keys::ApiRole;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::{ApiCaller, ApiError, AppState, ClientIp};

const HEADER: &str = "idempotency-key";
/// Response headers that belong to the answer and are replayed with it.
const REPLAYED_HEADERS: &[&str] = &[
    "content-type",
    "content-range",
    "location",
    "preference-applied",
];

/// The key as the client sent it: a quoted sf-string or a bare token.
fn key_of(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?.trim();
    let key = text
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
        .unwrap_or(text);
    let printable = key.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"');
    (!key.is_empty() && key.len() <= 255 && printable).then(|| key.to_owned())
}

fn error(status: StatusCode, code: &'static str, message: &'static str) -> Response {
    ApiError::new(status, code, message).into_response()
}

fn failed(error: &gatehouse_db::DbError) -> Response {
    tracing::error!(%error, "idempotency record failed");
    ApiError::internal().into_response()
}

fn in_flight() -> Response {
    error(
        StatusCode::CONFLICT,
        "idempotency_key_in_flight",
        "A request with this Idempotency-Key is being processed; retry later.",
    )
}

pub(crate) fn records(state: &AppState) -> Records {
    // A claim older than two request time limits was abandoned by its request.
    Records::new(state.db().clone(), state.settings().request_timeout * 2)
}

pub async fn replay(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(value) = request.headers().get(HEADER) else {
        return next.run(request).await;
    };
    let Some(key) = key_of(value) else {
        return error(
            StatusCode::BAD_REQUEST,
            "idempotency_key_invalid",
            "Idempotency-Key must be 1 to 255 printable characters.",
        );
    };
    let caller = match (
        crate::identity::bearer_subject(request.extensions()),
        crate::cookies::session(request.headers()),
        request.extensions().get::<ApiCaller>(),
    ) {
        (Some(user), _, _) => format!("user:{user}"),
        // A cookie session is its own namespace (the cookie is checked by the handler;
        // a forged one writes nothing and replays only its own refusal).
        (None, Some(cookie), _) => format!("session:{}", hex_digest(cookie.as_bytes())),
        (None, None, Some(ApiCaller(key))) if key.role() == ApiRole::Service => {
            "service".to_owned()
        }
        _ => request
            .extensions()
            .get::<ClientIp>()
            .map_or_else(|| "anon".to_owned(), |ClientIp(ip)| format!("anon:{ip}")),
    };
    let (parts, body) = request.into_parts();
    // Inside the body-size and time limits, like the handler's own read.
    let Ok(body) = to_bytes(body, state.settings().body_limit).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "The request body is too large.",
        );
    };
    let fingerprint = fingerprint(parts.method.as_str(), &parts.uri.to_string(), &body);
    let records = records(&state);
    match records.claim(&caller, &key, &fingerprint).await {
        Ok(Claim::Ours) => {}
        Ok(Claim::InFlight) => return in_flight(),
        Ok(Claim::Reused) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "This Idempotency-Key was used for a different request.",
            );
        }
        Ok(Claim::Answered(answer)) => return replayed(answer),
        Err(error) => return failed(&error),
    }
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    keep(&records, &caller, &key, response).await
}

/// An answer given again, marked as such.
fn replayed(answer: Answer) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::from_str(&value)) {
            response.headers_mut().insert(name, value);
        }
    }
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// Keeps the first answer for replay; a server error releases the key so the
/// client's retry runs again.
async fn keep(records: &Records, caller: &str, key: &str, response: Response) -> Response {
    if response.status().is_server_error() {
        if let Err(error) = records.release(caller, key).await {
            tracing::error!(%error, "idempotency key not released");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    // The handler built the whole answer in memory already; collecting it copies
    // nothing.
    let body = match to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(%error, "response body failed while being kept");
            return ApiError::internal().into_response();
        }
    };
    let answer = Answer {
        status: parts.status.as_u16(),
        headers: replayed_headers(&parts.headers),
        body: body.to_vec(),
    };
    if let Err(error) = records.keep(caller, key, answer).await {
        tracing::error!(%error, "idempotent response not kept");
    }
    Response::from_parts(parts, Body::from(body))
}

fn replayed_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    REPLAYED_HEADERS
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?;
            Some(((*name).to_owned(), value.to_owned()))
        })
        .collect()
}

/// Drops records past their 24 hours; the server calls it periodically.
pub async fn prune(state: &AppState) {
    if let Err(error) = records(state).prune().await {
        tracing::warn!(%error, "expired idempotency keys not pruned");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_strings_of_printable_characters() {
        let key = |text: &str| key_of(&HeaderValue::from_str(text).unwrap_or_else(|_| panic!()));
        assert_eq!(key("\"abc-123\"").as_deref(), Some("abc-123"));
        assert_eq!(key("abc-123").as_deref(), Some("abc-123"));
        assert_eq!(key("\"\""), None);
        assert_eq!(key(&"k".repeat(256)), None);
        assert_eq!(key("a\"b"), None);
    }
}

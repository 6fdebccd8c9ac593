//! `Idempotency-Key` on data writes (POST, PATCH and DELETE under `/rest/v1`) and
//! admin user creation (the routes `lib.rs` layers it on): the first response (status, headers that describe it,
//! body) is kept per caller and key for 24 hours and replayed to retries; the same
//! key with another request gets 422; a retry while the first is still running gets
//! 409, so a write never runs twice. Kept in the database, so it holds across
//! restarts and instances. Routes that answer with credentials (sign-in, sign-up,
//! refresh) are left out on purpose: replaying them would mean storing tokens.
//!
//! Follows draft-ietf-httpapi-idempotency-key-header: the key is a string (a
//! quoted sf-string or a bare token), at most 255 printable characters.

use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gatehouse_db::{Database, Row, Sql, Statement, Value};
use gatehouse_keys::ApiRole;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde_json::json;

use crate::{ApiCaller, ApiError, AppState, ClientIp};

/// How long a response is kept for replay.
pub const KEPT_FOR: Duration = Duration::from_secs(24 * 3600);
/// The largest response body kept; a larger one is replayed as its status alone.
const LARGEST_KEPT: usize = 8 << 20;
const HEADER: &str = "idempotency-key";
/// Response headers that belong to the answer and are replayed with it.
const REPLAYED_HEADERS: &[&str] = &[
    "content-type",
    "content-range",
    "location",
    "preference-applied",
];

const CLAIM: Sql = Sql {
    sqlite: "INSERT INTO gatehouse_idempotency (caller, key, fingerprint, created_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (caller, key) DO UPDATE SET fingerprint = excluded.fingerprint, status = NULL, \
             headers = NULL, body = NULL, created_at = excluded.created_at \
             WHERE created_at < ?5 OR (status IS NULL AND created_at < ?6) \
             RETURNING 1",
    postgres: "INSERT INTO gatehouse_idempotency AS i (caller, key, fingerprint, created_at) VALUES ($1, $2, $3, $4) \
               ON CONFLICT (caller, key) DO UPDATE SET fingerprint = excluded.fingerprint, status = NULL, \
               headers = NULL, body = NULL, created_at = excluded.created_at \
               WHERE i.created_at < $5 OR (i.status IS NULL AND i.created_at < $6) \
               RETURNING 1",
};

const STORED: Sql = Sql::both(
    "SELECT fingerprint, status, headers, body FROM gatehouse_idempotency WHERE caller = $1 AND key = $2",
);

const COMPLETE: Sql = Sql::both(
    "UPDATE gatehouse_idempotency SET status = $3, headers = $4, body = $5 WHERE caller = $1 AND key = $2",
);

const RELEASE: Sql = Sql::both("DELETE FROM gatehouse_idempotency WHERE caller = $1 AND key = $2");

const PRUNE: Sql = Sql::both("DELETE FROM gatehouse_idempotency WHERE created_at < $1");

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

fn now_text() -> String {
    gatehouse_db::timestamp(time::OffsetDateTime::now_utc())
}

fn ago(duration: Duration) -> String {
    gatehouse_db::timestamp(time::OffsetDateTime::now_utc() - duration)
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
        (None, Some(cookie), _) => format!("session:{}", digest_hex(cookie.as_bytes())),
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
    let fingerprint = fingerprint(&parts.method, &parts.uri, &body);
    let db = state.db();
    let abandoned = state.settings().request_timeout * 2;
    let claimed = db
        .transaction(vec![Statement::new(
            &CLAIM,
            vec![
                caller.clone().into(),
                key.clone().into(),
                fingerprint.clone().into(),
                now_text().into(),
                ago(KEPT_FOR).into(),
                ago(abandoned).into(),
            ],
        )])
        .await;
    match claimed {
        Ok(rows) if rows.first().is_some_and(|rows| !rows.is_empty()) => {}
        Ok(_) => return answer_from_record(db, &caller, &key, &fingerprint).await,
        Err(error) => return failed(&error),
    }
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    keep(db, &caller, &key, response).await
}

fn fingerprint(method: &Method, uri: &http::Uri, body: &Bytes) -> String {
    let mut input = Vec::with_capacity(body.len() + 256);
    input.extend_from_slice(method.as_str().as_bytes());
    input.push(b' ');
    input.extend_from_slice(uri.to_string().as_bytes());
    input.push(b'\n');
    input.extend_from_slice(body);
    digest_hex(&input)
}

fn digest_hex(bytes: &[u8]) -> String {
    digest(&SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Someone else holds the key: replay, or explain why not.
async fn answer_from_record(db: &Database, caller: &str, key: &str, fingerprint: &str) -> Response {
    let rows = match db
        .query(Statement::new(
            &STORED,
            vec![caller.to_owned().into(), key.to_owned().into()],
        ))
        .await
    {
        Ok(rows) => rows,
        Err(error) => return failed(&error),
    };
    // Released between our claim and this read: the client may simply retry.
    let Some(Row(values)) = rows.into_iter().next() else {
        return error(
            StatusCode::CONFLICT,
            "idempotency_key_in_flight",
            "A request with this Idempotency-Key is being processed; retry later.",
        );
    };
    let mut values = values.into_iter();
    let (stored, status, headers, body) =
        (values.next(), values.next(), values.next(), values.next());
    if !matches!(stored, Some(Value::Text(ref text)) if text == fingerprint) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "This Idempotency-Key was used for a different request.",
        );
    }
    let Some(Value::Integer(status)) = status else {
        return error(
            StatusCode::CONFLICT,
            "idempotency_key_in_flight",
            "A request with this Idempotency-Key is being processed; retry later.",
        );
    };
    let mut response = Response::new(Body::from(match body {
        Some(Value::Blob(bytes)) => bytes,
        _ => Vec::new(),
    }));
    *response.status_mut() = u16::try_from(status)
        .ok()
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::OK);
    if let Some(Value::Text(headers)) = headers {
        let saved: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&headers).unwrap_or_default();
        for (name, value) in saved {
            let (Ok(name), Some(Ok(value))) = (
                HeaderName::try_from(name),
                value.as_str().map(HeaderValue::from_str),
            ) else {
                continue;
            };
            response.headers_mut().insert(name, value);
        }
    }
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// Stores the first answer for replay; a server error releases the key so the
/// client's retry runs again.
async fn keep(db: &Database, caller: &str, key: &str, response: Response) -> Response {
    let ids = vec![Value::from(caller.to_owned()), Value::from(key.to_owned())];
    if response.status().is_server_error() {
        if let Err(error) = db.transaction(vec![Statement::new(&RELEASE, ids)]).await {
            tracing::error!(%error, "idempotency key not released");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    // The handler built the whole answer in memory already; collecting it copies
    // nothing. One too large to keep is still recorded, without its body, so a retry
    // learns the outcome and the write never runs twice.
    let body = match to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(%error, "response body failed while being kept");
            return ApiError::internal().into_response();
        }
    };
    let kept = if body.len() <= LARGEST_KEPT {
        body.to_vec()
    } else {
        tracing::warn!(
            bytes = body.len(),
            "response too large to replay; keeping its status only"
        );
        Vec::new()
    };
    let headers = replayed_headers(&parts.headers);
    let mut values = ids;
    values.extend([
        Value::Integer(i64::from(parts.status.as_u16())),
        headers.to_string().into(),
        Value::Blob(kept),
    ]);
    if let Err(error) = db
        .transaction(vec![Statement::new(&COMPLETE, values)])
        .await
    {
        tracing::error!(%error, "idempotent response not kept");
    }
    Response::from_parts(parts, Body::from(body))
}

fn replayed_headers(headers: &HeaderMap) -> serde_json::Value {
    let kept: serde_json::Map<String, serde_json::Value> = REPLAYED_HEADERS
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?;
            Some(((*name).to_owned(), json!(value)))
        })
        .collect();
    serde_json::Value::Object(kept)
}

/// Drops records past their 24 hours; the server calls it periodically.
pub async fn prune(db: &Database) {
    if let Err(error) = db
        .transaction(vec![Statement::new(&PRUNE, vec![ago(KEPT_FOR).into()])])
        .await
    {
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

//! `/functions/v1/<name>`, any method: a declared function as
//! `supabase.functions.invoke(name, { body, method })` calls it. A JSON object
//! body is the named arguments (checked as declared); the code also sees
//! `ctx.request` (method, query, and the body as JSON or text). What it returns
//! is the answer: text as `text/plain`, anything else as JSON, or a response it
//! describes with `{ "$response": { status, headers, body } }`.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderName, HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};

use crate::error::Authored;
use crate::routes::rpc::call_error;
use crate::{ApiError, AppState, Identity, RequestId};

/// Headers a function may set on its response; others (cookies, security
/// headers, hop-by-hop) are the server's.
fn settable(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "content-type" | "cache-control" | "content-disposition" | "content-language" | "etag"
    ) || name.as_str().starts_with("x-")
        && !matches!(
            name.as_str(),
            "x-request-id" | "x-frame-options" | "x-content-type-options"
        )
}

pub async fn invoke(
    State(state): State<AppState>,
    Identity(caller): Identity,
    Path(name): Path<String>,
    parts: Parts,
    body: Bytes,
) -> Result<Response, ApiError> {
    let kind = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let parsed = request_body(&kind, body).await?;
    // Only a JSON object is the arguments: a form's fields are text, read from
    // ctx.request.body.
    let json_body = kind.to_ascii_lowercase().starts_with("application/json");
    let args = match &parsed {
        Value::Object(_) if json_body => parsed.clone(),
        _ => Value::Null,
    };
    let query = parts.uri.query().unwrap_or_default();
    let query: Map<String, Value> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(key, value)| (key.into_owned(), Value::String(value.into_owned())))
        .collect();
    let request = json!({
        "method": parts.method.as_str(),
        "query": query,
        "body": parsed,
    });
    let id = parts
        .extensions
        .get::<RequestId>()
        .map_or("", RequestId::as_str);
    let returned = state
        .functions()
        .call(&caller, (&name, id), args, Some(request))
        .await
        .map_err(|error| call_error(error, &caller, &name))?;
    Ok(respond(returned))
}

/// The body as the function sees it (`ctx.request.body`): JSON parsed, a
/// form's fields as an object (a field sent more than once as a list; a
/// multipart file as `{ filename, type, size, text }`, `text` null unless
/// UTF-8), anything else as text; an empty body is null.
async fn request_body(kind: &str, body: Bytes) -> Result<Value, ApiError> {
    let lower = kind.to_ascii_lowercase();
    if body.is_empty() {
        return Ok(Value::Null);
    }
    if lower.starts_with("application/x-www-form-urlencoded") {
        let mut fields = Map::new();
        for (key, value) in url::form_urlencoded::parse(&body) {
            add_field(
                &mut fields,
                key.into_owned(),
                Value::String(value.into_owned()),
            );
        }
        return Ok(Value::Object(fields));
    }
    if lower.starts_with("multipart/form-data") {
        return form_data(kind, body).await;
    }
    let text = String::from_utf8(body.to_vec()).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "the body is not UTF-8 text",
        )
    })?;
    if !lower.starts_with("application/json") {
        return Ok(Value::String(text));
    }
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "PGRST102",
            "the body is not valid JSON",
        )
    })
}

fn add_field(fields: &mut Map<String, Value>, key: String, value: Value) {
    match fields.get_mut(&key) {
        None => {
            fields.insert(key, value);
        }
        Some(Value::Array(values)) => values.push(value),
        Some(first) => *first = Value::Array(vec![first.take(), value]),
    }
}

async fn form_data(kind: &str, body: Bytes) -> Result<Value, ApiError> {
    let malformed = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "the body is not valid multipart/form-data",
        )
    };
    let boundary = multer::parse_boundary(kind).map_err(|_| malformed())?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut fields = Map::new();
    while let Some(field) = form.next_field().await.map_err(|_| malformed())? {
        let name = field.name().unwrap_or_default().to_owned();
        let filename = field.file_name().map(str::to_owned);
        let media = field.content_type().map(ToString::to_string);
        let bytes = field.bytes().await.map_err(|_| malformed())?;
        let text = String::from_utf8(bytes.to_vec()).ok();
        let value = match filename {
            None => Value::String(text.ok_or_else(malformed)?),
            Some(filename) => json!({
                "filename": filename,
                "type": media,
                "size": bytes.len(),
                "text": text,
            }),
        };
        add_field(&mut fields, name, value);
    }
    Ok(Value::Object(fields))
}

/// What the function returned, as an HTTP response.
fn respond(returned: Value) -> Response {
    let described = match returned {
        Value::Object(mut object) if object.contains_key("$response") => {
            object.remove("$response").unwrap_or(Value::Null)
        }
        Value::String(text) => {
            return ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response();
        }
        other => return axum::Json(other).into_response(),
    };
    let status = described["status"]
        .as_u64()
        .and_then(|code| u16::try_from(code).ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .filter(|code| !code.is_informational())
        .unwrap_or(StatusCode::OK);
    let (body, default_type) = match &described["body"] {
        Value::Null => (Body::empty(), None),
        Value::String(text) => (Body::from(text.clone()), Some("text/plain; charset=utf-8")),
        other => (Body::from(other.to_string()), Some("application/json")),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.extensions_mut().insert(Authored);
    if let Some(kind) = default_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    }
    if let Some(headers) = described["headers"].as_object() {
        for (name, value) in headers {
            let (Ok(name), Some(Ok(value))) = (
                HeaderName::from_bytes(name.as_bytes()),
                value.as_str().map(HeaderValue::from_str),
            ) else {
                continue;
            };
            if settable(&name) {
                response.headers_mut().insert(name, value);
            }
        }
    }
    response
}

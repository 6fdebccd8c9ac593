//! `/storage/v1/object/…`: Supabase Storage's object API. Uploads stream
//! (raw bodies and multipart forms alike) under their own time limit and no
//! body limit here: the bucket's size limit is enforced while the bytes arrive.
//! Every object response carries a sandboxing CSP, and anything a browser
//! could run (HTML, SVG, XML, unknown types) is served as an attachment.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream::{self, BoxStream};
use futures_util::{StreamExt, TryStreamExt};
use gatehouse_rest::Caller;
use gatehouse_storage::{Actor, ListRequest, NewObject, ObjectRow, Objects, StorageError, content};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use serde_with::serde_as;

use crate::routes::Coerced;
use crate::routes::storage_buckets::storage_error;
use crate::{ApiError, AppState, ClientIp, Identity};

/// A body that sends nothing for this long is cut off (and its staging file
/// goes stale, for the sweep to remove).
const UPLOAD_IDLE: Duration = Duration::from_secs(30);

/// Fields of an upload form before its file, the bytes of each, and of all
/// that comes before the file (held in memory until the file starts).
const MAX_FORM_FIELDS: usize = 8;
const MAX_FORM_TEXT: usize = 16 << 10;
const MAX_FORM_PREFIX: usize = 64 << 10;

/// Whether a request is an object upload, whose body the edge must not buffer
/// or cap (the JSON routes under `/object/` are not).
pub fn is_upload(method: &Method, path: &str) -> bool {
    if path.starts_with(crate::routes::storage_resumable::PATH) {
        return matches!(*method, Method::POST | Method::PATCH);
    }
    let Some(rest) = path.strip_prefix("/storage/v1/object/") else {
        return false;
    };
    let first = rest.split('/').next().unwrap_or("");
    match *method {
        Method::PUT => true,
        Method::POST => !matches!(
            first,
            "list" | "list-v2" | "sign" | "move" | "copy" | "upload"
        ),
        _ => false,
    }
}

fn objects(state: &AppState) -> &Objects {
    state.objects()
}

pub(crate) fn header_text(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

pub(crate) fn flag(headers: &HeaderMap, name: &str) -> bool {
    header_text(headers, name).is_some_and(|value| value.eq_ignore_ascii_case("true"))
}

/// `max-age=N` from a `cache-control` header or a form's `cacheControl` number.
pub(crate) fn max_age(value: Option<&str>) -> Option<String> {
    let value = value?.trim();
    let seconds = value
        .split(',')
        .find_map(|part| part.trim().strip_prefix("max-age="))
        .unwrap_or(value);
    seconds
        .parse::<u32>()
        .ok()
        .map(|seconds| format!("max-age={seconds}"))
}

pub(crate) type Chunks = BoxStream<'static, Result<Bytes, String>>;

/// Each chunk must arrive within [`UPLOAD_IDLE`].
pub(crate) fn with_idle_limit(
    body: impl futures_util::Stream<Item = Result<Bytes, String>> + Send + 'static,
) -> Chunks {
    stream::unfold(Box::pin(body), |mut body| async move {
        match tokio::time::timeout(UPLOAD_IDLE, body.next()).await {
            Ok(Some(chunk)) => Some((chunk, body)),
            Ok(None) => None,
            Err(_) => Some((Err("the body stopped arriving".to_owned()), body)),
        }
    })
    .boxed()
}

/// The bytes and declared type of an upload: a raw body, or the file part of a
/// multipart form (storage-js sends a Blob that way, under an empty field name).
async fn upload_body(
    headers: &HeaderMap,
    request: Request,
) -> Result<(Option<String>, Option<String>, Option<u64>, Chunks), ApiError> {
    let content_type = header_text(headers, header::CONTENT_TYPE).map(str::to_owned);
    let multipart = content_type
        .as_deref()
        .is_some_and(|kind| kind.to_ascii_lowercase().starts_with("multipart/form-data"));
    if !multipart {
        let length = header_text(headers, header::CONTENT_LENGTH).and_then(|v| v.parse().ok());
        let cache = max_age(header_text(headers, header::CACHE_CONTROL));
        let body = request
            .into_body()
            .into_data_stream()
            .map_err(|e| e.to_string());
        return Ok((content_type, cache, length, with_idle_limit(body)));
    }
    let boundary = content_type
        .as_deref()
        .and_then(|kind| multer::parse_boundary(kind).ok())
        .ok_or_else(|| invalid("the multipart form has no boundary".into()))?;
    // Until the file part starts, the form may hold only so many bytes: multer
    // buffers a part's headers and a missing boundary whole.
    let file_started = Arc::new(AtomicBool::new(false));
    let started = file_started.clone();
    let mut before_file = 0usize;
    let body = with_idle_limit(
        request
            .into_body()
            .into_data_stream()
            .map_err(|e| e.to_string()),
    )
    .map(move |chunk| {
        let chunk = chunk?;
        if !started.load(Ordering::Relaxed) {
            before_file += chunk.len();
            if before_file > MAX_FORM_PREFIX {
                return Err("the form holds too much before its file".to_owned());
            }
        }
        Ok(chunk)
    });
    let mut form = multer::Multipart::new(body, boundary);
    let mut cache = None;
    for _ in 0..MAX_FORM_FIELDS {
        let mut field = form
            .next_field()
            .await
            .map_err(|e| invalid(e.to_string()))?
            .ok_or_else(|| invalid("the form holds no file".into()))?;
        if field.file_name().is_some() || field.name() == Some("") {
            file_started.store(true, Ordering::Relaxed);
            let declared = field.content_type().map(|kind| kind.to_string());
            // The form must outlive the field that streams from it.
            let chunks = field
                .map_err(|e| e.to_string())
                .chain(stream::once(async move {
                    drop(form);
                    Ok(Bytes::new())
                }));
            return Ok((declared, cache, None, chunks.boxed()));
        }
        // A text field (cacheControl, metadata): small, or refused.
        let mut text = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(|e| invalid(e.to_string()))? {
            text.extend_from_slice(&chunk);
            if text.len() > MAX_FORM_TEXT {
                return Err(invalid(
                    "a form field other than the file is too large".into(),
                ));
            }
        }
        if field.name() == Some("cacheControl") {
            cache = max_age(std::str::from_utf8(&text).ok());
        }
    }
    Err(invalid("the form has too many fields".into()))
}

fn invalid(message: String) -> ApiError {
    storage_error(StorageError::Invalid(message))
}

#[derive(Deserialize)]
pub struct ObjectPath {
    bucket: String,
    name: String,
}

async fn upload(
    state: &AppState,
    actor: Actor<'_>,
    path: ObjectPath,
    upsert: bool,
    headers: &HeaderMap,
    request: Request,
) -> Result<ObjectRow, ApiError> {
    let client = uploading_client(actor.caller(), &request);
    let (content_type, cache_control, length, body) = upload_body(headers, request).await?;
    objects(state)
        .upload(
            actor,
            NewObject {
                bucket: path.bucket,
                name: path.name,
                content_type,
                cache_control,
                upsert,
                length,
                client,
                body,
            },
        )
        .await
        .map_err(storage_error)
}

/// Upload slots are shared out per user, or per address when anonymous.
pub(crate) fn uploading_client(caller: &Caller, request: &Request) -> String {
    match caller.user_id() {
        Some(user) => format!("user {user}"),
        None => match request.extensions().get::<ClientIp>() {
            Some(ClientIp(address)) => format!("address {address}"),
            None => "address unknown".to_owned(),
        },
    }
}

fn key(object: &ObjectRow) -> String {
    format!("{}/{}", object.bucket_id, object.name)
}

/// POST: create (`x-upsert: true` replaces); PUT: replace or create.
pub async fn put_object(
    State(state): State<AppState>,
    Identity(caller): Identity,
    Path(path): Path<ObjectPath>,
    headers: HeaderMap,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let upsert = request.method() == Method::PUT || flag(&headers, "x-upsert");
    let object = upload(
        &state,
        Actor::Caller(&caller),
        path,
        upsert,
        &headers,
        request,
    )
    .await?;
    Ok(Json(json!({"Id": object.id, "Key": key(&object)})))
}

#[derive(Deserialize)]
pub struct TokenQuery {
    token: String,
}

/// PUT to a signed upload URL: the token is the permission; the owner is who
/// asked for the URL.
pub async fn put_signed(
    State(state): State<AppState>,
    Path(path): Path<ObjectPath>,
    Query(TokenQuery { token }): Query<TokenQuery>,
    headers: HeaderMap,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let checked = objects(&state)
        .verify_upload(&path.bucket, &path.name, &token)
        .map_err(storage_error)?;
    let signer = objects(&state).signer(&checked);
    let actor = Actor::SignedUpload {
        signer: &signer,
        replaces: checked.replaces(),
    };
    // The grant, not the request, says whether it may replace.
    let upsert = checked.replaces().is_some();
    let object = upload(&state, actor, path, upsert, &headers, request).await?;
    Ok(Json(json!({"Key": key(&object)})))
}

#[derive(Deserialize, Default)]
pub struct DownloadQuery {
    download: Option<String>,
}

fn disposition(object: &ObjectRow, download: Option<&str>) -> Option<String> {
    let filename = match download {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => gatehouse_db::path_parts::filename(&object.name).to_owned(),
    };
    // A name whose extension says another type would be saved as that type.
    let kind = if download.is_some()
        || !content::inline_safe(&object.content_type)
        || !content::extension_fits(&object.name, &object.content_type)
    {
        "attachment"
    } else if filename.is_ascii() {
        return None;
    } else {
        "inline"
    };
    let ascii: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded =
        percent_encoding::utf8_percent_encode(&filename, percent_encoding::NON_ALPHANUMERIC);
    Some(format!(
        "{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    ))
}

/// The part of an object of `size` bytes a `Range` header asks for: one range
/// of bytes (`a-b`, `a-`, `-n`), `Err` when it lies past the end. Anything
/// else (other units, several ranges, nonsense) is ignored: the whole object.
fn requested_range(header: Option<&str>, size: u64) -> Result<Option<Range<u64>>, ()> {
    let Some(spec) = header.and_then(|value| value.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let number = |text: &str| text.trim().parse::<u64>().ok();
    let range = match (first.trim().is_empty(), number(first), number(last)) {
        (true, _, Some(suffix)) if suffix > 0 => size.saturating_sub(suffix)..size,
        (false, Some(start), None) if last.trim().is_empty() => start..size,
        (false, Some(start), Some(end)) if start <= end => start..end.saturating_add(1).min(size),
        _ => return Ok(None),
    };
    if range.start >= size {
        return Err(());
    }
    Ok(Some(range))
}

/// The object's bytes, cached privately or (a public bucket's) publicly, as an
/// attachment when asked (`download`) or when a browser could run it; one byte
/// range when asked (`Range`, unless `If-Range` names another version).
async fn serve(
    state: &AppState,
    object: ObjectRow,
    public: bool,
    download: Option<String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let etag = object.etag();
    let cache = format!(
        "{}, {}",
        if public { "public" } else { "private" },
        object.cache_control.as_deref().unwrap_or("no-cache")
    );
    let same_version = header_text(headers, header::IF_RANGE).is_none_or(|tag| tag == etag);
    let range = match requested_range(header_text(headers, header::RANGE), object.size) {
        Ok(range) if same_version => range,
        Ok(_) => None,
        Err(()) => {
            let mut refused = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "InvalidRange",
                "The range lies past the end of the object",
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{}", object.size)) {
                refused.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(refused);
        }
    };
    let mut response = if header_text(headers, header::IF_NONE_MATCH) == Some(etag.as_str()) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let stream = objects(state)
            .read(&object, range.clone())
            .await
            .map_err(storage_error)?;
        let mut response = Response::new(Body::from_stream(
            stream.map_err(|e| std::io::Error::other(e.to_string())),
        ));
        let answer = response.headers_mut();
        let length = match &range {
            Some(range) => {
                let sent = format!("bytes {}-{}/{}", range.start, range.end - 1, object.size);
                if let Ok(value) = HeaderValue::from_str(&sent) {
                    answer.insert(header::CONTENT_RANGE, value);
                }
                range.end - range.start
            }
            None => object.size,
        };
        answer.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        if let Ok(kind) = HeaderValue::from_str(&object.content_type) {
            answer.insert(header::CONTENT_TYPE, kind);
        }
        if let Some(value) =
            disposition(&object, download.as_deref()).and_then(|d| HeaderValue::from_str(&d).ok())
        {
            answer.insert(header::CONTENT_DISPOSITION, value);
        }
        if range.is_some() {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        }
        response
    };
    let answer = response.headers_mut();
    answer.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    answer.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(content::SANDBOX_CSP),
    );
    // Files may be embedded by other sites (an <img> of a public bucket); the
    // sandbox CSP and safe serving keep them inert.
    answer.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    if let Ok(value) = HeaderValue::from_str(&etag) {
        answer.insert(header::ETAG, value);
    }
    if let Ok(value) = HeaderValue::from_str(&cache) {
        answer.insert(header::CACHE_CONTROL, value);
    }
    Ok(response)
}

/// The object at `path` if the caller may read it.
async fn visible(
    state: &AppState,
    caller: &Caller,
    path: &ObjectPath,
) -> Result<ObjectRow, ApiError> {
    objects(state)
        .find(Actor::Caller(caller), &path.bucket, &path.name)
        .await
        .map_err(storage_error)
}

pub async fn get_object(
    State(state): State<AppState>,
    Identity(caller): Identity,
    Path(path): Path<ObjectPath>,
    Query(query): Query<DownloadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let object = visible(&state, &caller, &path).await?;
    serve(&state, object, false, query.download, &headers).await
}

/// HEAD: whether the object exists for this caller (storage-js `exists`).
pub async fn head_object(
    State(state): State<AppState>,
    Identity(caller): Identity,
    Path(path): Path<ObjectPath>,
) -> Result<Response, ApiError> {
    let object = visible(&state, &caller, &path).await?;
    let mut response = StatusCode::OK.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(object.size));
    if let Ok(etag) = HeaderValue::from_str(&object.etag()) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    Ok(response)
}

/// A public bucket's object, for anyone (download only).
pub async fn get_public(
    State(state): State<AppState>,
    Path(path): Path<ObjectPath>,
    Query(query): Query<DownloadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let object = objects(&state)
        .find_public(&path.bucket, &path.name)
        .await
        .map_err(public_error)?;
    serve(&state, object, true, query.download, &headers).await
}

/// On the public routes a private bucket's object is as absent as a missing one.
fn public_error(error: StorageError) -> ApiError {
    match error {
        StorageError::NoSuchBucket => storage_error(StorageError::NoSuchKey),
        other => storage_error(other),
    }
}

#[derive(Deserialize)]
pub struct SignedQuery {
    token: String,
    download: Option<String>,
}

/// A signed download URL: the token is the permission.
pub async fn get_signed(
    State(state): State<AppState>,
    Path(path): Path<ObjectPath>,
    Query(query): Query<SignedQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let object = objects(&state)
        .find_signed(&path.bucket, &path.name, &query.token)
        .await
        .map_err(storage_error)?;
    serve(&state, object, false, query.download, &headers).await
}

pub async fn info(
    State(state): State<AppState>,
    Identity(caller): Identity,
    Path(path): Path<ObjectPath>,
) -> Result<Json<Value>, ApiError> {
    let object = visible(&state, &caller, &path).await?;
    Ok(Json(crate::wire::object_info(&object)))
}

pub async fn info_public(
    State(state): State<AppState>,
    Path(path): Path<ObjectPath>,
) -> Result<Json<Value>, ApiError> {
    let object = objects(&state)
        .find_public(&path.bucket, &path.name)
        .await
        .map_err(public_error)?;
    // Public means the bytes are public, not who uploaded them.
    let mut info = crate::wire::object_info(&object);
    if let Some(fields) = info.as_object_mut() {
        fields.remove("owner");
    }
    Ok(Json(info))
}

#[derive(Deserialize)]
pub struct SortBy {
    column: Option<String>,
    order: Option<String>,
}

#[serde_as]
#[derive(Deserialize)]
pub struct ListBody {
    #[serde(default)]
    prefix: String,
    search: Option<String>,
    #[serde_as(as = "Option<Coerced>")]
    #[serde(default)]
    limit: Option<usize>,
    #[serde_as(as = "Option<Coerced>")]
    #[serde(default)]
    offset: Option<usize>,
    #[serde(rename = "sortBy")]
    sort_by: Option<SortBy>,
}

pub async fn list(
    State(state): State<AppState>,
    Identity(caller): Identity,
    Path(bucket): Path<String>,
    Json(body): Json<ListBody>,
) -> Result<Json<Value>, ApiError> {
    let sort = body.sort_by.unwrap_or(SortBy {
        column: None,
        order: None,
    });
    if let Some(column) = sort.column.as_deref()
        && !matches!(
            column,
            "name" | "created_at" | "updated_at" | "last_accessed_at"
        )
    {
        return Err(invalid(format!("cannot sort by {column:?}")));
    }
    let request = ListRequest {
        prefix: body.prefix,
        search: body.search,
        limit: body.limit,
        offset: body.offset,
        sort_column: sort.column,
        descending: sort
            .order
            .is_some_and(|order| order.eq_ignore_ascii_case("desc")),
    };
    let entries = objects(&state)
        .list(&caller, &bucket, &request)
        .await
        .map_err(storage_error)?;
    Ok(Json(Value::Array(
        entries.iter().map(crate::wire::list_entry).collect(),
    )))
}

#[derive(Deserialize)]
pub struct RemoveBody {
    prefixes: Vec<String>,
}

pub async fn remove(
    State(state): State<AppState>,
    Identity(caller): Identity,
    Path(bucket): Path<String>,
    Json(body): Json<RemoveBody>,
) -> Result<Json<Value>, ApiError> {
    let removed = objects(&state)
        .remove(&caller, &bucket, &body.prefixes)
        .await
        .map_err(storage_error)?;
    Ok(Json(
        removed
            .iter()
            .map(|object| crate::wire::file_object(object, &object.name))
            .collect(),
    ))
}

#[derive(Deserialize)]
pub struct Transfer {
    #[serde(rename = "bucketId")]
    bucket_id: String,
    #[serde(rename = "sourceKey")]
    source_key: String,
    #[serde(rename = "destinationKey")]
    destination_key: String,
    #[serde(rename = "destinationBucket")]
    destination_bucket: Option<String>,
}

pub async fn move_object(
    State(state): State<AppState>,
    Identity(caller): Identity,
    Json(body): Json<Transfer>,
) -> Result<Json<Value>, ApiError> {
    let target = body
        .destination_bucket
        .as_deref()
        .unwrap_or(&body.bucket_id);
    objects(&state)
        .move_object(
            &caller,
            &body.bucket_id,
            &body.source_key,
            target,
            &body.destination_key,
        )
        .await
        .map_err(storage_error)?;
    Ok(Json(json!({"message": "Successfully moved"})))
}

pub async fn copy_object(
    State(state): State<AppState>,
    Identity(caller): Identity,
    headers: HeaderMap,
    Json(body): Json<Transfer>,
) -> Result<Json<Value>, ApiError> {
    let target = body
        .destination_bucket
        .as_deref()
        .unwrap_or(&body.bucket_id);
    let object = objects(&state)
        .copy_object(
            &caller,
            &body.bucket_id,
            &body.source_key,
            target,
            &body.destination_key,
            flag(&headers, "x-upsert"),
        )
        .await
        .map_err(storage_error)?;
    Ok(Json(json!({"Id": object.id, "Key": key(&object)})))
}

#[serde_as]
#[derive(Deserialize)]
pub struct SignBody {
    #[serde(rename = "expiresIn")]
    #[serde_as(as = "Coerced")]
    expires_in: i64,
}

pub async fn sign(
    State(state): State<AppState>,
    Identity(caller): Identity,
    Path(path): Path<ObjectPath>,
    Json(body): Json<SignBody>,
) -> Result<Json<Value>, ApiError> {
    let url = objects(&state)
        .sign_download(&caller, &path.bucket, &path.name, body.expires_in)
        .await
        .map_err(storage_error)?;
    Ok(Json(json!({"signedURL": url})))
}

#[serde_as]
#[derive(Deserialize)]
pub struct SignManyBody {
    #[serde(rename = "expiresIn")]
    #[serde_as(as = "Coerced")]
    expires_in: i64,
    paths: Vec<String>,
}

pub async fn sign_many(
    State(state): State<AppState>,
    Identity(caller): Identity,
    Path(bucket): Path<String>,
    Json(body): Json<SignManyBody>,
) -> Result<Json<Value>, ApiError> {
    if body.paths.len() > 1000 {
        return Err(invalid("sign at most 1000 paths at once".into()));
    }
    let mut signed = Vec::with_capacity(body.paths.len());
    for path in body.paths {
        let answer = sign_one(&state, &caller, &bucket, &path, body.expires_in).await;
        signed.push(match answer {
            Ok(url) => json!({"error": null, "path": path, "signedURL": url}),
            Err(StorageError::Invalid(message)) => return Err(invalid(message)),
            Err(_) => json!({
                "error": "Either the object does not exist or you do not have access to it",
                "path": path,
                "signedURL": null,
            }),
        });
    }
    Ok(Json(Value::Array(signed)))
}

async fn sign_one(
    state: &AppState,
    caller: &Caller,
    bucket: &str,
    path: &str,
    expires_in: i64,
) -> Result<String, StorageError> {
    objects(state)
        .sign_download(caller, bucket, path, expires_in)
        .await
}

pub async fn sign_upload(
    State(state): State<AppState>,
    Identity(caller): Identity,
    Path(path): Path<ObjectPath>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (url, token) = objects(&state)
        .sign_upload(
            &caller,
            &path.bucket,
            &path.name,
            flag(&headers, "x-upsert"),
        )
        .await
        .map_err(storage_error)?;
    Ok(Json(json!({"url": url, "token": token})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_are_told_from_the_json_routes() {
        for (method, path, upload) in [
            (Method::POST, "/storage/v1/object/avatars/a.png", true),
            (Method::PUT, "/storage/v1/object/avatars/a.png", true),
            (
                Method::PUT,
                "/storage/v1/object/upload/sign/avatars/a.png",
                true,
            ),
            (
                Method::POST,
                "/storage/v1/object/upload/sign/avatars/a.png",
                false,
            ),
            (Method::POST, "/storage/v1/object/list/avatars", false),
            (Method::POST, "/storage/v1/object/sign/avatars/a.png", false),
            (Method::POST, "/storage/v1/object/move", false),
            (Method::POST, "/storage/v1/object/copy", false),
            (Method::DELETE, "/storage/v1/object/avatars", false),
            (Method::GET, "/storage/v1/object/avatars/a.png", false),
            (Method::POST, "/storage/v1/bucket", false),
            (Method::POST, "/rest/v1/orders", false),
        ] {
            assert_eq!(is_upload(&method, path), upload, "{method} {path}");
        }
    }

    #[test]
    fn one_byte_range_is_served_and_the_rest_ignored() {
        let range = |header: &str| requested_range(Some(header), 10);
        assert_eq!(range("bytes=2-4"), Ok(Some(2..5)));
        assert_eq!(range("bytes=2-"), Ok(Some(2..10)));
        assert_eq!(range("bytes=-3"), Ok(Some(7..10)));
        assert_eq!(range("bytes=-30"), Ok(Some(0..10)));
        assert_eq!(range("bytes=8-20"), Ok(Some(8..10)));
        assert_eq!(range("bytes=10-"), Err(()));
        assert_eq!(range("bytes=12-14"), Err(()));
        for ignored in [
            "bytes=4-2",
            "bytes=0-1,4-5",
            "items=0-1",
            "bytes=a-b",
            "bytes=-0",
            "bytes=-",
        ] {
            assert_eq!(range(ignored), Ok(None), "{ignored}");
        }
        assert_eq!(requested_range(None, 10), Ok(None));
        assert_eq!(requested_range(Some("bytes=0-"), 0), Err(()));
    }

    #[test]
    fn cache_control_keeps_only_a_max_age() {
        assert_eq!(
            max_age(Some("max-age=3600")).as_deref(),
            Some("max-age=3600")
        );
        assert_eq!(max_age(Some("3600")).as_deref(), Some("max-age=3600"));
        assert_eq!(
            max_age(Some("public, max-age=60")).as_deref(),
            Some("max-age=60")
        );
        assert_eq!(max_age(Some("no-store\r\nX: y")), None);
    }
}

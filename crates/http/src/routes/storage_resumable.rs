//! `/storage/v1/upload/resumable`: TUS 1.0.0 resumable uploads, as Supabase
//! Storage serves them to tus-js-client and Uppy: creation (with the first
//! bytes, optionally), `PATCH` at the stored offset, `HEAD` to learn it,
//! `DELETE` to end, `OPTIONS` for the server's capabilities. The storage crate
//! decides everything; this module speaks the protocol's headers.

use std::collections::HashMap;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::TryStreamExt;
use gatehouse_rest::Caller;
use gatehouse_storage::{NewResumable, Resumable};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::routes::storage_buckets::storage_refusal;
use crate::routes::storage_objects::{
    flag, header_text, max_age, uploading_client, with_idle_limit,
};
use crate::{ApiError, AppState, Identity};

/// Where uploads are created; each lives at `PATH/<id>`.
pub const PATH: &str = "/storage/v1/upload/resumable";
const VERSION: &str = "1.0.0";
const EXTENSIONS: &str = "creation,creation-with-upload,termination";
/// The body type of every request that carries bytes.
const OFFSET_STREAM: &str = "application/offset+octet-stream";
/// Keys an `Upload-Metadata` header may carry, each at most this long decoded.
const MAX_METADATA_KEYS: usize = 16;
const MAX_METADATA_VALUE: usize = 4 << 10;

fn tus(status: StatusCode, mut response: Response) -> Response {
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("tus-resumable", HeaderValue::from_static(VERSION));
    response
}

/// Every response, refusals too, names the protocol version.
fn refused(error: ApiError) -> Response {
    let response = error.into_response();
    let status = response.status();
    tus(status, response)
}

fn invalid(message: impl Into<std::borrow::Cow<'static, str>>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "InvalidRequest", message)
}

/// A request in another protocol version is refused with 412, naming ours.
fn other_version(headers: &HeaderMap) -> Option<Response> {
    if header_text(headers, "tus-resumable") == Some(VERSION) {
        return None;
    }
    let error = ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "InvalidRequest",
        "Tus-Resumable must be 1.0.0",
    );
    let mut response = refused(error);
    response
        .headers_mut()
        .insert("tus-version", HeaderValue::from_static(VERSION));
    Some(response)
}

fn number(headers: &HeaderMap, name: &str) -> Result<u64, ApiError> {
    header_text(headers, name)
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| invalid(format!("{name} must be a whole number of bytes")))
}

/// `Upload-Metadata: key base64,key base64`.
fn metadata(headers: &HeaderMap) -> Result<HashMap<String, String>, ApiError> {
    let text = header_text(headers, "upload-metadata").unwrap_or("");
    let pairs: Vec<&str> = text
        .split(',')
        .filter(|pair| !pair.trim().is_empty())
        .collect();
    if pairs.len() > MAX_METADATA_KEYS {
        return Err(invalid("Upload-Metadata has too many keys"));
    }
    pairs
        .into_iter()
        .map(|pair| {
            let mut parts = pair.trim().splitn(2, ' ');
            let key = parts.next().unwrap_or_default().to_owned();
            let value = match parts.next() {
                Some(encoded) => STANDARD
                    .decode(encoded.trim())
                    .ok()
                    .filter(|bytes| bytes.len() <= MAX_METADATA_VALUE)
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(|| invalid("Upload-Metadata values are base64 of UTF-8 text"))?,
                None => String::new(),
            };
            Ok((key, value))
        })
        .collect()
}

fn offset_header(response: &mut Response, upload: &Resumable) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("upload-offset", upload.received.into());
    headers.insert("upload-length", upload.length.into());
}

/// `OPTIONS` under [`PATH`] without an `Origin` (a browser's preflight has
/// one, and goes to the CORS layer): what this server speaks, for anyone.
pub async fn capabilities<F: Future<Output = Response>>(
    state: &AppState,
    request: Request,
    next: impl FnOnce(Request) -> F,
) -> Response {
    let asks = request.method() == Method::OPTIONS
        && request.uri().path().starts_with(PATH)
        && !request.headers().contains_key(header::ORIGIN);
    if !asks {
        return next(request).await;
    }
    let mut response = tus(StatusCode::NO_CONTENT, ().into_response());
    let headers = response.headers_mut();
    headers.insert("tus-version", HeaderValue::from_static(VERSION));
    headers.insert("tus-extension", HeaderValue::from_static(EXTENSIONS));
    headers.insert(
        "tus-max-size",
        state.objects().settings().max_object_bytes.into(),
    );
    response
}

/// `POST`: a new upload of `Upload-Length` bytes to the bucket and object
/// named in `Upload-Metadata` (`bucketName`, `objectName`, `contentType`,
/// `cacheControl`), refused here when the policies would refuse the object.
pub async fn create(
    State(state): State<AppState>,
    Identity(caller): Identity,
    headers: HeaderMap,
    request: Request,
) -> Response {
    if let Some(response) = other_version(&headers) {
        return response;
    }
    match create_upload(&state, &caller, &headers, request).await {
        Ok((upload, location)) => {
            let mut response = tus(StatusCode::CREATED, ().into_response());
            offset_header(&mut response, &upload);
            if let Ok(location) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
        Err(error) => refused(error),
    }
}

async fn create_upload(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    request: Request,
) -> Result<(Resumable, String), ApiError> {
    if headers.contains_key("upload-defer-length") {
        return Err(invalid(
            "the length must be known when an upload is created",
        ));
    }
    let length = number(headers, "upload-length")?;
    let mut metadata = metadata(headers)?;
    let mut required = |key: &str| {
        metadata
            .remove(key)
            .filter(|value| !value.is_empty())
            .ok_or_else(|| invalid(format!("Upload-Metadata needs {key}")))
    };
    let bucket = required("bucketName")?;
    let name = required("objectName")?;
    let content_type = metadata.remove("contentType").filter(|t| !t.is_empty());
    let cache_control = max_age(metadata.get("cacheControl").map(String::as_str));
    let new = NewResumable {
        bucket,
        name,
        content_type,
        cache_control,
        upsert: flag(headers, "x-upsert"),
        length,
    };
    let objects = state.objects();
    let upload = objects
        .begin_resumable(caller, new)
        .await
        .map_err(storage_refusal)?;
    let location = format!("{PATH}/{}", upload.id);
    let carries_bytes = header_text(headers, header::CONTENT_TYPE) == Some(OFFSET_STREAM);
    let upload = if carries_bytes {
        append(state, caller, (upload.id, 0), request).await?
    } else if upload.length == 0 {
        let client = uploading_client(caller, &request);
        objects
            .resumable_status(caller, &upload.id, &client)
            .await
            .map_err(storage_refusal)?
    } else {
        upload
    };
    Ok((upload, location))
}

/// Stores the body at `offset`. It runs to its end in its own task, so a
/// client that hangs up midway still has the bytes that arrived kept.
async fn append(
    state: &AppState,
    caller: &Caller,
    (id, offset): (String, u64),
    request: Request,
) -> Result<Resumable, ApiError> {
    let client = uploading_client(caller, &request);
    let body = with_idle_limit(
        request
            .into_body()
            .into_data_stream()
            .map_err(|e| e.to_string()),
    );
    let objects = state.objects().clone();
    let caller = caller.clone();
    let stored = tokio::spawn(async move {
        objects
            .append_resumable(&caller, (&id, offset), &client, body)
            .await
    });
    match stored.await {
        Ok(stored) => stored.map_err(storage_refusal),
        Err(error) => {
            tracing::error!(%error, "a resumable upload's task failed");
            Err(ApiError::internal())
        }
    }
}

/// `HEAD`: the bytes stored so far (and the object made, once all are).
pub async fn head(
    State(state): State<AppState>,
    Identity(caller): Identity,
    Path(id): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    if let Some(response) = other_version(&headers) {
        return response;
    }
    let client = uploading_client(&caller, &request);
    match state
        .objects()
        .resumable_status(&caller, &id, &client)
        .await
    {
        Ok(upload) => {
            let mut response = tus(StatusCode::OK, ().into_response());
            offset_header(&mut response, &upload);
            response
        }
        // A HEAD response has no body: the status alone answers.
        Err(error) => tus(storage_refusal(error).status, ().into_response()),
    }
}

/// `PATCH`: the next bytes, at `Upload-Offset`.
pub async fn patch(
    State(state): State<AppState>,
    Identity(caller): Identity,
    Path(id): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    if let Some(response) = other_version(&headers) {
        return response;
    }
    if header_text(&headers, header::CONTENT_TYPE) != Some(OFFSET_STREAM) {
        return refused(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "InvalidRequest",
            "the body of a PATCH is application/offset+octet-stream",
        ));
    }
    let offset = match number(&headers, "upload-offset") {
        Ok(offset) => offset,
        Err(error) => return refused(error),
    };
    match append(&state, &caller, (id, offset), request).await {
        Ok(upload) => {
            let mut response = tus(StatusCode::NO_CONTENT, ().into_response());
            offset_header(&mut response, &upload);
            response
        }
        Err(error) => refused(error),
    }
}

/// `DELETE`: ends the upload and drops its bytes.
pub async fn delete(
    State(state): State<AppState>,
    Identity(caller): Identity,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(response) = other_version(&headers) {
        return response;
    }
    match state.objects().cancel_resumable(&caller, &id).await {
        Ok(()) => tus(StatusCode::NO_CONTENT, ().into_response()),
        Err(error) => refused(storage_refusal(error)),
    }
}

//! `/storage/v1/bucket[/{id}[/empty]]`: Supabase Storage's bucket API, for the
//! secret key only.

use axum::Json;
use axum::extract::{Path, State};
use gatehouse_storage::{BucketChanges, NewBucket, StorageError};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use serde_with::serde_as;

use crate::routes::Coerced;
use crate::routes::auth::Admin;
use crate::{ApiError, AppState};

pub fn storage_error(error: StorageError) -> ApiError {
    let told_as_is = matches!(
        error,
        StorageError::Busy | StorageError::Database(_) | StorageError::Backend(_)
    );
    let refusal = storage_refusal(error);
    if told_as_is {
        return refusal;
    }
    // As Supabase Storage: the refusal goes out as 400, its status in the body,
    // so that client code branching on either behaves the same.
    refusal.reported_as_bad_request()
}

/// A storage failure with its own HTTP status, as the TUS endpoints (whose
/// clients act on the status) send it.
pub fn storage_refusal(error: StorageError) -> ApiError {
    let status = match &error {
        StorageError::InvalidBucket
        | StorageError::InvalidName(_)
        | StorageError::Invalid(_)
        | StorageError::Body(_)
        | StorageError::InvalidSignature
        | StorageError::SignatureExpired => StatusCode::BAD_REQUEST,
        StorageError::NoSuchBucket | StorageError::NoSuchKey => StatusCode::NOT_FOUND,
        StorageError::BucketExists
        | StorageError::BucketNotEmpty
        | StorageError::Duplicate
        | StorageError::UploadOffset(_) => StatusCode::CONFLICT,
        StorageError::Denied => StatusCode::FORBIDDEN,
        StorageError::Busy => {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                error.code(),
                error.to_string(),
            )
            .with_retry_after(std::time::Duration::from_secs(1));
        }
        StorageError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        StorageError::InvalidMimeType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        StorageError::Database(detail) => {
            tracing::error!(error = %detail, "storage request failed in the database");
            return ApiError::internal();
        }
        StorageError::Backend(detail) => {
            tracing::error!(error = %detail, "storage request failed in the object store");
            return ApiError::internal();
        }
    };
    ApiError::new(status, error.code(), error.to_string())
}

/// storage-js sends the size limit as a number of bytes or as text such as "20MB".
fn size(value: &Value) -> Result<Option<u64>, ApiError> {
    let invalid = || {
        storage_error(StorageError::Invalid(
            "file_size_limit is a number of bytes or text such as \"20MB\"".into(),
        ))
    };
    match value {
        Value::Null => Ok(None),
        Value::Number(number) => number.as_u64().map(Some).ok_or_else(invalid),
        Value::String(text) => {
            let text = text.trim().to_ascii_uppercase();
            let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            let unit = match text[digits.len()..].trim() {
                "" | "B" => 1,
                "KB" => 1 << 10,
                "MB" => 1 << 20,
                "GB" => 1 << 30,
                _ => return Err(invalid()),
            };
            let count: u64 = digits.trim().parse().map_err(|_| invalid())?;
            count.checked_mul(unit).map(Some).ok_or_else(invalid)
        }
        _ => Err(invalid()),
    }
}

#[serde_as]
#[derive(Deserialize)]
pub struct Create {
    id: Option<String>,
    name: Option<String>,
    #[serde(default)]
    #[serde_as(as = "Coerced")]
    public: bool,
    #[serde(default)]
    file_size_limit: Value,
    allowed_mime_types: Option<Vec<String>>,
}

pub async fn create(
    State(state): State<AppState>,
    _: Admin,
    Json(body): Json<Create>,
) -> Result<Json<Value>, ApiError> {
    let id = body.id.or(body.name).unwrap_or_default();
    let bucket = state
        .buckets()
        .create(NewBucket {
            id,
            public: body.public,
            file_size_limit: size(&body.file_size_limit)?,
            allowed_mime_types: body.allowed_mime_types,
        })
        .await
        .map_err(storage_error)?;
    Ok(Json(json!({"name": bucket.id})))
}

pub async fn list(State(state): State<AppState>, _: Admin) -> Result<Json<Value>, ApiError> {
    let buckets = state.buckets().list().await.map_err(storage_error)?;
    Ok(Json(buckets.iter().map(crate::wire::bucket).collect()))
}

pub async fn get(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let bucket = state.buckets().get(&id).await.map_err(storage_error)?;
    Ok(Json(crate::wire::bucket(&bucket)))
}

/// A field that was sent, `null` included (serde would read `null` as absent).
fn sent<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    field: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(field).map(Some)
}

/// Absent fields keep their value; `null` clears a limit.
#[serde_as]
#[derive(Deserialize)]
pub struct Update {
    #[serde_as(as = "Option<Coerced>")]
    #[serde(default)]
    public: Option<bool>,
    #[serde(default, deserialize_with = "sent")]
    file_size_limit: Option<Value>,
    #[serde(default, deserialize_with = "sent")]
    allowed_mime_types: Option<Option<Vec<String>>>,
}

pub async fn update(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    Json(body): Json<Update>,
) -> Result<Json<Value>, ApiError> {
    let file_size_limit = body.file_size_limit.as_ref().map(size).transpose()?;
    let changes = BucketChanges {
        public: body.public,
        file_size_limit,
        allowed_mime_types: body.allowed_mime_types,
    };
    state
        .buckets()
        .update(&id, changes)
        .await
        .map_err(storage_error)?;
    Ok(Json(json!({"message": "Successfully updated"})))
}

pub async fn empty(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.buckets().empty(&id).await.map_err(storage_error)?;
    Ok(Json(json!({"message": "Successfully emptied"})))
}

pub async fn delete(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.buckets().delete(&id).await.map_err(storage_error)?;
    Ok(Json(json!({"message": "Successfully deleted"})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_come_as_numbers_or_text_with_units() {
        assert_eq!(size(&json!(1024)).ok(), Some(Some(1024)));
        assert_eq!(size(&json!("20MB")).ok(), Some(Some(20 << 20)));
        assert_eq!(size(&json!("5 kb")).ok(), Some(Some(5 << 10)));
        assert_eq!(size(&Value::Null).ok(), Some(None));
        for bad in [json!("lots"), json!(-1), json!("1TB"), json!(true)] {
            assert!(size(&bad).is_err(), "{bad}");
        }
    }
}

//! One file per endpoint, named after its route.

pub mod auth;
pub mod health;
pub mod jwks;
pub mod metrics;
pub mod ready;
pub mod rest_root;
pub mod rest_table;
pub mod storage_buckets;
pub mod storage_objects;

use crate::ApiError;

/// Every unknown path answers the same way, in the dialect of its surface.
pub async fn not_found() -> ApiError {
    ApiError::new(
        http::StatusCode::NOT_FOUND,
        "not_found",
        "No such resource.",
    )
}

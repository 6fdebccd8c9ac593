//! `/admin/v1/jobs`: the background job queue for the secret key, as
//! `gatehouse jobs` shows and steers it. `GET` lists (newest first; `state`,
//! `queue`, `limit` up to 1000), `GET /{id}` shows one with its attempts,
//! `POST /{id}/retry` and `POST /{id}/cancel` act on one, and `DELETE` with
//! `state` and `older_than_hours` purges finished jobs.

use axum::Json;
use axum::extract::{Path, Query, State};
use gatehouse_db::DbError;
use gatehouse_jobs::admin::{self, JobRecord};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api_key::Admin;
use crate::{ApiError, AppState};

const MAX_PAGE: u32 = 1000;

#[derive(Deserialize)]
pub struct Filter {
    state: Option<String>,
    queue: Option<String>,
    limit: Option<u32>,
}

#[derive(Deserialize)]
pub struct Purge {
    state: String,
    older_than_hours: u32,
}

fn failed(error: DbError) -> ApiError {
    tracing::error!(%error, "the job queue could not be read or changed");
    ApiError::internal()
}

fn invalid(message: &'static str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "validation_failed", message)
}

fn no_job(which: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("There is no {which} job with this id."),
    )
}

pub async fn list(
    State(state): State<AppState>,
    _: Admin,
    Query(filter): Query<Filter>,
) -> Result<Json<Vec<JobRecord>>, ApiError> {
    let limit = filter.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(invalid("limit is between 1 and 1000"));
    }
    admin::list(
        state.db(),
        (filter.state.as_deref(), filter.queue.as_deref()),
        limit,
    )
    .await
    .map(Json)
    .map_err(failed)
}

pub async fn show(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<JobRecord>, ApiError> {
    match admin::show(state.db(), &id).await.map_err(failed)? {
        Some(job) => Ok(Json(job)),
        None => Err(no_job("such")),
    }
}

pub async fn retry(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if admin::retry(state.db(), &id).await.map_err(failed)? {
        Ok(Json(json!({ "id": id, "state": "waiting" })))
    } else {
        Err(no_job("dead, cancelled or waiting"))
    }
}

pub async fn cancel(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if admin::cancel(state.db(), &id).await.map_err(failed)? {
        Ok(Json(json!({ "id": id, "state": "cancelled" })))
    } else {
        Err(no_job("waiting or running"))
    }
}

pub async fn purge(
    State(state): State<AppState>,
    _: Admin,
    Query(purge): Query<Purge>,
) -> Result<Json<Value>, ApiError> {
    if !admin::FINISHED.contains(&purge.state.as_str()) {
        return Err(invalid(
            "purge removes finished jobs: state is done, dead or cancelled",
        ));
    }
    let age = std::time::Duration::from_secs(u64::from(purge.older_than_hours) * 3600);
    let removed = admin::purge(state.db(), &purge.state, age)
        .await
        .map_err(failed)?;
    Ok(Json(json!({ "removed": removed })))
}

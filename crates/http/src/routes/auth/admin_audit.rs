//! `GET /auth/v1/admin/audit`: the security audit log for the secret key, newest
//! first. Filters: `action`, `actor`; paging: `limit` (at most 1000, default 100)
//! and `before` (the last id of the previous page).

use axum::Json;
use axum::extract::{Query, State};
use gatehouse_auth::AuthError;
use gatehouse_auth::audit;
use serde::Deserialize;
use serde_json::Value;

use super::{Admin, auth_error};
use crate::{ApiError, AppState};

#[derive(Deserialize)]
pub struct Filter {
    action: Option<String>,
    actor: Option<String>,
    before: Option<i64>,
    limit: Option<u32>,
}

pub async fn get(
    State(state): State<AppState>,
    _: Admin,
    Query(filter): Query<Filter>,
) -> Result<Json<Value>, ApiError> {
    let limit = filter.limit.unwrap_or(100);
    if limit == 0 || limit > audit::MAX_PAGE {
        return Err(auth_error(AuthError::Validation(format!(
            "limit is between 1 and {}",
            audit::MAX_PAGE
        ))));
    }
    let entries = state
        .audit()
        .read(&audit::Query {
            action: filter.action,
            actor: filter.actor,
            before: filter.before,
            limit,
        })
        .await
        .map_err(auth_error)?;
    Ok(Json(Value::Array(
        entries.iter().map(crate::wire::audit_entry).collect(),
    )))
}

//! `/auth/v1/admin/users[/{id}]`: the admin users API, for the secret key only.

use axum::Json;
use axum::extract::{Path, Query, State};
use gatehouse_auth::{AuthError, Changes};
use http::{HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{Admin, auth_error};
use crate::{ApiError, AppState, Audit};

/// auth-js sends `page=&per_page=` when it has no preference: empty means default.
#[derive(Deserialize)]
pub struct Page {
    page: Option<String>,
    per_page: Option<String>,
}

fn number(text: Option<&String>, default: u64) -> Result<u64, ApiError> {
    match text.map(|t| t.trim()).filter(|t| !t.is_empty()) {
        None => Ok(default),
        Some(text) => text.parse().map_err(|_| {
            auth_error(AuthError::Validation(format!(
                "{text:?} is not a page number"
            )))
        }),
    }
}

pub async fn list(
    State(state): State<AppState>,
    _: Admin,
    Query(page): Query<Page>,
) -> Result<(HeaderMap, Json<Value>), ApiError> {
    let (page, per_page) = (
        number(page.page.as_ref(), 1)?,
        number(page.per_page.as_ref(), 50)?,
    );
    let (users, total) = state
        .auth()
        .admin_list(page, per_page)
        .await
        .map_err(auth_error)?;
    let users: Vec<Value> = users.iter().map(crate::wire::user).collect();
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&total.to_string()) {
        headers.insert("x-total-count", value);
    }
    Ok((
        headers,
        Json(json!({"users": users, "aud": "authenticated", "total": total})),
    ))
}

#[derive(Deserialize)]
pub struct Body {
    email: Option<String>,
    password: Option<String>,
    email_confirm: Option<bool>,
    user_metadata: Option<Value>,
    app_metadata: Option<Value>,
    /// `"24h"`, `"30m"`, `"90s"`, or `"none"` to lift a ban.
    ban_duration: Option<String>,
}

/// `"24h"` → the time the ban ends; `"none"` → no ban.
fn ban_until(duration: &str) -> Result<Option<String>, ApiError> {
    if duration == "none" {
        return Ok(None);
    }
    let invalid = || {
        auth_error(AuthError::Validation(
            "ban_duration is like 24h, 30m, 90s or none".into(),
        ))
    };
    let (number, unit) = duration.split_at(
        duration
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?,
    );
    let number: i64 = number.parse().map_err(|_| invalid())?;
    let seconds = match unit {
        "h" => number.checked_mul(3600),
        "m" => number.checked_mul(60),
        "s" => Some(number),
        _ => None,
    }
    .filter(|s| (0..=100 * 365 * 86400).contains(s))
    .ok_or_else(invalid)?;
    Ok(Some(gatehouse_auth::timestamp(
        OffsetDateTime::now_utc() + time::Duration::seconds(seconds),
    )))
}

fn changes(body: Body) -> Result<(Option<String>, Option<String>, Changes), ApiError> {
    let banned_until = body.ban_duration.as_deref().map(ban_until).transpose()?;
    Ok((
        body.email.clone(),
        body.password.clone(),
        Changes {
            email: body.email,
            password: body.password,
            user_metadata: body.user_metadata,
            app_metadata: body.app_metadata,
            email_confirmed: body.email_confirm,
            banned_until,
        },
    ))
}

pub async fn create(
    State(state): State<AppState>,
    _: Admin,
    audit: Audit,
    Json(body): Json<Body>,
) -> Result<Json<Value>, ApiError> {
    let (email, password, changes) = changes(body)?;
    let email =
        email.ok_or_else(|| auth_error(AuthError::Validation("an email is required".into())))?;
    let created = state
        .auth()
        .admin_create(&email, password.as_deref(), changes)
        .await;
    let detail = json!({"user_id": created.as_ref().ok().map(|user| user.id.clone())});
    audit
        .outcome(
            "admin_user_created",
            &created,
            |_| Some("service".into()),
            detail,
        )
        .await;
    Ok(Json(crate::wire::user(&created.map_err(auth_error)?)))
}

pub async fn get(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(crate::wire::user(
        &state.auth().user(&id).await.map_err(auth_error)?,
    )))
}

pub async fn update(
    State(state): State<AppState>,
    _: Admin,
    audit: Audit,
    Path(id): Path<String>,
    Json(body): Json<Body>,
) -> Result<Json<Value>, ApiError> {
    let (_, _, changes) = changes(body)?;
    let banned = changes.banned_until.is_some();
    let updated = state.auth().admin_update(&id, changes).await;
    let detail = json!({"user_id": id, "ban_changed": banned});
    audit
        .outcome(
            "admin_user_updated",
            &updated,
            |_| Some("service".into()),
            detail,
        )
        .await;
    Ok(Json(crate::wire::user(&updated.map_err(auth_error)?)))
}

/// Answers with the deleted user, as auth-js expects a body.
pub async fn delete(
    State(state): State<AppState>,
    _: Admin,
    audit: Audit,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = state.auth().user(&id).await.map_err(auth_error)?;
    let deleted = state.auth().admin_delete(&id).await;
    audit
        .outcome(
            "admin_user_deleted",
            &deleted,
            |()| Some("service".into()),
            json!({"user_id": id}),
        )
        .await;
    deleted.map_err(auth_error)?;
    Ok(Json(crate::wire::user(&user)))
}

use axum::Json;
use axum::extract::State;
use gatehouse_auth::{Changes, Reauthentication};
use serde::Deserialize;
use serde_json::Value;

use super::{SignedIn, auth_error};
use crate::{ApiError, AppState, Audit};

/// `GET /auth/v1/user`.
pub async fn get(
    State(state): State<AppState>,
    SignedIn(claims): SignedIn,
) -> Result<Json<Value>, ApiError> {
    let user = state
        .auth()
        .current_user(&claims)
        .await
        .map_err(auth_error)?;
    Ok(Json(crate::wire::user(&user)))
}

#[derive(Deserialize)]
pub struct Body {
    email: Option<String>,
    password: Option<String>,
    current_password: Option<String>,
    nonce: Option<String>,
    data: Option<Value>,
}

/// `PUT /auth/v1/user`: a new password or email needs the current password or
/// a reauthentication nonce; a new email waits for both addresses to confirm.
pub async fn put(
    State(state): State<AppState>,
    SignedIn(claims): SignedIn,
    audit: Audit,
    Json(body): Json<Body>,
) -> Result<Json<Value>, ApiError> {
    let action = match (&body.password, &body.email) {
        (Some(_), _) => "password_change",
        (None, Some(_)) => "email_change_request",
        (None, None) => "user_update",
    };
    let changes = Changes {
        email: body.email.clone(),
        password: body.password,
        user_metadata: body.data,
        ..Changes::default()
    };
    let proof = Reauthentication {
        current_password: body.current_password.as_deref(),
        nonce: body.nonce.as_deref(),
    };
    let updated = state.auth().update_own(&claims, changes, proof).await;
    audit
        .outcome(
            action,
            &updated,
            |user| Some(user.id.clone()),
            serde_json::json!({}),
        )
        .await;
    if action == "password_change" && body.email.is_some() {
        audit
            .outcome(
                "email_change_request",
                &updated,
                |user| Some(user.id.clone()),
                serde_json::json!({}),
            )
            .await;
    }
    let mut user = crate::wire::user(&updated.map_err(auth_error)?);
    // As GoTrue: the address waiting for confirmation, the same whether or not
    // another account has it.
    if let Some(new_email) = body.email {
        user["new_email"] = Value::String(new_email.trim().to_lowercase());
        user["email_change_sent_at"] =
            Value::String(gatehouse_auth::timestamp(time::OffsetDateTime::now_utc()));
    }
    Ok(Json(user))
}

/// `GET /auth/v1/reauthenticate`: emails a code to send as `nonce`.
pub async fn reauthenticate(
    State(state): State<AppState>,
    SignedIn(claims): SignedIn,
    audit: Audit,
) -> Result<Json<Value>, ApiError> {
    let sent = state.auth().reauthenticate(&claims).await;
    audit
        .outcome(
            "reauthenticate",
            &sent,
            |_| Some(claims.subject().to_owned()),
            serde_json::json!({}),
        )
        .await;
    sent.map_err(auth_error)?;
    Ok(Json(serde_json::json!({})))
}

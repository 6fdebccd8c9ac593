use axum::Json;
use axum::extract::{Query, State};
use gatehouse_auth::{AuthError, Kind};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, Redirect, auth_error};
use crate::{ApiError, AppState, Audit};

#[derive(Deserialize)]
pub struct Body {
    #[serde(rename = "type")]
    kind: String,
    email: String,
    password: Option<String>,
    new_email: Option<String>,
    redirect_to: Option<String>,
}

/// `POST /auth/v1/admin/generate_link`: the link and code an email would carry,
/// for the app's own server to deliver. Answers the user object plus the link
/// fields, as auth-js expects.
pub async fn post(
    State(state): State<AppState>,
    _: Admin,
    audit: Audit,
    Query(query): Query<Redirect>,
    Json(body): Json<Body>,
) -> Result<Json<Value>, ApiError> {
    let kind = match body.kind.as_str() {
        "signup" => Kind::Signup,
        "magiclink" => Kind::MagicLink,
        "recovery" => Kind::Recovery,
        "email_change_new" | "email_change_current" | "email_change" => Kind::EmailChange,
        other => {
            return Err(auth_error(AuthError::Validation(format!(
                "unsupported link type {other:?}"
            ))));
        }
    };
    let redirect_to = body.redirect_to.or(query.redirect_to);
    let generated = state
        .auth()
        .generate_link(
            kind,
            &body.email,
            body.password.as_deref(),
            body.new_email.as_deref(),
            redirect_to.as_deref(),
        )
        .await;
    audit
        .outcome(
            "admin_link_generated",
            &generated,
            |_| Some("service".into()),
            json!({"type": body.kind, "user_id": generated.as_ref().ok().map(|g| g.user.id.clone())}),
        )
        .await;
    let generated = generated.map_err(auth_error)?;
    let mut answer = crate::wire::user(&generated.user);
    answer["action_link"] = generated.action_link.into();
    answer["email_otp"] = generated.email_otp.into();
    answer["hashed_token"] = generated.hashed_token.into();
    answer["redirect_to"] = generated.redirect_to.into();
    answer["verification_type"] = generated.kind.name().into();
    Ok(Json(answer))
}

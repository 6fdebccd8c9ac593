use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::{ApiCaller, AppState};

/// `GET /auth/v1/settings`: which sign-in methods are on.
pub async fn get(State(state): State<AppState>, _: ApiCaller) -> Json<Value> {
    let settings = state.auth().settings();
    Json(json!({
        "external": {"email": true, "phone": false, "anonymous_users": settings.anonymous_sign_ins},
        "disable_signup": !settings.signups,
        "mailer_autoconfirm": !settings.email_confirmation,
        "phone_autoconfirm": false,
        "sms_provider": "",
        "saml_enabled": false,
    }))
}

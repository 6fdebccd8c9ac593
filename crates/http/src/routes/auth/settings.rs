use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::{ApiCaller, AppState};

/// `GET /auth/v1/settings`: which sign-in methods are on.
pub async fn get(State(state): State<AppState>, _: ApiCaller) -> Json<Value> {
    let settings = state.auth().settings();
    let mut external =
        json!({"email": true, "phone": false, "anonymous_users": settings.anonymous_sign_ins});
    for provider in state.auth().provider_names() {
        external[provider] = json!(true);
    }
    Json(json!({
        "external": external,
        "disable_signup": !settings.signups,
        "mailer_autoconfirm": !settings.email_confirmation,
        "phone_autoconfirm": false,
        "sms_provider": "",
        "saml_enabled": false,
    }))
}

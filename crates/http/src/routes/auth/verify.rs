//! `/auth/v1/verify`: POST answers with a session (supabase-js `verifyOtp`); GET
//! is the link in the email and redirects to the allowed `redirect_to` with the
//! session in the URL fragment, as Supabase's implicit flow does.

use axum::Extension;
use axum::Json;
use axum::extract::{Query, State};

use crate::ClientIp;
use axum::response::{IntoResponse, Response};
use gatehouse_auth::{AuthError, Kind, Proof, Verified};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::json;

use super::{auth_error, back_to_app, client, error_fragment, session_fragment};
use crate::{ApiCaller, ApiError, AppState, Audit};

fn kind(name: &str) -> Result<Kind, ApiError> {
    match name {
        "signup" | "email" => Ok(Kind::Signup),
        "recovery" => Ok(Kind::Recovery),
        "magiclink" => Ok(Kind::MagicLink),
        "email_change" => Ok(Kind::EmailChange),
        "email_change_cancel" => Ok(Kind::EmailChangeCancel),
        other => Err(auth_error(AuthError::Validation(format!(
            "unsupported verification type {other:?}"
        )))),
    }
}

/// What GoTrue answers when one address of an email change has confirmed it.
const OTHER_ADDRESS: &str =
    "Confirmation link accepted. Please proceed to confirm link sent to the other email";
const CANCELLED: &str = "The email change was stopped and the account signed out everywhere";

#[derive(Deserialize)]
pub struct Body {
    #[serde(rename = "type")]
    kind: String,
    token_hash: Option<String>,
    email: Option<String>,
    token: Option<String>,
}

pub async fn post(
    State(state): State<AppState>,
    _: ApiCaller,
    peer: Extension<ClientIp>,
    audit: Audit,
    headers: HeaderMap,
    Json(body): Json<Body>,
) -> Result<Response, ApiError> {
    let kind = kind(&body.kind)?;
    let proof = match (&body.token_hash, &body.email, &body.token) {
        (Some(token), _, _) => Proof::Link { token, kind },
        (None, Some(email), Some(code)) => Proof::Code { email, code, kind },
        _ => {
            return Err(auth_error(AuthError::Validation(
                "send token_hash, or email and token".into(),
            )));
        }
    };
    let client = client(&headers, peer);
    match verify_audited(&state, proof, &client, &audit, &body.kind).await {
        Ok(Verified::SignedIn { session, .. }) => {
            super::token::respond(&state, &headers, *session).await
        }
        Ok(Verified::EmailChangePending { .. }) => {
            Ok(Json(json!({"msg": OTHER_ADDRESS})).into_response())
        }
        Ok(Verified::EmailChangeCancelled { .. }) => {
            Ok(Json(json!({"msg": CANCELLED})).into_response())
        }
        Err(error) => Err(auth_error(error)),
    }
}

/// Spends the proof and records the outcome in the audit log, with the steps
/// of an email change as their own entries.
async fn verify_audited(
    state: &AppState,
    proof: Proof<'_>,
    client: &gatehouse_auth::Client,
    audit: &Audit,
    kind: &str,
) -> Result<Verified, AuthError> {
    let verified = state
        .auth()
        .verify(state.signing_keys(), proof, client)
        .await;
    let user = |verified: &Verified| match verified {
        Verified::SignedIn { session, .. } => Some(session.user.id.clone()),
        Verified::EmailChangePending { user_id, .. }
        | Verified::EmailChangeCancelled { user_id, .. } => Some(user_id.clone()),
    };
    audit
        .outcome("verify", &verified, user, json!({"type": kind}))
        .await;
    let email_change = match &verified {
        Ok(Verified::SignedIn {
            email_change: Some(side),
            ..
        }) => Some((
            "email_change_confirm",
            json!({"side": side.name(), "complete": true}),
        )),
        Ok(Verified::EmailChangePending { side, .. }) => Some((
            "email_change_confirm",
            json!({"side": side.name(), "complete": false}),
        )),
        Ok(Verified::EmailChangeCancelled { .. }) => Some(("email_change_cancel", json!({}))),
        _ => None,
    };
    if let Some((action, detail)) = email_change {
        audit.outcome(action, &verified, user, detail).await;
    }
    verified
}

#[derive(Deserialize)]
pub struct Link {
    token: String,
    #[serde(rename = "type")]
    kind: String,
}

/// The link in the email. Public (no API key: it is opened from a mail client).
pub async fn get(
    State(state): State<AppState>,
    peer: Extension<ClientIp>,
    audit: Audit,
    headers: HeaderMap,
    Query(link): Query<Link>,
) -> Result<Response, ApiError> {
    let proof = Proof::Link {
        token: &link.token,
        kind: kind(&link.kind)?,
    };
    // The redirect was checked when the link was made and is stored with it.
    let client = client(&headers, peer);
    let outcome = verify_audited(&state, proof, &client, &audit, &link.kind).await;
    let message = |redirect_to: String, text: &str| {
        let fragment = form_urlencoded::Serializer::new(String::new())
            .append_pair("message", text)
            .finish();
        (redirect_to, fragment)
    };
    let (target, fragment) = match outcome {
        Ok(Verified::SignedIn {
            session,
            redirect_to,
            ..
        }) => (redirect_to, session_fragment(&session, Some(&link.kind))),
        Ok(Verified::EmailChangePending { redirect_to, .. }) => message(redirect_to, OTHER_ADDRESS),
        Ok(Verified::EmailChangeCancelled { redirect_to, .. }) => message(redirect_to, CANCELLED),
        Err(error) => (
            state.auth().settings().site_url.clone(),
            error_fragment(&error),
        ),
    };
    Ok(back_to_app(&state, format!("{target}#{fragment}")))
}

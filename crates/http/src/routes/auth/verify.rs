//! `/auth/v1/verify`: POST answers with a session (supabase-js `verifyOtp`); GET
//! is the link in the email and redirects to the allowed `redirect_to` with the
//! session in the URL fragment, as Supabase's implicit flow does.

use axum::Extension;
use axum::Json;
use axum::extract::{Query, State};

use crate::ClientIp;
use axum::response::{IntoResponse, Redirect as Redirection, Response};
use gatehouse_auth::{AuthError, Kind, Proof};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::json;

use super::{auth_error, client};
use crate::{ApiCaller, ApiError, AppState, Audit};

fn kind(name: &str) -> Result<Kind, ApiError> {
    match name {
        "signup" => Ok(Kind::Signup),
        "recovery" => Ok(Kind::Recovery),
        "magiclink" => Ok(Kind::MagicLink),
        "email_change" => Ok(Kind::EmailChange),
        other => Err(auth_error(AuthError::Validation(format!(
            "unsupported verification type {other:?}"
        )))),
    }
}

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
    let proof = match (&body.token_hash, &body.email, &body.token) {
        (Some(token), _, _) => Proof::Link {
            token,
            kind: kind(&body.kind)?,
        },
        (None, Some(email), Some(code)) => Proof::Code {
            email,
            code,
            recovery: body.kind == "recovery",
        },
        _ => {
            return Err(auth_error(AuthError::Validation(
                "send token_hash, or email and token".into(),
            )));
        }
    };
    let client = client(&headers, peer);
    let verified = verify_audited(&state, proof, &client, &audit, &body.kind).await;
    let (session, _) = verified.map_err(auth_error)?;
    super::token::respond(&state, &headers, session).await
}

/// Spends the proof and records the outcome in the audit log.
async fn verify_audited(
    state: &AppState,
    proof: Proof<'_>,
    client: &gatehouse_auth::Client,
    audit: &Audit,
    kind: &str,
) -> Result<(gatehouse_auth::Session, String), AuthError> {
    let verified = state
        .auth()
        .verify(state.signing_keys(), proof, client)
        .await;
    audit
        .outcome(
            "verify",
            &verified,
            |(session, _)| Some(session.user.id.clone()),
            json!({"type": kind}),
        )
        .await;
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
    let (target, fragment) = match outcome {
        Ok((session, redirect_to)) => {
            let fragment = form_urlencoded::Serializer::new(String::new())
                .append_pair("access_token", &session.access_token)
                .append_pair("expires_at", &session.expires_at.to_string())
                .append_pair("expires_in", &session.expires_in.to_string())
                .append_pair("refresh_token", &session.refresh_token)
                .append_pair("token_type", "bearer")
                .append_pair("type", &link.kind)
                .finish();
            (redirect_to, fragment)
        }
        Err(error) => {
            let fragment = form_urlencoded::Serializer::new(String::new())
                .append_pair("error", "access_denied")
                .append_pair("error_code", error.code())
                .append_pair("error_description", &error.to_string())
                .finish();
            (state.auth().settings().site_url.clone(), fragment)
        }
    };
    Ok(Redirection::to(&format!("{target}#{fragment}")).into_response())
}

//! `/auth/v1/factors[/{id}[/challenge|/verify]]` (the signed-in user's second
//! factors, as supabase-js's `auth.mfa` calls them) and the admin API's
//! `/auth/v1/admin/users/{id}/factors[/{factor_id}]`.

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::response::Response;
use gatehouse_auth::AuthError;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, SignedIn, auth_error, client};
use crate::{ApiError, AppState, Audit, ClientIp};

#[derive(Deserialize)]
pub struct Enrolment {
    factor_type: Option<String>,
    friendly_name: Option<String>,
    issuer: Option<String>,
}

/// `POST /auth/v1/factors`: TOTP only; phone and WebAuthn answer as GoTrue
/// does when they are turned off.
pub async fn enrol(
    State(state): State<AppState>,
    SignedIn(claims): SignedIn,
    audit: Audit,
    Json(body): Json<Enrolment>,
) -> Result<Json<Value>, ApiError> {
    let enrolled = match body.factor_type.as_deref() {
        Some("totp") => {
            state
                .auth()
                .enrol_totp(
                    &claims,
                    body.friendly_name.as_deref(),
                    body.issuer.as_deref(),
                )
                .await
        }
        Some("phone") => Err(AuthError::MfaDisabled("mfa_phone_enroll_not_enabled")),
        Some("webauthn") => Err(AuthError::MfaDisabled("mfa_webauthn_enroll_not_enabled")),
        _ => Err(AuthError::Validation(
            "factor_type needs to be totp, phone, or webauthn".into(),
        )),
    };
    let detail = match &enrolled {
        Ok(enrolled) => json!({"factor_id": enrolled.factor.id}),
        Err(_) => json!({}),
    };
    audit
        .outcome_by(
            "mfa_enroll",
            &enrolled,
            Some(claims.subject().to_owned()),
            detail,
        )
        .await;
    Ok(Json(crate::wire::enrolled(&enrolled.map_err(auth_error)?)))
}

/// `POST /auth/v1/factors/{id}/challenge`.
pub async fn challenge(
    State(state): State<AppState>,
    SignedIn(claims): SignedIn,
    audit: Audit,
    peer: Extension<ClientIp>,
    headers: HeaderMap,
    Path(factor_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let client = client(&headers, peer);
    let challenge = state
        .auth()
        .challenge_factor(&claims, &factor_id, &client)
        .await;
    audit
        .outcome_by(
            "mfa_challenge",
            &challenge,
            Some(claims.subject().to_owned()),
            json!({"factor_id": factor_id}),
        )
        .await;
    Ok(Json(crate::wire::challenge(
        &challenge.map_err(auth_error)?,
    )))
}

#[derive(Deserialize)]
pub struct Answer {
    challenge_id: Option<String>,
    code: Option<String>,
}

/// `POST /auth/v1/factors/{id}/verify`: a new session at `aal2`.
pub async fn verify(
    State(state): State<AppState>,
    SignedIn(claims): SignedIn,
    audit: Audit,
    peer: Extension<ClientIp>,
    headers: HeaderMap,
    Path(factor_id): Path<String>,
    Json(answer): Json<Answer>,
) -> Result<Response, ApiError> {
    let client = client(&headers, peer);
    let (Some(challenge_id), Some(code)) =
        (answer.challenge_id, answer.code.filter(|c| !c.is_empty()))
    else {
        return Err(auth_error(AuthError::Validation(
            "challenge_id and a non-empty code are required".into(),
        )));
    };
    let session = state
        .auth()
        .verify_factor(
            state.signing_keys(),
            &claims,
            (&factor_id, &challenge_id, &code),
            &client,
        )
        .await;
    audit
        .outcome_by(
            "mfa_verify",
            &session,
            Some(claims.subject().to_owned()),
            json!({"factor_id": factor_id, "challenge_id": challenge_id}),
        )
        .await;
    super::token::respond(&state, &headers, session.map_err(auth_error)?).await
}

/// `DELETE /auth/v1/factors/{id}`.
pub async fn unenrol(
    State(state): State<AppState>,
    SignedIn(claims): SignedIn,
    audit: Audit,
    Path(factor_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let removed = state.auth().unenrol_factor(&claims, &factor_id).await;
    audit
        .outcome_by(
            "mfa_unenroll",
            &removed,
            Some(claims.subject().to_owned()),
            json!({"factor_id": factor_id}),
        )
        .await;
    let removed = removed.map_err(auth_error)?;
    Ok(Json(json!({"id": removed.id})))
}

/// `GET /auth/v1/admin/users/{id}/factors`.
pub async fn admin_list(
    State(state): State<AppState>,
    _: Admin,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let factors = state
        .auth()
        .admin_factors(&user_id)
        .await
        .map_err(auth_error)?;
    Ok(Json(Value::Array(
        factors.iter().map(crate::wire::factor).collect(),
    )))
}

/// `DELETE /auth/v1/admin/users/{id}/factors/{factor_id}`: answers with the factor.
pub async fn admin_delete(
    State(state): State<AppState>,
    _: Admin,
    audit: Audit,
    Path((user_id, factor_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let removed = state.auth().admin_delete_factor(&user_id, &factor_id).await;
    audit
        .outcome_by(
            "admin_mfa_factor_deleted",
            &removed,
            Some("service".into()),
            json!({"user_id": user_id, "factor_id": factor_id}),
        )
        .await;
    Ok(Json(crate::wire::factor(&removed.map_err(auth_error)?)))
}

//! `/auth/v1`: Supabase Auth's endpoints, one file each, and what they share:
//! the mapping of `AuthError` to Supabase's status and `error_code`, the
//! signed-in user extractor, and the request's client facts.

pub mod admin_audit;
pub mod admin_users;
pub mod factors;
pub mod generate_link;
pub mod identities;
pub mod logout;
pub mod otp;
pub mod recover;
pub mod settings;
pub mod signup;
pub mod token;
pub mod user;
pub mod verify;

use axum::Extension;

use crate::ClientIp;
use gatehouse_auth::{AuthError, Client};
use http::{HeaderMap, StatusCode, header};

use crate::ApiError;

pub fn auth_error(error: AuthError) -> ApiError {
    let status = match &error {
        AuthError::InvalidCredentials
        | AuthError::EmailNotConfirmed
        | AuthError::Validation(_)
        | AuthError::RefreshTokenNotFound
        | AuthError::RefreshTokenAlreadyUsed
        | AuthError::CurrentPasswordRequired
        | AuthError::CurrentPasswordInvalid
        | AuthError::BadOAuthState
        | AuthError::ProviderRefused
        | AuthError::FlowStateInvalid
        | AuthError::CodeVerifierMismatch => StatusCode::BAD_REQUEST,
        AuthError::ProviderUnavailable => StatusCode::BAD_GATEWAY,
        AuthError::WeakPassword(reason, _) => {
            let reasons = serde_json::json!({"weak_password": {"reasons": [reason]}});
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                error.code(),
                error.to_string(),
            )
            .with_details(reasons);
        }
        AuthError::UserAlreadyExists
        | AuthError::FactorNameConflict(_)
        | AuthError::TooManyFactors
        | AuthError::UnenrolNeedsAal2
        | AuthError::IdentityAlreadyExists
        | AuthError::SingleIdentity
        | AuthError::ChallengeNotFound
        | AuthError::ChallengeMismatch
        | AuthError::ChallengeExpired
        | AuthError::FactorCodeInvalid
        | AuthError::MfaDisabled(_)
        | AuthError::EmailExists
        | AuthError::ReauthenticationInvalid
        | AuthError::PasswordTooLong
        | AuthError::SignupDisabled
        | AuthError::AnonymousDisabled => StatusCode::UNPROCESSABLE_ENTITY,
        AuthError::SessionNotFound
        | AuthError::AnonymousNotAllowed
        | AuthError::EnrolNeedsAal2
        | AuthError::UserBanned
        | AuthError::OtpInvalid
        | AuthError::CsrfFailed => StatusCode::FORBIDDEN,
        AuthError::UserNotFound | AuthError::FactorNotFound | AuthError::IdentityNotFound => {
            StatusCode::NOT_FOUND
        }
        AuthError::Throttled(wait) | AuthError::Locked(wait) => {
            return ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                error.code(),
                error.to_string(),
            )
            .with_retry_after(*wait);
        }
        AuthError::Config(_) | AuthError::Internal(_) | AuthError::Database(_) => {
            tracing::error!(%error, "auth request failed");
            return ApiError::internal();
        }
    };
    ApiError::new(status, error.code(), error.to_string())
}

/// 401 for a missing or unacceptable token, with the RFC 6750 challenge.
pub fn invalid_token(message: &'static str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "bad_jwt", message).with_challenge()
}

/// The URL fragment that hands a session to the app (the implicit flow).
pub fn session_fragment(session: &gatehouse_auth::Session, kind: Option<&str>) -> String {
    let mut fragment = form_urlencoded::Serializer::new(String::new());
    fragment
        .append_pair("access_token", &session.access_token)
        .append_pair("expires_at", &session.expires_at.to_string())
        .append_pair("expires_in", &session.expires_in.to_string())
        .append_pair("refresh_token", &session.refresh_token)
        .append_pair("token_type", "bearer");
    if let Some(tokens) = &session.provider_tokens {
        fragment.append_pair("provider_token", &tokens.access_token);
        if let Some(refresh) = &tokens.refresh_token {
            fragment.append_pair("provider_refresh_token", refresh);
        }
    }
    if let Some(kind) = kind {
        fragment.append_pair("type", kind);
    }
    fragment.finish()
}

/// The URL fragment that tells the app a redirect flow failed.
pub fn error_fragment(error: &AuthError) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("error", "access_denied")
        .append_pair("error_code", error.code())
        .append_pair("error_description", &error.to_string())
        .finish()
}

/// A redirect back to the app; a target that cannot be a header (stored
/// before redirects were checked) falls back to the site.
pub fn back_to_app(state: &crate::AppState, location: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    let location = match http::HeaderValue::from_str(&location) {
        Ok(_) => location,
        Err(_) => state.auth().settings().site_url.clone(),
    };
    axum::response::Redirect::to(&location).into_response()
}

/// `?redirect_to=` on the endpoints that send links.
#[derive(serde::Deserialize)]
pub struct Redirect {
    pub redirect_to: Option<String>,
}

pub use crate::identity::SignedIn;

pub use crate::api_key::Admin;

/// The user agent and address recorded on a session.
pub fn client(headers: &HeaderMap, Extension(ClientIp(ip)): Extension<ClientIp>) -> Client {
    Client {
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(512).collect()),
        ip: Some(ip.to_string()),
    }
}

//! `/auth/v1`: Supabase Auth's endpoints, one file each, and what they share:
//! the mapping of `AuthError` to Supabase's status and `error_code`, the
//! signed-in user extractor, and the request's client facts.

pub mod admin_audit;
pub mod admin_users;
pub mod factors;
pub mod generate_link;
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
        | AuthError::CurrentPasswordInvalid => StatusCode::BAD_REQUEST,
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
        AuthError::UserNotFound | AuthError::FactorNotFound => StatusCode::NOT_FOUND,
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

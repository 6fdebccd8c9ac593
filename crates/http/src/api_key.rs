//! The `apikey` header decides which app is calling; the bearer token is read
//! here too, once (see `identity`). Everything under the API
//! surfaces (auth, rest, storage) needs one unless it is in [`PUBLIC`]; routes elsewhere (health) are
//! open. Handlers that need a caller take [`ApiCaller`], which exists only when
//! a key matched.

use axum::extract::{FromRequestParts, OptionalFromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use gatehouse_keys::PresentedKey;
use http::StatusCode;
use http::request::Parts;

use crate::{ApiError, AppState, Surface};

/// Paths under the keyed prefixes that anyone may read: browsers navigate to
/// the email links and the provider sign-in legs without headers of their own.
const PUBLIC: &[&str] = &[
    "/auth/v1/.well-known/jwks.json",
    "/auth/v1/verify",
    "/auth/v1/authorize",
    "/auth/v1/callback",
];

/// The request's API key, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiCaller(pub PresentedKey);

/// Storage routes whose URL is the permission (a public bucket, a signed token):
/// they are fetched by `<img src>` and plain links, without an API key. Routes
/// beside them that need a caller still ask for one through their extractors.
const OWN_CAPABILITY: &[&str] = &[
    "/storage/v1/object/public/",
    "/storage/v1/object/info/public/",
    "/storage/v1/object/sign/",
    "/storage/v1/object/upload/sign/",
];

fn needs_key(path: &str) -> bool {
    Surface::of(path) != Surface::Plain
        && !PUBLIC.contains(&path)
        && !OWN_CAPABILITY.iter().any(|prefix| path.starts_with(prefix))
}

fn missing() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "no_api_key",
        "No API key found in request.",
    )
}

fn invalid() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
        "Invalid API key.",
    )
}

pub async fn identify<F: Future<Output = Response>>(
    state: &AppState,
    mut request: Request,
    next: impl FnOnce(Request) -> F,
) -> Response {
    let presented = request.headers().get("apikey").map(|value| value.to_str());
    let caller = match presented {
        Some(Ok(key)) => match state.api_keys().identify(key) {
            Some(key) => Some(ApiCaller(key)),
            None => return invalid().into_response(),
        },
        Some(Err(_)) => return invalid().into_response(),
        None => None,
    };
    match caller {
        Some(caller) => {
            request.extensions_mut().insert(caller);
        }
        None if needs_key(request.uri().path()) => return missing().into_response(),
        None => {}
    }
    // Only the API surfaces have callers: a token sent elsewhere (health,
    // metrics) costs no verification.
    if Surface::of(request.uri().path()) != Surface::Plain {
        let bearer = crate::identity::read_bearer(request.headers(), state);
        request.extensions_mut().insert(bearer);
    }
    next(request).await
}

impl<S: Send + Sync> FromRequestParts<S> for ApiCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<ApiCaller>()
            .copied()
            .ok_or_else(missing)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for ApiCaller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<ApiCaller>().copied())
    }
}

/// The secret key: the admin APIs' only credential (`/auth/v1/admin/*`,
/// `/admin/v1/*`).
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ApiCaller(key) =
            <ApiCaller as FromRequestParts<AppState>>::from_request_parts(parts, state).await?;
        match key.role() {
            gatehouse_keys::ApiRole::Service => Ok(Admin),
            gatehouse_keys::ApiRole::Anon => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "not_admin",
                "User not allowed: the admin API needs the secret key",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::needs_key;

    #[test]
    fn api_prefixes_need_a_key_except_public_paths() {
        for path in [
            "/auth/v1/user",
            "/rest/v1/orders",
            "/storage/v1/object/b/x",
            "/rest/v1",
        ] {
            assert!(needs_key(path), "{path}");
        }
        for path in [
            "/health",
            "/auth/v1/.well-known/jwks.json",
            "/auth/v1/authorize",
            "/auth/v1/callback",
            "/rest/v10",
            "/",
            "/storage/v1/object/public/avatars/a.png",
            "/storage/v1/object/sign/avatars/a.png",
        ] {
            assert!(!needs_key(path), "{path}");
        }
    }
}

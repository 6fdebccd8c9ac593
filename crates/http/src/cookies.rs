//! The browser side of cookie sessions: setting and clearing the `__Host-`
//! cookies, and the CSRF defence for unsafe requests they authenticate (an
//! allowed `Origin`, no `Sec-Fetch-Site: cross-site`, and the session's token in
//! `X-CSRF-Token`; the token itself is checked by `Auth::cookie_claims`).

use gatehouse_auth::{AuthError, CookieSecrets};
use gatehouse_keys::VerifiedClaims;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, header};

use crate::AppState;
use crate::routes::auth::auth_error;
use crate::{ApiError, headers};

pub const SESSION: &str = "__Host-gh-session";
pub const CSRF: &str = "__Host-gh-csrf";
/// Binds a provider sign-in to the browser that began it, for its ten
/// minutes: `__Host-gh-oauth-<flow key>`, one per flow.
const OAUTH_FLOW: &str = "__Host-gh-oauth-";

/// The client asked for a cookie session, and they are on.
pub fn wanted(state: &AppState, request: &HeaderMap) -> bool {
    state.auth().settings().cookie_sessions
        && request
            .get("x-use-cookie")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
}

fn cookie(name: &str, value: &str, http_only: bool, max_age: Option<u64>) -> Option<HeaderValue> {
    let mut text = format!("{name}={value}; Path=/; Secure; SameSite=Lax");
    if http_only {
        text.push_str("; HttpOnly");
    }
    if let Some(seconds) = max_age {
        text.push_str(&format!("; Max-Age={seconds}"));
    }
    HeaderValue::from_str(&text).ok()
}

pub fn set(response: &mut HeaderMap, secrets: &CookieSecrets) {
    response.extend(cookie(SESSION, &secrets.session, true, None).map(|v| (header::SET_COOKIE, v)));
    response.extend(cookie(CSRF, &secrets.csrf, false, None).map(|v| (header::SET_COOKIE, v)));
}

pub fn clear(response: &mut HeaderMap) {
    for (name, http_only) in [(SESSION, true), (CSRF, false)] {
        response.extend(cookie(name, "", http_only, Some(0)).map(|v| (header::SET_COOKIE, v)));
    }
}

/// The session cookie's value, if the request carries one.
pub fn session(request: &HeaderMap) -> Option<&str> {
    named(request, SESSION)
}

fn named<'a>(request: &'a HeaderMap, name: &str) -> Option<&'a str> {
    request
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
}

/// Sets (or with `None`, clears) the provider sign-in's browser binding.
/// `SameSite=None`: providers answering with `response_mode=form_post`
/// (Apple) come back by a cross-site POST, which a Lax cookie would miss; it
/// proves nothing alone (only with its flow's state), so it needs no more.
pub fn set_oauth_flow(response: &mut HeaderMap, flow_key: &str, secret: Option<&str>) {
    let max_age = if secret.is_some() { 600 } else { 0 };
    let text = format!(
        "{OAUTH_FLOW}{flow_key}={}; Path=/; Secure; SameSite=None; HttpOnly; Max-Age={max_age}",
        secret.unwrap_or_default()
    );
    response.extend(
        HeaderValue::from_str(&text)
            .ok()
            .map(|v| (header::SET_COOKIE, v)),
    );
}

/// The browser binding of the flow `flow_key` names, if the request carries it.
pub fn oauth_flow<'a>(request: &'a HeaderMap, flow_key: &str) -> Option<&'a str> {
    named(request, &format!("{OAUTH_FLOW}{flow_key}"))
}

fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The caller behind a session cookie, with the CSRF defence for unsafe methods.
pub async fn claims(
    parts: &Parts,
    state: &AppState,
    cookie: &str,
) -> Result<VerifiedClaims, ApiError> {
    let unsafe_method = is_unsafe(&parts.method);
    if unsafe_method {
        let cross_site = parts
            .headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
        let public_origin = state
            .token_rules()
            .issuer
            .trim_end_matches("/auth/v1")
            .to_owned();
        let origin_ok = parts.headers.get(header::ORIGIN).is_some_and(|origin| {
            origin.as_bytes() == public_origin.as_bytes()
                || headers::origin_allowed(&state.settings().cors, origin)
        });
        if cross_site || !origin_ok {
            return Err(auth_error(AuthError::CsrfFailed));
        }
    }
    let csrf = parts
        .headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok());
    state
        .auth()
        .cookie_claims(
            state.signing_keys(),
            state.token_rules(),
            cookie,
            csrf,
            unsafe_method,
        )
        .await
        .map_err(auth_error)
}

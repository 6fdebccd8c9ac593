//! Sign-in through other providers: `/authorize` and `/callback` (the browser
//! legs of supabase-js's `signInWithOAuth`, implicit or PKCE), and the
//! signed-in user's `/user/identities` (`linkIdentity`, `unlinkIdentity`).

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form, Json};
use gatehouse_auth::audit::Event;
use gatehouse_auth::{Arrival, AuthError, Failed, oauth::Challenge};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{SignedIn, auth_error, back_to_app, client, error_fragment, session_fragment};
use crate::{ApiError, AppState, Audit, ClientIp};

#[derive(Deserialize)]
pub struct Authorize {
    provider: Option<String>,
    redirect_to: Option<String>,
    scopes: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    skip_http_redirect: Option<bool>,
}

impl Authorize {
    fn challenge(&self) -> Option<Challenge<'_>> {
        Some(Challenge {
            code_challenge: self.code_challenge.as_deref().filter(|c| !c.is_empty())?,
            method: self.code_challenge_method.as_deref().unwrap_or("s256"),
        })
    }
}

/// Where providers send browsers back.
fn callback_url(state: &AppState) -> String {
    format!("{}/callback", state.token_rules().issuer)
}

async fn begin(
    state: &AppState,
    query: &Authorize,
    linking: Option<&gatehouse_keys::VerifiedClaims>,
) -> Result<gatehouse_auth::Begun, ApiError> {
    state
        .auth()
        .begin_provider_sign_in(
            query.provider.as_deref().unwrap_or_default(),
            (query.redirect_to.as_deref(), query.scopes.as_deref()),
            query.challenge(),
            linking,
            &callback_url(state),
        )
        .await
        .map_err(auth_error)
}

/// `GET /auth/v1/authorize`: public (a browser navigates here). Sends the
/// browser on to the provider, with the cookie that binds the flow to it; with
/// `skip_http_redirect=true`, answers the provider's URL as JSON instead.
pub async fn authorize(
    State(state): State<AppState>,
    Query(query): Query<Authorize>,
) -> Result<Response, ApiError> {
    let begun = begin(&state, &query, None).await?;
    let mut headers = HeaderMap::new();
    crate::cookies::set_oauth_flow(
        &mut headers,
        &begun.flow_key,
        begun.browser_secret.as_deref(),
    );
    if query.skip_http_redirect == Some(true) {
        return Ok((headers, Json(json!({"url": begun.provider_url}))).into_response());
    }
    Ok((headers, axum::response::Redirect::to(&begun.provider_url)).into_response())
}

#[derive(Deserialize)]
pub struct Callback {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /auth/v1/callback`.
pub async fn callback_get(
    state: State<AppState>,
    peer: Extension<ClientIp>,
    audit: Audit,
    headers: HeaderMap,
    Query(callback): Query<Callback>,
) -> Response {
    land(state, peer, audit, headers, callback).await
}

/// `POST /auth/v1/callback`: providers answering with `response_mode=form_post`.
pub async fn callback_post(
    state: State<AppState>,
    peer: Extension<ClientIp>,
    audit: Audit,
    headers: HeaderMap,
    Form(callback): Form<Callback>,
) -> Response {
    land(state, peer, audit, headers, callback).await
}

/// Back at the app: the session in the fragment (implicit) or `?code=`
/// (PKCE); a failure in the fragment's `error*` parameters.
async fn land(
    State(state): State<AppState>,
    peer: Extension<ClientIp>,
    audit: Audit,
    headers: HeaderMap,
    callback: Callback,
) -> Response {
    let client = client(&headers, peer);
    let state_text = callback.state.as_deref().unwrap_or_default();
    let flow_key = gatehouse_auth::oauth::flow_key(state_text);
    let code = match (&callback.code, &callback.error) {
        (Some(code), None) => Ok(code.as_str()),
        _ => {
            let said = callback
                .error_description
                .as_deref()
                .or(callback.error.as_deref());
            tracing::info!(
                provider_said = said.unwrap_or("no code"),
                "a provider sent no code"
            );
            Err(AuthError::ProviderRefused)
        }
    };
    let finished = state
        .auth()
        .finish_provider_sign_in(
            state.signing_keys(),
            (state_text, crate::cookies::oauth_flow(&headers, &flow_key)),
            code,
            (&callback_url(&state), &client),
        )
        .await;
    let mut cleared = HeaderMap::new();
    crate::cookies::set_oauth_flow(&mut cleared, &flow_key, None);
    let location = match finished {
        Ok(landing) => {
            let action = if landing.linked {
                "identity_linked"
            } else {
                "oauth_sign_in"
            };
            audit
                .record(
                    Event::new(action, "success")
                        .by(landing.user_id.clone())
                        .with(json!({"provider": landing.provider})),
                )
                .await;
            match landing.arrival {
                Arrival::Session(session) => format!(
                    "{}#{}",
                    landing.redirect_to,
                    session_fragment(&session, None)
                ),
                Arrival::Code(code) => with_code(&landing.redirect_to, &code),
            }
        }
        Err(Failed { redirect_to, error }) => {
            audit
                .record(Event::new("oauth_sign_in", "failure").with(json!({"error": error.code()})))
                .await;
            format!("{redirect_to}#{}", error_fragment(&error))
        }
    };
    (cleared, back_to_app(&state, location)).into_response()
}

/// `redirect_to` with `code` added to its query.
fn with_code(redirect_to: &str, code: &str) -> String {
    match url::Url::parse(redirect_to) {
        Ok(mut url) => {
            url.query_pairs_mut().append_pair("code", code);
            url.into()
        }
        Err(_) => redirect_to.to_owned(),
    }
}

/// `GET /auth/v1/user/identities/authorize`: as `/authorize`, for the
/// signed-in user linking another provider's account; answers the provider's
/// URL as JSON (supabase-js navigates there itself).
pub async fn link(
    State(state): State<AppState>,
    SignedIn(claims): SignedIn,
    Query(query): Query<Authorize>,
) -> Result<Json<Value>, ApiError> {
    let begun = begin(&state, &query, Some(&claims)).await?;
    Ok(Json(json!({"url": begun.provider_url})))
}

/// `DELETE /auth/v1/user/identities/{id}`.
pub async fn unlink(
    State(state): State<AppState>,
    SignedIn(claims): SignedIn,
    audit: Audit,
    Path(identity_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let unlinked = state.auth().unlink_identity(&claims, &identity_id).await;
    audit
        .outcome_by(
            "identity_unlinked",
            &unlinked,
            Some(claims.subject().to_owned()),
            json!({"identity_id": identity_id}),
        )
        .await;
    unlinked.map_err(auth_error)?;
    Ok(Json(json!({})))
}

use axum::Extension;
use axum::Json;
use axum::extract::{Query, State};

use crate::ClientIp;
use gatehouse_auth::SignUp;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{auth_error, client};
use crate::{ApiCaller, ApiError, AppState, Audit};

#[derive(Deserialize)]
pub struct Body {
    email: Option<String>,
    password: Option<String>,
    data: Option<Value>,
}

/// `POST /auth/v1/signup`: email and password, or nothing for an anonymous user.
pub async fn post(
    State(state): State<AppState>,
    _: ApiCaller,
    peer: Extension<ClientIp>,
    audit: Audit,
    Query(options): Query<super::Redirect>,
    headers: HeaderMap,
    Json(body): Json<Body>,
) -> Result<Json<Value>, ApiError> {
    let client = client(&headers, peer);
    let keys = state.signing_keys();
    let auth = state.auth();
    let answer = match (body.email, body.password) {
        (Some(email), Some(password)) => {
            let signed_up = auth
                .sign_up(
                    keys,
                    &email,
                    &password,
                    body.data,
                    options.redirect_to.as_deref(),
                    &client,
                )
                .await;
            let typed: String = email.trim().to_lowercase().chars().take(254).collect();
            // An unconfirmed sign-up may carry a stand-in id (the address was
            // taken); only a session names a real user.
            let actor = |done: &SignUp| match done {
                SignUp::SignedIn(session) => Some(session.user.id.clone()),
                SignUp::Unconfirmed(_) => None,
            };
            audit
                .outcome("sign_up", &signed_up, actor, json!({"email": typed}))
                .await;
            match signed_up.map_err(auth_error)? {
                SignUp::SignedIn(session) => crate::wire::session(&session),
                SignUp::Unconfirmed(user) => crate::wire::user(&user),
            }
        }
        (None, None) => {
            let session = auth.sign_up_anonymously(keys, body.data, &client).await;
            audit
                .outcome(
                    "sign_up_anonymous",
                    &session,
                    |session| Some(session.user.id.clone()),
                    json!({}),
                )
                .await;
            crate::wire::session(&session.map_err(auth_error)?)
        }
        _ => {
            return Err(auth_error(gatehouse_auth::AuthError::Validation(
                "Signup requires a valid password".into(),
            )));
        }
    };
    Ok(Json(answer))
}

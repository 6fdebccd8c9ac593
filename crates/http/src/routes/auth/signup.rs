use axum::Extension;
use axum::Json;
use axum::extract::{Query, State};

use crate::ClientIp;
use gatehouse_auth::SignUp;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

use super::{auth_error, client};
use crate::{ApiCaller, ApiError, AppState};

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
    Query(options): Query<super::Redirect>,
    headers: HeaderMap,
    Json(body): Json<Body>,
) -> Result<Json<Value>, ApiError> {
    let client = client(&headers, peer);
    let keys = state.signing_keys();
    let auth = state.auth();
    let answer = match (body.email, body.password) {
        (Some(email), Some(password)) => match auth
            .sign_up(
                keys,
                &email,
                &password,
                body.data,
                options.redirect_to.as_deref(),
                &client,
            )
            .await
        {
            Ok(SignUp::SignedIn(session)) => session.to_json(),
            Ok(SignUp::Unconfirmed(user)) => user.to_json(),
            Err(error) => return Err(auth_error(error)),
        },
        (None, None) => auth
            .sign_up_anonymously(keys, body.data, &client)
            .await
            .map_err(auth_error)?
            .to_json(),
        _ => {
            return Err(auth_error(gatehouse_auth::AuthError::Validation(
                "Signup requires a valid password".into(),
            )));
        }
    };
    Ok(Json(answer))
}

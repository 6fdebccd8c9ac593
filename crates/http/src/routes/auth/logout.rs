use axum::extract::{Query, State};
use gatehouse_auth::{AuthError, Scope};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::{SignedIn, auth_error};
use crate::{ApiError, AppState, Audit};

#[derive(Deserialize)]
pub struct Options {
    scope: Option<String>,
}

/// `POST /auth/v1/logout?scope=global|local|others` (global by default, as in Supabase).
pub async fn post(
    State(state): State<AppState>,
    SignedIn(claims): SignedIn,
    audit: Audit,
    Query(options): Query<Options>,
) -> Result<(StatusCode, HeaderMap), ApiError> {
    let scope = match options.scope.as_deref() {
        None | Some("global") => Scope::Global,
        Some("local") => Scope::Local,
        Some("others") => Scope::Others,
        Some(other) => {
            return Err(auth_error(AuthError::Validation(format!(
                "unknown scope {other:?}"
            ))));
        }
    };
    let signed_out = state.auth().sign_out(&claims, scope).await;
    let scope_name = options.scope.as_deref().unwrap_or("global");
    audit
        .outcome(
            "sign_out",
            &signed_out,
            |()| Some(claims.subject().to_owned()),
            serde_json::json!({"scope": scope_name}),
        )
        .await;
    signed_out.map_err(auth_error)?;
    // Clearing cookies a bearer client never had is harmless.
    let mut headers = HeaderMap::new();
    crate::cookies::clear(&mut headers);
    Ok((StatusCode::NO_CONTENT, headers))
}

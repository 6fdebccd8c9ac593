//! `POST /rest/v1/rpc/<name>`: a declared function, called as PostgREST calls
//! a database function (`supabase.rpc(name, args)`): the body is the named
//! arguments, the answer is what the function returned.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::{Extension, Json};
use gatehouse_functions::{CallError, Failure};
use gatehouse_rest::Caller;
use http::StatusCode;
use serde_json::Value;

use crate::{ApiError, AppState, Identity, RequestId};

pub async fn post(
    State(state): State<AppState>,
    Identity(caller): Identity,
    Path(name): Path<String>,
    request_id: Option<Extension<RequestId>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request_id = request_id.map(|Extension(id)| id);
    let request_id = request_id.as_ref().map_or("", RequestId::as_str);
    let args = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "PGRST102",
                "the body is not valid JSON",
            )
        })?
    };
    state
        .functions()
        .call(&caller, (&name, request_id), args, None)
        .await
        .map(Json)
        .map_err(|error| call_error(error, &caller, &name))
}

/// `GET /rest/v1/rpc/<name>?a=1`: a `stable` function, its arguments from the
/// query string typed as declared (`supabase.rpc(name, args, { get: true })`).
pub async fn get(
    State(state): State<AppState>,
    Identity(caller): Identity,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    request_id: Option<Extension<RequestId>>,
) -> Result<Json<Value>, ApiError> {
    let request_id = request_id.map(|Extension(id)| id);
    let request_id = request_id.as_ref().map_or("", RequestId::as_str);
    let query = query.unwrap_or_default();
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    let functions = state.functions();
    let run = async {
        let args = functions.query_args(&name, &pairs)?;
        functions
            .call(&caller, (&name, request_id), args, None)
            .await
    };
    run.await
        .map(Json)
        .map_err(|error| call_error(error, &caller, &name))
}

/// PostgREST's shapes: a thrown error is the function's own message under
/// `P0001`; running out of time or memory is told only generically.
pub(crate) fn call_error(error: CallError, caller: &Caller, name: &str) -> ApiError {
    let denied = crate::routes::denied_status(caller);
    let (status, code) = match &error {
        CallError::Unknown(_) => (StatusCode::NOT_FOUND, "PGRST202"),
        CallError::Denied(_) => (denied, "42501"),
        CallError::Argument { .. } => (StatusCode::BAD_REQUEST, "22P02"),
        CallError::NotAnObject => (StatusCode::BAD_REQUEST, "PGRST102"),
        CallError::NotStable(_) => (StatusCode::METHOD_NOT_ALLOWED, "PGRST101"),
        CallError::Failed(Failure::Thrown(_)) => (StatusCode::BAD_REQUEST, "P0001"),
        CallError::WriteExpired => {
            tracing::warn!(function = name, error = %error, "a function call failed");
            return ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "57014",
                "The function ran past its time limit.",
            );
        }
        CallError::Commit(detail) => {
            tracing::error!(function = name, error = %detail, "a function's writes could not be committed");
            return ApiError::internal();
        }
        CallError::Failed(failure) => {
            tracing::warn!(function = name, error = %failure, "a function call failed");
            return match failure {
                Failure::TimedOut => ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "57014",
                    "The function ran past its time limit.",
                ),
                Failure::OutOfMemory => ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "53200",
                    "The function ran out of memory.",
                ),
                _ => ApiError::internal(),
            };
        }
    };
    ApiError::new(status, code, error.to_string())
}

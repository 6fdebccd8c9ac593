//! `POST /rest/v1/rpc/<name>`: a declared function, called as PostgREST calls
//! a database function (`supabase.rpc(name, args)`): the body is the named
//! arguments, the answer is what the function returned.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use gatehouse_functions::{CallError, Failure};
use gatehouse_rest::{Caller, RestError};
use http::{HeaderMap, StatusCode};
use serde_json::Value;

use crate::routes::rest_table::{
    Representation, parsed, prefer, query_pairs, ranged_rows, rest_error, rows_response,
};
use crate::{ApiError, AppState, Identity, RequestId};

pub async fn post(
    State(state): State<AppState>,
    Identity(caller): Identity,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    request_id: Option<Extension<RequestId>>,
    body: Bytes,
) -> Result<Response, ApiError> {
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
    let request = parsed(&query_pairs(query))?;
    let result = state
        .functions()
        .call(&caller, (&name, request_id), args, None)
        .await
        .map_err(|error| call_error(error, &caller, &name))?;
    answer(result, &request, &headers, &caller)
}

/// `GET /rest/v1/rpc/<name>?a=1`: a `stable` function, its arguments from the
/// query string typed as declared (`supabase.rpc(name, args, { get: true })`);
/// the other parameters apply to its rows, as with POST.
pub async fn get(
    State(state): State<AppState>,
    Identity(caller): Identity,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    request_id: Option<Extension<RequestId>>,
) -> Result<Response, ApiError> {
    let request_id = request_id.map(|Extension(id)| id);
    let request_id = request_id.as_ref().map_or("", RequestId::as_str);
    let functions = state.functions();
    let (args, rest) = functions
        .query_args(&name, query_pairs(query))
        .map_err(|error| call_error(error, &caller, &name))?;
    let request = parsed(&rest)?;
    let result = functions
        .call(&caller, (&name, request_id), args, None)
        .await
        .map_err(|error| call_error(error, &caller, &name))?;
    answer(result, &request, &headers, &caller)
}

/// What the function returned, as PostgREST answers a function call: as is,
/// unless the request filters, orders, pages, selects, counts or asks for one
/// object, which apply to a returned list of objects as to a table's rows.
fn answer(
    result: Value,
    request: &gatehouse_query::Request,
    headers: &HeaderMap,
    caller: &Caller,
) -> Result<Response, ApiError> {
    let representation = Representation::of(headers)?;
    let refused = |error: RestError| rest_error(error, caller);
    let count = prefer(headers).count.is_some();
    let shapes = gatehouse_functions::asks_anything(request) || count;
    match representation {
        Representation::Array if !shapes => return Ok(Json(result).into_response()),
        // A function returning one object answers it as the object asked for.
        Representation::Object if !shapes && !result.is_array() => {
            return rows_response(StatusCode::OK, vec![result], representation).map_err(refused);
        }
        _ => {}
    }
    let shaped = gatehouse_functions::shape(result, request)
        .map_err(|error| refused(RestError::Unsupported(error.to_string())))?;
    let total = count.then_some(shaped.total as u64);
    ranged_rows(shaped.rows, (shaped.offset as u64, total), representation).map_err(refused)
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
                Failure::Busy => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "PGRST003",
                    "Too many function calls at once; try again shortly.",
                )
                .with_retry_after(std::time::Duration::from_secs(1)),
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

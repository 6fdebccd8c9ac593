//! `/rest/v1/{table}`: PostgREST's table endpoint, for GET, POST, PATCH and DELETE.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use gatehouse_rest::{Caller, Count, ReadOptions, Resolution, RestError, WriteOptions};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::Value as Json;

use crate::{ApiError, AppState, Identity};

const SINGLE_OBJECT: &str = "application/vnd.pgrst.object+json";

/// The query string's decoded pairs.
pub(crate) fn query_pairs(query: Option<String>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// PostgREST's query grammar read from the pairs, a 400 when malformed.
pub(crate) fn parsed(pairs: &[(String, String)]) -> Result<gatehouse_query::Request, ApiError> {
    gatehouse_query::parse(pairs)
        .map_err(|error| rest_error(RestError::Query(error), &Caller::anon()))
}

fn request(query: Option<String>) -> Result<gatehouse_query::Request, ApiError> {
    parsed(&query_pairs(query))
}

/// PostgREST's status for each failure (the code is the error's own); the
/// caller decides 401 or 403.
pub(crate) fn rest_error(error: RestError, caller: &Caller) -> ApiError {
    let status = match &error {
        RestError::UnknownTable(_) => StatusCode::NOT_FOUND,
        RestError::TableDenied(_) | RestError::ColumnDenied { .. } => {
            crate::routes::denied_status(caller)
        }
        RestError::CheckFailed(_) => StatusCode::FORBIDDEN,
        // A safety rule of this server rather than a malformed request: 403, so
        // that a request its OpenAPI document calls valid is never a 400.
        RestError::Unfiltered(_) => StatusCode::FORBIDDEN,
        RestError::UnknownRole => StatusCode::UNAUTHORIZED,
        RestError::NotSingular(_) => StatusCode::NOT_ACCEPTABLE,
        RestError::Conflict | RestError::ForeignKey => StatusCode::CONFLICT,
        RestError::Database(detail) => {
            tracing::error!(error = %detail, "data request failed in the database");
            return ApiError::internal();
        }
        RestError::TriggerFailed(detail) => {
            tracing::error!(error = %detail, "a trigger failed");
            return ApiError::internal();
        }
        _ => StatusCode::BAD_REQUEST,
    };
    let code = error.code().unwrap_or("PGRST000");
    ApiError::new(status, code, error.to_string())
}

pub(crate) struct Prefer {
    representation: bool,
    pub(crate) count: Option<Count>,
    resolution: Option<Resolution>,
}

impl Prefer {
    fn write(&self) -> WriteOptions {
        WriteOptions {
            representation: self.representation,
            resolution: self.resolution,
        }
    }
}

pub(crate) fn prefer(headers: &HeaderMap) -> Prefer {
    let mut prefer = Prefer {
        representation: false,
        count: None,
        resolution: None,
    };
    for value in headers.get_all("prefer") {
        for item in value.to_str().unwrap_or_default().split(',') {
            match item.trim() {
                "return=representation" => prefer.representation = true,
                "count=exact" | "count=planned" | "count=estimated" => {
                    prefer.count = Some(Count::Exact)
                }
                "resolution=merge-duplicates" => {
                    prefer.resolution = Some(Resolution::MergeDuplicates)
                }
                "resolution=ignore-duplicates" => {
                    prefer.resolution = Some(Resolution::IgnoreDuplicates)
                }
                _ => {}
            }
        }
    }
    prefer
}

/// How rows go back, by `Accept`: PostgREST's media types.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Representation {
    Array,
    /// `application/vnd.pgrst.object+json`: exactly one row, as an object.
    Object,
    Csv,
}

impl Representation {
    /// The first media type in `Accept` that we produce; none at all is 406.
    pub(crate) fn of(headers: &HeaderMap) -> Result<Self, ApiError> {
        let Some(accept) = headers.get(header::ACCEPT) else {
            return Ok(Self::Array);
        };
        let accept = accept.to_str().unwrap_or_default();
        let chosen = accept.split(',').find_map(|item| {
            let mut parts = item.split(';');
            let media = parts.next().unwrap_or_default().trim();
            // `q=0` means "not this one".
            let refused = parts.any(|param| {
                param
                    .trim()
                    .strip_prefix("q=")
                    .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
            });
            if refused {
                return None;
            }
            match media.to_ascii_lowercase().as_str() {
                SINGLE_OBJECT => Some(Self::Object),
                "text/csv" => Some(Self::Csv),
                "application/json" | "application/*" | "*/*" | "" => Some(Self::Array),
                _ => None,
            }
        });
        chosen.ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                "PGRST107",
                "None of these media types are available.",
            )
        })
    }
}

/// `Range: 0-9` (or `0-`) as (first, last).
fn range(headers: &HeaderMap) -> Result<Option<(u64, Option<u64>)>, ApiError> {
    let Some(value) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "PGRST103",
            "Requested range not satisfiable",
        )
    };
    let text = value.to_str().map_err(|_| invalid())?;
    let (first, last) = text.trim().split_once('-').ok_or_else(invalid)?;
    let first: u64 = first.trim().parse().map_err(|_| invalid())?;
    let last = match last.trim() {
        "" => None,
        last => Some(last.parse::<u64>().map_err(|_| invalid())?),
    };
    let too_far = |n: u64| n > gatehouse_query::MAX_ROW_NUMBER;
    if last.is_some_and(|last| last < first || too_far(last)) || too_far(first) {
        return Err(invalid());
    }
    Ok(Some((first, last)))
}

/// A page of rows with its `Content-Range` (`first-last/total`, `*` for an
/// uncounted total), as PostgREST answers a read.
pub(crate) fn ranged_rows(
    rows: Vec<Json>,
    (offset, total): (u64, Option<u64>),
    representation: Representation,
) -> Result<Response, RestError> {
    let shown = rows.len() as u64;
    let total = total.map_or("*".to_owned(), |t| t.to_string());
    let content_range = if shown == 0 {
        format!("*/{total}")
    } else {
        format!("{offset}-{}/{total}", offset + shown - 1)
    };
    let mut response = rows_response(StatusCode::OK, rows, representation)?;
    if let Ok(value) = HeaderValue::from_str(&content_range) {
        response.headers_mut().insert(header::CONTENT_RANGE, value);
    }
    Ok(response)
}

pub(crate) fn rows_response(
    status: StatusCode,
    rows: Vec<Json>,
    representation: Representation,
) -> Result<Response, RestError> {
    let (content_type, body) = match representation {
        Representation::Object => {
            if rows.len() != 1 {
                return Err(RestError::NotSingular(rows.len()));
            }
            let row = rows.into_iter().next().unwrap_or(Json::Null);
            (SINGLE_OBJECT, row.to_string())
        }
        Representation::Array => ("application/json", Json::Array(rows).to_string()),
        Representation::Csv => ("text/csv; charset=utf-8", crate::wire::csv(&rows)),
    };
    Ok((
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response())
}

fn body_json(headers: &HeaderMap, body: &Bytes) -> Result<Json, RestError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if !content_type.starts_with("application/json") {
        return Err(RestError::Body("send the body as application/json".into()));
    }
    serde_json::from_slice(body).map_err(|_| RestError::Body("the body is not valid JSON".into()))
}

pub async fn get(
    State(state): State<AppState>,
    Identity(caller): Identity,
    Path(table): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let request = request(query)?;
    let representation = Representation::of(&headers)?;
    let prefer = prefer(&headers);
    let options = ReadOptions {
        count: prefer.count,
        range: range(&headers)?,
    };
    let run = async {
        let result = state
            .rest()
            .read(state.db().into(), &caller, &table, &request, options)
            .await?;
        ranged_rows(result.rows, (result.offset, result.total), representation)
    };
    run.await.map_err(|error| rest_error(error, &caller))
}

/// The three writes, which share everything but the call and the statuses.
enum Write {
    Insert,
    Update,
    Delete,
}

async fn write(
    state: &AppState,
    caller: &Caller,
    table: &str,
    query: Option<String>,
    headers: &HeaderMap,
    body: Option<&Bytes>,
    kind: Write,
) -> Result<Response, ApiError> {
    let request = request(query)?;
    let representation = Representation::of(headers)?;
    let prefer = prefer(headers);
    let run = async {
        let json = body.map(|body| body_json(headers, body)).transpose()?;
        let json = json.unwrap_or(Json::Null);
        let (db, rest, options) = (state.db(), state.rest(), prefer.write());
        let (result, with_body, without_body) = match kind {
            Write::Insert => (
                rest.insert(db.into(), caller, table, &request, &json, options)
                    .await?,
                StatusCode::CREATED,
                StatusCode::CREATED,
            ),
            Write::Update => (
                rest.update(db.into(), caller, table, &request, &json, options)
                    .await?,
                StatusCode::OK,
                StatusCode::NO_CONTENT,
            ),
            Write::Delete => (
                rest.delete(db.into(), caller, table, &request, options)
                    .await?,
                StatusCode::OK,
                StatusCode::NO_CONTENT,
            ),
        };
        if prefer.representation {
            rows_response(with_body, result.rows, representation)
        } else {
            Ok(without_body.into_response())
        }
    };
    run.await.map_err(|error| rest_error(error, caller))
}

pub async fn post(
    State(state): State<AppState>,
    Identity(caller): Identity,
    Path(table): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    write(
        &state,
        &caller,
        &table,
        query,
        &headers,
        Some(&body),
        Write::Insert,
    )
    .await
}

pub async fn patch(
    State(state): State<AppState>,
    Identity(caller): Identity,
    Path(table): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    write(
        &state,
        &caller,
        &table,
        query,
        &headers,
        Some(&body),
        Write::Update,
    )
    .await
}

pub async fn delete(
    State(state): State<AppState>,
    Identity(caller): Identity,
    Path(table): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    write(
        &state,
        &caller,
        &table,
        query,
        &headers,
        None,
        Write::Delete,
    )
    .await
}

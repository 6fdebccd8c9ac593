//! `ctx.db` (and a definer's `ctx.admin.db`): the data API from inside a
//! function. The JavaScript side (`db.js`) is a supabase-js-like builder that
//! turns each query into PostgREST's query pairs and options; the host side
//! runs them through `rest`, the same compiler and access decision as
//! `/rest/v1`, so a function cannot show or change for its caller a row the
//! data API would not. Every query of one call runs in the call's transaction.

use std::sync::Arc;

use gatehouse_db::{Database, Executor, Transaction};
use gatehouse_rest::{
    Caller, Count, ReadOptions, Resolution, Rest, RestError, WriteOptions, WriteResult,
};
use serde::Deserialize;
use serde_json::{Value as Json, json};

/// What functions reach the tables through.
#[derive(Clone)]
pub struct Data {
    pub rest: Arc<Rest>,
    pub db: Database,
    /// The secret key's standing, which a `security = "definer"` function's
    /// `ctx.admin.db` acts with (built by the server from the key it holds).
    pub service: Caller,
}

/// The builder's JavaScript: `(run) => ({ from(table) … })`, made into
/// `ctx.db` with the host's `run`.
pub(crate) const BUILDER: &str = include_str!("db.js");

/// One query as the builder sends it.
#[derive(Deserialize)]
struct Query {
    table: String,
    method: Method,
    params: Vec<(String, String)>,
    #[serde(default)]
    body: Json,
    /// `{ count: 'exact' | 'planned' | 'estimated' }`: all answered exactly.
    count: Option<String>,
    /// A write's `.select()`: the written rows come back.
    #[serde(default)]
    representation: bool,
    /// An upsert: `merge` or `ignore` duplicates.
    resolution: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Method {
    Select,
    Insert,
    Update,
    Delete,
}

impl Data {
    /// Runs one query from the builder (JSON in, JSON out) as `caller`, inside
    /// `transaction`, on the calling (blocking) thread: `{data, count, error}`
    /// as supabase-js gives them, the error in PostgREST's shape.
    pub(crate) fn run(
        &self,
        runtime: &tokio::runtime::Handle,
        (transaction, caller): (&Transaction, &Caller),
        query: &str,
        request_id: &str,
    ) -> String {
        let answer = match serde_json::from_str::<Query>(query) {
            Err(_) => json!({"data": null, "error": {"message": "malformed query"}}),
            Ok(query) => match runtime.block_on(self.answer(transaction.into(), caller, &query)) {
                Ok(answer) => answer,
                Err(error) => {
                    if let RestError::Database(detail) = &error {
                        tracing::error!(target: "gatehouse::function", request_id = %request_id, error = %detail, "a function's query failed in the database");
                    }
                    json!({"data": null, "count": null, "error": {
                        "message": error.to_string(),
                        "code": error.code(),
                        "details": null,
                        "hint": null,
                    }})
                }
            },
        };
        answer.to_string()
    }

    async fn answer(
        &self,
        executor: Executor<'_>,
        caller: &Caller,
        query: &Query,
    ) -> Result<Json, RestError> {
        let request = gatehouse_query::parse(&query.params)?;
        let count = query.count.is_some().then_some(Count::Exact);
        let table = query.table.as_str();
        let body = &query.body;
        let options = WriteOptions {
            representation: query.representation,
            resolution: match query.resolution.as_deref() {
                None => None,
                Some("ignore") => Some(Resolution::IgnoreDuplicates),
                Some(_) => Some(Resolution::MergeDuplicates),
            },
        };
        let rest = &self.rest;
        let written = match query.method {
            Method::Select => {
                let options = ReadOptions { count, range: None };
                let read = rest
                    .read(executor, caller, table, &request, options)
                    .await?;
                return Ok(json!({
                    "data": Json::Array(read.rows),
                    "count": read.total,
                    "error": null,
                }));
            }
            Method::Insert => {
                rest.insert(executor, caller, table, &request, body, options)
                    .await?
            }
            Method::Update => {
                rest.update(executor, caller, table, &request, body, options)
                    .await?
            }
            Method::Delete => {
                rest.delete(executor, caller, table, &request, options)
                    .await?
            }
        };
        let WriteResult { affected, rows } = written;
        Ok(json!({
            "data": if query.representation { Json::Array(rows) } else { Json::Null },
            "count": count.map(|_| affected),
            "error": null,
        }))
    }
}

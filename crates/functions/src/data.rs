//! `ctx.db`: the data API from inside a function, as its caller. The JavaScript
//! side (`db.js`) is a supabase-js-like builder that turns each query into
//! PostgREST's query pairs; the host side runs them through `rest`, the same
//! compiler and access decision as `/rest/v1`, so a function cannot show a
//! caller a row the data API would not.

use std::sync::Arc;

use gatehouse_db::Database;
use gatehouse_rest::{Caller, ReadOptions, Rest};
use serde::Deserialize;
use serde_json::{Value as Json, json};

/// What functions reach the tables through.
#[derive(Clone)]
pub struct Data {
    pub rest: Arc<Rest>,
    pub db: Database,
}

/// The builder's JavaScript: `(read) => ({ from(table) … })`, made into
/// `ctx.db` with the host's `read`.
pub(crate) const BUILDER: &str = include_str!("db.js");

/// One query as the builder sends it.
#[derive(Deserialize)]
struct Query {
    table: String,
    params: Vec<(String, String)>,
}

impl Data {
    /// Runs one query from the builder (JSON in, JSON out) as `caller`, on the
    /// calling (blocking) thread: `{"data": rows}` or `{"error": {message}}`.
    pub(crate) fn read(
        &self,
        runtime: &tokio::runtime::Handle,
        caller: &Caller,
        query: &str,
    ) -> String {
        let answer = match serde_json::from_str::<Query>(query) {
            Err(_) => json!({"error": {"message": "malformed query"}}),
            Ok(query) => match gatehouse_query::parse(&query.params) {
                Err(error) => json!({"error": {"message": error.to_string()}}),
                Ok(request) => {
                    let read = self.rest.read(
                        &self.db,
                        caller,
                        &query.table,
                        &request,
                        ReadOptions::default(),
                    );
                    match runtime.block_on(read) {
                        Ok(result) => json!({"data": Json::Array(result.rows)}),
                        Err(error) => json!({"error": {"message": error.to_string()}}),
                    }
                }
            },
        };
        answer.to_string()
    }
}

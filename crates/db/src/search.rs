//! Full-text search on SQLite with PostgreSQL's answers (gatehouse-search):
//! `gatehouse_index_text(language, text)` gives the lexemes a searchable
//! column's FTS5 table keeps (its triggers call it), and
//! `gatehouse_text_search(syntax, language, query, text)` is `@@`, deciding
//! each row the FTS5 prefilter let through.

use std::sync::Arc;

use gatehouse_search::{Document, Language, Query, SearchError, Syntax};
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::{Connection, Result};

pub(crate) fn register(connection: &Connection) -> Result<()> {
    let deterministic = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    connection.create_scalar_function("gatehouse_index_text", 2, deterministic, |context| {
        let language = language(&context.get::<String>(0)?)?;
        let text = context.get::<Option<String>>(1)?;
        Ok(text.map(|text| gatehouse_search::index_text(language, &text)))
    })?;
    connection.create_scalar_function("gatehouse_text_search", 4, deterministic, |context| {
        let Some(text) = context.get::<Option<String>>(3)? else {
            return Ok(None);
        };
        let query = parsed(context)?;
        Ok(Some(
            query.query.matches(&Document::new(query.language, &text)),
        ))
    })?;
    Ok(())
}

/// A query parsed once per statement, kept with what it was parsed from.
struct Parsed {
    from: (String, String, String),
    language: Language,
    query: Query,
}

fn parsed(context: &Context<'_>) -> Result<Arc<Parsed>> {
    let from = (
        context.get::<String>(0)?,
        context.get::<String>(1)?,
        context.get::<String>(2)?,
    );
    if let Some(kept) = context.get_aux::<Parsed>(2)?
        && kept.from == from
    {
        return Ok(kept);
    }
    let syntax = Syntax::from_code(&from.0)
        .ok_or_else(|| failed(SearchError::Unsupported(from.0.clone())))?;
    let language = language(&from.1)?;
    let query = Query::parse(syntax, language, &from.2).map_err(failed)?;
    context.set_aux(
        2,
        Parsed {
            from,
            language,
            query,
        },
    )
}

fn language(name: &str) -> Result<Language> {
    Language::from_name(name).map_err(failed)
}

fn failed(error: SearchError) -> rusqlite::Error {
    rusqlite::Error::UserFunctionError(Box::new(error))
}

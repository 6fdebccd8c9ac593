//! Full-text search with PostgreSQL's meaning, for the databases that lack it.
//!
//! PostgREST's `fts`, `plfts`, `phfts` and `wfts` filters are PostgreSQL's
//! `to_tsvector(config, column) @@ to_tsquery(config, query)` family. On
//! PostgreSQL they run as that; this crate gives SQLite the same answers on
//! the same data: [`Query::parse`] reads the query as PostgreSQL would (also
//! validating it for PostgreSQL, so a malformed query is a 400 on both),
//! [`Query::matches`] evaluates it over a text's lexemes, and
//! [`Query::prefilter`] narrows the rows first through an FTS5 index of
//! [`index_text`].
//!
//! Invariant: pure, total and bounded. Two configurations are served, the ones
//! whose rules this crate carries: `english` (Snowball's English stemmer and
//! stop words) and `simple` (lower-cased words).

mod query;
mod text;

use std::collections::BTreeMap;

use query::{Node, Phrase, Term};

/// A text search configuration, as PostgreSQL names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    English,
    Simple,
}

impl Language {
    pub const ALL: [Language; 2] = [Language::English, Language::Simple];

    /// PostgREST's default, and Supabase's `default_text_search_config`.
    pub const DEFAULT: Language = Language::English;

    pub fn from_name(name: &str) -> Result<Self, SearchError> {
        match name.to_ascii_lowercase().as_str() {
            "english" => Ok(Language::English),
            "simple" => Ok(Language::Simple),
            _ => Err(SearchError::UnknownLanguage(name.to_owned())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Language::English => "english",
            Language::Simple => "simple",
        }
    }
}

/// Which of PostgreSQL's functions reads the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Syntax {
    /// `fts`: `to_tsquery`, operators and all.
    Operators,
    /// `plfts`: `plainto_tsquery`, every word required.
    Plain,
    /// `phfts`: `phraseto_tsquery`, the words in order.
    Phrase,
    /// `wfts`: `websearch_to_tsquery`, as a search box reads it.
    WebSearch,
}

impl Syntax {
    /// PostgreSQL's function for this syntax.
    pub fn function(self) -> &'static str {
        match self {
            Syntax::Operators => "to_tsquery",
            Syntax::Plain => "plainto_tsquery",
            Syntax::Phrase => "phraseto_tsquery",
            Syntax::WebSearch => "websearch_to_tsquery",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "operators" => Syntax::Operators,
            "plain" => Syntax::Plain,
            "phrase" => Syntax::Phrase,
            "websearch" => Syntax::WebSearch,
            _ => return None,
        })
    }

    /// A stable name, to hand a syntax to a database function.
    pub fn code(self) -> &'static str {
        match self {
            Syntax::Operators => "operators",
            Syntax::Plain => "plain",
            Syntax::Phrase => "phrase",
            Syntax::WebSearch => "websearch",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// PostgreSQL would refuse the query too (`syntax error in tsquery`).
    #[error("syntax error in the search query: {0}")]
    Syntax(String),
    /// A query PostgreSQL takes but this crate cannot give SQLite's answer
    /// for, refused on both databases so they never differ.
    #[error("{0}")]
    Unsupported(String),
    #[error("text search configuration {0:?} is not served: use english or simple")]
    UnknownLanguage(String),
}

/// A parsed search query. `None` inside: only stop words, which PostgreSQL
/// matches to nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    root: Option<Node>,
}

/// A text's lexemes and their positions.
pub struct Document {
    lexemes: BTreeMap<String, Vec<u32>>,
}

impl Document {
    pub fn new(language: Language, text: &str) -> Self {
        let mut lexemes: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (lexeme, position) in text::lexemes(language, text).items {
            lexemes.entry(lexeme).or_default().push(position);
        }
        Document { lexemes }
    }

    fn positions<'a>(&'a self, term: &'a Term) -> impl Iterator<Item = u32> + 'a {
        let found: Box<dyn Iterator<Item = (&String, &Vec<u32>)>> = if term.never {
            Box::new(std::iter::empty())
        } else if term.prefix {
            Box::new(
                self.lexemes
                    .range(term.lexeme.clone()..)
                    .take_while(|(lexeme, _)| lexeme.starts_with(&term.lexeme)),
            )
        } else {
            Box::new(self.lexemes.get_key_value(&term.lexeme).into_iter())
        };
        found.flat_map(|(_, positions)| positions.iter().copied())
    }
}

/// What an FTS5 index stores for a text: its lexemes, space-separated.
pub fn index_text(language: Language, text: &str) -> String {
    let lexemes = text::lexemes(language, text);
    let words: Vec<String> = lexemes.items.into_iter().map(|(l, _)| l).collect();
    words.join(" ")
}

impl Query {
    pub fn parse(syntax: Syntax, language: Language, text: &str) -> Result<Self, SearchError> {
        let root = match syntax {
            Syntax::Operators => query::tsquery(language, text)?,
            Syntax::Plain => query::plain(language, text),
            Syntax::Phrase => query::phrase(language, text),
            Syntax::WebSearch => query::websearch(language, text),
        };
        Ok(Query { root })
    }

    /// Whether the text's lexemes satisfy the query, as `@@` decides.
    pub fn matches(&self, document: &Document) -> bool {
        self.root
            .as_ref()
            .is_some_and(|node| node_matches(node, document))
    }

    /// An FTS5 expression every matching text's [`index_text`] matches, over
    /// the lexemes the query requires; `None` when nothing is required
    /// (`!a`, or no lexemes at all), so every row must be evaluated.
    pub fn prefilter(&self) -> Option<String> {
        self.root.as_ref().and_then(required)
    }
}

fn node_matches(node: &Node, document: &Document) -> bool {
    match node {
        Node::Phrase(phrase) => phrase_matches(phrase, document),
        Node::And(items) => items.iter().all(|n| node_matches(n, document)),
        Node::Or(items) => items.iter().any(|n| node_matches(n, document)),
        Node::Not(inner) => !node_matches(inner, document),
    }
}

/// Some placement of the phrase's first required slot from which every other
/// slot holds (or, negated, lacks) one of its lexemes at its offset.
fn phrase_matches(phrase: &Phrase, document: &Document) -> bool {
    let Some(anchor) = phrase.slots.iter().find(|slot| !slot.negated) else {
        return false;
    };
    let at = |terms: &[Term], position: i64| {
        terms
            .iter()
            .any(|term| document.positions(term).any(|p| i64::from(p) == position))
    };
    anchor
        .terms
        .iter()
        .flat_map(|term| document.positions(term))
        .any(|position| {
            let start = i64::from(position) - i64::from(anchor.offset);
            phrase
                .slots
                .iter()
                .all(|slot| at(&slot.terms, start + i64::from(slot.offset)) != slot.negated)
        })
}

fn required(node: &Node) -> Option<String> {
    match node {
        Node::Phrase(phrase) => all_of(
            phrase
                .slots
                .iter()
                .filter(|slot| !slot.negated)
                .filter_map(|slot| any_of(slot.terms.iter().map(term_expression).collect()))
                .collect(),
        ),
        Node::And(items) => all_of(items.iter().filter_map(required).collect()),
        Node::Or(items) => any_of(items.iter().map(required).collect()),
        Node::Not(_) => None,
    }
}

fn all_of(items: Vec<String>) -> Option<String> {
    joined(items, " AND ")
}

fn joined(mut items: Vec<String>, operator: &str) -> Option<String> {
    match items.len() {
        0 => None,
        1 => items.pop(),
        _ => Some(format!("({})", items.join(operator))),
    }
}

/// Every alternative must narrow, or the whole cannot.
fn any_of(items: Vec<Option<String>>) -> Option<String> {
    let items: Option<Vec<String>> = items.into_iter().collect();
    joined(items?, " OR ")
}

/// A lexeme as an FTS5 string (`"don""t"`), a prefix one with `*`. FTS5
/// splits it into words as it split the index text, so it finds the same
/// rows; a lexeme with no letters or digits gives FTS5 nothing to find.
fn term_expression(term: &Term) -> Option<String> {
    if !term.lexeme.chars().any(char::is_alphanumeric) {
        return None;
    }
    let quoted = format!("\"{}\"", term.lexeme.replace('"', "\"\""));
    Some(if term.prefix {
        format!("{quoted}*")
    } else {
        quoted
    })
}

#[cfg(test)]
mod tests;

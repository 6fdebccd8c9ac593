//! Full-text search as PostgreSQL means it, checked against PostgreSQL itself:
//! generated texts and queries in each syntax, where gatehouse-search's answer
//! must be PostgreSQL's `@@` (in CI) and SQLite's FTS5 prefilter plus
//! `gatehouse_text_search` must give the same rows.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers fail loudly by design.

use std::time::Duration;

use gatehouse_db::testing::TestDatabase;
use gatehouse_db::{Database, Dialect, MigrateOptions, PoolOptions, Statement, Value};
use gatehouse_schema::Schema;
use gatehouse_search::{Document, Language, Query, Syntax};

const DOCS: &str = r#"
[tables.docs]
columns.id = { type = "bigint", primary_key = true }
columns.body = { type = "text", searchable = true }
"#;

/// Stop words, inflections, hyphenated and dotted forms, non-ASCII letters.
const WORDS: [&str; 37] = [
    "the",
    "a",
    "of",
    "cat",
    "cats",
    "running",
    "runs",
    "ran",
    "runner",
    "dog",
    "dogs",
    "happy",
    "happily",
    "happiness",
    "well-known",
    "state-of-the-art",
    "3.14",
    "-7",
    "x2y",
    "café",
    "naïve",
    "Über",
    "generously",
    "generous",
    "connection",
    "connected",
    "flies",
    "flying",
    "e.g",
    "bob@example.com",
    "not",
    "is",
    "https://Example.com/a/B.html",
    "my-site.org",
    "/usr/bin",
    "x-ray",
    "e-mail",
];

/// A small deterministic generator (xorshift), so a failure names its case.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn word(&mut self) -> &'static str {
        WORDS[self.below(WORDS.len())]
    }

    fn text(&mut self, words: usize) -> String {
        let separators = [" ", " ", ", ", ". ", " - ", "; "];
        let mut text = String::new();
        for i in 0..words {
            if i > 0 {
                text.push_str(separators[self.below(separators.len())]);
            }
            text.push_str(self.word());
        }
        text
    }

    /// A `to_tsquery` expression in the grammar both sides take.
    fn operators(&mut self, depth: usize) -> String {
        match (depth, self.below(9)) {
            (0, _) | (_, 0..=2) => {
                let word = self.word().trim_end_matches('.').to_owned();
                match self.below(6) {
                    0 => format!("{word}:*"),
                    1 => format!("'{word} {}'", self.word().trim_end_matches('.')),
                    _ => word,
                }
            }
            (_, 3) => format!("!{}", self.operators(depth - 1)),
            (_, 4) => format!("({})", self.operators(depth - 1)),
            (_, 5) => format!(
                "{} | {}",
                self.operators(depth - 1),
                self.operators(depth - 1)
            ),
            (_, 6) => format!(
                "{} <-> {}",
                self.word().trim_end_matches('.'),
                self.word().trim_end_matches('.')
            ),
            (_, 7) => format!(
                "{} <{}> {}",
                self.word().trim_end_matches('.'),
                self.below(4),
                self.word().trim_end_matches('.')
            ),
            _ => format!(
                "{} & {}",
                self.operators(depth - 1),
                self.operators(depth - 1)
            ),
        }
    }
}

async fn open(database: &TestDatabase) -> Database {
    let options = PoolOptions {
        max_connections: 2,
        acquire_timeout: Duration::from_secs(5),
        ..PoolOptions::default()
    };
    Database::open(&database.location(), options).await.unwrap()
}

fn statement(dialect: Dialect, sqlite: &str, postgres: &str, params: Vec<Value>) -> Statement {
    let text = match dialect {
        Dialect::Sqlite => sqlite,
        Dialect::Postgres => postgres,
    };
    Statement::compiled(text.to_owned(), params)
}

/// The ids the database finds for a query, by the SQL the rest compiler writes.
async fn found(db: &Database, syntax: Syntax, language: Language, query: &str) -> Vec<i64> {
    let parsed = Query::parse(syntax, language, query).unwrap();
    let prefilter = parsed
        .prefilter()
        .map(|p| format!("{{{}}} : {p}", language.name()));
    let sqlite = match prefilter {
        Some(_) => {
            "SELECT id FROM docs WHERE rowid IN (SELECT rowid FROM \"gatehouse_search:docs:body\" \
                    WHERE \"gatehouse_search:docs:body\" MATCH ?4) \
                    AND gatehouse_text_search(?1, ?2, ?3, body) ORDER BY id"
        }
        None => {
            "SELECT id FROM docs WHERE gatehouse_text_search(?1, ?2, ?3, body) \
                 AND ?4 IS NULL ORDER BY id"
        }
    };
    let postgres = format!(
        "SELECT id FROM docs WHERE $1 <> '' AND to_tsvector($2::text::regconfig, body) @@ {}($2::text::regconfig, $3) \
         AND ($4::text IS NULL OR TRUE) ORDER BY id",
        syntax.function()
    );
    let params = vec![
        Value::Text(syntax.code().into()),
        Value::Text(language.name().into()),
        Value::Text(query.into()),
        prefilter.map_or(Value::Null, Value::Text),
    ];
    let rows = db
        .query(statement(db.dialect(), sqlite, &postgres, params))
        .await
        .unwrap_or_else(|e| panic!("{syntax:?} {query:?}: {e}"));
    rows.iter().map(|row| row.integer(0).unwrap()).collect()
}

#[tokio::test]
async fn answers_match_postgres_and_fts5() {
    let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
    let texts: Vec<String> = (0..60).map(|i| dice.text(1 + i % 12)).collect();
    let mut queries: Vec<(Syntax, Language, String)> = Vec::new();
    for i in 0..400 {
        let language = if i % 5 == 0 {
            Language::Simple
        } else {
            Language::English
        };
        let (syntax, text) = match i % 4 {
            0 => (Syntax::Operators, dice.operators(3)),
            1 => (Syntax::Plain, dice.text(1 + i % 3)),
            2 => (Syntax::Phrase, dice.text(1 + i % 4)),
            _ => {
                let mut text = dice.text(1 + i % 4);
                for marker in ["-", "\"", " or "] {
                    if dice.below(3) == 0 {
                        text.insert_str(0, marker);
                    }
                }
                (Syntax::WebSearch, text)
            }
        };
        queries.push((syntax, language, text));
    }
    for database in TestDatabase::all() {
        let db = open(&database).await;
        let options = MigrateOptions {
            dry_run: false,
            allow_destructive: false,
        };
        db.migrate_schema(&Schema::from_toml(DOCS).unwrap(), options)
            .await
            .unwrap();
        let inserts = texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                statement(
                    db.dialect(),
                    "INSERT INTO docs (id, body) VALUES (?1, ?2)",
                    "INSERT INTO docs (id, body) VALUES ($1, $2)",
                    vec![Value::Integer(i as i64), Value::Text(text.clone())],
                )
            })
            .collect();
        db.transaction(inserts).await.unwrap();
        for (syntax, language, query) in &queries {
            let expected: Vec<i64> = {
                // Negated phrases inside phrases are refused on both databases.
                let Ok(parsed) = Query::parse(*syntax, *language, query) else {
                    continue;
                };
                texts
                    .iter()
                    .enumerate()
                    .filter(|(_, text)| parsed.matches(&Document::new(*language, text)))
                    .map(|(i, _)| i as i64)
                    .collect()
            };
            let rows = found(&db, *syntax, *language, query).await;
            let differing: Vec<&String> = texts
                .iter()
                .enumerate()
                .filter(|(i, _)| rows.contains(&(*i as i64)) != expected.contains(&(*i as i64)))
                .map(|(_, text)| text)
                .collect();
            assert!(
                differing.is_empty(),
                "{:?}: {syntax:?} {} {query:?} differs on {differing:?}",
                db.dialect(),
                language.name()
            );
        }
    }
}

/// Declaring a column searchable indexes the rows already there; undeclaring
/// it, or dropping the column or table, removes the index with it.
#[tokio::test]
async fn searchable_can_be_added_and_removed_by_migration() {
    let plain = DOCS.replace(", searchable = true", "");
    let apply = |destructive| MigrateOptions {
        dry_run: false,
        allow_destructive: destructive,
    };
    for database in TestDatabase::all() {
        let db = open(&database).await;
        db.migrate_schema(&Schema::from_toml(&plain).unwrap(), apply(false))
            .await
            .unwrap();
        db.transaction(vec![statement(
            db.dialect(),
            "INSERT INTO docs (id, body) VALUES (1, 'running cats')",
            "INSERT INTO docs (id, body) VALUES (1, 'running cats')",
            vec![],
        )])
        .await
        .unwrap();
        db.migrate_schema(&Schema::from_toml(DOCS).unwrap(), apply(false))
            .await
            .unwrap();
        assert_eq!(
            found(&db, Syntax::Plain, Language::English, "cat runs").await,
            vec![1]
        );
        db.migrate_schema(&Schema::from_toml(&plain).unwrap(), apply(false))
            .await
            .unwrap();
        db.migrate_schema(&Schema::from_toml(DOCS).unwrap(), apply(false))
            .await
            .unwrap();
        let without_body = DOCS.replace(
            "columns.body = { type = \"text\", searchable = true }\n",
            "",
        );
        db.migrate_schema(&Schema::from_toml(&without_body).unwrap(), apply(true))
            .await
            .unwrap();
        db.migrate_schema(&Schema::from_toml(DOCS).unwrap(), apply(false))
            .await
            .unwrap();
        let other = "[tables.other]\ncolumns.id = { type = \"bigint\", primary_key = true }\n";
        db.migrate_schema(&Schema::from_toml(other).unwrap(), apply(true))
            .await
            .unwrap();
        db.migrate_schema(&Schema::from_toml(DOCS).unwrap(), apply(true))
            .await
            .unwrap();
        assert!(
            found(&db, Syntax::Plain, Language::English, "cat")
                .await
                .is_empty()
        );
    }
}

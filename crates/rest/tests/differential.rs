//! The access decision, proven against a reference: random policies in the
//! policy language over a small schema, random rows and callers. For each, the
//! rows a read returns through the real compiler (on SQLite, and on
//! PostgreSQL when GATEHOUSE_TEST_DATABASE_URL names a server, always in CI)
//! must be exactly those a plain-Rust evaluator of the same policy accepts,
//! with SQL's three-valued logic: a row is shown only where the policy is true,
//! not where it is false or unknown (NULL). Each read also carries a request
//! shape (a full-text search, a JSON path filter, or none), which must narrow
//! the policy's rows and never widen them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers fail loudly by design.

use std::collections::BTreeSet;

use gatehouse_db::testing::TestDatabase;
use gatehouse_db::{Database, MigrateOptions, PoolOptions};
use gatehouse_keys::LocalKeys;
use gatehouse_policy::Policies;
use gatehouse_rest::{Caller, ReadOptions, Rest, RestSettings, WriteOptions};
use gatehouse_schema::Schema;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value as Json, json};

const TABLES: &str = r#"
[tables.members]
columns.id = { type = "bigint", primary_key = true }
columns.team = { type = "bigint", not_null = true }
columns.user_id = { type = "uuid", not_null = true }

[tables.docs]
columns.id = { type = "bigint", primary_key = true }
columns.owner = { type = "uuid" }
columns.team = { type = "bigint" }
columns."Access Level" = { type = "integer" }
columns.title = { type = "text", searchable = true }
columns.public = { type = "boolean" }
columns.meta = { type = "jsonb" }
"#;

const ALICE: &str = "0190c2a4-7e5b-7000-8000-00000000a11c";
const BOB: &str = "0190c2a4-7e5b-7000-8000-000000000b0b";

/// A policy condition over `docs`, as generated: rendered into the policy
/// language for the compiler, evaluated directly by the reference.
#[derive(Debug, Clone)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    /// `"Access Level" <op> n`: a quoted name with a capital and a space
    Level(&'static str, i64),
    /// `team in (…)` or `team not in (…)`
    TeamIn(Vec<i64>, bool),
    /// `title = 't'` or `title <> 't'`
    Title(&'static str, &'static str),
    /// `<column> is [not] null`
    IsNull(&'static str, bool),
    /// `public`, the boolean column on its own
    Public,
    /// `owner = auth.uid()`
    Owned,
    /// `auth.uid() is null`
    NoUser,
    /// `auth.role() = 'r'`
    Role(&'static str),
    /// `auth.jwt() ->> 'tier' = 't'`
    Tier(&'static str),
    /// `auth.jwt() ->> 'tier' is [not] null`
    TierIsNull(bool),
    /// `exists (select 1 from members m where m.team = docs.team and m.user_id = auth.uid())`
    Member,
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        (
            prop::sample::select(vec!["=", "<>", "<", "<=", ">", ">="]),
            -1i64..4
        )
            .prop_map(|(op, n)| Expr::Level(op, n)),
        (prop::collection::vec(0i64..4, 1..3), any::<bool>())
            .prop_map(|(list, negated)| Expr::TeamIn(list, negated)),
        (
            prop::sample::select(vec!["=", "<>"]),
            prop::sample::select(vec!["a", "b"])
        )
            .prop_map(|(op, text)| Expr::Title(op, text)),
        (
            prop::sample::select(vec!["owner", "team", "Access Level", "title", "public"]),
            any::<bool>()
        )
            .prop_map(|(column, negated)| Expr::IsNull(column, negated)),
        Just(Expr::Public),
        Just(Expr::Owned),
        Just(Expr::NoUser),
        prop::sample::select(vec!["anon", "authenticated"]).prop_map(Expr::Role),
        prop::sample::select(vec!["gold", "silver"]).prop_map(Expr::Tier),
        any::<bool>().prop_map(Expr::TierIsNull),
        Just(Expr::Member),
    ];
    leaf.prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::Or(Box::new(a), Box::new(b))),
            inner.prop_map(|a| Expr::Not(Box::new(a))),
        ]
    })
}

impl Expr {
    fn text(&self) -> String {
        match self {
            Expr::And(a, b) => format!("({} and {})", a.text(), b.text()),
            Expr::Or(a, b) => format!("({} or {})", a.text(), b.text()),
            Expr::Not(a) => format!("not ({})", a.text()),
            Expr::Level(op, n) => format!("\"Access Level\" {op} {n}"),
            Expr::TeamIn(list, negated) => {
                let list: Vec<String> = list.iter().map(i64::to_string).collect();
                let not = if *negated { "not " } else { "" };
                format!("team {not}in ({})", list.join(", "))
            }
            Expr::Title(op, text) => format!("title {op} '{text}'"),
            Expr::IsNull(column, negated) => {
                format!("\"{column}\" is {}null", if *negated { "not " } else { "" })
            }
            Expr::Public => "public".into(),
            Expr::Owned => "owner = auth.uid()".into(),
            Expr::NoUser => "auth.uid() is null".into(),
            Expr::Role(role) => format!("auth.role() = '{role}'"),
            Expr::Tier(tier) => format!("auth.jwt() ->> 'tier' = '{tier}'"),
            Expr::TierIsNull(negated) => format!(
                "auth.jwt() ->> 'tier' is {}null",
                if *negated { "not " } else { "" }
            ),
            Expr::Member => "exists (select 1 from members m where m.team = docs.team \
                             and m.user_id = auth.uid())"
                .into(),
        }
    }

    /// SQL's three-valued logic: `None` is unknown.
    fn eval(&self, doc: &Doc, who: &Who, members: &[Member]) -> Option<bool> {
        let compare = |value: Option<i64>, op: &str, n: i64| {
            value.map(|v| match op {
                "=" => v == n,
                "<>" => v != n,
                "<" => v < n,
                "<=" => v <= n,
                ">" => v > n,
                _ => v >= n,
            })
        };
        match self {
            Expr::And(a, b) => match (a.eval(doc, who, members), b.eval(doc, who, members)) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            Expr::Or(a, b) => match (a.eval(doc, who, members), b.eval(doc, who, members)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            Expr::Not(a) => a.eval(doc, who, members).map(|v| !v),
            Expr::Level(op, n) => compare(doc.level, op, *n),
            Expr::TeamIn(list, negated) => doc.team.map(|t| list.contains(&t) != *negated),
            Expr::Title(op, text) => doc.title.map(|t| (t == *text) == (*op == "=")),
            Expr::IsNull(column, negated) => {
                let null = match *column {
                    "owner" => doc.owner.is_none(),
                    "team" => doc.team.is_none(),
                    "Access Level" => doc.level.is_none(),
                    "title" => doc.title.is_none(),
                    _ => doc.public.is_none(),
                };
                Some(null != *negated)
            }
            Expr::Public => doc.public,
            Expr::Owned => match (doc.owner, who.uid) {
                (Some(owner), Some(uid)) => Some(owner == uid),
                _ => None,
            },
            Expr::NoUser => Some(who.uid.is_none()),
            Expr::Role(role) => Some(who.role == *role),
            Expr::Tier(tier) => who.tier.map(|t| t == *tier),
            Expr::TierIsNull(negated) => Some(who.tier.is_none() != *negated),
            // EXISTS is never unknown: a member row matches only where both of
            // its comparisons are true.
            Expr::Member => Some(
                members
                    .iter()
                    .any(|m| doc.team == Some(m.team) && who.uid == Some(m.user)),
            ),
        }
    }
}

#[derive(Debug, Clone)]
struct Doc {
    owner: Option<&'static str>,
    team: Option<i64>,
    level: Option<i64>,
    title: Option<&'static str>,
    public: Option<bool>,
    /// `{"tag": …}`
    tag: Option<&'static str>,
}

/// What a read asks for on top of the policy.
#[derive(Debug, Clone)]
enum Shape {
    All,
    /// `title=fts.<word>` or `title=wfts.<word>`: titles are plain words, so a
    /// word matches exactly the titles that hold it.
    Search(&'static str, &'static str),
    /// `meta->>tag=eq.<tag>`
    Tag(&'static str),
}

impl Shape {
    fn query(&self) -> String {
        match self {
            Shape::All => "select=id".to_owned(),
            Shape::Search(op, word) => format!("select=id&title={op}.{word}"),
            Shape::Tag(tag) => format!("select=id&meta->>tag=eq.{tag}"),
        }
    }

    fn holds(&self, doc: &Doc) -> bool {
        match self {
            Shape::All => true,
            Shape::Search(_, word) => doc
                .title
                .is_some_and(|title| title.split(' ').any(|w| w == *word)),
            Shape::Tag(tag) => doc.tag == Some(*tag),
        }
    }
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::All),
        (
            prop::sample::select(vec!["fts", "plfts", "wfts"]),
            prop::sample::select(vec!["fox", "dog", "red"]),
        )
            .prop_map(|(op, word)| Shape::Search(op, word)),
        prop::sample::select(vec!["x", "y"]).prop_map(Shape::Tag),
    ]
}

#[derive(Debug, Clone)]
struct Member {
    team: i64,
    user: &'static str,
}

/// A caller as the reference sees it.
struct Who {
    role: &'static str,
    uid: Option<&'static str>,
    tier: Option<&'static str>,
}

fn doc() -> impl Strategy<Value = Doc> {
    (
        prop::option::of(prop::sample::select(vec![ALICE, BOB])),
        prop::option::of(0i64..4),
        prop::option::of(-1i64..4),
        prop::option::of(prop::sample::select(vec![
            "a",
            "b",
            "red fox",
            "lazy dog fox",
        ])),
        prop::option::of(any::<bool>()),
        prop::option::of(prop::sample::select(vec!["x", "y"])),
    )
        .prop_map(|(owner, team, level, title, public, tag)| Doc {
            owner,
            team,
            level,
            title,
            public,
            tag,
        })
}

fn member() -> impl Strategy<Value = Member> {
    (0i64..4, prop::sample::select(vec![ALICE, BOB])).prop_map(|(team, user)| Member { team, user })
}

/// The callers every case reads as, each with what the reference knows of it.
struct Callers {
    service: Caller,
    readers: Vec<(Caller, Who)>,
}

fn callers() -> Callers {
    let keys = LocalKeys::generate("http://localhost/auth/v1").unwrap();
    let user = |id: &str, tier: Option<&str>| {
        let mut claims = serde_json::Map::new();
        if let Some(tier) = tier {
            claims.insert("tier".into(), tier.into());
        }
        Caller::signed_in(keys.user(id, claims).unwrap())
    };
    let service = Caller::holding(keys.service());
    Callers {
        service,
        readers: vec![
            (
                Caller::anon(),
                Who {
                    role: "anon",
                    uid: None,
                    tier: None,
                },
            ),
            (
                user(ALICE, Some("gold")),
                Who {
                    role: "authenticated",
                    uid: Some(ALICE),
                    tier: Some("gold"),
                },
            ),
            (
                user(BOB, None),
                Who {
                    role: "authenticated",
                    uid: Some(BOB),
                    tier: None,
                },
            ),
        ],
    }
}

fn compile(using: &str) -> (Schema, Policies) {
    let text = format!(
        "{TABLES}\n[[tables.docs.policies]]\nname = \"generated\"\nfor = \"select\"\n\
         to = [\"anon\", \"authenticated\"]\nusing = {using:?}\n"
    );
    let declaration = gatehouse_schema::declaration::parse(&text).unwrap();
    let schema = Schema::from_declaration(&declaration).unwrap();
    let policies =
        Policies::compile(&declaration, &schema).unwrap_or_else(|error| panic!("{using}: {error}"));
    (schema, policies)
}

fn request(query: &str) -> gatehouse_query::Request {
    gatehouse_query::parse(&gatehouse_query::written_pairs(query)).unwrap()
}

/// Replaces every row of `table` with `rows`, as the service role.
async fn replace_rows(rest: &Rest, db: &Database, service: &Caller, table: &str, rows: Vec<Json>) {
    rest.delete(
        db.into(),
        service,
        table,
        &request(""),
        WriteOptions::default(),
    )
    .await
    .unwrap();
    if !rows.is_empty() {
        rest.insert(
            db.into(),
            service,
            table,
            &request(""),
            &Json::Array(rows),
            WriteOptions::default(),
        )
        .await
        .unwrap();
    }
}

/// One case: the policy's rows through the compiler against the reference's.
async fn check(
    db: &Database,
    callers: &Callers,
    policy: &Expr,
    shape: &Shape,
    docs: &[Doc],
    members: &[Member],
) -> Result<(), TestCaseError> {
    let using = policy.text();
    let (schema, policies) = compile(&using);
    let settings = RestSettings {
        allow_unfiltered_writes: true,
        ..RestSettings::default()
    };
    let rest = Rest::new(schema, policies, settings);
    let doc_rows = docs
        .iter()
        .enumerate()
        .map(|(id, doc)| {
            json!({"id": id, "owner": doc.owner, "team": doc.team, "Access Level": doc.level,
                   "title": doc.title, "public": doc.public,
                   "meta": doc.tag.map(|tag| json!({"tag": tag}))})
        })
        .collect();
    let member_rows = members
        .iter()
        .enumerate()
        .map(|(id, m)| json!({"id": id, "team": m.team, "user_id": m.user}))
        .collect();
    replace_rows(&rest, db, &callers.service, "docs", doc_rows).await;
    replace_rows(&rest, db, &callers.service, "members", member_rows).await;
    for (caller, who) in &callers.readers {
        let read = rest
            .read(
                db.into(),
                caller,
                "docs",
                &request(&shape.query()),
                ReadOptions::default(),
            )
            .await
            .unwrap();
        let seen: BTreeSet<i64> = read
            .rows
            .iter()
            .map(|row| row["id"].as_i64().unwrap())
            .collect();
        let expected: BTreeSet<i64> = docs
            .iter()
            .enumerate()
            .filter(|(_, doc)| policy.eval(doc, who, members) == Some(true) && shape.holds(doc))
            .map(|(id, _)| id as i64)
            .collect();
        prop_assert_eq!(
            &seen,
            &expected,
            "policy {} with {} as {} on {:?}",
            using,
            shape.query(),
            who.role,
            who.uid
        );
    }
    Ok(())
}

fn differential(test_db: TestDatabase, cases: u32) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = runtime.block_on(async {
        let db = Database::open(&test_db.location(), PoolOptions::default())
            .await
            .unwrap();
        let declaration = gatehouse_schema::declaration::parse(TABLES).unwrap();
        let schema = Schema::from_declaration(&declaration).unwrap();
        db.migrate_schema(&schema, MigrateOptions::default())
            .await
            .unwrap();
        db
    });
    let callers = callers();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        expr(),
        shape(),
        prop::collection::vec(doc(), 0..8),
        prop::collection::vec(member(), 0..4),
    );
    runner
        .run(&strategy, |(policy, shape, docs, members)| {
            runtime.block_on(check(&db, &callers, &policy, &shape, &docs, &members))
        })
        .unwrap();
}

#[test]
fn compiled_policies_return_what_the_reference_accepts_on_sqlite() {
    differential(TestDatabase::sqlite(), 256);
}

#[test]
fn compiled_policies_return_what_the_reference_accepts_on_postgres() {
    if let Some(test_db) = TestDatabase::postgres() {
        differential(test_db, 128);
    }
}

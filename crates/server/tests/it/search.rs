//! Full-text search (`fts`, `plfts`, `phfts`, `wfts`) through HTTP: the same
//! rows on SQLite (FTS5 and gatehouse-search) as on PostgreSQL (its own
//! `to_tsvector`/`to_tsquery`), kept current through writes, under the table's
//! policies, and malformed queries refused alike.

use std::collections::BTreeMap;

use gatehouse_db::testing::TestDatabase;
use reqwest::Method;
use serde_json::{Value, json};

use crate::kit::{self, TestServer, json};

const ALICE: &str = "0190c2a4-7e5b-7000-8000-00000000a11c";
const BOB: &str = "0190c2a4-7e5b-7000-8000-000000000b0b";

const ARTICLES: &str = r#"
[tables.articles]
columns.id = { type = "bigint", primary_key = true }
columns.owner = { type = "uuid", not_null = true, server_set = "auth.uid()" }
columns.body = { type = "text", searchable = true }
columns."Title Text" = { type = "text", searchable = true }
columns.plain = { type = "text" }

[[tables.articles.policies]]
name = "owners"
for = "all"
to = "authenticated"
using = "owner = auth.uid()"
with_check = "owner = auth.uid()"
"#;

/// Alice's articles; Bob owns one that matches nearly everything.
const CORPUS: [&str; 12] = [
    "The cat in the hat sat on a well-known mat",
    "Cats are running after the rats, and a dog is running after the cats",
    "A fat cat ate the rat",
    "State-of-the-art search with PostgreSQL and SQLite",
    "Version 3.14 of covid-19 tracking: email bob@example.com for e.g. details",
    "Le café est très naïve, l'été dernier",
    "Running runners ran; the runner runs",
    "To be or not to be",
    "",
    "the quick brown fox jumps over the lazy dog",
    "Dogs and cats living together, mass hysteria",
    "Hats, mats and bats: a rhyme about a cat",
];

/// Queries in each syntax and language, including PostgreSQL's corners: stop
/// words, stemming, prefixes, phrase distances, negation, weights.
const QUERIES: [&str; 40] = [
    "body=fts.cat",
    "body=fts.cats%20%26%20rats",
    "body=fts.dog%20%7C%20hat",
    "body=fts.cat%20%26%20!dog",
    "body=fts.!cat",
    "body=fts.run:*",
    "body=fts.runn:*",
    "body=fts.fat%20<->%20cat",
    "body=fts.cat%20<3>%20hat",
    "body=fts.cat%20<->%20hat",
    "body=fts.cat%20<->%20in%20<->%20the%20<->%20hat",
    "body=fts.(dog%20%7C%20rat)%20<->%20is",
    "body=fts.!fat%20<->%20cat",
    "body=fts.well-known",
    "body=fts.state-of-the-art",
    "body=fts.'well%20known'",
    "body=fts.the",
    "body=fts.cat:A",
    "body=fts.cat:*D",
    "body=fts(simple).cats",
    "body=fts(simple).the",
    "body=fts(english).running",
    "body=fts.3.14",
    "body=fts.bob@example.com",
    "body=fts.covid",
    "body=fts.naïve",
    "body=plfts.the%20cats%20rats",
    "body=plfts.running%20dogs",
    "body=plfts(simple).cats",
    "body=phfts.cat%20in%20the%20hat",
    "body=phfts.cat%20ate%20rat",
    "body=phfts.running%20after",
    "body=wfts.cat%20-dog",
    "body=wfts.%22fat%20cat%22%20or%20lazy",
    "body=wfts.dogs%20or%20-cats",
    "body=wfts.-the",
    "body=not.fts.cat",
    "or=(body.fts.hat,body.plfts.fox)",
    "%22Title%20Text%22=fts.cat",
    "body=wfts(simple).%22the%20cat%22",
];

async fn ids(server: &TestServer, token: &str, query: &str) -> Vec<i64> {
    let response = server
        .rest(
            Method::GET,
            &format!("articles?select=id&order=id&{query}"),
            Some(token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{query}");
    json(response)
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn both_databases_give_the_same_rows() {
    let mut answers: Vec<BTreeMap<&str, Vec<i64>>> = Vec::new();
    for database in TestDatabase::all() {
        let server = kit::start_declared(ARTICLES, &database).await;
        let rows: Vec<Value> = CORPUS
            .iter()
            .enumerate()
            .map(|(i, body)| json!({"id": i + 1, "body": body, "Title Text": body.to_uppercase()}))
            .collect();
        let created = server
            .rest(Method::POST, "articles", Some(ALICE))
            .json(&json!(rows))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        // Bob's row matches almost every query; Alice must never see it.
        let bob = server
            .rest(Method::POST, "articles", Some(BOB))
            .json(&json!({"id": 100, "body": CORPUS.join(" "), "Title Text": "cat"}))
            .send()
            .await
            .unwrap();
        assert_eq!(bob.status(), 201);
        let mut found = BTreeMap::new();
        for query in QUERIES {
            let rows = ids(&server, ALICE, query).await;
            assert!(!rows.contains(&100), "{query}: another owner's row");
            found.insert(query, rows);
        }
        // Spot checks against what PostgreSQL's english configuration means.
        assert_eq!(found["body=fts.cat"], vec![1, 2, 3, 11, 12]);
        assert_eq!(found["body=fts.cat%20<3>%20hat"], vec![1]);
        assert_eq!(found["body=fts.cat%20<->%20hat"], Vec::<i64>::new());
        assert_eq!(found["body=fts.the"], Vec::<i64>::new(), "only stop words");
        assert_eq!(found["body=phfts.cat%20in%20the%20hat"], vec![1]);
        assert_eq!(found["body=wfts.cat%20-dog"], vec![1, 3, 12]);
        assert_eq!(found["%22Title%20Text%22=fts.cat"], vec![1, 2, 3, 11, 12]);
        answers.push(found);
    }
    if let [sqlite, postgres] = answers.as_slice() {
        for query in QUERIES {
            assert_eq!(sqlite[query], postgres[query], "{query}");
        }
    }
}

#[tokio::test]
async fn writes_keep_the_index_current_and_bad_queries_are_refused() {
    for database in TestDatabase::all() {
        let server = kit::start_declared(ARTICLES, &database).await;
        let created = server
            .rest(Method::POST, "articles", Some(ALICE))
            .json(&json!([{"id": 1, "body": "a fat cat"}, {"id": 2, "body": null}]))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        assert_eq!(ids(&server, ALICE, "body=fts.cat").await, vec![1]);
        let updated = server
            .rest(Method::PATCH, "articles?id=eq.1", Some(ALICE))
            .json(&json!({"body": "a thin dog"}))
            .send()
            .await
            .unwrap();
        assert_eq!(updated.status(), 204);
        assert_eq!(ids(&server, ALICE, "body=fts.cat").await, Vec::<i64>::new());
        assert_eq!(ids(&server, ALICE, "body=fts.dog").await, vec![1]);
        let upserted = server
            .rest(Method::POST, "articles", Some(ALICE))
            .header("prefer", "resolution=merge-duplicates")
            .json(&json!({"id": 2, "body": "dogs everywhere"}))
            .send()
            .await
            .unwrap();
        assert_eq!(upserted.status(), 201);
        assert_eq!(ids(&server, ALICE, "body=fts.dog").await, vec![1, 2]);
        let deleted = server
            .rest(Method::DELETE, "articles?body=fts.thin", Some(ALICE))
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), 204);
        assert_eq!(ids(&server, ALICE, "body=fts.dog").await, vec![2]);

        for bad in [
            "body=fts.fat%20cat",
            "body=fts.cat%20%26",
            "body=fts.(cat",
            "body=fts(klingon).cat",
            "body=fts().cat",
            "body=eq(english).cat",
            "plain=fts.cat",
            "owner=fts.cat",
            "body=fts.a%00b",
            "body->x=fts.cat",
        ] {
            let response = server
                .rest(
                    Method::GET,
                    &format!("articles?select=id&{bad}"),
                    Some(ALICE),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 400, "{bad}");
        }
    }
}

/// The OpenAPI document lists the search filters a searchable column takes,
/// and what its pattern admits the server serves.
#[tokio::test]
async fn the_openapi_document_describes_the_search_filters() {
    let database = TestDatabase::sqlite();
    let server = kit::start_declared(ARTICLES, &database).await;
    let document = json(
        server
            .rest(Method::GET, "", Some(ALICE))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let pattern = |column: &str| {
        let parameters = document["paths"]["/articles"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let parameter = parameters.iter().find(|p| p["name"] == column).unwrap();
        regex::Regex::new(parameter["schema"]["pattern"].as_str().unwrap()).unwrap()
    };
    let body = pattern("body");
    let served = [
        "fts.cat",
        "fts(simple).cat & dog",
        "not.plfts.the cats, running",
        "phfts(english).cat in the hat",
        "wfts.\"fat cat\" or -dog",
    ];
    for filter in served {
        assert!(body.is_match(filter), "{filter}");
        let encoded =
            percent_encoding::utf8_percent_encode(filter, percent_encoding::NON_ALPHANUMERIC);
        let response = server
            .rest(
                Method::GET,
                &format!("articles?body={encoded}"),
                Some(ALICE),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{filter}");
    }
    assert!(!body.is_match("fts.cat dog"));
    assert!(!pattern("plain").is_match("fts.cat"), "not searchable");
}

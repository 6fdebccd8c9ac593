//! Random query strings and bodies against the data API: every answer is a 2xx
//! or a 4xx with the JSON error shape, never a 5xx, a panic or a hang.

use std::time::Duration;

use gatehouse_db::testing::TestDatabase;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::kit;

const TABLES: &str = r#"
[tables.notes]
columns.id = { type = "uuid", primary_key = true }
columns.owner = { type = "uuid", server_set = "auth.uid()", not_null = true }
columns.title = { type = "text", not_null = true, check = { max_length = 50, pattern = "^[a-z ]*$" } }
columns.stars = { type = "integer", not_null = true, default = 0, check = { min = 0 } }
columns.at = { type = "timestamptz" }
columns.data = { type = "jsonb" }
columns.flag = { type = "boolean" }
columns.price = { type = "numeric" }
columns.blob = { type = "bytea" }

[[tables.notes.policies]]
name = "own"
for = "all"
to = "authenticated"
using = "owner = auth.uid()"
"#;

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z'
            | b'A'..=b'Z'
            | b'0'..=b'9'
            | b'.'
            | b'-'
            | b'_'
            | b','
            | b'('
            | b')'
            | b'*'
            | b':'
            | b'!' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,16}",
        Just("null".to_owned()),
        Just("(1,2,\"a,b\")".to_owned()),
        Just("2026-01-01T00:00:00Z".to_owned()),
        Just("0190c2a4-7e5b-7000-8000-000000000001".to_owned()),
        Just("99999999999999999999".to_owned()),
        Just("-1".to_owned()),
        any::<String>(),
    ]
}

fn parameter() -> impl Strategy<Value = String> {
    let column = prop_oneof![
        Just("id"),
        Just("title"),
        Just("stars"),
        Just("owner"),
        Just("at"),
        Just("data"),
        Just("flag"),
        Just("blob"),
        Just("price"),
        Just("nope"),
        Just(""),
    ];
    let op = prop_oneof![
        Just("eq"),
        Just("neq"),
        Just("gt"),
        Just("lte"),
        Just("like"),
        Just("ilike"),
        Just("is"),
        Just("in"),
        Just("cs"),
        Just("not.eq"),
        Just("not.in"),
        Just("between"),
        Just(""),
    ];
    prop_oneof![
        // Often nothing, so that many requests get past the parser and into SQL.
        8 => Just(String::new()),
        2 => Just("title=eq.abc".to_owned()),
        2 => (column.clone(), op, value()).prop_map(|(c, o, v)| format!("{c}={o}.{}", encode(&v))),
        1 => value().prop_map(|v| format!("or={}", encode(&format!("({v})")))),
        1 => value().prop_map(|v| format!("select={}", encode(&v))),
        1 => value().prop_map(|v| format!("order={}", encode(&v))),
        1 => value().prop_map(|v| format!("limit={}", encode(&v))),
        1 => value().prop_map(|v| format!("on_conflict={}", encode(&v))),
        1 => any::<String>().prop_map(|v| encode(&v)),
    ]
}

fn body() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(
            |f| serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, Into::into)
        ),
        "[ -~]{0,20}".prop_map(serde_json::Value::from),
    ];
    let json = leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("title"),
                        Just("stars"),
                        Just("owner"),
                        Just("at"),
                        Just("data"),
                        Just("x")
                    ],
                    inner
                ),
                0..5
            )
            .prop_map(|pairs| serde_json::Value::Object(
                pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    });
    prop_oneof![
        3 => Just(r#"{"title": "a note", "stars": 2}"#.to_owned()),
        6 => json.prop_map(|j| j.to_string()),
        1 => any::<String>(),
    ]
}

#[test]
fn random_requests_never_get_a_5xx() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let database = TestDatabase::sqlite();
    let server = runtime.block_on(kit::start_declared(TABLES, &database));
    let user = "0190c2a4-7e5b-7000-8000-00000000a11c";
    let methods = [
        reqwest::Method::GET,
        reqwest::Method::POST,
        reqwest::Method::PATCH,
        reqwest::Method::DELETE,
    ];
    let strategy = (
        0..methods.len(),
        prop::collection::vec(parameter(), 0..4),
        body(),
        any::<bool>(),
    );
    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    });
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, usize>::new());
    runner
        .run(&strategy, |(method, parameters, body, signed_in)| {
            let query = parameters.join("&");
            let status = runtime.block_on(async {
                let request = server
                    .rest(
                        methods[method].clone(),
                        &format!("notes?{query}"),
                        signed_in.then_some(user),
                    )
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .timeout(Duration::from_secs(10));
                let response = request.send().await.unwrap();
                let status = response.status();
                let text = response.text().await.unwrap();
                if !status.is_success() {
                    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
                    assert!(parsed["code"].is_string(), "{text}");
                }
                status
            });
            *statuses.lock().unwrap().entry(status.as_u16()).or_default() += 1;
            prop_assert!(
                !status.is_server_error(),
                "{} {query} {body:?} -> {status}",
                methods[method]
            );
            Ok(())
        })
        .unwrap();
    // The generator reaches past the parser: some requests succeed, most are refused.
    let statuses = statuses.into_inner().unwrap();
    let count = |range: std::ops::Range<u16>| statuses.range(range).map(|(_, n)| n).sum::<usize>();
    assert!(
        count(200..300) > 10 && count(400..500) > 100,
        "{statuses:?}"
    );
}

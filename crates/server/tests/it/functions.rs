//! Declared functions behind `POST /rest/v1/rpc/<name>`: roles (deny by
//! default), typed arguments checked before the code runs, the verified caller
//! as `ctx.user`, PostgREST's error shapes, and the sandbox's limits, after
//! which the server and the next call are fine.

use gatehouse_db::testing::TestDatabase;
use reqwest::Method;
use serde_json::{Value, json};

use crate::kit::{self, TestServer, json};

const ALICE: &str = "0190c2a4-7e5b-7000-8000-00000000a11c";

const DECLARED: &str = r#"
[functions.add]
module = "add.js"
roles = ["authenticated"]
args.a = { type = "integer", not_null = true }
args.b = { type = "integer", check = { min = 0 } }

[functions.whoami]
module = "whoami.js"
roles = ["anon", "authenticated"]

[functions.fail]
module = "fail.js"
roles = ["authenticated"]

[functions.spin]
module = "spin.js"
roles = ["authenticated"]
time_ms = 200

[functions.spin_long]
module = "spin.js"
roles = ["authenticated"]
time_ms = 1500

[functions.impatient]
module = "noted.js"
roles = ["authenticated"]
wait_ms = 100

[functions.hog]
module = "hog.js"
roles = ["authenticated"]
memory_mb = 8

[functions.remember]
module = "remember.js"
roles = ["authenticated"]

[functions.hidden]
module = "add.js"

[functions.menu]
module = "menu.js"
roles = ["anon"]
volatility = "stable"
args.min = { type = "integer", default = 0 }

[functions.twice]
module = "twice.js"
roles = ["anon"]
volatility = "stable"
args.n = { type = "integer", not_null = true }
args.flag = { type = "boolean", default = false }
args.code = { type = "text", check = { pattern = "^[a-z]+$" } }
"#;

const MODULES: [(&str, &str); 9] = [
    (
        "menu.js",
        "export default ({ min }) => [
           { id: 1, name: 'tea', price: 450, tags: ['hot'] },
           { id: 2, name: 'cake', price: 325, tags: ['sweet'] },
           { id: 3, name: 'teapot', price: 1999, tags: [] },
         ].filter((item) => item.price >= min)",
    ),
    (
        "twice.js",
        "export default ({ n, flag }) => ({ n: n * 2, flag })",
    ),
    (
        "add.js",
        "export default ({ a, b }) => ({ sum: a + (b ?? 0) })",
    ),
    (
        "whoami.js",
        "export default async (args, ctx) => ctx.user && { id: ctx.user.id, role: ctx.user.role, sub: ctx.user.claims.sub }",
    ),
    (
        "fail.js",
        "export default () => { throw new Error('out of stock') }",
    ),
    ("spin.js", "export default () => { while (true) {} }"),
    (
        "hog.js",
        "export default () => { const all = []; while (true) all.push('x'.repeat(4096)) }",
    ),
    // A door of `ctx` makes a call wait for a turn (one that needs none may
    // be answered on the request's own thread instead).
    (
        "noted.js",
        "export default (args, ctx) => { ctx.log.info('noted'); return 'noted' }",
    ),
    (
        "remember.js",
        "export default () => { const seen = globalThis.seen ?? 0; globalThis.seen = seen + 1; return seen }",
    ),
];

pub(crate) async fn rpc(
    server: &TestServer,
    who: Option<&str>,
    name: &str,
    body: Value,
) -> (u16, Value) {
    let request = server
        .rest(Method::POST, &format!("rpc/{name}"), who)
        .json(&body);
    let response = request.send().await.unwrap();
    (response.status().as_u16(), json(response).await)
}

#[tokio::test]
async fn functions_answer_as_postgrest_does() {
    let database = TestDatabase::sqlite();
    let server = kit::start_functions(DECLARED, &MODULES, &database).await;

    assert_eq!(
        rpc(&server, Some(ALICE), "add", json!({"a": 2, "b": 3})).await,
        (200, json!({"sum": 5}))
    );
    assert_eq!(
        rpc(&server, Some(ALICE), "add", json!({"a": 2})).await,
        (200, json!({"sum": 2}))
    );
    for (args, argument) in [
        (json!({}), "a"),
        (json!({"a": "two"}), "a"),
        (json!({"a": 1, "b": -1}), "b"),
        (json!({"a": 1, "total": 100}), "total"),
    ] {
        let (status, body) = rpc(&server, Some(ALICE), "add", args.clone()).await;
        assert_eq!(status, 400, "{args}");
        assert_eq!(body["code"], "22P02");
        assert!(
            body["message"].as_str().unwrap().contains(argument),
            "{body}"
        );
    }
    let (status, body) = rpc(&server, None, "add", json!({"a": 1})).await;
    assert_eq!(
        (status, &body["code"]),
        (401, &json!("42501")),
        "anon is not among its roles"
    );
    let (status, _) = rpc(&server, Some(ALICE), "hidden", json!({"a": 1})).await;
    assert_eq!(status, 403, "no roles, no callers");
    let (status, body) = rpc(&server, Some(ALICE), "nothing", json!({})).await;
    assert_eq!((status, &body["code"]), (404, &json!("PGRST202")));

    let (status, body) = rpc(&server, Some(ALICE), "whoami", json!(null)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"id": ALICE, "role": "authenticated", "sub": ALICE})
    );
    assert_eq!(
        rpc(&server, None, "whoami", json!({})).await,
        (200, Value::Null)
    );

    // GET takes a stable function's arguments from the query, typed as declared.
    let get = |query: &'static str| {
        let server = &server;
        async move {
            let response = server
                .rest(Method::GET, &format!("rpc/{query}"), None)
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), json(response).await)
        }
    };
    assert_eq!(
        get("twice?n=21&flag=true").await,
        (200, json!({"n": 42, "flag": true}))
    );
    assert_eq!(get("twice?n=x").await.0, 400);
    assert_eq!(get("twice?n=1&other=2").await.0, 400);
    assert_eq!(get("add?a=1").await.0, 405, "volatile functions take POST");
    let (status, body) = rpc(&server, None, "twice", json!({"n": 1, "code": "ABC"})).await;
    assert_eq!(
        (status, &body["code"]),
        (400, &json!("22P02")),
        "the pattern check"
    );
    assert_eq!(
        rpc(&server, None, "twice", json!({"n": 1, "code": "abc"})).await,
        (200, json!({"n": 2, "flag": false})),
        "a missing argument takes its declared default"
    );

    let (status, body) = rpc(&server, Some(ALICE), "fail", json!({})).await;
    assert_eq!(
        (status, &body["code"], &body["message"]),
        (400, &json!("P0001"), &json!("out of stock"))
    );
}

#[tokio::test]
async fn the_sandbox_stops_runaway_code_and_forgets_between_calls() {
    let database = TestDatabase::sqlite();
    let server = kit::start_functions(DECLARED, &MODULES, &database).await;
    let (status, body) = rpc(&server, Some(ALICE), "spin", json!({})).await;
    assert_eq!((status, &body["code"]), (504, &json!("57014")));
    let (status, body) = rpc(&server, Some(ALICE), "hog", json!({})).await;
    assert_eq!((status, &body["code"]), (500, &json!("53200")));
    assert!(!body.to_string().contains("x".repeat(10).as_str()));
    for _ in 0..3 {
        assert_eq!(
            rpc(&server, Some(ALICE), "remember", json!({})).await,
            (200, json!(0))
        );
    }
    assert_eq!(
        rpc(&server, Some(ALICE), "add", json!({"a": 1})).await,
        (200, json!({"sum": 1}))
    );
}

/// Calls wait a bounded time for a turn among the calls running at once
/// (eight): past their `wait_ms` they are refused as busy, with a time to
/// retry after, and the server goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_cannot_get_a_turn_in_time_is_refused_as_busy() {
    let database = TestDatabase::sqlite();
    let server = kit::start_functions(DECLARED, &MODULES, &database).await;
    let spin = || rpc(&server, Some(ALICE), "spin_long", json!({}));
    let impatient = async {
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        let response = server
            .rest(Method::POST, "rpc/impatient", Some(ALICE))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let retry_after = response.headers().get("retry-after").cloned();
        (
            response.status().as_u16(),
            retry_after,
            json(response).await,
        )
    };
    let (a, b, c, d, e, f, g, h, (status, retry_after, body)) = tokio::join!(
        spin(),
        spin(),
        spin(),
        spin(),
        spin(),
        spin(),
        spin(),
        spin(),
        impatient
    );
    assert_eq!((status, &body["code"]), (503, &json!("PGRST003")), "{body}");
    assert_eq!(retry_after.unwrap(), "1");
    for (status, _) in [a, b, c, d, e, f, g, h] {
        assert_eq!(status, 504, "each spin ran to its time limit");
    }
    let (status, _) = rpc(&server, Some(ALICE), "impatient", json!({})).await;
    assert_eq!(status, 200, "turns free again");
}

/// A module that does not compile stops the start, naming where.
#[test]
fn a_syntax_error_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gatehouse.toml"),
        "[functions.broken]\nmodule = \"broken.js\"\nroles = [\"anon\"]\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("functions")).unwrap();
    std::fs::write(
        dir.path().join("functions/broken.js"),
        "export default () => {\n  return 1 +;\n}\n",
    )
    .unwrap();
    let output = kit::gatehouse(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &[])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("broken.js:2"), "{said}");
}

const NOTES: &str = r#"
[tables.notes]
columns.id = { type = "bigint", primary_key = true }
columns.owner = { type = "uuid", not_null = true, server_set = "auth.uid()" }
columns.title = { type = "text", not_null = true }

[[tables.notes.policies]]
name = "owners"
for = "all"
to = "authenticated"
using = "owner = auth.uid()"
with_check = "owner = auth.uid()"

[functions.notes]
module = "notes.js"
roles = ["authenticated"]
args.owner = { type = "uuid" }

[functions.first_note]
module = "first_note.js"
roles = ["authenticated"]
"#;

const NOTE_MODULES: [(&str, &str); 2] = [
    (
        "notes.js",
        "export default async ({ owner }, ctx) => {
           let query = ctx.db.from('notes').select('id, title').order('id', { ascending: false });
           if (owner) query = query.eq('owner', owner);
           const { data, error } = await query;
           if (error) throw new Error(error.message);
           return data;
         }",
    ),
    (
        "first_note.js",
        "export default async (args, ctx) => {
           const one = await ctx.db.from('notes').select('title').eq('id', 1).maybeSingle();
           const missing = await ctx.db.from('nothing').select('*');
           return { one: one.data, missing: missing.error !== null };
         }",
    ),
];

/// `ctx.db` reads as the caller, through the same access decision as the
/// data API: a function shows nobody a row `/rest/v1` would not.
#[tokio::test]
async fn ctx_db_reads_as_the_caller() {
    const BOB: &str = "0190c2a4-7e5b-7000-8000-000000000b0b";
    for database in TestDatabase::all() {
        let server = kit::start_functions(NOTES, &NOTE_MODULES, &database).await;
        for (who, rows) in [
            (
                ALICE,
                json!([{"id": 1, "title": "a1"}, {"id": 2, "title": "a2"}]),
            ),
            (BOB, json!([{"id": 3, "title": "b1"}])),
        ] {
            let created = server
                .rest(Method::POST, "notes", Some(who))
                .json(&rows)
                .send()
                .await
                .unwrap();
            assert_eq!(created.status(), 201);
        }
        assert_eq!(
            rpc(&server, Some(ALICE), "notes", json!({})).await,
            (
                200,
                json!([{"id": 2, "title": "a2"}, {"id": 1, "title": "a1"}])
            )
        );
        assert_eq!(
            rpc(&server, Some(ALICE), "notes", json!({"owner": BOB})).await,
            (200, json!([])),
            "another user's rows stay invisible"
        );
        assert_eq!(
            rpc(&server, Some(BOB), "notes", json!({})).await,
            (200, json!([{"id": 3, "title": "b1"}]))
        );
        assert_eq!(
            rpc(&server, Some(ALICE), "first_note", json!({})).await,
            (200, json!({"one": {"title": "a1"}, "missing": true}))
        );
        assert_eq!(
            rpc(&server, Some(BOB), "first_note", json!({})).await,
            (200, json!({"one": null, "missing": true}))
        );
    }
}

/// `ctx.log` lines reach Gatehouse's JSON log with the function's name and the
/// request id, bounded in number.
#[tokio::test]
async fn ctx_log_writes_structured_lines_with_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gatehouse.toml"),
        "[functions.chatty]\nmodule = \"chatty.js\"\nroles = [\"anon\"]\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("functions")).unwrap();
    std::fs::write(
        dir.path().join("functions/chatty.js"),
        "export default (args, ctx) => {\n\
           ctx.log.info('checked out', { items: 2 });\n\
           for (let i = 0; i < 500; i++) ctx.log.warn('again');\n\
           return 'done';\n\
         }\n",
    )
    .unwrap();
    let process = kit::Process::serve(dir.path(), &[], &[]);
    let key = std::fs::read_to_string(dir.path().join("gatehouse-data/publishable.key")).unwrap();
    let response = reqwest::Client::new()
        .post(format!("{}/rest/v1/rpc/chatty", process.url))
        .header("apikey", key.trim())
        .header("x-request-id", "function-log-1")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (_, logs) = process.terminate();
    let lines: Vec<Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["function"] == "chatty")
        .collect();
    let first = &lines[0];
    assert_eq!(first["message"], "checked out");
    assert_eq!(first["request_id"], "function-log-1");
    assert_eq!(first["fields"], "{\"items\":2}");
    assert_eq!(first["level"], "INFO");
    assert!(lines.len() <= 102, "{} lines", lines.len());
}

/// `/functions/v1`: any method, the request in `ctx.request`, and a response the
/// function describes, with only the headers a function may set.
#[tokio::test]
async fn functions_v1_invokes_with_any_method() {
    let declared = "[functions.echo]\nmodule = \"echo.js\"\nroles = [\"authenticated\"]\n\
                    args.n = { type = \"integer\" }\n";
    let echo = "export default ({ n }, ctx) => ctx.request.query.raw === '1'
        ? { $response: { status: 202, headers: { 'x-n': String(n), 'set-cookie': 'a=b',
            'x-frame-options': 'ALLOW' }, body: 'accepted' } }
        : { n, method: ctx.request.method, body: ctx.request.body }";
    let database = TestDatabase::sqlite();
    let server = kit::start_functions(declared, &[("echo.js", echo)], &database).await;
    let call = |method: Method, query: &str| {
        server
            .client
            .request(method, format!("{}/functions/v1/echo{query}", server.url))
            .header("apikey", &server.publishable)
            .bearer_auth(server.token_for(ALICE))
    };
    let put = call(Method::PUT, "")
        .json(&json!({"n": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(
        json(put).await,
        json!({"n": 7, "method": "PUT", "body": {"n": 7}})
    );
    let raw = call(Method::POST, "?raw=1")
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 202);
    assert_eq!(raw.headers()["x-n"], "1");
    assert!(raw.headers().get("set-cookie").is_none());
    assert_eq!(raw.headers()["x-frame-options"], "DENY", "the server's own");
    assert_eq!(raw.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(raw.text().await.unwrap(), "accepted");
    // Form bodies reach the function as fields, not as arguments.
    let form = call(Method::POST, "")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("n=text&tag=a&tag=b")
        .send()
        .await
        .unwrap();
    assert_eq!(
        json(form).await,
        json!({"n": null, "method": "POST", "body": {"n": "text", "tag": ["a", "b"]}})
    );
    let boundary = "gatehouse-boundary";
    let multipart = format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"note\"\r\n\r\nhello\r\n\
         --{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n\
         content-type: text/csv\r\n\r\nx,y\n1,2\r\n--{boundary}--\r\n"
    );
    let form = call(Method::POST, "")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(multipart)
        .send()
        .await
        .unwrap();
    assert_eq!(
        json(form).await["body"],
        json!({"note": "hello", "file": {"filename": "a.csv", "type": "text/csv", "size": 7, "text": "x,y\n1,2"}})
    );
    let text = call(Method::POST, "")
        .header("content-type", "text/plain")
        .body("just text")
        .send()
        .await
        .unwrap();
    assert_eq!(json(text).await["body"], "just text");
    let keyless = server
        .client
        .post(format!("{}/functions/v1/echo", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(keyless.status(), 401, "an API key is needed, as everywhere");
}

/// `ctx.fetch` reaches only the declared hosts, and only public addresses
/// unless private ones are allowed: loopback, private ranges, cloud metadata
/// and names resolving to loopback are refused after resolution; redirects are
/// answered, not followed.
#[tokio::test]
async fn ctx_fetch_reaches_only_what_the_declaration_allows() {
    use axum::response::Redirect;
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/hello", get(|| async { "hi from upstream" }))
        .route("/moved", get(|| async { Redirect::temporary("/hello") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let upstream = format!("127.0.0.1:{port}");
    let declared = format!(
        "[functions.open]\nmodule = \"get.js\"\nroles = [\"authenticated\"]\n\
         fetch = [\"{upstream}\", \"localhost\", \"169.254.169.254\", \"10.0.0.1\"]\n\
         args.url = {{ type = \"text\", not_null = true }}\n\
         [functions.local]\nmodule = \"get.js\"\nroles = [\"authenticated\"]\n\
         fetch = [\"{upstream}\"]\nfetch_private_addresses = true\n\
         args.url = {{ type = \"text\", not_null = true }}\n"
    );
    let get = "export default async ({ url }, ctx) => {
        try {
          const response = await ctx.fetch(url);
          return { status: response.status, body: await response.text(), location: response.headers.get('location') };
        } catch (error) { return { refused: error.message } }
    }";
    let database = TestDatabase::sqlite();
    let server = kit::start_functions(&declared, &[("get.js", get)], &database).await;
    let call = |name: &'static str, url: String| {
        let server = &server;
        async move { rpc(server, Some(ALICE), name, json!({ "url": url })).await }
    };
    let hello = format!("http://{upstream}/hello");
    let (status, body) = call("local", hello.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"status": 200, "body": "hi from upstream", "location": null})
    );
    let (_, moved) = call("local", format!("http://{upstream}/moved")).await;
    assert_eq!(moved["status"], 307, "not followed: {moved}");
    assert_eq!(moved["location"], "/hello");
    for url in [
        hello,
        format!("http://localhost:{port}/hello"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/".to_owned(),
    ] {
        let (_, body) = call("open", url.clone()).await;
        let refused = body["refused"]
            .as_str()
            .unwrap_or_else(|| panic!("{url}: {body}"));
        assert!(refused.contains("not a public address"), "{url}: {refused}");
    }
    for url in ["http://example.org/", "file:///etc/passwd", "ftp://x/"] {
        let (_, body) = call("local", url.to_owned()).await;
        assert!(body["refused"].is_string(), "{url}: {body}");
    }
}

/// `ctx.secrets.get(name)` reads only the secrets the function declares, from
/// the environment, and their values never reach the log.
#[tokio::test]
async fn ctx_secrets_give_each_function_only_its_own() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gatehouse.toml"),
        "[functions.pay]\nmodule = \"read.js\"\nroles = [\"anon\"]\nsecrets = [\"STRIPE_KEY\"]\n\
         [functions.other]\nmodule = \"read.js\"\nroles = [\"anon\"]\nsecrets = [\"MAIL_KEY\"]\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("functions")).unwrap();
    std::fs::write(
        dir.path().join("functions/read.js"),
        "export default (args, ctx) => ({ stripe: ctx.secrets.get('STRIPE_KEY'), mail: ctx.secrets.get('MAIL_KEY') })\n",
    )
    .unwrap();
    let env = [(
        "GATEHOUSE_FUNCTION_SECRET_STRIPE_KEY",
        "sk_test_never_logged",
    )];
    let process = kit::Process::serve(dir.path(), &[], &env);
    let key = std::fs::read_to_string(dir.path().join("gatehouse-data/publishable.key")).unwrap();
    let call = |name: &'static str| {
        reqwest::Client::new()
            .post(format!("{}/rest/v1/rpc/{name}", process.url))
            .header("apikey", key.trim())
            .json(&json!({}))
            .send()
    };
    let pay = call("pay").await.unwrap();
    assert_eq!(
        json(pay).await,
        json!({"stripe": "sk_test_never_logged", "mail": null})
    );
    let other = call("other").await.unwrap();
    assert_eq!(
        json(other).await,
        json!({"stripe": null, "mail": null}),
        "MAIL_KEY is not set"
    );
    let (_, logs) = process.terminate();
    assert!(!logs.contains("sk_test_never_logged"));
    assert!(
        logs.contains("GATEHOUSE_FUNCTION_SECRET_MAIL_KEY"),
        "the missing one is named"
    );
}

/// Development reloads a changed module within a second or two; a change that
/// does not compile leaves the previous version serving.
#[tokio::test]
async fn development_reloads_changed_modules() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gatehouse.toml"),
        "[functions.version]\nmodule = \"version.js\"\nroles = [\"anon\"]\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("functions")).unwrap();
    let module = dir.path().join("functions/version.js");
    std::fs::write(&module, "export default () => 1\n").unwrap();
    let process = kit::Process::serve(dir.path(), &[], &[]);
    let key = std::fs::read_to_string(dir.path().join("gatehouse-data/publishable.key")).unwrap();
    let version = || async {
        let response = reqwest::Client::new()
            .post(format!("{}/rest/v1/rpc/version", process.url))
            .header("apikey", key.trim())
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        json(response).await
    };
    let settles_at = |expected: Value| async move {
        for _ in 0..50 {
            if version().await == expected {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        false
    };
    assert_eq!(version().await, json!(1));
    std::fs::write(&module, "export default () => 2\n").unwrap();
    assert!(settles_at(json!(2)).await, "the change was not picked up");
    std::fs::write(&module, "export default () => {\n").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(
        version().await,
        json!(2),
        "a broken change leaves the last good one"
    );
    let (_, logs) = process.terminate();
    assert!(
        logs.contains("version.js:"),
        "the error names where:\n{logs}"
    );
}

/// A function returning a list of objects answers PostgREST's grammar on its
/// rows: filters, order, paging, select, an exact count and one object.
#[tokio::test]
async fn a_function_s_rows_take_filters_order_paging_and_select() {
    let database = TestDatabase::sqlite();
    let server = kit::start_functions(DECLARED, &MODULES, &database).await;
    let call = |method: Method, query: &str| {
        server
            .rest(method, &format!("rpc/menu?{query}"), None)
            .json(&json!({}))
    };
    let response = call(Method::POST, "select=name&price=lt.1000&order=price.desc")
        .send()
        .await
        .unwrap();
    assert_eq!(
        json(response).await,
        json!([{"name": "tea"}, {"name": "cake"}])
    );

    let response = call(Method::POST, "select=id&order=id&limit=1&offset=1")
        .header("prefer", "count=exact")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-range"], "1-1/3");
    assert_eq!(json(response).await, json!([{"id": 2}]));

    // Arguments and filters side by side in a GET.
    let response = call(Method::GET, "min=400&name=like.tea*&select=id")
        .send()
        .await
        .unwrap();
    assert_eq!(json(response).await, json!([{"id": 1}, {"id": 3}]));

    let one = |query: &str| {
        call(Method::POST, query)
            .header("accept", "application/vnd.pgrst.object+json")
            .send()
    };
    let response = one("id=eq.3").await.unwrap();
    assert_eq!(json(response).await["name"], "teapot");
    let response = one("price=gt.0").await.unwrap();
    assert_eq!(response.status(), 406);
    assert_eq!(json(response).await["code"], "PGRST116");

    for query in ["price=gt.cheap", "select=id,orders(*)", "order=tags"] {
        let response = call(Method::POST, query).send().await.unwrap();
        assert_eq!(response.status(), 400, "{query}");
    }
    // A function returning one object takes no row grammar, but answers as
    // the one object asked for.
    let response = server
        .rest(Method::POST, "rpc/add?a=eq.1", Some(ALICE))
        .json(&json!({"a": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = server
        .rest(Method::POST, "rpc/add", Some(ALICE))
        .header("accept", "application/vnd.pgrst.object+json")
        .json(&json!({"a": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(json(response).await, json!({"sum": 1}));
}

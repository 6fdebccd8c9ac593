//! Before triggers (`[[tables.<t>.triggers]]`): the function sees each row a
//! write makes or removes, inside the write's transaction; it may change the
//! new row (which the table's checks and policies then judge) or refuse the
//! write with its message; whatever it writes through `ctx.db` commits or rolls
//! back with the write, from `/rest/v1` and from a function's `ctx.db` alike.

use gatehouse_db::testing::TestDatabase;
use reqwest::Method;
use serde_json::{Value, json};

use crate::functions::rpc;
use crate::kit::{self, TestServer, json};

const ALICE: &str = "0190c2a4-7e5b-7000-8000-00000000a11c";
const BOB: &str = "0190c2a4-7e5b-7000-8000-000000000b0b";

const DECLARED: &str = r#"
[tables.profiles]
columns.id = { type = "bigint", primary_key = true }
columns.owner = { type = "uuid", not_null = true, server_set = "auth.uid()" }
columns.handle = { type = "text", not_null = true, unique = true }
columns.display_name = { type = "text", not_null = true, check = { max_length = 40 } }
columns.edits = { type = "integer", not_null = true, default = 0 }

[[tables.profiles.policies]]
name = "owners"
for = "all"
to = "authenticated"
using = "owner = auth.uid()"
with_check = "owner = auth.uid()"

[[tables.profiles.triggers]]
when = "before"
events = ["insert", "update"]
function = "normalise_profile"

[[tables.profiles.triggers]]
when = "before"
events = "delete"
function = "keep_some"

[tables.audit]
columns.id = { type = "bigint", primary_key = true }
columns.note = { type = "text", not_null = true }

[[tables.audit.policies]]
name = "anyone signed in appends and reads"
for = ["select", "insert"]
to = "authenticated"
using = "true"
with_check = "true"

[tables.chain]
columns.id = { type = "bigint", primary_key = true }
columns.n = { type = "integer", not_null = true }

[[tables.chain.policies]]
name = "open"
for = ["select", "insert"]
to = "authenticated"
using = "true"
with_check = "true"

[[tables.chain.triggers]]
when = "before"
events = "insert"
function = "chain_more"

[functions.chain_more]
module = "chain_more.js"

[functions.normalise_profile]
module = "normalise_profile.js"

[functions.keep_some]
module = "keep_some.js"

[functions.rename_then_fail]
module = "rename_then_fail.js"
roles = ["authenticated"]
args.id = { type = "bigint", not_null = true }
args.fail = { type = "boolean", default = false }
"#;

const MODULES: [(&str, &str); 4] = [
    (
        "chain_more.js",
        "export default async (args, ctx) => {
           const { error } = await ctx.db.from('chain').insert({ n: ctx.trigger.new.n + 1 });
           if (error) throw new Error(error.message);
         }",
    ),
    (
        "normalise_profile.js",
        "export default async (args, ctx) => {
           const { event, new: row, old } = ctx.trigger;
           const handle = String(row.handle).trim().toLowerCase();
           if (handle === 'admin') throw new Error('the handle admin is reserved');
           const next = { ...row, handle, display_name: String(row.display_name).trim() };
           if (event === 'UPDATE') next.edits = old.edits + 1;
           const { error } = await ctx.db.from('audit').insert({ note: `${event} ${handle} by ${ctx.user.id.slice(-4)}` });
           if (error) throw new Error(error.message);
           return next;
         }",
    ),
    (
        "keep_some.js",
        "export default (args, ctx) => {
           if (ctx.trigger.old.handle === 'keep') throw new Error('this profile is kept');
         }",
    ),
    (
        "rename_then_fail.js",
        "export default async ({ id, fail }, ctx) => {
           const { data, error } = await ctx.db.from('profiles').update({ display_name: ' Renamed ' }).eq('id', id).select('display_name, edits');
           if (error) throw new Error(error.message);
           if (fail) throw new Error('changed my mind');
           return data;
         }",
    ),
];

async fn write(
    server: &TestServer,
    method: Method,
    path: &str,
    who: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = server
        .rest(method, path, Some(who))
        .header("prefer", "return=representation");
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn read(server: &TestServer, path: &str) -> Value {
    let response = server
        .rest(Method::GET, path, Some(ALICE))
        .send()
        .await
        .unwrap();
    json(response).await
}

#[tokio::test]
async fn before_triggers_change_or_refuse_rows_inside_the_write() {
    for database in TestDatabase::all() {
        let server = kit::start_functions(DECLARED, &MODULES, &database).await;
        let profiles = "profiles?select=handle,display_name,edits";

        let (status, body) = write(
            &server,
            Method::POST,
            "profiles?select=id,handle,display_name",
            ALICE,
            Some(json!({"handle": "  Alice_1 ", "display_name": "  Alice  "})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(
            (&body[0]["handle"], &body[0]["display_name"]),
            (&json!("alice_1"), &json!("Alice"))
        );
        let id = body[0]["id"].clone();

        // Refused by the trigger: nothing of the write is kept, the trigger's
        // own audit row included.
        let (status, body) = write(
            &server,
            Method::POST,
            "profiles",
            ALICE,
            Some(json!({"handle": "ADMIN", "display_name": "x"})),
        )
        .await;
        assert_eq!((status, &body["code"]), (400, &json!("P0001")), "{body}");
        assert_eq!(body["message"], "the handle admin is reserved");
        // What the trigger leaves is judged by the table's checks.
        let (status, body) = write(
            &server,
            Method::POST,
            "profiles",
            ALICE,
            Some(json!({"handle": "long", "display_name": format!("  {}  ", "x".repeat(41))})),
        )
        .await;
        assert_eq!((status, &body["code"]), (400, &json!("22P02")), "{body}");

        let (status, body) = write(
            &server,
            Method::PATCH,
            &format!("profiles?id=eq.{id}&select=display_name,edits"),
            ALICE,
            Some(json!({"display_name": " Alice L. "})),
        )
        .await;
        assert_eq!(
            (status, body),
            (200, json!([{"display_name": "Alice L.", "edits": 1}]))
        );
        let (status, _) = write(
            &server,
            Method::PATCH,
            &format!("profiles?id=eq.{id}"),
            ALICE,
            Some(json!({"handle": "Admin"})),
        )
        .await;
        assert_eq!(status, 400);
        // Another user's row is not there to trigger on.
        let (status, body) = write(
            &server,
            Method::PATCH,
            &format!("profiles?id=eq.{id}"),
            BOB,
            Some(json!({"display_name": "Bob was here"})),
        )
        .await;
        assert_eq!((status, body), (200, json!([])));
        assert_eq!(
            read(&server, profiles).await,
            json!([{"handle": "alice_1", "display_name": "Alice L.", "edits": 1}])
        );
        assert_eq!(
            read(&server, "audit?select=note&order=id").await,
            json!([{"note": "INSERT alice_1 by a11c"}, {"note": "UPDATE alice_1 by a11c"}])
        );

        // A before-delete trigger refuses one row, and so the whole delete.
        write(
            &server,
            Method::POST,
            "profiles",
            ALICE,
            Some(json!({"handle": "keep", "display_name": "k"})),
        )
        .await;
        let (status, body) = write(&server, Method::DELETE, "profiles?id=gt.0", ALICE, None).await;
        assert_eq!(
            (status, &body["message"]),
            (400, &json!("this profile is kept"))
        );
        let (status, body) = write(
            &server,
            Method::DELETE,
            &format!("profiles?id=eq.{id}&select=handle"),
            ALICE,
            None,
        )
        .await;
        assert_eq!((status, body), (200, json!([{"handle": "alice_1"}])));
        assert_eq!(
            read(&server, "profiles?select=handle").await,
            json!([{"handle": "keep"}])
        );
    }
}

#[tokio::test]
async fn a_function_s_writes_run_the_triggers_in_its_transaction() {
    for database in TestDatabase::all() {
        let server = kit::start_functions(DECLARED, &MODULES, &database).await;
        let (_, body) = write(
            &server,
            Method::POST,
            "profiles?select=id",
            ALICE,
            Some(json!({"handle": "alice", "display_name": "Alice"})),
        )
        .await;
        let id = body[0]["id"].clone();
        let (status, body) = rpc(
            &server,
            Some(ALICE),
            "rename_then_fail",
            json!({"id": id, "fail": true}),
        )
        .await;
        assert_eq!((status, &body["message"]), (400, &json!("changed my mind")));
        assert_eq!(
            read(&server, "audit?select=note")
                .await
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            rpc(&server, Some(ALICE), "rename_then_fail", json!({"id": id})).await,
            (200, json!([{"display_name": "Renamed", "edits": 1}]))
        );
        assert_eq!(
            read(&server, "audit?select=note")
                .await
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
}

/// Mistakes in a trigger's declaration stop the start, saying what is wrong.
#[test]
fn a_wrong_trigger_declaration_stops_the_start() {
    for (trigger, said) in [
        (
            "when = \"before\"\nevents = \"insert\"\nfunction = \"nothing\"",
            "no function of that name",
        ),
        (
            "when = \"later\"\nevents = \"insert\"\nfunction = \"t\"",
            "before or after",
        ),
        (
            "when = \"before\"\nevents = \"upsert\"\nfunction = \"t\"",
            "insert, update or delete",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "[tables.notes]\ncolumns.id = {{ type = \"bigint\", primary_key = true }}\n\n\
             [[tables.notes.triggers]]\n{trigger}\n\n[functions.t]\nmodule = \"t.js\"\n"
        );
        std::fs::write(dir.path().join("gatehouse.toml"), config).unwrap();
        std::fs::create_dir(dir.path().join("functions")).unwrap();
        std::fs::write(
            dir.path().join("functions/t.js"),
            "export default () => {}\n",
        )
        .unwrap();
        let output = kit::gatehouse(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &[])
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(said), "{stderr}");
    }
}

/// A trigger whose writes fire itself again stops at a bounded depth with an
/// error, and nothing of the chain is kept; the server serves on.
#[tokio::test]
async fn triggers_firing_themselves_stop_at_a_bounded_depth() {
    let database = TestDatabase::sqlite();
    let server = kit::start_functions(DECLARED, &MODULES, &database).await;
    let (status, body) = write(&server, Method::POST, "chain", ALICE, Some(json!({"n": 0}))).await;
    assert_eq!((status, &body["code"]), (400, &json!("P0001")), "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("nested more than 4 deep"),
        "{body}"
    );
    assert_eq!(read(&server, "chain?select=n").await, json!([]));
    let (status, _) = write(
        &server,
        Method::POST,
        "audit",
        ALICE,
        Some(json!({"note": "still up"})),
    )
    .await;
    assert_eq!(status, 201);
}

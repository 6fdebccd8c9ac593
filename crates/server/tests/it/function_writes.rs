//! Writes through `ctx.db`: every query of one call in one transaction,
//! committed when the function returns and rolled back when it throws; as the
//! caller (a function changes no row the data API would not let them); a
//! definer's `ctx.admin.db`; and the limit on how long writes stay open.

use gatehouse_db::testing::TestDatabase;
use reqwest::Method;
use serde_json::{Value, json};

use crate::functions::rpc;
use crate::kit::{self, TestServer, json};

const ALICE: &str = "0190c2a4-7e5b-7000-8000-00000000a11c";
const BOB: &str = "0190c2a4-7e5b-7000-8000-000000000b0b";

const DECLARED: &str = r#"
[tables.notes]
columns.id = { type = "bigint", primary_key = true }
columns.owner = { type = "uuid", not_null = true, server_set = "auth.uid()" }
columns.title = { type = "text", not_null = true, unique = true }

[[tables.notes.policies]]
name = "owners"
for = "all"
to = "authenticated"
using = "owner = auth.uid()"
with_check = "owner = auth.uid()"

[functions.add_notes]
module = "add_notes.js"
roles = ["authenticated"]
args.titles = { type = "jsonb", not_null = true }
args.fail = { type = "boolean", default = false }

[functions.edit]
module = "edit.js"
roles = ["authenticated"]
args.id = { type = "bigint", not_null = true }
args.title = { type = "text" }

[functions.count_all]
module = "count_all.js"
roles = ["authenticated"]
security = "definer"

[functions.count_mine]
module = "count_all.js"
roles = ["authenticated"]

[functions.hold]
module = "hold.js"
roles = ["authenticated"]
write_ms = 2000
args.id = { type = "bigint", not_null = true }

[functions.slow_writer]
module = "slow_writer.js"
roles = ["authenticated"]
write_ms = 50
"#;

const MODULES: [(&str, &str); 5] = [
    (
        "hold.js",
        "export default async ({ id }, ctx) => {
           const { count } = await ctx.db.from('notes').update({ title: 'held' }, { count: 'exact' }).eq('id', id);
           const until = Date.now() + 300;
           while (Date.now() < until) {}
           return count;
         }",
    ),
    (
        "add_notes.js",
        "export default async ({ titles, fail }, ctx) => {
           const added = [];
           for (const title of titles) {
             const { data, error } = await ctx.db.from('notes').insert({ title }).select('id, title').single();
             if (error) throw new Error(`${error.code}: ${error.message}`);
             added.push(data);
           }
           const { count } = await ctx.db.from('notes').select('*', { count: 'exact', head: true });
           if (fail) throw new Error(`failed after ${added.length} of ${count}`);
           return { added, count };
         }",
    ),
    (
        "edit.js",
        "export default async ({ id, title }, ctx) => {
           const query = title === null
             ? ctx.db.from('notes').delete({ count: 'exact' })
             : ctx.db.from('notes').update({ title }, { count: 'exact' });
           const { count, error } = await query.eq('id', id);
           return { count, error: error && error.code };
         }",
    ),
    (
        "count_all.js",
        "export default async (args, ctx) => {
           const db = ctx.admin ? ctx.admin.db : ctx.db;
           const { count } = await db.from('notes').select('*', { count: 'exact', head: true });
           return { count, admin: ctx.admin !== undefined };
         }",
    ),
    (
        "slow_writer.js",
        "export default async (args, ctx) => {
           await ctx.db.from('notes').insert({ title: 'slow' });
           const until = Date.now() + 300;
           while (Date.now() < until) {}
           return 'done';
         }",
    ),
];

async fn titles(server: &TestServer, who: &str) -> Value {
    let response = server
        .rest(Method::GET, "notes?select=title&order=title", Some(who))
        .send()
        .await
        .unwrap();
    json(response).await
}

#[tokio::test]
async fn a_call_s_writes_commit_on_return_and_roll_back_on_throw() {
    for database in TestDatabase::all() {
        let server = kit::start_functions(DECLARED, &MODULES, &database).await;
        let (status, body) = rpc(
            &server,
            Some(ALICE),
            "add_notes",
            json!({"titles": ["a", "b"], "fail": true}),
        )
        .await;
        assert_eq!((status, &body["code"]), (400, &json!("P0001")), "{body}");
        assert_eq!(
            body["message"], "failed after 2 of 2",
            "its own writes were visible inside"
        );
        assert_eq!(
            titles(&server, ALICE).await,
            json!([]),
            "a throw keeps nothing"
        );

        let (status, body) = rpc(
            &server,
            Some(ALICE),
            "add_notes",
            json!({"titles": ["a", "b"]}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["count"], 2);
        assert_eq!(body["added"][1]["title"], "b");
        assert_eq!(
            titles(&server, ALICE).await,
            json!([{"title": "a"}, {"title": "b"}])
        );

        // A failing statement inside a call (a duplicate) surfaces as the
        // data API's error, and the throw it leads to undoes the call's rows.
        let (status, body) = rpc(
            &server,
            Some(ALICE),
            "add_notes",
            json!({"titles": ["c", "a"]}),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["message"].as_str().unwrap().starts_with("23505"),
            "{body}"
        );
        assert_eq!(
            titles(&server, ALICE).await,
            json!([{"title": "a"}, {"title": "b"}])
        );
    }
}

#[tokio::test]
async fn a_function_changes_only_what_its_caller_may() {
    for database in TestDatabase::all() {
        let server = kit::start_functions(DECLARED, &MODULES, &database).await;
        let (status, _) = rpc(&server, Some(ALICE), "add_notes", json!({"titles": ["a"]})).await;
        assert_eq!(status, 200);
        let (_, body) = rpc(&server, Some(BOB), "add_notes", json!({"titles": ["b"]})).await;
        let bobs = body["added"][0]["id"].clone();

        assert_eq!(
            rpc(
                &server,
                Some(ALICE),
                "edit",
                json!({"id": bobs, "title": "mine now"})
            )
            .await,
            (200, json!({"count": 0, "error": null})),
            "another user's row is not there to update"
        );
        assert_eq!(
            rpc(&server, Some(ALICE), "edit", json!({"id": bobs})).await,
            (200, json!({"count": 0, "error": null})),
            "nor to delete"
        );
        assert_eq!(titles(&server, BOB).await, json!([{"title": "b"}]));
        assert_eq!(
            rpc(
                &server,
                Some(BOB),
                "edit",
                json!({"id": bobs, "title": "b2"})
            )
            .await,
            (200, json!({"count": 1, "error": null}))
        );
        assert_eq!(titles(&server, BOB).await, json!([{"title": "b2"}]));

        // Only a definer function reaches past the policies, through ctx.admin.db.
        assert_eq!(
            rpc(&server, Some(ALICE), "count_mine", json!({})).await,
            (200, json!({"count": 1, "admin": false}))
        );
        assert_eq!(
            rpc(&server, Some(ALICE), "count_all", json!({})).await,
            (200, json!({"count": 2, "admin": true}))
        );
    }
}

#[tokio::test]
async fn writes_held_open_past_their_limit_are_rolled_back() {
    for database in TestDatabase::all() {
        let server = kit::start_functions(DECLARED, &MODULES, &database).await;
        let (status, body) = rpc(&server, Some(ALICE), "slow_writer", json!({})).await;
        assert_eq!((status, &body["code"]), (504, &json!("57014")), "{body}");
        assert_eq!(titles(&server, ALICE).await, json!([]));
        // The writer is free again.
        let (status, _) = rpc(
            &server,
            Some(ALICE),
            "add_notes",
            json!({"titles": ["after"]}),
        )
        .await;
        assert_eq!(status, 200);
    }
}

/// A PATCH conditional on a value that a concurrent transaction changes finds
/// no row (as PostgreSQL's READ COMMITTED has it), rather than reading the
/// skipped row as a failed `with check`.
#[tokio::test]
async fn a_conditional_update_racing_a_call_finds_no_row() {
    for database in TestDatabase::all() {
        let server = kit::start_functions(DECLARED, &MODULES, &database).await;
        let (_, body) = rpc(&server, Some(ALICE), "add_notes", json!({"titles": ["a"]})).await;
        let id = body["added"][0]["id"].clone();
        let holding = rpc(&server, Some(ALICE), "hold", json!({"id": id}));
        let racing = async {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let response = server
                .rest(
                    Method::PATCH,
                    &format!("notes?id=eq.{id}&title=eq.a"),
                    Some(ALICE),
                )
                .header("prefer", "return=representation")
                .json(&json!({"title": "raced"}))
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), json(response).await)
        };
        let (held, raced) = tokio::join!(holding, racing);
        assert_eq!(held, (200, json!(1)));
        assert_eq!(raced, (200, json!([])), "{:?}", database.location());
        assert_eq!(titles(&server, ALICE).await, json!([{"title": "held"}]));
    }
}

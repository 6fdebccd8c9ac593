//! The data API through HTTP, on SQLite and (in CI) PostgreSQL: owner policies,
//! deny by default, grants, validation, filters, paging and PostgREST's shapes.

use gatehouse_db::testing::TestDatabase;
use reqwest::Method;
use serde_json::{Value, json};

use crate::kit::{self, TestServer, json};

const NOTES: &str = r#"
[tables.notes]
columns.id = { type = "uuid", primary_key = true }
columns.owner = { type = "uuid", server_set = "auth.uid()", not_null = true }
columns.title = { type = "text", not_null = true, check = { max_length = 100 } }
columns.stars = { type = "integer", not_null = true, default = 0, check = { min = 0 } }
columns.public = { type = "boolean", not_null = true, default = false }
columns.slug = { type = "text", unique = true }
columns.created_at = { type = "timestamptz", server_set = "now()" }

[[tables.notes.policies]]
name = "owners do everything"
for = "all"
to = "authenticated"
using = "owner = auth.uid()"
with_check = "owner = auth.uid()"

[[tables.notes.policies]]
name = "public notes are readable"
for = "select"
to = ["anon", "authenticated"]
using = "public"

[tables.notes.grants.anon]
select = ["id", "title", "public"]

[tables.vault]
columns.id = { type = "bigint", primary_key = true }
columns.secret = { type = "text" }
"#;

const ALICE: &str = "0190c2a4-7e5b-7000-8000-00000000a11c";
const BOB: &str = "0190c2a4-7e5b-7000-8000-000000000b0b";

async fn insert(server: &TestServer, user: &str, body: Value) -> reqwest::Response {
    server
        .rest(Method::POST, "notes", Some(user))
        .header("prefer", "return=representation")
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn list(server: &TestServer, query: &str, user: Option<&str>) -> Value {
    let response = server
        .rest(Method::GET, &format!("notes?{query}"), user)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{query}");
    json(response).await
}

#[tokio::test]
async fn owners_see_and_change_only_their_rows() {
    for database in TestDatabase::all() {
        let server = kit::start_declared(NOTES, &database).await;
        let created = insert(&server, ALICE, json!({"title": "alice's", "slug": "a"})).await;
        assert_eq!(created.status(), 201);
        let row = json(created).await[0].clone();
        assert_eq!(row["owner"], ALICE, "the server sets the owner");
        assert_eq!(row["stars"], 0);
        assert_eq!(row["public"], false);
        assert!(
            row["created_at"].as_str().unwrap().ends_with("+00:00"),
            "{row}"
        );
        let id = row["id"].as_str().unwrap().to_owned();
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
        insert(&server, BOB, json!({"title": "bob's"})).await;

        let mine = list(&server, "select=title", Some(ALICE)).await;
        assert_eq!(mine, json!([{"title": "alice's"}]));
        assert_eq!(
            list(&server, &format!("id=eq.{id}"), Some(BOB)).await,
            json!([]),
            "hidden, not forbidden"
        );
        let single = server
            .rest(Method::GET, &format!("notes?id=eq.{id}"), Some(BOB))
            .header("accept", "application/vnd.pgrst.object+json")
            .send()
            .await
            .unwrap();
        assert_eq!(single.status(), 406);
        assert_eq!(json(single).await["code"], "PGRST116");

        for (method, body) in [
            (Method::PATCH, Some(json!({"title": "hacked"}))),
            (Method::DELETE, None),
        ] {
            let mut request = server.rest(method.clone(), &format!("notes?id=eq.{id}"), Some(BOB));
            if let Some(body) = body {
                request = request.json(&body);
            }
            assert_eq!(request.send().await.unwrap().status(), 204, "{method}");
        }
        assert_eq!(
            list(&server, "select=title", Some(ALICE)).await,
            json!([{"title": "alice's"}])
        );

        let changed = server
            .rest(Method::PATCH, &format!("notes?id=eq.{id}"), Some(ALICE))
            .header("prefer", "return=representation")
            .json(&json!({"title": "renamed", "stars": 3}))
            .send()
            .await
            .unwrap();
        assert_eq!(changed.status(), 200);
        assert_eq!(json(changed).await[0]["title"], "renamed");

        let deleted = server
            .rest(Method::DELETE, &format!("notes?id=eq.{id}"), Some(ALICE))
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), 204);
        assert_eq!(list(&server, "", Some(ALICE)).await, json!([]));
    }
}

#[tokio::test]
async fn identity_comes_from_the_token_not_the_body() {
    for database in TestDatabase::all() {
        let server = kit::start_declared(NOTES, &database).await;
        let forged = insert(&server, BOB, json!({"title": "mine?", "owner": ALICE})).await;
        assert_eq!(forged.status(), 400);
        let body = json(forged).await;
        assert_eq!(body["code"], "server_set_column");
        assert!(
            body["message"].as_str().unwrap().contains("owner"),
            "{body}"
        );
        // Sending one's own id, as supabase-js code often does, is fine.
        assert_eq!(
            insert(&server, BOB, json!({"title": "ok", "owner": BOB}))
                .await
                .status(),
            201
        );
        let id = list(&server, "select=id", Some(BOB)).await[0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let moved = server
            .rest(Method::PATCH, &format!("notes?id=eq.{id}"), Some(BOB))
            .json(&json!({"owner": ALICE}))
            .send()
            .await
            .unwrap();
        assert_eq!(moved.status(), 400);
        // The app's own server (secret key) may set server-set columns, e.g. to seed.
        let seeded = server
            .client
            .post(format!("{}/rest/v1/notes", server.url))
            .header("apikey", &server.secret)
            .json(&json!({"title": "seeded", "owner": ALICE, "created_at": "2020-01-01T00:00:00Z"}))
            .send()
            .await
            .unwrap();
        assert_eq!(seeded.status(), 201);
        let seen = list(
            &server,
            "select=title,created_at&title=eq.seeded",
            Some(ALICE),
        )
        .await;
        assert_eq!(
            seen,
            json!([{"title": "seeded", "created_at": "2020-01-01T00:00:00+00:00"}])
        );
        let fake_time = insert(
            &server,
            BOB,
            json!({"title": "t", "created_at": "2000-01-01T00:00:00Z"}),
        )
        .await;
        assert_eq!(fake_time.status(), 400);
    }
}

#[tokio::test]
async fn anon_sees_public_rows_and_granted_columns_only() {
    let database = TestDatabase::sqlite();
    let server = kit::start_declared(NOTES, &database).await;
    insert(&server, ALICE, json!({"title": "open", "public": true})).await;
    insert(&server, ALICE, json!({"title": "closed"})).await;
    assert_eq!(
        list(&server, "", None).await,
        json!([{"id": list(&server, "select=id&public=is.true", None).await[0]["id"], "title": "open", "public": true}])
    );
    for query in ["select=owner", "owner=eq.x", "order=owner"] {
        let response = server
            .rest(Method::GET, &format!("notes?{query}"), None)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{query}");
        assert_eq!(json(response).await["code"], "42501");
    }
    let write = server
        .rest(Method::POST, "notes", None)
        .json(&json!({"title": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 401, "anon has no insert policy");
    // Bob sees Alice's public note through the second policy, all columns.
    let seen = list(&server, "select=title,owner", Some(BOB)).await;
    assert_eq!(seen, json!([{"title": "open", "owner": ALICE}]));
}

#[tokio::test]
async fn a_table_without_policies_is_unreachable_except_for_the_secret_key() {
    let database = TestDatabase::sqlite();
    let server = kit::start_declared(NOTES, &database).await;
    let anon = server
        .rest(Method::GET, "vault", None)
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    let signed_in = server
        .rest(Method::GET, "vault", Some(ALICE))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 403);
    assert_eq!(json(signed_in).await["code"], "42501");
    let insert = server
        .rest(Method::POST, "vault", Some(ALICE))
        .json(&json!({"secret": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(insert.status(), 403);

    let service = |method: Method, path: &str| {
        server
            .client
            .request(method, format!("{}/rest/v1/{path}", server.url))
            .header("apikey", &server.secret)
    };
    let created = service(Method::POST, "vault")
        .json(&json!({"secret": "s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let rows = json(service(Method::GET, "vault").send().await.unwrap()).await;
    assert_eq!(rows, json!([{"id": 1, "secret": "s"}]));
    let missing = server
        .rest(Method::GET, "nothing", Some(ALICE))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(json(missing).await["code"], "PGRST205");
}

#[tokio::test]
async fn filters_order_paging_and_counts() {
    for database in TestDatabase::all() {
        let server = kit::start_declared(NOTES, &database).await;
        for (title, stars) in [("a", 1), ("b", 5), ("c", 3), ("d", 0), ("e", 9)] {
            insert(&server, ALICE, json!({"title": title, "stars": stars})).await;
        }
        let titles = |rows: Value| {
            rows.as_array()
                .unwrap()
                .iter()
                .map(|r| r["title"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            titles(
                list(
                    &server,
                    "select=title&stars=gte.3&order=stars.desc",
                    Some(ALICE)
                )
                .await
            ),
            ["e", "b", "c"]
        );
        assert_eq!(
            titles(
                list(
                    &server,
                    "select=title&or=(stars.eq.0,title.eq.a)&order=title",
                    Some(ALICE)
                )
                .await
            ),
            ["a", "d"]
        );
        assert_eq!(
            titles(
                list(
                    &server,
                    "select=title&title=in.(b,c,zz)&order=title",
                    Some(ALICE)
                )
                .await
            ),
            ["b", "c"]
        );
        assert_eq!(
            titles(
                list(
                    &server,
                    "select=title&title=not.in.(b,c)&stars=lt.9&order=title",
                    Some(ALICE)
                )
                .await
            ),
            ["a", "d"]
        );
        assert_eq!(
            titles(list(&server, "select=title&title=like.*c*", Some(ALICE)).await),
            ["c"]
        );
        assert_eq!(
            titles(list(&server, "select=title&title=ilike.C", Some(ALICE)).await),
            ["c"]
        );
        assert_eq!(
            titles(list(&server, "select=title&title=like.C", Some(ALICE)).await),
            Vec::<String>::new()
        );
        assert_eq!(
            titles(
                list(
                    &server,
                    "select=title&order=title&limit=2&offset=1",
                    Some(ALICE)
                )
                .await
            ),
            ["b", "c"]
        );

        let counted = server
            .rest(Method::GET, "notes?select=title&order=title", Some(ALICE))
            .header("range", "1-2")
            .header("prefer", "count=exact")
            .send()
            .await
            .unwrap();
        assert_eq!(counted.headers()["content-range"], "1-2/5");
        assert_eq!(titles(json(counted).await), ["b", "c"]);
        let none = server
            .rest(Method::GET, "notes?title=eq.zz", Some(ALICE))
            .header("prefer", "count=exact")
            .send()
            .await
            .unwrap();
        assert_eq!(none.headers()["content-range"], "*/0");

        // A value that looks like SQL is only ever a value.
        for attack in ["' OR '1'='1", "a'); DROP TABLE notes; --", "\" OR 1=1 --"] {
            let query = format!("title=eq.{}", urlencode(attack));
            assert_eq!(
                list(&server, &query, Some(ALICE)).await,
                json!([]),
                "{attack}"
            );
        }
        assert_eq!(
            list(&server, "select=title", Some(ALICE))
                .await
                .as_array()
                .unwrap()
                .len(),
            5
        );
    }
}

fn urlencode(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
}

#[tokio::test]
async fn bad_input_gets_a_4xx_naming_the_problem() {
    for database in TestDatabase::all() {
        let server = kit::start_declared(NOTES, &database).await;
        insert(&server, ALICE, json!({"title": "t", "slug": "taken"})).await;
        let cases: Vec<(reqwest::RequestBuilder, u16, &str, &str)> = vec![
            (
                server
                    .rest(Method::POST, "notes", Some(ALICE))
                    .json(&json!({"title": "x", "stars": -1})),
                400,
                "22P02",
                "stars",
            ),
            (
                server
                    .rest(Method::POST, "notes", Some(ALICE))
                    .json(&json!({"title": "x".repeat(101)})),
                400,
                "22P02",
                "title",
            ),
            (
                server
                    .rest(Method::POST, "notes", Some(ALICE))
                    .json(&json!({"title": "x", "color": "red"})),
                400,
                "42703",
                "color",
            ),
            (
                server
                    .rest(Method::POST, "notes", Some(ALICE))
                    .json(&json!({"stars": 1})),
                400,
                "22P02",
                "title",
            ),
            (
                server
                    .rest(Method::POST, "notes", Some(ALICE))
                    .json(&json!({"title": 5})),
                400,
                "22P02",
                "title",
            ),
            (
                server
                    .rest(Method::POST, "notes", Some(ALICE))
                    .json(&json!({"title": "x", "slug": "taken"})),
                409,
                "23505",
                "",
            ),
            (
                server
                    .rest(Method::POST, "notes", Some(ALICE))
                    .header("content-type", "application/json")
                    .body("{oops"),
                400,
                "PGRST102",
                "",
            ),
            (
                server.rest(Method::GET, "notes?stars=eq.many", Some(ALICE)),
                400,
                "22P02",
                "stars",
            ),
            (
                server.rest(Method::GET, "notes?id=eq.not-a-uuid", Some(ALICE)),
                400,
                "22P02",
                "id",
            ),
            // PostgreSQL keeps no NUL in text: refused alike on both databases.
            (
                server.rest(Method::GET, "notes?title=eq.a%00b", Some(ALICE)),
                400,
                "22P02",
                "NUL",
            ),
            (
                server.rest(Method::GET, "notes?title=ilike.%00*", Some(ALICE)),
                400,
                "22P02",
                "NUL",
            ),
            (
                server
                    .rest(Method::POST, "notes", Some(ALICE))
                    .json(&json!({"title": "a\u{0}b"})),
                400,
                "22P02",
                "NUL",
            ),
            (
                server.rest(Method::GET, "notes?colour=eq.1", Some(ALICE)),
                400,
                "42703",
                "colour",
            ),
            (
                server.rest(Method::GET, "notes?stars=between.1", Some(ALICE)),
                400,
                "PGRST100",
                "between",
            ),
            (
                server.rest(Method::GET, "notes?order=stars.sideways", Some(ALICE)),
                400,
                "PGRST100",
                "sideways",
            ),
            (
                server
                    .rest(Method::GET, "notes", Some(ALICE))
                    .header("range", "5-1"),
                416,
                "PGRST103",
                "",
            ),
            (
                server.rest(Method::DELETE, "notes", Some(ALICE)),
                403,
                "21000",
                "DELETE",
            ),
            (
                server
                    .rest(Method::PATCH, "notes", Some(ALICE))
                    .json(&json!({"title": "all"})),
                403,
                "21000",
                "UPDATE",
            ),
        ];
        for (request, status, code, mentions) in cases {
            let response = request.send().await.unwrap();
            let got = response.status().as_u16();
            let body = json(response).await;
            assert_eq!(
                (got, body["code"].as_str().unwrap()),
                (status, code),
                "{body}"
            );
            assert!(
                body["message"].as_str().unwrap().contains(mentions),
                "{body}"
            );
            let text = body.to_string();
            assert!(
                !text.contains("INSERT") && !text.contains("SELECT") && !text.contains("sqlite"),
                "{text}"
            );
        }
    }
}

#[tokio::test]
async fn tokens_are_verified() {
    let database = TestDatabase::sqlite();
    let server = kit::start_declared(NOTES, &database).await;
    let get = |token: String| {
        server
            .client
            .get(format!("{}/rest/v1/notes", server.url))
            .header("apikey", &server.publishable)
            .bearer_auth(token)
    };
    let good = server.token_for(ALICE);
    assert_eq!(get(good.clone()).send().await.unwrap().status(), 200);
    let mut tampered = good.clone();
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    let other_keys = gatehouse_keys::KeySet::generate(
        gatehouse_keys::SigningAlgorithm::Es256,
        gatehouse_keys::KeyOrigin::Operator,
    )
    .unwrap();
    let claims: Value = server
        .running
        .state
        .signing_keys()
        .verify(&good, server.running.state.token_rules())
        .unwrap();
    let foreign = other_keys.sign(&claims).unwrap();
    let mut expired_claims = claims.clone();
    expired_claims["exp"] = json!(1_000_000);
    let expired = server
        .running
        .state
        .signing_keys()
        .sign(&expired_claims)
        .unwrap();
    for (token, message) in [
        (tampered, "JWT invalid"),
        (foreign, "JWT invalid"),
        (expired, "JWT expired"),
        ("garbage".into(), "JWT invalid"),
    ] {
        let response = get(token).send().await.unwrap();
        assert_eq!(response.status(), 401);
        let body = json(response).await;
        assert_eq!(
            (body["code"].as_str(), body["message"].as_str()),
            (Some("PGRST301"), Some(message))
        );
    }
}

const TEAMS: &str = r#"
[tables.teams]
columns.id = { type = "bigint", primary_key = true }
columns.name = { type = "text", not_null = true }

[tables.team_members]
columns.id = { type = "bigint", primary_key = true }
columns.team_id = { type = "bigint", not_null = true, references = "teams", on_delete = "cascade" }
columns.user_id = { type = "uuid", not_null = true }
unique = [["team_id", "user_id"]]

[tables.projects]
columns.id = { type = "bigint", primary_key = true }
columns.team_id = { type = "bigint", not_null = true, references = "teams" }
columns.title = { type = "text", not_null = true }
columns.budget = { type = "integer", not_null = true, default = 0 }

[[tables.projects.policies]]
name = "members read their team's projects"
for = ["select", "update"]
to = "authenticated"
using = "exists (select 1 from team_members m where m.team_id = projects.team_id and m.user_id = auth.uid())"
with_check = "budget <= 1000 and exists (select 1 from team_members m where m.team_id = projects.team_id and m.user_id = auth.uid())"

[[tables.projects.policies]]
name = "members add projects to their teams"
for = "insert"
to = "authenticated"
with_check = "exists (select 1 from team_members m where m.team_id = projects.team_id and m.user_id = auth.uid())"
"#;

#[tokio::test]
async fn membership_policies_and_with_check() {
    for database in TestDatabase::all() {
        let server = kit::start_declared(TEAMS, &database).await;
        let service = |path: &str, body: Value| {
            server
                .client
                .post(format!("{}/rest/v1/{path}", server.url))
                .header("apikey", &server.secret)
                .json(&body)
        };
        assert_eq!(
            service("teams", json!([{"name": "red"}, {"name": "blue"}]))
                .send()
                .await
                .unwrap()
                .status(),
            201
        );
        let members = json!([{"team_id": 1, "user_id": ALICE}, {"team_id": 2, "user_id": BOB}]);
        assert_eq!(
            service("team_members", members)
                .send()
                .await
                .unwrap()
                .status(),
            201
        );

        let add = |user: &str, body: Value| {
            server
                .rest(Method::POST, "projects", Some(user))
                .json(&body)
        };
        assert_eq!(
            add(ALICE, json!({"team_id": 1, "title": "apollo"}))
                .send()
                .await
                .unwrap()
                .status(),
            201
        );
        // Alice is not in team 2: the new row fails the check and nothing is kept.
        let foreign = add(
            ALICE,
            json!([{"team_id": 1, "title": "ok"}, {"team_id": 2, "title": "sneaky"}]),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(foreign.status(), 403);
        assert_eq!(json(foreign).await["code"], "42501");
        assert_eq!(
            add(BOB, json!({"team_id": 2, "title": "gemini"}))
                .send()
                .await
                .unwrap()
                .status(),
            201
        );

        let titles = |user: &'static str| {
            let request = server.rest(Method::GET, "projects?select=title&order=title", Some(user));
            async move { json(request.send().await.unwrap()).await }
        };
        assert_eq!(
            titles(ALICE).await,
            json!([{"title": "apollo"}]),
            "the batch was rolled back whole"
        );
        assert_eq!(titles(BOB).await, json!([{"title": "gemini"}]));

        // with check on update: over budget, or moved to a team she is not in.
        for change in [json!({"budget": 5000}), json!({"team_id": 2})] {
            let response = server
                .rest(Method::PATCH, "projects?title=eq.apollo", Some(ALICE))
                .json(&change)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 403, "{change}");
        }
        let fine = server
            .rest(Method::PATCH, "projects?title=eq.apollo", Some(ALICE))
            .header("prefer", "return=representation")
            .json(&json!({"budget": 500}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            json(fine).await,
            json!([{"id": 1, "team_id": 1, "title": "apollo", "budget": 500}])
        );
        // No delete policy at all.
        let delete = server
            .rest(Method::DELETE, "projects?id=eq.1", Some(ALICE))
            .send()
            .await
            .unwrap();
        assert_eq!(delete.status(), 403);
    }
}

async fn upsert(
    server: &TestServer,
    user: &str,
    query: &str,
    resolution: &str,
    body: Value,
) -> reqwest::Response {
    server
        .rest(Method::POST, &format!("notes?{query}"), Some(user))
        .header(
            "prefer",
            format!("return=representation,resolution={resolution}"),
        )
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn upserts_merge_own_rows_and_never_take_over_others() {
    for database in TestDatabase::all() {
        let server = kit::start_declared(NOTES, &database).await;
        let first = upsert(
            &server,
            ALICE,
            "on_conflict=slug",
            "merge-duplicates",
            json!({"slug": "s", "title": "one"}),
        )
        .await;
        assert_eq!(first.status(), 201);
        let id = json(first).await[0]["id"].clone();
        let merged = upsert(
            &server,
            ALICE,
            "on_conflict=slug",
            "merge-duplicates",
            json!({"slug": "s", "title": "two", "stars": 4}),
        )
        .await;
        assert_eq!(merged.status(), 201);
        let row = json(merged).await[0].clone();
        assert_eq!(
            (
                row["id"].clone(),
                row["title"].clone(),
                row["stars"].clone()
            ),
            (id.clone(), json!("two"), json!(4))
        );

        // Bob cannot merge into Alice's row, by unique column or by primary key.
        for (query, body) in [
            (
                "on_conflict=slug",
                json!({"slug": "s", "title": "bob was here"}),
            ),
            ("", json!({"id": id, "title": "bob was here"})),
        ] {
            let taken = upsert(&server, BOB, query, "merge-duplicates", body).await;
            assert_eq!(taken.status(), 403, "{query}");
        }
        let ignored = upsert(
            &server,
            BOB,
            "on_conflict=slug",
            "ignore-duplicates",
            json!({"slug": "s", "title": "x"}),
        )
        .await;
        assert_eq!(ignored.status(), 201);
        assert_eq!(json(ignored).await, json!([]));
        assert_eq!(
            list(&server, "select=title,stars", Some(ALICE)).await,
            json!([{"title": "two", "stars": 4}])
        );

        let not_unique = upsert(
            &server,
            ALICE,
            "on_conflict=title",
            "merge-duplicates",
            json!({"title": "t"}),
        )
        .await;
        assert_eq!(not_unique.status(), 400);
    }
}

const BLOG: &str = r#"
[tables.posts]
columns.id = { type = "bigint", primary_key = true }
columns.owner = { type = "uuid", not_null = true, server_set = "auth.uid()" }
columns.title = { type = "text", not_null = true }

[[tables.posts.policies]]
name = "own posts"
for = ["select", "insert"]
to = "authenticated"
using = "owner = auth.uid()"
with_check = "owner = auth.uid()"

[tables.comments]
columns.id = { type = "bigint", primary_key = true }
columns.post_id = { type = "bigint", not_null = true, references = "posts", on_delete = "cascade" }
columns.body = { type = "text", not_null = true }

[[tables.comments.policies]]
name = "comments on own posts"
for = ["select", "insert"]
to = "authenticated"
using = "exists (select 1 from posts p where p.id = comments.post_id and p.owner = auth.uid())"
with_check = "exists (select 1 from posts p where p.id = comments.post_id and p.owner = auth.uid())"

[tables.audit]
columns.id = { type = "bigint", primary_key = true }
columns.post_id = { type = "bigint", references = "posts" }
"#;

#[tokio::test]
async fn embedded_resources_follow_foreign_keys_and_policies() {
    for database in TestDatabase::all() {
        let server = kit::start_declared(BLOG, &database).await;
        let post =
            |user: &str, body: Value| server.rest(Method::POST, "posts", Some(user)).json(&body);
        assert_eq!(
            post(ALICE, json!([{"title": "hello"}, {"title": "quiet"}]))
                .send()
                .await
                .unwrap()
                .status(),
            201
        );
        assert_eq!(
            post(BOB, json!({"title": "bob's"}))
                .send()
                .await
                .unwrap()
                .status(),
            201
        );
        let comment = |user: &str, body: Value| {
            server
                .rest(Method::POST, "comments", Some(user))
                .json(&body)
        };
        let first = json!([{"post_id": 1, "body": "first"}, {"post_id": 1, "body": "second"}]);
        assert_eq!(comment(ALICE, first).send().await.unwrap().status(), 201);
        assert_eq!(
            comment(BOB, json!({"post_id": 3, "body": "bob on bob"}))
                .send()
                .await
                .unwrap()
                .status(),
            201
        );

        let get = |query: &str, user: &str| {
            let request = server.rest(Method::GET, query, Some(user));
            async move {
                let response = request.send().await.unwrap();
                (response.status().as_u16(), json(response).await)
            }
        };
        let (_, nested) = get("posts?select=title,comments(body)&order=id", ALICE).await;
        assert_eq!(
            nested,
            json!([
                {"title": "hello", "comments": [{"body": "first"}, {"body": "second"}]},
                {"title": "quiet", "comments": []},
            ])
        );
        let (_, upward) = get(
            "comments?select=body,post:posts(title)&order=id&limit=1",
            ALICE,
        )
        .await;
        assert_eq!(
            upward,
            json!([{"body": "first", "post": {"title": "hello"}}])
        );
        let (_, round) = get(
            "posts?select=title,comments(body,posts(title))&id=eq.1&comments.body=eq.second",
            ALICE,
        )
        .await;
        assert_eq!(
            round,
            json!([{"title": "hello", "comments": [{"body": "second", "posts": {"title": "hello"}}]}])
        );
        let (_, inner) = get(
            "posts?select=title,comments!inner(body)&comments.body=eq.first",
            ALICE,
        )
        .await;
        assert_eq!(
            inner,
            json!([{"title": "hello", "comments": [{"body": "first"}]}])
        );

        let (_, paged) = get(
            "posts?select=title,comments(body)&order=id&comments.order=body.desc&comments.limit=1",
            ALICE,
        )
        .await;
        assert_eq!(
            paged,
            json!([{"title": "hello", "comments": [{"body": "second"}]}, {"title": "quiet", "comments": []}])
        );
        let (_, offset) = get(
            "posts?select=comments(body)&id=eq.1&comments.order=body&comments.offset=1",
            ALICE,
        )
        .await;
        assert_eq!(offset, json!([{"comments": [{"body": "second"}]}]));
        let third = comment(ALICE, json!({"post_id": 2, "body": "third"}))
            .send()
            .await
            .unwrap();
        assert_eq!(third.status(), 201);
        let (_, ordered) = get(
            "comments?select=body,posts(title)&order=posts(title).desc,body",
            ALICE,
        )
        .await;
        let bodies: Vec<&str> = ordered
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["body"].as_str().unwrap())
            .collect();
        assert_eq!(bodies, ["third", "first", "second"]);
        let (status, _) = get(
            "posts?select=title,comments(body)&order=comments(body)",
            ALICE,
        )
        .await;
        assert_eq!(status, 400, "only a to-one embed can order its parents");
        // Bob's view: his own post and comment, nothing of Alice's through any embed.
        let (_, bobs) = get("posts?select=title,comments(body)", BOB).await;
        assert_eq!(
            bobs,
            json!([{"title": "bob's", "comments": [{"body": "bob on bob"}]}])
        );
        let (_, bobs_comments) = get("comments?select=body,posts(title)", BOB).await;
        assert_eq!(
            bobs_comments,
            json!([{"body": "bob on bob", "posts": {"title": "bob's"}}])
        );

        let (status, body) = get("posts?select=title,likes(*)", ALICE).await;
        assert_eq!((status, body["code"].clone()), (400, json!("PGRST200")));
        let (status, body) = get("posts?select=title,audit(*)", ALICE).await;
        assert_eq!(
            (status, body["code"].clone()),
            (403, json!("42501")),
            "an embedded table keeps its own deny"
        );
    }
}

#[tokio::test]
async fn the_openapi_document_shows_only_what_the_caller_may_reach() {
    let database = TestDatabase::sqlite();
    let server = kit::start_declared(NOTES, &database).await;
    let document = |user: Option<&'static str>| {
        let request = server.rest(Method::GET, "", user);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(
                response.headers()["content-type"],
                "application/openapi+json"
            );
            json(response).await
        }
    };
    let anon = document(None).await;
    assert_eq!(anon["openapi"], "3.0.3");
    // Every method of the route is listed, as its Allow header says; what no
    // policy lets anon do answers 401 or 403 (or 400, malformed).
    let notes = &anon["paths"]["/notes"];
    let statuses = |operation: &Value| -> Vec<String> {
        operation["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    assert!(statuses(&notes["get"]).contains(&"200".to_owned()));
    for denied in ["post", "patch", "delete"] {
        assert_eq!(statuses(&notes[denied]), ["400", "401", "403"], "{denied}");
    }
    let properties: Vec<&String> = anon["components"]["schemas"]["notes"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(properties, ["id", "title", "public"], "anon's grant");
    assert!(anon["paths"].get("/vault").is_none());

    let alice = document(Some(ALICE)).await;
    let mut operations: Vec<&String> = alice["paths"]["/notes"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    operations.sort();
    assert_eq!(operations, ["delete", "get", "patch", "post"]);
    let notes = &alice["components"]["schemas"]["notes"];
    assert_eq!(notes["properties"]["owner"]["readOnly"], true);
    assert_eq!(notes["properties"]["title"]["maxLength"], 100);
    // Text holds no NUL on either database, and the document says so.
    assert_eq!(notes["properties"]["title"]["pattern"], "^[^\\u0000]*$");
    // A body carries what the caller may set, with the checks the server applies.
    let body = |method: &str| {
        alice["paths"]["/notes"][method]["requestBody"]["content"]["application/json"]["schema"]
            .clone()
    };
    let insert = body("post");
    assert_eq!(insert["required"], json!(["title"]));
    assert_eq!(insert["additionalProperties"], false);
    assert!(
        insert["properties"].get("owner").is_none(),
        "the server sets it"
    );
    assert_eq!(insert["properties"]["stars"]["minimum"], 0);
    assert_eq!(body("patch")["minProperties"], 1);
    let post = &alice["paths"]["/notes"]["post"];
    assert!(statuses(post).contains(&"409".to_owned()));
    let filter = alice["paths"]["/notes"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|parameter| parameter["name"] == "stars")
        .unwrap()["schema"]["pattern"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(filter.contains("(eq|neq|gt|gte|lt|lte)"), "{filter}");
    assert!(
        alice["paths"].get("/vault").is_none(),
        "no policy, not listed"
    );

    let service = server
        .client
        .get(format!("{}/rest/v1/", server.url))
        .header("apikey", &server.secret)
        .send()
        .await
        .unwrap();
    assert!(json(service).await["paths"].get("/vault").is_some());
}

#[tokio::test]
async fn jsonb_containment_filters_mean_the_same_on_both_databases() {
    const DOCS: &str = r#"
[tables.docs]
columns.id = { type = "bigint", primary_key = true }
columns.data = { type = "jsonb", not_null = true }

[[tables.docs.policies]]
name = "public"
for = "select"
to = "anon"
using = "true"
"#;
    for database in TestDatabase::all() {
        let server = kit::start_declared(DOCS, &database).await;
        let rows = json!([
            {"data": {"tags": ["a", "b"], "n": 1}},
            {"data": {"tags": ["b"], "n": 2}},
            {"data": {"other": true}},
        ]);
        let created = server
            .client
            .post(format!("{}/rest/v1/docs", server.url))
            .header("apikey", &server.secret)
            .json(&rows)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let ids = |query: &str| {
            let request = server.rest(
                Method::GET,
                &format!("docs?select=id&order=id&{query}"),
                None,
            );
            async move {
                let rows = json(request.send().await.unwrap()).await;
                rows.as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["id"].as_i64().unwrap())
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            ids(&format!("data=cs.{}", urlencode(r#"{"tags":["b"]}"#))).await,
            [1, 2]
        );
        assert_eq!(
            ids(&format!("data=cs.{}", urlencode(r#"{"tags":["a"],"n":1}"#))).await,
            [1]
        );
        assert_eq!(
            ids(&format!(
                "data=cd.{}",
                urlencode(r#"{"tags":["b"],"n":2,"x":0}"#)
            ))
            .await,
            [2]
        );
        assert_eq!(
            ids(&format!("data=not.cs.{}", urlencode(r#"{"tags":[]}"#))).await,
            [3]
        );
        let bad = server
            .rest(Method::GET, "docs?data=cs.not-json", None)
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
    }
}

/// 64 inserts at once on SQLite: every one is acknowledged and kept, and they
/// share commits (group commit), which `/metrics` shows as more writes than commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_inserts_share_commits_and_all_land() {
    let database = TestDatabase::sqlite();
    let server = kit::start_declared(NOTES, &database).await;
    let mut inserts = tokio::task::JoinSet::new();
    for i in 0..64 {
        let request = server
            .rest(Method::POST, "notes", Some(ALICE))
            .json(&json!({"title": format!("n{i}")}));
        inserts.spawn(request.send());
    }
    while let Some(response) = inserts.join_next().await {
        assert_eq!(response.unwrap().unwrap().status(), 201);
    }
    let rows = list(&server, "select=title&limit=100", Some(ALICE)).await;
    assert_eq!(rows.as_array().unwrap().len(), 64);
    let metrics = server.metrics().await;
    let counter = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from {metrics}"))
    };
    let (writes, commits) = (
        counter("gatehouse_sqlite_writes_total"),
        counter("gatehouse_sqlite_commits_total"),
    );
    assert!(writes > commits, "{writes} writes in {commits} commits");
}

/// `Accept: text/csv` (supabase-js `.csv()`): the same rows the policies let
/// through, as RFC 4180 CSV; a media type we do not produce is 406.
#[tokio::test]
async fn csv_answers_carry_the_same_rows_as_json() {
    for database in TestDatabase::all() {
        let server = kit::start_declared(NOTES, &database).await;
        insert(
            &server,
            ALICE,
            json!({"title": "plain", "slug": "p", "stars": 3}),
        )
        .await;
        insert(
            &server,
            ALICE,
            json!({"title": "with \"quotes\", a comma\nand a line", "public": true}),
        )
        .await;
        insert(&server, BOB, json!({"title": "bob's"})).await;
        let csv = |user: Option<&'static str>, query: &'static str| {
            let server = &server;
            async move {
                let response = server
                    .rest(Method::GET, &format!("notes?{query}"), user)
                    .header("accept", "text/csv")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                assert_eq!(
                    response.headers()["content-type"],
                    "text/csv; charset=utf-8"
                );
                response.text().await.unwrap()
            }
        };
        assert_eq!(
            csv(
                Some(ALICE),
                "select=title,stars,public,slug&order=stars.desc"
            )
            .await,
            "title,stars,public,slug\nplain,3,false,p\n\"with \"\"quotes\"\", a comma\nand a line\",0,true,\n",
        );
        assert_eq!(
            csv(None, "select=title").await,
            "title\n\"with \"\"quotes\"\", a comma\nand a line\"\n",
            "anon sees the public row only"
        );
        assert_eq!(
            csv(Some(BOB), "select=title&slug=eq.p").await,
            "",
            "no rows, no lines"
        );
        let json_after_all = server
            .rest(Method::GET, "notes?select=title&slug=eq.p", Some(ALICE))
            .header("accept", "text/csv;q=0, application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(
            json(json_after_all).await,
            json!([{"title": "plain"}]),
            "q=0 refuses CSV"
        );
        let far = server
            .rest(Method::GET, "notes", Some(ALICE))
            .header("range", "0-18446744073709551615")
            .send()
            .await
            .unwrap();
        assert_eq!(far.status(), 416);
        let refused = server
            .rest(Method::GET, "notes", Some(ALICE))
            .header("accept", "application/xml")
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 406);
        assert_eq!(json(refused).await["code"], "PGRST107");
    }
}

const NAMED_AS_IN_POSTGRES: &str = r#"
[tables."Customer Lists"]
columns.id = { type = "bigint", primary_key = true }
columns.ownerId = { type = "uuid", not_null = true, server_set = "auth.uid()" }
columns."list name" = { type = "text", not_null = true }

[[tables."Customer Lists".policies]]
name = "owners"
for = "all"
to = "authenticated"
using = "\"ownerId\" = auth.uid()"
with_check = "\"ownerId\" = auth.uid()"

[tables."Order Items"]
columns.id = { type = "bigint", primary_key = true }
columns.listId = { type = "bigint", not_null = true, references = "Customer Lists" }
columns."unit price" = { type = "integer", not_null = true }
columns."prénom" = { type = "text" }
columns.createdAt = { type = "timestamptz", server_set = "now()" }

[[tables."Order Items".policies]]
name = "items of one's lists"
for = "all"
to = "authenticated"
using = "exists (select 1 from \"Customer Lists\" l where l.id = \"Order Items\".\"listId\" and l.\"ownerId\" = auth.uid())"
with_check = "exists (select 1 from \"Customer Lists\" l where l.id = \"Order Items\".\"listId\" and l.\"ownerId\" = auth.uid())"
"#;

/// Tables and columns named as existing Supabase schemas name them: capitals,
/// spaces, other scripts; always quoted in SQL, still only from the declaration.
#[tokio::test]
async fn names_with_capitals_spaces_and_accents_are_served() {
    for database in TestDatabase::all() {
        let server = kit::start_declared(NAMED_AS_IN_POSTGRES, &database).await;
        let post = |path: &str, user: &str, body: Value| {
            server
                .rest(Method::POST, path, Some(user))
                .header("prefer", "return=representation")
                .json(&body)
                .send()
        };
        let list = post(
            "Customer%20Lists",
            ALICE,
            json!({"id": 1, "list name": "Weekly"}),
        )
        .await
        .unwrap();
        assert_eq!(list.status(), 201);
        assert_eq!(json(list).await[0]["ownerId"], ALICE);
        post(
            "Customer%20Lists",
            BOB,
            json!({"id": 2, "list name": "Bob's"}),
        )
        .await
        .unwrap();
        let items = post(
            "Order%20Items",
            ALICE,
            json!([{"id": 10, "listId": 1, "unit price": 250, "prénom": "Zoë"},
                   {"id": 11, "listId": 1, "unit price": 900}]),
        )
        .await
        .unwrap();
        assert_eq!(items.status(), 201);
        let into_bobs = post(
            "Order%20Items",
            ALICE,
            json!({"id": 12, "listId": 2, "unit price": 1}),
        )
        .await
        .unwrap();
        assert_eq!(
            into_bobs.status(),
            403,
            "the policy over quoted names holds"
        );

        let read = |user: &'static str, query: &'static str| {
            let server = &server;
            async move {
                let response = server
                    .rest(Method::GET, query, Some(user))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200, "{query}");
                json(response).await
            }
        };
        let embedded = read(
            ALICE,
            "Customer%20Lists?select=%22list%20name%22,items:%22Order%20Items%22(id,%22unit%20price%22,pr%C3%A9nom)&items.order=%22unit%20price%22.desc",
        )
        .await;
        assert_eq!(
            embedded,
            json!([{"list name": "Weekly", "items": [
                {"id": 11, "unit price": 900, "prénom": null},
                {"id": 10, "unit price": 250, "prénom": "Zoë"},
            ]}])
        );
        let filtered = read(
            ALICE,
            "Order%20Items?select=id,createdAt&unit%20price=gt.300&order=createdAt.desc",
        )
        .await;
        assert_eq!(filtered.as_array().unwrap().len(), 1);
        assert_eq!(filtered[0]["id"], 11);
        assert!(filtered[0]["createdAt"].is_string());
        assert_eq!(read(BOB, "Order%20Items?select=id").await, json!([]));
        let renamed = server
            .rest(
                Method::PATCH,
                "Order%20Items?pr%C3%A9nom=eq.Zo%C3%AB",
                Some(ALICE),
            )
            .header("prefer", "return=representation")
            .json(&json!({"prénom": "Zoé"}))
            .send()
            .await
            .unwrap();
        assert_eq!(json(renamed).await[0]["prénom"], "Zoé");
        let unknown = server
            .rest(Method::GET, "Order%20Items?select=createdat", Some(ALICE))
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), 400, "names keep their case");
    }
}

const PLACES: &str = r#"
[tables.places]
columns.id = { type = "bigint", primary_key = true }
columns.owner = { type = "uuid", not_null = true, server_set = "auth.uid()" }
columns.name = { type = "text", not_null = true }
columns.address = { type = "jsonb" }

[[tables.places.policies]]
name = "owners"
for = "all"
to = "authenticated"
using = "owner = auth.uid()"
with_check = "owner = auth.uid()"
"#;

/// JSON paths in select, filters and order, as PostgREST reads them: `->` gives
/// JSON, `->>` text; the same answers on both databases, under the same policy.
#[tokio::test]
async fn json_paths_select_filter_and_order() {
    for database in TestDatabase::all() {
        let server = kit::start_declared(PLACES, &database).await;
        let places = json!([
            {"id": 1, "name": "home", "address": {"city": "Paris", "postcode": "75001", "tags": ["a", "b"], "rank": 3, "geo": {"lat": 48.8}}},
            {"id": 2, "name": "work", "address": {"city": "Lyon", "postcode": "69001", "tags": ["b"], "rank": 10, "$odd": "yes", "a\"b\\c": "odd key", "[0]": "not an index"}},
            {"id": 3, "name": "nowhere", "address": null},
        ]);
        let created = server
            .rest(Method::POST, "places", Some(ALICE))
            .json(&places)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let bobs = server
            .rest(Method::POST, "places", Some(BOB))
            .json(&json!({"id": 4, "name": "bob's", "address": {"city": "Paris", "postcode": "75002"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(bobs.status(), 201);
        let get = |user: &'static str, query: &'static str| {
            let server = &server;
            async move {
                server
                    .rest(Method::GET, &format!("places?{query}"), Some(user))
                    .send()
                    .await
                    .unwrap()
            }
        };
        let read = |user: &'static str, query: &'static str| async move {
            let response = get(user, query).await;
            assert_eq!(response.status(), 200, "{query}");
            json(response).await
        };
        assert_eq!(
            read(ALICE, "select=id,address->city,zip:address->>postcode,first:address->tags->0,last:address->tags->-1,address->geo,odd:address->>$odd&id=lt.3&order=id").await,
            json!([
                {"id": 1, "city": "Paris", "zip": "75001", "first": "a", "last": "b", "geo": {"lat": 48.8}, "odd": null},
                {"id": 2, "city": "Lyon", "zip": "69001", "first": "b", "last": "b", "geo": null, "odd": "yes"},
            ])
        );
        assert_eq!(
            read(ALICE, "select=id,rank:address->>rank&order=address->>city.desc&address->>city=in.(Paris,Lyon)").await,
            json!([{"id": 1, "rank": "3"}, {"id": 2, "rank": "10"}]),
            "->> gives text; Bob's Paris stays hidden"
        );
        assert_eq!(
            read(ALICE, "select=id&address->>postcode=like.75*").await,
            json!([{"id": 1}])
        );
        assert_eq!(
            read(ALICE, "select=id&address->rank=eq.10").await,
            json!([{"id": 2}])
        );
        assert_eq!(
            read(ALICE, "select=id&address->tags=cs.[\"a\"]").await,
            json!([{"id": 1}])
        );
        assert_eq!(
            read(ALICE, "select=id&address->>city=is.null&order=id").await,
            json!([{"id": 3}])
        );
        assert_eq!(
            read(BOB, "select=id&address->>city=eq.Paris").await,
            json!([{"id": 4}])
        );
        assert_eq!(
            read(
                ALICE,
                "select=id,i:address->>[0]&address->>a\"b\\c=eq.odd%20key"
            )
            .await,
            json!([{"id": 2, "i": "not an index"}]),
            "keys are names, whatever they hold"
        );
        assert_eq!(
            read(ALICE, "select=id&address->>city=ilike.*ARIS").await,
            json!([{"id": 1}])
        );
        assert_eq!(
            read(
                ALICE,
                "select=id&address->geo=eq.{\"lat\":48.80}&address->rank=neq.10.0"
            )
            .await,
            json!([{"id": 1}]),
            "JSON equal as jsonb is: numbers by value, members in any order"
        );
        assert_eq!(
            read(
                ALICE,
                "select=id&address->tags=cd.[\"a\",\"b\",\"c\"]&order=id"
            )
            .await,
            json!([{"id": 1}, {"id": 2}])
        );
        for (query, why) in [
            ("select=name->x", "a path into a text column"),
            ("address->rank=gt.3", "ordering JSON values"),
            ("address->>city->x=eq.1", "a step after ->>"),
            (
                "select=address->5000000000",
                "an index beyond PostgreSQL's integer",
            ),
            ("select=address->>a%00", "a NUL in a key"),
            ("order=address", "ordering by JSON"),
            ("order=address->tags.desc", "ordering by a JSON value"),
            ("address->city=in.(\"Paris\")", "in over JSON values"),
        ] {
            assert_eq!(get(ALICE, query).await.status(), 400, "{why}: {query}");
        }
        let widened = server
            .rest(
                Method::DELETE,
                "places?id=eq.1&items.or=(x.eq.1)",
                Some(ALICE),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            widened.status(),
            400,
            "a write never drops a condition it cannot apply"
        );
        let patched = server
            .rest(Method::PATCH, "places?address->>city=eq.Lyon", Some(ALICE))
            .header("prefer", "return=representation")
            .json(&json!({"name": "office"}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            json(patched).await,
            json!([{"id": 2, "owner": ALICE, "name": "office", "address": places[1]["address"]}])
        );
    }
}

const CITIES: &str = r#"
[tables.countries]
columns.id = { type = "bigint", primary_key = true }
columns.name = { type = "text", not_null = true }

[[tables.countries.policies]]
name = "public"
for = "select"
to = ["anon", "authenticated"]
using = "true"

[tables.cities]
columns.id = { type = "bigint", primary_key = true }
columns.name = { type = "text", not_null = true }
columns.country_id = { type = "bigint", references = "countries" }
columns.hidden = { type = "boolean", not_null = true, default = false }

[[tables.cities.policies]]
name = "public unless hidden"
for = "select"
to = ["anon", "authenticated"]
using = "not hidden"
"#;

/// `country:country_id(name)` embeds through the foreign-key column's name, and
/// `cities.or=(…)` filters an embed's rows, each under the embedded table's policy.
#[tokio::test]
async fn embeds_by_foreign_key_column_and_conditions_on_embeds() {
    for database in TestDatabase::all() {
        let server = kit::start_declared(CITIES, &database).await;
        kit::seed(
            &server,
            "countries",
            json!([{"id": 1, "name": "France"}, {"id": 2, "name": "Spain"}]),
        )
        .await;
        let created = kit::seed(
            &server,
            "cities",
            json!([
                {"id": 1, "name": "Paris", "country_id": 1},
                {"id": 2, "name": "Lyon", "country_id": 1},
                {"id": 3, "name": "Nice", "country_id": 1, "hidden": true},
                {"id": 4, "name": "Madrid", "country_id": 2},
            ]),
        )
        .await;
        assert_eq!(created.status(), 201);
        let read = |query: &'static str| {
            let server = &server;
            async move {
                let response = server.rest(Method::GET, query, None).send().await.unwrap();
                assert_eq!(response.status(), 200, "{query}");
                json(response).await
            }
        };
        assert_eq!(
            read("cities?select=name,country:country_id(name)&id=lt.3&order=id").await,
            json!([{"name": "Paris", "country": {"name": "France"}}, {"name": "Lyon", "country": {"name": "France"}}])
        );
        assert_eq!(
            read("cities?select=name,country_id(name)&id=eq.4").await,
            json!([{"name": "Madrid", "country_id": {"name": "Spain"}}]),
            "unaliased, the key is the column's name"
        );
        assert_eq!(
            read("countries?select=name,cities(name)&cities.or=(name.eq.Nice,name.eq.Lyon,name.eq.Madrid)&cities.order=name&order=id").await,
            json!([{"name": "France", "cities": [{"name": "Lyon"}]}, {"name": "Spain", "cities": [{"name": "Madrid"}]}]),
            "the condition picks embedded rows; the hidden city stays hidden"
        );
        let missing = server
            .rest(
                Method::GET,
                "countries?select=name&cities.or=(name.eq.x)",
                None,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            missing.status(),
            400,
            "a condition on an embed that is not selected"
        );
    }
}

const TAGGED: &str = r#"
[tables.posts]
columns.id = { type = "bigint", primary_key = true }
columns.owner = { type = "uuid", not_null = true, server_set = "auth.uid()" }
columns.tags = { type = "text[]" }
columns.scores = { type = "integer[]" }
columns.readers = { type = "uuid[]" }

[[tables.posts.policies]]
name = "owners"
for = "all"
to = "authenticated"
using = "owner = auth.uid()"
with_check = "owner = auth.uid()"
"#;

/// Array columns as PostgREST serves them: JSON arrays in and out, `cs`, `cd`
/// and `ov` with PostgreSQL's array literals (as supabase-js writes them), the
/// same answers on both databases, under the same policy.
#[tokio::test]
async fn array_columns_with_containment_and_overlap() {
    for database in TestDatabase::all() {
        let server = kit::start_declared(TAGGED, &database).await;
        let created = server
            .rest(Method::POST, "posts", Some(ALICE))
            .header("prefer", "return=representation")
            .json(&json!([
                {"id": 1, "tags": ["rust", "sql", "a \"quoted\", comma"], "scores": [1, 2, 3], "readers": [BOB.to_uppercase()]},
                {"id": 2, "tags": ["go"], "scores": [], "readers": []},
                {"id": 3, "tags": null, "scores": [null, 7]},
            ]))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let rows = json(created).await;
        assert_eq!(
            rows[0]["tags"],
            json!(["rust", "sql", "a \"quoted\", comma"])
        );
        assert_eq!(rows[0]["readers"], json!([BOB]), "uuids in canonical form");
        assert_eq!(rows[1]["scores"], json!([]));
        server
            .rest(Method::POST, "posts", Some(BOB))
            .json(&json!({"id": 4, "tags": ["rust"]}))
            .send()
            .await
            .unwrap();
        let ids = |query: String| {
            let server = &server;
            async move {
                let response = server
                    .rest(
                        Method::GET,
                        &format!("posts?select=id&order=id&{query}"),
                        Some(ALICE),
                    )
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200, "{query}");
                json(response).await
            }
        };
        assert_eq!(
            ids("tags=cs.{rust}".into()).await,
            json!([{"id": 1}]),
            "Bob's stays hidden"
        );
        assert_eq!(
            ids("tags=cs.{\"a \\\"quoted\\\", comma\",sql}".into()).await,
            json!([{"id": 1}])
        );
        assert_eq!(
            ids("tags=cd.{go,rust,java}".into()).await,
            json!([{"id": 2}])
        );
        assert_eq!(
            ids("tags=ov.{java,go,sql}".into()).await,
            json!([{"id": 1}, {"id": 2}])
        );
        assert_eq!(ids("scores=cs.{2,3}".into()).await, json!([{"id": 1}]));
        assert_eq!(ids("scores=cs.{7}".into()).await, json!([{"id": 3}]));
        assert_eq!(
            ids("scores=cs.{NULL}".into()).await,
            json!([]),
            "NULL is no element"
        );
        assert_eq!(ids("tags=eq.{go}".into()).await, json!([{"id": 2}]));
        assert_eq!(ids("tags=is.null".into()).await, json!([{"id": 3}]));
        assert_eq!(
            ids(format!("readers=cs.{{{BOB}}}")).await,
            json!([{"id": 1}])
        );
        for bad in [
            "posts?scores=cs.{x}",
            "posts?tags=gt.{a}",
            "posts?tags=cs.[\"a\"]",
            "posts?id=ov.{1}",
        ] {
            let response = server
                .rest(Method::GET, bad, Some(ALICE))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 400, "{bad}");
        }
        let wrong = server
            .rest(Method::POST, "posts", Some(ALICE))
            .json(&json!({"id": 5, "scores": ["one"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 400);
    }
}

const MEMBERSHIPS: &str = r#"
[tables.clubs]
columns.id = { type = "bigint", primary_key = true }
columns.name = { type = "text", not_null = true }

[[tables.clubs.policies]]
name = "public"
for = "select"
to = "authenticated"
using = "true"

[tables.memberships]
primary_key = ["club_id", "user_id"]
columns.club_id = { type = "bigint", references = "clubs" }
columns.user_id = { type = "uuid", server_set = "auth.uid()" }
columns.role = { type = "text", not_null = true, default = "member" }

[[tables.memberships.policies]]
name = "own memberships"
for = "all"
to = "authenticated"
using = "user_id = auth.uid()"
with_check = "user_id = auth.uid()"
"#;

/// A primary key of two columns: each pair once, upserts on the whole key, and
/// the same owner policy.
#[tokio::test]
async fn composite_primary_keys() {
    for database in TestDatabase::all() {
        let server = kit::start_declared(MEMBERSHIPS, &database).await;
        server
            .client
            .post(format!("{}/rest/v1/clubs", server.url))
            .header("apikey", &server.secret)
            .bearer_auth(&server.secret)
            .json(&json!([{"id": 1, "name": "chess"}, {"id": 2, "name": "go"}]))
            .send()
            .await
            .unwrap();
        let join = |user: &'static str, body: Value, prefer: &'static str| {
            let server = &server;
            async move {
                server
                    .rest(Method::POST, "memberships", Some(user))
                    .header("prefer", prefer)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
            }
        };
        let joined = join(
            ALICE,
            json!([{"club_id": 1}, {"club_id": 2}]),
            "return=representation",
        )
        .await;
        assert_eq!(joined.status(), 201);
        assert_eq!(
            json(joined).await[0],
            json!({"club_id": 1, "user_id": ALICE, "role": "member"})
        );
        assert_eq!(
            join(BOB, json!({"club_id": 1}), "").await.status(),
            201,
            "another user, the same club"
        );
        let again = join(ALICE, json!({"club_id": 1}), "").await;
        assert_eq!(again.status(), 409, "each pair once");
        let upserted = join(
            ALICE,
            json!({"club_id": 1, "role": "captain"}),
            "resolution=merge-duplicates,return=representation",
        )
        .await;
        assert_eq!(upserted.status(), 201);
        assert_eq!(json(upserted).await[0]["role"], "captain");
        let named = server
            .rest(
                Method::POST,
                "memberships?on_conflict=user_id,club_id",
                Some(ALICE),
            )
            .header("prefer", "resolution=merge-duplicates")
            .json(&json!({"club_id": 2, "role": "member"}))
            .send()
            .await
            .unwrap();
        assert_eq!(named.status(), 201, "the key's columns in any order");
        let mine = server
            .rest(
                Method::GET,
                "memberships?select=club_id,role,clubs(name)&order=club_id",
                Some(ALICE),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            json(mine).await,
            json!([{"club_id": 1, "role": "captain", "clubs": {"name": "chess"}},
                   {"club_id": 2, "role": "member", "clubs": {"name": "go"}}])
        );
        let bobs = server
            .rest(Method::GET, "memberships?select=role", Some(BOB))
            .send()
            .await
            .unwrap();
        assert_eq!(
            json(bobs).await,
            json!([{"role": "member"}]),
            "the upsert touched Alice's pair only"
        );
        let left = server
            .rest(Method::DELETE, "memberships?club_id=eq.2", Some(ALICE))
            .send()
            .await
            .unwrap();
        assert_eq!(left.status(), 204);
    }
}

const PEOPLE_AND_GROUPS: &str = r#"
[tables.people]
columns.id = { type = "bigint", primary_key = true }
columns.name = { type = "text", not_null = true }

[tables.groups]
columns.id = { type = "bigint", primary_key = true }
columns.name = { type = "text", not_null = true }
columns.secret = { type = "boolean", not_null = true, default = false }

[tables.memberships]
primary_key = ["person_id", "group_id"]
columns.person_id = { type = "bigint", references = "people" }
columns.group_id = { type = "bigint", references = "groups" }

[[tables.people.policies]]
name = "read"
for = "select"
to = "authenticated"
using = "true"

[[tables.groups.policies]]
name = "read all but secret groups"
for = "select"
to = "authenticated"
using = "not secret"

[[tables.memberships.policies]]
name = "read"
for = "select"
to = "authenticated"
using = "true"
"#;

/// `people?select=name,groups(name)`: many-to-many through a junction whose key
/// references both sides, each table read under its own policy.
#[tokio::test]
async fn many_to_many_embeds_through_a_junction() {
    for database in TestDatabase::all() {
        let server = kit::start_declared(PEOPLE_AND_GROUPS, &database).await;
        kit::seed(
            &server,
            "people",
            json!([{"id": 1, "name": "Ann"}, {"id": 2, "name": "Ben"}, {"id": 3, "name": "Cy"}]),
        )
        .await;
        let groups = json!([{"id": 10, "name": "chess"}, {"id": 11, "name": "go"},
                            {"id": 12, "name": "cabal", "secret": true}]);
        kit::seed(&server, "groups", groups).await;
        let pairs = json!([{"person_id": 1, "group_id": 10}, {"person_id": 1, "group_id": 11},
                           {"person_id": 1, "group_id": 12}, {"person_id": 2, "group_id": 11}]);
        assert_eq!(kit::seed(&server, "memberships", pairs).await.status(), 201);
        let read = |query: &'static str| {
            let server = &server;
            async move {
                let response = server
                    .rest(Method::GET, query, Some(ALICE))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200, "{query}");
                json(response).await
            }
        };
        assert_eq!(
            read("people?select=name,groups(name)&order=id&groups.order=name.desc").await,
            json!([
                {"name": "Ann", "groups": [{"name": "go"}, {"name": "chess"}]},
                {"name": "Ben", "groups": [{"name": "go"}]},
                {"name": "Cy", "groups": []},
            ]),
            "the secret group stays hidden"
        );
        assert_eq!(
            read("groups?select=name,people(name)&id=eq.11").await,
            json!([{"name": "go", "people": [{"name": "Ann"}, {"name": "Ben"}]}]),
            "and the other way round"
        );
        assert_eq!(
            read("people?select=name,groups!inner(name)&groups.name=eq.chess").await,
            json!([{"name": "Ann", "groups": [{"name": "chess"}]}])
        );
        assert_eq!(
            read("people?select=name,groups(name)&groups.limit=1&groups.order=name&id=eq.1").await,
            json!([{"name": "Ann", "groups": [{"name": "chess"}]}])
        );
    }
}

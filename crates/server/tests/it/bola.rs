//! The BOLA matrix: user B tries every way the API offers to read, count, change,
//! delete or take over user A's row. Each must behave as if the row did not exist.

use gatehouse_db::testing::TestDatabase;
use reqwest::Method;
use serde_json::{Value, json};

use crate::kit::{self, json};

const NOTES: &str = r#"
[tables.notes]
columns.id = { type = "uuid", primary_key = true }
columns.owner = { type = "uuid", not_null = true, server_set = "auth.uid()" }
columns.title = { type = "text", not_null = true, searchable = true }
columns.stars = { type = "integer", not_null = true, default = 0 }
columns.slug = { type = "text", unique = true }
columns.meta = { type = "jsonb" }

[[tables.notes.policies]]
name = "owners only"
for = "all"
to = "authenticated"
using = "owner = auth.uid()"
with_check = "owner = auth.uid()"
"#;

const ALICE: &str = "0190c2a4-7e5b-7000-8000-00000000a11c";
const BOB: &str = "0190c2a4-7e5b-7000-8000-000000000b0b";

#[tokio::test]
async fn user_b_can_do_nothing_to_user_a_s_rows() {
    for database in TestDatabase::all() {
        let server = kit::start_declared(NOTES, &database).await;
        let created = server
            .rest(Method::POST, "notes", Some(ALICE))
            .header("prefer", "return=representation")
            .json(&json!({"title": "alice", "stars": 5, "slug": "a", "meta": {"tag": "alice", "n": [1]}}))
            .send()
            .await
            .unwrap();
        let alice_row = json(created).await[0].clone();
        let id = alice_row["id"].as_str().unwrap().to_owned();
        server
            .rest(Method::POST, "notes", Some(BOB))
            .json(&json!({"title": "bob", "slug": "b"}))
            .send()
            .await
            .unwrap();

        let reads = [
            format!("notes?id=eq.{id}"),
            format!("notes?or=(id.eq.{id},owner.eq.{ALICE})"),
            format!("notes?owner=eq.{ALICE}"),
            format!("notes?owner=not.eq.{BOB}"),
            "notes?title=eq.alice".to_owned(),
            "notes?stars=gte.5".to_owned(),
            "notes?slug=in.(a,b)&select=slug".to_owned(),
            "notes?order=stars.desc&limit=1".to_owned(),
            "notes?or=(title.like.*,stars.gte.0)&offset=0".to_owned(),
            "notes?meta->>tag=eq.alice".to_owned(),
            "notes?select=title,tag:meta->>tag&meta->n->0=eq.1".to_owned(),
            "notes?meta->n=cs.[1]&order=meta->>tag".to_owned(),
            "notes?or=(meta->>tag.eq.alice,meta->>tag.is.null)".to_owned(),
            "notes?title=fts.alice".to_owned(),
            "notes?title=wfts(simple).alice%20or%20bob".to_owned(),
            "notes?or=(title.plfts.alice,title.phfts.bob)".to_owned(),
            "notes?title=not.fts.bob".to_owned(),
        ];
        for query in &reads {
            let response = server
                .rest(Method::GET, query, Some(BOB))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{query}");
            let rows = json(response).await;
            assert!(
                rows.as_array()
                    .unwrap()
                    .iter()
                    .all(|row| row.get("owner").is_none_or(|o| o == BOB)),
                "{query}: {rows}"
            );
            assert!(!rows.to_string().contains("alice"), "{query}: {rows}");
        }
        // The same reads as CSV: other rows, other answers, the same policy.
        for query in &reads {
            let response = server
                .rest(Method::GET, query, Some(BOB))
                .header("accept", "text/csv")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{query}");
            let csv = response.text().await.unwrap();
            assert!(
                !csv.contains("alice") && !csv.contains(ALICE),
                "{query}: {csv}"
            );
        }
        let counted = server
            .rest(Method::GET, "notes?select=id", Some(BOB))
            .header("prefer", "count=exact")
            .header("range", "0-100")
            .send()
            .await
            .unwrap();
        assert_eq!(
            counted.headers()["content-range"],
            "0-0/1",
            "the count sees only Bob's row"
        );
        let single = server
            .rest(Method::GET, &format!("notes?id=eq.{id}"), Some(BOB))
            .header("accept", "application/vnd.pgrst.object+json")
            .send()
            .await
            .unwrap();
        assert_eq!(single.status(), 406);

        let writes: Vec<(Method, String, Option<Value>, &str)> = vec![
            (
                Method::PATCH,
                format!("notes?id=eq.{id}"),
                Some(json!({"title": "pwned"})),
                "",
            ),
            (
                Method::PATCH,
                format!("notes?or=(id.eq.{id},slug.eq.b)"),
                Some(json!({"stars": 0})),
                "",
            ),
            (
                Method::PATCH,
                format!("notes?owner=eq.{ALICE}"),
                Some(json!({"stars": 0})),
                "",
            ),
            (Method::DELETE, format!("notes?id=eq.{id}"), None, ""),
            (Method::DELETE, "notes?stars=gte.0".to_owned(), None, ""),
            (
                Method::PATCH,
                "notes?title=fts.alice".to_owned(),
                Some(json!({"stars": 0})),
                "",
            ),
            (
                Method::DELETE,
                "notes?title=fts.alice:*".to_owned(),
                None,
                "",
            ),
            (
                Method::POST,
                "notes".to_owned(),
                Some(json!({"id": id, "title": "pwned"})),
                "resolution=merge-duplicates",
            ),
            (
                Method::POST,
                "notes?on_conflict=slug".to_owned(),
                Some(json!({"slug": "a", "title": "pwned"})),
                "resolution=merge-duplicates",
            ),
            (
                Method::POST,
                "notes".to_owned(),
                Some(json!({"title": "x", "owner": ALICE})),
                "",
            ),
        ];
        for (method, query, body, prefer) in writes {
            let mut request = server.rest(method.clone(), &query, Some(BOB));
            if let Some(body) = &body {
                request = request.json(body);
            }
            if !prefer.is_empty() {
                request = request.header("prefer", prefer);
            }
            let status = request.send().await.unwrap().status();
            assert!(
                status.is_success() || status.is_client_error(),
                "{method} {query}: {status}"
            );
        }
        // Alice's row is exactly as she left it.
        let after = server
            .rest(Method::GET, &format!("notes?id=eq.{id}"), Some(ALICE))
            .send()
            .await
            .unwrap();
        assert_eq!(json(after).await, json!([alice_row]));
        // Bob's broad delete took only his own row.
        let bobs = server
            .rest(Method::GET, "notes", Some(BOB))
            .send()
            .await
            .unwrap();
        assert_eq!(json(bobs).await, json!([]));
    }
}

//! What follows a table's committed changes: after triggers run their
//! function with the change as `ctx.trigger`, outbound webhooks deliver it
//! signed; both are jobs enqueued in the write's own transaction, so a write
//! that rolls back leaves nothing to run. Deliveries toward private addresses
//! or through a redirect are refused and recorded on the job.

use std::time::{Duration, Instant};

use gatehouse_db::testing::TestDatabase;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::functions::rpc;
use crate::kit::{self, json};

const ALICE: &str = "0190c2a4-7e5b-7000-8000-00000000a11c";

const NOTES: &str = r#"
[tables.notes]
columns.id = { type = "bigint", primary_key = true }
columns.owner = { type = "uuid", not_null = true, server_set = "auth.uid()" }
columns.body = { type = "text", not_null = true }
columns.private_memo = { type = "text" }

[[tables.notes.policies]]
name = "owners"
for = "all"
to = "authenticated"
using = "owner = auth.uid()"
with_check = "owner = auth.uid()"
"#;

const AFTER: &str = r#"
[[tables.notes.triggers]]
when = "after"
events = ["insert", "update", "delete"]
function = "record_change"

# No policy: only the server's own work reaches it.
[tables.changes]
columns.id = { type = "bigint", primary_key = true }
columns.event = { type = "text", not_null = true }
columns.body = { type = "text" }
columns.old_body = { type = "text" }

[functions.record_change]
module = "record_change.js"

[functions.write_then_fail]
module = "write_then_fail.js"
roles = ["authenticated"]

[jobs]
poll_ms = 50
"#;

const MODULES: [(&str, &str); 2] = [
    (
        "record_change.js",
        "export default async (_args, ctx) => {
           const { event, when, new: row, old } = ctx.trigger;
           if (when !== 'AFTER' || ctx.user !== null) throw new Error('not an after trigger');
           const { error } = await ctx.db.from('changes')
             .insert({ event, body: row?.body ?? null, old_body: old?.body ?? null });
           if (error) throw new Error(error.message);
         }",
    ),
    (
        "write_then_fail.js",
        "export default async (_args, ctx) => {
           await ctx.db.from('notes').insert({ body: 'doomed' });
           throw new Error('changed my mind');
         }",
    ),
];

async fn until<T>(what: &str, mut look: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = look().await {
            return found;
        }
        assert!(Instant::now() < deadline, "waited too long for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn after_triggers_run_once_per_committed_change_and_never_for_a_rolled_back_one() {
    for database in TestDatabase::all() {
        let on = format!("{:?}", database.location());
        let server = kit::start_functions(&format!("{NOTES}{AFTER}"), &MODULES, &database).await;
        let (status, _) = rpc(&server, Some(ALICE), "write_then_fail", json!({})).await;
        assert_eq!(status, 400, "{on}");

        let created = server
            .rest(Method::POST, "notes", Some(ALICE))
            .header("Prefer", "return=representation")
            .json(&json!({ "body": "first" }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let id = json(created).await[0]["id"].clone();
        let changed = server
            .rest(Method::PATCH, &format!("notes?id=eq.{id}"), Some(ALICE))
            .json(&json!({ "body": "second" }))
            .send()
            .await
            .unwrap();
        assert_eq!(changed.status(), 204);
        // An upsert that merges into an existing row is an update.
        let merged = server
            .rest(Method::POST, "notes", Some(ALICE))
            .header("Prefer", "resolution=merge-duplicates")
            .json(&json!({ "id": id, "body": "third" }))
            .send()
            .await
            .unwrap();
        assert_eq!(merged.status(), 201);
        let removed = server
            .rest(Method::DELETE, &format!("notes?id=eq.{id}"), Some(ALICE))
            .send()
            .await
            .unwrap();
        assert_eq!(removed.status(), 204);

        let recorded = until("four changes", async || {
            let rows = server
                // Jobs of one queue run side by side: their order is not the writes'.
                .all_rows("changes?select=event,body,old_body&order=event,body")
                .await;
            (rows.as_array().unwrap().len() >= 4).then_some(rows)
        })
        .await;
        assert_eq!(
            recorded,
            json!([
                { "event": "DELETE", "body": null, "old_body": "third" },
                { "event": "INSERT", "body": "first", "old_body": null },
                { "event": "UPDATE", "body": "second", "old_body": "first" },
                { "event": "UPDATE", "body": "third", "old_body": "second" },
            ]),
            "{on}"
        );
        // The rolled-back insert left no job: every job ran, and none for it.
        // A job's own row commits a moment before the job is marked done.
        let jobs = until("every job done", async || {
            let jobs: Vec<_> =
                gatehouse_jobs::admin::list(server.running.state.db(), (None, None), 50)
                    .await
                    .unwrap()
                    .into_iter()
                    .filter(|job| !job.function.starts_with("gatehouse:"))
                    .collect();
            jobs.iter().all(|job| job.state == "done").then_some(jobs)
        })
        .await;
        assert_eq!(jobs.len(), 4, "{on}: {jobs:?}");
        assert!(
            jobs.iter()
                .all(|job| job.function == "trigger:record_change")
        );
    }
}

/// One request a receiver got: its headers (names lower-cased) and body.
type Delivery = (Vec<(String, String)>, String);

/// An HTTP receiver on loopback answering every request with `answer`,
/// handing each request it got to the returned channel.
async fn receiver(answer: &'static str) -> (String, mpsc::UnboundedReceiver<Delivery>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (sent, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut bytes = Vec::new();
            let mut buffer = [0; 4096];
            let (head, body) = loop {
                let read = socket.read(&mut buffer).await.unwrap_or(0);
                if read == 0 {
                    break (String::new(), String::new());
                }
                bytes.extend_from_slice(&buffer[..read]);
                let text = String::from_utf8_lossy(&bytes).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|line| {
                            let (name, value) = line.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        break (head.to_owned(), body.to_owned());
                    }
                }
            };
            let headers = head
                .lines()
                .skip(1)
                .filter_map(|line| line.split_once(':'))
                .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
                .collect();
            let _ = sent.send((headers, body));
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });
    (url, received)
}

const SECRET: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

fn webhook(name: &str, url: &str, private: bool) -> String {
    format!(
        "[[webhooks]]\nname = \"{name}\"\ntable = \"notes\"\nevents = [\"insert\", \"update\"]\n\
         url = \"{url}\"\ncolumns = [\"id\", \"body\"]\nallow_private_addresses = {private}\n"
    )
}

#[tokio::test]
async fn webhooks_deliver_signed_changes_and_refuse_private_addresses_and_redirects() {
    let database = TestDatabase::sqlite();
    let (delivered_url, mut delivered) = receiver("HTTP/1.1 204 No Content\r\n\r\n").await;
    let (redirecting_url, mut redirected) = receiver(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://169.254.169.254/latest/meta-data/\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    let declared = format!(
        "{NOTES}{}{}{}{}{}[jobs]\npoll_ms = 50\nbackoff_ms = 10\nmax_attempts = 2\n",
        webhook("receiver", &delivered_url, true),
        webhook("loopback", &delivered_url, false),
        webhook("private", "http://10.0.0.1/hook", false),
        webhook(
            "metadata",
            "http://169.254.169.254/latest/meta-data/",
            false
        ),
        webhook("redirecting", &redirecting_url, true),
    );
    let env = [
        ("GATEHOUSE_WEBHOOK_SECRET_RECEIVER", SECRET),
        ("GATEHOUSE_WEBHOOK_SECRET_LOOPBACK", SECRET),
        ("GATEHOUSE_WEBHOOK_SECRET_PRIVATE", SECRET),
        ("GATEHOUSE_WEBHOOK_SECRET_METADATA", SECRET),
        ("GATEHOUSE_WEBHOOK_SECRET_REDIRECTING", SECRET),
    ];
    let server = kit::start_functions_with(&declared, &[], &env, &database).await;
    let created = server
        .rest(Method::POST, "notes", Some(ALICE))
        .json(&json!({ "body": "ship it", "private_memo": "not for the webhook" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let (headers, body) = tokio::time::timeout(Duration::from_secs(20), delivered.recv())
        .await
        .unwrap()
        .unwrap();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.clone())
    };
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["type"], "INSERT");
    assert_eq!(body["table"], "notes");
    assert_eq!(body["schema"], "public");
    assert_eq!(body["record"]["body"], "ship it");
    assert_eq!(body["record"].as_object().unwrap().len(), 2, "{body}");
    assert_eq!(body["old_record"], Value::Null);
    let hook = gatehouse_jobs::inbound::Hook::new(
        gatehouse_jobs::inbound::Scheme::Standard,
        &SECRET.to_owned().into(),
        Duration::from_secs(60),
        ("f", "default"),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap();
    let raw = serde_json::to_vec(&body).unwrap();
    assert!(header("webhook-signature").unwrap().starts_with("v1,"));
    assert_eq!(
        hook.verify(header, &raw, now),
        header("webhook-id"),
        "the signature holds over the body as sent"
    );

    // The redirect reached its receiver once per attempt and was not followed.
    assert!(redirected.recv().await.is_some());
    let db = server.running.state.db().clone();
    let dead = until("the refused deliveries to be dead", async || {
        let dead = gatehouse_jobs::admin::list(&db, (Some("dead"), None), 10)
            .await
            .unwrap();
        (dead.len() == 4).then_some(dead)
    })
    .await;
    let error_of = |name: &str| {
        dead.iter()
            .find(|job| job.function == format!("webhook:{name}"))
            .and_then(|job| job.last_error.clone())
            .unwrap()
    };
    assert!(
        error_of("loopback").contains("127.0.0.1, which is not a public address"),
        "{dead:?}"
    );
    assert!(
        error_of("private").contains("10.0.0.1, which is not a public address"),
        "{dead:?}"
    );
    assert!(
        error_of("metadata").contains("169.254.169.254, which is not a public address"),
        "{dead:?}"
    );
    assert!(error_of("redirecting").contains("redirect"), "{dead:?}");
    assert!(
        dead.iter().all(|job| job.attempts == 2),
        "retried, then dead: {dead:?}"
    );
    assert!(
        !format!("{dead:?}").contains("MDEyMzQ1"),
        "no secret in what is recorded"
    );
}

#[test]
fn a_wrong_webhook_declaration_stops_the_start() {
    for (entry, said) in [
        (webhook("x", "ftp://example.com/", false), "http or https"),
        (
            webhook("x", "https://example.com/", false).replace("\"notes\"", "\"nothing\""),
            "no table",
        ),
        (
            webhook("x", "https://example.com/", false).replace("\"body\"]", "\"secret\"]"),
            "no column",
        ),
        (
            webhook("x", "https://example.com/", false).replace("\"update\"", "\"upsert\""),
            "insert, update or delete",
        ),
        (
            format!(
                "{}{}",
                webhook("x", "https://example.com/", false),
                webhook("x", "https://example.org/", false)
            ),
            "another [[webhooks]] entry",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gatehouse.toml"), format!("{NOTES}{entry}")).unwrap();
        let output = kit::gatehouse(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &[])
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(said), "{said}: {stderr}");
    }
}

/// A webhook that follows only updates hears an upsert that merged into an
/// existing row; an upsert naming one row twice is refused, since its second
/// change could not be told against the right old row.
#[tokio::test]
async fn an_upsert_that_merges_reaches_update_only_webhooks() {
    let database = TestDatabase::sqlite();
    let (url, mut delivered) = receiver("HTTP/1.1 204 No Content\r\n\r\n").await;
    let declared = format!(
        "{NOTES}{}[jobs]\npoll_ms = 50\n",
        webhook("updates", &url, true).replace("[\"insert\", \"update\"]", "\"update\"")
    );
    let env = [("GATEHOUSE_WEBHOOK_SECRET_UPDATES", SECRET)];
    let server = kit::start_functions_with(&declared, &[], &env, &database).await;
    let upsert = |body: Value| {
        server
            .rest(Method::POST, "notes", Some(ALICE))
            .header("Prefer", "resolution=merge-duplicates")
            .json(&body)
            .send()
    };
    assert_eq!(
        upsert(json!({ "id": 5, "body": "new" }))
            .await
            .unwrap()
            .status(),
        201
    );
    assert_eq!(
        upsert(json!({ "id": 5, "body": "merged" }))
            .await
            .unwrap()
            .status(),
        201
    );
    let twice = upsert(json!([{ "id": 6, "body": "a" }, { "id": 6, "body": "b" }]))
        .await
        .unwrap();
    assert_eq!(twice.status(), 400);

    let (_, body) = tokio::time::timeout(Duration::from_secs(20), delivered.recv())
        .await
        .unwrap()
        .unwrap();
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["type"], "UPDATE", "{body}");
    assert_eq!(body["record"]["body"], "merged");
    assert_eq!(body["old_record"]["body"], "new");
    // The insert before it was not sent: the webhook does not follow inserts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(delivered.try_recv().is_err());
}

/// The jobs a function's writes cause (after triggers of its `ctx.db`
/// writes) wake the workers when the function's call commits, not at the
/// next poll, which here is a minute away.
#[tokio::test]
async fn jobs_from_a_functions_writes_start_when_its_call_commits() {
    let database = TestDatabase::sqlite();
    let declared = format!(
        "{NOTES}{}\n[functions.write_note]\nmodule = \"write_note.js\"\nroles = [\"authenticated\"]\n",
        AFTER.replace("poll_ms = 50", "poll_ms = 60000")
    );
    let modules = [
        MODULES[0],
        MODULES[1],
        (
            "write_note.js",
            "export default async (_args, ctx) => {
               await ctx.db.from('notes').insert({ body: 'from a function' }).throwOnError();
             }",
        ),
    ];
    let server = kit::start_functions(&declared, &modules, &database).await;
    let (status, body) = rpc(&server, Some(ALICE), "write_note", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let started = std::time::Instant::now();
    let recorded = until("the after trigger", async || {
        let rows = server.all_rows("changes?select=event,body").await;
        (!rows.as_array().unwrap().is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(
        recorded,
        json!([{ "event": "INSERT", "body": "from a function" }])
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woken, not polled"
    );
}

//! Background jobs through the server: `ctx.jobs.enqueue` writes the job in
//! the call's transaction (a call that throws leaves none), the workers run it
//! as its declared function with the secret key's rights, a failed attempt is
//! retried, and a handler nobody may call from outside stays unreachable.

use std::time::{Duration, Instant};

use gatehouse_db::testing::TestDatabase;
use serde_json::{Value, json};

use crate::functions::rpc;
use crate::kit::{self, TestServer, json};

const ALICE: &str = "0190c2a4-7e5b-7000-8000-00000000a11c";

const DECLARED: &str = r#"
[tables.orders]
columns.id = { type = "bigint", primary_key = true }
columns.owner = { type = "uuid", not_null = true, server_set = "auth.uid()" }
columns.item = { type = "text", not_null = true }

[[tables.orders.policies]]
name = "owners"
for = "all"
to = "authenticated"
using = "owner = auth.uid()"
with_check = "owner = auth.uid()"

# No policy: only the server's own work (a job's handler) reaches it.
[tables.confirmations]
columns.id = { type = "bigint", primary_key = true }
columns.order_id = { type = "bigint", not_null = true }
columns.attempt = { type = "integer", not_null = true }

[functions.place]
module = "place.js"
roles = ["authenticated"]
args.item = { type = "text", not_null = true }
args.fail = { type = "boolean", default = false }
args.handler = { type = "text", default = "confirm" }
args.payload = { type = "jsonb" }

# Roles absent: no client may call it; the queue runs it.
[functions.confirm]
module = "confirm.js"
args.order_id = { type = "bigint", not_null = true }
args.flaky = { type = "boolean", default = false }

[jobs]
poll_ms = 50
backoff_ms = 20
"#;

const MODULES: [(&str, &str); 2] = [
    (
        "place.js",
        "export default async ({ item, fail, handler, payload }, ctx) => {
           const { data: order } = await ctx.db.from('orders').insert({ item }).select('id').single();
           const first = await ctx.jobs.enqueue(handler, payload ?? { order_id: order.id, flaky: item === 'flaky' },
             { key: `order-${order.id}` });
           const again = await ctx.jobs.enqueue(handler, { order_id: order.id }, { key: `order-${order.id}` });
           if (fail) throw new Error('payment declined');
           return { order: order.id, job: first.id, again: again.id };
         }",
    ),
    (
        "confirm.js",
        "export default async ({ order_id, flaky }, ctx) => {
           if (flaky && ctx.job.attempt === 1) throw new Error('the mail relay is down');
           const { error } = await ctx.db.from('confirmations')
             .insert({ id: order_id, order_id, attempt: ctx.job.attempt });
           if (error) throw new Error(error.message);
           return null;
         }",
    ),
];

async fn confirmations(server: &TestServer) -> Value {
    server
        .all_rows("confirmations?select=order_id,attempt&order=order_id")
        .await
}

async fn until_confirmed(server: &TestServer, count: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = confirmations(server).await;
        if rows.as_array().is_some_and(|rows| rows.len() >= count) {
            return rows;
        }
        assert!(Instant::now() < deadline, "confirmations so far: {rows}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_job_runs_after_its_call_commits_and_never_after_it_throws() {
    for database in TestDatabase::all() {
        let server = kit::start_functions(DECLARED, &MODULES, &database).await;
        let (status, declined) = rpc(
            &server,
            Some(ALICE),
            "place",
            json!({"item": "lamp", "fail": true}),
        )
        .await;
        assert_eq!(status, 400, "{declined}");
        let (status, placed) = rpc(&server, Some(ALICE), "place", json!({"item": "desk"})).await;
        assert_eq!(status, 200, "{placed}");
        assert!(placed["job"].is_string(), "{placed}");
        assert_eq!(placed["again"], Value::Null, "a used key enqueues nothing");

        let order = placed["order"].clone();
        assert_eq!(
            until_confirmed(&server, 1).await,
            json!([{"order_id": order, "attempt": 1}])
        );
        // The declined call's job was rolled back with its order: it never runs.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(confirmations(&server).await.as_array().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn a_failed_attempt_is_retried() {
    let database = TestDatabase::sqlite();
    let server = kit::start_functions(DECLARED, &MODULES, &database).await;
    let (status, placed) = rpc(&server, Some(ALICE), "place", json!({"item": "flaky"})).await;
    assert_eq!(status, 200, "{placed}");
    assert_eq!(
        until_confirmed(&server, 1).await,
        json!([{"order_id": placed["order"], "attempt": 2}])
    );
    let metrics = server.metrics().await;
    for series in [
        r#"gatehouse_job_runs_total{queue="default",outcome="retry"}"#,
        r#"gatehouse_job_runs_total{queue="default",outcome="done"}"#,
        r#"gatehouse_job_run_seconds_count{queue="default"}"#,
        r#"gatehouse_jobs{queue="default",state="dead"}"#,
        r#"gatehouse_jobs{queue="default",state="failed"}"#,
        r#"gatehouse_jobs_oldest_due_seconds{queue="default"}"#,
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }
}

/// `/admin/v1/jobs` with `key` as the API key.
fn admin(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    key: &str,
) -> reqwest::RequestBuilder {
    server
        .client
        .request(method, format!("{}/admin/v1/jobs{path}", server.url))
        .header("apikey", key)
}

#[tokio::test]
async fn operators_see_each_attempt_and_steer_the_queue_over_http_with_the_secret_key() {
    use reqwest::Method;
    let database = TestDatabase::sqlite();
    let server = kit::start_functions(DECLARED, &MODULES, &database).await;
    let (_, placed) = rpc(&server, Some(ALICE), "place", json!({"item": "flaky"})).await;
    until_confirmed(&server, 1).await;
    let id = placed["job"].as_str().unwrap();

    let refused = server
        .client
        .get(format!("{}/admin/v1/jobs", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let publishable = admin(&server, Method::GET, "", &server.publishable);
    assert_eq!(publishable.send().await.unwrap().status(), 403);

    // The handler's writes commit before the worker records the outcome.
    let deadline = Instant::now() + Duration::from_secs(20);
    let shown = loop {
        let shown = json(
            admin(&server, Method::GET, &format!("/{id}"), &server.secret)
                .send()
                .await
                .unwrap(),
        )
        .await;
        if shown["state"] == "done" {
            break shown;
        }
        assert!(Instant::now() < deadline, "{shown}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let history: Vec<(Value, Value, Value)> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["attempt"].clone(),
                a["outcome"].clone(),
                a["error"].clone(),
            )
        })
        .collect();
    assert_eq!(
        history,
        [
            (json!(1), json!("failed"), json!("the mail relay is down")),
            (json!(2), json!("done"), Value::Null),
        ]
    );
    let done = json(
        admin(
            &server,
            Method::GET,
            "?state=done&queue=default",
            &server.secret,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert!(
        done.as_array().unwrap().iter().any(|job| job["id"] == id),
        "{done}"
    );
    let cancelled = admin(
        &server,
        Method::POST,
        &format!("/{id}/cancel"),
        &server.secret,
    );
    assert_eq!(cancelled.send().await.unwrap().status(), 404, "a done job");
    let purged = json(
        admin(
            &server,
            Method::DELETE,
            "?state=done&older_than_hours=0",
            &server.secret,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert!(purged["removed"].as_u64().unwrap() >= 1, "{purged}");
    let gone = admin(&server, Method::GET, &format!("/{id}"), &server.secret);
    assert_eq!(gone.send().await.unwrap().status(), 404);
    let wrong = admin(
        &server,
        Method::DELETE,
        "?state=waiting&older_than_hours=0",
        &server.secret,
    );
    assert_eq!(wrong.send().await.unwrap().status(), 400);
}

/// Gatehouse's own upkeep is scheduled as cron and runs as a job.
#[tokio::test]
async fn upkeep_runs_from_the_queue() {
    let database = TestDatabase::sqlite();
    let server = kit::start_functions(DECLARED, &MODULES, &database).await;
    let db = server.running.state.db();
    let job = gatehouse_jobs::NewJob {
        queue: "gatehouse".into(),
        ..gatehouse_jobs::NewJob::new("gatehouse:prune", json!({}))
    };
    let mut settings = gatehouse_jobs::Settings::default();
    settings.queues.insert("gatehouse".into(), 1);
    let queued = db
        .transaction(vec![gatehouse_jobs::enqueue(&settings, &job).unwrap()])
        .await
        .unwrap();
    let id = queued[0][0].text(0).unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shown = gatehouse_jobs::admin::show(db, &id).await.unwrap().unwrap();
        if shown.state == "done" {
            break;
        }
        assert!(Instant::now() < deadline, "{shown:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let schedules = db
        .query(gatehouse_db::Statement::new(
            &gatehouse_db::Sql::both("SELECT name FROM gatehouse_cron ORDER BY name"),
            vec![],
        ))
        .await
        .unwrap();
    let names: Vec<&str> = schedules.iter().map(|row| row.text(0).unwrap()).collect();
    assert_eq!(names, ["gatehouse:prune", "gatehouse:sweep"]);
}

#[tokio::test]
async fn enqueueing_refuses_what_no_handler_takes_and_handlers_stay_private() {
    let database = TestDatabase::sqlite();
    let server = kit::start_functions(DECLARED, &MODULES, &database).await;
    let (status, body) = rpc(
        &server,
        Some(ALICE),
        "place",
        json!({"item": "a", "handler": "nobody"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("no function"),
        "{body}"
    );
    let (status, body) = rpc(
        &server,
        Some(ALICE),
        "place",
        json!({"item": "a", "payload": {"order_id": "seven"}}),
    )
    .await;
    assert_eq!(
        status, 400,
        "the payload is checked as the handler's arguments: {body}"
    );
    // The handler is not callable by a client: no role lists it.
    let (status, _) = rpc(&server, Some(ALICE), "confirm", json!({"order_id": 1})).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn cron_runs_its_function_at_each_tick() {
    let declared = r#"
[tables.ticks]
columns.tick = { type = "text", primary_key = true }

[functions.pulse]
module = "pulse.js"

[[cron]]
name = "pulse"
schedule = "* * * * * *"
function = "pulse"

[jobs]
poll_ms = 50
"#;
    let pulse = "export default async (args, ctx) => {
       const { error } = await ctx.db.from('ticks').insert({ tick: ctx.job.key });
       if (error) throw new Error(error.message);
     }";
    let database = TestDatabase::sqlite();
    let server = kit::start_functions(declared, &[("pulse.js", pulse)], &database).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let ticks = loop {
        let ticks = server.all_rows("ticks?select=tick&order=tick").await;
        if ticks.as_array().unwrap().len() >= 2 {
            break ticks;
        }
        assert!(Instant::now() < deadline, "ticks so far: {ticks}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let first = ticks[0]["tick"].as_str().unwrap();
    assert!(first.starts_with("cron:pulse:"), "{ticks}");
    assert_ne!(ticks[0], ticks[1]);
}

const STRIPE_SECRET: &str = "whsec_test_0123456789abcdefghijkl";

const HOOKED: &str = r#"
[tables.payments]
columns.event = { type = "text", primary_key = true }
columns.kind = { type = "text", not_null = true }

[functions.paid]
module = "paid.js"
args.event = { type = "jsonb", not_null = true }

[hooks.stripe]
scheme = "stripe"
function = "paid"

[jobs]
poll_ms = 50
"#;

const PAID: &str = "export default async ({ event }, ctx) => {
   const { error } = await ctx.db.from('payments').insert({ event: event.id, kind: event.type });
   if (error) throw new Error(error.message);
 }";

/// Stripe's `Stripe-Signature` for `body` at `at` (unix seconds) under `secret`.
fn stripe_signature(secret: &str, at: u64, body: &str) -> String {
    use aws_lc_rs::hmac;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, format!("{at}.{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={at},v1={hex}")
}

#[tokio::test]
async fn a_verified_webhook_event_runs_once_and_a_forged_one_never() {
    for database in TestDatabase::all() {
        let server = kit::start_functions_with(
            HOOKED,
            &[("paid.js", PAID)],
            &[("GATEHOUSE_HOOK_SECRET_STRIPE", STRIPE_SECRET)],
            &database,
        )
        .await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let deliver = |body: &'static str, signature: String| {
            server
                .post("/hooks/v1/stripe")
                .header("stripe-signature", signature)
                .header("content-type", "application/json")
                .body(body)
                .send()
        };
        let body = r#"{"id":"evt_1","type":"checkout.session.completed"}"#;
        for _ in 0..2 {
            let response = deliver(body, stripe_signature(STRIPE_SECRET, now, body))
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "a redelivery is answered the same");
        }
        let forged = r#"{"id":"evt_2","type":"checkout.session.completed"}"#;
        for signature in [
            stripe_signature("whsec_another_secret_of_some_length", now, forged),
            stripe_signature(STRIPE_SECRET, now - 600, forged),
            stripe_signature(STRIPE_SECRET, now, body),
            String::new(),
        ] {
            let response = deliver(forged, signature).await.unwrap();
            assert_eq!(response.status(), 400);
            let refusal = json(response).await;
            assert_eq!(refusal["code"], "invalid_signature", "{refusal}");
        }
        let unknown = server
            .post("/hooks/v1/paypal")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), 404);

        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let payments = server.all_rows("payments?select=event,kind").await;
            if payments.as_array().unwrap().len() == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "payments so far: {payments}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            server.all_rows("payments?select=event,kind").await,
            json!([{"event": "evt_1", "kind": "checkout.session.completed"}]),
            "the redelivery ran nothing and the forgeries nothing"
        );
    }
}

const DURABLE: &str = r#"
[tables.done]
columns.id = { type = "text", primary_key = true }
columns.attempt = { type = "integer", not_null = true }

[functions.later]
module = "later.js"
args.handler = { type = "text", not_null = true }
args.delay_ms = { type = "integer", not_null = true }

[functions.mark]
module = "mark.js"
args.spin_ms = { type = "integer", default = 0 }

[jobs]
poll_ms = 100
lease_secs = 2
"#;

const LATER: &str = "export default async ({ handler, delay_ms }, ctx) =>
   ctx.jobs.enqueue(handler, { spin_ms: delay_ms === 0 ? 1500 : 0 },
     { runAt: new Date(Date.now() + delay_ms) });";

/// Idempotent by the job's id: a second run of the same job changes nothing.
const MARK: &str = "export default async ({ spin_ms }, ctx) => {
   const until = Date.now() + spin_ms;
   while (Date.now() < until) {}
   const { error } = await ctx.db.from('done')
     .upsert({ id: ctx.job.id, attempt: ctx.job.attempt }, { ignoreDuplicates: true });
   if (error) throw new Error(error.message);
 }";

/// The real binary in `dir` on `database`, and its secret key.
fn serve(dir: &std::path::Path, database: &TestDatabase) -> (kit::Process, String) {
    let url = match database.location() {
        gatehouse_db::Location::Postgres(url) => {
            Some(secrecy::ExposeSecret::expose_secret(&url).to_owned())
        }
        gatehouse_db::Location::Sqlite(_) => None,
    };
    let env: Vec<(&str, &str)> = url
        .iter()
        .map(|url| ("GATEHOUSE_DATABASE_URL", url.as_str()))
        .collect();
    let process = kit::Process::serve(dir, &[], &env);
    let secret = std::fs::read_to_string(dir.join("gatehouse-data/secret.key")).unwrap();
    (process, secret.trim().to_owned())
}

async fn call(
    process: &kit::Process,
    secret: &str,
    name: &str,
    body: Value,
) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(format!("{}/rest/v1/rpc/{name}", process.url))
        .header("apikey", secret)
        .bearer_auth(secret)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
}

async fn done_rows(process: &kit::Process, secret: &str, at_least: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = reqwest::Client::new()
            .get(format!("{}/rest/v1/done?select=id,attempt", process.url))
            .header("apikey", secret)
            .bearer_auth(secret)
            .send()
            .await
            .unwrap();
        let rows = json(response).await;
        if rows.as_array().unwrap().len() >= at_least {
            return rows;
        }
        assert!(Instant::now() < deadline, "rows so far: {rows}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// kill -9 between the commit and the job's end loses nothing: a job not yet
/// started runs after the restart, and one cut off mid-run runs again once its
/// lease is over, each leaving one row (the handler is idempotent by job id).
#[tokio::test]
async fn a_committed_job_survives_kill_9() {
    for database in TestDatabase::all() {
        for (delay_ms, cut_after_ms) in [(1500, 0), (0, 700)] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("gatehouse.toml"), DURABLE).unwrap();
            std::fs::create_dir_all(dir.path().join("functions")).unwrap();
            std::fs::write(dir.path().join("functions/later.js"), LATER).unwrap();
            std::fs::write(dir.path().join("functions/mark.js"), MARK).unwrap();
            let (mut first, secret) = serve(dir.path(), &database);
            let status = call(
                &first,
                &secret,
                "later",
                json!({"handler": "mark", "delay_ms": delay_ms}),
            )
            .await;
            assert_eq!(status, 200);
            tokio::time::sleep(Duration::from_millis(cut_after_ms)).await;
            first.child.kill().unwrap();
            first.child.wait().unwrap();

            let (second, _) = serve(dir.path(), &database);
            let rows = done_rows(&second, &secret, 1).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(
                done_rows(&second, &secret, 1)
                    .await
                    .as_array()
                    .unwrap()
                    .len(),
                1,
                "run once to its end: {rows}"
            );
            second.terminate();
        }
    }
}

#[tokio::test]
async fn operators_list_cancel_and_purge_from_the_command_line() {
    let database = TestDatabase::sqlite();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gatehouse.toml"), DURABLE).unwrap();
    std::fs::create_dir_all(dir.path().join("functions")).unwrap();
    std::fs::write(dir.path().join("functions/later.js"), LATER).unwrap();
    std::fs::write(dir.path().join("functions/mark.js"), MARK).unwrap();
    let (server, secret) = serve(dir.path(), &database);
    let body = json!({"handler": "mark", "delay_ms": 3_600_000});
    assert_eq!(call(&server, &secret, "later", body).await, 200);
    server.terminate();

    let jobs = |args: &[&str]| {
        let output = kit::gatehouse(dir.path(), &[&["jobs"], args].concat(), &[])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let listed = jobs(&["list", "--state", "waiting"]);
    let job: Value = serde_json::from_str(listed.trim()).unwrap();
    assert_eq!(
        (job["function"].as_str(), job["attempts"].as_i64()),
        (Some("mark"), Some(0))
    );
    let id = job["id"].as_str().unwrap();
    assert!(jobs(&["show", id]).contains("\"spin_ms\":0"));
    assert!(jobs(&["cancel", id]).contains("cancelled"));
    assert!(jobs(&["list", "--state", "waiting"]).trim().is_empty());
    assert!(
        jobs(&["purge", "--state", "cancelled", "--older-than-hours", "0"]).contains("removed 1")
    );
    assert!(jobs(&["list"]).trim().is_empty());
}

const EVERY_SECOND: &str = r#"
[tables.ticks]
columns.id = { type = "bigint", primary_key = true }
columns.tick = { type = "text", not_null = true }
columns.job = { type = "text", not_null = true }

[functions.tick]
module = "tick.js"

[[cron]]
name = "heartbeat"
schedule = "* * * * * *"
function = "tick"

[jobs]
poll_ms = 100
"#;

/// Records each run: a tick run twice would leave two rows.
const TICK: &str = "export default async (_args, ctx) => {
   const { error } = await ctx.db.from('ticks').insert({ tick: ctx.job.key, job: ctx.job.id });
   if (error) throw new Error(error.message);
 }";

/// Two real binaries on one PostgreSQL database, a schedule firing every
/// second for 30 seconds: each tick runs once, whichever instance takes it.
#[tokio::test]
async fn two_binaries_run_each_cron_tick_once() {
    let Some(database) = TestDatabase::postgres() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gatehouse.toml"), EVERY_SECOND).unwrap();
    std::fs::create_dir_all(dir.path().join("functions")).unwrap();
    std::fs::write(dir.path().join("functions/tick.js"), TICK).unwrap();
    let (first, secret) = serve(dir.path(), &database);
    let (second, _) = serve(dir.path(), &database);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(30)).await;
    first.terminate();
    second.terminate();
    let ran = started.elapsed().as_secs();

    let (third, _) = serve(dir.path(), &database);
    let response = reqwest::Client::new()
        .get(format!("{}/rest/v1/ticks?select=tick,job", third.url))
        .header("apikey", &secret)
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    let rows = json(response).await;
    third.terminate();
    let ticks: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["tick"].as_str().unwrap())
        .collect();
    let distinct: std::collections::HashSet<&&str> = ticks.iter().collect();
    assert_eq!(distinct.len(), ticks.len(), "a tick ran twice: {rows}");
    // Every second of the run fired, give or take the starts and stops.
    let fired = u64::try_from(ticks.len()).unwrap();
    assert!(
        (ran.saturating_sub(4)..=ran + 2).contains(&fired),
        "{fired} ticks in {ran} s: {rows}"
    );
}

const RIGHTS: &str = r#"
[tables.notes]
columns.id = { type = "bigint", primary_key = true }
columns.owner = { type = "uuid", not_null = true, server_set = "auth.uid()" }
columns.body = { type = "text", not_null = true }

[[tables.notes.policies]]
name = "owners"
for = "all"
to = "authenticated"
using = "owner = auth.uid()"
with_check = "owner = auth.uid()"

# No policy: only the server's own rights reach it.
[tables.seen]
columns.handler = { type = "text", primary_key = true }
columns.visible = { type = "integer", not_null = true }
columns.user_id = { type = "text" }

[functions.queue_both]
module = "queue_both.js"
roles = ["authenticated"]

[functions.count_as_enqueuer]
module = "count.js"
job_rights = "enqueuer"
security = "definer"

[functions.count_as_server]
module = "count.js"
security = "definer"

[jobs]
poll_ms = 50
"#;

const COUNT: &str = "export default async (_args, ctx) => {
   const { count } = await ctx.db.from('notes').select('*', { count: 'exact', head: true });
   const handler = ctx.user ? 'enqueuer' : 'server';
   await ctx.admin.db.from('seen').insert({ handler, visible: count, user_id: ctx.user?.id ?? null })
     .throwOnError();
 }";

/// `job_rights = "enqueuer"`: the job sees what the user who queued it sees;
/// by default a job has the server's own rights.
#[tokio::test]
async fn a_job_runs_with_its_enqueuers_rights_when_declared() {
    use reqwest::Method;
    const BOB: &str = "0190c2a4-7e5b-7000-8000-000000000b0b";
    let database = TestDatabase::sqlite();
    let modules = [
        (
            "queue_both.js",
            "export default async (_args, ctx) => {
               await ctx.jobs.enqueue('count_as_enqueuer', {});
               await ctx.jobs.enqueue('count_as_server', {});
             }",
        ),
        ("count.js", COUNT),
    ];
    let server = kit::start_functions(RIGHTS, &modules, &database).await;
    // A real account: the job checks its enqueuer still stands when it runs.
    let signed_up = server
        .post("/auth/v1/signup")
        .header("apikey", &server.publishable)
        .json(&json!({ "email": "alice@example.com", "password": "correct horse battery staple" }))
        .send()
        .await
        .unwrap();
    let signed_up = json(signed_up).await;
    let alice = signed_up["user"]["id"]
        .as_str()
        .or(signed_up["id"].as_str())
        .unwrap_or_else(|| panic!("{signed_up}"))
        .to_owned();
    for (id, user) in [(1, alice.as_str()), (2, BOB)] {
        let written = server
            .rest(Method::POST, "notes", Some(user))
            .json(&json!({ "id": id, "body": "mine" }))
            .send()
            .await
            .unwrap();
        assert_eq!(written.status(), 201);
    }
    let (status, body) = rpc(&server, Some(&alice), "queue_both", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let db = server.running.state.db();
    let deadline = Instant::now() + Duration::from_secs(20);
    let seen = loop {
        let seen = server
            .all_rows("seen?select=handler,visible,user_id&order=handler")
            .await;
        if seen.as_array().unwrap().len() == 2 {
            break seen;
        }
        if Instant::now() > deadline {
            let jobs = gatehouse_jobs::admin::list(db, (None, None), 10).await;
            panic!("{seen}: {jobs:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(
        seen,
        json!([
            { "handler": "enqueuer", "visible": 1, "user_id": alice },
            { "handler": "server", "visible": 2, "user_id": null },
        ])
    );

    // Banned by the time the job runs (here before it is even queued, with a
    // token that still verifies): the job no longer runs with her rights.
    let banned = server
        .client
        .put(format!("{}/auth/v1/admin/users/{alice}", server.url))
        .header("apikey", &server.secret)
        .bearer_auth(&server.secret)
        .json(&json!({ "ban_duration": "24h" }))
        .send()
        .await
        .unwrap();
    assert_eq!(banned.status(), 200);
    let (status, _) = rpc(&server, Some(&alice), "queue_both", json!({})).await;
    assert_eq!(status, 200);
    let refused = loop {
        let failed = gatehouse_jobs::admin::list(db, (None, None), 20)
            .await
            .unwrap()
            .into_iter()
            .find(|job| job.function == "count_as_enqueuer" && job.last_error.is_some());
        if let Some(job) = failed {
            break job;
        }
        assert!(Instant::now() < deadline + Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(
        refused.last_error.unwrap().contains("deleted or banned"),
        "the banned user's job is refused"
    );
}

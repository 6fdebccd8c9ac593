//! `/storage/v1/object` through HTTP: the whole flow as two users under a
//! folder-per-user policy (SQLite + local disk; PostgreSQL + S3 in CI), every
//! bad name through every route, bucket limits, safe serving, public buckets.

use gatehouse_db::testing::TestDatabase;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::kit::{self, TestServer, json};

const ALICE: &str = "0190c2a4-7e5b-7000-8000-00000000a11c";
const BOB: &str = "0190c2a4-7e5b-7000-8000-000000000b0b";

/// Each user owns the folder named by their id in `docs`; nobody else gets in.
const POLICIES: &str = r#"
[[storage.policies]]
name = "own folder"
for = "all"
to = "authenticated"
using = "bucket_id = 'docs' and (storage.foldername(name))[1] = auth.uid()"

[[storage.policies]]
name = "anyone may upload to inbox"
for = "insert"
to = ["anon", "authenticated"]
with_check = "bucket_id = 'inbox' and size < 100"

[[storage.policies]]
name = "anyone signed in adds to shared"
for = "insert"
to = "authenticated"
with_check = "bucket_id = 'shared'"

[[storage.policies]]
name = "only owners replace in shared"
for = "update"
to = "authenticated"
using = "bucket_id = 'shared' and owner = auth.uid()"

[[storage.policies]]
name = "pictures are PNG, from users with no tier claim"
for = "insert"
to = "authenticated"
with_check = "bucket_id = 'pictures' and content_type = 'image/png' and auth.jwt() ->> 'tier' is null"
"#;

/// Who sends a request: a user's token, the publishable key, or the secret key.
#[derive(Clone, Copy)]
enum As<'a> {
    User(&'a str),
    Anon,
    Secret,
}

fn request(
    server: &TestServer,
    who: As<'_>,
    method: Method,
    path: &str,
) -> reqwest::RequestBuilder {
    let builder = server
        .client
        .request(method, format!("{}/storage/v1/{path}", server.url));
    match who {
        As::User(user) => builder
            .header("apikey", &server.publishable)
            .bearer_auth(server.token_for(user)),
        As::Anon => builder
            .header("apikey", &server.publishable)
            .bearer_auth(&server.publishable),
        As::Secret => builder
            .header("apikey", &server.secret)
            .bearer_auth(&server.secret),
    }
}

async fn create_bucket(server: &TestServer, body: Value) {
    let created = request(server, As::Secret, Method::POST, "bucket")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200, "{:?}", created.text().await);
}

async fn upload(
    server: &TestServer,
    who: As<'_>,
    path: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    request(server, who, Method::POST, &format!("object/{path}"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// `object/move` or `object/copy` within `docs`.
async fn transfer(
    server: &TestServer,
    who: As<'_>,
    route: &str,
    source: &str,
    destination: &str,
) -> reqwest::Response {
    request(server, who, Method::POST, &format!("object/{route}"))
        .json(&json!({"bucketId": "docs", "sourceKey": source, "destinationKey": destination}))
        .send()
        .await
        .unwrap()
}

async fn download(server: &TestServer, who: As<'_>, path: &str) -> reqwest::Response {
    request(server, who, Method::GET, &format!("object/{path}"))
        .send()
        .await
        .unwrap()
}

async fn list(server: &TestServer, who: As<'_>, bucket: &str, prefix: &str) -> Vec<String> {
    let listed = request(server, who, Method::POST, &format!("object/list/{bucket}"))
        .json(&json!({"prefix": prefix, "limit": 100, "offset": 0,
                      "sortBy": {"column": "name", "order": "asc"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    json(listed)
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The flow, then everything another user might try.
async fn the_object_flow(server: &TestServer) {
    create_bucket(server, json!({"id": "docs", "public": false})).await;
    let alice = As::User(ALICE);
    let bob = As::User(BOB);
    let notes = format!("docs/{ALICE}/notes.txt");

    let created = upload(server, alice, &notes, "text/plain", "first").await;
    assert_eq!(created.status(), 200);
    let created = json(created).await;
    assert_eq!(created["Key"], notes);
    assert!(created["Id"].is_string());
    let again = upload(server, alice, &notes, "text/plain", "second").await;
    assert_eq!(
        kit::storage_refusal(again).await,
        409,
        "no overwrite without x-upsert"
    );
    let upserted = request(server, alice, Method::POST, &format!("object/{notes}"))
        .header("x-upsert", "true")
        .header("content-type", "text/plain")
        .body("second")
        .send()
        .await
        .unwrap();
    assert_eq!(upserted.status(), 200);

    let fetched = download(server, alice, &notes).await;
    assert_eq!(fetched.status(), 200);
    let headers = fetched.headers().clone();
    assert_eq!(headers["content-type"], "text/plain");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("sandbox")
    );
    assert!(
        headers["cache-control"]
            .to_str()
            .unwrap()
            .starts_with("private")
    );
    assert_eq!(fetched.text().await.unwrap(), "second");
    // One byte range (video players seek this way), from disk or S3.
    let ranged = |range: &'static str| {
        request(server, alice, Method::GET, &format!("object/{notes}"))
            .header("range", range)
            .send()
    };
    let part = ranged("bytes=1-3").await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 1-3/6");
    assert_eq!(part.text().await.unwrap(), "eco");
    assert_eq!(
        ranged("bytes=-2").await.unwrap().text().await.unwrap(),
        "nd"
    );
    let past = ranged("bytes=6-").await.unwrap();
    assert_eq!(past.status(), 416);
    assert_eq!(past.headers()["content-range"], "bytes */6");
    assert_eq!(
        ranged("bytes=0-0,2-3").await.unwrap().status(),
        200,
        "several ranges: all"
    );

    assert_eq!(list(server, alice, "docs", ALICE).await, ["notes.txt"]);
    assert_eq!(
        list(server, alice, "docs", "").await,
        [ALICE],
        "a folder entry"
    );
    // Names sort bytewise whatever the database's collation ('/' before 'b'),
    // and a folder is one entry however its files interleave with others.
    for name in ["x/a.txt", "xb.txt", "x/z.txt"] {
        let path = format!("docs/{ALICE}/sorting/{name}");
        assert_eq!(
            upload(server, alice, &path, "text/plain", "s")
                .await
                .status(),
            200
        );
    }
    assert_eq!(
        list(server, alice, "docs", &format!("{ALICE}/sorting")).await,
        ["x", "xb.txt"]
    );
    let sorted = ["x/a.txt", "xb.txt", "x/z.txt"].map(|name| format!("{ALICE}/sorting/{name}"));
    let removed = request(server, alice, Method::DELETE, "object/docs")
        .json(&json!({ "prefixes": sorted }))
        .send()
        .await
        .unwrap();
    assert_eq!(json(removed).await.as_array().unwrap().len(), 3);
    let info = json(
        request(server, alice, Method::GET, &format!("object/info/{notes}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(info["size"], 6);
    assert_eq!(info["owner"], ALICE);

    let moved = transfer(
        server,
        alice,
        "move",
        &format!("{ALICE}/notes.txt"),
        &format!("{ALICE}/moved.txt"),
    )
    .await;
    assert_eq!(json(moved).await["message"], "Successfully moved");
    let copied = transfer(
        server,
        alice,
        "copy",
        &format!("{ALICE}/moved.txt"),
        &format!("{ALICE}/copy.txt"),
    )
    .await;
    assert_eq!(json(copied).await["Key"], format!("docs/{ALICE}/copy.txt"));
    assert_eq!(
        list(server, alice, "docs", ALICE).await,
        ["copy.txt", "moved.txt"]
    );
    assert_eq!(
        download(server, alice, &format!("docs/{ALICE}/copy.txt"))
            .await
            .text()
            .await
            .unwrap(),
        "second"
    );

    // A signed URL needs no key; a changed token or path is refused.
    let signed = json(
        request(
            server,
            alice,
            Method::POST,
            &format!("object/sign/docs/{ALICE}/moved.txt"),
        )
        .json(&json!({"expiresIn": 60}))
        .send()
        .await
        .unwrap(),
    )
    .await;
    let signed_url = format!(
        "{}/storage/v1{}",
        server.url,
        signed["signedURL"].as_str().unwrap()
    );
    let fetched = server.client.get(&signed_url).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.text().await.unwrap(), "second");
    let tampered = signed_url.replacen("token=", "token=x", 1);
    assert_eq!(
        server.client.get(&tampered).send().await.unwrap().status(),
        400
    );
    let elsewhere = signed_url.replace("moved.txt", "copy.txt");
    assert_eq!(
        server.client.get(&elsewhere).send().await.unwrap().status(),
        400
    );

    // A signed upload URL: the token is the permission, the owner is who asked.
    let upload_url = json(
        request(
            server,
            alice,
            Method::POST,
            &format!("object/upload/sign/docs/{ALICE}/via-url.txt"),
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap(),
    )
    .await;
    let url = format!(
        "{}/storage/v1{}",
        server.url,
        upload_url["url"].as_str().unwrap()
    );
    let put = server
        .client
        .put(&url)
        .header("content-type", "text/plain")
        .body("signed")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(json(put).await["Key"], format!("docs/{ALICE}/via-url.txt"));
    let info = json(
        request(
            server,
            alice,
            Method::GET,
            &format!("object/info/docs/{ALICE}/via-url.txt"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(info["owner"], ALICE);
    let reused = server.client.put(&url).body("again").send().await.unwrap();
    assert_eq!(
        kit::storage_refusal(reused).await,
        409,
        "the URL does not replace without upsert"
    );
    // With x-upsert, a URL may replace exactly the version its signer could replace.
    let sign_replacing = |who| {
        request(
            server,
            who,
            Method::POST,
            &format!("object/upload/sign/docs/{ALICE}/via-url.txt"),
        )
        .header("x-upsert", "true")
        .json(&json!({}))
        .send()
    };
    let replacing = json(sign_replacing(alice).await.unwrap()).await;
    let url = format!(
        "{}/storage/v1{}",
        server.url,
        replacing["url"].as_str().unwrap()
    );
    let replaced = server
        .client
        .put(&url)
        .header("x-upsert", "true")
        .body("replaced")
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), 200);
    let stale = server
        .client
        .put(&url)
        .header("x-upsert", "true")
        .body("stale")
        .send()
        .await
        .unwrap();
    assert_eq!(
        kit::storage_refusal(stale).await,
        409,
        "the version it could replace is gone"
    );
    assert_eq!(
        kit::storage_refusal(sign_replacing(bob).await.unwrap()).await,
        403
    );
    assert_eq!(
        download(server, alice, &format!("docs/{ALICE}/via-url.txt"))
            .await
            .text()
            .await
            .unwrap(),
        "replaced"
    );

    // Bob can neither read, list, overwrite, move, sign nor remove Alice's objects.
    assert_eq!(
        kit::storage_refusal(download(server, bob, &format!("docs/{ALICE}/moved.txt")).await).await,
        404
    );
    assert_eq!(
        kit::storage_refusal(download(server, As::Anon, &format!("docs/{ALICE}/moved.txt")).await)
            .await,
        404
    );
    assert!(list(server, bob, "docs", ALICE).await.is_empty());
    assert!(list(server, bob, "docs", "").await.is_empty());
    assert_eq!(
        kit::storage_refusal(
            upload(
                server,
                bob,
                &format!("docs/{ALICE}/evil.txt"),
                "text/plain",
                "x"
            )
            .await
        )
        .await,
        403
    );
    let overwrite = request(
        server,
        bob,
        Method::POST,
        &format!("object/docs/{ALICE}/moved.txt"),
    )
    .header("x-upsert", "true")
    .body("overwritten")
    .send()
    .await
    .unwrap();
    assert_eq!(kit::storage_refusal(overwrite).await, 403);
    let put_over = request(
        server,
        bob,
        Method::PUT,
        &format!("object/docs/{ALICE}/moved.txt"),
    )
    .body("overwritten")
    .send()
    .await
    .unwrap();
    assert_eq!(kit::storage_refusal(put_over).await, 403);
    let stolen = transfer(
        server,
        bob,
        "move",
        &format!("{ALICE}/moved.txt"),
        &format!("{BOB}/mine.txt"),
    )
    .await;
    assert_eq!(kit::storage_refusal(stolen).await, 404);
    let copied = transfer(
        server,
        bob,
        "copy",
        &format!("{ALICE}/moved.txt"),
        &format!("{BOB}/mine.txt"),
    )
    .await;
    assert_eq!(kit::storage_refusal(copied).await, 404);
    let signed = request(
        server,
        bob,
        Method::POST,
        &format!("object/sign/docs/{ALICE}/moved.txt"),
    )
    .json(&json!({"expiresIn": 60}))
    .send()
    .await
    .unwrap();
    assert_eq!(kit::storage_refusal(signed).await, 404);
    let removed = request(server, bob, Method::DELETE, "object/docs")
        .json(&json!({"prefixes": [format!("{ALICE}/moved.txt")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(json(removed).await, json!([]));
    let moved_back = transfer(
        server,
        alice,
        "move",
        &format!("{ALICE}/moved.txt"),
        &format!("{BOB}/gift.txt"),
    )
    .await;
    assert_eq!(
        kit::storage_refusal(moved_back).await,
        404,
        "Alice cannot move into Bob's folder"
    );
    assert_eq!(
        download(server, alice, &format!("docs/{ALICE}/moved.txt"))
            .await
            .text()
            .await
            .unwrap(),
        "second",
        "untouched by Bob"
    );
    let exists = |who, path: String| async move {
        request(server, who, Method::HEAD, &format!("object/{path}"))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(exists(alice, format!("docs/{ALICE}/moved.txt")).await, 200);
    // HEAD has no body to name the status in: 400, as Supabase Storage answers.
    assert_eq!(exists(bob, format!("docs/{ALICE}/moved.txt")).await, 400);

    // Alice removes hers; the bytes go with them.
    let removed = request(server, alice, Method::DELETE, "object/docs")
        .json(
            &json!({"prefixes": [format!("{ALICE}/moved.txt"), format!("{ALICE}/copy.txt"),
                                   format!("{ALICE}/via-url.txt")]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(json(removed).await.as_array().unwrap().len(), 3);
    assert!(list(server, alice, "docs", ALICE).await.is_empty());
    assert_eq!(
        kit::storage_refusal(download(server, alice, &format!("docs/{ALICE}/moved.txt")).await)
            .await,
        404
    );

    // Deny by default: a bucket no policy names takes nothing from users.
    create_bucket(server, json!({"id": "other"})).await;
    assert_eq!(
        kit::storage_refusal(upload(server, alice, "other/a.txt", "text/plain", "x").await).await,
        403
    );
    // The insert-only inbox: anyone adds small files, nobody reads them back.
    create_bucket(server, json!({"id": "inbox"})).await;
    assert_eq!(
        upload(server, As::Anon, "inbox/hello.txt", "text/plain", "hi")
            .await
            .status(),
        200
    );
    assert_eq!(
        kit::storage_refusal(download(server, As::Anon, "inbox/hello.txt").await).await,
        404
    );
    let big = upload(
        server,
        As::Anon,
        "inbox/big.txt",
        "text/plain",
        "x".repeat(200),
    )
    .await;
    assert_eq!(
        kit::storage_refusal(big).await,
        403,
        "the policy's size check"
    );
    assert_eq!(
        download(server, As::Secret, "inbox/hello.txt")
            .await
            .text()
            .await
            .unwrap(),
        "hi"
    );
    // A signed upload runs as its signer, checked with the real size when it arrives.
    let url = signed_upload_url(server, As::Anon, "inbox/signed.txt", false).await;
    let too_big = server
        .client
        .put(&url)
        .body("x".repeat(200))
        .send()
        .await
        .unwrap();
    assert_eq!(kit::storage_refusal(too_big).await, 403);
    let small = server.client.put(&url).body("small").send().await.unwrap();
    assert_eq!(small.status(), 200);

    // Insert-only for others: Bob may add to `shared` but not replace Alice's file,
    // directly or through a signed URL.
    create_bucket(server, json!({"id": "shared"})).await;
    assert_eq!(
        upload(server, alice, "shared/a.txt", "text/plain", "alice")
            .await
            .status(),
        200
    );
    let replace = request(server, bob, Method::POST, "object/shared/a.txt")
        .header("x-upsert", "true")
        .body("bob")
        .send()
        .await
        .unwrap();
    assert_eq!(kit::storage_refusal(replace).await, 403);
    let signing = request(server, bob, Method::POST, "object/upload/sign/shared/a.txt")
        .header("x-upsert", "true")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(kit::storage_refusal(signing).await, 403);
    let url = signed_upload_url(server, bob, "shared/a.txt", false).await;
    let put = server
        .client
        .put(&url)
        .header("x-upsert", "true")
        .body("bob")
        .send()
        .await
        .unwrap();
    assert_eq!(
        kit::storage_refusal(put).await,
        409,
        "a create-only URL does not replace"
    );

    // A URL can be signed before the type is known; the upload meets the policy
    // with its real type. A signed URL carries no claims: a policy reading one
    // (even `is null`) refuses uploads through it.
    create_bucket(server, json!({"id": "pictures"})).await;
    let direct = upload(server, alice, "pictures/a.png", "image/png", PNG).await;
    assert_eq!(direct.status(), 200);
    let url = signed_upload_url(server, alice, "pictures/b.png", false).await;
    let through_url = server
        .client
        .put(&url)
        .header("content-type", "image/png")
        .body(PNG)
        .send()
        .await
        .unwrap();
    assert_eq!(kit::storage_refusal(through_url).await, 403);
    assert_eq!(
        download(server, As::Secret, "shared/a.txt")
            .await
            .text()
            .await
            .unwrap(),
        "alice"
    );
    assert_eq!(
        list(server, As::Secret, "inbox", "").await,
        ["hello.txt", "signed.txt"]
    );
}

#[tokio::test]
async fn the_object_flow_on_sqlite_and_local_disk() {
    let database = TestDatabase::sqlite();
    let server = kit::start_storage(POLICIES, &database, None).await;
    the_object_flow(&server).await;
    // Replaced, refused and removed uploads left no bytes behind: a blob for
    // each object left (two in the inbox, one shared, one picture).
    assert_eq!(blob_files(&server), 4);
}

/// A signed upload URL for `path` (bucket/name), made by `who`.
async fn signed_upload_url(server: &TestServer, who: As<'_>, path: &str, upsert: bool) -> String {
    let signed = request(
        server,
        who,
        Method::POST,
        &format!("object/upload/sign/{path}"),
    )
    .header("x-upsert", upsert.to_string())
    .json(&json!({}))
    .send()
    .await
    .unwrap();
    assert_eq!(signed.status(), 200);
    let url = json(signed).await["url"].as_str().unwrap().to_owned();
    format!("{}/storage/v1{url}", server.url)
}

/// Files in the local object store, staging files included.
fn blob_files(server: &TestServer) -> usize {
    std::fs::read_dir(server.data_dir.path().join("storage/objects"))
        .unwrap()
        .count()
}

#[tokio::test]
async fn the_object_flow_on_postgres_and_s3() {
    let Some(database) = TestDatabase::postgres() else {
        return;
    };
    let s3 = kit::s3_endpoint();
    let server = kit::start_storage(POLICIES, &database, s3.as_deref()).await;
    the_object_flow(&server).await;
}

/// A request sent byte for byte (an HTTP client would normalise `..` away),
/// its status code back.
async fn raw_status(server: &TestServer, method: &str, target: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = server.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let token = server.token_for(ALICE);
    let request = format!(
        "{method} {target} HTTP/1.1\r\nhost: {address}\r\napikey: {}\r\nauthorization: Bearer {token}\r\n\
         content-type: text/plain\r\ncontent-length: 1\r\nconnection: close\r\n\r\nx",
        server.publishable
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

/// Bytes outside the unreserved set (and `/`) percent-encoded, `..` left as is.
fn encode(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A server on SQLite and local disk (with `settings` in its gatehouse.toml)
/// where users may do anything in the bucket `docs`, which exists.
async fn docs_server(settings: &str) -> TestServer {
    let text = format!(
        "{settings}\n[[storage.policies]]\nname = \"anything in docs\"\nfor = \"all\"\n\
         to = \"authenticated\"\nusing = \"bucket_id = 'docs'\"\n"
    );
    let server = kit::start_storage(&text, &TestDatabase::sqlite(), None).await;
    create_bucket(&server, json!({"id": "docs"})).await;
    server
}

#[tokio::test]
async fn every_bad_name_is_refused_on_every_route() {
    let server = docs_server("").await;
    let alice = As::User(ALICE);
    assert_eq!(
        upload(&server, alice, "docs/good.txt", "text/plain", "ok")
            .await
            .status(),
        200
    );
    let names = gatehouse_storage::name::BAD_NAMES;
    assert!(names.len() >= 30);
    for name in names {
        let path = encode(name);
        for (method, target) in [
            ("POST", format!("/storage/v1/object/docs/{path}")),
            ("PUT", format!("/storage/v1/object/docs/{path}")),
            ("GET", format!("/storage/v1/object/docs/{path}")),
            ("GET", format!("/storage/v1/object/info/docs/{path}")),
            (
                "POST",
                format!("/storage/v1/object/upload/sign/docs/{path}"),
            ),
        ] {
            let status = raw_status(&server, method, &target).await;
            // An empty name leaves no path for the routes to match: 404 or 405.
            let refused = status == 400 || name.is_empty() && (status == 404 || status == 405);
            assert!(refused, "{method} {target}: {status}");
        }
        for (route, source, destination) in [
            ("move", "good.txt", *name),
            ("copy", "good.txt", *name),
            ("move", *name, "x.txt"),
        ] {
            let answer = transfer(&server, alice, route, source, destination).await;
            assert!(
                answer.status().is_client_error(),
                "{route} {source:?} {destination:?}: {}",
                answer.status()
            );
        }
        let removed = request(&server, alice, Method::DELETE, "object/docs")
            .json(&json!({"prefixes": [name]}))
            .send()
            .await
            .unwrap();
        assert_eq!(removed.status(), StatusCode::BAD_REQUEST, "remove {name:?}");
    }
    // Nothing was written anywhere: one object, one blob.
    assert_eq!(list(&server, As::Secret, "docs", "").await, ["good.txt"]);
    assert_eq!(blob_files(&server), 1);
}

/// A PNG's first bytes: enough for the sniffer.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";

#[tokio::test]
async fn buckets_limit_size_and_type_and_serving_is_safe() {
    let database = TestDatabase::sqlite();
    let server = kit::start_storage(
        r#"
[[storage.policies]]
name = "users use images and files"
for = "all"
to = "authenticated"
using = "bucket_id in ('images', 'files')"
"#,
        &database,
        None,
    )
    .await;
    create_bucket(
        &server,
        json!({"id": "images", "file_size_limit": 1024, "allowed_mime_types": ["image/png", "image/jpeg"]}),
    )
    .await;
    create_bucket(&server, json!({"id": "files"})).await;
    let alice = As::User(ALICE);
    assert_eq!(
        upload(&server, alice, "images/a.png", "image/png", PNG)
            .await
            .status(),
        200
    );
    let html = "<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>";
    for (name, declared, body, status) in [
        ("b.png", "image/png", html.as_bytes().to_vec(), 415),
        ("c.html", "text/html", html.as_bytes().to_vec(), 415),
        ("d.jpg", "image/jpeg", PNG.to_vec(), 415),
        // Real PNG bytes, declared as such, under a name a browser would save
        // and open as a page.
        ("page.html", "image/png", PNG.to_vec(), 415),
        ("e.png", "image/png", [PNG, &[0u8; 2048]].concat(), 413),
    ] {
        let answer = upload(&server, alice, &format!("images/{name}"), declared, body).await;
        assert_eq!(kit::storage_refusal(answer).await, status, "{name}");
    }
    // Over the limit without a length up front: cut off while streaming.
    let chunks = futures_util::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![0u8; 512]))),
    );
    let streamed = request(&server, alice, Method::POST, "object/images/f.png")
        .header("content-type", "image/png")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(kit::storage_refusal(streamed).await, 413);
    assert_eq!(list(&server, alice, "images", "").await, ["a.png"]);
    assert_eq!(blob_files(&server), 1, "refused uploads leave no bytes");
    // Nor can a move give a stored PNG such a name.
    let renamed = request(&server, alice, Method::POST, "object/move")
        .json(&json!({"bucketId": "images", "sourceKey": "a.png", "destinationKey": "a.html"}))
        .send()
        .await
        .unwrap();
    assert_eq!(kit::storage_refusal(renamed).await, 415);

    // Served: PNG inline; HTML, SVG and unknown types as attachments; all sandboxed.
    let png = download(&server, alice, "images/a.png").await;
    assert!(png.headers().get("content-disposition").is_none());
    for (name, declared) in [
        ("page.html", "text/html"),
        ("icon.svg", "image/svg+xml"),
        ("data.xml", "application/xml"),
        ("blob.bin", "application/x-unknown"),
    ] {
        let path = format!("files/{name}");
        assert_eq!(
            upload(&server, alice, &path, declared, html).await.status(),
            200
        );
        let served = download(&server, alice, &path).await;
        let headers = served.headers();
        let disposition = headers["content-disposition"].to_str().unwrap();
        assert!(
            disposition.starts_with("attachment;"),
            "{name}: {disposition}"
        );
        assert!(
            headers["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("sandbox")
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    let asked = request(
        &server,
        alice,
        Method::GET,
        "object/images/a.png?download=my%20pic.png",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(
        asked.headers()["content-disposition"],
        "attachment; filename=\"my_pic.png\"; filename*=UTF-8''my%20pic%2Epng"
    );

    // Moving or copying into a bucket meets its limits as an upload would.
    let big_png = [PNG, &[0u8; 2048]].concat();
    assert_eq!(
        upload(&server, alice, "files/big.png", "image/png", big_png)
            .await
            .status(),
        200
    );
    assert_eq!(
        upload(&server, alice, "files/fake.png", "image/png", html)
            .await
            .status(),
        200
    );
    for (route, source, status) in [
        ("move", "big.png", 413),
        ("copy", "big.png", 413),
        ("copy", "fake.png", 415),
        ("move", "fake.png", 415),
    ] {
        let answer = request(&server, alice, Method::POST, &format!("object/{route}"))
            .json(
                &json!({"bucketId": "files", "sourceKey": source, "destinationBucket": "images",
                          "destinationKey": source}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            kit::storage_refusal(answer).await,
            status,
            "{route} {source}"
        );
    }
    assert_eq!(list(&server, alice, "images", "").await, ["a.png"]);

    // A form whose file never starts (its boundary never comes) is cut off
    // early, not buffered.
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(8);
    for _ in 0..4 {
        sender
            .send(Ok(bytes::Bytes::from(vec![b'x'; 1 << 20])))
            .await
            .unwrap();
    }
    let endless = request(&server, alice, Method::POST, "object/files/form.bin")
        .header("content-type", "multipart/form-data; boundary=never")
        .body(reqwest::Body::wrap_stream(tokio_stream_of(receiver)))
        .send();
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), endless)
        .await
        .expect("the server kept reading")
        .unwrap();
    assert_eq!(answer.status(), 400);
    drop(sender);
}

#[tokio::test]
async fn public_buckets_serve_downloads_to_anyone_and_nothing_else() {
    let database = TestDatabase::sqlite();
    let server = kit::start_storage("", &database, None).await;
    create_bucket(&server, json!({"id": "pub", "public": true})).await;
    create_bucket(&server, json!({"id": "priv"})).await;
    for bucket in ["pub", "priv"] {
        let stored = upload(
            &server,
            As::Secret,
            &format!("{bucket}/a.txt"),
            "text/plain",
            "hello",
        )
        .await;
        assert_eq!(stored.status(), 200);
    }
    let public = server
        .client
        .get(format!("{}/storage/v1/object/public/pub/a.txt", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 200);
    assert!(
        public.headers()["cache-control"]
            .to_str()
            .unwrap()
            .starts_with("public")
    );
    assert_eq!(public.text().await.unwrap(), "hello");
    let private = server
        .client
        .get(format!(
            "{}/storage/v1/object/public/priv/a.txt",
            server.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(kit::storage_refusal(private).await, 404);
    // Public means readable through the public route, not writable or listable.
    assert_eq!(
        kit::storage_refusal(upload(&server, As::Anon, "pub/b.txt", "text/plain", "x").await).await,
        403
    );
    assert!(list(&server, As::Anon, "pub", "").await.is_empty());
    assert_eq!(
        kit::storage_refusal(download(&server, As::Anon, "pub/a.txt").await).await,
        404
    );
}

/// Staging files (`<key>#<n>`) and blobs in the binary's local object store.
fn stored_files(data: &std::path::Path) -> Vec<(String, u64)> {
    std::fs::read_dir(data.join("storage/objects"))
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| {
                    let size = entry.metadata().map_or(0, |meta| meta.len());
                    (entry.file_name().to_string_lossy().into_owned(), size)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn kill_9_during_an_upload_leaves_no_object_and_no_file() {
    use crate::kit::Process;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gatehouse.toml"),
        "[server]\nrequest_timeout_secs = 2\n[storage]\nupload_timeout_secs = 3\norphan_grace_secs = 1\n",
    )
    .unwrap();
    let data = dir.path().join("gatehouse-data");
    let mut first = Process::serve(dir.path(), &[], &[]);
    let secret = std::fs::read_to_string(data.join("secret.key")).unwrap();
    let client = reqwest::Client::new();
    let admin = |method: Method, url: String| {
        client
            .request(method, url)
            .header("apikey", &secret)
            .bearer_auth(&secret)
    };
    let created = admin(Method::POST, format!("{}/storage/v1/bucket", first.url))
        .json(&json!({"id": "docs"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);

    // 20 MiB sent, then the body stays open: the upload is mid-stream.
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(64);
    for _ in 0..20 {
        sender
            .send(Ok(bytes::Bytes::from(vec![7u8; 1 << 20])))
            .await
            .unwrap();
    }
    let body = reqwest::Body::wrap_stream(tokio_stream_of(receiver));
    let upload = tokio::spawn(
        admin(
            Method::POST,
            format!("{}/storage/v1/object/docs/big.bin", first.url),
        )
        .header("content-type", "application/octet-stream")
        .body(body)
        .send(),
    );
    let staged = async {
        loop {
            let files = stored_files(&data);
            if files
                .iter()
                .any(|(name, size)| name.contains('#') && *size > 0)
            {
                return files;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    let files = tokio::time::timeout(std::time::Duration::from_secs(20), staged)
        .await
        .expect("the upload never reached the disk");
    assert!(
        files.iter().all(|(name, _)| name.contains('#')),
        "{files:?}"
    );

    first.child.kill().unwrap();
    first.child.wait().unwrap();
    drop(sender);
    let _ = upload.await;
    assert!(
        !stored_files(&data).is_empty(),
        "the partial upload is on disk"
    );

    // Past the upload's time limit and the grace (4 s, counted in whole
    // seconds from the upload's start), the next start sweeps it; nothing is
    // visible.
    tokio::time::sleep(std::time::Duration::from_millis(6500)).await;
    let second = Process::serve(dir.path(), &[], &[]);
    let swept = async {
        while !stored_files(&data).is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(std::time::Duration::from_secs(10), swept)
        .await
        .is_err()
    {
        let left = stored_files(&data);
        let (_, log) = second.terminate();
        panic!("left behind: {left:?}\n{log}");
    }
    let fetched = admin(
        Method::GET,
        format!("{}/storage/v1/object/docs/big.bin", second.url),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(kit::storage_refusal(fetched).await, 404);
    let listed = admin(
        Method::POST,
        format!("{}/storage/v1/object/list/docs", second.url),
    )
    .json(&json!({"prefix": ""}))
    .send()
    .await
    .unwrap();
    assert_eq!(json(listed).await, json!([]));
}

/// The receiving end of a channel as a stream (what reqwest streams from).
fn tokio_stream_of<T: Send + 'static>(
    receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}

#[tokio::test]
async fn one_client_cannot_hold_every_upload_slot() {
    let server = docs_server("[storage]\nmax_concurrent_uploads = 4\n").await;
    // Alice's first upload stays open: her share (a quarter of 4) is taken.
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    sender
        .send(Ok(bytes::Bytes::from_static(b"first bytes")))
        .await
        .unwrap();
    let open = tokio::spawn(
        request(
            &server,
            As::User(ALICE),
            Method::POST,
            "object/docs/slow.bin",
        )
        .body(reqwest::Body::wrap_stream(tokio_stream_of(receiver)))
        .send(),
    );
    // Its staging file shows it holds its slot.
    let started = async {
        while blob_files(&server) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), started)
        .await
        .expect("the open upload never started");
    let second = upload(
        &server,
        As::User(ALICE),
        "docs/second.bin",
        "text/plain",
        "x",
    )
    .await;
    assert_eq!(second.status(), 503);
    assert!(second.headers().contains_key("retry-after"));
    // Someone else still gets a slot; Alice gets hers back when hers finishes.
    assert_eq!(
        upload(&server, As::User(BOB), "docs/bob.bin", "text/plain", "x")
            .await
            .status(),
        200
    );
    drop(sender);
    assert_eq!(open.await.unwrap().unwrap().status(), 200);
    assert_eq!(
        upload(
            &server,
            As::User(ALICE),
            "docs/third.bin",
            "text/plain",
            "x"
        )
        .await
        .status(),
        200
    );
}

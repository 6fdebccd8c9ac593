//! TUS resumable uploads at `/storage/v1/upload/resumable`, through HTTP: the
//! protocol's statuses and headers, the storage policies and bucket limits at
//! creation and again at the last byte, only the creator continuing, and
//! acknowledged bytes surviving kill -9. (tus-js-client resuming after a cut
//! connection is in clients/js/storage.test.mjs.)

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use gatehouse_db::testing::TestDatabase;
use reqwest::Method;
use serde_json::json;

use crate::kit::{self, TestServer, json};

const ALICE: &str = "0190c2a4-7e5b-7000-8000-00000000a11c";
const BOB: &str = "0190c2a4-7e5b-7000-8000-000000000b0b";

const POLICIES: &str = r#"
[[storage.policies]]
name = "own folder"
for = "all"
to = "authenticated"
using = "bucket_id = 'docs' and (storage.foldername(name))[1] = auth.uid()"
"#;

fn metadata(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(key, value)| format!("{key} {}", STANDARD.encode(value)))
        .collect::<Vec<_>>()
        .join(",")
}

/// A TUS request as `user` (or with the secret key), speaking 1.0.0.
fn tus(
    server: &TestServer,
    user: Option<&str>,
    method: Method,
    url: &str,
) -> reqwest::RequestBuilder {
    let url = if url.starts_with('/') {
        format!("{}{url}", server.url)
    } else {
        url.to_owned()
    };
    let builder = server
        .client
        .request(method, url)
        .header("tus-resumable", "1.0.0");
    match user {
        Some(user) => builder
            .header("apikey", &server.publishable)
            .bearer_auth(server.token_for(user)),
        None => builder
            .header("apikey", &server.secret)
            .bearer_auth(&server.secret),
    }
}

async fn create(
    server: &TestServer,
    user: Option<&str>,
    length: usize,
    name: &str,
) -> reqwest::Response {
    tus(server, user, Method::POST, "/storage/v1/upload/resumable")
        .header("upload-length", length.to_string())
        .header(
            "upload-metadata",
            metadata(&[
                ("bucketName", "docs"),
                ("objectName", name),
                ("contentType", "text/plain"),
            ]),
        )
        .send()
        .await
        .unwrap()
}

async fn send(
    server: &TestServer,
    user: Option<&str>,
    location: &str,
    offset: usize,
    bytes: &[u8],
) -> reqwest::Response {
    tus(server, user, Method::PATCH, location)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", offset.to_string())
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn the_protocol(server: &TestServer) {
    let made = server
        .client
        .post(format!("{}/storage/v1/bucket", server.url))
        .header("apikey", &server.secret)
        .bearer_auth(&server.secret)
        .json(&json!({"id": "docs", "file_size_limit": 1000}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 200);

    let options = tus(
        server,
        Some(ALICE),
        Method::OPTIONS,
        "/storage/v1/upload/resumable",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(options.status(), 204);
    assert_eq!(header(&options, "tus-version"), "1.0.0");
    assert!(header(&options, "tus-extension").contains("creation"));

    let name = format!("{ALICE}/notes.txt");
    let unversioned = server
        .client
        .post(format!("{}/storage/v1/upload/resumable", server.url))
        .header("apikey", &server.publishable)
        .bearer_auth(server.token_for(ALICE))
        .header("upload-length", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(unversioned.status(), 412);
    assert_eq!(header(&unversioned, "tus-version"), "1.0.0");
    assert_eq!(
        create(server, Some(ALICE), 1001, &name).await.status(),
        413,
        "over the bucket's limit"
    );
    assert_eq!(
        create(server, Some(BOB), 10, &name).await.status(),
        403,
        "another user's folder"
    );
    let no_name = tus(
        server,
        Some(ALICE),
        Method::POST,
        "/storage/v1/upload/resumable",
    )
    .header("upload-length", "10")
    .header("upload-metadata", metadata(&[("bucketName", "docs")]))
    .send()
    .await
    .unwrap();
    assert_eq!(no_name.status(), 400);

    let created = create(server, Some(ALICE), 26, &name).await;
    assert_eq!(created.status(), 201);
    assert_eq!(header(&created, "tus-resumable"), "1.0.0");
    let location = header(&created, "location");
    assert!(
        location.starts_with("/storage/v1/upload/resumable/"),
        "{location}"
    );

    let text = b"abcdefghijklmnopqrstuvwxyz";
    let first = send(server, Some(ALICE), &location, 0, &text[..10]).await;
    assert_eq!(first.status(), 204);
    assert_eq!(header(&first, "upload-offset"), "10");
    let stale = send(server, Some(ALICE), &location, 0, &text[..10]).await;
    assert_eq!(stale.status(), 409, "not at the stored offset");
    let wrong_type = tus(server, Some(ALICE), Method::PATCH, &location)
        .header("content-type", "text/plain")
        .header("upload-offset", "10")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 415);
    let too_much = send(server, Some(ALICE), &location, 10, &[b'x'; 17]).await;
    assert_eq!(too_much.status(), 413, "past Upload-Length");
    for user in [Some(BOB), None] {
        let head = tus(server, user, Method::HEAD, &location)
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 404, "only its creator sees an upload");
        assert_eq!(
            send(server, user, &location, 10, &text[10..])
                .await
                .status(),
            404
        );
    }
    let head = tus(server, Some(ALICE), Method::HEAD, &location)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "upload-offset"), "10");
    assert_eq!(header(&head, "upload-length"), "26");
    assert_eq!(header(&head, "cache-control"), "no-store");
    let visible = server
        .client
        .get(format!("{}/storage/v1/object/docs/{name}", server.url))
        .header("apikey", &server.publishable)
        .bearer_auth(server.token_for(ALICE))
        .send()
        .await
        .unwrap();
    assert_eq!(
        kit::storage_refusal(visible).await,
        404,
        "no object before the last byte"
    );

    let last = send(server, Some(ALICE), &location, 10, &text[10..]).await;
    assert_eq!(last.status(), 204);
    assert_eq!(header(&last, "upload-offset"), "26");
    let object = server
        .client
        .get(format!("{}/storage/v1/object/docs/{name}", server.url))
        .header("apikey", &server.publishable)
        .bearer_auth(server.token_for(ALICE))
        .send()
        .await
        .unwrap();
    assert_eq!(object.status(), 200);
    assert_eq!(header(&object, "content-type"), "text/plain");
    assert_eq!(object.bytes().await.unwrap().as_ref(), text);
    let done = tus(server, Some(ALICE), Method::HEAD, &location)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 404, "a finished upload is forgotten");

    // Taken names need x-upsert, checked again at the last byte; an empty
    // object is made at creation.
    assert_eq!(create(server, Some(ALICE), 0, &name).await.status(), 409);
    let empty = format!("{ALICE}/empty.txt");
    assert_eq!(create(server, Some(ALICE), 0, &empty).await.status(), 201);
    let listed = server
        .client
        .post(format!("{}/storage/v1/object/list/docs", server.url))
        .header("apikey", &server.secret)
        .bearer_auth(&server.secret)
        .json(&json!({"prefix": ALICE}))
        .send()
        .await
        .unwrap();
    let names: Vec<String> = json(listed)
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["empty.txt", "notes.txt"]);

    // Ended uploads drop their bytes.
    let ended = create(server, Some(ALICE), 20, &format!("{ALICE}/ended.txt")).await;
    let location = header(&ended, "location");
    assert_eq!(
        send(server, Some(ALICE), &location, 0, b"0123456789")
            .await
            .status(),
        204
    );
    let deleted = tus(server, Some(ALICE), Method::DELETE, &location)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(
        send(server, Some(ALICE), &location, 10, b"0123456789")
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn the_tus_protocol_on_sqlite_and_local_disk() {
    let database = TestDatabase::sqlite();
    let server = kit::start_storage(POLICIES, &database, None).await;
    the_protocol(&server).await;
    let blobs = std::fs::read_dir(server.data_dir.path().join("storage/objects"))
        .unwrap()
        .count();
    assert_eq!(blobs, 2, "one blob per object; no part left behind");
}

#[tokio::test]
async fn the_tus_protocol_on_postgres_and_s3() {
    let Some(database) = TestDatabase::postgres() else {
        return;
    };
    let s3 = kit::s3_endpoint();
    let server = kit::start_storage(POLICIES, &database, s3.as_deref()).await;
    the_protocol(&server).await;
}

/// A PATCH answered 204 has its bytes: after kill -9 and a restart, `HEAD`
/// gives the same offset and the upload completes.
#[tokio::test]
async fn acknowledged_bytes_survive_kill_9() {
    use crate::kit::Process;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("gatehouse-data");
    let mut first = Process::serve(dir.path(), &[], &[]);
    let secret = std::fs::read_to_string(data.join("secret.key")).unwrap();
    let client = reqwest::Client::new();
    let request = |method: Method, url: String| {
        client
            .request(method, url)
            .header("apikey", &secret)
            .bearer_auth(&secret)
            .header("tus-resumable", "1.0.0")
    };
    let made = request(Method::POST, format!("{}/storage/v1/bucket", first.url))
        .json(&json!({"id": "docs"}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 200);
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let created = request(
        Method::POST,
        format!("{}/storage/v1/upload/resumable", first.url),
    )
    .header("upload-length", bytes.len().to_string())
    .header(
        "upload-metadata",
        metadata(&[("bucketName", "docs"), ("objectName", "big.bin")]),
    )
    .header("content-type", "application/offset+octet-stream")
    .body(bytes[..1_000_000].to_vec())
    .send()
    .await
    .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(header(&created, "upload-offset"), "1000000");
    let location = header(&created, "location");
    let second_part = request(Method::PATCH, format!("{}{location}", first.url))
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "1000000")
        .body(bytes[1_000_000..2_000_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(second_part.status(), 204);

    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let second = Process::serve(dir.path(), &[], &[]);
    let head = request(Method::HEAD, format!("{}{location}", second.url))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "upload-offset"), "2000000");
    let rest = request(Method::PATCH, format!("{}{location}", second.url))
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "2000000")
        .body(bytes[2_000_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 204);
    let object = request(
        Method::GET,
        format!("{}/storage/v1/object/docs/big.bin", second.url),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(object.status(), 200);
    assert_eq!(object.bytes().await.unwrap().as_ref(), bytes.as_slice());
}

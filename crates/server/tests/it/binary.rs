//! The real binary, as a user runs it.

use std::os::unix::fs::PermissionsExt;

use gatehouse_db::testing::TestDatabase;

use crate::kit::{Process, gatehouse};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn first_start_creates_the_data_folder_and_a_second_reuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let first = Process::serve(dir.path(), &[], &[]);
    let publishable = first.banner_value("Publishable key:");
    assert!(publishable.starts_with("sb_publishable_"));
    let secret_line = first.banner_value("Secret key:");
    assert!(
        secret_line.contains("gatehouse-data/secret.key"),
        "{secret_line}"
    );
    let health = reqwest::get(format!("{}/health", first.url)).await.unwrap();
    assert_eq!(health.status(), 200);
    let (status, _) = first.terminate();
    assert!(status.success(), "{status}");

    let data = dir.path().join("gatehouse-data");
    assert_eq!(mode(&data), 0o700);
    for file in ["publishable.key", "secret.key", "signing-keys.json"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    assert!(data.join("gatehouse.db").exists());
    let secret = std::fs::read_to_string(data.join("secret.key")).unwrap();
    let banner_text = first_banner_text(&dir);
    assert!(
        !banner_text.contains(&secret),
        "the secret key is never printed"
    );

    let second = Process::serve(dir.path(), &[], &[]);
    assert_eq!(second.banner_value("Publishable key:"), publishable);
    let with_old_key = reqwest::Client::new()
        .get(format!("{}/rest/v1/x", second.url))
        .header("apikey", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(
        with_old_key.status(),
        404,
        "the stored secret key still works"
    );
    second.terminate();
}

/// Starts once more and returns the banner, to check what a start prints.
fn first_banner_text(dir: &tempfile::TempDir) -> String {
    let process = Process::serve(dir.path(), &[], &[]);
    let text = process.banner.join("\n");
    process.terminate();
    text
}

#[test]
fn production_without_secrets_refuses_and_names_each() {
    let dir = tempfile::tempdir().unwrap();
    let output = gatehouse(dir.path(), &["serve", "--production"], &[])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for name in [
        "GATEHOUSE_SIGNING_KEYS_FILE",
        "GATEHOUSE_PUBLISHABLE_KEY",
        "GATEHOUSE_SECRET_KEY",
    ] {
        assert!(
            stderr.contains(&format!("{name} is missing")),
            "{name}: {stderr}"
        );
    }
    assert!(
        stderr.contains("gatehouse keys generate"),
        "says how to fix: {stderr}"
    );
    assert!(
        !dir.path().join("gatehouse-data").exists(),
        "nothing is generated in production"
    );

    let by_env = gatehouse(dir.path(), &["serve"], &[("GATEHOUSE_ENV", "production")])
        .output()
        .unwrap();
    assert!(!by_env.status.success());
}

#[test]
fn production_refuses_weak_default_and_development_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = |file: &str| dir.path().join(file).display().to_string();
    let generate =
        |args: &[&str]| assert!(gatehouse(dir.path(), args, &[]).status().unwrap().success());
    generate(&["keys", "generate", "--out", "signing.json"]);
    generate(&[
        "keys",
        "generate",
        "--api-key",
        "publishable",
        "--out",
        "publishable.key",
    ]);
    generate(&[
        "keys",
        "generate",
        "--api-key",
        "secret",
        "--out",
        "secret.key",
    ]);
    // A development start leaves development keys behind.
    let dev = Process::serve(dir.path(), &[], &[]);
    dev.terminate();

    let signing = path("signing.json");
    let publishable = path("publishable.key");
    let secret = path("secret.key");
    let dev_keys = path("gatehouse-data/signing-keys.json");
    let good: Vec<(&str, &str)> = vec![
        ("GATEHOUSE_SIGNING_KEYS_FILE", &signing),
        ("GATEHOUSE_PUBLISHABLE_KEY_FILE", &publishable),
        ("GATEHOUSE_SECRET_KEY_FILE", &secret),
        // Email confirmation is on by default: confirmations must be able to leave.
        ("GATEHOUSE_SMTP_URL", "smtp://127.0.0.1:1"),
    ];
    let refuse = |replace: (&str, &str), expected: &str| {
        let mut env: Vec<(&str, &str)> = good
            .iter()
            .filter(|(k, _)| *k != replace.0)
            .copied()
            .collect();
        env.push(replace);
        if replace.0 == "GATEHOUSE_SECRET_KEY" {
            env.retain(|(k, _)| *k != "GATEHOUSE_SECRET_KEY_FILE");
        }
        let output = gatehouse(dir.path(), &["serve", "--production"], &env)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{replace:?} was accepted");
        assert!(stderr.contains(expected), "{replace:?}: {stderr}");
        assert!(
            !stderr.contains("hunter2"),
            "a secret value is never echoed: {stderr}"
        );
    };
    refuse(
        ("GATEHOUSE_SMTP_URL", ""),
        "GATEHOUSE_SMTP_URL is missing while [auth] email_confirmation is on",
    );
    refuse(
        ("GATEHOUSE_SECRET_KEY", "changeme"),
        "GATEHOUSE_SECRET_KEY is too weak (it is a well-known default",
    );
    refuse(
        (
            "GATEHOUSE_SECRET_KEY",
            "super-secret-jwt-token-with-at-least-32-characters-long",
        ),
        "GATEHOUSE_SECRET_KEY is too weak (it is a well-known default",
    );
    refuse(
        (
            "GATEHOUSE_SECRET_KEY",
            "sb_secret_abcabcabcabcabcabcabcabcabcabcabcabcabc",
        ),
        "GATEHOUSE_SECRET_KEY is too weak (its measured entropy",
    );
    refuse(
        ("GATEHOUSE_SECRET_KEY", "hunter2-short"),
        "GATEHOUSE_SECRET_KEY is too weak (it is shorter than 32",
    );
    refuse(
        ("GATEHOUSE_SIGNING_KEYS_FILE", &dev_keys),
        "holds development keys",
    );
    refuse(
        (
            "GATEHOUSE_DATABASE_URL",
            "postgres://gatehouse@127.0.0.1:1/app",
        ),
        "GATEHOUSE_DATABASE_URL has no password",
    );
    refuse(
        (
            "GATEHOUSE_DATABASE_URL",
            "postgres://gatehouse:hunter2@127.0.0.1:1/app",
        ),
        "GATEHOUSE_DATABASE_URL password is too weak",
    );

    let production = Process::serve(dir.path(), &["--production"], &good);
    assert!(production.banner.join("\n").contains("production mode"));
    production.terminate();

    // The same on PostgreSQL with a strong password (the CI server trusts
    // loopback, so the password is checked by us, not by it).
    if let Some(database) = TestDatabase::postgres() {
        let TestDatabase::Postgres { name, .. } = &database else {
            unreachable!()
        };
        let url = format!("postgres://postgres:Zq8v3LmT9xW2rB7kN4pY@127.0.0.1:5432/{name}");
        let mut env = good.clone();
        env.push(("GATEHOUSE_DATABASE_URL", &url));
        let on_postgres = Process::serve(dir.path(), &["--production"], &env);
        let banner = on_postgres.banner.join("\n");
        assert!(
            banner.contains("PostgreSQL") && !banner.contains("Zq8v3LmT9xW2rB7kN4pY"),
            "{banner}"
        );
        let (status, logs) = on_postgres.terminate();
        assert!(status.success());
        assert!(
            !logs.contains("Zq8v3LmT9xW2rB7kN4pY"),
            "the database password reached the log"
        );
    }
}

#[test]
fn a_malformed_config_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gatehouse.toml"),
        "[server]\nlisten = \"127.0.0.1:54321\"\nrequest_timeout_secs = \"soon\"\n",
    )
    .unwrap();
    let output = gatehouse(dir.path(), &["serve"], &[]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("gatehouse.toml:3:"), "{stderr}");
    assert!(
        stderr.contains("integer") || stderr.contains("invalid type"),
        "{stderr}"
    );
}

#[test]
fn init_writes_a_starter_that_serve_accepts() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        gatehouse(dir.path(), &["init"], &[])
            .status()
            .unwrap()
            .success()
    );
    let text = std::fs::read_to_string(dir.path().join("gatehouse.toml")).unwrap();
    assert!(text.contains("# ") && text.contains("[server]"));
    let again = gatehouse(dir.path(), &["init"], &[]).output().unwrap();
    assert!(!again.status.success(), "no silent overwrite");
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let process = Process::serve(dir.path(), &[], &[]);
    process.terminate();
}

#[tokio::test]
async fn logs_are_structured_and_carry_no_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let process = Process::serve(dir.path(), &[], &[]);
    let secret = std::fs::read_to_string(dir.path().join("gatehouse-data/secret.key")).unwrap();
    let client = reqwest::Client::new();
    let sent = [
        "Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJsZWFrIn0.c2lnbmF0dXJlLWxlYWs",
        "session=cookie-value-leak",
        "password-in-body-leak",
        "refresh-token-leak",
        "query-password-leak",
    ];
    let response = client
        .post(format!(
            "{}/auth/v1/token?grant_type=password&password={}&refresh_token={}",
            process.url, sent[4], sent[3]
        ))
        .header("apikey", &secret)
        .header("authorization", sent[0])
        .header("cookie", sent[1])
        .header("x-request-id", "log-test-1")
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"email":"a@example.com","password":"{}"}}"#,
            sent[2]
        ))
        .send()
        .await
        .unwrap();
    // A real sign-in attempt: the password went through the hashing path.
    assert_eq!(response.status(), 400);
    client
        .get(format!("{}/rest/v1/orders", process.url))
        .header("apikey", "sb_secret_wrong-key-leak")
        .send()
        .await
        .unwrap();
    let (_, logs) = process.terminate();

    for secret_value in sent
        .iter()
        .copied()
        .chain([secret.as_str(), "wrong-key-leak", "eyJ"])
    {
        assert!(
            !logs.contains(secret_value),
            "{secret_value} reached the log:\n{logs}"
        );
    }
    let access: serde_json::Value = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["request_id"] == "log-test-1")
        .unwrap_or_else(|| panic!("no access line:\n{logs}"));
    assert_eq!(access["method"], "POST");
    assert_eq!(access["status"], 400);
    assert!(access["route"].is_string());
    assert!(access["latency_ms"].is_number());
    assert_eq!(access["level"], "INFO");
}

#[test]
fn the_example_shop_declaration_loads_and_migrates() {
    let dir = tempfile::tempdir().unwrap();
    let shop = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/shop/gatehouse.toml"
    );
    let output = gatehouse(dir.path(), &["--config", shop, "migrate", "--dry-run"], &[])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for table in [
        "profiles",
        "products",
        "orders",
        "order_items",
        "teams",
        "team_members",
        "projects",
    ] {
        assert!(
            stdout.contains(&format!("+ create table {table}")),
            "{table}: {stdout}"
        );
    }
    // Policy columns are indexed without being declared.
    assert!(
        stdout.contains(r#"CREATE INDEX "ix_team_members_user_id""#),
        "{stdout}"
    );
}

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Value, json};

use crate::kit::{self, Process, gatehouse};

fn claims() -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    json!({"sub": "u1", "role": "authenticated", "aud": "authenticated", "iss": "test", "exp": now + 600, "iat": now})
}

/// Verifies a token the way a client does: with the key the JWKS publishes under its kid.
fn verify_with_jwks(jwks: &JwkSet, token: &str) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk = jwks.find(&kid).ok_or("kid not published")?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&["authenticated"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn jwks_publishes_the_key_that_signs() {
    let server = kit::start().await;
    let response = server
        .get("/auth/v1/.well-known/jwks.json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let jwks: JwkSet = response.json().await.unwrap();
    assert_eq!(jwks.keys.len(), 1);
    let token = server.running.state.signing_keys().sign(&claims()).unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert_eq!(verify_with_jwks(&jwks, &token).unwrap()["sub"], "u1");
}

async fn jwks_of(process: &Process) -> JwkSet {
    reqwest::get(format!("{}/auth/v1/.well-known/jwks.json", process.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn run_keys(dir: &std::path::Path, args: &[&str]) -> String {
    let mut all = vec!["keys"];
    all.extend_from_slice(args);
    let output = gatehouse(dir, &all, &[]).output().unwrap();
    assert!(
        output.status.success(),
        "{:?}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn rotation_keeps_old_tokens_verifying_until_retired() {
    let dir = tempfile::tempdir().unwrap();
    let first = Process::serve(dir.path(), &[], &[]);
    let before = jwks_of(&first).await;
    first.terminate();
    let old_kid = before.keys[0].common.key_id.clone().unwrap();
    let keyset =
        gatehouse_keys::KeySet::load(&dir.path().join("gatehouse-data/signing-keys.json")).unwrap();
    let old_token = keyset.sign(&claims()).unwrap();

    run_keys(dir.path(), &["rotate", "--alg", "eddsa"]);
    let listed = run_keys(dir.path(), &["list"]);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    assert!(listed.contains(&old_kid));

    let second = Process::serve(dir.path(), &[], &[]);
    let after = jwks_of(&second).await;
    assert_eq!(after.keys.len(), 2);
    let new_kid = after.keys[0].common.key_id.clone().unwrap();
    assert_ne!(new_kid, old_kid, "the new key comes first");
    assert!(verify_with_jwks(&after, &old_token).is_ok());
    second.terminate();

    let refused = gatehouse(dir.path(), &["keys", "retire", &new_kid], &[])
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "the current key cannot be retired"
    );
    run_keys(dir.path(), &["retire", &old_kid]);

    // Both key changes are in the audit log, readable from the command line.
    let audit = gatehouse(dir.path(), &["audit", "--actor", "cli"], &[])
        .output()
        .unwrap();
    assert!(audit.status.success(), "{audit:?}");
    let entries: Vec<serde_json::Value> = String::from_utf8(audit.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["signing_key_retired", "signing_key_rotated"]);
    assert_eq!(entries[0]["detail"]["kid"], old_kid.as_str());
    assert_eq!(entries[1]["detail"]["kid"], new_kid.as_str());
    assert!(
        entries
            .iter()
            .all(|e| e["outcome"] == "success" && e["actor"] == "cli")
    );

    let third = Process::serve(dir.path(), &[], &[]);
    let retired = jwks_of(&third).await;
    assert_eq!(retired.keys.len(), 1);
    assert!(verify_with_jwks(&retired, &old_token).is_err());
    third.terminate();
}

#[test]
fn generate_writes_private_files_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["generate", "--out", "signing.json", "--alg", "eddsa"],
        vec!["generate", "--api-key", "secret", "--out", "secret.key"],
        vec![
            "generate",
            "--api-key",
            "publishable",
            "--out",
            "publishable.key",
        ],
    ] {
        let stdout = run_keys(dir.path(), &args);
        assert!(
            stdout.is_empty(),
            "keys are written to files, not printed: {stdout}"
        );
        let path = dir
            .path()
            .join(args[args.iter().position(|a| *a == "--out").unwrap() + 1]);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = gatehouse(
            dir.path(),
            &["keys"].iter().chain(&args).copied().collect::<Vec<_>>(),
            &[],
        )
        .output()
        .unwrap();
        assert!(!again.status.success());
    }
    let secret = std::fs::read_to_string(dir.path().join("secret.key")).unwrap();
    assert!(secret.starts_with("sb_secret_"));
    let keys = gatehouse_keys::KeySet::load(&dir.path().join("signing.json")).unwrap();
    assert_eq!(keys.origin(), gatehouse_keys::KeyOrigin::Operator);
}

#[tokio::test]
async fn a_token_signed_by_a_retired_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gatehouse.toml"),
        // A fixed public URL: the issuer must not change with the ephemeral port.
        "[server]\npublic_url = \"http://gatehouse.test\"\n[auth]\nemail_confirmation = false\n",
    )
    .unwrap();
    let publishable =
        || std::fs::read_to_string(dir.path().join("gatehouse-data/publishable.key")).unwrap();
    let user = |process: &Process, token: &str| {
        let request = reqwest::Client::new()
            .get(format!("{}/auth/v1/user", process.url))
            .header("apikey", publishable())
            .bearer_auth(token.to_owned());
        async move { request.send().await.unwrap() }
    };

    let first = Process::serve(dir.path(), &[], &[]);
    let session: Value = reqwest::Client::new()
        .post(format!("{}/auth/v1/signup", first.url))
        .header("apikey", publishable())
        .json(&json!({"email": "ted@example.com", "password": "correct horse battery staple"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = session["access_token"].as_str().unwrap().to_owned();
    let old_kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    first.terminate();

    run_keys(dir.path(), &["rotate"]);
    let second = Process::serve(dir.path(), &[], &[]);
    assert_eq!(
        user(&second, &token).await.status(),
        200,
        "rotation logs nobody out"
    );
    second.terminate();

    run_keys(dir.path(), &["retire", &old_kid]);
    let third = Process::serve(dir.path(), &[], &[]);
    let refused = user(&third, &token).await;
    assert_eq!(refused.status(), 401);
    assert_eq!(
        refused.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    third.terminate();
}

/// Key ids are base64url, so a quarter of them start with `-`: the CLI takes
/// such an id as the key to retire, not as an option.
#[test]
fn a_key_id_starting_with_a_hyphen_is_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let output = gatehouse(dir.path(), &["keys", "retire", "-not-a-key"], &[])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(!said.contains("unexpected argument"), "{said}");
}

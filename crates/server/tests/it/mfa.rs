//! The second factor (TOTP) through HTTP: enrol, challenge, verify into an
//! `aal2` session, and every refusal around it (wrong, replayed and stale
//! codes, the attempt lock, challenges from elsewhere, `aal1` sessions
//! removing factors), the admin API and the key's start-up rule.

use reqwest::Method;
use serde_json::{Value, json};
use totp_rs::{Algorithm, Secret, TOTP};

use crate::auth::{auth, get_user, refresh, sign_in, sign_up, start};
use crate::kit::{self, TestServer, json};

const PASSWORD: &str = "correct horse battery staple";

/// The code an authenticator app shows for `secret` (base32) at `unix`.
fn code_at(secret: &str, unix: u64) -> String {
    let bytes = Secret::Encoded(secret.to_owned()).to_bytes().unwrap();
    TOTP::new_unchecked(Algorithm::SHA1, 6, 1, 30, bytes, None, String::new()).generate(unix)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// A signed-up user's session.
async fn session(server: &TestServer, email: &str) -> Value {
    let response = sign_up(server, email, PASSWORD).await;
    assert_eq!(response.status(), 200);
    json(response).await
}

async fn call(
    server: &TestServer,
    method: Method,
    path: &str,
    token: &str,
    body: Value,
) -> reqwest::Response {
    auth(server, method, path)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Enrols a TOTP factor; returns its id and base32 secret.
async fn enrol(server: &TestServer, token: &str, name: &str) -> (String, String) {
    let response = call(
        server,
        Method::POST,
        "factors",
        token,
        json!({"factor_type": "totp", "friendly_name": name}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    (
        body["id"].as_str().unwrap().to_owned(),
        body["totp"]["secret"].as_str().unwrap().to_owned(),
    )
}

async fn challenge(server: &TestServer, token: &str, factor: &str) -> String {
    let response = call(
        server,
        Method::POST,
        &format!("factors/{factor}/challenge"),
        token,
        json!({}),
    )
    .await;
    assert_eq!(response.status(), 200);
    json(response).await["id"].as_str().unwrap().to_owned()
}

async fn verify(
    server: &TestServer,
    token: &str,
    factor: &str,
    challenge: &str,
    code: &str,
) -> reqwest::Response {
    call(
        server,
        Method::POST,
        &format!("factors/{factor}/verify"),
        token,
        json!({"challenge_id": challenge, "code": code}),
    )
    .await
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body = json(response).await;
    (
        status,
        body["error_code"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Signs up, enrols and verifies: the user now has a verified factor and an
/// `aal2` session.
async fn with_verified_factor(server: &TestServer, email: &str) -> (Value, String, String) {
    let first = session(server, email).await;
    let token = first["access_token"].as_str().unwrap();
    let (factor, secret) = enrol(server, token, "phone").await;
    let challenge_id = challenge(server, token, &factor).await;
    let response = verify(
        server,
        token,
        &factor,
        &challenge_id,
        &code_at(&secret, unix_now()),
    )
    .await;
    assert_eq!(response.status(), 200);
    (json(response).await, factor, secret)
}

#[tokio::test]
async fn a_verified_code_raises_the_session_to_aal2_and_ends_weaker_ones() {
    let server = start(|_| {}).await;
    let first = session(&server, "mfa@example.com").await;
    let token = first["access_token"].as_str().unwrap();
    let other = json(sign_in(&server, "mfa@example.com", PASSWORD).await).await;

    let response = call(
        &server,
        Method::POST,
        "factors",
        token,
        json!({"factor_type": "totp", "friendly_name": "phone", "issuer": "Shop"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let enrolled = json(response).await;
    assert_eq!(enrolled["type"], "totp");
    assert_eq!(enrolled["friendly_name"], "phone");
    let secret = enrolled["totp"]["secret"].as_str().unwrap();
    assert_eq!(
        enrolled["totp"]["uri"],
        format!("otpauth://totp/Shop:mfa%40example.com?secret={secret}&issuer=Shop")
    );
    assert!(
        enrolled["totp"]["qr_code"]
            .as_str()
            .unwrap()
            .contains("<svg")
    );
    let factor = enrolled["id"].as_str().unwrap();
    let user = json(get_user(&server, token).await).await;
    assert_eq!(user["factors"][0]["id"], factor);
    assert_eq!(user["factors"][0]["status"], "unverified");
    assert_eq!(user["factors"][0]["factor_type"], "totp");

    let response = call(
        &server,
        Method::POST,
        &format!("factors/{factor}/challenge"),
        token,
        json!({}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let issued = json(response).await;
    let expires_at = issued["expires_at"].as_i64().unwrap();
    let now = i64::try_from(unix_now()).unwrap();
    assert!((now + 240..=now + 301).contains(&expires_at), "{issued}");
    let challenge_id = issued["id"].as_str().unwrap();

    let wrong = verify(&server, token, factor, challenge_id, "000000").await;
    assert_eq!(
        error_code(wrong).await,
        (422, "mfa_verification_failed".into())
    );
    // A code from three steps ago is outside the one-step window.
    let stale = verify(
        &server,
        token,
        factor,
        challenge_id,
        &code_at(secret, unix_now() - 90),
    )
    .await;
    assert_eq!(
        error_code(stale).await,
        (422, "mfa_verification_failed".into())
    );

    let code = code_at(secret, unix_now());
    let response = verify(&server, token, factor, challenge_id, &code).await;
    assert_eq!(response.status(), 200);
    let raised = json(response).await;
    let token2 = raised["access_token"].as_str().unwrap();
    let claims2 = claims(token2);
    assert_eq!(claims2["aal"], "aal2");
    assert_eq!(
        claims2["session_id"],
        claims(token)["session_id"],
        "the same session, raised"
    );
    let methods: Vec<&str> = claims2["amr"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["totp", "password"]);
    assert_eq!(raised["user"]["factors"][0]["status"], "verified");

    // The challenge is spent, and the code's step too, even on a new challenge.
    let again = verify(&server, token2, factor, challenge_id, &code).await;
    assert_eq!(
        error_code(again).await,
        (422, "mfa_ip_address_mismatch".into())
    );
    let fresh = challenge(&server, token2, factor).await;
    let replayed = verify(&server, token2, factor, &fresh, &code).await;
    assert_eq!(
        error_code(replayed).await,
        (422, "mfa_verification_failed".into())
    );

    // The aal1 refresh token cannot become an aal2 session; the new one keeps aal2.
    let old = refresh(&server, first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(old.status(), 400);
    let refreshed = json(refresh(&server, raised["refresh_token"].as_str().unwrap()).await).await;
    assert_eq!(
        claims(refreshed["access_token"].as_str().unwrap())["aal"],
        "aal2"
    );
    // The other aal1 session of the user has ended.
    let other = get_user(&server, other["access_token"].as_str().unwrap()).await;
    assert_eq!(other.status(), 403);
}

#[tokio::test]
async fn wrong_codes_lock_the_factor() {
    let server = start(|_| {}).await;
    let first = session(&server, "guess@example.com").await;
    let token = first["access_token"].as_str().unwrap();
    let (factor, secret) = enrol(&server, token, "phone").await;
    let challenge_id = challenge(&server, token, &factor).await;
    let right = code_at(&secret, unix_now());
    let wrong = if right == "123456" {
        "654321"
    } else {
        "123456"
    };
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(error_code(verify(&server, token, &factor, &challenge_id, wrong).await).await);
    }
    assert!(
        answers[..4]
            .iter()
            .all(|a| a.1 == "mfa_verification_failed"),
        "{answers:?}"
    );
    assert_eq!(
        answers[4],
        (429, "over_request_rate_limit".into()),
        "the fifth locks"
    );
    // Locked: even the right code is refused, without being tried.
    let locked = verify(&server, token, &factor, &challenge_id, &right).await;
    assert_eq!(locked.status(), 429);
    assert!(locked.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn a_challenge_answers_only_the_address_that_asked_for_it() {
    let server = start(|config| {
        config.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let first = session(&server, "roam@example.com").await;
    let token = first["access_token"].as_str().unwrap();
    let (factor, secret) = enrol(&server, token, "phone").await;
    let from = |address: &str| {
        auth(
            &server,
            Method::POST,
            &format!("factors/{factor}/challenge"),
        )
        .bearer_auth(token)
        .header("x-forwarded-for", address.to_owned())
        .json(&json!({}))
    };
    let challenge_id = json(from("198.51.100.7").send().await.unwrap()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let elsewhere = auth(&server, Method::POST, &format!("factors/{factor}/verify"))
        .bearer_auth(token)
        .header("x-forwarded-for", "203.0.113.9")
        .json(&json!({"challenge_id": challenge_id, "code": code_at(&secret, unix_now())}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(elsewhere).await,
        (422, "mfa_ip_address_mismatch".into())
    );
    // Another user's factor and challenge are not found at all.
    let stranger = session(&server, "stranger@example.com").await;
    let stranger = stranger["access_token"].as_str().unwrap();
    let response = call(
        &server,
        Method::POST,
        &format!("factors/{factor}/challenge"),
        stranger,
        json!({}),
    )
    .await;
    assert_eq!(
        error_code(response).await,
        (404, "mfa_factor_not_found".into())
    );
    let response = verify(&server, stranger, &factor, &challenge_id, "123456").await;
    assert_eq!(
        error_code(response).await,
        (404, "mfa_factor_not_found".into())
    );
}

#[tokio::test]
async fn removing_or_adding_factors_needs_aal2_once_one_is_verified() {
    let server = start(|_| {}).await;
    let (raised, factor, _) = with_verified_factor(&server, "keep@example.com").await;
    let aal1 = json(sign_in(&server, "keep@example.com", PASSWORD).await).await;
    let aal1 = aal1["access_token"].as_str().unwrap();
    assert_eq!(claims(aal1)["aal"], "aal1", "a password alone is aal1");

    let response = call(
        &server,
        Method::POST,
        "factors",
        aal1,
        json!({"factor_type": "totp", "friendly_name": "thief"}),
    )
    .await;
    assert_eq!(error_code(response).await, (403, "insufficient_aal".into()));
    let response = call(
        &server,
        Method::DELETE,
        &format!("factors/{factor}"),
        aal1,
        json!({}),
    )
    .await;
    assert_eq!(error_code(response).await, (422, "insufficient_aal".into()));

    let aal2 = raised["access_token"].as_str().unwrap();
    let response = call(
        &server,
        Method::POST,
        "factors",
        aal2,
        json!({"factor_type": "totp", "friendly_name": "phone"}),
    )
    .await;
    assert_eq!(
        error_code(response).await,
        (422, "mfa_factor_name_conflict".into())
    );
    let response = call(
        &server,
        Method::POST,
        "factors",
        aal2,
        json!({"factor_type": "phone"}),
    )
    .await;
    assert_eq!(
        error_code(response).await,
        (422, "mfa_phone_enroll_not_enabled".into())
    );
    let response = call(
        &server,
        Method::DELETE,
        &format!("factors/{factor}"),
        aal2,
        json!({}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(json(response).await, json!({"id": factor}));
    // With no verified factor left, the session refreshes at aal1.
    let refreshed = json(refresh(&server, raised["refresh_token"].as_str().unwrap()).await).await;
    assert_eq!(
        claims(refreshed["access_token"].as_str().unwrap())["aal"],
        "aal1"
    );
    assert_eq!(refreshed["user"]["factors"], json!([]));
}

#[tokio::test]
async fn the_admin_lists_and_deletes_factors_and_the_audit_log_has_each_step() {
    let server = start(|_| {}).await;
    let (raised, factor, _) = with_verified_factor(&server, "audited@example.com").await;
    let user_id = raised["user"]["id"].as_str().unwrap();
    let admin = |method: Method, path: String| {
        server
            .client
            .request(method, format!("{}/auth/v1/admin/{path}", server.url))
            .header("apikey", &server.secret)
            .bearer_auth(&server.secret)
    };
    let listed = json(
        admin(Method::GET, format!("users/{user_id}/factors"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed[0]["id"], factor);
    assert_eq!(listed[0]["status"], "verified");
    let users = json(admin(Method::GET, "users".into()).send().await.unwrap()).await;
    assert_eq!(users["users"][0]["factors"][0]["id"], factor);
    let refused = auth(
        &server,
        Method::GET,
        &format!("admin/users/{user_id}/factors"),
    )
    .bearer_auth(raised["access_token"].as_str().unwrap())
    .send()
    .await
    .unwrap();
    assert!(
        refused.status() == 401 || refused.status() == 403,
        "{}",
        refused.status()
    );
    let deleted = admin(Method::DELETE, format!("users/{user_id}/factors/{factor}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(json(deleted).await["id"], factor);
    let again = admin(Method::DELETE, format!("users/{user_id}/factors/{factor}"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);

    let audit = json(
        admin(Method::GET, "audit?per_page=100".into())
            .send()
            .await
            .unwrap(),
    )
    .await;
    let actions: Vec<(String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for expected in [
        "mfa_enroll",
        "mfa_challenge",
        "mfa_verify",
        "admin_mfa_factor_deleted",
    ] {
        assert!(
            actions
                .iter()
                .any(|(action, outcome)| action == expected && outcome == "success"),
            "{expected} in {actions:?}"
        );
    }
}

/// A table only a session at `aal2` reaches.
const VAULT: &str = r#"
[tables.vault]
columns.id = { type = "uuid", primary_key = true }
columns.owner = { type = "uuid", not_null = true, server_set = "auth.uid()" }
columns.secret = { type = "text", not_null = true }

[[tables.vault.policies]]
name = "owners at aal2"
for = ["select", "insert"]
to = "authenticated"
using = "owner = auth.uid() and auth.jwt() ->> 'aal' = 'aal2'"
with_check = "owner = auth.uid() and auth.jwt() ->> 'aal' = 'aal2'"
"#;

#[tokio::test]
async fn an_aal2_policy_refuses_aal1_tokens_and_admits_verified_ones() {
    let server = start(|config| {
        let declared = kit::config_from(&config.data_dir, VAULT);
        config.schema = declared.schema;
        config.policies = declared.policies;
    })
    .await;
    let (raised, _, _) = with_verified_factor(&server, "vault@example.com").await;
    let aal1 = json(sign_in(&server, "vault@example.com", PASSWORD).await).await;
    let insert = |token: String| {
        server
            .client
            .post(format!("{}/rest/v1/vault", server.url))
            .header("apikey", &server.publishable)
            .bearer_auth(token)
            .json(&json!({"secret": "the combination"}))
    };
    let refused = insert(aal1["access_token"].as_str().unwrap().to_owned())
        .send()
        .await
        .unwrap();
    assert!(refused.status().is_client_error(), "{}", refused.status());
    let admitted = insert(raised["access_token"].as_str().unwrap().to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(admitted.status(), 201);
}

#[tokio::test]
async fn without_the_key_factors_are_off_and_a_start_over_existing_ones_is_refused() {
    let server = start(|_| {}).await;
    with_verified_factor(&server, "sealed@example.com").await;
    let config = kit::config(server.data_dir.path());
    let mut secrets = gatehouse_server::secrets::resolve(&config, &kit::no_env).unwrap();
    secrets.factor_key = None;
    let refused = gatehouse_server::server::start(&config, secrets, axum::Router::new()).await;
    let error = format!("{:#}", refused.err().expect("refused"));
    assert!(error.contains("GATEHOUSE_MFA_KEY"), "{error}");

    let fresh = tempfile::tempdir().unwrap();
    let mut config = kit::config(fresh.path());
    config.auth.email_confirmation = false;
    let mut secrets = gatehouse_server::secrets::resolve(&config, &kit::no_env).unwrap();
    secrets.factor_key = None;
    let running = gatehouse_server::server::start(&config, secrets, axum::Router::new())
        .await
        .unwrap();
    let url = format!("http://{}", running.addr);
    let publishable = std::fs::read_to_string(fresh.path().join("publishable.key")).unwrap();
    let client = reqwest::Client::new();
    let signed_up: Value = client
        .post(format!("{url}/auth/v1/signup"))
        .header("apikey", &publishable)
        .json(&json!({"email": "nokey@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response = client
        .post(format!("{url}/auth/v1/factors"))
        .header("apikey", &publishable)
        .bearer_auth(signed_up["access_token"].as_str().unwrap())
        .json(&json!({"factor_type": "totp"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(response).await,
        (422, "mfa_totp_enroll_not_enabled".into())
    );
}

/// Two verifications racing with one code on two challenges: the step is
/// spent in the transaction that raises the session, so only one passes.
#[tokio::test]
async fn one_code_verifies_once_even_when_sent_twice_at_once() {
    let server = start(|_| {}).await;
    let first = session(&server, "race@example.com").await;
    let token = first["access_token"].as_str().unwrap();
    let (factor, secret) = enrol(&server, token, "phone").await;
    let (one, two) = (
        challenge(&server, token, &factor).await,
        challenge(&server, token, &factor).await,
    );
    let code = code_at(&secret, unix_now());
    let (a, b) = tokio::join!(
        verify(&server, token, &factor, &one, &code),
        verify(&server, token, &factor, &two, &code),
    );
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 422]);
}

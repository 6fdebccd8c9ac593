//! The benchmark's floor: the same orders queries as the shop, over one SQLite
//! connection, trusting an `x-user` header and checking nothing. It exists only to
//! show what HTTP plus SQLite cost on this machine; it is insecure by design.
//!
//! Usage: gatehouse-bench-baseline <listen> <database file>
//!        gatehouse-bench-baseline hash-rate <seconds>   (raw Argon2id verifications
//!        per second on one thread, at Gatehouse's parameters)

#![allow(clippy::unwrap_used, clippy::expect_used)] // A benchmark fixture, not a service.

use std::sync::{Arc, Mutex};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use rusqlite::Connection;
use serde_json::{Value, json};

struct Shared {
    db: Mutex<Connection>,
    hash: String,
}

type App = State<Arc<Shared>>;

fn user(headers: &HeaderMap) -> String {
    headers
        .get("x-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
    Ok(json!({
        "id": r.get::<_, String>(0)?, "user_id": r.get::<_, String>(1)?, "status": r.get::<_, String>(2)?,
        "total_cents": r.get::<_, i64>(3)?, "note": r.get::<_, Option<String>>(4)?, "created_at": r.get::<_, String>(5)?,
    }))
}

async fn list(State(app): App, headers: HeaderMap) -> Json<Value> {
    let db = app.db.lock().unwrap();
    let mut statement = db
        .prepare_cached("SELECT id, user_id, status, total_cents, note, created_at FROM orders WHERE user_id = ?1 ORDER BY created_at DESC LIMIT 20")
        .unwrap();
    let rows: Vec<Value> = statement
        .query_map([user(&headers)], row)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    Json(Value::Array(rows))
}

async fn one(State(app): App, Path(id): Path<String>) -> Result<Json<Value>, StatusCode> {
    let db = app.db.lock().unwrap();
    let mut statement = db
        .prepare_cached(
            "SELECT id, user_id, status, total_cents, note, created_at FROM orders WHERE id = ?1",
        )
        .unwrap();
    statement
        .query_row([id], row)
        .map(Json)
        .map_err(|_| StatusCode::NOT_FOUND)
}

async fn insert(
    State(app): App,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let id = uuid::Uuid::now_v7().to_string();
    let db = app.db.lock().unwrap();
    db.prepare_cached(
        "INSERT INTO orders (id, user_id, status, total_cents, note, created_at) VALUES (?1, ?2, 'pending', ?3, ?4, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
    )
    .unwrap()
    .execute(rusqlite::params![id, user(&headers), body["total_cents"].as_i64().unwrap_or(0), body["note"].as_str()])
    .unwrap();
    (StatusCode::CREATED, Json(json!({"id": id})))
}

/// One Argon2id verification at Gatehouse's parameters: the raw sign-in rate.
async fn sign_in(State(app): App, Json(body): Json<Value>) -> StatusCode {
    let password = body["password"]
        .as_str()
        .unwrap_or_default()
        .as_bytes()
        .to_vec();
    let hash = app.hash.clone();
    let ok = tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash).unwrap();
        argon2().verify_password(&password, &parsed).is_ok()
    })
    .await
    .unwrap();
    if ok {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    }
}

/// Gatehouse's default Argon2id parameters: 19 MiB, 2 passes, 1 lane.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Verifies one stored hash in a loop on this thread: the ceiling for sign-ins on
/// one core.
fn hash_rate(seconds: f64) {
    let hash = argon2()
        .hash_password(b"correct horse battery staple")
        .unwrap()
        .to_string();
    let parsed = PasswordHash::new(&hash).unwrap();
    let started = std::time::Instant::now();
    let mut done = 0u32;
    while started.elapsed().as_secs_f64() < seconds {
        argon2()
            .verify_password(b"correct horse battery staple", &parsed)
            .unwrap();
        done += 1;
    }
    println!("{:.2}", f64::from(done) / started.elapsed().as_secs_f64());
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().expect("listen address");
    if listen == "hash-rate" {
        hash_rate(args.next().expect("seconds").parse().unwrap());
        return;
    }
    let path = args.next().expect("database file");
    let db = Connection::open(path).unwrap();
    db.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, status TEXT NOT NULL,
           total_cents INTEGER NOT NULL, note TEXT, created_at TEXT NOT NULL);
         CREATE INDEX IF NOT EXISTS orders_user ON orders (user_id, created_at);",
    )
    .unwrap();
    let hash = argon2()
        .hash_password(b"correct horse battery staple")
        .unwrap()
        .to_string();
    let app = axum::Router::new()
        .route("/orders", get(list).post(insert))
        .route("/orders/{id}", get(one))
        .route("/signin", post(sign_in))
        .with_state(Arc::new(Shared {
            db: Mutex::new(db),
            hash,
        }));
    let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
    axum::serve(listener, app).await.unwrap();
}

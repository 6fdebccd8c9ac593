use axum::Json;
use serde_json::{Value, json};

/// Liveness: the process answers. Deliberately says nothing about versions.
pub async fn get() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

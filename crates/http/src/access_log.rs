//! One structured line per request, and the request metrics. Only the route
//! template is logged, never the concrete path, query, headers or body: ids,
//! tokens and passwords that travel in those cannot reach the log.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::response::Response;

use crate::RequestId;

pub async fn record<F: Future<Output = Response>>(
    request: Request,
    next: impl FnOnce(Request) -> F,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.as_str().to_owned())
        .unwrap_or_default();
    // The stack runs after routing, so the template is known; the fallback has none.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_owned();
    let response = next(request).await;
    let latency = started.elapsed();
    let status = response.status().as_u16();
    tracing::info!(
        target: "gatehouse::access",
        request_id,
        method = %method,
        route,
        status,
        latency_ms = latency.as_secs_f64() * 1000.0,
    );
    let labels = [
        ("method", method.to_string()),
        ("route", route),
        ("status", status.to_string()),
    ];
    metrics::counter!("gatehouse_http_requests_total", &labels).increment(1);
    metrics::histogram!("gatehouse_http_request_duration_seconds", &labels)
        .record(latency.as_secs_f64());
    response
}

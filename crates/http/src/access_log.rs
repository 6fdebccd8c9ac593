//! One structured line per request, and the request metrics. Only the route
//! template is logged, never the concrete path, query, headers or body: ids,
//! tokens and passwords that travel in those cannot reach the log.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use http::Method;
use metrics::{Counter, Histogram};

use crate::RequestId;

pub async fn record<F: Future<Output = Response>>(
    series: &Series,
    request: Request,
    next: impl FnOnce(Request) -> F,
) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.as_str().to_owned())
        .unwrap_or_default();
    // The stack runs after routing, so the template is known; the fallback has none.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next(request).await;
    let latency = started.elapsed();
    let status = response.status().as_u16();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    tracing::info!(
        target: "gatehouse::access",
        request_id,
        method,
        route,
        status,
        latency_ms = latency.as_secs_f64() * 1000.0,
    );
    let (requests, duration) = series.of(method, route, status);
    requests.increment(1);
    duration.record(latency.as_secs_f64());
    response
}

/// The method as a metric label. Any other method is one label: a client must
/// not be able to add series (and memory) by inventing methods.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 7] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map_or("OTHER", Method::as_str)
}

/// The request metrics' handles, one pair per (route, method, status). Looking a
/// series up by its labels hashes and allocates them; a point read spent a few
/// percent of its time there. Bounded: routes are templates, methods are
/// [`method_label`]s and statuses are three digits.
#[derive(Default)]
pub struct Series(RwLock<HashMap<Box<str>, Vec<Handles>>>);

struct Handles {
    method: &'static str,
    status: u16,
    requests: Counter,
    duration: Histogram,
}

impl Series {
    fn of(&self, method: &'static str, route: &str, status: u16) -> (Counter, Histogram) {
        let find = |known: &[Handles]| {
            known
                .iter()
                .find(|handles| handles.method == method && handles.status == status)
                .map(|handles| (handles.requests.clone(), handles.duration.clone()))
        };
        let read = self
            .0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(found) = read.get(route).and_then(|known| find(known)) {
            return found;
        }
        drop(read);
        let mut write = self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let known = write.entry(route.into()).or_default();
        if let Some(found) = find(known) {
            return found;
        }
        let labels = [
            ("method", method.to_owned()),
            ("route", route.to_owned()),
            ("status", status.to_string()),
        ];
        let handles = Handles {
            method,
            status,
            requests: metrics::counter!("gatehouse_http_requests_total", &labels),
            duration: metrics::histogram!("gatehouse_http_request_duration_seconds", &labels),
        };
        let found = (handles.requests.clone(), handles.duration.clone());
        known.push(handles);
        found
    }
}

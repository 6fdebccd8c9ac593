use axum::extract::Request;
use axum::response::Response;
use futures_util::TryFutureExt;
use futures_util::future::{Either, MapOk};
use http::header::{self, HeaderName};
use http::{HeaderValue, Method, request::Parts};
use std::task::{Context, Poll};
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, Cors, CorsLayer};

use crate::CorsPolicy;

/// Headers whose values are credentials: marked sensitive so that even a `Debug`
/// print of the request shows them redacted.
pub fn sensitive() -> [HeaderName; 5] {
    [
        header::AUTHORIZATION,
        header::COOKIE,
        header::SET_COOKIE,
        header::PROXY_AUTHORIZATION,
        HeaderName::from_static("apikey"),
    ]
}

/// Our answers are JSON, never meant to be framed or rendered; a strict CSP
/// covers any HTML that does go out. Answers carry tokens and users' rows, so no
/// cache may keep them, and no other site may load them as a resource. Handlers
/// may set more specific values first (a download's sandbox CSP and cache
/// lifetime, the JWKS's public caching), so these fill in only what is absent.
const ALWAYS: [(HeaderName, HeaderValue); 7] = [
    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    (
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    ),
    (
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    ),
    (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    (
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    ),
    (
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    ),
    (
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    ),
];

const HSTS: &str = "max-age=63072000; includeSubDomains";

pub async fn security_headers<F: Future<Output = Response>>(
    hsts: bool,
    request: Request,
    next: impl FnOnce(Request) -> F,
) -> Response {
    let mut response = next(request).await;
    let headers = response.headers_mut();
    for (name, value) in ALWAYS {
        if let header::Entry::Vacant(entry) = headers.entry(name) {
            entry.insert(value);
        }
    }
    if hsts {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    response
}

const ALLOWED_HEADERS: &[&str] = &[
    "accept",
    "accept-profile",
    "apikey",
    "authorization",
    "content-profile",
    "content-type",
    "idempotency-key",
    "prefer",
    "range",
    "tus-resumable",
    "upload-length",
    "upload-metadata",
    "upload-offset",
    "x-client-info",
    "x-csrf-token",
    "x-request-id",
    "x-supabase-api-version",
    "x-upsert",
    "x-use-cookie",
];

const EXPOSED_HEADERS: &[&str] = &[
    "content-range",
    "location",
    "retry-after",
    "tus-extension",
    "tus-max-size",
    "tus-resumable",
    "tus-version",
    "upload-length",
    "upload-offset",
    "x-request-id",
    "x-supabase-api-version",
    "x-total-count",
];

fn is_loopback_origin(origin: &HeaderValue) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    ["http://localhost", "http://127.0.0.1", "http://[::1]"]
        .iter()
        .any(|host| {
            origin.strip_prefix(host).is_some_and(|rest| {
                rest.is_empty()
                    || rest.strip_prefix(':').is_some_and(|port| {
                        !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
                    })
            })
        })
}

/// Whether the CORS policy admits `origin`.
pub fn origin_allowed(policy: &CorsPolicy, origin: &HeaderValue) -> bool {
    match policy {
        CorsPolicy::Deny => false,
        CorsPolicy::Loopback => is_loopback_origin(origin),
        CorsPolicy::Origins(list) => list
            .iter()
            .any(|allowed| allowed.as_bytes() == origin.as_bytes()),
    }
}

/// CORS from an explicit list, for requests that name an origin. Credentials
/// are allowed only because the origins are explicit: a wildcard never reaches
/// this point.
pub fn cors(policy: &CorsPolicy) -> OnlyWithOrigin {
    OnlyWithOrigin(cors_layer(policy))
}

fn cors_layer(policy: &CorsPolicy) -> CorsLayer {
    let origins = match policy {
        CorsPolicy::Deny => return CorsLayer::new(),
        CorsPolicy::Loopback => {
            AllowOrigin::predicate(|origin: &HeaderValue, _: &Parts| is_loopback_origin(origin))
        }
        CorsPolicy::Origins(list) => AllowOrigin::list(
            list.iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        ),
    };
    let names = |list: &[&'static str]| {
        list.iter()
            .map(|n| HeaderName::from_static(n))
            .collect::<Vec<_>>()
    };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_credentials(true)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers(names(ALLOWED_HEADERS))
        .expose_headers(names(EXPOSED_HEADERS))
        .max_age(std::time::Duration::from_secs(600))
}

/// CORS answers only a browser, and a browser names the page's origin on every
/// cross-origin request. Without an `Origin` there is no one to answer, so the
/// request skips the CORS layer and its response carries only `Vary: Origin` (a
/// cache must not hand this answer to a browser that does send one) instead of
/// the allow-credentials and expose-headers lists: about a quarter of a point
/// read's bytes.
#[derive(Clone)]
pub struct OnlyWithOrigin(CorsLayer);

impl<S: Clone> Layer<S> for OnlyWithOrigin {
    type Service = OriginGate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OriginGate {
            cors: self.0.layer(inner.clone()),
            plain: inner,
        }
    }
}

#[derive(Clone)]
pub struct OriginGate<S> {
    cors: Cors<S>,
    plain: S,
}

type Plain<F, B> = MapOk<F, fn(http::Response<B>) -> http::Response<B>>;

fn vary_origin<B>(mut response: http::Response<B>) -> http::Response<B> {
    response
        .headers_mut()
        .append(header::VARY, HeaderValue::from_static("origin"));
    response
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for OriginGate<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone,
    ResBody: Default,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future =
        Either<<Cors<S> as Service<http::Request<ReqBody>>>::Future, Plain<S::Future, ResBody>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both hold a clone of the same stack, which axum keeps always ready.
        match self.plain.poll_ready(context) {
            Poll::Ready(Ok(())) => self.cors.poll_ready(context),
            other => other,
        }
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if request.headers().contains_key(header::ORIGIN) {
            Either::Left(self.cors.call(request))
        } else {
            let vary: fn(http::Response<ResBody>) -> http::Response<ResBody> = vary_origin;
            Either::Right(self.plain.call(request).map_ok(vary))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_origins_only() {
        for good in [
            "http://localhost:3000",
            "http://127.0.0.1:5173",
            "http://[::1]:8080",
            "http://localhost",
        ] {
            assert!(
                is_loopback_origin(&HeaderValue::from_static(good)),
                "{good}"
            );
        }
        for bad in [
            "http://localhost.evil.example",
            "http://localhost:3000.evil.example",
            "https://example.com",
            "http://127.0.0.1:",
            "null",
        ] {
            assert!(!is_loopback_origin(&HeaderValue::from_static(bad)), "{bad}");
        }
    }
}

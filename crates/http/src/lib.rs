//! The edge: the only crate that knows HTTP. It owns the router, the tower
//! middleware stack, API-key extraction and the one error model with its JSON
//! shapes per surface (Supabase Auth, PostgREST, Supabase Storage).
//!
//! Invariant: every response leaves through [`error::render_errors`], so a client
//! never sees anything but a stable code, a safe message and a request id.

mod access_log;
mod api_key;
mod audit;
mod bounds;
mod client_ip;
mod cookies;
mod error;
mod headers;
mod idempotency;
mod identity;
mod rate_limit;
mod request_id;
mod routes;
mod state;
pub mod wire;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use http::StatusCode;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;

pub use api_key::ApiCaller;
pub use audit::Audit;
pub use client_ip::{ClientIp, is_trusted_proxy};
pub use error::{ApiError, Surface};
pub use idempotency::prune as prune_idempotency_keys;
pub use identity::Identity;
pub use rate_limit::RateLimits;
pub use request_id::RequestId;
pub use state::{AppState, CorsPolicy, HttpSettings, Parts};

/// The public API: Gatehouse's routes plus the embedding app's own `custom`
/// routes, all behind the same middleware stack.
pub fn app(state: AppState, custom: Router<AppState>) -> Router {
    let mut routes = Router::new()
        .route("/health", axum::routing::get(routes::health::get))
        .route("/ready", axum::routing::get(routes::ready::get))
        .route(
            "/auth/v1/.well-known/jwks.json",
            axum::routing::get(routes::jwks::get),
        )
        .route(
            "/auth/v1/signup",
            axum::routing::post(routes::auth::signup::post),
        )
        .route(
            "/auth/v1/token",
            axum::routing::post(routes::auth::token::post),
        )
        .route(
            "/auth/v1/logout",
            axum::routing::post(routes::auth::logout::post),
        )
        .route(
            "/auth/v1/user",
            axum::routing::get(routes::auth::user::get).put(routes::auth::user::put),
        )
        .route(
            "/auth/v1/reauthenticate",
            axum::routing::get(routes::auth::user::reauthenticate),
        )
        .route(
            "/auth/v1/settings",
            axum::routing::get(routes::auth::settings::get),
        )
        .route(
            "/auth/v1/recover",
            axum::routing::post(routes::auth::recover::post),
        )
        .route("/auth/v1/otp", axum::routing::post(routes::auth::otp::post))
        .route(
            "/auth/v1/verify",
            axum::routing::get(routes::auth::verify::get).post(routes::auth::verify::post),
        )
        .route(
            "/auth/v1/admin/users",
            axum::routing::get(routes::auth::admin_users::list).merge(
                axum::routing::post(routes::auth::admin_users::create)
                    .layer(from_fn_with_state(state.clone(), idempotency::replay)),
            ),
        )
        .route(
            "/auth/v1/admin/audit",
            axum::routing::get(routes::auth::admin_audit::get),
        )
        .route(
            "/auth/v1/admin/generate_link",
            axum::routing::post(routes::auth::generate_link::post),
        )
        .route(
            "/realtime/v1/websocket",
            axum::routing::get(routes::realtime::socket),
        )
        .route(
            "/realtime/v1/api/broadcast",
            axum::routing::post(routes::realtime::broadcast),
        )
        .route(
            "/auth/v1/authorize",
            axum::routing::get(routes::auth::identities::authorize),
        )
        .route(
            "/auth/v1/callback",
            axum::routing::get(routes::auth::identities::callback_get)
                .post(routes::auth::identities::callback_post),
        )
        .route(
            "/auth/v1/user/identities/authorize",
            axum::routing::get(routes::auth::identities::link),
        )
        .route(
            "/auth/v1/user/identities/{id}",
            axum::routing::delete(routes::auth::identities::unlink),
        )
        .route(
            "/auth/v1/factors",
            axum::routing::post(routes::auth::factors::enrol),
        )
        .route(
            "/auth/v1/factors/{id}",
            axum::routing::delete(routes::auth::factors::unenrol),
        )
        .route(
            "/auth/v1/factors/{id}/challenge",
            axum::routing::post(routes::auth::factors::challenge),
        )
        .route(
            "/auth/v1/factors/{id}/verify",
            axum::routing::post(routes::auth::factors::verify),
        )
        .route(
            "/auth/v1/admin/users/{id}/factors",
            axum::routing::get(routes::auth::factors::admin_list),
        )
        .route(
            "/auth/v1/admin/users/{id}/factors/{factor_id}",
            axum::routing::delete(routes::auth::factors::admin_delete),
        )
        .route(
            "/auth/v1/admin/users/{id}",
            axum::routing::get(routes::auth::admin_users::get)
                .put(routes::auth::admin_users::update)
                .delete(routes::auth::admin_users::delete),
        )
        .route(
            "/storage/v1/bucket",
            axum::routing::get(routes::storage_buckets::list).post(routes::storage_buckets::create),
        )
        .route(
            "/storage/v1/bucket/{id}",
            axum::routing::get(routes::storage_buckets::get)
                .put(routes::storage_buckets::update)
                .delete(routes::storage_buckets::delete),
        )
        .route(
            "/storage/v1/bucket/{id}/empty",
            axum::routing::post(routes::storage_buckets::empty),
        )
        .route(
            "/rest/v1/rpc/{name}",
            axum::routing::post(routes::rpc::post).get(routes::rpc::get),
        )
        .route(
            "/functions/v1/{name}",
            axum::routing::any(routes::functions::invoke),
        )
        .route(
            "/hooks/v1/{name}",
            axum::routing::post(routes::hooks::receive),
        )
        .route(
            "/admin/v1/jobs",
            axum::routing::get(routes::admin_jobs::list).delete(routes::admin_jobs::purge),
        )
        .route(
            "/admin/v1/jobs/{id}",
            axum::routing::get(routes::admin_jobs::show),
        )
        .route(
            "/admin/v1/jobs/{id}/retry",
            axum::routing::post(routes::admin_jobs::retry),
        )
        .route(
            "/admin/v1/jobs/{id}/cancel",
            axum::routing::post(routes::admin_jobs::cancel),
        )
        .route("/rest/v1/", axum::routing::get(routes::rest_root::get))
        .route("/rest/v1", axum::routing::get(routes::rest_root::get))
        .route(
            "/rest/v1/{table}",
            axum::routing::get(routes::rest_table::get).merge(
                axum::routing::post(routes::rest_table::post)
                    .patch(routes::rest_table::patch)
                    .delete(routes::rest_table::delete)
                    .layer(from_fn_with_state(state.clone(), idempotency::replay)),
            ),
        );
    if !state.settings().metrics_on_admin_listener {
        routes = routes.route(
            "/metrics",
            axum::routing::get(routes::metrics::get_with_secret_key),
        );
    }
    let routes = bounded(
        storage_routes(routes)
            .merge(custom)
            .fallback(routes::not_found),
        state.settings(),
    );
    with_middleware(upload_routes(state.settings()).merge(routes), state)
}

/// `/storage/v1/object/…` but uploads.
fn storage_routes(routes: Router<AppState>) -> Router<AppState> {
    use axum::routing::{delete, get, post};
    use routes::storage_objects as objects;
    use routes::storage_resumable as resumable;
    routes
        .route(
            "/storage/v1/object/{bucket}/{*name}",
            get(objects::get_object).head(objects::head_object),
        )
        .route(
            "/storage/v1/object/authenticated/{bucket}/{*name}",
            get(objects::get_object),
        )
        .route(
            "/storage/v1/object/public/{bucket}/{*name}",
            get(objects::get_public),
        )
        .route(
            "/storage/v1/object/sign/{bucket}/{*name}",
            get(objects::get_signed).post(objects::sign),
        )
        .route("/storage/v1/object/sign/{bucket}", post(objects::sign_many))
        .route(
            "/storage/v1/object/upload/sign/{bucket}/{*name}",
            post(objects::sign_upload),
        )
        .route(
            "/storage/v1/object/info/{bucket}/{*name}",
            get(objects::info),
        )
        .route(
            "/storage/v1/object/info/authenticated/{bucket}/{*name}",
            get(objects::info),
        )
        .route(
            "/storage/v1/object/info/public/{bucket}/{*name}",
            get(objects::info_public),
        )
        .route("/storage/v1/object/list/{bucket}", post(objects::list))
        .route("/storage/v1/object/move", post(objects::move_object))
        .route("/storage/v1/object/copy", post(objects::copy_object))
        .route("/storage/v1/object/{bucket}", delete(objects::remove))
        .route(
            "/storage/v1/upload/resumable/{id}",
            axum::routing::head(resumable::head).delete(resumable::delete),
        )
}

/// Object uploads: no body limit at the edge (the bucket's size limit is
/// enforced while streaming) and their own time limit.
fn upload_routes(settings: &HttpSettings) -> Router<AppState> {
    use axum::routing::{post, put};
    use routes::storage_objects as objects;
    use routes::storage_resumable as resumable;
    Router::new()
        .route(
            "/storage/v1/object/{bucket}/{*name}",
            post(objects::put_object).put(objects::put_object),
        )
        .route(
            "/storage/v1/object/upload/sign/{bucket}/{*name}",
            put(objects::put_signed),
        )
        .route(resumable::PATH, post(resumable::create))
        .route(
            "/storage/v1/upload/resumable/{id}",
            axum::routing::patch(resumable::patch),
        )
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            settings.upload_timeout,
        ))
}

/// Every other route: the request time limit and the body limit.
fn bounded(routes: Router<AppState>, settings: &HttpSettings) -> Router<AppState> {
    routes
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            settings.request_timeout,
        ))
        .layer(RequestBodyLimitLayer::new(settings.body_limit))
        .layer(DefaultBodyLimit::max(settings.body_limit))
}

/// The admin listener: health and metrics without an API key, for a network
/// only operators reach.
pub fn admin_app(state: AppState) -> Router {
    let routes = Router::new()
        .route("/health", axum::routing::get(routes::health::get))
        .route("/metrics", axum::routing::get(routes::metrics::get))
        .fallback(routes::not_found);
    let routes = bounded(routes, state.settings());
    with_middleware(routes, state)
}

/// The stack, outermost first: what a request meets on the way in.
fn with_middleware(routes: Router<AppState>, state: AppState) -> Router {
    let settings = state.settings().clone();
    let stack = ServiceBuilder::new()
        .layer(from_fn_with_state(state.clone(), edge))
        .layer(headers::cors(&settings.cors))
        .layer(SetSensitiveRequestHeadersLayer::new(headers::sensitive()))
        .layer(from_fn_with_state(state.clone(), caller))
        .layer(CatchPanicLayer::custom(error::panic_response));
    routes.layer(stack).with_state(state)
}

/// The outer edge, one concern after another, outermost first: the request id;
/// the security headers (outside everything that can refuse, so every answer
/// carries them); the access log; the JSON error body; admission (client
/// address, head and URL size, JSON depth); TUS's capability request, which
/// the CORS layer below would take for a preflight. One layer rather than
/// six: each `from_fn` layer clones the stack below it for every request.
async fn edge(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let hsts = state.settings().hsts;
    request_id::assign(request, |request| {
        headers::security_headers(hsts, request, |request| {
            access_log::record(state.series(), request, |request| {
                error::render_errors(request, |request| {
                    bounds::admit(&state, request, |request| {
                        routes::storage_resumable::capabilities(&state, request, |request| {
                            next.run(request)
                        })
                    })
                })
            })
        })
    })
    .await
}

/// Who is calling: the API key (and the bearer token, read once), then the
/// rate limit for that caller. One layer for the reason above.
async fn caller(State(state): State<AppState>, request: Request, next: Next) -> Response {
    api_key::identify(&state, request, |request| {
        rate_limit::enforce(&state, request, |request| next.run(request))
    })
    .await
}

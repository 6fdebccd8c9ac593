//! The `gatehouse` binary as a library: configuration and secrets are parsed
//! into validated values, then [`server::start`] wires the database, the keys and
//! the HTTP stack together. `main` and the integration tests share this path, and
//! an embedding app passes its own routes in the same way.

pub mod commands;
pub mod config;
pub mod listener;
pub mod logging;
mod own_jobs;
pub mod secrets;
pub mod server;

pub use gatehouse_http::{ApiCaller, ApiError, AppState, RateLimits, RequestId};

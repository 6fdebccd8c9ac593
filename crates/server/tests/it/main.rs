//! Integration tests: each starts a real server on an ephemeral port and talks
//! HTTP to it. One test binary, so the workspace links once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers fail loudly by design.

mod api_keys;
mod audit;
mod auth;
mod binary;
mod bola;
mod bounds;
mod changes;
mod errors;
mod function_writes;
mod functions;
mod idempotency;
mod jobs;
mod keys;
mod kit;
mod limits;
mod mfa;
mod middleware;
mod migrate;
mod objects;
mod ops;
mod rest;
mod resumable;
mod robustness;
mod scale;
mod search;
mod shop_functions;
mod storage;
mod triggers;

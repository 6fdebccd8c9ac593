//! Keys: the asymmetric signing key set that issues and verifies access tokens,
//! and the publishable and secret API keys that identify the calling app.
//!
//! Invariant: private key material and the secret API key are held in
//! zeroizing secret types, never appear in `Debug` output, and leave this crate
//! only as files written with mode 0600.

mod api_keys;
mod local;
mod private_file;
mod signing;
mod token_cache;

pub use api_keys::{ApiKeys, ApiRole, PresentedKey, generate_api_key, weakness};
pub use local::{LocalKeyError, LocalKeys};
pub use private_file::write_private_file;
pub use signing::{KeyInfo, KeyOrigin, KeySet, SigningAlgorithm, TokenRules, VerifiedClaims};
pub use token_cache::TokenVerifier;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a Gatehouse key set: {reason}")]
    Malformed {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("no key with kid {0}")]
    UnknownKid(String),
    #[error("key {0} is the current signing key; rotate first, then retire it")]
    RetireCurrent(String),
    #[error("unknown signing algorithm {0:?}; use ES256 or EdDSA")]
    UnknownAlgorithm(String),
    #[error("the system random generator failed")]
    Random,
    #[error("token signing failed: {0}")]
    Sign(String),
    #[error("the publishable and the secret key must differ")]
    SameApiKeys,
}

/// Why a token was refused. Callers answer every variant the same way to the
/// client; the variant is for the log.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("token header names a key source (jku, x5u, x5c or jwk), which is never trusted")]
    ForeignKeySource,
    #[error("token has no kid or an unknown one")]
    UnknownKid,
    #[error("token algorithm does not match its key")]
    WrongAlgorithm,
    #[error("token expired")]
    Expired,
    #[error("token rejected: {0}")]
    Invalid(String),
}

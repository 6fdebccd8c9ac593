//! Sign-in through other identity providers, without a database: the
//! authorization URL to send a browser to, the exchange of the code it comes
//! back with, and the checks of an ID token, ending in a [`ProviderIdentity`].
//! OpenID Connect providers are found by discovery and their ID tokens checked
//! by openidconnect (signature against the provider's JWKS, `iss`, `aud`,
//! `exp`, `nonce`); GitHub, which speaks plain OAuth 2.0, answers through its
//! user and emails API. What a flow must remember between the two legs (state,
//! PKCE verifier, nonce) is the caller's to keep.
//!
//! Invariants: every request carries PKCE (S256) and, for OpenID Connect, a
//! nonce; an email counts as verified only when the provider says so; provider
//! tokens never leave this crate and are never logged.

mod github;
mod http_client;
mod oidc;

use std::collections::BTreeMap;
use std::time::Duration;

use gatehouse_egress::Egress;
use secrecy::SecretString;
use serde_json::Value as Json;

use http_client::ProviderHttp;

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The provider, its answer or the token is not what it must be: the
    /// sign-in is refused (the detail goes to the log, not the client).
    #[error("{0}")]
    Rejected(String),
    /// The provider could not be reached or answered with an error.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Config(String),
}

pub type Result<T, E = OAuthError> = std::result::Result<T, E>;

/// How a provider is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// OpenID Connect, found through `<issuer>/.well-known/openid-configuration`.
    OpenIdConnect { issuer: String },
    /// GitHub's OAuth 2.0 and REST API (GitHub.com, or Enterprise at other URLs).
    GitHub {
        authorize_url: String,
        token_url: String,
        api_url: String,
    },
}

/// One configured provider.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Its name in `/authorize?provider=` and in identities.
    pub name: String,
    pub protocol: Protocol,
    pub client_id: String,
    pub client_secret: Option<SecretString>,
    /// Scopes beyond the ones sign-in needs.
    pub scopes: Vec<String>,
    /// May its endpoints be on loopback or private addresses (a provider on
    /// the operator's own network)? Off: they must be public.
    pub private_addresses: bool,
    /// Ask for the answer by a POST to the callback (`response_mode=form_post`),
    /// as Apple requires when the name or email is asked for.
    pub form_post: bool,
    /// Hand the provider's access and refresh tokens to the app with its
    /// session (`provider_token`), for calling the provider's own API.
    pub provider_tokens: bool,
}

impl ProviderConfig {
    /// The scopes asked for: what sign-in needs, then the configured and
    /// requested ones, each once.
    fn scopes(&self, requested: &[String]) -> Vec<String> {
        let needed: &[&str] = match self.protocol {
            Protocol::OpenIdConnect { .. } => &["openid", "email", "profile"],
            Protocol::GitHub { .. } => &["read:user", "user:email"],
        };
        let mut scopes: Vec<String> = needed.iter().map(|s| (*s).to_owned()).collect();
        for scope in self.scopes.iter().chain(requested) {
            if !scopes.contains(scope) {
                scopes.push(scope.clone());
            }
        }
        scopes
    }
}

/// Who the provider says signed in.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderIdentity {
    pub provider: String,
    /// The provider's stable id for the account (`sub`, GitHub's numeric id).
    pub subject: String,
    pub email: Option<String>,
    /// Only a provider's explicit word makes this true.
    pub email_verified: bool,
    /// Profile claims as GoTrue keeps them in `identity_data`
    /// (`sub`, `email`, `email_verified`, `name`, `picture`, …).
    pub data: BTreeMap<String, Json>,
    /// The provider's tokens, only for a provider configured to hand them on.
    pub tokens: Option<ProviderTokens>,
}

/// The provider's own tokens for its API: kept no longer than it takes to
/// hand them to the app, never logged.
#[derive(Clone, PartialEq)]
pub struct ProviderTokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for ProviderTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProviderTokens(redacted)")
    }
}

/// The secrets one authorization request carries, kept by the caller until
/// the browser comes back.
pub struct Flow {
    pub authorize_url: String,
    pub pkce_verifier: String,
    pub nonce: String,
}

/// The configured providers.
pub struct Providers {
    providers: BTreeMap<String, Provider>,
}

enum Provider {
    // Boxed: both are large (discovered metadata, parsed URLs) and made once.
    Oidc(Box<oidc::Oidc>),
    GitHub(Box<github::GitHub>),
}

/// How long one call to a provider may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

impl Providers {
    pub fn new(configs: Vec<ProviderConfig>) -> Result<Self> {
        let mut providers = BTreeMap::new();
        for config in configs {
            let http = ProviderHttp::new(Egress {
                private_addresses: config.private_addresses,
                timeout: CALL_TIMEOUT,
                ..Egress::default()
            });
            let provider = match &config.protocol {
                Protocol::OpenIdConnect { issuer } => {
                    Provider::Oidc(Box::new(oidc::Oidc::new(config.clone(), issuer, http)?))
                }
                Protocol::GitHub { .. } => {
                    Provider::GitHub(Box::new(github::GitHub::new(config.clone(), http)?))
                }
            };
            providers.insert(config.name.clone(), provider);
        }
        Ok(Self { providers })
    }

    /// The names of the configured providers, for the settings endpoint.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.providers.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.providers.contains_key(name)
    }

    fn get(&self, name: &str) -> Result<&Provider> {
        self.providers
            .get(name)
            .ok_or_else(|| OAuthError::Rejected(format!("no provider named {name:?}")))
    }

    /// Where to send the browser: the provider's authorization endpoint with
    /// `state`, a fresh PKCE challenge and (OpenID Connect) a fresh nonce.
    pub async fn begin(
        &self,
        name: &str,
        (state, callback_url): (&str, &str),
        scopes: &[String],
    ) -> Result<Flow> {
        match self.get(name)? {
            Provider::Oidc(oidc) => oidc.begin((state, callback_url), scopes).await,
            Provider::GitHub(github) => github.begin((state, callback_url), scopes),
        }
    }

    /// The browser came back with `code`: exchanged with the flow's PKCE
    /// verifier; for OpenID Connect the ID token is checked, with the flow's nonce.
    pub async fn finish(
        &self,
        name: &str,
        (code, callback_url): (&str, &str),
        (pkce_verifier, nonce): (&str, &str),
    ) -> Result<ProviderIdentity> {
        match self.get(name)? {
            Provider::Oidc(oidc) => {
                oidc.finish((code, callback_url), (pkce_verifier, nonce))
                    .await
            }
            Provider::GitHub(github) => github.finish((code, callback_url), pkce_verifier).await,
        }
    }

    /// An ID token a native app got from the provider itself
    /// (`grant_type=id_token`): checked as at the callback; when the token
    /// carries a nonce, it must be the SHA-256 (hex) of `nonce`.
    pub async fn verify_id_token(
        &self,
        name: &str,
        id_token: &str,
        nonce: Option<&str>,
    ) -> Result<ProviderIdentity> {
        match self.get(name)? {
            Provider::Oidc(oidc) => oidc.verify_id_token(id_token, nonce).await,
            Provider::GitHub(_) => Err(OAuthError::Rejected(format!("{name} issues no ID tokens"))),
        }
    }
}

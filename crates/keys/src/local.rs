//! Keys for running requests outside a server: `gatehouse policy test` and the
//! test suites make a secret key and user tokens of their own with these, and
//! check them exactly as a server checks a request's.

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use crate::{
    ApiKeys, ApiRole, KeyError, KeyOrigin, KeySet, PresentedKey, SigningAlgorithm, TokenError,
    TokenRules, VerifiedClaims, generate_api_key,
};

/// A fresh pair of API keys and a development signing key, held together.
pub struct LocalKeys {
    api_keys: ApiKeys,
    secret: SecretString,
    signing: KeySet,
    rules: TokenRules,
}

/// Why a local token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LocalKeyError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl LocalKeys {
    /// Tokens name `issuer`, for the `authenticated` audience.
    pub fn generate(issuer: &str) -> Result<Self, KeyError> {
        let publishable = generate_api_key(ApiRole::Anon)?;
        let secret = generate_api_key(ApiRole::Service)?;
        Ok(Self {
            api_keys: ApiKeys::new(publishable.expose_secret(), &secret)?,
            secret,
            signing: KeySet::generate(SigningAlgorithm::Es256, KeyOrigin::Development)?,
            rules: TokenRules {
                issuer: issuer.to_owned(),
                audience: "authenticated".into(),
                leeway: 5,
            },
        })
    }

    pub fn api_keys(&self) -> &ApiKeys {
        &self.api_keys
    }

    /// The secret key, presented and checked.
    pub fn service(&self) -> PresentedKey {
        self.api_keys
            .identify(self.secret.expose_secret())
            .unwrap_or_else(|| unreachable!("the pair's own secret key identifies"))
    }

    /// A verified access token for `subject` carrying `claims` (its role
    /// `authenticated` unless they say otherwise), valid for ten minutes.
    pub fn user(
        &self,
        subject: &str,
        mut claims: Map<String, Value>,
    ) -> Result<VerifiedClaims, LocalKeyError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        claims.insert("sub".into(), subject.into());
        claims
            .entry("role")
            .or_insert_with(|| "authenticated".into());
        claims.insert("aud".into(), self.rules.audience.clone().into());
        claims.insert("iss".into(), self.rules.issuer.clone().into());
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), (now + 600).into());
        let token = self.signing.sign(&claims)?;
        Ok(self.signing.verify_access_token(&token, &self.rules)?)
    }
}

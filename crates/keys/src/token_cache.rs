//! Access tokens that already passed verification, so a client presenting the same
//! token again costs a hash lookup instead of a signature check. The ES256 check
//! was a quarter of a point read's CPU time (bench/README.md has the profile).
//!
//! Why this gives the same answer as a fresh check: only tokens that passed every
//! check enter; what those checks looked at (signature, kid, algorithm, issuer,
//! audience, `nbf`) cannot change for a given token while the server runs, because
//! the key set and rules are fixed at start-up; the one thing that can, expiry, is
//! checked again on every hit.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{KeySet, TokenError, TokenRules, VerifiedClaims};

/// A bounded cache of verified access tokens in front of a key set, keyed by the
/// whole token: a hit means byte-for-byte the token that was verified (a digest
/// would cost more than the rest of the lookup).
pub struct TokenVerifier {
    keys: KeySet,
    rules: TokenRules,
    verified: quick_cache::sync::Cache<Box<str>, Arc<VerifiedClaims>>,
}

impl TokenVerifier {
    /// `capacity` bounds the number of remembered tokens; 0 checks every time.
    pub fn new(keys: KeySet, rules: TokenRules, capacity: usize) -> Self {
        Self {
            keys,
            rules,
            verified: quick_cache::sync::Cache::new(capacity.max(1)),
        }
    }

    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    pub fn rules(&self) -> &TokenRules {
        &self.rules
    }

    /// [`KeySet::verify_access_token`], remembered. Shared, so layers that only
    /// need the subject do not copy the claims.
    pub fn verify(&self, token: &str) -> Result<Arc<VerifiedClaims>, TokenError> {
        if let Some(claims) = self.verified.get(token) {
            return if self.expired(&claims) {
                self.verified.remove(token);
                Err(TokenError::Expired)
            } else {
                Ok(claims)
            };
        }
        let claims = Arc::new(self.keys.verify_access_token(token, &self.rules)?);
        self.verified.insert(token.into(), claims.clone());
        Ok(claims)
    }

    /// The same test `jsonwebtoken` applies: expired once now is past `exp` plus
    /// the leeway. A verified token always has a numeric `exp`.
    fn expired(&self, claims: &VerifiedClaims) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        claims
            .expires_at()
            .is_none_or(|exp| now > exp.saturating_add(self.rules.leeway))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;
    use crate::{KeyOrigin, SigningAlgorithm};

    fn rules() -> TokenRules {
        TokenRules {
            issuer: "https://gatehouse.test/auth/v1".into(),
            audience: "authenticated".into(),
            leeway: 0,
        }
    }

    fn token(keys: &KeySet, expires_in: i64, nonce: usize) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        keys.sign(&json!({
            "sub": "user-1", "role": "authenticated", "aud": "authenticated",
            "iss": "https://gatehouse.test/auth/v1", "iat": now, "exp": now + expires_in, "n": nonce,
        }))
        .unwrap()
    }

    #[test]
    fn a_cached_token_still_expires() {
        let keys = KeySet::generate(SigningAlgorithm::Es256, KeyOrigin::Development).unwrap();
        let soon = token(&keys, 1, 0);
        let verifier = TokenVerifier::new(keys, rules(), 16);
        assert_eq!(verifier.verify(&soon).unwrap().subject(), "user-1");
        // The second answer comes from the cache...
        assert_eq!(verifier.verify(&soon).unwrap().subject(), "user-1");
        std::thread::sleep(std::time::Duration::from_millis(2100));
        // ...and stops once the token has expired.
        assert_eq!(verifier.verify(&soon), Err(TokenError::Expired));
        assert_eq!(verifier.verify(&soon), Err(TokenError::Expired));
    }

    #[test]
    fn only_verified_tokens_are_remembered() {
        let keys = KeySet::generate(SigningAlgorithm::Es256, KeyOrigin::Development).unwrap();
        let good = token(&keys, 600, 0);
        let (head, _) = good.rsplit_once('.').unwrap();
        let forged = format!("{head}.{}", "A".repeat(86));
        let verifier = TokenVerifier::new(keys, rules(), 16);
        for _ in 0..2 {
            assert!(matches!(
                verifier.verify(&forged),
                Err(TokenError::Invalid(_))
            ));
        }
        verifier.verify(&good).unwrap();
        assert_eq!(verifier.verified.len(), 1);
    }

    #[test]
    fn the_cache_is_bounded() {
        let keys = KeySet::generate(SigningAlgorithm::Es256, KeyOrigin::Development).unwrap();
        let tokens: Vec<String> = (0..100).map(|n| token(&keys, 600, n)).collect();
        let verifier = TokenVerifier::new(keys, rules(), 10);
        for token in &tokens {
            verifier.verify(token).unwrap();
        }
        assert!(verifier.verified.len() <= 10, "{}", verifier.verified.len());
    }
}

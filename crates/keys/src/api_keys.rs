use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::KeyError;

/// What an API key lets the caller be before any user signs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiRole {
    /// The publishable key: safe in a browser, acts as `anon`.
    Anon,
    /// The secret key: server-side only, acts as `service` and bypasses policies.
    Service,
}

/// The app's two API keys. Only SHA-256 digests are compared, in constant time,
/// so neither the length nor the prefix of a key leaks through timing.
pub struct ApiKeys {
    publishable: String,
    publishable_digest: [u8; 32],
    secret_digest: [u8; 32],
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("publishable", &self.publishable)
            .field("secret", &"[redacted]")
            .finish()
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

impl ApiKeys {
    pub fn new(publishable: &str, secret: &SecretString) -> Result<Self, KeyError> {
        let publishable_digest = sha256(publishable.as_bytes());
        let secret_digest = sha256(secret.expose_secret().as_bytes());
        if bool::from(publishable_digest.ct_eq(&secret_digest)) {
            return Err(KeyError::SameApiKeys);
        }
        Ok(Self {
            publishable: publishable.to_owned(),
            publishable_digest,
            secret_digest,
        })
    }

    /// The publishable key is meant to be shown: it goes into front-end code.
    pub fn publishable(&self) -> &str {
        &self.publishable
    }

    /// Key material for one `purpose` (such as signing storage URLs), derived
    /// from the secret key: every instance sharing the key derives the same, and
    /// a new secret key retires what the old one signed.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &self.secret_digest);
        let tag = aws_lc_rs::hmac::sign(&key, purpose.as_bytes());
        let mut out = [0; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    pub fn identify(&self, presented: &str) -> Option<ApiRole> {
        let presented = sha256(presented.as_bytes());
        let is_publishable = presented.ct_eq(&self.publishable_digest);
        let is_secret = presented.ct_eq(&self.secret_digest);
        if bool::from(is_secret) {
            Some(ApiRole::Service)
        } else if bool::from(is_publishable) {
            Some(ApiRole::Anon)
        } else {
            None
        }
    }
}

/// A fresh key in Supabase's format: `sb_publishable_…` or `sb_secret_…` followed by
/// 256 random bits.
pub fn generate_api_key(role: ApiRole) -> Result<SecretString, KeyError> {
    let mut random = [0u8; 32];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| KeyError::Random)?;
    let prefix = match role {
        ApiRole::Anon => "sb_publishable_",
        ApiRole::Service => "sb_secret_",
    };
    Ok(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random)).into())
}

/// Values people paste from examples. A key or password equal to one of these,
/// ignoring case, is refused in production.
const PLACEHOLDERS: &[&str] = &[
    "changeme",
    "change-me",
    "secret",
    "password",
    "postgres",
    "admin",
    "example",
    "test",
    "your-secret-key",
    "your-super-secret-and-long-postgres-password",
    "super-secret",
];

/// Why a secret is too weak for production, or `None` when it will do.
pub fn weakness(value: &str, min_len: usize) -> Option<String> {
    let lowered = value.trim().to_ascii_lowercase();
    if lowered.is_empty() {
        return Some("it is empty".into());
    }
    if PLACEHOLDERS
        .iter()
        .any(|p| lowered == *p || lowered.trim_start_matches("sb_secret_") == *p)
    {
        return Some("it is a well-known default value".into());
    }
    if value.chars().count() < min_len {
        return Some(format!("it is shorter than {min_len} characters"));
    }
    let mut distinct: Vec<char> = value.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 8 {
        return Some("it uses fewer than 8 distinct characters, like a placeholder".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (ApiKeys, SecretString, SecretString) {
        let publishable = generate_api_key(ApiRole::Anon).unwrap();
        let secret = generate_api_key(ApiRole::Service).unwrap();
        let keys = ApiKeys::new(publishable.expose_secret(), &secret).unwrap();
        (keys, publishable, secret)
    }

    #[test]
    fn identifies_each_key_and_nothing_else() {
        let (keys, publishable, secret) = keys();
        assert_eq!(
            keys.identify(publishable.expose_secret()),
            Some(ApiRole::Anon)
        );
        assert_eq!(
            keys.identify(secret.expose_secret()),
            Some(ApiRole::Service)
        );
        assert_eq!(keys.identify(""), None);
        let mut near = secret.expose_secret().to_owned();
        near.pop();
        assert_eq!(keys.identify(&near), None);
    }

    #[test]
    fn generated_keys_follow_supabase_prefixes_and_are_strong() {
        let (_, publishable, secret) = keys();
        assert!(publishable.expose_secret().starts_with("sb_publishable_"));
        assert!(secret.expose_secret().starts_with("sb_secret_"));
        assert_eq!(weakness(secret.expose_secret(), 32), None);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let (keys, _, secret) = keys();
        assert!(!format!("{keys:?}").contains(secret.expose_secret()));
    }

    #[test]
    fn the_two_keys_must_differ() {
        let secret = generate_api_key(ApiRole::Service).unwrap();
        assert!(ApiKeys::new(secret.expose_secret(), &secret).is_err());
    }

    #[test]
    fn weak_values_are_named() {
        for (value, expected) in [
            ("", "empty"),
            ("changeme", "default"),
            ("CHANGEME", "default"),
            ("short-but-random", "shorter"),
            ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "distinct"),
        ] {
            let reason = weakness(value, 32).unwrap_or_default();
            assert!(reason.contains(expected), "{value:?}: {reason}");
        }
    }
}

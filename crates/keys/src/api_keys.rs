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

/// Proof that a request presented one of the app's API keys, and which. Only
/// [`ApiKeys::identify`] makes one, so code holding it knows the key was checked
/// (the data and storage APIs build their service-role caller only from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresentedKey(ApiRole);

impl PresentedKey {
    pub fn role(self) -> ApiRole {
        self.0
    }
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

    pub fn identify(&self, presented: &str) -> Option<PresentedKey> {
        let presented = sha256(presented.as_bytes());
        let is_publishable = presented.ct_eq(&self.publishable_digest);
        let is_secret = presented.ct_eq(&self.secret_digest);
        if bool::from(is_secret) {
            Some(PresentedKey(ApiRole::Service))
        } else if bool::from(is_publishable) {
            Some(PresentedKey(ApiRole::Anon))
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

/// Values people paste from examples: Supabase's local and self-hosting
/// defaults (JWT secret, demo API keys, passwords), the JWT debugger's sample
/// secret, and the placeholders of common tutorials. A key or password equal to
/// one of these, ignoring case and an `sb_secret_` prefix, is refused in
/// production however long it is.
const WELL_KNOWN: &[&str] = &[
    "changeme",
    "change-me",
    "changeit",
    "secret",
    "password",
    "postgres",
    "admin",
    "default",
    "example",
    "test",
    "1234567890",
    "keyboard cat",
    "your-secret-key",
    "your-256-bit-secret",
    "your_jwt_secret",
    "jwt-secret",
    "mysecretkey",
    "my-secret-key",
    "supersecret",
    "super-secret",
    "super-secret-jwt-token-with-at-least-32-characters-long",
    "your-super-secret-jwt-token-with-at-least-32-characters-long",
    "your-super-secret-and-long-postgres-password",
    "this_password_is_insecure_and_should_be_updated",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6ImFub24iLCJleHAiOjE5ODM4MTI5OTZ9.CRXP1A7WOeoJeXxjNni43kdQwgnWNReilDMblYTn_I0",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6InNlcnZpY2Vfcm9sZSIsImV4cCI6MTk4MzgxMjk5Nn0.EGIM96RAZx35lJzdJsyH-qQwv8Hdp7fsn3W0YpN81IU",
    "sb_publishable_ACJWlzQHlZjBrEguHvfOxg_3BJgxAaH",
    "sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz",
];

/// Measured entropy a secret needs per character of its minimum length. The
/// measure undercounts short random strings (a sample of 32 hex characters
/// rarely shows all 16), so the bar sits well below them: over a million
/// `openssl rand -hex 16` keys the lowest measured 65 bits, the median 112,
/// against the 48 asked of an API key, while keyboard runs and repeated words
/// measure under 40.
const BITS_PER_REQUIRED_CHARACTER: f64 = 1.5;

/// An estimate of the guessing work in `value`, in bits: the Shannon entropy of
/// its characters times the number of characters that add something, where a
/// character adds nothing when it continues a run (`aaa`, `abc`, `321`) or
/// begins a three-character fragment seen earlier (`passwordpassword`). Only an
/// estimate: it cannot know a phrase is famous, which is what `WELL_KNOWN` is for.
fn measured_bits(value: &str) -> f64 {
    let chars: Vec<char> = value.chars().collect();
    if chars.is_empty() {
        return 0.0;
    }
    let mut counts = std::collections::HashMap::new();
    for c in &chars {
        *counts.entry(*c).or_insert(0usize) += 1;
    }
    let total = chars.len() as f64;
    let per_char: f64 = counts
        .values()
        .map(|&count| {
            let p = count as f64 / total;
            -p * p.log2()
        })
        .sum();
    let step =
        |i: usize| (i64::from(u32::from(chars[i])) - i64::from(u32::from(chars[i - 1]))).abs() <= 1;
    let mut seen = std::collections::HashSet::new();
    let adding = (0..chars.len())
        .filter(|&i| {
            let in_run = i >= 2 && step(i) && step(i - 1);
            let repeated = chars
                .get(i..i + 3)
                .is_some_and(|fragment| !seen.insert(fragment));
            !in_run && !repeated
        })
        .count();
    per_char * adding as f64
}

/// Why a secret is too weak for production, or `None` when it will do.
pub fn weakness(value: &str, min_len: usize) -> Option<String> {
    let lowered = value.trim().to_ascii_lowercase();
    if lowered.is_empty() {
        return Some("it is empty".into());
    }
    if WELL_KNOWN.iter().any(|known| {
        let known = known.to_ascii_lowercase();
        lowered == known || lowered.trim_start_matches("sb_secret_") == known
    }) {
        return Some("it is a well-known default value".into());
    }
    if value.chars().count() < min_len {
        return Some(format!("it is shorter than {min_len} characters"));
    }
    let measured = value
        .strip_prefix("sb_secret_")
        .or_else(|| value.strip_prefix("sb_publishable_"))
        .unwrap_or(value);
    let bits = measured_bits(measured);
    let needed = BITS_PER_REQUIRED_CHARACTER * min_len as f64;
    if bits < needed {
        return Some(format!(
            "its measured entropy is about {bits:.0} bits, below the {needed:.0} needed: it has \
             runs, repeats or too few distinct characters"
        ));
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
            keys.identify(publishable.expose_secret())
                .map(PresentedKey::role),
            Some(ApiRole::Anon)
        );
        assert_eq!(
            keys.identify(secret.expose_secret())
                .map(PresentedKey::role),
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
            ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "entropy"),
            (
                "super-secret-jwt-token-with-at-least-32-characters-long",
                "default",
            ),
            (
                "sb_secret_super-secret-jwt-token-with-at-least-32-characters-long",
                "default",
            ),
            ("1234567890123456789012345678901234567890", "entropy"),
            ("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ", "entropy"),
            ("passwordpasswordpasswordpasswordpassword", "entropy"),
            ("qwertyuiopqwertyuiopqwertyuiopqwertyuiop", "entropy"),
        ] {
            let reason = weakness(value, 32).unwrap_or_default();
            assert!(reason.contains(expected), "{value:?}: {reason}");
        }
    }

    /// Random keys pass however they are written: generated ones, hex from
    /// `openssl rand -hex 16` and base64, many times over.
    #[test]
    fn random_keys_measure_strong() {
        for _ in 0..500 {
            let mut bytes = [0u8; 16];
            aws_lc_rs::rand::fill(&mut bytes).unwrap();
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(weakness(&hex, 32), None, "{hex}");
            let mut long = [0u8; 32];
            aws_lc_rs::rand::fill(&mut long).unwrap();
            let encoded = URL_SAFE_NO_PAD.encode(long);
            assert_eq!(weakness(&encoded, 32), None, "{encoded}");
            let generated = generate_api_key(ApiRole::Service).unwrap();
            assert_eq!(weakness(generated.expose_secret(), 32), None);
        }
        assert_eq!(weakness("Zq8v3LmT9xW2rB7kN4pY", 16), None);
        // Once refused: a random key that happens to repeat `7c`.
        assert_eq!(weakness("53c1f7cf7c7c7ccbcde21d2dcf529565", 32), None);
    }
}

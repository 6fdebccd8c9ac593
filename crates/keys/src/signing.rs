//! The signing key set. Every key has a `kid` (its RFC 7638 thumbprint), one key
//! is current and signs, every listed key verifies, so rotation logs nobody out.
//! Verification follows RFC 8725: the algorithm comes from our key, never from
//! the token; key-source headers are refused; issuer, audience and expiry are
//! required.

use std::path::Path;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretSlice};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{KeyError, TokenError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SigningAlgorithm {
    #[serde(rename = "ES256")]
    Es256,
    #[serde(rename = "EdDSA")]
    EdDsa,
}

impl std::str::FromStr for SigningAlgorithm {
    type Err = KeyError;

    fn from_str(name: &str) -> Result<Self, KeyError> {
        match name.to_ascii_lowercase().as_str() {
            "es256" => Ok(Self::Es256),
            "eddsa" | "ed25519" => Ok(Self::EdDsa),
            _ => Err(KeyError::UnknownAlgorithm(name.to_owned())),
        }
    }
}

impl std::fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        })
    }
}

impl SigningAlgorithm {
    fn jwt(self) -> Algorithm {
        match self {
            Self::Es256 => Algorithm::ES256,
            Self::EdDsa => Algorithm::EdDSA,
        }
    }
}

/// Where a key set came from. Production refuses development keys, which sit
/// unprotected in a data folder that is easy to copy around.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyOrigin {
    Development,
    Operator,
}

/// The on-disk form of the key set (mode 0600).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeySetFile {
    origin: KeyOrigin,
    current: String,
    keys: Vec<StoredKey>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredKey {
    kid: String,
    alg: SigningAlgorithm,
    created_at: u64,
    /// PKCS#8 DER, base64.
    private_key: String,
}

struct SigningKey {
    kid: String,
    alg: SigningAlgorithm,
    created_at: u64,
    pkcs8: SecretSlice<u8>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public_jwk: Value,
}

/// A public view of one key, for `gatehouse keys list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub kid: String,
    pub alg: SigningAlgorithm,
    pub created_at: u64,
    pub current: bool,
}

/// What a token must say about who issued it and for whom.
#[derive(Debug, Clone)]
pub struct TokenRules {
    pub issuer: String,
    pub audience: String,
    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    pub leeway: u64,
}

/// The claims of an access token that passed verification. Only
/// [`KeySet::verify_access_token`] makes one, so holding one proves the check ran.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedClaims {
    subject: String,
    role: String,
    claims: serde_json::Map<String, Value>,
}

impl VerifiedClaims {
    /// The user id (`sub`).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Every claim of the token, as it was signed.
    pub fn claims(&self) -> &serde_json::Map<String, Value> {
        &self.claims
    }

    pub fn role(&self) -> &str {
        &self.role
    }

    /// `exp`, in seconds since the epoch.
    pub fn expires_at(&self) -> Option<u64> {
        self.claims
            .get("exp")
            .and_then(Value::as_f64)
            .map(|exp| exp as u64)
    }

    /// A claim as text, as `auth.jwt() ->> 'name'` reads it.
    pub fn claim_text(&self, name: &str) -> Option<String> {
        match self.claims.get(name)? {
            Value::Null => None,
            Value::String(text) => Some(text.clone()),
            other => Some(other.to_string()),
        }
    }
}

pub struct KeySet {
    origin: KeyOrigin,
    current: String,
    keys: Vec<SigningKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("current", &self.current)
            .field(
                "kids",
                &self.keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

impl SigningKey {
    fn generate(alg: SigningAlgorithm) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let pkcs8 = match alg {
            SigningAlgorithm::Es256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            }
            SigningAlgorithm::EdDsa => Ed25519KeyPair::generate_pkcs8(&rng),
        }
        .map_err(|_| KeyError::Random)?;
        Self::from_pkcs8(alg, pkcs8.as_ref().to_vec(), now()).map_err(KeyError::Sign)
    }

    fn from_pkcs8(alg: SigningAlgorithm, pkcs8: Vec<u8>, created_at: u64) -> Result<Self, String> {
        let (public_jwk, encoding, decoding) = match alg {
            SigningAlgorithm::Es256 => {
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
                    .map_err(|e| format!("not a P-256 key: {e}"))?;
                // Uncompressed SEC1 point: 0x04 || x (32 bytes) || y (32 bytes).
                let point = pair.public_key().as_ref();
                if point.len() != 65 {
                    return Err("unexpected P-256 public key length".into());
                }
                let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
                let y = URL_SAFE_NO_PAD.encode(&point[33..]);
                let decoding =
                    DecodingKey::from_ec_components(&x, &y).map_err(|e| e.to_string())?;
                let jwk = json!({"crv": "P-256", "kty": "EC", "x": x, "y": y});
                (jwk, EncodingKey::from_ec_der(&pkcs8), decoding)
            }
            SigningAlgorithm::EdDsa => {
                let pair = Ed25519KeyPair::from_pkcs8(&pkcs8)
                    .map_err(|e| format!("not an Ed25519 key: {e}"))?;
                let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
                let decoding = DecodingKey::from_ed_components(&x).map_err(|e| e.to_string())?;
                let jwk = json!({"crv": "Ed25519", "kty": "OKP", "x": x});
                (jwk, EncodingKey::from_ed_der(&pkcs8), decoding)
            }
        };
        // RFC 7638: the thumbprint hashes the required members in lexicographic order,
        // which is how serde_json's map (a BTreeMap) serialises them.
        let kid = URL_SAFE_NO_PAD.encode(digest(&SHA256, public_jwk.to_string().as_bytes()));
        let mut public_jwk = public_jwk;
        public_jwk["kid"] = json!(kid);
        public_jwk["alg"] = json!(alg.to_string());
        public_jwk["use"] = json!("sig");
        public_jwk["key_ops"] = json!(["verify"]);
        Ok(Self {
            kid,
            alg,
            created_at,
            pkcs8: pkcs8.into(),
            encoding,
            decoding,
            public_jwk,
        })
    }
}

impl KeySet {
    /// A new set holding one fresh key.
    pub fn generate(alg: SigningAlgorithm, origin: KeyOrigin) -> Result<Self, KeyError> {
        let key = SigningKey::generate(alg)?;
        Ok(Self {
            origin,
            current: key.kid.clone(),
            keys: vec![key],
        })
    }

    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let malformed = |reason: String| KeyError::Malformed {
            path: path.to_path_buf(),
            reason,
        };
        // serde_json's message never quotes the input, so no key material leaks through it.
        let file: KeySetFile = serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
        let keys = file
            .keys
            .into_iter()
            .map(|stored| {
                let pkcs8 = STANDARD
                    .decode(stored.private_key.as_bytes())
                    .map_err(|_| format!("key {} is not base64", stored.kid))?;
                let key = SigningKey::from_pkcs8(stored.alg, pkcs8, stored.created_at)
                    .map_err(|reason| format!("key {}: {reason}", stored.kid))?;
                if key.kid != stored.kid {
                    return Err(format!("key {} does not match its kid", stored.kid));
                }
                Ok(key)
            })
            .collect::<Result<Vec<_>, String>>()
            .map_err(malformed)?;
        if !keys.iter().any(|key| key.kid == file.current) {
            return Err(malformed(format!(
                "the current kid {} is not in the set",
                file.current
            )));
        }
        Ok(Self {
            origin: file.origin,
            current: file.current,
            keys,
        })
    }

    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let file = KeySetFile {
            origin: self.origin,
            current: self.current.clone(),
            keys: self
                .keys
                .iter()
                .map(|key| StoredKey {
                    kid: key.kid.clone(),
                    alg: key.alg,
                    created_at: key.created_at,
                    private_key: STANDARD.encode(key.pkcs8.expose_secret()),
                })
                .collect(),
        };
        let text = serde_json::to_vec_pretty(&file).map_err(|e| KeyError::Sign(e.to_string()))?;
        crate::write_private_file(path, &text)
    }

    pub fn origin(&self) -> KeyOrigin {
        self.origin
    }

    pub fn current_kid(&self) -> &str {
        &self.current
    }

    pub fn list(&self) -> Vec<KeyInfo> {
        self.keys
            .iter()
            .map(|key| KeyInfo {
                kid: key.kid.clone(),
                alg: key.alg,
                created_at: key.created_at,
                current: key.kid == self.current,
            })
            .collect()
    }

    /// Adds a fresh key and makes it current; older keys keep verifying.
    pub fn rotate(&mut self, alg: SigningAlgorithm) -> Result<String, KeyError> {
        let key = SigningKey::generate(alg)?;
        self.current = key.kid.clone();
        self.keys.push(key);
        Ok(self.current.clone())
    }

    /// Removes a key that no longer signs; tokens it signed stop verifying.
    pub fn retire(&mut self, kid: &str) -> Result<(), KeyError> {
        if kid == self.current {
            return Err(KeyError::RetireCurrent(kid.to_owned()));
        }
        let before = self.keys.len();
        self.keys.retain(|key| key.kid != kid);
        if self.keys.len() == before {
            return Err(KeyError::UnknownKid(kid.to_owned()));
        }
        Ok(())
    }

    /// The public keys as a JWKS document, current key first.
    pub fn jwks(&self) -> Value {
        let mut keys: Vec<&SigningKey> = self.keys.iter().collect();
        keys.sort_by_key(|key| key.kid != self.current);
        json!({ "keys": keys.iter().map(|key| &key.public_jwk).collect::<Vec<_>>() })
    }

    fn current_key(&self) -> &SigningKey {
        // `current` is checked against `keys` by every constructor and by `retire`.
        self.keys
            .iter()
            .find(|key| key.kid == self.current)
            .unwrap_or(&self.keys[0])
    }

    /// Signs claims with the current key, naming it in `kid`.
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String, KeyError> {
        let key = self.current_key();
        let mut header = Header::new(key.alg.jwt());
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding)
            .map_err(|e| KeyError::Sign(e.to_string()))
    }

    /// Verifies an access token: signature, key, algorithm, issuer, audience and
    /// expiry as in [`KeySet::verify`], plus a non-empty `sub`, a `role`, and an
    /// `iat`, when present, no later than now plus the leeway (a token from the
    /// future was minted with a wrong clock or a stolen key).
    pub fn verify_access_token(
        &self,
        token: &str,
        rules: &TokenRules,
    ) -> Result<VerifiedClaims, TokenError> {
        let claims: serde_json::Map<String, Value> = self.verify(token, rules)?;
        if let Some(issued) = claims.get("iat") {
            let latest = jsonwebtoken::get_current_timestamp().saturating_add(rules.leeway);
            match issued.as_f64() {
                Some(issued) if issued <= latest as f64 => {}
                _ => return Err(TokenError::Invalid("iat is in the future".into())),
            }
        }
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let subject = text("sub").ok_or_else(|| TokenError::Invalid("no sub claim".into()))?;
        let role = text("role").ok_or_else(|| TokenError::Invalid("no role claim".into()))?;
        Ok(VerifiedClaims {
            subject,
            role,
            claims,
        })
    }

    /// Verifies a token against the set and the rules, returning its claims.
    pub fn verify<C: DeserializeOwned>(
        &self,
        token: &str,
        rules: &TokenRules,
    ) -> Result<C, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.jku.is_some()
            || header.x5u.is_some()
            || header.x5c.is_some()
            || header.jwk.is_some()
        {
            return Err(TokenError::ForeignKeySource);
        }
        let kid = header.kid.as_deref().ok_or(TokenError::UnknownKid)?;
        let key = self
            .keys
            .iter()
            .find(|key| key.kid == kid)
            .ok_or(TokenError::UnknownKid)?;
        if header.alg != key.alg.jwt() {
            return Err(TokenError::WrongAlgorithm);
        }
        let mut validation = Validation::new(key.alg.jwt());
        validation.set_issuer(&[&rules.issuer]);
        validation.set_audience(&[&rules.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = rules.leeway;
        validation.validate_nbf = true;
        jsonwebtoken::decode::<C>(token, &key.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
                _ => TokenError::Invalid(error.to_string()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> TokenRules {
        TokenRules {
            issuer: "http://127.0.0.1:54321/auth/v1".into(),
            audience: "authenticated".into(),
            leeway: 5,
        }
    }

    fn claims(exp_offset: i64) -> Value {
        json!({
            "sub": "user-1", "role": "authenticated", "aud": "authenticated",
            "iss": "http://127.0.0.1:54321/auth/v1",
            "exp": now() as i64 + exp_offset, "iat": now(),
        })
    }

    fn b64(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    #[test]
    fn access_tokens_need_a_subject_and_a_role() {
        let set = KeySet::generate(SigningAlgorithm::Es256, KeyOrigin::Operator).unwrap();
        let mut token = claims(60);
        token["tenant"] = json!("acme");
        let verified = set
            .verify_access_token(&set.sign(&token).unwrap(), &rules())
            .unwrap();
        assert_eq!(
            (verified.subject(), verified.role()),
            ("user-1", "authenticated")
        );
        assert_eq!(verified.claim_text("tenant").as_deref(), Some("acme"));
        assert_eq!(verified.claim_text("missing"), None);
        for field in ["sub", "role"] {
            let mut without = claims(60);
            without.as_object_mut().unwrap().remove(field);
            assert!(
                set.verify_access_token(&set.sign(&without).unwrap(), &rules())
                    .is_err(),
                "{field}"
            );
        }
    }

    #[test]
    fn tokens_issued_in_the_future_are_refused() {
        let set = KeySet::generate(SigningAlgorithm::Es256, KeyOrigin::Operator).unwrap();
        let verify = |iat: Value| {
            let mut token = claims(60);
            token["iat"] = iat;
            set.verify_access_token(&set.sign(&token).unwrap(), &rules())
        };
        assert!(verify(json!(now() + 3)).is_ok(), "within the leeway");
        assert!(verify(json!(now() + 60)).is_err());
        assert!(verify(json!(now() + 5 * 365 * 86400)).is_err());
        assert!(verify(json!("soon")).is_err());
    }

    #[test]
    fn round_trip_for_each_algorithm() {
        for alg in [SigningAlgorithm::Es256, SigningAlgorithm::EdDsa] {
            let set = KeySet::generate(alg, KeyOrigin::Operator).unwrap();
            let token = set.sign(&claims(3600)).unwrap();
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(header.kid.as_deref(), Some(set.current_kid()));
            let back: Value = set.verify(&token, &rules()).unwrap();
            assert_eq!(back["sub"], "user-1");
        }
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_until_retired() {
        let mut set = KeySet::generate(SigningAlgorithm::Es256, KeyOrigin::Operator).unwrap();
        let old_kid = set.current_kid().to_owned();
        let old_token = set.sign(&claims(3600)).unwrap();
        let new_kid = set.rotate(SigningAlgorithm::EdDsa).unwrap();
        assert_ne!(old_kid, new_kid);
        let new_token = set.sign(&claims(3600)).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&new_token).unwrap().alg,
            Algorithm::EdDSA
        );
        assert!(set.verify::<Value>(&old_token, &rules()).is_ok());
        assert!(matches!(
            set.retire(&new_kid),
            Err(KeyError::RetireCurrent(_))
        ));
        set.retire(&old_kid).unwrap();
        assert_eq!(
            set.verify::<Value>(&old_token, &rules()),
            Err(TokenError::UnknownKid)
        );
        assert!(set.verify::<Value>(&new_token, &rules()).is_ok());
    }

    #[test]
    fn save_and_load_preserve_the_set_with_private_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("signing-keys.json");
        let mut set = KeySet::generate(SigningAlgorithm::Es256, KeyOrigin::Development).unwrap();
        set.rotate(SigningAlgorithm::EdDsa).unwrap();
        set.save(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let loaded = KeySet::load(&path).unwrap();
        assert_eq!(loaded.list(), set.list());
        assert_eq!(loaded.origin(), KeyOrigin::Development);
        let token = set.sign(&claims(60)).unwrap();
        assert!(loaded.verify::<Value>(&token, &rules()).is_ok());
    }

    #[test]
    fn jwks_publishes_public_parts_only() {
        let mut set = KeySet::generate(SigningAlgorithm::Es256, KeyOrigin::Operator).unwrap();
        set.rotate(SigningAlgorithm::EdDsa).unwrap();
        let jwks = set.jwks();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0]["kid"], set.current_kid());
        assert_eq!(keys[0]["kty"], "OKP");
        assert_eq!(keys[1]["kty"], "EC");
        assert_eq!(keys[1]["crv"], "P-256");
        for key in keys {
            assert!(key.get("d").is_none(), "private part published: {key}");
        }
    }

    /// A forged token: header and claims as given, signature from a real key so
    /// only the header decides the outcome.
    fn forge(set: &KeySet, header: Value) -> String {
        let genuine = set.sign(&claims(3600)).unwrap();
        let signature = genuine.rsplit('.').next().unwrap();
        format!("{}.{}.{signature}", b64(&header), b64(&claims(3600)))
    }

    #[test]
    fn refuses_tokens_that_choose_their_own_rules() {
        let set = KeySet::generate(SigningAlgorithm::Es256, KeyOrigin::Operator).unwrap();
        let kid = set.current_kid();
        let cases = [
            json!({"alg": "none", "kid": kid}),
            json!({"alg": "HS256", "kid": kid}),
            json!({"alg": "es256", "kid": kid}),
            json!({"alg": "Es256", "kid": kid}),
            json!({"alg": "EdDSA", "kid": kid}),
            json!({"alg": "RS256", "kid": kid}),
            json!({"alg": "ES256"}),
            json!({"alg": "ES256", "kid": "unknown"}),
            json!({"alg": "ES256", "kid": kid, "jku": "https://evil.example/jwks.json"}),
            json!({"alg": "ES256", "kid": kid, "x5u": "https://evil.example/cert.pem"}),
            json!({"alg": "ES256", "kid": kid, "jwk": {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}}),
        ];
        for header in cases {
            assert!(
                set.verify::<Value>(&forge(&set, header.clone()), &rules())
                    .is_err(),
                "{header}"
            );
        }
        assert!(set.verify::<Value>("not.a.token", &rules()).is_err());
        assert!(set.verify::<Value>("", &rules()).is_err());
    }

    #[test]
    fn refuses_expired_and_foreign_tokens() {
        let set = KeySet::generate(SigningAlgorithm::Es256, KeyOrigin::Operator).unwrap();
        let expired = set.sign(&claims(-60)).unwrap();
        assert_eq!(
            set.verify::<Value>(&expired, &rules()),
            Err(TokenError::Expired)
        );
        let mut wrong_issuer = claims(60);
        wrong_issuer["iss"] = json!("https://elsewhere.example/auth/v1");
        assert!(
            set.verify::<Value>(&set.sign(&wrong_issuer).unwrap(), &rules())
                .is_err()
        );
        let mut wrong_audience = claims(60);
        wrong_audience["aud"] = json!("someone-else");
        assert!(
            set.verify::<Value>(&set.sign(&wrong_audience).unwrap(), &rules())
                .is_err()
        );
        let other = KeySet::generate(SigningAlgorithm::Es256, KeyOrigin::Operator).unwrap();
        assert!(
            set.verify::<Value>(&other.sign(&claims(60)).unwrap(), &rules())
                .is_err()
        );
    }
}

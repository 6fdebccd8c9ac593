//! Signed URLs: capabilities to download one object, or to upload to one name,
//! until an expiry. The token is `payload.mac`, both base64url: the payload names
//! the purpose, bucket, object name, expiry and (for uploads) the owner and
//! whether it may replace; the mac is HMAC-SHA256 under a key derived from the
//! secret API key, checked in constant time before the payload is read.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::{Result, StorageError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    Download,
    Upload,
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    #[serde(rename = "p")]
    pub purpose: Purpose,
    #[serde(rename = "b")]
    pub bucket: String,
    #[serde(rename = "n")]
    pub name: String,
    /// Unix seconds.
    #[serde(rename = "e")]
    pub expires: i64,
    /// Uploads: who signed (`anon`, `authenticated` or `service`), whose policies
    /// the upload runs under when it arrives.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub signer_role: Option<String>,
    /// Uploads: the signer's user id, the object's owner.
    #[serde(rename = "o", default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Uploads: the version of the existing object the signer was allowed to
    /// replace; none means the upload may only create.
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

#[derive(Clone)]
pub struct UrlSigner {
    key: hmac::Key,
}

impl UrlSigner {
    /// `secret` is key material of at least 32 bytes (the server derives it
    /// from the secret API key).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    pub fn sign(&self, grant: &Grant) -> String {
        let payload = serde_json::to_vec(grant).unwrap_or_default();
        let mac = hmac::sign(&self.key, &payload);
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(mac.as_ref())
        )
    }

    /// The grant, if `token` carries a valid mac, is for `purpose` on exactly
    /// this bucket and name, and has not expired at `now` (unix seconds).
    pub fn verify(
        &self,
        token: &str,
        purpose: Purpose,
        bucket: &str,
        name: &str,
        now: i64,
    ) -> Result<Grant> {
        let invalid = || StorageError::InvalidSignature;
        let (payload, mac) = token.split_once('.').ok_or_else(invalid)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?;
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| invalid())?;
        hmac::verify(&self.key, &payload, &mac).map_err(|_| invalid())?;
        let grant: Grant = serde_json::from_slice(&payload).map_err(|_| invalid())?;
        if grant.purpose != purpose || grant.bucket != bucket || grant.name != name {
            return Err(invalid());
        }
        if grant.expires <= now {
            return Err(StorageError::SignatureExpired);
        }
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            purpose: Purpose::Download,
            bucket: "docs".into(),
            name: "a/b.txt".into(),
            expires: 1_000,
            signer_role: None,
            owner: None,
            replaces: None,
        }
    }

    #[test]
    fn tokens_hold_only_for_their_path_purpose_and_time() {
        let signer = UrlSigner::new(&[7; 32]);
        let token = signer.sign(&grant());
        assert_eq!(
            signer
                .verify(&token, Purpose::Download, "docs", "a/b.txt", 999)
                .ok(),
            Some(grant())
        );
        let refused = |token: &str, purpose, bucket, name, now| {
            signer.verify(token, purpose, bucket, name, now).is_err()
        };
        assert!(
            refused(&token, Purpose::Download, "docs", "a/b.txt", 1_000),
            "expired"
        );
        assert!(
            refused(&token, Purpose::Upload, "docs", "a/b.txt", 0),
            "purpose"
        );
        assert!(
            refused(&token, Purpose::Download, "other", "a/b.txt", 0),
            "bucket"
        );
        assert!(
            refused(&token, Purpose::Download, "docs", "a/c.txt", 0),
            "name"
        );
        let other_key = UrlSigner::new(&[8; 32]).sign(&grant());
        assert!(
            refused(&other_key, Purpose::Download, "docs", "a/b.txt", 0),
            "key"
        );
        // A payload changed under the old mac: a longer expiry.
        let (_, mac) = token.split_once('.').unwrap();
        let longer = Grant {
            expires: 9_999,
            ..grant()
        };
        let forged = format!(
            "{}.{mac}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&longer).unwrap())
        );
        assert!(
            refused(&forged, Purpose::Download, "docs", "a/b.txt", 2_000),
            "forged"
        );
        for junk in ["", ".", "a.b", "!!!.???", &token[..token.len() - 2]] {
            assert!(
                refused(junk, Purpose::Download, "docs", "a/b.txt", 0),
                "{junk}"
            );
        }
    }
}

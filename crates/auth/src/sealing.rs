//! Secrets auth must keep but never show again (second-factor secrets):
//! sealed with AES-256-GCM under a key the operator supplies, so a copy of the
//! database alone does not hold them. Each sealed value is bound to the row it
//! belongs to (the associated data), so a sealed secret moved to another row
//! does not open there.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};

use crate::{AuthError, Result};

/// The operator's key: 32 bytes, given as base64.
pub struct SealingKey(LessSafeKey);

/// A new key, as `GATEHOUSE_MFA_KEY` holds it.
pub fn generate_key() -> Result<SecretString> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| AuthError::Internal("random generator failed".into()))?;
    Ok(STANDARD.encode(bytes).into())
}

impl SealingKey {
    /// From its base64 text (`GATEHOUSE_MFA_KEY`); anything but 32 bytes is refused.
    pub fn from_base64(text: &SecretString) -> std::result::Result<Self, String> {
        let bytes = STANDARD
            .decode(text.expose_secret().trim())
            .map_err(|_| "the key is not base64".to_owned())?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| format!("the key is {} bytes, not 32", bytes.len()))?;
        Ok(Self(LessSafeKey::new(key)))
    }

    /// `plaintext` sealed for the row named `bound_to`: base64 of a fresh
    /// random nonce, the ciphertext and its tag.
    pub fn seal(&self, plaintext: &[u8], bound_to: &str) -> Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| AuthError::Internal("random generator failed".into()))?;
        let mut sealed = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(bound_to.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| AuthError::Internal("sealing failed".into()))?;
        Ok(STANDARD.encode([&nonce[..], &sealed].concat()))
    }

    /// What `seal` sealed for `bound_to`; an error for anything else (another
    /// key, another row, a changed byte).
    pub fn open(&self, sealed: &str, bound_to: &str) -> Result<Vec<u8>> {
        let unreadable = || AuthError::Internal("a sealed secret does not open".into());
        let bytes = STANDARD.decode(sealed).map_err(|_| unreadable())?;
        if bytes.len() < NONCE_LEN {
            return Err(unreadable());
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| unreadable())?;
        let mut opened = rest.to_vec();
        let plaintext = self
            .0
            .open_in_place(nonce, Aad::from(bound_to.as_bytes()), &mut opened)
            .map_err(|_| unreadable())?;
        Ok(plaintext.to_vec())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn key(byte: u8) -> SealingKey {
        SealingKey::from_base64(&SecretString::from(STANDARD.encode([byte; 32]))).unwrap()
    }

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_for_its_row() {
        let secret = b"12345678901234567890";
        let sealed = key(1).seal(secret, "factor-a").unwrap();
        assert!(!sealed.contains("MTIzNDU2"), "not the plaintext's base64");
        assert_eq!(key(1).open(&sealed, "factor-a").unwrap(), secret);
        assert!(key(2).open(&sealed, "factor-a").is_err(), "another key");
        assert!(key(1).open(&sealed, "factor-b").is_err(), "another row");
        let mut bytes = STANDARD.decode(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(
            key(1).open(&STANDARD.encode(bytes), "factor-a").is_err(),
            "tampered"
        );
        assert!(key(1).open("short", "factor-a").is_err());
        assert_ne!(
            key(1).seal(secret, "factor-a").unwrap(),
            sealed,
            "a fresh nonce each time"
        );
    }

    #[test]
    fn only_a_32_byte_base64_key_is_taken() {
        for wrong in ["not base64!", &STANDARD.encode([0u8; 16]), ""] {
            assert!(
                SealingKey::from_base64(&SecretString::from(wrong.to_owned())).is_err(),
                "{wrong:?}"
            );
        }
    }
}

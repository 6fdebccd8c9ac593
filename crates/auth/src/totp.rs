//! Time-based one-time passwords (RFC 6238) for the second factor, as every
//! authenticator app reads them: HMAC-SHA-1, six digits, 30-second steps, one
//! step of clock drift either way (totp-rs computes the codes). What is ours:
//! a code is accepted once per step (the caller keeps the last step used and
//! passes it back), the comparison is constant-time, and the enrolment's
//! `otpauth://` URI comes with its QR code as SVG text, as Supabase Auth
//! answers `mfa.enroll` (supabase-js makes it a data URI).

use totp_rs::{Algorithm, Secret, TOTP};

const DIGITS: usize = 6;
const STEP_SECONDS: u64 = 30;
/// Steps of drift accepted on either side of now.
const SKEW: u64 = 1;
/// 160 bits, RFC 4226's recommendation for the shared secret.
const SECRET_BYTES: usize = 20;

/// A factor's shared secret, raw bytes (encrypt them before storing).
pub struct FactorSecret(Vec<u8>);

impl FactorSecret {
    pub fn generate() -> crate::Result<Self> {
        let mut bytes = vec![0; SECRET_BYTES];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| crate::AuthError::Internal("random generator failed".into()))?;
        Ok(Self(bytes))
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// As authenticator apps take it by hand: base32, unpadded.
    pub fn base32(&self) -> String {
        match Secret::Raw(self.0.clone()).to_encoded() {
            Secret::Encoded(text) => text.trim_end_matches('=').to_owned(),
            Secret::Raw(_) => String::new(),
        }
    }

    fn totp(&self, (issuer, account): (&str, &str)) -> TOTP {
        TOTP::new_unchecked(
            Algorithm::SHA1,
            DIGITS,
            0,
            STEP_SECONDS,
            self.0.clone(),
            Some(issuer.to_owned()),
            account.to_owned(),
        )
    }

    /// `otpauth://totp/<issuer>:<account>?secret=…&issuer=…`, for the QR code.
    pub fn uri(&self, issuer: &str, account: &str) -> String {
        // ':' separates issuer from account in the label; neither may hold one.
        let (issuer, account) = (issuer.replace(':', " "), account.replace(':', " "));
        self.totp((&issuer, &account)).get_url()
    }

    /// The step (unix time / 30) whose code `code` is, within one step of
    /// `now` and later than `last_used`; `None` when it is no such code.
    pub fn verify(&self, code: &str, now: u64, last_used: Option<u64>) -> Option<u64> {
        if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let totp = self.totp(("", ""));
        let current = now / STEP_SECONDS;
        let mut matched = None;
        // Every candidate is computed and compared, so the time taken does
        // not tell which step matched.
        for step in current.saturating_sub(SKEW)..=current + SKEW {
            let expected = totp.generate(step * STEP_SECONDS);
            let same = aws_lc_rs::constant_time::verify_slices_are_equal(
                expected.as_bytes(),
                code.as_bytes(),
            )
            .is_ok();
            if same && last_used.is_none_or(|used| step > used) {
                matched = Some(step);
            }
        }
        matched
    }
}

/// The QR code of `uri` as an SVG document.
pub fn qr_code(uri: &str) -> Option<String> {
    let code = qrcode::QrCode::new(uri.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .build(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// RFC 6238 appendix B's SHA-1 key, its codes cut to six digits.
    fn rfc_secret() -> FactorSecret {
        FactorSecret::from_bytes(b"12345678901234567890".to_vec())
    }

    #[test]
    fn the_rfc_test_vectors_verify() {
        for (time, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(
                rfc_secret().verify(code, time, None),
                Some(time / 30),
                "{time}"
            );
        }
    }

    #[test]
    fn one_step_of_drift_each_way_and_no_more() {
        let secret = rfc_secret();
        let now = 1_234_567_890;
        let code = "005924";
        assert!(secret.verify(code, now + 30, None).is_some());
        assert!(secret.verify(code, now - 30, None).is_some());
        assert_eq!(secret.verify(code, now + 60, None), None);
        assert_eq!(secret.verify(code, now - 60, None), None);
    }

    #[test]
    fn a_code_is_accepted_once_per_step() {
        let secret = rfc_secret();
        let now = 1_234_567_890;
        let step = secret.verify("005924", now, None).unwrap();
        assert_eq!(secret.verify("005924", now, Some(step)), None, "replayed");
        assert_eq!(
            secret.verify("005924", now + 30, Some(step)),
            None,
            "replayed a step later, still within the drift"
        );
    }

    #[test]
    fn anything_but_six_digits_is_refused() {
        let secret = rfc_secret();
        for code in ["", "00592", "0059240", "00592a", " 05924", "٠٠٥٩٢٤"] {
            assert_eq!(secret.verify(code, 1_234_567_890, None), None, "{code:?}");
        }
    }

    #[test]
    fn enrolment_gives_a_uri_and_its_qr_code() {
        let secret = FactorSecret::generate().unwrap();
        assert_eq!(secret.as_bytes().len(), SECRET_BYTES);
        let base32 = secret.base32();
        assert_eq!(base32.len(), 32);
        let uri = secret.uri("Gatehouse", "pat@example.com");
        assert_eq!(
            uri,
            format!("otpauth://totp/Gatehouse:pat%40example.com?secret={base32}&issuer=Gatehouse")
        );
        let qr = qr_code(&uri).unwrap();
        assert!(
            qr.contains("<svg") && qr.trim_end().ends_with("</svg>"),
            "{qr}"
        );
    }

    /// Codes made by an independent implementation (pyotp) verify here.
    #[test]
    fn codes_from_pyotp_verify() {
        let secret = FactorSecret::generate().unwrap();
        let script = format!(
            "import pyotp, time; t = int(time.time()); print(t, pyotp.TOTP('{}').at(t))",
            secret.base32()
        );
        let output = match std::process::Command::new("python3")
            .args(["-c", &script])
            .output()
        {
            Ok(output) if output.status.success() => output,
            _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
                panic!("CI runs this against pyotp: pip install pyotp")
            }
            _ => {
                eprintln!("pyotp is not installed: the cross-check is skipped outside CI");
                return;
            }
        };
        let text = String::from_utf8(output.stdout).unwrap();
        let (time, code) = text.trim().split_once(' ').unwrap();
        let time: u64 = time.parse().unwrap();
        assert_eq!(secret.verify(code, time, None), Some(time / 30), "{code}");
    }
}

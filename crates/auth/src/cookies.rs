//! Cookie sessions for server-rendered apps (opt-in): the session lives in an
//! HttpOnly `__Host-` cookie, and every unsafe request it authenticates must also
//! carry the session's CSRF token (the edge checks Origin and Sec-Fetch-Site).
//! The cookie and CSRF values are random and stored hashed; each sign-in makes a
//! new session, so the cookie rotates; idle and absolute timeouts apply.

use gatehouse_db::Statement;
use gatehouse_keys::{KeySet, VerifiedClaims};
use serde_json::json;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::{Auth, AuthError, Result, now, random_token, store, timestamp, token_hash};

/// The two values a cookie session hands the browser.
pub struct CookieSecrets {
    /// For the HttpOnly session cookie.
    pub session: String,
    /// For the page to send back in `X-CSRF-Token`.
    pub csrf: String,
}

impl Auth {
    /// Binds a fresh cookie and CSRF token to a just-created session.
    pub async fn attach_cookie(&self, session_id: &str) -> Result<CookieSecrets> {
        let secrets = CookieSecrets {
            session: random_token()?,
            csrf: random_token()?,
        };
        self.db
            .transaction(vec![Statement::new(
                &store::SET_COOKIE,
                vec![
                    session_id.into(),
                    token_hash(&secrets.session).into(),
                    token_hash(&secrets.csrf).into(),
                    timestamp(now()).into(),
                ],
            )])
            .await?;
        Ok(secrets)
    }

    /// The caller behind a session cookie. For an unsafe request `csrf` must be
    /// the session's token. The claims are minted and verified here, so a cookie
    /// caller is the same kind of verified caller as a bearer one.
    pub async fn cookie_claims(
        &self,
        keys: &KeySet,
        rules: &gatehouse_keys::TokenRules,
        cookie: &str,
        csrf: Option<&str>,
        unsafe_method: bool,
    ) -> Result<VerifiedClaims> {
        let at = now();
        let rows = self
            .db
            .query(Statement::new(
                &store::COOKIE_SESSION,
                vec![token_hash(cookie).into(), timestamp(at).into()],
            ))
            .await?;
        let row = rows.first().ok_or(AuthError::SessionNotFound)?;
        let session_id = row.text(0)?.to_owned();
        let user_id = row.text(1)?.to_owned();
        let csrf_hash = row.optional_text(2)?.unwrap_or_default().to_owned();
        let last_seen = row.optional_text(3)?.unwrap_or_default().to_owned();
        let idle_limit = timestamp(at - self.settings.cookie_idle_timeout);
        if last_seen < idle_limit {
            return Err(AuthError::SessionNotFound);
        }
        if unsafe_method {
            let presented = csrf.map(token_hash).unwrap_or_default();
            if !bool::from(presented.as_bytes().ct_eq(csrf_hash.as_bytes())) {
                return Err(AuthError::CsrfFailed);
            }
        }
        // Touch at most once a minute: the idle clock needs no finer grain.
        if last_seen < timestamp(at - time::Duration::minutes(1)) {
            self.db
                .transaction(vec![Statement::new(
                    &store::SEEN,
                    vec![session_id.clone().into(), timestamp(at).into()],
                )])
                .await?;
        }
        let issued = OffsetDateTime::now_utc();
        let claims = json!({
            "iss": rules.issuer, "sub": user_id, "aud": rules.audience, "role": "authenticated",
            "iat": issued.unix_timestamp(), "exp": (issued + time::Duration::minutes(1)).unix_timestamp(),
            "session_id": session_id, "aal": "aal1", "amr": [{"method": "cookie", "timestamp": issued.unix_timestamp()}],
        });
        let token = keys
            .sign(&claims)
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        keys.verify_access_token(&token, rules)
            .map_err(|e| AuthError::Internal(e.to_string()))
    }
}

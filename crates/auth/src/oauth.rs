//! Sign-in through other providers, as supabase-js drives it: `/authorize`
//! sends the browser to the provider, `/callback` brings it back, and the
//! app gets its session in the URL fragment (implicit flow) or a code it
//! exchanges with its PKCE verifier; `grant_type=id_token` for native apps;
//! identities linked and unlinked. The provider protocol is
//! `gatehouse-oauth`'s; what is kept between the legs and who the identity
//! belongs to is decided here.
//!
//! Invariants: a flow is found by its state's hash, spent once, expires in
//! ten minutes and (unless it links an identity to a signed-in user) finishes
//! only in the browser that began it (a cookie's hash on the flow); a code
//! for the app is spent once, expires in five minutes and needs the verifier
//! of the challenge it was issued for; an identity joins an existing account
//! by email only when the provider says the email is verified, and when that
//! account never confirmed its address, the password someone set on it is
//! dropped; provider tokens are never logged, and kept only by a provider
//! configured to hand them on, with a PKCE code until it is exchanged.

use gatehouse_db::{Row, Sql, Statement, Value};
use gatehouse_keys::{KeySet, VerifiedClaims};
use gatehouse_oauth::{OAuthError, ProviderIdentity, Providers};
use serde_json::{Value as Json, json};

use crate::{
    Auth, AuthError, Changes, Client, Result, Session, User, now, random_token, store, timestamp,
    token_hash,
};

const FLOW_LIFETIME: time::Duration = time::Duration::minutes(10);
const CODE_LIFETIME: time::Duration = time::Duration::minutes(5);

/// An identity as the user object lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub id: String,
    pub user_id: String,
    pub provider: String,
    /// The provider's id for the account.
    pub provider_id: String,
    pub email: Option<String>,
    pub identity_data: Json,
    pub created_at: String,
    pub updated_at: String,
    pub last_sign_in_at: Option<String>,
}

/// A flow begun: where to send the browser, and the secret its cookie keeps
/// (none when the flow links an identity to the signed-in caller).
pub struct Begun {
    pub provider_url: String,
    pub browser_secret: Option<String>,
    /// Names this flow's cookie ([`flow_key`]), so flows begun in several
    /// tabs of one browser each keep their own.
    pub flow_key: String,
}

/// A short name for the flow of `state`, public (it is derived from the state
/// the provider sends back anyway) and the same at both legs.
pub fn flow_key(state: &str) -> String {
    token_hash(state).chars().take(16).collect()
}

/// A finished flow, and how it lands back at the app.
pub struct Landing {
    pub redirect_to: String,
    pub arrival: Arrival,
    pub provider: String,
    pub user_id: String,
    /// The flow linked a new identity to an existing account.
    pub linked: bool,
}

pub enum Arrival {
    /// Implicit flow: the session goes in the redirect's fragment.
    Session(Box<Session>),
    /// PKCE flow: a code to exchange, in the redirect's query.
    Code(String),
}

/// A flow that failed, with where its error is told.
pub struct Failed {
    pub redirect_to: String,
    pub error: AuthError,
}

/// The app's PKCE challenge, as `/authorize` received it.
pub struct Challenge<'a> {
    pub code_challenge: &'a str,
    pub method: &'a str,
}

const INSERT_FLOW: Sql = Sql::both(
    "INSERT INTO gatehouse_oauth_flows (state_hash, provider, browser_hash, redirect_to, \
     pkce_verifier, nonce, code_challenge, code_challenge_method, link_user_id, created_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
);

/// Spends a live flow once.
const SPEND_FLOW: Sql = Sql::both(
    "DELETE FROM gatehouse_oauth_flows WHERE state_hash = $1 AND expires_at > $2 RETURNING \
     provider, browser_hash, redirect_to, pkce_verifier, nonce, code_challenge, \
     code_challenge_method, link_user_id",
);

macro_rules! identity_columns {
    () => {
        "id, user_id, provider, provider_id, email, identity_data, created_at, updated_at, last_sign_in_at"
    };
}

const IDENTITY_BY_PROVIDER_ID: Sql = Sql::both(concat!(
    "SELECT ",
    identity_columns!(),
    " FROM gatehouse_identities WHERE provider = $1 AND provider_id = $2"
));

const IDENTITIES_OF: Sql = Sql::both(concat!(
    "SELECT ",
    identity_columns!(),
    " FROM gatehouse_identities WHERE user_id = $1 ORDER BY created_at, id"
));

/// The identities of one page of the admin's user list (`store::USERS_PAGE`).
const IDENTITIES_OF_PAGE: Sql = Sql::both(concat!(
    "SELECT ",
    identity_columns!(),
    " FROM gatehouse_identities WHERE user_id IN \
     (SELECT id FROM gatehouse_users ORDER BY created_at, id LIMIT $1 OFFSET $2) \
     ORDER BY created_at, id"
));

const INSERT_IDENTITY: Sql = Sql::both(
    "INSERT INTO gatehouse_identities (id, user_id, provider, provider_id, email, identity_data, \
     created_at, updated_at, last_sign_in_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $7)",
);

const TOUCH_IDENTITY: Sql = Sql::both(
    "UPDATE gatehouse_identities SET identity_data = $2, email = $3, updated_at = $4, \
     last_sign_in_at = $4 WHERE id = $1",
);

const DELETE_IDENTITY: Sql =
    Sql::both("DELETE FROM gatehouse_identities WHERE id = $1 AND user_id = $2 RETURNING provider");

/// The provider proved the mailbox of an account that never confirmed it:
/// the address is confirmed and a password set by whoever registered it goes.
const PROVEN_BY_PROVIDER: Sql = Sql::both(
    "UPDATE gatehouse_users SET email_confirmed_at = $2, password_hash = NULL, updated_at = $2 \
     WHERE id = $1 AND email_confirmed_at IS NULL",
);

const SET_APP_METADATA: Sql =
    Sql::both("UPDATE gatehouse_users SET app_metadata = $2, updated_at = $3 WHERE id = $1");

const INSERT_CODE: Sql = Sql::both(
    "INSERT INTO gatehouse_auth_codes (code_hash, user_id, method, code_challenge, \
     code_challenge_method, provider_token, provider_refresh_token, created_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
);

/// Spends a live code once, whatever the verifier turns out to be.
const SPEND_CODE: Sql = Sql::both(
    "DELETE FROM gatehouse_auth_codes WHERE code_hash = $1 AND expires_at > $2 \
     RETURNING user_id, method, code_challenge, code_challenge_method, provider_token, \
     provider_refresh_token",
);

const EXPIRED_FLOWS: Sql = Sql::both("DELETE FROM gatehouse_oauth_flows WHERE expires_at < $1");
const EXPIRED_CODES: Sql = Sql::both("DELETE FROM gatehouse_auth_codes WHERE expires_at < $1");

fn identity_from_row(row: &Row) -> Result<Identity> {
    let text = |i| row.optional_text(i).map(|v| v.map(str::to_owned));
    Ok(Identity {
        id: row.text(0)?.to_owned(),
        user_id: row.text(1)?.to_owned(),
        provider: row.text(2)?.to_owned(),
        provider_id: row.text(3)?.to_owned(),
        email: text(4)?,
        identity_data: serde_json::from_str(row.text(5)?).unwrap_or_else(|_| json!({})),
        created_at: row.text(6)?.to_owned(),
        updated_at: row.text(7)?.to_owned(),
        last_sign_in_at: text(8)?,
    })
}

/// A PKCE challenge or verifier: RFC 7636's 43 to 128 unreserved characters.
fn pkce_text(text: &str) -> bool {
    (43..=128).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn provider_failed(error: OAuthError) -> AuthError {
    match error {
        OAuthError::Rejected(detail) => {
            tracing::warn!(%detail, "a provider sign-in was refused");
            AuthError::ProviderRefused
        }
        OAuthError::Unavailable(detail) | OAuthError::Config(detail) => {
            tracing::error!(%detail, "a provider could not be used");
            AuthError::ProviderUnavailable
        }
    }
}

impl Auth {
    /// The providers users may sign in with.
    pub fn with_providers(mut self, providers: Providers) -> Self {
        self.providers = Some(providers);
        self
    }

    pub fn provider_names(&self) -> Vec<String> {
        self.providers
            .as_ref()
            .map(|p| p.names().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    fn providers(&self, name: &str) -> Result<&Providers> {
        self.providers
            .as_ref()
            .filter(|providers| providers.contains(name))
            .ok_or_else(|| {
                AuthError::Validation("Unsupported provider: provider is not enabled".into())
            })
    }

    /// `GET /authorize` (and, with `linking`, `/user/identities/authorize`).
    pub async fn begin_provider_sign_in(
        &self,
        provider: &str,
        (redirect_to, scopes): (Option<&str>, Option<&str>),
        challenge: Option<Challenge<'_>>,
        linking: Option<&VerifiedClaims>,
        callback_url: &str,
    ) -> Result<Begun> {
        let providers = self.providers(provider)?;
        let redirect_to = self.redirect(redirect_to)?;
        let challenge = match challenge {
            None => None,
            Some(Challenge {
                code_challenge,
                method,
            }) => {
                let method = method.to_ascii_lowercase();
                if !matches!(method.as_str(), "s256" | "plain") || !pkce_text(code_challenge) {
                    return Err(AuthError::Validation(
                        "code_challenge must be 43 to 128 characters, code_challenge_method s256 or plain"
                            .into(),
                    ));
                }
                Some((code_challenge.to_owned(), method))
            }
        };
        let link_user = match linking {
            Some(claims) => Some(self.current_user(claims).await?.id),
            None => None,
        };
        let scopes: Vec<String> = scopes
            .unwrap_or_default()
            .split([' ', ','])
            .filter(|s| !s.is_empty())
            .take(20)
            .map(str::to_owned)
            .collect();
        let state = random_token()?;
        let browser_secret = match link_user {
            Some(_) => None,
            None => Some(random_token()?),
        };
        let flow = providers
            .begin(provider, (&state, callback_url), &scopes)
            .await
            .map_err(provider_failed)?;
        let at = now();
        let text = |v: Option<String>| v.map_or(Value::Null, Value::Text);
        let (code_challenge, method) = challenge.unzip();
        self.db
            .transaction(vec![Statement::new(
                &INSERT_FLOW,
                vec![
                    token_hash(&state).into(),
                    provider.into(),
                    text(browser_secret.as_deref().map(token_hash)),
                    redirect_to.into(),
                    flow.pkce_verifier.into(),
                    flow.nonce.into(),
                    text(code_challenge),
                    text(method),
                    text(link_user),
                    timestamp(at).into(),
                    timestamp(at + FLOW_LIFETIME).into(),
                ],
            )])
            .await?;
        Ok(Begun {
            provider_url: flow.authorize_url,
            browser_secret,
            flow_key: flow_key(&state),
        })
    }

    /// `GET|POST /callback`: the provider sent the browser back with `code`
    /// (or an error) and `state`.
    pub async fn finish_provider_sign_in(
        &self,
        keys: &KeySet,
        (state, browser_secret): (&str, Option<&str>),
        code: std::result::Result<&str, AuthError>,
        (callback_url, client): (&str, &Client),
    ) -> std::result::Result<Landing, Failed> {
        let site = |error: AuthError| Failed {
            redirect_to: self.settings.site_url.clone(),
            error,
        };
        let rows = self
            .db
            .transaction(vec![Statement::new(
                &SPEND_FLOW,
                vec![token_hash(state).into(), timestamp(now()).into()],
            )])
            .await
            .map_err(|error| site(error.into()))?;
        let Some(row) = rows.first().and_then(|rows| rows.first()) else {
            return Err(site(AuthError::BadOAuthState));
        };
        let flow = (|| -> Result<_> {
            let text = |i| row.optional_text(i).map(|v| v.map(str::to_owned));
            Ok((
                row.text(0)?.to_owned(),
                text(1)?,
                row.text(2)?.to_owned(),
                (row.text(3)?.to_owned(), row.text(4)?.to_owned()),
                text(5)?.zip(text(6)?),
                text(7)?,
            ))
        })();
        let (provider, browser_hash, redirect_to, secrets, challenge, link_user) =
            flow.map_err(site)?;
        let failed = |error: AuthError| Failed {
            redirect_to: redirect_to.clone(),
            error,
        };
        // The flow must come back to the browser that began it (a link flow
        // is bound to its signed-in user instead).
        if let Some(expected) = browser_hash {
            let presented = browser_secret.map(token_hash).unwrap_or_default();
            let same = aws_lc_rs::constant_time::verify_slices_are_equal(
                presented.as_bytes(),
                expected.as_bytes(),
            )
            .is_ok();
            if !same {
                return Err(failed(AuthError::BadOAuthState));
            }
        }
        let code = code.map_err(&failed)?;
        let providers = self.providers(&provider).map_err(&failed)?;
        let identity = providers
            .finish(&provider, (code, callback_url), (&secrets.0, &secrets.1))
            .await
            .map_err(|error| failed(provider_failed(error)))?;
        let (user, linked) = self
            .user_for_identity(&identity, link_user.as_deref())
            .await
            .map_err(&failed)?;
        let user_id = user.id.clone();
        let tokens = identity.tokens;
        let arrival = match challenge {
            Some((code_challenge, method)) => Arrival::Code(
                self.issue_code(&user.id, (&code_challenge, &method), tokens.as_ref())
                    .await
                    .map_err(&failed)?,
            ),
            None => {
                let mut session = self
                    .start_session(keys, user, "oauth", client)
                    .await
                    .map_err(&failed)?;
                session.provider_tokens = tokens;
                Arrival::Session(Box::new(session))
            }
        };
        Ok(Landing {
            redirect_to,
            arrival,
            provider,
            user_id,
            linked,
        })
    }

    /// A code for the app's PKCE exchange; the provider's tokens, when it
    /// hands them on, wait with it (five minutes at most).
    async fn issue_code(
        &self,
        user_id: &str,
        (challenge, method): (&str, &str),
        tokens: Option<&gatehouse_oauth::ProviderTokens>,
    ) -> Result<String> {
        let code = uuid::Uuid::new_v4().to_string();
        let at = now();
        let text = |v: Option<&String>| v.cloned().map_or(Value::Null, Value::Text);
        self.db
            .transaction(vec![Statement::new(
                &INSERT_CODE,
                vec![
                    token_hash(&code).into(),
                    user_id.into(),
                    "oauth".into(),
                    challenge.into(),
                    method.into(),
                    text(tokens.map(|t| &t.access_token)),
                    text(tokens.and_then(|t| t.refresh_token.as_ref())),
                    timestamp(at).into(),
                    timestamp(at + CODE_LIFETIME).into(),
                ],
            )])
            .await?;
        Ok(code)
    }

    /// `POST /token?grant_type=pkce`: the code, once, with the verifier of
    /// its challenge.
    pub async fn exchange_code(
        &self,
        keys: &KeySet,
        (auth_code, code_verifier): (&str, &str),
        client: &Client,
    ) -> Result<Session> {
        let invalid = || AuthError::FlowStateInvalid;
        let rows = self
            .db
            .transaction(vec![Statement::new(
                &SPEND_CODE,
                vec![token_hash(auth_code).into(), timestamp(now()).into()],
            )])
            .await?;
        let row = rows
            .first()
            .and_then(|rows| rows.first())
            .ok_or_else(invalid)?;
        let (user_id, method) = (row.text(0)?.to_owned(), row.text(1)?.to_owned());
        let (challenge, challenge_method) = (row.text(2)?, row.text(3)?);
        let provider_tokens = row
            .optional_text(4)?
            .map(|access_token| -> Result<_> {
                Ok(gatehouse_oauth::ProviderTokens {
                    access_token: access_token.to_owned(),
                    refresh_token: row.optional_text(5)?.map(str::to_owned),
                })
            })
            .transpose()?;
        if !pkce_text(code_verifier) {
            return Err(AuthError::CodeVerifierMismatch);
        }
        let derived = match challenge_method {
            "s256" => {
                use base64::Engine;
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
                    &aws_lc_rs::digest::SHA256,
                    code_verifier.as_bytes(),
                ))
            }
            _ => code_verifier.to_owned(),
        };
        aws_lc_rs::constant_time::verify_slices_are_equal(derived.as_bytes(), challenge.as_bytes())
            .map_err(|_| AuthError::CodeVerifierMismatch)?;
        let user = self.user(&user_id).await?;
        if user.is_banned(&timestamp(now())) {
            return Err(AuthError::UserBanned);
        }
        let mut session = self.start_session(keys, user, &method, client).await?;
        session.provider_tokens = provider_tokens;
        Ok(session)
    }

    /// `POST /token?grant_type=id_token`: an ID token a native app holds.
    pub async fn sign_in_with_id_token(
        &self,
        keys: &KeySet,
        (provider, id_token, nonce): (&str, &str, Option<&str>),
        client: &Client,
    ) -> Result<Session> {
        let identity = self
            .providers(provider)?
            .verify_id_token(provider, id_token, nonce)
            .await
            .map_err(provider_failed)?;
        let (user, _) = self.user_for_identity(&identity, None).await?;
        let mut session = self.start_session(keys, user, "oauth", client).await?;
        session.provider_tokens = identity.tokens;
        Ok(session)
    }

    /// The account the provider's identity belongs to: the one it is linked
    /// to; the signed-in user linking it; the account with the provider's
    /// verified email; or a new account. True when it was linked just now to
    /// an account that existed.
    async fn user_for_identity(
        &self,
        identity: &ProviderIdentity,
        linking: Option<&str>,
    ) -> Result<(User, bool)> {
        let at = timestamp(now());
        let data = Json::Object(identity.data.clone().into_iter().collect());
        let text = |v: Option<String>| v.map_or(Value::Null, Value::Text);
        let known = self
            .db
            .query(Statement::new(
                &IDENTITY_BY_PROVIDER_ID,
                vec![
                    identity.provider.clone().into(),
                    identity.subject.clone().into(),
                ],
            ))
            .await?;
        if let Some(row) = known.first() {
            let linked = identity_from_row(row)?;
            if linking.is_some_and(|user| user != linked.user_id) {
                return Err(AuthError::IdentityAlreadyExists);
            }
            self.db
                .transaction(vec![Statement::new(
                    &TOUCH_IDENTITY,
                    vec![
                        linked.id.into(),
                        data.to_string().into(),
                        text(identity.email.clone()),
                        at.into(),
                    ],
                )])
                .await?;
            return Ok((self.signable(&linked.user_id).await?, false));
        }
        let new_identity = |user_id: &str| {
            Statement::new(
                &INSERT_IDENTITY,
                vec![
                    uuid::Uuid::new_v4().to_string().into(),
                    user_id.into(),
                    identity.provider.clone().into(),
                    identity.subject.clone().into(),
                    text(identity.email.clone()),
                    data.to_string().into(),
                    at.clone().into(),
                ],
            )
        };
        let existing = match (linking, identity.email_verified, &identity.email) {
            (Some(user_id), ..) => Some(self.user(user_id).await?),
            (None, true, Some(email)) => self
                .user_where(&store::USER_BY_EMAIL, email)
                .await?
                .map(|(user, _)| user),
            _ => None,
        };
        if let Some(user) = existing {
            let mut app_metadata = user.app_metadata.clone();
            let mut providers: Vec<Json> = app_metadata["providers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !providers.contains(&json!(identity.provider)) {
                providers.push(json!(identity.provider));
            }
            app_metadata["providers"] = Json::Array(providers);
            let mut statements = vec![
                new_identity(&user.id),
                Statement::new(
                    &SET_APP_METADATA,
                    vec![
                        user.id.clone().into(),
                        app_metadata.to_string().into(),
                        at.clone().into(),
                    ],
                ),
            ];
            if linking.is_none() {
                statements.push(Statement::new(
                    &PROVEN_BY_PROVIDER,
                    vec![user.id.clone().into(), at.clone().into()],
                ));
            }
            self.db
                .transaction(statements)
                .await
                .map_err(|error| match error.constraint() {
                    Some(gatehouse_db::Constraint::Unique) => AuthError::IdentityAlreadyExists,
                    _ => error.into(),
                })?;
            return Ok((self.signable(&user.id).await?, true));
        }
        if !self.settings.signups {
            return Err(AuthError::SignupDisabled);
        }
        // An address the provider did not verify is not the account's: it
        // stays in the identity's data only.
        let email = identity.email.clone().filter(|_| identity.email_verified);
        let changes = Changes {
            email_confirmed: Some(email.is_some()),
            user_metadata: Some(data.clone()),
            app_metadata: Some(json!({
                "provider": identity.provider,
                "providers": [identity.provider],
            })),
            ..Changes::default()
        };
        let user = self
            .insert_user(email, None, &changes, false, |id| {
                Ok(vec![new_identity(id)])
            })
            .await?;
        Ok((user, false))
    }

    /// The user, unless banned.
    async fn signable(&self, user_id: &str) -> Result<User> {
        let user = self.user(user_id).await?;
        if user.is_banned(&timestamp(now())) {
            return Err(AuthError::UserBanned);
        }
        Ok(user)
    }

    pub(crate) async fn identities_of(&self, user_id: &str) -> Result<Vec<Identity>> {
        let rows = self
            .db
            .query(Statement::new(&IDENTITIES_OF, vec![user_id.into()]))
            .await?;
        rows.iter().map(identity_from_row).collect()
    }

    pub(crate) async fn identities_of_page(
        &self,
        (limit, offset): (Value, Value),
    ) -> Result<Vec<Identity>> {
        let rows = self
            .db
            .query(Statement::new(&IDENTITIES_OF_PAGE, vec![limit, offset]))
            .await?;
        rows.iter().map(identity_from_row).collect()
    }

    /// `DELETE /user/identities/{id}`: the user keeps at least one way in.
    pub async fn unlink_identity(
        &self,
        claims: &VerifiedClaims,
        identity_id: &str,
    ) -> Result<User> {
        let user = self.current_user(claims).await?;
        if !user.identities.iter().any(|i| i.id == identity_id) {
            return Err(AuthError::IdentityNotFound);
        }
        let (_, password) = self
            .user_where(&store::USER_BY_ID, &user.id)
            .await?
            .ok_or(AuthError::UserNotFound)?;
        let own_way_in = user.email.is_some() && password.is_some();
        if user.identities.len() + usize::from(own_way_in) < 2 {
            return Err(AuthError::SingleIdentity);
        }
        let rows = self
            .db
            .transaction(vec![Statement::new(
                &DELETE_IDENTITY,
                vec![identity_id.into(), user.id.clone().into()],
            )])
            .await?;
        let provider = rows
            .first()
            .and_then(|rows| rows.first())
            .map(|row| row.text(0).map(str::to_owned))
            .transpose()?
            .ok_or(AuthError::IdentityNotFound)?;
        let still_linked = user
            .identities
            .iter()
            .any(|i| i.id != identity_id && i.provider == provider);
        if !still_linked {
            let mut app_metadata = user.app_metadata.clone();
            if let Some(providers) = app_metadata["providers"].as_array_mut() {
                providers.retain(|p| p != &json!(provider));
            }
            self.db
                .transaction(vec![Statement::new(
                    &SET_APP_METADATA,
                    vec![
                        user.id.clone().into(),
                        app_metadata.to_string().into(),
                        timestamp(now()).into(),
                    ],
                )])
                .await?;
        }
        self.user(&user.id).await
    }

    /// Flows and codes past their end.
    pub(crate) fn prune_provider_flows(&self) -> Vec<Statement> {
        let before = timestamp(now() - crate::EXPIRED_KEPT);
        vec![
            Statement::new(&EXPIRED_FLOWS, vec![before.clone().into()]),
            Statement::new(&EXPIRED_CODES, vec![before.into()]),
        ]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;
    use std::sync::Arc;

    use gatehouse_db::Database;
    use gatehouse_db::testing::TestDatabase;
    use gatehouse_keys::{KeyOrigin, SigningAlgorithm};

    use super::*;
    use crate::{AuthSettings, SignUp};

    const PASSWORD: &str = "correct horse battery staple";

    async fn auth(settings: AuthSettings) -> (TestDatabase, Auth) {
        let database = TestDatabase::sqlite();
        let db = Database::open(&database.location(), Default::default())
            .await
            .unwrap();
        let auth = Auth::new(
            db,
            settings,
            "http://gatehouse.test/auth/v1".into(),
            Arc::default(),
            [7; 32],
        )
        .unwrap();
        (database, auth)
    }

    fn keys() -> KeySet {
        KeySet::generate(SigningAlgorithm::Es256, KeyOrigin::Development).unwrap()
    }

    fn identity(subject: &str, email: &str, email_verified: bool) -> ProviderIdentity {
        ProviderIdentity {
            provider: "corp".into(),
            subject: subject.into(),
            email: Some(email.into()),
            email_verified,
            data: BTreeMap::new(),
            tokens: None,
        }
    }

    /// Someone registered the victim's address with a password and never
    /// confirmed it.
    async fn squatted(auth: &Auth) -> User {
        let signed_up = auth
            .sign_up(
                &keys(),
                "victim@example.com",
                PASSWORD,
                None,
                None,
                &Client::default(),
            )
            .await
            .unwrap();
        match signed_up {
            SignUp::Unconfirmed(user) => user,
            SignUp::SignedIn(_) => panic!("confirmation is on"),
        }
    }

    #[tokio::test]
    async fn an_unverified_address_makes_a_separate_account_without_it() {
        let (_database, auth) = auth(AuthSettings::default()).await;
        let victim = squatted(&auth).await;
        let (user, linked) = auth
            .user_for_identity(&identity("eve", "victim@example.com", false), None)
            .await
            .unwrap();
        assert_ne!(user.id, victim.id);
        assert_eq!(user.email, None);
        assert!(!linked);
        assert!(auth.user(&victim.id).await.unwrap().identities.is_empty());
    }

    #[tokio::test]
    async fn a_verified_address_links_and_drops_an_unconfirmed_password() {
        let (_database, auth) = auth(AuthSettings::default()).await;
        let victim = squatted(&auth).await;
        let (user, linked) = auth
            .user_for_identity(&identity("vic", "victim@example.com", true), None)
            .await
            .unwrap();
        assert_eq!(user.id, victim.id);
        assert!(linked);
        assert!(user.email_confirmed_at.is_some());
        let (_, password) = auth
            .user_where(&store::USER_BY_ID, &victim.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(password, None, "the squatter's password is gone");
        // Signing in again finds the same account through the identity.
        let (again, linked) = auth
            .user_for_identity(&identity("vic", "victim@example.com", true), None)
            .await
            .unwrap();
        assert_eq!((again.id, linked), (victim.id.clone(), false));
        // The identity is that account's: linking it to another is refused.
        let (other, _) = auth
            .user_for_identity(&identity("someone", "someone@example.com", true), None)
            .await
            .unwrap();
        let refused = auth
            .user_for_identity(
                &identity("vic", "victim@example.com", true),
                Some(&other.id),
            )
            .await;
        assert!(matches!(refused, Err(AuthError::IdentityAlreadyExists)));
    }

    #[tokio::test]
    async fn a_code_needs_its_verifier_and_is_spent_by_any_attempt() {
        let (_database, auth) = auth(AuthSettings::default()).await;
        let (user, _) = auth
            .user_for_identity(&identity("ada", "ada@example.com", true), None)
            .await
            .unwrap();
        let verifier = "v".repeat(50);
        let challenge = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                verifier.as_bytes(),
            ))
        };
        let keys = keys();
        let client = Client::default();
        let code = auth
            .issue_code(&user.id, (&challenge, "s256"), None)
            .await
            .unwrap();
        let wrong = auth
            .exchange_code(&keys, (&code, &"w".repeat(50)), &client)
            .await;
        assert!(matches!(wrong, Err(AuthError::CodeVerifierMismatch)));
        let spent = auth.exchange_code(&keys, (&code, &verifier), &client).await;
        assert!(matches!(spent, Err(AuthError::FlowStateInvalid)));
        let code = auth
            .issue_code(&user.id, (&challenge, "s256"), None)
            .await
            .unwrap();
        let session = auth
            .exchange_code(&keys, (&code, &verifier), &client)
            .await
            .unwrap();
        assert_eq!(session.user.id, user.id);
        let again = auth.exchange_code(&keys, (&code, &verifier), &client).await;
        assert!(
            matches!(again, Err(AuthError::FlowStateInvalid)),
            "once only"
        );
    }
}

//! The second factor (TOTP), as supabase-js's `auth.mfa` drives it: enrol a
//! factor, challenge it, verify a code into an `aal2` session, unenrol it.
//!
//! Invariants: a factor's secret is stored only sealed under the operator's
//! key and bound to its row; a code is accepted once per step (the step is
//! spent in the same transaction that raises the session); wrong codes are
//! counted per factor like wrong passwords, and lock it; a challenge is spent
//! once, answers only the address that asked for it, and expires. Proving a
//! second factor ends the user's other `aal1` sessions and starts this one's
//! refresh chain anew, so no token of the weaker session can be refreshed into
//! the stronger one.

use gatehouse_db::{Row, Sql, Statement, Value};
use gatehouse_keys::VerifiedClaims;
use serde_json::{Value as Json, json};

use crate::sealing::SealingKey;
use crate::totp::{self, FactorSecret};
use crate::{
    Assurance, Auth, AuthError, Client, Result, Session, now, random_token, store, throttle,
    timestamp, token_hash,
};

/// How many factors (verified or not) one user may hold.
const MOST_FACTORS: usize = 10;
/// How long a challenge can be answered (GoTrue's default).
const CHALLENGE_LIFETIME: time::Duration = time::Duration::minutes(5);
/// An enrolment never verified is dropped after this.
const UNVERIFIED_KEPT: time::Duration = time::Duration::hours(1);
/// Longest friendly name or issuer accepted.
const MOST_NAME_CHARS: usize = 256;

/// A second factor as the user object lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Factor {
    pub id: String,
    pub friendly_name: Option<String>,
    pub factor_type: String,
    /// `unverified` until a code from it is verified, then `verified`.
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
    pub last_challenged_at: Option<String>,
}

impl Factor {
    pub fn is_verified(&self) -> bool {
        self.status == "verified"
    }

    /// A row of `factor_columns!`, starting at column `at`.
    fn from_row(row: &Row, at: usize) -> Result<Self> {
        let text = |i: usize| row.optional_text(at + i).map(|v| v.map(str::to_owned));
        Ok(Self {
            id: row.text(at)?.to_owned(),
            friendly_name: text(1)?,
            factor_type: row.text(at + 2)?.to_owned(),
            status: row.text(at + 3)?.to_owned(),
            created_at: row.text(at + 4)?.to_owned(),
            updated_at: row.text(at + 5)?.to_owned(),
            last_challenged_at: text(6)?,
        })
    }
}

/// A new factor and what the user's authenticator app needs, shown once.
pub struct Enrolled {
    pub factor: Factor,
    /// The shared secret, base32, for typing in by hand.
    pub secret: String,
    /// `otpauth://totp/…`, what the QR code holds.
    pub uri: String,
    /// The QR code as an SVG document.
    pub qr_code: String,
}

/// A challenge to answer with a code before `expires_at` (unix seconds).
pub struct Challenge {
    pub id: String,
    pub expires_at: i64,
}

macro_rules! factor_columns {
    () => {
        "id, friendly_name, factor_type, status, created_at, updated_at, last_challenged_at"
    };
}

const FACTORS_OF: Sql = Sql::both(concat!(
    "SELECT ",
    factor_columns!(),
    " FROM gatehouse_mfa_factors WHERE user_id = $1 ORDER BY created_at, id"
));

/// The factors of one page of the admin's user list (`store::USERS_PAGE`).
const FACTORS_OF_PAGE: Sql = Sql::both(concat!(
    "SELECT user_id, ",
    factor_columns!(),
    " FROM gatehouse_mfa_factors WHERE user_id IN \
     (SELECT id FROM gatehouse_users ORDER BY created_at, id LIMIT $1 OFFSET $2) \
     ORDER BY created_at, id"
));

/// One factor of one user, with its sealed secret and last accepted step.
const OWNED_FACTOR: Sql = Sql::both(concat!(
    "SELECT ",
    factor_columns!(),
    ", secret, last_step FROM gatehouse_mfa_factors WHERE id = $1 AND user_id = $2"
));

const DROP_STALE_ENROLMENTS: Sql = Sql::both(
    "DELETE FROM gatehouse_mfa_factors WHERE user_id = $1 AND status = 'unverified' AND created_at < $2",
);

const INSERT_FACTOR: Sql = Sql::both(
    "INSERT INTO gatehouse_mfa_factors (id, user_id, friendly_name, factor_type, status, secret, \
     created_at, updated_at) VALUES ($1, $2, $3, 'totp', 'unverified', $4, $5, $5)",
);

const INSERT_CHALLENGE: Sql = Sql::both(
    "INSERT INTO gatehouse_mfa_challenges (id, factor_id, ip, created_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5)",
);

const CHALLENGED: Sql =
    Sql::both("UPDATE gatehouse_mfa_factors SET last_challenged_at = $2 WHERE id = $1");

const CHALLENGE: Sql = Sql::both(
    "SELECT ip, expires_at, verified_at FROM gatehouse_mfa_challenges WHERE id = $1 AND factor_id = $2",
);

/// Spends a live challenge once: the row comes back only to the first caller.
const SPEND_CHALLENGE: Sql = Sql::both(
    "UPDATE gatehouse_mfa_challenges SET verified_at = $2 \
     WHERE id = $1 AND verified_at IS NULL AND expires_at > $2 RETURNING id",
);

/// Spends a code's step (and verifies the factor): only a later step than the
/// last one accepted comes back, so two requests with one code cannot both pass.
const SPEND_STEP: Sql = Sql::both(
    "UPDATE gatehouse_mfa_factors SET last_step = $2, status = 'verified', updated_at = $3 \
     WHERE id = $1 AND (last_step IS NULL OR last_step < $2) RETURNING id",
);

const SESSION_ASSURANCE: Sql =
    Sql::both("SELECT aal, amr FROM gatehouse_sessions WHERE id = $1 AND user_id = $2");

const RAISE_SESSION: Sql = Sql::both(
    "UPDATE gatehouse_sessions SET aal = 'aal2', amr = $2, refreshed_at = $3 WHERE id = $1",
);

/// The session's refresh tokens, spent or not: none of them may name the
/// raised session's successor.
const DROP_SESSION_REFRESH: Sql =
    Sql::both("DELETE FROM gatehouse_refresh_tokens WHERE session_id = $1");

const END_WEAKER_SESSIONS: Sql = Sql::both(
    "DELETE FROM gatehouse_sessions WHERE user_id = $1 AND id <> $2 \
     AND (aal IS NULL OR aal <> 'aal2')",
);

const DROP_OTHER_ENROLMENTS: Sql = Sql::both(
    "DELETE FROM gatehouse_mfa_factors WHERE user_id = $1 AND id <> $2 AND status = 'unverified'",
);

const DELETE_FACTOR: Sql = Sql::both(concat!(
    "DELETE FROM gatehouse_mfa_factors WHERE id = $1 AND user_id = $2 RETURNING ",
    factor_columns!()
));

/// Once a user has no verified factor left, no session of theirs stands at `aal2`.
const LOWER_SESSIONS: Sql = Sql::both(
    "UPDATE gatehouse_sessions SET aal = 'aal1' WHERE user_id = $1 AND aal = 'aal2' \
     AND NOT EXISTS (SELECT 1 FROM gatehouse_mfa_factors WHERE user_id = $1 AND status = 'verified')",
);

const EXPIRED_CHALLENGES: Sql =
    Sql::both("DELETE FROM gatehouse_mfa_challenges WHERE expires_at < $1");

const STALE_ENROLMENTS: Sql =
    Sql::both("DELETE FROM gatehouse_mfa_factors WHERE status = 'unverified' AND created_at < $1");

const ANY_FACTOR: Sql = Sql::both("SELECT 1 FROM gatehouse_mfa_factors LIMIT 1");

/// Whether any user has a second factor: production refuses to start without
/// the key that opens them.
pub async fn any_factor(db: &gatehouse_db::Database) -> Result<bool> {
    Ok(!db
        .query(Statement::new(&ANY_FACTOR, vec![]))
        .await?
        .is_empty())
}

/// A friendly name or issuer as given: trimmed, empty as none, bounded.
fn label(text: Option<&str>, what: &str) -> Result<Option<String>> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if text.chars().count() > MOST_NAME_CHARS || text.chars().any(char::is_control) {
        return Err(AuthError::Validation(format!(
            "{what} must be at most {MOST_NAME_CHARS} printable characters"
        )));
    }
    Ok(Some(text.to_owned()))
}

impl Auth {
    /// Second factors can be enrolled and verified only with the operator's key.
    pub fn with_factor_key(mut self, key: Option<SealingKey>) -> Self {
        self.factor_key = key;
        self
    }

    pub fn second_factors_enabled(&self) -> bool {
        self.factor_key.is_some()
    }

    pub(crate) async fn factors_of(&self, user_id: &str) -> Result<Vec<Factor>> {
        let rows = self
            .db
            .query(Statement::new(&FACTORS_OF, vec![user_id.into()]))
            .await?;
        rows.iter().map(|row| Factor::from_row(row, 0)).collect()
    }

    /// The factors of each user on one page of the admin list, by user id.
    pub(crate) async fn factors_of_page(
        &self,
        (limit, offset): (Value, Value),
    ) -> Result<Vec<(String, Factor)>> {
        let rows = self
            .db
            .query(Statement::new(&FACTORS_OF_PAGE, vec![limit, offset]))
            .await?;
        rows.iter()
            .map(|row| Ok((row.text(0)?.to_owned(), Factor::from_row(row, 1)?)))
            .collect()
    }

    /// `POST /factors` with `factor_type: "totp"`: a new, unverified factor.
    /// A user who already has a verified factor must be at `aal2` to add one,
    /// or a stolen first factor could enrol the thief's own second.
    pub async fn enrol_totp(
        &self,
        claims: &VerifiedClaims,
        friendly_name: Option<&str>,
        issuer: Option<&str>,
    ) -> Result<Enrolled> {
        let key = self
            .factor_key
            .as_ref()
            .ok_or(AuthError::MfaDisabled("mfa_totp_enroll_not_enabled"))?;
        let user = self.current_user(claims).await?;
        if user.is_anonymous {
            return Err(AuthError::AnonymousNotAllowed);
        }
        let friendly_name = label(friendly_name, "friendly_name")?;
        let issuer = match label(issuer, "issuer")? {
            Some(issuer) => issuer,
            None => url::Url::parse(&self.settings.site_url)
                .ok()
                .and_then(|url| url.host_str().map(str::to_owned))
                .unwrap_or_else(|| "Gatehouse".into()),
        };
        let at = now();
        self.db
            .transaction(vec![Statement::new(
                &DROP_STALE_ENROLMENTS,
                vec![
                    user.id.clone().into(),
                    timestamp(at - UNVERIFIED_KEPT).into(),
                ],
            )])
            .await?;
        let factors = self.factors_of(&user.id).await?;
        if let Some(name) = &friendly_name
            && factors
                .iter()
                .any(|f| f.friendly_name.as_ref() == Some(name))
        {
            return Err(AuthError::FactorNameConflict(name.clone()));
        }
        if factors.len() >= MOST_FACTORS {
            return Err(AuthError::TooManyFactors);
        }
        if factors.iter().any(Factor::is_verified)
            && claims.claim_text("aal").as_deref() != Some("aal2")
        {
            return Err(AuthError::EnrolNeedsAal2);
        }
        let secret = FactorSecret::generate()?;
        let id = uuid::Uuid::new_v4().to_string();
        let sealed = key.seal(secret.as_bytes(), &id)?;
        let created = timestamp(at);
        let inserted = self
            .db
            .transaction(vec![Statement::new(
                &INSERT_FACTOR,
                vec![
                    id.clone().into(),
                    user.id.clone().into(),
                    friendly_name.clone().map_or(Value::Null, Value::Text),
                    sealed.into(),
                    created.clone().into(),
                ],
            )])
            .await;
        match inserted {
            Err(error) if error.constraint() == Some(gatehouse_db::Constraint::Unique) => {
                return Err(AuthError::FactorNameConflict(
                    friendly_name.unwrap_or_default(),
                ));
            }
            other => other?,
        };
        let account = user.email.clone().unwrap_or_else(|| user.id.clone());
        let uri = secret.uri(&issuer, &account);
        let qr_code = totp::qr_code(&uri)
            .ok_or_else(|| AuthError::Internal("the QR code could not be made".into()))?;
        Ok(Enrolled {
            factor: Factor {
                id,
                friendly_name,
                factor_type: "totp".into(),
                status: "unverified".into(),
                created_at: created.clone(),
                updated_at: created,
                last_challenged_at: None,
            },
            secret: secret.base32(),
            uri,
            qr_code,
        })
    }

    /// The caller's own factor, with its sealed secret and last accepted step.
    async fn owned_factor(
        &self,
        user_id: &str,
        factor_id: &str,
    ) -> Result<(Factor, String, Option<u64>)> {
        let rows = self
            .db
            .query(Statement::new(
                &OWNED_FACTOR,
                vec![factor_id.into(), user_id.into()],
            ))
            .await?;
        let row = rows.first().ok_or(AuthError::FactorNotFound)?;
        let factor = Factor::from_row(row, 0)?;
        let sealed = row.text(7)?.to_owned();
        let last_step = match row.0.get(8) {
            Some(Value::Integer(step)) => u64::try_from(*step).ok(),
            _ => None,
        };
        Ok((factor, sealed, last_step))
    }

    /// `POST /factors/{id}/challenge`: a challenge only `client`'s address can answer.
    pub async fn challenge_factor(
        &self,
        claims: &VerifiedClaims,
        factor_id: &str,
        client: &Client,
    ) -> Result<Challenge> {
        let user = self.current_user(claims).await?;
        self.owned_factor(&user.id, factor_id).await?;
        let at = now();
        let expires = at + CHALLENGE_LIFETIME;
        let id = uuid::Uuid::new_v4().to_string();
        self.db
            .transaction(vec![
                Statement::new(
                    &INSERT_CHALLENGE,
                    vec![
                        id.clone().into(),
                        factor_id.into(),
                        client.ip.clone().map_or(Value::Null, Value::Text),
                        timestamp(at).into(),
                        timestamp(expires).into(),
                    ],
                ),
                Statement::new(&CHALLENGED, vec![factor_id.into(), timestamp(at).into()]),
            ])
            .await?;
        Ok(Challenge {
            id,
            expires_at: expires.unix_timestamp(),
        })
    }

    /// `POST /factors/{id}/verify`: a right code for a live challenge raises the
    /// caller's session to `aal2` (and verifies a new factor).
    pub async fn verify_factor(
        &self,
        keys: &gatehouse_keys::KeySet,
        claims: &VerifiedClaims,
        (factor_id, challenge_id, code): (&str, &str, &str),
        client: &Client,
    ) -> Result<Session> {
        let key = self
            .factor_key
            .as_ref()
            .ok_or(AuthError::MfaDisabled("mfa_totp_verify_not_enabled"))?;
        let user = self.current_user(claims).await?;
        let (_, sealed, last_step) = self.owned_factor(&user.id, factor_id).await?;
        let counter = throttle::factor_counter(factor_id, self.throttle.settings());
        let _turn = self.throttle.begin(&[&counter]).await?;
        self.live_challenge(factor_id, challenge_id, client).await?;
        let secret = FactorSecret::from_bytes(key.open(&sealed, factor_id)?);
        let at = now();
        let unix = u64::try_from(at.unix_timestamp()).unwrap_or_default();
        let accepted = match secret.verify(code.trim(), unix, last_step) {
            Some(step) => {
                self.raise_session(claims, &user.id, (factor_id, challenge_id), step)
                    .await?
            }
            None => None,
        };
        let Some((session_id, assurance, refresh_token)) = accepted else {
            if let Some(lock) = self.throttle.failed(&[&counter]).await? {
                return Err(AuthError::Locked(lock));
            }
            return Err(AuthError::FactorCodeInvalid);
        };
        self.throttle.succeeded(&counter).await?;
        let user = self.user(&user.id).await?;
        self.session(keys, user, (&session_id, assurance), refresh_token)
    }

    /// The challenge exists for this factor, was asked for from this address,
    /// is unspent and has not expired.
    async fn live_challenge(
        &self,
        factor_id: &str,
        challenge_id: &str,
        client: &Client,
    ) -> Result<()> {
        let rows = self
            .db
            .query(Statement::new(
                &CHALLENGE,
                vec![challenge_id.into(), factor_id.into()],
            ))
            .await?;
        let row = rows.first().ok_or(AuthError::ChallengeNotFound)?;
        if row.optional_text(2)?.is_some() || row.optional_text(0)? != client.ip.as_deref() {
            return Err(AuthError::ChallengeMismatch);
        }
        if row.text(1)? <= timestamp(now()).as_str() {
            return Err(AuthError::ChallengeExpired);
        }
        Ok(())
    }

    /// Spends the challenge and the code's step and raises the session, all or
    /// nothing; `None` when another request spent either first.
    async fn raise_session(
        &self,
        claims: &VerifiedClaims,
        user_id: &str,
        (factor_id, challenge_id): (&str, &str),
        step: u64,
    ) -> Result<Option<(String, Assurance, String)>> {
        let session_id = claims
            .claim_text("session_id")
            .ok_or(AuthError::SessionNotFound)?;
        let rows = self
            .db
            .query(Statement::new(
                &SESSION_ASSURANCE,
                vec![session_id.clone().into(), user_id.into()],
            ))
            .await?;
        let row = rows.first().ok_or(AuthError::SessionNotFound)?;
        let at = now();
        // The newest method first, as GoTrue lists them; one totp entry.
        let mut amr = vec![json!({"method": "totp", "timestamp": at.unix_timestamp()})];
        if let Some(Json::Array(earlier)) = row
            .optional_text(1)?
            .and_then(|amr| serde_json::from_str(amr).ok())
        {
            amr.extend(earlier.into_iter().filter(|m| m["method"] != "totp"));
        }
        let assurance = Assurance {
            aal: "aal2".into(),
            amr: Json::Array(amr),
        };
        let refresh_token = random_token()?;
        let stamp = timestamp(at);
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        let statements = vec![
            Statement::new(
                &SPEND_CHALLENGE,
                vec![challenge_id.into(), stamp.clone().into()],
            ),
            Statement::new(
                &SPEND_STEP,
                vec![factor_id.into(), Value::Integer(step), stamp.clone().into()],
            ),
            Statement::new(
                &RAISE_SESSION,
                vec![
                    session_id.clone().into(),
                    assurance.amr.to_string().into(),
                    stamp.clone().into(),
                ],
            ),
            Statement::new(&DROP_SESSION_REFRESH, vec![session_id.clone().into()]),
            Statement::new(
                &store::INSERT_REFRESH,
                vec![
                    token_hash(&refresh_token).into(),
                    session_id.clone().into(),
                    stamp.into(),
                ],
            ),
            Statement::new(
                &END_WEAKER_SESSIONS,
                vec![user_id.into(), session_id.clone().into()],
            ),
            Statement::new(
                &DROP_OTHER_ENROLMENTS,
                vec![user_id.into(), factor_id.into()],
            ),
        ];
        let committed = self
            .end_sessions_if(statements, |rows| {
                rows.len() > 1 && !rows[0].is_empty() && !rows[1].is_empty()
            })
            .await?;
        Ok(committed.map(|_| (session_id, assurance, refresh_token)))
    }

    /// `DELETE /factors/{id}`: a verified factor goes only from an `aal2`
    /// session, so a stolen password alone cannot remove the second factor.
    pub async fn unenrol_factor(&self, claims: &VerifiedClaims, factor_id: &str) -> Result<Factor> {
        let user = self.current_user(claims).await?;
        let (factor, ..) = self.owned_factor(&user.id, factor_id).await?;
        if factor.is_verified() && claims.claim_text("aal").as_deref() != Some("aal2") {
            return Err(AuthError::UnenrolNeedsAal2);
        }
        self.remove_factor(&user.id, factor_id).await
    }

    /// `DELETE /admin/users/{id}/factors/{factor_id}` (the secret key).
    pub async fn admin_delete_factor(&self, user_id: &str, factor_id: &str) -> Result<Factor> {
        self.remove_factor(user_id, factor_id).await
    }

    pub async fn admin_factors(&self, user_id: &str) -> Result<Vec<Factor>> {
        self.user(user_id).await?;
        self.factors_of(user_id).await
    }

    async fn remove_factor(&self, user_id: &str, factor_id: &str) -> Result<Factor> {
        let rows = self
            .end_sessions(vec![
                Statement::new(&DELETE_FACTOR, vec![factor_id.into(), user_id.into()]),
                Statement::new(&LOWER_SESSIONS, vec![user_id.into()]),
            ])
            .await?;
        let row = rows
            .first()
            .and_then(|rows| rows.first())
            .ok_or(AuthError::FactorNotFound)?;
        Factor::from_row(row, 0)
    }

    /// Drops challenges a day past their end and enrolments never verified.
    pub(crate) fn prune_factors(&self) -> Vec<Statement> {
        let at = now();
        vec![
            Statement::new(
                &EXPIRED_CHALLENGES,
                vec![timestamp(at - crate::EXPIRED_KEPT).into()],
            ),
            Statement::new(
                &STALE_ENROLMENTS,
                vec![timestamp(at - UNVERIFIED_KEPT).into()],
            ),
        ]
    }
}

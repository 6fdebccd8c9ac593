//! One-time links and codes: confirmation, recovery and magic links, email
//! changes and reauthentication. The link carries a random token and the email a
//! 6-digit code; only their SHA-256 is stored. Each is spent once, expires, and is
//! written with its email in one transaction through the outbox. Wrong codes are
//! counted per address like failed passwords: after a handful every live code to
//! that address is disabled and its codes lock for a while.

use gatehouse_db::Statement;
use serde_json::Value as Json;
use time::OffsetDateTime;

use crate::email::{Part, Purpose, compose, message};
use crate::{
    Auth, AuthError, Changes, Client, Result, Session, normalise_email, now, random_token, store,
    timestamp, token_hash,
};

/// What a one-time token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Signup,
    Recovery,
    MagicLink,
    /// Sent to both addresses of an email change; the change happens once both
    /// are verified (the new one alone when the account had no address).
    EmailChange,
    /// Sent to the current address with an email change: stops it.
    EmailChangeCancel,
    /// A code for `PUT /user` (`nonce`), proving the mailbox before a
    /// sensitive change.
    Reauthentication,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Signup => "signup",
            Kind::Recovery => "recovery",
            Kind::MagicLink => "magiclink",
            Kind::EmailChange => "email_change",
            Kind::EmailChangeCancel => "email_change_cancel",
            Kind::Reauthentication => "reauthentication",
        }
    }

    fn purpose(self) -> Purpose {
        match self {
            Kind::Signup => Purpose::Confirm,
            Kind::Recovery => Purpose::Recover,
            Kind::MagicLink => Purpose::MagicLink,
            Kind::EmailChange | Kind::EmailChangeCancel | Kind::Reauthentication => {
                Purpose::ChangeEmail
            }
        }
    }

    /// The stored kinds a token or code of this verification type may spend
    /// (`email` covers sign-up and magic links, as in Supabase).
    fn stored_kinds(self) -> [&'static str; 2] {
        match self {
            Kind::Signup | Kind::MagicLink => ["signup", "magiclink"],
            other => [other.name(), other.name()],
        }
    }

    /// Whether its email carries a code. The link that stops an email change
    /// does not: a six-digit guess must not sign an account out everywhere.
    fn has_code(self) -> bool {
        self != Kind::EmailChangeCancel
    }
}

/// Which address of an email change a verification came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Current,
    New,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Current => "current",
            Side::New => "new",
        }
    }
}

/// What a verification did.
pub enum Verified {
    /// Signed in: a confirmation, magic link, recovery, or a completed email
    /// change (`Some` side that completed it).
    SignedIn {
        session: Box<Session>,
        redirect_to: String,
        email_change: Option<Side>,
    },
    /// One address of an email change confirmed; the other must confirm too.
    EmailChangePending {
        user_id: String,
        side: Side,
        redirect_to: String,
    },
    /// The current address stopped an email change.
    EmailChangeCancelled {
        user_id: String,
        redirect_to: String,
    },
}

pub(crate) struct NewLink {
    statement: Statement,
    url: String,
    token: String,
    code: String,
}

/// What `generate_link` hands the admin instead of sending an email.
pub struct GeneratedLink {
    pub user: crate::User,
    pub action_link: String,
    pub email_otp: String,
    pub hashed_token: String,
    pub redirect_to: String,
    pub kind: Kind,
}

/// How a verification names its token.
pub enum Proof<'a> {
    /// The token from the link (`token_hash` in Supabase's API), for one kind.
    Link { token: &'a str, kind: Kind },
    /// The 6-digit code from the email to `email`, for a verification type
    /// (`Signup` or `MagicLink` for Supabase's `type=email`).
    Code {
        email: &'a str,
        code: &'a str,
        kind: Kind,
    },
}

fn six_digits() -> Result<String> {
    let mut bytes = [0u8; 4];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| AuthError::Internal("random generator failed".into()))?;
    Ok(format!("{:06}", u32::from_le_bytes(bytes) % 1_000_000))
}

/// Whether `url` lies at or below the allowed URL `allowed`.
fn within(url: &url::Url, allowed: &str) -> bool {
    let Ok(allowed) = url::Url::parse(allowed) else {
        return false;
    };
    let base = allowed.path().trim_end_matches('/');
    url.scheme() == allowed.scheme()
        && url.host() == allowed.host()
        && url.port_or_known_default() == allowed.port_or_known_default()
        && url.username().is_empty()
        && url.password().is_none()
        && (url.path() == base
            || url
                .path()
                .strip_prefix(base)
                .is_some_and(|rest| rest.starts_with('/')))
}

fn code_hash(email: &str, code: &str) -> String {
    token_hash(&format!("{email}:{code}"))
}

impl Auth {
    /// The redirect a link may lead to: the site URL or an allow-listed URL, or
    /// a URL below one of them (same scheme, host and port, path under theirs).
    /// Checked when the link is asked for, so a link is never made that cannot be
    /// followed; returned as parsed, so what was checked is what is sent.
    pub fn redirect(&self, requested: Option<&str>) -> Result<String> {
        let site = self.settings.site_url.clone();
        let Some(requested) = requested.filter(|r| !r.is_empty()) else {
            return Ok(site);
        };
        let refused = || AuthError::Validation("redirect_to is not an allowed redirect URL".into());
        if requested
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(refused());
        }
        let url = url::Url::parse(requested).map_err(|_| refused())?;
        let allowed = std::iter::once(&site)
            .chain(&self.settings.redirect_urls)
            .any(|allowed| within(&url, allowed));
        if allowed {
            Ok(url.into())
        } else {
            Err(refused())
        }
    }

    /// The statements that create a link for `user` and queue its email.
    pub(crate) fn link_statements(
        &self,
        user_id: &str,
        email: &str,
        kind: Kind,
        redirect_to: &str,
    ) -> Result<Vec<Statement>> {
        let link = self.new_link(user_id, email, kind, redirect_to)?;
        Ok(vec![
            link.statement,
            crate::email::queued(&message(kind.purpose(), email, &link.url, &link.code)),
        ])
    }

    /// A link and code for `user`, and the statement that stores their hashes.
    pub(crate) fn new_link(
        &self,
        user_id: &str,
        email: &str,
        kind: Kind,
        redirect_to: &str,
    ) -> Result<NewLink> {
        let token = random_token()?;
        let code = six_digits()?;
        let created = now();
        let expires = created + self.settings.link_lifetime;
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", &token)
            .append_pair("type", kind.name())
            .append_pair("redirect_to", redirect_to)
            .finish();
        let api = self.issuer.as_str();
        let link = format!("{api}/verify?{query}");
        let insert = Statement::new(
            &store::INSERT_ONE_TIME,
            vec![
                token_hash(&token).into(),
                code_hash(email, &code).into(),
                user_id.into(),
                kind.name().into(),
                email.into(),
                redirect_to.into(),
                timestamp(created).into(),
                timestamp(expires).into(),
            ],
        );
        Ok(NewLink {
            statement: insert,
            url: link,
            token,
            code,
        })
    }

    pub(crate) async fn send(&self, statements: Vec<Statement>) -> Result<()> {
        self.db.transaction(statements).await?;
        self.wake.notify_waiters();
        Ok(())
    }

    /// `POST /recover`: a recovery link and code if the account exists. The
    /// answer is the same either way.
    pub async fn recover(&self, email: &str, redirect_to: Option<&str>) -> Result<()> {
        let redirect_to = self.redirect(redirect_to)?;
        let email = normalise_email(email)?;
        if let Some((user, _)) = self.user_where(&store::USER_BY_EMAIL, &email).await? {
            self.send(self.link_statements(&user.id, &email, Kind::Recovery, &redirect_to)?)
                .await?;
        }
        Ok(())
    }

    /// `POST /otp`: a magic link and code; creates the user first when asked and
    /// sign-ups are open. The answer does not say whether the account existed.
    pub async fn send_magic_link(
        &self,
        email: &str,
        create_user: bool,
        data: Option<Json>,
        redirect_to: Option<&str>,
    ) -> Result<()> {
        let redirect_to = self.redirect(redirect_to)?;
        let email = normalise_email(email)?;
        let user = match self.user_where(&store::USER_BY_EMAIL, &email).await? {
            Some((user, _)) => user,
            None if create_user && self.settings.signups => {
                let changes = Changes {
                    user_metadata: data,
                    ..Changes::default()
                };
                match self
                    .insert_user(Some(email.clone()), None, &changes, false, |_| {
                        Ok(Vec::new())
                    })
                    .await
                {
                    Ok(user) => user,
                    // Created by a concurrent request: carry on with it.
                    Err(AuthError::UserAlreadyExists) => {
                        self.user_where(&store::USER_BY_EMAIL, &email)
                            .await?
                            .ok_or(AuthError::UserNotFound)?
                            .0
                    }
                    Err(error) => return Err(error),
                }
            }
            None => return Ok(()),
        };
        self.send(self.link_statements(&user.id, &email, Kind::MagicLink, &redirect_to)?)
            .await
    }

    /// `POST /verify` and `GET /verify`: spends the token or code and does what
    /// it was for. A failure of ours after the spend gives the token back.
    pub async fn verify(
        &self,
        keys: &gatehouse_keys::KeySet,
        proof: Proof<'_>,
        client: &Client,
    ) -> Result<Verified> {
        let at = timestamp(now());
        let row = match &proof {
            Proof::Link { token, kind } => {
                let [first, second] = kind.stored_kinds();
                self.spend(Statement::new(
                    &store::SPEND_LINK,
                    vec![
                        token_hash(token).into(),
                        at.clone().into(),
                        first.into(),
                        second.into(),
                    ],
                ))
                .await?
            }
            Proof::Code { kind, .. } if !kind.has_code() => None,
            Proof::Code { email, code, kind } => {
                let email = normalise_email(email)?;
                self.spend_code(&email, code, kind.stored_kinds()).await?
            }
        }
        .ok_or(AuthError::OtpInvalid)?;
        let spent = Spent {
            user_id: row.text(0)?.to_owned(),
            kind: row.text(1)?.to_owned(),
            redirect_to: row
                .optional_text(2)?
                .map_or_else(|| self.settings.site_url.clone(), str::to_owned),
            email: row.text(3)?.to_owned(),
        };
        let token = row.text(4)?.to_owned();
        match self.act_on(keys, spent, client).await {
            Err(error @ (AuthError::Database(_) | AuthError::Internal(_))) => {
                let give_back = Statement::new(&store::UNSPEND_ONE_TIME, vec![token.into()]);
                if let Err(undo) = self.db.transaction(vec![give_back]).await {
                    tracing::error!(%undo, "could not give back a token after a failure");
                }
                Err(error)
            }
            outcome => outcome,
        }
    }

    async fn spend(&self, statement: Statement) -> Result<Option<gatehouse_db::Row>> {
        let mut spent = self.db.transaction(vec![statement]).await?;
        Ok(spent.pop().and_then(|mut rows| rows.pop()))
    }

    /// Spends the newest live code of one of `kinds` sent to `email`, counting a
    /// wrong one; the wrong one that reaches the count disables every live code
    /// to the address and locks it.
    async fn spend_code(
        &self,
        email: &str,
        code: &str,
        [first, second]: [&str; 2],
    ) -> Result<Option<gatehouse_db::Row>> {
        let statement = Statement::new(
            &store::SPEND_CODE,
            vec![
                email.into(),
                code_hash(email, code.trim()).into(),
                timestamp(now()).into(),
                first.into(),
                second.into(),
            ],
        );
        let counter = crate::throttle::code_counter(email, self.throttle.settings());
        let _turns = self.throttle.begin(&[&counter]).await?;
        if let Some(row) = self.spend(statement).await? {
            self.throttle.succeeded(&counter).await?;
            return Ok(Some(row));
        }
        if let Some(lock) = self.throttle.failed(&[&counter]).await? {
            self.db
                .transaction(vec![Statement::new(
                    &store::DISABLE_CODES_TO,
                    vec![email.into()],
                )])
                .await?;
            return Err(AuthError::Locked(lock));
        }
        Ok(None)
    }

    async fn act_on(
        &self,
        keys: &gatehouse_keys::KeySet,
        spent: Spent,
        client: &Client,
    ) -> Result<Verified> {
        if spent.kind == Kind::EmailChangeCancel.name() {
            self.cancel_email_change(&spent.user_id).await?;
            return Ok(Verified::EmailChangeCancelled {
                user_id: spent.user_id,
                redirect_to: spent.redirect_to,
            });
        }
        let mut email_change = None;
        if spent.kind == Kind::EmailChange.name() {
            let (side, complete) = self
                .confirm_email_change(&spent.user_id, &spent.email)
                .await?;
            if !complete {
                return Ok(Verified::EmailChangePending {
                    user_id: spent.user_id,
                    side,
                    redirect_to: spent.redirect_to,
                });
            }
            email_change = Some(side);
        }
        self.db
            .transaction(vec![Statement::new(
                &store::CONFIRM_EMAIL,
                vec![spent.user_id.clone().into(), timestamp(now()).into()],
            )])
            .await?;
        let user = self.user(&spent.user_id).await?;
        if user.is_banned(&timestamp(now())) {
            return Err(AuthError::UserBanned);
        }
        let method = match spent.kind.as_str() {
            "signup" => "otp",
            other => other,
        };
        let session = self.start_session(keys, user, method, client).await?;
        Ok(Verified::SignedIn {
            session: Box::new(session),
            redirect_to: spent.redirect_to,
            email_change,
        })
    }
}

/// A spent link or code: whose, what for, where to go after, and the address it
/// was sent to.
struct Spent {
    user_id: String,
    kind: String,
    redirect_to: String,
    email: String,
}

/// Whether the access token came from a recovery, magic link or code sign-in in
/// the last 15 minutes: such a session may set a password without the old one.
pub fn recently_verified(claims: &gatehouse_keys::VerifiedClaims) -> bool {
    let Some(amr) = claims.claim_text("amr") else {
        return false;
    };
    let Ok(Json::Array(methods)) = serde_json::from_str::<Json>(&amr) else {
        return false;
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    methods.iter().any(|entry| {
        let method = entry["method"].as_str().unwrap_or_default();
        let at = entry["timestamp"].as_i64().unwrap_or(0);
        matches!(method, "recovery" | "magiclink" | "otp") && now - at < 15 * 60
    })
}

impl Auth {
    /// Spends the user's earlier email-change links and records a change to
    /// `new_email`, pending from `at`: a newer request replaces an older one.
    fn pending_email_change(
        &self,
        user_id: &str,
        new_email: &str,
        at: OffsetDateTime,
    ) -> [Statement; 2] {
        [
            Statement::new(
                &store::SPEND_EMAIL_CHANGE_LINKS,
                vec![user_id.into(), timestamp(at).into()],
            ),
            Statement::new(
                &store::REQUEST_EMAIL_CHANGE,
                vec![
                    user_id.into(),
                    new_email.into(),
                    timestamp(at).into(),
                    timestamp(at + self.settings.link_lifetime).into(),
                ],
            ),
        ]
    }

    /// `PUT /user` with a new email (the caller re-authenticated already). The
    /// current address gets a link and code to confirm and a link to stop it; the
    /// new one a link and code, or, when another account has it, a notice instead
    /// (the caller's answer is the same either way, so it reveals no accounts).
    /// The change happens once both confirm; an account without an address needs
    /// only the new one.
    pub(crate) async fn request_email_change(
        &self,
        user: &crate::User,
        new_email: &str,
        redirect_to: Option<&str>,
    ) -> Result<()> {
        let redirect_to = self.redirect(redirect_to)?;
        let email = normalise_email(new_email)?;
        if user.email.as_deref() == Some(email.as_str()) {
            return Ok(());
        }
        let mut statements = Vec::from(self.pending_email_change(&user.id, &email, now()));
        if let Some(current) = &user.email {
            let confirm = self.new_link(&user.id, current, Kind::EmailChange, &redirect_to)?;
            let cancel = self.new_link(&user.id, current, Kind::EmailChangeCancel, &redirect_to)?;
            let lead = format!(
                "Someone asked to change the email of your account from this address to {email}. \
                 It happens only once both addresses confirm."
            );
            let mail = compose(
                current,
                "Confirm the change of your email",
                &[
                    Part::Text(&lead),
                    Part::Link {
                        url: &confirm.url,
                        label: "Confirm the change",
                    },
                    Part::Code(&confirm.code),
                    Part::Text(
                        "If this was not you, stop it now; this also signs the account out everywhere:",
                    ),
                    Part::Link {
                        url: &cancel.url,
                        label: "Stop the change",
                    },
                ],
            );
            statements.extend([
                confirm.statement,
                cancel.statement,
                crate::email::queued(&mail),
            ]);
        }
        let taken = self
            .user_where(&store::USER_BY_EMAIL, &email)
            .await?
            .is_some();
        if taken {
            let notice = compose(
                &email,
                "Someone tried to use your email address",
                &[
                    Part::Text(
                        "Someone asked to move another account to this address, which already \
                         belongs to your account. Nothing changed.",
                    ),
                    Part::Text("If it was you, sign in to your existing account instead."),
                ],
            );
            statements.push(crate::email::queued(&notice));
        } else {
            statements.extend(self.link_statements(
                &user.id,
                &email,
                Kind::EmailChange,
                &redirect_to,
            )?);
        }
        self.send(statements).await
    }

    /// Marks the side of `user_id`'s email change that `address` stands for;
    /// returns the side and whether the change is complete (then made: the
    /// account moves, its sessions end, the change's links are spent).
    async fn confirm_email_change(&self, user_id: &str, address: &str) -> Result<(Side, bool)> {
        let at = timestamp(now());
        let user = self.user(user_id).await?;
        let (side, statement) = if user.email.as_deref() == Some(address) {
            (
                Side::Current,
                Statement::new(
                    &store::CONFIRM_CURRENT_SIDE,
                    vec![user_id.into(), at.clone().into()],
                ),
            )
        } else {
            (
                Side::New,
                Statement::new(
                    &store::CONFIRM_NEW_SIDE,
                    vec![user_id.into(), at.clone().into(), address.into()],
                ),
            )
        };
        let row = self.spend(statement).await?.ok_or(AuthError::OtpInvalid)?;
        let new_email = row.text(0)?.to_owned();
        let both = row.optional_text(1)?.is_some() && row.optional_text(2)?.is_some();
        let complete = both || (user.email.is_none() && side == Side::New);
        if !complete {
            return Ok((side, false));
        }
        let changes = Changes {
            email: Some(new_email),
            email_confirmed: Some(true),
            ..Changes::default()
        };
        // The move and the end of the change and of every session commit together.
        self.apply_with(user_id, changes, closing_email_change(user_id))
            .await
            .map_err(|error| match error {
                // The address was taken meanwhile.
                AuthError::UserAlreadyExists => AuthError::OtpInvalid,
                other => other,
            })?;
        Ok((side, true))
    }

    /// Stops `user_id`'s email change and signs the account out everywhere: the
    /// request came from someone holding one of its sessions.
    async fn cancel_email_change(&self, user_id: &str) -> Result<()> {
        self.end_sessions(closing_email_change(user_id)).await?;
        Ok(())
    }

    /// `GET /reauthenticate`: a code to the signed-in user's address, to send as
    /// `nonce` with a password or email change.
    pub async fn reauthenticate(&self, claims: &gatehouse_keys::VerifiedClaims) -> Result<()> {
        let user = self.current_user(claims).await?;
        let email = user.email.clone().ok_or_else(|| {
            AuthError::Validation("the account has no email to send a code to".into())
        })?;
        let site = self.settings.site_url.clone();
        let link = self.new_link(&user.id, &email, Kind::Reauthentication, &site)?;
        let mail = compose(
            &email,
            "Your verification code",
            &[
                Part::Text("Enter this code to confirm a change to your account."),
                Part::Code(&link.code),
                Part::Text(
                    "If you did not ask for this, someone may have access to your account: \
                     change your password.",
                ),
            ],
        );
        self.send(vec![link.statement, crate::email::queued(&mail)])
            .await
    }

    /// Spends a reauthentication code of `user`, counted like any emailed code.
    pub(crate) async fn spend_nonce(&self, user: &crate::User, nonce: &str) -> Result<()> {
        let email = user
            .email
            .as_deref()
            .ok_or(AuthError::ReauthenticationInvalid)?;
        let kinds = Kind::Reauthentication.stored_kinds();
        match self.spend_code(email, nonce, kinds).await? {
            Some(row) if row.text(0)? == user.id => Ok(()),
            _ => Err(AuthError::ReauthenticationInvalid),
        }
    }

    /// `POST /admin/generate_link`: the link and code an email would carry,
    /// returned instead of sent. A sign-up link creates the user first.
    pub async fn generate_link(
        &self,
        kind: Kind,
        email: &str,
        password: Option<&str>,
        new_email: Option<&str>,
        redirect_to: Option<&str>,
    ) -> Result<GeneratedLink> {
        let redirect_to = self.redirect(redirect_to)?;
        let email = normalise_email(email)?;
        let existing = self
            .user_where(&store::USER_BY_EMAIL, &email)
            .await?
            .map(|(user, _)| user);
        let user = match (kind, existing) {
            (_, Some(user)) => user,
            (Kind::Signup, None) => {
                if let Some(password) = password {
                    self.check_password(password)?;
                }
                self.insert_user(
                    Some(email.clone()),
                    password,
                    &Changes::default(),
                    false,
                    |_| Ok(Vec::new()),
                )
                .await?
            }
            (_, None) => return Err(AuthError::UserNotFound),
        };
        let target = match kind {
            Kind::EmailChange => normalise_email(
                new_email
                    .ok_or_else(|| AuthError::Validation("email_change needs new_email".into()))?,
            )?,
            _ => email,
        };
        let link = self.new_link(&user.id, &target, kind, &redirect_to)?;
        let mut statements = Vec::new();
        if kind == Kind::EmailChange {
            // The secret key vouches for the current address: the new one's link
            // completes the change.
            let at = now();
            statements.extend(self.pending_email_change(&user.id, &target, at));
            statements.push(Statement::new(
                &store::CONFIRM_CURRENT_SIDE,
                vec![user.id.clone().into(), timestamp(at).into()],
            ));
        }
        // After the earlier links are spent, so this one stays live.
        statements.push(link.statement);
        self.db.transaction(statements).await?;
        Ok(GeneratedLink {
            user,
            action_link: link.url,
            email_otp: link.code,
            hashed_token: link.token,
            redirect_to,
            kind,
        })
    }
}

/// What ends `user_id`'s email change, made or stopped: its record and its
/// links go, and so does every session of the account.
fn closing_email_change(user_id: &str) -> Vec<Statement> {
    vec![
        Statement::new(&store::DELETE_EMAIL_CHANGE, vec![user_id.into()]),
        Statement::new(
            &store::SPEND_EMAIL_CHANGE_LINKS,
            vec![user_id.into(), timestamp(now()).into()],
        ),
        Statement::new(&store::DELETE_USER_SESSIONS, vec![user_id.into()]),
    ]
}

#[cfg(test)]
mod tests {
    use super::Kind;

    #[test]
    fn only_the_stop_link_has_no_code() {
        for kind in [
            Kind::Signup,
            Kind::Recovery,
            Kind::MagicLink,
            Kind::EmailChange,
            Kind::Reauthentication,
        ] {
            assert!(kind.has_code(), "{kind:?}");
        }
        assert!(!Kind::EmailChangeCancel.has_code());
    }
}

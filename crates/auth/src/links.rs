//! One-time links and codes: confirmation, recovery and magic links. The link
//! carries a random token and the email a 6-digit code; only their SHA-256 is
//! stored. Each is spent once, expires, and is written with its email in one
//! transaction through the outbox.

use gatehouse_db::{Statement, Value};
use serde_json::Value as Json;
use time::OffsetDateTime;

use crate::email::{Purpose, message};
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
    /// Sent to the new address; verifying it moves the account there.
    EmailChange,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Signup => "signup",
            Kind::Recovery => "recovery",
            Kind::MagicLink => "magiclink",
            Kind::EmailChange => "email_change",
        }
    }

    fn purpose(self) -> Purpose {
        match self {
            Kind::Signup => Purpose::Confirm,
            Kind::Recovery => Purpose::Recover,
            Kind::MagicLink => Purpose::MagicLink,
            Kind::EmailChange => Purpose::ChangeEmail,
        }
    }
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
    /// The 6-digit code from the email (`type=email`), for sign-up or magic link;
    /// or a recovery code.
    Code {
        email: &'a str,
        code: &'a str,
        recovery: bool,
    },
}

fn six_digits() -> Result<String> {
    let mut bytes = [0u8; 4];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| AuthError::Internal("random generator failed".into()))?;
    Ok(format!("{:06}", u32::from_le_bytes(bytes) % 1_000_000))
}

fn code_hash(email: &str, code: &str) -> String {
    token_hash(&format!("{email}:{code}"))
}

impl Auth {
    /// The redirect a link may lead to: the site URL, or an allow-listed one.
    pub fn redirect(&self, requested: Option<&str>) -> Result<String> {
        let site = self.settings.site_url.clone();
        let Some(requested) = requested.filter(|r| !r.is_empty()) else {
            return Ok(site);
        };
        let allowed = requested == site
            || self.settings.redirect_urls.iter().any(|allowed| {
                requested == allowed
                    || requested.starts_with(&format!("{}/", allowed.trim_end_matches('/')))
            });
        if allowed {
            Ok(requested.to_owned())
        } else {
            Err(AuthError::Validation(
                "redirect_to is not an allowed redirect URL".into(),
            ))
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
            gatehouse_mail::enqueue(&message(kind.purpose(), email, &link.url, &link.code)),
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
        self.wake.notify_one();
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

    /// `POST /verify` and `GET /verify`: spends the token or code, confirms the
    /// email, and signs the user in. Returns the session and where to redirect.
    pub async fn verify(
        &self,
        keys: &gatehouse_keys::KeySet,
        proof: Proof<'_>,
        client: &Client,
    ) -> Result<(Session, String)> {
        let at = timestamp(now());
        let statement = match &proof {
            Proof::Link { token, kind } => Statement::new(
                &store::SPEND_LINK,
                vec![
                    token_hash(token).into(),
                    at.clone().into(),
                    kind.name().into(),
                ],
            ),
            Proof::Code {
                email,
                code,
                recovery,
            } => {
                let email = normalise_email(email)?;
                let kinds: [Value; 2] = if *recovery {
                    ["recovery".into(), "recovery".into()]
                } else {
                    ["signup".into(), "magiclink".into()]
                };
                let [first, second] = kinds;
                Statement::new(
                    &store::SPEND_CODE,
                    vec![
                        email.clone().into(),
                        code_hash(&email, code.trim()).into(),
                        at.clone().into(),
                        first,
                        second,
                    ],
                )
            }
        };
        let spent = self.db.transaction(vec![statement]).await?;
        let row = spent
            .first()
            .and_then(|rows| rows.first())
            .ok_or_else(|| AuthError::OtpInvalid)?;
        let user_id = row.text(0)?.to_owned();
        let kind = row.text(1)?.to_owned();
        let redirect_to = row
            .optional_text(2)?
            .map_or_else(|| self.settings.site_url.clone(), str::to_owned);
        if kind == Kind::EmailChange.name() {
            let changes = Changes {
                email: Some(row.text(3)?.to_owned()),
                email_confirmed: Some(true),
                ..Changes::default()
            };
            self.apply(&user_id, changes).await?;
        }
        self.db
            .transaction(vec![Statement::new(
                &store::CONFIRM_EMAIL,
                vec![user_id.clone().into(), at.into()],
            )])
            .await?;
        let user = self.user(&user_id).await?;
        if user.is_banned(&timestamp(now())) {
            return Err(AuthError::UserBanned);
        }
        let method = if kind == "signup" {
            "otp"
        } else {
            kind.as_str()
        };
        let session = self.start_session(keys, user, method, client).await?;
        Ok((session, redirect_to))
    }
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
    /// `PUT /user` with a new email: a confirmation link goes to the new address;
    /// the account moves there only when it is opened.
    pub async fn request_email_change(
        &self,
        user_id: &str,
        new_email: &str,
        redirect_to: Option<&str>,
    ) -> Result<()> {
        let redirect_to = self.redirect(redirect_to)?;
        let email = normalise_email(new_email)?;
        if self
            .user_where(&store::USER_BY_EMAIL, &email)
            .await?
            .is_some()
        {
            return Err(AuthError::UserAlreadyExists);
        }
        self.send(self.link_statements(user_id, &email, Kind::EmailChange, &redirect_to)?)
            .await
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
        self.db.transaction(vec![link.statement]).await?;
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

use gatehouse_keys::VerifiedClaims;
use gatehouse_policy::Role;

use crate::RestError;

/// Who is asking. Built only from verified material: the secret API key for
/// [`Caller::Service`], a verified access token for [`Caller::User`], a signed
/// URL (HMAC under the server's key) for [`Caller::Delegated`].
#[derive(Debug, Clone)]
pub enum Caller {
    Anon,
    User(VerifiedClaims),
    /// The secret key: bypasses row policies and column grants.
    Service,
    /// A signed user's role and id carried by a signed URL, without the rest of
    /// their token: `auth.jwt() ->> …` reads NULL, which policies fail safe on.
    Delegated {
        role: Role,
        user_id: Option<String>,
    },
}

impl Caller {
    /// The policy role, or `None` for the service role, which policies do not bind.
    pub fn role(&self) -> Result<Option<Role>, RestError> {
        match self {
            Caller::Anon => Ok(Some(Role::Anon)),
            Caller::User(claims) => match claims.role() {
                "authenticated" => Ok(Some(Role::Authenticated)),
                "anon" => Ok(Some(Role::Anon)),
                _ => Err(RestError::UnknownRole),
            },
            Caller::Service => Ok(None),
            Caller::Delegated { role, .. } => Ok(Some(*role)),
        }
    }

    pub(crate) fn role_name(&self) -> &str {
        match self {
            Caller::Anon => "anon",
            Caller::User(claims) => claims.role(),
            Caller::Service => "service_role",
            Caller::Delegated {
                role: Role::Authenticated,
                ..
            } => "authenticated",
            Caller::Delegated {
                role: Role::Anon, ..
            } => "anon",
        }
    }

    pub fn user_id(&self) -> Option<&str> {
        match self {
            Caller::User(claims) => Some(claims.subject()),
            Caller::Delegated { user_id, .. } => user_id.as_deref(),
            _ => None,
        }
    }

    pub(crate) fn claim(&self, name: &str) -> Option<String> {
        match self {
            Caller::User(claims) => claims.claim_text(name),
            _ => None,
        }
    }
}

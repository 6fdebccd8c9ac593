use std::sync::Arc;

use gatehouse_keys::{ApiRole, PresentedKey, VerifiedClaims};
use gatehouse_policy::{ContextValue, Role};

/// Who is asking. Sealed: the variants are private and each constructor takes
/// the verified material it stands for, so code outside the edge cannot make
/// a caller more than it proved (no service caller without the secret key).
#[derive(Debug, Clone)]
pub struct Caller(Who);

#[derive(Debug, Clone)]
enum Who {
    Anon,
    /// Shared with the token cache and the request: a caller is made per request.
    User(Arc<VerifiedClaims>),
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
    /// Nobody in particular: the least any request is.
    pub fn anon() -> Self {
        Caller(Who::Anon)
    }

    /// The holder of a verified access token.
    pub fn signed_in(claims: impl Into<Arc<VerifiedClaims>>) -> Self {
        Caller(Who::User(claims.into()))
    }

    /// The holder of an API key, before any user signs in.
    pub fn holding(key: PresentedKey) -> Self {
        match key.role() {
            ApiRole::Service => Caller(Who::Service),
            ApiRole::Anon => Caller(Who::Anon),
        }
    }

    /// The signer of a signed URL, as the URL's checked payload names them;
    /// never more than a signed-in user.
    pub fn delegated(role: Role, user_id: Option<String>) -> Self {
        Caller(Who::Delegated { role, user_id })
    }

    /// The secret key's holder: no row policy or column grant applies.
    pub fn is_service(&self) -> bool {
        matches!(self.0, Who::Service)
    }

    /// Anonymous: neither a key beyond the publishable one nor a user.
    pub fn is_anon(&self) -> bool {
        matches!(self.0, Who::Anon)
    }

    /// The policy role, or `None` for the service role, which policies do not
    /// bind; `Err` for a token whose role no policy names.
    pub fn role(&self) -> Result<Option<Role>, UnknownRole> {
        match &self.0 {
            Who::Anon => Ok(Some(Role::Anon)),
            Who::User(claims) => match claims.role() {
                "authenticated" => Ok(Some(Role::Authenticated)),
                "anon" => Ok(Some(Role::Anon)),
                _ => Err(UnknownRole),
            },
            Who::Service => Ok(None),
            Who::Delegated { role, .. } => Ok(Some(*role)),
        }
    }

    pub fn role_name(&self) -> &str {
        match &self.0 {
            Who::Anon => "anon",
            Who::User(claims) => claims.role(),
            Who::Service => "service_role",
            Who::Delegated {
                role: Role::Authenticated,
                ..
            } => "authenticated",
            Who::Delegated {
                role: Role::Anon, ..
            } => "anon",
        }
    }

    pub fn user_id(&self) -> Option<&str> {
        match &self.0 {
            Who::User(claims) => Some(claims.subject()),
            Who::Delegated { user_id, .. } => user_id.as_deref(),
            _ => None,
        }
    }

    /// The verified token's claims, for a signed-in user.
    pub fn claims(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        match &self.0 {
            Who::User(claims) => Some(claims.claims()),
            _ => None,
        }
    }

    /// Whether the caller's claims cannot be known: a signed URL carries only
    /// a role and a user id, not the token it was signed under. (Anonymous
    /// callers have no claims, which is known: they read NULL.)
    pub(crate) fn claims_unknown(&self) -> bool {
        matches!(self.0, Who::Delegated { .. })
    }

    /// What a policy's context value reads for this caller.
    pub(crate) fn context(&self, value: &ContextValue) -> Option<String> {
        match value {
            ContextValue::Uid => self.user_id().map(str::to_owned),
            ContextValue::Role => Some(self.role_name().to_owned()),
            ContextValue::Claim(name) => match &self.0 {
                Who::User(claims) => claims.claim_text(name),
                _ => None,
            },
        }
    }
}

/// A token's role that is neither `anon` nor `authenticated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownRole;

//! GitHub: OAuth 2.0 (with PKCE) for the token, then its REST API for who
//! signed in (`/user`) and which addresses GitHub verified (`/user/emails`).

use std::collections::BTreeMap;

use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse, TokenUrl,
};
use secrecy::ExposeSecret;
use serde_json::{Value as Json, json};

use crate::http_client::ProviderHttp;
use crate::{Flow, OAuthError, Protocol, ProviderConfig, ProviderIdentity, Result};

pub(crate) struct GitHub {
    config: ProviderConfig,
    authorize_url: AuthUrl,
    token_url: TokenUrl,
    api_url: String,
    http: ProviderHttp,
}

impl GitHub {
    pub(crate) fn new(config: ProviderConfig, http: ProviderHttp) -> Result<Self> {
        let Protocol::GitHub {
            authorize_url,
            token_url,
            api_url,
        } = &config.protocol
        else {
            return Err(OAuthError::Config("not a GitHub provider".into()));
        };
        let bad =
            |what: &str, url: &str| OAuthError::Config(format!("{what} {url:?} is not a URL"));
        Ok(Self {
            authorize_url: AuthUrl::new(authorize_url.clone())
                .map_err(|_| bad("authorize_url", authorize_url))?,
            token_url: TokenUrl::new(token_url.clone()).map_err(|_| bad("token_url", token_url))?,
            api_url: api_url.trim_end_matches('/').to_owned(),
            config,
            http,
        })
    }

    fn redirect(&self, callback_url: &str) -> Result<RedirectUrl> {
        RedirectUrl::new(callback_url.to_owned())
            .map_err(|_| OAuthError::Config(format!("{callback_url:?} is not a callback URL")))
    }

    pub(crate) fn begin(
        &self,
        (state, callback_url): (&str, &str),
        requested: &[String],
    ) -> Result<Flow> {
        let client = BasicClient::new(ClientId::new(self.config.client_id.clone()))
            .set_auth_uri(self.authorize_url.clone())
            .set_redirect_uri(self.redirect(callback_url)?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = CsrfToken::new(state.to_owned());
        let (url, _) = client
            .authorize_url(move || state)
            .add_scopes(self.config.scopes(requested).into_iter().map(Scope::new))
            .set_pkce_challenge(challenge)
            .url();
        Ok(Flow {
            authorize_url: url.to_string(),
            pkce_verifier: verifier.secret().clone(),
            nonce: String::new(),
        })
    }

    pub(crate) async fn finish(
        &self,
        (code, callback_url): (&str, &str),
        pkce_verifier: &str,
    ) -> Result<ProviderIdentity> {
        let mut client = BasicClient::new(ClientId::new(self.config.client_id.clone()))
            .set_token_uri(self.token_url.clone())
            .set_auth_type(AuthType::RequestBody)
            .set_redirect_uri(self.redirect(callback_url)?);
        if let Some(secret) = &self.config.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.expose_secret().to_owned()));
        }
        let call = self.http.as_client();
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&call)
            .await
            .map_err(|error| OAuthError::Rejected(format!("the code exchange failed: {error}")))?;
        let headers = [
            (
                "authorization",
                format!("Bearer {}", token.access_token().secret()),
            ),
            ("accept", "application/vnd.github+json".to_owned()),
            ("user-agent", "Gatehouse".to_owned()),
        ];
        let user = self
            .http
            .get_json(&format!("{}/user", self.api_url), &headers)
            .await?;
        let emails = self
            .http
            .get_json(&format!("{}/user/emails", self.api_url), &headers)
            .await?;
        let mut identity = self.identity(&user, &emails)?;
        if self.config.provider_tokens {
            identity.tokens = Some(crate::ProviderTokens {
                access_token: token.access_token().secret().clone(),
                refresh_token: token.refresh_token().map(|t| t.secret().clone()),
            });
        }
        Ok(identity)
    }

    /// The account, and its primary address when GitHub verified it (else a
    /// verified one, else the profile's, unverified).
    fn identity(&self, user: &Json, emails: &Json) -> Result<ProviderIdentity> {
        let subject = match &user["id"] {
            Json::Number(id) => id.to_string(),
            _ => return Err(OAuthError::Rejected("GitHub's /user has no id".into())),
        };
        let listed = emails.as_array().map(Vec::as_slice).unwrap_or_default();
        let address = |entry: &Json| entry["email"].as_str().map(str::to_lowercase);
        let verified = |entry: &&Json| entry["verified"] == Json::Bool(true);
        let (email, found_verified) = match listed
            .iter()
            .filter(verified)
            .find(|entry| entry["primary"] == Json::Bool(true))
            .or_else(|| listed.iter().find(verified))
        {
            Some(entry) => (address(entry), true),
            None => (user["email"].as_str().map(str::to_lowercase), false),
        };
        let email = email.filter(|e| !e.is_empty());
        let email_verified = found_verified && email.is_some();
        let text = |key: &str| user[key].as_str().map(str::to_owned);
        let mut data = BTreeMap::new();
        data.insert("iss".to_owned(), json!(self.api_url));
        data.insert("sub".to_owned(), json!(subject));
        data.insert("provider_id".to_owned(), json!(subject));
        data.insert("email".to_owned(), json!(email));
        data.insert("email_verified".to_owned(), json!(email_verified));
        data.insert("phone_verified".to_owned(), json!(false));
        data.insert("user_name".to_owned(), json!(text("login")));
        data.insert("preferred_username".to_owned(), json!(text("login")));
        if let Some(name) = text("name") {
            data.insert("name".to_owned(), json!(name));
            data.insert("full_name".to_owned(), json!(name));
        }
        if let Some(avatar) = text("avatar_url") {
            data.insert("avatar_url".to_owned(), json!(avatar));
            data.insert("picture".to_owned(), json!(avatar));
        }
        Ok(ProviderIdentity {
            provider: self.config.name.clone(),
            subject,
            email,
            email_verified,
            data,
            tokens: None,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn github() -> GitHub {
        let config = ProviderConfig {
            name: "github".into(),
            protocol: Protocol::GitHub {
                authorize_url: "https://github.com/login/oauth/authorize".into(),
                token_url: "https://github.com/login/oauth/access_token".into(),
                api_url: "https://api.github.com".into(),
            },
            client_id: "id".into(),
            client_secret: None,
            scopes: Vec::new(),
            private_addresses: false,
            form_post: false,
            provider_tokens: false,
        };
        GitHub::new(
            config,
            ProviderHttp::new(gatehouse_egress::Egress::default()),
        )
        .unwrap()
    }

    #[test]
    fn the_verified_primary_address_is_the_account_s() {
        let user = json!({"id": 7, "login": "octo", "email": "public@example.com"});
        let emails = json!([
            {"email": "Other@Example.com", "primary": false, "verified": true},
            {"email": "primary@example.com", "primary": true, "verified": true},
        ]);
        let identity = github().identity(&user, &emails).unwrap();
        assert_eq!(identity.subject, "7");
        assert_eq!(identity.email.as_deref(), Some("primary@example.com"));
        assert!(identity.email_verified);
    }

    #[test]
    fn an_unverified_primary_is_passed_over_and_none_verified_is_unverified() {
        let user = json!({"id": 7, "login": "octo", "email": "public@example.com"});
        let emails = json!([
            {"email": "primary@example.com", "primary": true, "verified": false},
            {"email": "Other@Example.com", "primary": false, "verified": true},
        ]);
        let identity = github().identity(&user, &emails).unwrap();
        assert_eq!(identity.email.as_deref(), Some("other@example.com"));
        assert!(identity.email_verified);
        let none = json!([{"email": "primary@example.com", "primary": true, "verified": false}]);
        let identity = github().identity(&user, &none).unwrap();
        assert_eq!(identity.email.as_deref(), Some("public@example.com"));
        assert!(
            !identity.email_verified,
            "the profile's address is not verified"
        );
        assert!(
            github().identity(&json!({"login": "x"}), &none).is_err(),
            "no id"
        );
    }
}

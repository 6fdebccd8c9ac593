//! An OpenID Connect provider: discovery (kept ten minutes), the authorization
//! URL, the code exchange and the ID-token checks, all by openidconnect.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreGenderClaim, CoreIdToken, CoreJwsSigningAlgorithm,
    CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IdTokenClaims,
    IssuerUrl, Nonce, NonceVerifier, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, SignatureVerificationError, TokenResponse,
};
use secrecy::ExposeSecret;
use serde_json::json;
use tokio::sync::Mutex;

use crate::http_client::ProviderHttp;
use crate::{Flow, OAuthError, ProviderConfig, ProviderIdentity, Result};

/// How long a discovery document (and its key set) is trusted.
const DISCOVERY_KEPT: Duration = Duration::from_secs(600);
/// A token signed by no key kept sends for the keys again, at most this often.
const REDISCOVER_AFTER: Duration = Duration::from_secs(5);

/// The signatures accepted on ID tokens: asymmetric only, so nobody holding
/// the client secret can mint one.
const ALGORITHMS: [CoreJwsSigningAlgorithm; 6] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

pub(crate) struct Oidc {
    config: ProviderConfig,
    issuer: IssuerUrl,
    http: ProviderHttp,
    discovered: Mutex<Option<(Instant, CoreProviderMetadata)>>,
}

type Claims = IdTokenClaims<openidconnect::EmptyAdditionalClaims, CoreGenderClaim>;

impl Oidc {
    pub(crate) fn new(config: ProviderConfig, issuer: &str, http: ProviderHttp) -> Result<Self> {
        let issuer = IssuerUrl::new(issuer.to_owned())
            .map_err(|_| OAuthError::Config(format!("{issuer:?} is not an issuer URL")))?;
        Ok(Self {
            config,
            issuer,
            http,
            discovered: Mutex::new(None),
        })
    }

    /// The provider's metadata and keys, discovered at most every ten minutes.
    async fn metadata(&self) -> Result<CoreProviderMetadata> {
        self.discover(DISCOVERY_KEPT).await
    }

    /// The metadata, discovered again unless the copy kept is younger than `kept`.
    async fn discover(&self, kept: Duration) -> Result<CoreProviderMetadata> {
        let mut discovered = self.discovered.lock().await;
        if let Some((at, metadata)) = discovered.as_ref()
            && at.elapsed() < kept
        {
            return Ok(metadata.clone());
        }
        let call = self.http.as_client();
        let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), &call)
            .await
            .map_err(|error| {
                OAuthError::Unavailable(format!(
                    "discovery at {} failed: {error}",
                    self.issuer.as_str()
                ))
            })?;
        *discovered = Some((Instant::now(), metadata.clone()));
        Ok(metadata)
    }

    /// The ID token's claims, checked against the keys kept; when none of them
    /// signed it (the provider rotated its keys), against the keys published
    /// now, fetched at most every five seconds.
    async fn verified(
        &self,
        id_token: &CoreIdToken,
        nonce: impl NonceVerifier + Copy,
    ) -> Result<ProviderIdentity> {
        let check = |metadata: CoreProviderMetadata| {
            let client = CoreClient::from_provider_metadata(metadata, self.client_id(), None);
            let verifier = client.id_token_verifier().set_allowed_algs(ALGORITHMS);
            id_token
                .claims(&verifier, nonce)
                .map(|claims| self.identity(claims))
        };
        let refused = |error: ClaimsVerificationError| {
            OAuthError::Rejected(format!("the ID token is refused: {error}"))
        };
        match check(self.metadata().await?) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => check(self.discover(REDISCOVER_AFTER).await?).map_err(refused),
            other => other.map_err(refused),
        }
    }

    fn client_id(&self) -> ClientId {
        ClientId::new(self.config.client_id.clone())
    }

    fn client_secret(&self) -> Option<ClientSecret> {
        self.config
            .client_secret
            .as_ref()
            .map(|secret| ClientSecret::new(secret.expose_secret().to_owned()))
    }

    pub(crate) async fn begin(
        &self,
        (state, callback_url): (&str, &str),
        requested: &[String],
    ) -> Result<Flow> {
        let client = CoreClient::from_provider_metadata(
            self.metadata().await?,
            self.client_id(),
            self.client_secret(),
        )
        .set_redirect_uri(redirect_url(callback_url)?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let nonce = Nonce::new_random();
        let state = CsrfToken::new(state.to_owned());
        let sent_nonce = nonce.clone();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || state,
                move || sent_nonce,
            )
            .set_pkce_challenge(challenge);
        if self.config.form_post {
            request = request.add_extra_param("response_mode", "form_post");
        }
        // `openid` is always sent.
        for scope in self.config.scopes(requested) {
            if scope != "openid" {
                request = request.add_scope(Scope::new(scope));
            }
        }
        let (url, _, _) = request.url();
        Ok(Flow {
            authorize_url: url.to_string(),
            pkce_verifier: verifier.secret().clone(),
            nonce: nonce.secret().clone(),
        })
    }

    pub(crate) async fn finish(
        &self,
        (code, callback_url): (&str, &str),
        (pkce_verifier, nonce): (&str, &str),
    ) -> Result<ProviderIdentity> {
        let client = CoreClient::from_provider_metadata(
            self.metadata().await?,
            self.client_id(),
            self.client_secret(),
        )
        .set_redirect_uri(redirect_url(callback_url)?);
        let call = self.http.as_client();
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|error| OAuthError::Config(error.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&call)
            .await
            .map_err(|error| OAuthError::Rejected(format!("the code exchange failed: {error}")))?;
        let id_token = token
            .id_token()
            .ok_or_else(|| OAuthError::Rejected("the provider sent no ID token".into()))?;
        let nonce = Nonce::new(nonce.to_owned());
        let mut identity = self.verified(id_token, &nonce).await?;
        if self.config.provider_tokens {
            identity.tokens = Some(crate::ProviderTokens {
                access_token: token.access_token().secret().clone(),
                refresh_token: token.refresh_token().map(|t| t.secret().clone()),
            });
        }
        Ok(identity)
    }

    pub(crate) async fn verify_id_token(
        &self,
        id_token: &str,
        nonce: Option<&str>,
    ) -> Result<ProviderIdentity> {
        let token = CoreIdToken::from_str(id_token)
            .map_err(|_| OAuthError::Rejected("the ID token is not a JWT".into()))?;
        // As GoTrue: the token carries the SHA-256 of the nonce the app keeps.
        let expected = nonce.map(sha256_hex);
        let check_nonce = |found: Option<&Nonce>| match (found, &expected) {
            (None, None) => Ok(()),
            (Some(found), Some(expected)) if found.secret() == expected => Ok(()),
            (Some(_), Some(_)) => Err("nonce mismatch".to_owned()),
            (None, Some(_)) => Err("the ID token carries no nonce".to_owned()),
            (Some(_), None) => Err("the ID token carries a nonce; pass it".to_owned()),
        };
        self.verified(&token, check_nonce).await
    }

    fn identity(&self, claims: &Claims) -> ProviderIdentity {
        let subject = claims.subject().as_str().to_owned();
        let email = claims.email().map(|email| email.as_str().to_lowercase());
        let email_verified = email.is_some() && claims.email_verified() == Some(true);
        let name = claims
            .name()
            .and_then(|name| name.get(None))
            .map(|name| name.as_str().to_owned());
        let picture = claims
            .picture()
            .and_then(|picture| picture.get(None))
            .map(|picture| picture.as_str().to_owned());
        let mut data = BTreeMap::new();
        data.insert("iss".to_owned(), json!(self.issuer.as_str()));
        data.insert("sub".to_owned(), json!(subject));
        data.insert("provider_id".to_owned(), json!(subject));
        data.insert("email".to_owned(), json!(email));
        data.insert("email_verified".to_owned(), json!(email_verified));
        data.insert("phone_verified".to_owned(), json!(false));
        if let Some(name) = &name {
            data.insert("name".to_owned(), json!(name));
            data.insert("full_name".to_owned(), json!(name));
        }
        if let Some(picture) = &picture {
            data.insert("picture".to_owned(), json!(picture));
            data.insert("avatar_url".to_owned(), json!(picture));
        }
        ProviderIdentity {
            provider: self.config.name.clone(),
            subject,
            email,
            email_verified,
            data,
            tokens: None,
        }
    }
}

fn redirect_url(url: &str) -> Result<RedirectUrl> {
    RedirectUrl::new(url.to_owned())
        .map_err(|_| OAuthError::Config(format!("{url:?} is not a callback URL")))
}

pub(crate) fn sha256_hex(text: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        text.as_bytes(),
    ))
}

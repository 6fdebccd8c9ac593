//! `[auth.providers.<name>]`: the identity providers users may sign in with.
//! A name that is a preset (google, microsoft or azure, apple, gitlab, github)
//! needs only its client id; any other OpenID Connect provider names its
//! issuer. The client secret is `GATEHOUSE_OAUTH_SECRET_<NAME>`.

use gatehouse_oauth::{Protocol, ProviderConfig};
use indexmap::IndexMap;
use serde::Deserialize;

use super::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProviderDecl {
    client_id: String,
    /// Which preset, when the name is not one.
    preset: Option<String>,
    /// An OpenID Connect issuer (required without a preset; overrides GitLab's
    /// for a self-hosted instance).
    issuer: Option<String>,
    /// Microsoft's tenant (a directory id, `organizations` is not an issuer).
    tenant: Option<String>,
    /// Scopes asked for beyond the ones sign-in needs.
    #[serde(default)]
    scopes: Vec<String>,
    /// GitHub Enterprise: its URLs instead of github.com's.
    authorize_url: Option<String>,
    token_url: Option<String>,
    api_url: Option<String>,
    /// A provider on the operator's own network (loopback or private addresses).
    #[serde(default)]
    allow_private_addresses: bool,
    /// Hand the provider's tokens to the app with its session (off: they are
    /// dropped once the sign-in is done).
    #[serde(default)]
    provider_tokens: bool,
}

fn secure(url: &str, private: bool) -> bool {
    url.starts_with("https://") || (private && url.starts_with("http://"))
}

pub(super) fn checked_providers(
    decls: IndexMap<String, ProviderDecl>,
) -> Result<Vec<ProviderConfig>, ConfigError> {
    decls
        .into_iter()
        .map(|(name, decl)| {
            let invalid = |message: String| ConfigError::Env {
                variable: format!("[auth.providers.{name}]"),
                message,
            };
            if !super::background::valid_name(&name) {
                return Err(invalid("a provider's name is 1 to 63 of a-z, 0-9, _ and -".into()));
            }
            let preset = decl.preset.clone().unwrap_or_else(|| name.clone());
            let oidc = |issuer: String| Protocol::OpenIdConnect { issuer };
            let protocol = match (preset.as_str(), decl.issuer.clone()) {
                ("github", _) => Protocol::GitHub {
                    authorize_url: decl
                        .authorize_url
                        .clone()
                        .unwrap_or_else(|| "https://github.com/login/oauth/authorize".into()),
                    token_url: decl
                        .token_url
                        .clone()
                        .unwrap_or_else(|| "https://github.com/login/oauth/access_token".into()),
                    api_url: decl
                        .api_url
                        .clone()
                        .unwrap_or_else(|| "https://api.github.com".into()),
                },
                (_, Some(issuer)) => oidc(issuer),
                ("google", None) => oidc("https://accounts.google.com".into()),
                ("apple", None) => oidc("https://appleid.apple.com".into()),
                ("gitlab", None) => oidc("https://gitlab.com".into()),
                ("microsoft" | "azure", None) => match &decl.tenant {
                    Some(tenant) => oidc(format!("https://login.microsoftonline.com/{tenant}/v2.0")),
                    None => {
                        return Err(invalid(
                            "Microsoft needs `tenant` (your directory's id): the common endpoints name no single issuer"
                                .into(),
                        ));
                    }
                },
                (other, None) => {
                    return Err(invalid(format!(
                        "{other:?} is not a preset (google, microsoft, azure, apple, gitlab, github): give the OpenID Connect `issuer`"
                    )));
                }
            };
            let urls: Vec<&String> = match &protocol {
                Protocol::OpenIdConnect { issuer } => vec![issuer],
                Protocol::GitHub {
                    authorize_url,
                    token_url,
                    api_url,
                } => vec![authorize_url, token_url, api_url],
            };
            if let Some(url) = urls
                .into_iter()
                .find(|url| !secure(url, decl.allow_private_addresses))
            {
                return Err(invalid(format!(
                    "{url:?} must be https (http only with allow_private_addresses)"
                )));
            }
            if decl.client_id.trim().is_empty() {
                return Err(invalid("client_id is empty".into()));
            }
            Ok(ProviderConfig {
                name,
                protocol,
                client_id: decl.client_id,
                client_secret: None,
                scopes: decl.scopes,
                private_addresses: decl.allow_private_addresses,
                form_post: preset == "apple",
                provider_tokens: decl.provider_tokens,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn check(name: &str, toml_text: &str) -> Result<Vec<ProviderConfig>, ConfigError> {
        let decl: ProviderDecl = toml::from_str(toml_text).unwrap();
        checked_providers(IndexMap::from([(name.to_owned(), decl)]))
    }

    #[test]
    fn presets_need_only_a_client_id() {
        let google = check("google", r#"client_id = "g""#).unwrap();
        assert_eq!(
            google[0].protocol,
            Protocol::OpenIdConnect {
                issuer: "https://accounts.google.com".into()
            }
        );
        let github = check("github", r#"client_id = "h""#).unwrap();
        assert!(
            matches!(&github[0].protocol, Protocol::GitHub { api_url, .. } if api_url == "https://api.github.com")
        );
        let corp = check(
            "corp",
            r#"client_id = "c"
preset = "gitlab""#,
        )
        .unwrap();
        assert_eq!(
            corp[0].protocol,
            Protocol::OpenIdConnect {
                issuer: "https://gitlab.com".into()
            }
        );
    }

    #[test]
    fn refusals_name_what_is_missing() {
        let error = |name: &str, text: &str| check(name, text).err().unwrap().to_string();
        assert!(error("corp", r#"client_id = "c""#).contains("issuer"));
        assert!(error("azure", r#"client_id = "c""#).contains("tenant"));
        assert!(
            error(
                "corp",
                r#"client_id = "c"
issuer = "http://sso.example""#
            )
            .contains("https")
        );
        assert!(
            error(
                "Corp!",
                r#"client_id = "c"
issuer = "https://sso.example""#
            )
            .contains("name")
        );
        check(
            "corp",
            r#"client_id = "c"
issuer = "http://127.0.0.1:9000"
allow_private_addresses = true"#,
        )
        .unwrap();
    }
}

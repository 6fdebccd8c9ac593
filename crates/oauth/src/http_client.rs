//! Calls to providers go through `gatehouse-egress`: bounded in time and size,
//! no redirects followed, and private addresses refused unless the operator
//! allows them for a provider on their own network.

use std::future::Future;
use std::pin::Pin;

use gatehouse_egress::{Egress, Method, Request, Url};

use crate::{OAuthError, Result};

/// The HTTP client openidconnect is given, and GitHub's API calls use.
#[derive(Clone)]
pub struct ProviderHttp(Egress);

type HttpRequest = http::Request<Vec<u8>>;
type HttpResponse = http::Response<Vec<u8>>;
/// A call under way, as openidconnect's client interface awaits it.
pub(crate) type PendingCall =
    Pin<Box<dyn Future<Output = std::result::Result<HttpResponse, CallFailed>> + Send>>;

/// A failed call, in words that name the host, never a token.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CallFailed(String);

/// Largest answer a provider may give (discovery documents, key sets, tokens).
const MOST_RESPONSE_BYTES: usize = 1 << 20;

impl ProviderHttp {
    pub fn new(egress: Egress) -> Self {
        Self(Egress {
            max_response_bytes: egress.max_response_bytes.min(MOST_RESPONSE_BYTES),
            ..egress
        })
    }

    pub async fn call(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> std::result::Result<http::Response<Vec<u8>>, CallFailed> {
        let (parts, body) = request.into_parts();
        let url = Url::parse(&parts.uri.to_string())
            .map_err(|_| CallFailed(format!("{} is not a URL", parts.uri)))?;
        let method = Method::from_bytes(parts.method.as_str().as_bytes())
            .map_err(|_| CallFailed("unknown method".into()))?;
        let mut outgoing = Request::new(method, url);
        outgoing.headers = parts
            .headers
            .iter()
            .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned())))
            .collect();
        outgoing.body = body;
        let answer = self
            .0
            .send(outgoing)
            .await
            .map_err(|refused| CallFailed(refused.to_string()))?;
        let mut response = http::Response::builder().status(answer.status);
        for (name, value) in answer.headers {
            response = response.header(name, value);
        }
        response
            .body(answer.body)
            .map_err(|error| CallFailed(error.to_string()))
    }

    /// This client as the `AsyncHttpClient` openidconnect and oauth2 take.
    pub(crate) fn as_client(&self) -> impl Fn(HttpRequest) -> PendingCall + use<> {
        let http = self.clone();
        move |request| {
            let http = http.clone();
            Box::pin(async move { http.call(request).await })
        }
    }

    /// A GET answered with JSON (GitHub's API).
    pub(crate) async fn get_json(
        &self,
        url: &str,
        headers: &[(&str, String)],
    ) -> Result<serde_json::Value> {
        let mut request = http::Request::get(url);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request
            .body(Vec::new())
            .map_err(|error| OAuthError::Config(error.to_string()))?;
        let response = self
            .call(request)
            .await
            .map_err(|failed| OAuthError::Unavailable(failed.to_string()))?;
        if !response.status().is_success() {
            return Err(OAuthError::Unavailable(format!(
                "{url} answered {}",
                response.status()
            )));
        }
        serde_json::from_slice(response.body())
            .map_err(|_| OAuthError::Rejected(format!("{url} answered something other than JSON")))
    }
}

//! `ctx.fetch`: outbound HTTP for a function, only to the hosts its declaration
//! lists. Names are resolved here and every address checked before connecting
//! (and the connection pinned to those addresses, so a second lookup cannot
//! swap one in): loopback, private, link-local (cloud metadata among them),
//! shared and unspecified addresses are refused unless the declaration allows
//! private addresses. Redirects are answered, not followed; the time and the
//! response's size are bounded.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value as Json, json};

const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_RESPONSE_BYTES: usize = 5 << 20;
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Where one function may send requests.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outbound {
    /// `host` or `host:port`, lower-cased.
    hosts: Vec<String>,
    private_addresses: bool,
}

#[derive(Deserialize)]
struct Request {
    url: String,
    method: Option<String>,
    #[serde(default)]
    headers: Map<String, Json>,
    body: Option<String>,
}

impl Outbound {
    pub(crate) fn new(hosts: &[String], private_addresses: bool) -> Self {
        Self {
            hosts: hosts.iter().map(|host| host.to_ascii_lowercase()).collect(),
            private_addresses,
        }
    }

    /// One request from `ctx.fetch` (JSON in), its response or refusal (JSON out).
    pub(crate) fn fetch(&self, runtime: &tokio::runtime::Handle, request: &str) -> String {
        let answer = match serde_json::from_str::<Request>(request) {
            Ok(request) => runtime
                .block_on(self.send(request))
                .unwrap_or_else(|error| json!({ "error": error })),
            Err(_) => json!({ "error": "malformed request" }),
        };
        answer.to_string()
    }

    async fn send(&self, request: Request) -> Result<Json, String> {
        let url = url::Url::parse(&request.url).map_err(|_| "not a URL".to_owned())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("only http and https URLs can be fetched".into());
        }
        let host = url
            .host_str()
            .ok_or("the URL has no host")?
            .to_ascii_lowercase();
        let port = url.port_or_known_default().ok_or("the URL has no port")?;
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let listed = self
            .hosts
            .iter()
            .any(|allowed| *allowed == host || *allowed == format!("{host}:{port}"));
        if !listed {
            return Err(format!("{host} is not among this function's fetch hosts"));
        }
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((bare.as_str(), port))
            .await
            .map_err(|_| format!("{host} does not resolve"))?
            .collect();
        if addresses.is_empty() {
            return Err(format!("{host} does not resolve"));
        }
        if !self.private_addresses
            && let Some(address) = addresses.iter().find(|a| !is_public(a.ip()))
        {
            return Err(format!(
                "{host} resolves to {}, which is not a public address",
                address.ip()
            ));
        }
        let body = request.body.unwrap_or_default();
        if body.len() > MAX_REQUEST_BYTES {
            return Err("the request body is too large".into());
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .no_proxy()
            .resolve_to_addrs(&bare, &addresses)
            .build()
            .map_err(|_| "the request could not be prepared".to_owned())?;
        let method =
            reqwest::Method::from_bytes(request.method.as_deref().unwrap_or("GET").as_bytes())
                .map_err(|_| "not an HTTP method".to_owned())?;
        let mut outgoing = client.request(method, url);
        for (name, value) in &request.headers {
            if let Some(value) = value.as_str() {
                outgoing = outgoing.header(name.as_str(), value);
            }
        }
        if !body.is_empty() {
            outgoing = outgoing.body(body);
        }
        let mut response = outgoing.send().await.map_err(|error| {
            if error.is_timeout() {
                "the request timed out".to_owned()
            } else {
                "the request failed".to_owned()
            }
        })?;
        let status = response.status().as_u16();
        let headers: Map<String, Json> = response
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                value
                    .to_str()
                    .ok()
                    .map(|value| (name.as_str().to_owned(), Json::String(value.to_owned())))
            })
            .collect();
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|_| "the response broke off".to_owned())?
        {
            if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err("the response is too large".into());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(json!({
            "status": status,
            "headers": headers,
            "body": String::from_utf8_lossy(&bytes),
        }))
    }
}

/// An address on the public internet: not loopback, private, link-local
/// (169.254.169.254, the cloud metadata service, among them), shared,
/// unspecified, broadcast or multicast, in either family or mapped into IPv6.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}

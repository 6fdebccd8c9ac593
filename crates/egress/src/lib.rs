//! Outbound HTTP that the app's configuration or code aims, and that must not
//! be turned against the server's own network (server-side request forgery).
//! A name is resolved here and every address it gives is checked before
//! connecting, and the connection is pinned to those addresses so a second
//! lookup cannot swap one in: loopback, private, link-local (the cloud
//! metadata service among them), shared, unspecified, broadcast and multicast
//! addresses are refused unless the caller allows private addresses.
//! Redirects are answered, never followed (a public address could otherwise
//! send the request on to a private one); time and sizes are bounded.
//!
//! `ctx.fetch` in functions and the outbound webhooks both send through here.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use reqwest::Method;
pub use url::Url;

/// Where requests may go and how much they may cost.
#[derive(Debug, Clone)]
pub struct Egress {
    /// Let requests reach loopback and private addresses (a service on the
    /// same host or network, named on purpose by the operator).
    pub private_addresses: bool,
    pub timeout: Duration,
    pub max_request_bytes: usize,
    pub max_response_bytes: usize,
}

impl Default for Egress {
    fn default() -> Self {
        Self {
            private_addresses: false,
            timeout: Duration::from_secs(10),
            max_request_bytes: 1 << 20,
            max_response_bytes: 5 << 20,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn new(method: Method, url: Url) -> Self {
        Self {
            method,
            url,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why a request was not sent or not answered. The words are safe to show the
/// app's code and to record: they name the host and address, never a header
/// or a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("only http and https URLs can be fetched")]
    Scheme,
    #[error("the URL has no host")]
    NoHost,
    #[error("{0} does not resolve")]
    Unresolved(String),
    #[error("{host} resolves to {address}, which is not a public address")]
    NotPublic { host: String, address: IpAddr },
    #[error("the request body is too large")]
    RequestTooLarge,
    #[error("the request timed out")]
    TimedOut,
    #[error("the request failed")]
    Failed,
    #[error("the response broke off")]
    BrokeOff,
    #[error("the response is too large")]
    ResponseTooLarge,
}

impl Egress {
    pub async fn send(&self, request: Request) -> Result<Response, Refused> {
        let url = request.url;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused::Scheme);
        }
        let host = url.host_str().ok_or(Refused::NoHost)?.to_ascii_lowercase();
        let port = url.port_or_known_default().ok_or(Refused::NoHost)?;
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let lookup =
            tokio::time::timeout(self.timeout, tokio::net::lookup_host((bare.as_str(), port)));
        let addresses: Vec<SocketAddr> = match lookup.await {
            Ok(Ok(found)) => found.collect(),
            Ok(Err(_)) => return Err(Refused::Unresolved(host)),
            Err(_) => return Err(Refused::TimedOut),
        };
        if addresses.is_empty() {
            return Err(Refused::Unresolved(host));
        }
        if !self.private_addresses
            && let Some(address) = addresses.iter().find(|a| !is_public(a.ip()))
        {
            return Err(Refused::NotPublic {
                host,
                address: address.ip(),
            });
        }
        if request.body.len() > self.max_request_bytes {
            return Err(Refused::RequestTooLarge);
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.timeout)
            .no_proxy()
            .resolve_to_addrs(&bare, &addresses)
            .build()
            .map_err(|_| Refused::Failed)?;
        let mut outgoing = client.request(request.method, url);
        for (name, value) in &request.headers {
            outgoing = outgoing.header(name.as_str(), value.as_str());
        }
        if !request.body.is_empty() {
            outgoing = outgoing.body(request.body);
        }
        let mut response = outgoing.send().await.map_err(|error| {
            if error.is_timeout() {
                Refused::TimedOut
            } else {
                Refused::Failed
            }
        })?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                let value = value.to_str().ok()?;
                Some((name.as_str().to_owned(), value.to_owned()))
            })
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|error| {
            if error.is_timeout() {
                Refused::TimedOut
            } else {
                Refused::BrokeOff
            }
        })? {
            if body.len() + chunk.len() > self.max_response_bytes {
                return Err(Refused::ResponseTooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// An address on the public internet: not loopback, private, link-local
/// (169.254.169.254, the cloud metadata service, among them), shared,
/// protocol-assignment, benchmarking, reserved, unspecified, broadcast or
/// multicast; in IPv6 also not unique-local or site-local, and an IPv4
/// address carried inside IPv6 (mapped, compatible, NAT64, 6to4) is judged
/// as itself.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (b == 18 || b == 19)))
        }
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            let embedded = |high: u16, low: u16| {
                let [h1, h2] = high.to_be_bytes();
                let [l1, l2] = low.to_be_bytes();
                IpAddr::V4(std::net::Ipv4Addr::new(h1, h2, l1, l2))
            };
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            match segments {
                // IPv4-compatible (deprecated), NAT64 well-known prefix.
                [0, 0, 0, 0, 0, 0, high, low] | [0x64, 0xff9b, 0, 0, 0, 0, high, low]
                    if high != 0 || low > 1 =>
                {
                    is_public(embedded(high, low))
                }
                // 6to4: the IPv4 address in the second and third segments.
                [0x2002, high, low, ..] => is_public(embedded(high, low)),
                // NAT64 local-use prefix: translated to any IPv4 address.
                [0x64, 0xff9b, 1, ..] => false,
                [first, ..] => {
                    !(v6.is_loopback()
                        || v6.is_unspecified()
                        || v6.is_multicast()
                        || (first & 0xfe00) == 0xfc00
                        || (first & 0xffc0) == 0xfe80
                        || (first & 0xffc0) == 0xfec0)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
            "::10.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:a00:1::1",
            "2002:7f00:1::",
            "fec0::1",
            "192.0.0.8",
            "198.18.0.1",
            "240.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    /// A one-connection HTTP server on loopback answering `answer` as written.
    async fn answering(answer: &'static str) -> Url {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buffer = [0; 4096];
            let _ = socket.read(&mut buffer).await;
            let _ = socket.write_all(answer.as_bytes()).await;
        });
        Url::parse(&format!("http://{address}/hook")).unwrap()
    }

    #[tokio::test]
    async fn loopback_and_metadata_addresses_are_refused_before_connecting() {
        let egress = Egress::default();
        for url in [
            "http://127.0.0.1:9/x",
            "http://10.0.0.1/x",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]:9/x",
            "http://localhost:9/x",
        ] {
            let refused = egress
                .send(Request::new(Method::POST, Url::parse(url).unwrap()))
                .await
                .unwrap_err();
            assert!(
                matches!(refused, Refused::NotPublic { .. }),
                "{url}: {refused}"
            );
        }
        let file = Request::new(Method::GET, Url::parse("file:///etc/passwd").unwrap());
        assert_eq!(egress.send(file).await.unwrap_err(), Refused::Scheme);
    }

    #[tokio::test]
    async fn a_redirect_is_answered_not_followed() {
        let url = answering(
            "HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        let egress = Egress {
            private_addresses: true,
            ..Egress::default()
        };
        let response = egress.send(Request::new(Method::GET, url)).await.unwrap();
        assert_eq!(response.status, 302);
    }

    #[tokio::test]
    async fn a_response_over_the_bound_is_refused() {
        let url = answering("HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n0123456789012345678901234567890123456789012345678901234567890123").await;
        let egress = Egress {
            private_addresses: true,
            max_response_bytes: 16,
            ..Egress::default()
        };
        let refused = egress
            .send(Request::new(Method::GET, url))
            .await
            .unwrap_err();
        assert_eq!(refused, Refused::ResponseTooLarge);
    }
}

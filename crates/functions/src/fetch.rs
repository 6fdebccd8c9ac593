//! `ctx.fetch`: outbound HTTP for a function, only to the hosts its declaration
//! lists, and through `gatehouse_egress`, which resolves each name and refuses
//! loopback, private and metadata addresses (unless the declaration allows
//! private ones), follows no redirect and bounds the time and sizes.

use gatehouse_egress::{Egress, Method, Url};
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};

/// Where one function may send requests.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outbound {
    /// `host` or `host:port`, lower-cased.
    hosts: Vec<String>,
    egress: Egress,
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
            egress: Egress {
                private_addresses,
                ..Egress::default()
            },
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
        let url = Url::parse(&request.url).map_err(|_| "not a URL".to_owned())?;
        let host = url
            .host_str()
            .ok_or("the URL has no host")?
            .to_ascii_lowercase();
        let port = url.port_or_known_default().ok_or("the URL has no port")?;
        let listed = self
            .hosts
            .iter()
            .any(|allowed| *allowed == host || *allowed == format!("{host}:{port}"));
        if !listed {
            return Err(format!("{host} is not among this function's fetch hosts"));
        }
        let method = Method::from_bytes(request.method.as_deref().unwrap_or("GET").as_bytes())
            .map_err(|_| "not an HTTP method".to_owned())?;
        let outgoing = gatehouse_egress::Request {
            headers: request
                .headers
                .iter()
                .filter_map(|(name, value)| Some((name.clone(), value.as_str()?.to_owned())))
                .collect(),
            body: request.body.unwrap_or_default().into_bytes(),
            ..gatehouse_egress::Request::new(method, url)
        };
        let response = self
            .egress
            .send(outgoing)
            .await
            .map_err(|refused| refused.to_string())?;
        let headers: Map<String, Json> = response
            .headers
            .into_iter()
            .map(|(name, value)| (name, Json::String(value)))
            .collect();
        Ok(json!({
            "status": response.status,
            "headers": headers,
            "body": String::from_utf8_lossy(&response.body),
        }))
    }
}

//! Outbound webhooks: a job for `webhook:<name>` is delivered as an HTTP POST
//! of its payload to the webhook's URL, signed per the Standard Webhooks
//! specification (`webhook-id` is the job's id, stable across retries, so a
//! receiver can drop a delivery it already handled; `webhook-timestamp`;
//! `webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>`).
//! Requests leave through `gatehouse_egress`: loopback, private, link-local
//! and metadata addresses are refused after resolution unless the webhook
//! allows private addresses, redirects are not followed, and the time and
//! sizes are bounded. A refusal or a non-2xx answer fails the attempt, which
//! the queue records and retries with backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use gatehouse_egress::{Egress, Method, Request, Url};
use secrecy::SecretString;

use crate::inbound::standard_key;
use crate::{Handler, Job, MAX_CHANGE_PAYLOAD_BYTES, Runner, Running};

/// What a receiver's answer may hold before it is cut off: it is read only to
/// keep the connection well-behaved, never recorded.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// One declared outbound webhook.
pub struct Webhook {
    url: Url,
    key: hmac::Key,
    egress: Egress,
}

impl Webhook {
    /// `secret` is a Standard Webhooks secret (`whsec_` and base64).
    pub fn new(url: &str, secret: &SecretString, private_addresses: bool) -> Result<Self, String> {
        let url = Url::parse(url).map_err(|_| format!("{url:?} is not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("a webhook's URL is http or https".into());
        }
        Ok(Self {
            url,
            key: standard_key(secret)?,
            egress: Egress {
                private_addresses,
                timeout: DELIVERY_TIMEOUT,
                // Whatever change a job holds can be sent.
                max_request_bytes: MAX_CHANGE_PAYLOAD_BYTES,
                max_response_bytes: MAX_ANSWER_BYTES,
            },
        })
    }

    async fn deliver(&self, job: &Job) -> Result<(), String> {
        let body = job.payload.to_string();
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let request = Request {
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("user-agent".into(), "Gatehouse-Webhooks".into()),
                ("webhook-id".into(), job.id.clone()),
                ("webhook-timestamp".into(), timestamp.to_string()),
                (
                    "webhook-signature".into(),
                    signature(&self.key, (&job.id, timestamp), body.as_bytes()),
                ),
            ],
            body: body.into_bytes(),
            ..Request::new(Method::POST, self.url.clone())
        };
        let answer = self
            .egress
            .send(request)
            .await
            .map_err(|refused| format!("not delivered: {refused}"))?;
        match answer.status {
            200..=299 => Ok(()),
            300..=399 => Err(format!(
                "the receiver answered {} (a redirect, which is not followed)",
                answer.status
            )),
            status => Err(format!("the receiver answered {status}")),
        }
    }
}

/// `v1,` and the base64 HMAC-SHA256 of `id.timestamp.body`.
fn signature(key: &hmac::Key, (id, timestamp): (&str, i64), body: &[u8]) -> String {
    let signed = [
        id.as_bytes(),
        b".",
        timestamp.to_string().as_bytes(),
        b".",
        body,
    ]
    .concat();
    format!("v1,{}", STANDARD.encode(hmac::sign(key, &signed)))
}

/// The runner in front of the others: webhook jobs are delivered here, every
/// other job goes on to `next` (the declared functions).
pub struct Delivering {
    webhooks: HashMap<String, Webhook>,
    next: Arc<dyn Runner>,
}

impl Delivering {
    pub fn new(webhooks: HashMap<String, Webhook>, next: Arc<dyn Runner>) -> Self {
        Self { webhooks, next }
    }
}

impl Runner for Delivering {
    fn run(&self, job: Job) -> Running<'_> {
        let Handler::Webhook(name) = job.handler() else {
            return self.next.run(job);
        };
        let name = name.to_owned();
        Box::pin(async move {
            let Some(webhook) = self.webhooks.get(&name) else {
                return Err(format!("no webhook {name} is configured"));
            };
            let delivered = webhook.deliver(&job).await;
            if let Err(reason) = &delivered {
                tracing::warn!(webhook = %name, job = %job.id, attempt = job.attempt, %reason, "a webhook delivery failed");
            }
            delivered
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::inbound::{Hook, Scheme};

    #[test]
    fn signatures_verify_as_standard_webhooks() {
        let secret = SecretString::from(format!(
            "whsec_{}",
            STANDARD.encode(b"0123456789abcdef0123456789abcdef")
        ));
        let webhook = Webhook::new("https://example.com/hook", &secret, false).unwrap();
        let body = br#"{"type":"INSERT","table":"orders"}"#;
        let now = 1_790_000_000;
        let signed = signature(&webhook.key, ("job-1", now), body);
        let receiver = Hook::new(
            Scheme::Standard,
            &secret,
            Duration::from_secs(300),
            ("f", "default"),
        )
        .unwrap();
        let header = |name: &str| match name {
            "webhook-id" => Some("job-1".to_owned()),
            "webhook-timestamp" => Some(now.to_string()),
            "webhook-signature" => Some(signed.clone()),
            _ => None,
        };
        assert_eq!(receiver.verify(header, body, now), Some("job-1".to_owned()));
        assert_eq!(receiver.verify(header, b"{}", now), None);
    }

    #[test]
    fn only_http_urls_and_standard_secrets_are_taken() {
        let secret = SecretString::from(format!("whsec_{}", STANDARD.encode([7u8; 24])));
        assert!(Webhook::new("ftp://example.com/", &secret, false).is_err());
        assert!(Webhook::new("not a url", &secret, false).is_err());
        let short = SecretString::from(format!("whsec_{}", STANDARD.encode([7u8; 8])));
        assert!(Webhook::new("https://example.com/", &short, false).is_err());
    }
}

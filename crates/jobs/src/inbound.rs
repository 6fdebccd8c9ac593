//! Inbound webhooks: `[hooks.<name>]` receive a provider's signed events,
//! verify the raw body's signature in constant time before anything parses
//! it, and queue each event once for the hook's function (the job's key is
//! the event id, so a redelivery enqueues nothing and is answered as a
//! success). The answer goes out as soon as the job is committed.
//!
//! Two schemes: Standard Webhooks (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64>`, over `id.timestamp.body`, with a
//! `whsec_`-prefixed base64 secret) and Stripe's (`Stripe-Signature:
//! t=…,v1=<hex>`, over `t.body`, keyed by the secret as written).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use gatehouse_db::{Database, DbError};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value as Json, json};
use tokio::sync::Notify;

use crate::{NewJob, Settings, enqueue};

/// How a provider signs: `standard` (Standard Webhooks) or `stripe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Standard,
    Stripe,
}

/// One declared hook.
pub struct Hook {
    pub scheme: Scheme,
    key: hmac::Key,
    pub tolerance: Duration,
    pub function: String,
    pub queue: String,
}

impl Hook {
    /// A Standard Webhooks secret is `whsec_` and base64; Stripe's is used
    /// as written. A secret that does not decode is refused here, at start.
    pub fn new(
        scheme: Scheme,
        secret: &SecretString,
        tolerance: Duration,
        (function, queue): (&str, &str),
    ) -> Result<Self, String> {
        let key = match scheme {
            Scheme::Standard => standard_key(secret)?,
            Scheme::Stripe => {
                let secret = secret.expose_secret().as_bytes();
                if secret.len() < 16 {
                    return Err("the secret is shorter than 16 bytes".into());
                }
                hmac::Key::new(hmac::HMAC_SHA256, secret)
            }
        };
        Ok(Self {
            scheme,
            key,
            tolerance,
            function: function.to_owned(),
            queue: queue.to_owned(),
        })
    }

    /// The event's id when the signature over `body` holds and its time is
    /// within the tolerance of `now` (unix seconds); `None` otherwise, with
    /// no reason: the sender learns nothing from a refusal.
    pub fn verify(
        &self,
        header: impl Fn(&str) -> Option<String>,
        body: &[u8],
        now: i64,
    ) -> Option<String> {
        let fresh = |timestamp: &str| {
            timestamp
                .parse::<i64>()
                .ok()
                .filter(|at| now.abs_diff(*at) <= self.tolerance.as_secs())
        };
        match self.scheme {
            Scheme::Standard => {
                let id = header("webhook-id")?;
                let timestamp = header("webhook-timestamp")?;
                fresh(&timestamp)?;
                let signed = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body].concat();
                let signatures = header("webhook-signature")?;
                let holds = signatures.split(' ').any(|signature| {
                    signature
                        .strip_prefix("v1,")
                        .and_then(|tag| STANDARD.decode(tag).ok())
                        .is_some_and(|tag| hmac::verify(&self.key, &signed, &tag).is_ok())
                });
                holds.then_some(id)
            }
            Scheme::Stripe => {
                let header = header("stripe-signature")?;
                let fields = || {
                    header
                        .split(',')
                        .filter_map(|field| field.trim().split_once('='))
                };
                let timestamp = fields().find(|(name, _)| *name == "t")?.1;
                fresh(timestamp)?;
                let signed = [timestamp.as_bytes(), b".", body].concat();
                let holds = fields().filter(|(name, _)| *name == "v1").any(|(_, tag)| {
                    hex::decode(tag).is_ok_and(|tag| hmac::verify(&self.key, &signed, &tag).is_ok())
                });
                if !holds {
                    return None;
                }
                let event: Json = serde_json::from_slice(body).ok()?;
                event["id"]
                    .as_str()
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned)
            }
        }
    }
}

/// A Standard Webhooks secret (`whsec_` and base64, at least 16 bytes) as
/// its HMAC key; one that does not decode is refused, at start.
pub(crate) fn standard_key(secret: &SecretString) -> Result<hmac::Key, String> {
    let secret = secret.expose_secret();
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|_| "a Standard Webhooks secret is whsec_ followed by base64".to_owned())?;
    if key.len() < 16 {
        return Err("the secret is shorter than 16 bytes".into());
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &key))
}

/// How a delivery ended, for the edge to answer.
#[derive(Debug, PartialEq)]
pub enum Received {
    /// Queued now, or already queued by an earlier delivery of the same event.
    Accepted,
    Unknown,
    /// Unsigned, badly signed, stale, or not JSON.
    Refused,
}

/// The declared hooks, and what queueing their events needs.
pub struct Inbound {
    hooks: HashMap<String, Hook>,
    settings: Settings,
    db: Database,
    wake: Arc<Notify>,
}

impl Inbound {
    pub fn new(
        hooks: HashMap<String, Hook>,
        settings: Settings,
        db: Database,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            hooks,
            settings,
            db,
            wake,
        }
    }

    /// Verifies one delivery to hook `name` and queues its event for the
    /// hook's function as `{ event }`.
    pub async fn receive(
        &self,
        name: &str,
        header: impl Fn(&str) -> Option<String>,
        body: &[u8],
    ) -> Result<Received, DbError> {
        let Some(hook) = self.hooks.get(name) else {
            return Ok(Received::Unknown);
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let Some(id) = hook.verify(header, body, now) else {
            tracing::warn!(
                hook = name,
                "a webhook delivery was refused: its signature or time did not hold"
            );
            return Ok(Received::Refused);
        };
        let Ok(event) = serde_json::from_slice::<Json>(body) else {
            return Ok(Received::Refused);
        };
        let job = NewJob {
            queue: hook.queue.clone(),
            key: Some(format!("hook:{name}:{id}")),
            ..NewJob::new(&hook.function, json!({ "event": event }))
        };
        let statement = match enqueue(&self.settings, &job) {
            Ok(statement) => statement,
            Err(error) => {
                tracing::warn!(hook = name, %error, "a webhook's event cannot be queued");
                return Ok(Received::Refused);
            }
        };
        let queued = self.db.transaction(vec![statement]).await?;
        if queued.first().is_some_and(|rows| !rows.is_empty()) {
            self.wake.notify_waiters();
        } else {
            tracing::info!(hook = name, event = %id, "a webhook event arrived again; it was queued before");
        }
        Ok(Received::Accepted)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn sign(key: &[u8], message: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message)
            .as_ref()
            .to_vec()
    }

    fn headers(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> + use<> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    const NOW: i64 = 1_790_000_000;

    #[test]
    fn standard_webhooks_signatures() {
        let raw = b"0123456789abcdef0123456789abcdef";
        let secret = SecretString::from(format!("whsec_{}", STANDARD.encode(raw)));
        let hook = Hook::new(
            Scheme::Standard,
            &secret,
            Duration::from_secs(300),
            ("f", "default"),
        )
        .unwrap();
        let body = br#"{"type":"invoice.paid"}"#;
        let signed = |id: &str, at: i64, body: &[u8]| {
            let tag = sign(
                raw,
                &[id.as_bytes(), b".", at.to_string().as_bytes(), b".", body].concat(),
            );
            headers(&[
                ("webhook-id", id.to_owned()),
                ("webhook-timestamp", at.to_string()),
                (
                    "webhook-signature",
                    format!("v1,bm90IGl0 v1,{}", STANDARD.encode(tag)),
                ),
            ])
        };
        assert_eq!(
            hook.verify(signed("msg_1", NOW, body), body, NOW),
            Some("msg_1".into())
        );
        assert_eq!(
            hook.verify(
                signed("msg_1", NOW, body),
                br#"{"type":"invoice.void"}"#,
                NOW
            ),
            None
        );
        assert_eq!(
            hook.verify(signed("msg_1", NOW - 301, body), body, NOW),
            None,
            "stale"
        );
        assert_eq!(
            hook.verify(signed("msg_1", NOW + 301, body), body, NOW),
            None,
            "from the future"
        );
        let other = SecretString::from(format!(
            "whsec_{}",
            STANDARD.encode(b"another secret of 32 bytes......")
        ));
        let wrong = Hook::new(
            Scheme::Standard,
            &other,
            Duration::from_secs(300),
            ("f", "default"),
        )
        .unwrap();
        assert_eq!(wrong.verify(signed("msg_1", NOW, body), body, NOW), None);
        assert_eq!(hook.verify(headers(&[]), body, NOW), None);
    }

    #[test]
    fn stripe_signatures() {
        let secret = "whsec_test_secret_for_stripe_tests";
        let hook = Hook::new(
            Scheme::Stripe,
            &SecretString::from(secret),
            Duration::from_secs(300),
            ("f", "default"),
        )
        .unwrap();
        let body = br#"{"id":"evt_1","type":"checkout.session.completed"}"#;
        let signed = |at: i64, body: &[u8]| {
            let tag = sign(
                secret.as_bytes(),
                &[at.to_string().as_bytes(), b".", body].concat(),
            );
            headers(&[(
                "stripe-signature",
                format!("t={at},v1={},v0=00", hex::encode(tag)),
            )])
        };
        assert_eq!(
            hook.verify(signed(NOW, body), body, NOW),
            Some("evt_1".into())
        );
        assert_eq!(
            hook.verify(signed(NOW, body), br#"{"id":"evt_2"}"#, NOW),
            None
        );
        assert_eq!(hook.verify(signed(NOW - 400, body), body, NOW), None);
        assert_eq!(
            hook.verify(
                headers(&[("stripe-signature", "t=1,v1=zz".into())]),
                body,
                NOW
            ),
            None
        );
    }

    #[test]
    fn weak_or_malformed_secrets_are_refused() {
        let tolerance = Duration::from_secs(300);
        assert!(
            Hook::new(
                Scheme::Stripe,
                &SecretString::from("short"),
                tolerance,
                ("f", "q")
            )
            .is_err()
        );
        assert!(
            Hook::new(
                Scheme::Standard,
                &SecretString::from("whsec_!!!"),
                tolerance,
                ("f", "q")
            )
            .is_err()
        );
    }
}

//! Email over SMTP. Auth queues each message as a job of the job queue
//! (`gatehouse:email`), written in the same transaction as the change that
//! causes it (a sign-up and its confirmation), so a crash cannot lose it; the
//! queue's workers hand it to [`Smtp::send`], retrying failures with backoff.
//!
//! Delivery is at least once: a crash after the SMTP server accepted a message
//! but before the job is marked done delivers it again when its lease runs out.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("GATEHOUSE_SMTP_URL is not a valid smtp:// or smtps:// URL")]
    Url,
    #[error("the sender address {0:?} is not a valid mailbox")]
    From(String),
}

/// One email, with a plain-text and an HTML part.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// An SMTP relay and the sender address.
#[derive(Clone)]
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Smtp {
    /// `smtp://user:password@host:587` (STARTTLS when offered; `?tls=required` to
    /// insist) or `smtps://…:465` (TLS from the start).
    pub fn new(url: &SecretString, from: &str) -> Result<Self, MailError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
            .map_err(|_| MailError::Url)?
            .timeout(Some(Duration::from_secs(20)))
            .build();
        let from = from.parse().map_err(|_| MailError::From(from.to_owned()))?;
        Ok(Self { transport, from })
    }

    pub async fn send(&self, message: &Message) -> Result<(), String> {
        let to: Mailbox = message
            .to
            .parse()
            .map_err(|_| "invalid recipient".to_owned())?;
        let email = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(message.subject.clone())
            .multipart(MultiPart::alternative_plain_html(
                message.text.clone(),
                message.html.clone(),
            ))
            .map_err(|e| e.to_string())?;
        // The error names the failure class; it never carries the credentials.
        self.transport
            .send(email)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

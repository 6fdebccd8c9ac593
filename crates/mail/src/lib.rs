//! Email through a durable outbox. A message is a row written in the same
//! transaction as the change that causes it (a sign-up and its confirmation), so
//! a crash cannot lose it; a sender task then delivers due messages over SMTP,
//! claiming each with a lease so that instances do not send it twice, and
//! retrying failures with exponential backoff.
//!
//! Delivery is at least once: a crash after the SMTP server accepted a message
//! but before it is marked sent delivers it again when the lease runs out.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_db::{Database, Sql, Statement, Value, timestamp};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("GATEHOUSE_SMTP_URL is not a valid smtp:// or smtps:// URL")]
    Url,
    #[error("the sender address {0:?} is not a valid mailbox")]
    From(String),
}

/// One email, with a plain-text and an HTML part.
#[derive(Debug, Clone)]
pub struct Message {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

const ENQUEUE: Sql = Sql::both(
    "INSERT INTO gatehouse_outbox (id, recipient, subject, text_body, html_body, created_at, next_attempt_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $6)",
);

/// Takes the oldest due message and leases it until `?2`.
const CLAIM: Sql = Sql {
    sqlite: "UPDATE gatehouse_outbox SET next_attempt_at = ?2 WHERE id = (SELECT id FROM gatehouse_outbox \
             WHERE sent_at IS NULL AND next_attempt_at <= ?1 ORDER BY next_attempt_at LIMIT 1) \
             AND next_attempt_at <= ?1 RETURNING id, recipient, subject, text_body, html_body, attempts",
    postgres: "UPDATE gatehouse_outbox SET next_attempt_at = $2 WHERE id = (SELECT id FROM gatehouse_outbox \
               WHERE sent_at IS NULL AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
               AND next_attempt_at <= $1 RETURNING id, recipient, subject, text_body, html_body, attempts",
};

const SENT: Sql = Sql::both(
    "UPDATE gatehouse_outbox SET sent_at = $2, attempts = attempts + 1, last_error = NULL WHERE id = $1",
);

const FAILED: Sql = Sql::both(
    "UPDATE gatehouse_outbox SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3 WHERE id = $1",
);

/// The statement that queues `message`; run it in the transaction that causes it.
pub fn enqueue(message: &Message) -> Statement {
    Statement::new(
        &ENQUEUE,
        vec![
            uuid::Uuid::new_v4().to_string().into(),
            message.to.clone().into(),
            message.subject.clone().into(),
            message.text.clone().into(),
            message.html.clone().into(),
            timestamp(OffsetDateTime::now_utc()).into(),
        ],
    )
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

    async fn send(&self, message: &Message) -> Result<(), String> {
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

const LEASE: Duration = Duration::from_secs(60);
const MAX_ATTEMPTS: i64 = 10;

fn backoff(attempts: i64) -> Duration {
    Duration::from_secs(
        2u64.saturating_pow(u32::try_from(attempts).unwrap_or(20))
            .min(3600),
    )
}

/// Delivers one due message, if any; returns whether there was one.
async fn deliver_one(db: &Database, smtp: &Smtp) -> Result<bool, gatehouse_db::DbError> {
    let now = OffsetDateTime::now_utc();
    let claimed = db
        .transaction(vec![Statement::new(
            &CLAIM,
            vec![timestamp(now).into(), timestamp(now + LEASE).into()],
        )])
        .await?;
    let Some(row) = claimed.first().and_then(|rows| rows.first()) else {
        return Ok(false);
    };
    let id = row.text(0)?.to_owned();
    let message = Message {
        to: row.text(1)?.to_owned(),
        subject: row.text(2)?.to_owned(),
        text: row.text(3)?.to_owned(),
        html: row.text(4)?.to_owned(),
    };
    let attempts = row.integer(5)?;
    let outcome = smtp.send(&message).await;
    let now = OffsetDateTime::now_utc();
    let update = match outcome {
        Ok(()) => Statement::new(&SENT, vec![id.into(), timestamp(now).into()]),
        Err(error) => {
            tracing::warn!(attempts = attempts + 1, %error, "sending an email failed; will retry");
            let next = if attempts + 1 >= MAX_ATTEMPTS {
                "9999-12-31T00:00:00.000000Z".to_owned()
            } else {
                timestamp(now + backoff(attempts))
            };
            Statement::new(&FAILED, vec![id.into(), next.into(), Value::Text(error)])
        }
    };
    db.transaction(vec![update]).await?;
    Ok(true)
}

/// Sends due messages until `stop` turns true: at once when woken, else every second.
pub fn spawn_sender(
    db: Database,
    smtp: Smtp,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            loop {
                match deliver_one(&db, &smtp).await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(error) => {
                        tracing::error!(%error, "the outbox could not be read");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
        }
    })
}

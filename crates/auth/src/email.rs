//! The emails auth sends: each with a plain-text part and an HTML part in which
//! every interpolated value is escaped.

use gatehouse_db::Statement;
use gatehouse_jobs::{EMAIL_QUEUE, Handler, NewJob};
use gatehouse_mail::Message;

/// What an email asks the reader to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Confirm,
    Recover,
    MagicLink,
    ChangeEmail,
}

/// Attempts an email gets before its job is dead, as the outbox gave it.
const MAX_ATTEMPTS: u32 = 10;

/// The statement that queues `message` for sending: a `gatehouse:email` job,
/// to run in the transaction of the change that causes the email.
pub fn queued(message: &Message) -> Statement {
    let payload = serde_json::to_value(message).unwrap_or_default();
    gatehouse_jobs::enqueue_own(&NewJob {
        queue: EMAIL_QUEUE.to_owned(),
        max_attempts: Some(MAX_ATTEMPTS),
        ..NewJob::new(&Handler::Own("email").column(), payload)
    })
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// One piece of an email's body.
pub enum Part<'a> {
    Text(&'a str),
    Link { url: &'a str, label: &'a str },
    Code(&'a str),
}

/// An email from its pieces: the text part plain, the HTML part escaped.
pub fn compose(to: &str, subject: &str, parts: &[Part<'_>]) -> Message {
    let mut text = String::new();
    let mut html = String::from("<!doctype html><html><body>");
    for part in parts {
        match part {
            Part::Text(words) => {
                text.push_str(&format!("{words}\n\n"));
                html.push_str(&format!("<p>{}</p>", escape(words)));
            }
            Part::Link { url, label } => {
                text.push_str(&format!("{label}:\n{url}\n\n"));
                html.push_str(&format!(
                    "<p><a href=\"{}\">{}</a></p>",
                    escape(url),
                    escape(label)
                ));
            }
            Part::Code(code) => {
                text.push_str(&format!("Or enter this code: {code}\n\n"));
                html.push_str(&format!(
                    "<p>Or enter this code: <strong>{}</strong></p>",
                    escape(code)
                ));
            }
        }
    }
    html.push_str("</body></html>");
    Message {
        to: to.to_owned(),
        subject: subject.to_owned(),
        text,
        html,
    }
}

const IGNORE: &str = "If you did not ask for this, ignore this email.";

pub fn message(purpose: Purpose, to: &str, link: &str, code: &str) -> Message {
    let (subject, lead, action) = match purpose {
        Purpose::Confirm => (
            "Confirm your email",
            "Confirm your email address to finish signing up.",
            "Confirm my email",
        ),
        Purpose::Recover => (
            "Reset your password",
            "Someone asked to reset the password of this account. If it was you:",
            "Reset my password",
        ),
        Purpose::MagicLink => ("Your sign-in link", "Use this link to sign in:", "Sign in"),
        Purpose::ChangeEmail => (
            "Confirm your new email",
            "Confirm this address to make it the email of your account.",
            "Confirm the change",
        ),
    };
    let link = Part::Link {
        url: link,
        label: action,
    };
    compose(
        to,
        subject,
        &[Part::Text(lead), link, Part::Code(code), Part::Text(IGNORE)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_escaped_in_html() {
        let message = message(
            Purpose::Confirm,
            "a@example.com",
            "https://x.example/?a=1&b=\"<script>",
            "123456",
        );
        assert!(
            message
                .html
                .contains("https://x.example/?a=1&amp;b=&quot;&lt;script&gt;"),
            "{}",
            message.html
        );
        assert!(!message.html.contains("<script>"));
        assert!(
            message.text.contains("https://x.example/?a=1&b=\"<script>"),
            "the text part is plain"
        );
        assert!(message.text.contains("123456") && message.html.contains("123456"));
    }
}

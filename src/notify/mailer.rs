//! The SMTP transport (lettre) and the one function that decides whether a failed send is worth
//! retrying.
//!
//! Every line of a message stays within RFC 5322's 998 octets, whatever the outbox row holds
//! (rows may predate the renderer's limits): the subject is one line of at most
//! `render::SUBJECT_BYTES`, which lettre RFC 2047-encodes and folds; the body goes through
//! lettre's `Body::new`, which picks 7bit only when every line is shorter than 76 octets and
//! quoted-printable or base64 (lines of 76) otherwise; References keeps only short tokens.

use std::time::SystemTime;

use lettre::message::header::ContentType;
use lettre::message::{Body, Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::config::{EmailConfig, SmtpTls};

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendFailure {
    /// 4xx, timeout, connection refused, TLS: try again later.
    Transient(String),
    /// 5xx: the server refused it for good.
    Permanent(String),
}

impl SendFailure {
    pub fn text(&self) -> &str {
        match self {
            SendFailure::Transient(t) | SendFailure::Permanent(t) => t,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    #[error("SMTP password: {0}")]
    Password(#[from] crate::secrets::SecretError),
    #[error("SMTP server {0}: {1}")]
    Server(String, String),
    #[error("address: {0}")]
    Address(String),
}

#[derive(Clone)]
enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// `.eml` files in a folder (`[email] file_dir`).
    File(AsyncFileTransport<Tokio1Executor>),
}

#[derive(Clone)]
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

/// Classifies a lettre error. lettre's messages carry the server's reply, never credentials.
pub fn classify(e: &lettre::transport::smtp::Error) -> SendFailure {
    let text = e.to_string();
    if e.is_permanent() {
        SendFailure::Permanent(text)
    } else {
        SendFailure::Transient(text)
    }
}

impl Mailer {
    pub fn new(cfg: &EmailConfig) -> Result<Mailer, MailerError> {
        let from = cfg
            .from
            .parse::<Mailbox>()
            .map_err(|e| MailerError::Address(format!("from: {e}")))?;
        if let Some(dir) = &cfg.file_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| MailerError::Server(dir.display().to_string(), e.to_string()))?;
            return Ok(Mailer {
                transport: Transport::File(AsyncFileTransport::new(dir)),
                from,
            });
        }
        let builder = match cfg.tls {
            SmtpTls::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&cfg.smtp_host)
                    .map_err(|e| MailerError::Server(cfg.smtp_host.clone(), e.to_string()))?
            }
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&cfg.smtp_host)
                .map_err(|e| MailerError::Server(cfg.smtp_host.clone(), e.to_string()))?,
            SmtpTls::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.smtp_host)
            }
        };
        let mut builder = builder.port(cfg.smtp_port).timeout(Some(cfg.timeout));
        if let (Some(user), Some(pw)) = (&cfg.username, &cfg.password) {
            let secret = pw.load()?;
            builder = builder.credentials(Credentials::new(
                user.clone(),
                secret.expose_secret().to_owned(),
            ));
        }
        Ok(Mailer {
            transport: Transport::Smtp(builder.build()),
            from,
        })
    }

    /// Sends one message; `Ok` carries the server's acceptance text.
    pub async fn send(&self, out: &Outgoing<'_>) -> Result<String, SendFailure> {
        let to: Mailbox = out
            .recipient
            .parse()
            .map_err(|e| SendFailure::Permanent(format!("recipient address: {e}")))?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(super::render::clean(
                out.subject,
                super::render::SUBJECT_BYTES,
            ))
            .message_id(Some(out.message_id.to_owned()))
            .date(out.date);
        if let Some(r) = out
            .references
            .map(safe_references)
            .filter(|r| !r.is_empty())
        {
            builder = builder.references(r);
        }
        let msg = builder
            .header(ContentType::TEXT_PLAIN)
            .body(Body::new(safe_body(out.body)))
            .map_err(|e| SendFailure::Permanent(format!("could not build the message: {e}")))?;
        match &self.transport {
            Transport::Smtp(t) => match t.send(msg).await {
                Ok(resp) => Ok(resp.message().collect::<Vec<_>>().join(" ")),
                Err(e) => Err(classify(&e)),
            },
            // A full disk or a missing folder may clear up: retry like a 4xx.
            Transport::File(t) => match t.send(msg).await {
                Ok(id) => Ok(format!("written as {id}.eml")),
                Err(e) => Err(SendFailure::Transient(format!(
                    "could not write the file: {e}"
                ))),
            },
        }
    }
}

/// The body with every control character but line feed and tab turned into a space: a bare CR
/// (or any other) from an old row cannot reach the wire, and lettre makes each LF a CRLF.
fn safe_body(body: &str) -> String {
    body.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// The References tokens that are short and free of control characters (a header line cannot
/// be folded inside a token).
fn safe_references(refs: &str) -> String {
    refs.split_ascii_whitespace()
        .filter(|t| t.len() <= 200 && !t.contains(|c: char| c.is_control()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One message to send.
pub struct Outgoing<'a> {
    pub recipient: &'a str,
    pub subject: &'a str,
    pub body: &'a str,
    pub message_id: &'a str,
    pub references: Option<&'a str>,
    pub date: SystemTime,
}

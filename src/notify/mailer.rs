//! The SMTP transport (lettre) and the one function that decides whether a failed send is worth
//! retrying.
//!
//! Every line of a message stays within RFC 5322's 998 octets, whatever the outbox row holds
//! (rows may predate the renderer's limits): the subject is one line of at most
//! `render::SUBJECT_BYTES`, which lettre RFC 2047-encodes and folds; the body goes through
//! lettre's `Body::new`, which picks 7bit only when every line is shorter than 76 octets and
//! quoted-printable or base64 (lines of 76) otherwise; References keeps only short tokens.
//!
//! A message with an HTML alternative is `multipart/alternative`: the plain text first (what
//! text-only clients and filters read), then the `text/html` part, each encoded the same way.
//!
//! With `[email] file_dir` each message is written as `20261201T183501.123Z-<hash>.eml` (its
//! `Date` in UTC, then a hash of its Message-ID), so the files sort by time and a message sent
//! again overwrites its own file.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use lettre::message::header::ContentType;
use lettre::message::{Body, Mailbox, Message, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
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
    /// `.eml` files in a folder (`[email] file_dir`), named by time.
    File(PathBuf),
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
                transport: Transport::File(dir.clone()),
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
        self.send_with_html(out, None).await
    }

    /// Sends one message, `multipart/alternative` with `html` as its `text/html` part when
    /// there is one (an outbox row's `html`), plain text only otherwise.
    pub async fn send_with_html(
        &self,
        out: &Outgoing<'_>,
        html: Option<&str>,
    ) -> Result<String, SendFailure> {
        let msg = self.build(out, html)?;
        match &self.transport {
            Transport::Smtp(t) => match t.send(msg).await {
                Ok(resp) => Ok(resp.message().collect::<Vec<_>>().join(" ")),
                Err(e) => Err(classify(&e)),
            },
            // A full disk or a missing folder may clear up: retry like a 4xx.
            Transport::File(dir) => {
                let name = eml_name(out.date, out.message_id);
                let path = dir.join(&name);
                let bytes = msg.formatted();
                match tokio::task::spawn_blocking(move || write_file(&path, &bytes)).await {
                    Ok(Ok(())) => Ok(format!("written as {name}")),
                    Ok(Err(e)) => Err(SendFailure::Transient(format!(
                        "could not write the file: {e}"
                    ))),
                    Err(e) => Err(SendFailure::Transient(format!(
                        "could not write the file: {e}"
                    ))),
                }
            }
        }
    }

    /// The message as it goes on the wire.
    fn build(&self, out: &Outgoing<'_>, html: Option<&str>) -> Result<Message, SendFailure> {
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
        let built = match html {
            Some(html) => builder.multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(Body::new(safe_body(out.body))),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(Body::new(safe_body(html))),
                    ),
            ),
            None => builder
                .header(ContentType::TEXT_PLAIN)
                .body(Body::new(safe_body(out.body))),
        };
        built.map_err(|e| SendFailure::Permanent(format!("could not build the message: {e}")))
    }
}

/// `20261201T183501.123Z-<16 hex digits>.eml`: the message's date in UTC (so names sort by
/// time), then a hash of its Message-ID (so two messages of the same millisecond do not
/// collide, and a message sent again overwrites its own file).
pub fn eml_name(date: SystemTime, message_id: &str) -> String {
    let at: DateTime<Utc> = date.into();
    format!(
        "{}-{:016x}.eml",
        at.format("%Y%m%dT%H%M%S%.3fZ"),
        super::render::fnv1a(message_id)
    )
}

/// Writes `bytes` to `path` whole or not at all: into a hidden temporary file first, then
/// renamed (a reader of the folder never sees half a message).
fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn config(dir: &Path) -> EmailConfig {
        EmailConfig {
            file_dir: Some(dir.to_owned()),
            smtp_host: String::new(),
            smtp_port: 25,
            tls: SmtpTls::None,
            username: None,
            password: None,
            from: "waba-monitor <monitor@example.com>".into(),
            to: vec!["ops@example.com".into()],
            timeout: Duration::from_secs(5),
            max_age: Duration::from_secs(3600),
            dashboard_url: None,
        }
    }

    fn outgoing<'a>(message_id: &'a str, date: SystemTime) -> Outgoing<'a> {
        Outgoing {
            recipient: "ops@example.com",
            subject: "[waba-monitor] CRITICAL +1 555-0100 quality GREEN → RED",
            body: "waba-monitor found 1 change that matters:\n\nCRITICAL  +1 555-0100: quality GREEN → RED\n",
            message_id,
            references: None,
            date,
        }
    }

    #[test]
    fn eml_names_sort_by_the_message_date() {
        // 2026-12-01T18:35:01.123Z
        let at = UNIX_EPOCH + Duration::from_millis(1_796_150_101_123);
        let name = eml_name(at, "<alerts-1-1.x@example.com>");
        assert!(
            name.starts_with("20261201T183501.123Z-") && name.ends_with(".eml"),
            "{name}"
        );
        assert_eq!(name.len(), "20261201T183501.123Z-".len() + 16 + 4, "{name}");
        let later = eml_name(at + Duration::from_millis(1), "<alerts-0-0.x@example.com>");
        let much_later = eml_name(at + Duration::from_secs(86_400 * 40), "<a@b>");
        assert!(
            name < later && later < much_later,
            "{name} {later} {much_later}"
        );
        assert_ne!(name, eml_name(at, "<alerts-2-2.x@example.com>"));
    }

    #[tokio::test]
    async fn a_file_dir_gets_one_eml_per_message_named_by_time_with_the_html_alternative() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mailer = Mailer::new(&config(dir.path())).expect("mailer");
        let early = UNIX_EPOCH + Duration::from_secs(1_796_150_101);
        let late = early + Duration::from_secs(60);
        // Sent out of order: the names still sort by the messages' dates.
        let html =
            "<!DOCTYPE html><html><body><table><tr><td>CRITICAL</td></tr></table></body></html>";
        mailer
            .send_with_html(&outgoing("<late@example.com>", late), Some(html))
            .await
            .expect("written");
        let reply = mailer
            .send(&outgoing("<early@example.com>", early))
            .await
            .expect("written");
        // Sent again (a resend after a crash): the same file.
        mailer
            .send(&outgoing("<early@example.com>", early))
            .await
            .expect("written");
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(names[0], eml_name(early, "<early@example.com>"));
        assert_eq!(names[1], eml_name(late, "<late@example.com>"));
        assert_eq!(reply, format!("written as {}", names[0]));
        let plain = std::fs::read_to_string(dir.path().join(&names[0])).expect("read");
        assert!(
            plain.contains("Content-Type: text/plain; charset=utf-8"),
            "{plain}"
        );
        assert!(!plain.contains("multipart"), "{plain}");
        let both = std::fs::read_to_string(dir.path().join(&names[1])).expect("read");
        let alt = both
            .find("Content-Type: multipart/alternative")
            .expect(&both);
        let text = both[alt..].find("Content-Type: text/plain").expect(&both);
        let html = both[alt..].find("Content-Type: text/html").expect(&both);
        assert!(text < html, "plain text first:\n{both}");
    }
}

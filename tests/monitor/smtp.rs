//! A real SMTP server on loopback for the tests of email alerts. It speaks the part of ESMTP that
//! lettre uses (EHLO/HELO, AUTH PLAIN and LOGIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT), records
//! every message it accepts, and can be told to refuse recipients or messages, to require
//! authentication, to stall after DATA, or to go down. Like real servers it enforces RFC 5321's
//! limit of 1000 octets per text line (CRLF included): a message with a longer line is refused
//! with "500 5.5.2 Line too long".

// The alert tests that use most of this API are written separately, and each test binary that
// includes the module uses only part of it, so unused items are expected here.
#![allow(dead_code)]

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::{JoinHandle, JoinSet};

/// The name the server gives itself in its greeting and EHLO reply.
const HOST: &str = "localhost";
/// The SIZE advertised in EHLO; larger messages are refused with 552 after DATA.
const MAX_SIZE: usize = 10_485_760;
/// RFC 5321 4.5.3.1.6: a text line is at most 1000 octets including its CRLF.
pub const MAX_LINE: usize = 1000;
/// "Username:" and "Password:" in base64, the prompts of AUTH LOGIN.
const LOGIN_USERNAME_PROMPT: &str = "VXNlcm5hbWU6";
const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

/// One message the server answered 250 after DATA.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// The reverse path of MAIL FROM without angle brackets ("" for the null path `<>`).
    pub mail_from: String,
    /// The accepted recipients, in order; refused ones are left out.
    pub rcpt_to: Vec<String>,
    /// The raw DATA, dot-unstuffed, with its CRLF line ends. It always ends with the CRLF of
    /// the client's "CRLF . CRLF" terminator; lettre sends that after the message even when the
    /// message already ends with CRLF, so its messages arrive with one more empty line.
    pub data: String,
    /// The credentials of the connection as "user\0password", whichever mechanism was used,
    /// or None if the client did not authenticate.
    pub auth: Option<String>,
}

impl ReceivedMail {
    /// The first header called `name` (case-insensitive), unfolded, trimmed, and with RFC 2047
    /// encoded words (`=?utf-8?b?...?=`, `=?utf-8?q?...?=`) decoded, because lettre encodes
    /// non-ASCII subjects and display names that way.
    pub fn header(&self, name: &str) -> Option<String> {
        self.raw_header(name).map(|v| decode_encoded_words(&v))
    }

    /// Like [`ReceivedMail::header`], but with encoded words left as they were sent.
    pub fn raw_header(&self, name: &str) -> Option<String> {
        self.headers()
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Every header as (name, unfolded and trimmed value), in the order sent.
    pub fn headers(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for line in self.sections().0.split_inclusive('\n') {
            let line = line.trim_end_matches(['\r', '\n']);
            if line.starts_with([' ', '\t']) {
                // Unfolding removes the line break before the whitespace and keeps the rest.
                if let Some((_, value)) = out.last_mut() {
                    value.push_str(line);
                }
            } else if let Some((name, value)) = line.split_once(':') {
                out.push((name.trim().to_owned(), value.to_owned()));
            }
        }
        for (_, value) in &mut out {
            *value = value.trim().to_owned();
        }
        out
    }

    /// The plain text of the message: the body after the blank line that ends the headers (or,
    /// for a `multipart/alternative` message, its `text/plain` part), decoded when its
    /// Content-Transfer-Encoding is quoted-printable or base64 and read as UTF-8, without
    /// trailing line breaks. Trailing line breaks are dropped because the terminator adds one or
    /// two of them depending on the client, and an encoding may or may not carry one, so they
    /// say nothing about what was meant.
    pub fn body(&self) -> String {
        self.part("text/plain").unwrap_or_else(|| {
            let (head, raw) = self.sections();
            decode_part(head, raw)
        })
    }

    /// The `text/html` part of a multipart message, decoded; `None` without one.
    pub fn html(&self) -> Option<String> {
        self.part("text/html")
    }

    /// The first part of a multipart message whose Content-Type is `mime`, decoded.
    fn part(&self, mime: &str) -> Option<String> {
        let ctype = self.raw_header("Content-Type")?;
        if !ctype.to_ascii_lowercase().starts_with("multipart/") {
            return None;
        }
        let boundary = ctype.split(';').find_map(|p| {
            let p = p.trim();
            p.strip_prefix("boundary=")
                .map(|b| b.trim_matches('"').to_owned())
        })?;
        let delimiter = format!("--{boundary}");
        for chunk in self.sections().1.split(delimiter.as_str()).skip(1) {
            if chunk.starts_with("--") {
                break;
            }
            let chunk = chunk.trim_start_matches(['\r', '\n']);
            let (head, body) = match chunk.find("\r\n\r\n") {
                Some(i) => (&chunk[..i], &chunk[i + 4..]),
                None => match chunk.find("\n\n") {
                    Some(i) => (&chunk[..i], &chunk[i + 2..]),
                    None => continue,
                },
            };
            let is_it = head.lines().any(|l| {
                let l = l.to_ascii_lowercase();
                l.starts_with("content-type:") && l.contains(mime)
            });
            if is_it {
                return Some(decode_part(head, body));
            }
        }
        None
    }

    /// The user and password the client authenticated with, if it did.
    pub fn credentials(&self) -> Option<(String, String)> {
        let (user, pass) = self.auth.as_deref()?.split_once('\0')?;
        Some((user.to_owned(), pass.to_owned()))
    }

    /// The header section (without the blank line) and the body.
    fn sections(&self) -> (&str, &str) {
        let mut offset = 0;
        for line in self.data.split_inclusive('\n') {
            if line == "\r\n" || line == "\n" {
                return (&self.data[..offset], &self.data[offset + line.len()..]);
            }
            offset += line.len();
        }
        (&self.data, "")
    }
}

/// A body decoded by the Content-Transfer-Encoding its header section `head` declares.
fn decode_part(head: &str, raw: &str) -> String {
    let encoding = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case("Content-Transfer-Encoding")
                .then(|| v.trim().to_ascii_lowercase())
        })
        .unwrap_or_default();
    let bytes = match encoding.as_str() {
        "quoted-printable" => decode_quoted_printable(raw),
        "base64" => base64_decode(&raw.split_whitespace().collect::<String>())
            .unwrap_or_else(|| panic!("the body is declared base64 but is not: {raw:?}")),
        _ => raw.as_bytes().to_vec(),
    };
    String::from_utf8_lossy(&bytes)
        .trim_end_matches(['\r', '\n'])
        .to_owned()
}

/// A reply the test asked for in place of the normal one, for a number of uses or until changed.
struct Override {
    code: u16,
    text: String,
    remaining: Option<u32>,
}

impl Override {
    fn new(code: u16, text: &str, times: Option<u32>) -> Option<Override> {
        // Zero times means no override at all, rather than one that never runs out.
        (times != Some(0)).then(|| Override {
            code,
            text: text.to_owned(),
            remaining: times,
        })
    }
}

/// Uses up one application of the override in `slot`, if any, and returns its reply.
fn take_override(slot: &mut Option<Override>) -> Option<(u16, String)> {
    let current = slot.as_mut()?;
    let reply = (current.code, current.text.clone());
    let exhausted = match current.remaining.as_mut() {
        Some(n) => {
            *n -= 1;
            *n == 0
        }
        None => false,
    };
    if exhausted {
        *slot = None;
    }
    Some(reply)
}

#[derive(Default)]
struct State {
    messages: Vec<ReceivedMail>,
    attempts: usize,
    data_reply: Option<Override>,
    rcpt_reply: Option<Override>,
    auth_required: bool,
    /// DATA transactions still to be left unanswered after their final "." (None = until
    /// changed), as by a server that hangs; see `stall_data`.
    stall: Option<Option<u32>>,
    /// DATA transactions that reached their final "." and were left unanswered.
    stalled: usize,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Woken each time a message is accepted, for `wait_for`.
    accepted: Notify,
    /// Woken each time a DATA transaction is left unanswered, for `wait_for_stalled`.
    stalled: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not hide its own failure behind
        // poison errors in every other session.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A loopback SMTP server that records what it receives. Dropping it shuts it down too; `stop`
/// does so and also waits until the port is closed.
pub struct SmtpSink {
    shared: Arc<Shared>,
    port: u16,
    shutdown: oneshot::Sender<()>,
    accept_loop: JoinHandle<()>,
}

impl SmtpSink {
    /// Binds 127.0.0.1 on a free port and serves connections in the background; the port
    /// accepts connections as soon as this returns.
    pub async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the SMTP sink to loopback");
        let port = listener
            .local_addr()
            .expect("the SMTP sink's local address")
            .port();
        let shared = Arc::new(Shared::default());
        let (shutdown, shutdown_rx) = oneshot::channel();
        let accept_loop = tokio::spawn(accept_loop(listener, Arc::clone(&shared), shutdown_rx));
        SmtpSink {
            shared,
            port,
            shutdown,
            accept_loop,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The messages accepted so far (answered 250 after DATA), oldest first.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.shared.lock().messages.clone()
    }

    /// How many DATA transactions reached their final "." so far, accepted or refused.
    pub fn attempts(&self) -> usize {
        self.shared.lock().attempts
    }

    /// The reply to the end of DATA for the next `times` messages (None = until changed), e.g.
    /// (451, "4.3.0 try again later") or (554, "5.7.1 rejected"); afterwards 250. A 2xx code
    /// accepts the message with that text.
    pub fn reply_to_data(&self, code: u16, text: &str, times: Option<u32>) {
        self.shared.lock().data_reply = Override::new(code, text, times);
    }

    /// The reply to the next `times` well-formed RCPT commands (None = until changed); a
    /// recipient refused this way is left out of the message's `rcpt_to`.
    pub fn reply_to_rcpt(&self, code: u16, text: &str, times: Option<u32>) {
        self.shared.lock().rcpt_reply = Override::new(code, text, times);
    }

    /// Leaves the next `times` DATA transactions (None = until changed, Some(0) = none)
    /// unanswered once their final "." arrived: the message is counted in `attempts` but
    /// neither accepted nor refused, and the session waits until the client goes away or the
    /// sink stops. For tests of a client that dies in the middle of a send.
    pub fn stall_data(&self, times: Option<u32>) {
        self.shared.lock().stall = (times != Some(0)).then_some(times);
    }

    /// How many DATA transactions were left unanswered so far.
    pub fn stalled(&self) -> usize {
        self.shared.lock().stalled
    }

    /// Waits until at least `n` DATA transactions were left unanswered; panics after `timeout`.
    pub async fn wait_for_stalled(&self, n: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut notified = std::pin::pin!(self.shared.stalled.notified());
            notified.as_mut().enable();
            if self.shared.lock().stalled >= n {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let state = self.shared.lock();
                panic!(
                    "expected {n} stalled DATA transactions within {timeout:?}, got {} ({} DATA attempts)",
                    state.stalled, state.attempts
                );
            }
        }
    }

    /// Advertises AUTH PLAIN LOGIN in EHLO, accepts any credentials and records them, and
    /// refuses MAIL with 530 before authentication. Off: AUTH is an unknown command (502).
    pub fn require_auth(&self, on: bool) {
        self.shared.lock().auth_required = on;
    }

    /// Waits until at least `n` messages were accepted and returns them all; panics after
    /// `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut notified = std::pin::pin!(self.shared.accepted.notified());
            // Registering before looking at the count means that a message accepted in between
            // still wakes this loop.
            notified.as_mut().enable();
            {
                let state = self.shared.lock();
                if state.messages.len() >= n {
                    return state.messages.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let state = self.shared.lock();
                panic!(
                    "expected {n} accepted messages within {timeout:?}, got {} ({} DATA attempts)",
                    state.messages.len(),
                    state.attempts
                );
            }
        }
    }

    /// Stops listening and closes every open connection, including ones a client pooled; when
    /// this returns, connecting to the port is refused.
    pub async fn stop(self) {
        let SmtpSink {
            shutdown,
            accept_loop,
            ..
        } = self;
        // The accept loop also stops when the sender is simply dropped; sending just says so.
        let _ = shutdown.send(());
        accept_loop
            .await
            .expect("the SMTP sink's accept loop ended cleanly");
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
) {
    // Sessions live in this set so that shutting down also closes connections lettre pooled,
    // which a test of "server down" needs.
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            // Either an explicit stop or the sink being dropped.
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                // A failed accept concerns only that one client, so the loop goes on.
                if let Ok((stream, _)) = accepted {
                    sessions.spawn(Session::new(stream, Arc::clone(&shared)).run());
                }
            }
            // Reaping finished sessions keeps the set from growing over a long test.
            Some(_) = sessions.join_next() => {}
        }
    }
    drop(listener);
    sessions.shutdown().await;
}

/// One client connection and its current mail transaction.
struct Session {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    shared: Arc<Shared>,
    auth: Option<String>,
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
}

impl Session {
    fn new(stream: TcpStream, shared: Arc<Shared>) -> Session {
        let (reader, writer) = stream.into_split();
        Session {
            reader: BufReader::new(reader),
            writer,
            shared,
            auth: None,
            mail_from: None,
            rcpt_to: Vec::new(),
        }
    }

    async fn run(mut self) {
        // An I/O error or end of stream only means the client went away, which ends the
        // session; a transaction cut off mid-DATA is not recorded.
        let _ = self.serve().await;
    }

    async fn serve(&mut self) -> io::Result<()> {
        self.reply(&format!("220 {HOST} ESMTP test")).await?;
        loop {
            let line = self.read_line().await?;
            let line = String::from_utf8_lossy(trim_eol(&line)).into_owned();
            let (verb, arg) = match line.split_once(' ') {
                Some((verb, arg)) => (verb, arg.trim()),
                None => (line.as_str(), ""),
            };
            match verb.to_ascii_uppercase().as_str() {
                "EHLO" => self.ehlo(arg).await?,
                "HELO" => {
                    self.reset();
                    self.reply(&format!("250 {HOST}")).await?;
                }
                "MAIL" => self.mail(arg).await?,
                "RCPT" => self.rcpt(arg).await?,
                "DATA" => self.data().await?,
                "RSET" => {
                    self.reset();
                    self.reply("250 2.0.0 OK").await?;
                }
                "NOOP" => self.reply("250 2.0.0 OK").await?,
                "QUIT" => {
                    self.reply("221 2.0.0 Bye").await?;
                    return Ok(());
                }
                "AUTH" => self.auth(arg).await?,
                _ => self.reply("502 5.5.2 Command not recognized").await?,
            }
        }
    }

    fn reset(&mut self) {
        self.mail_from = None;
        self.rcpt_to.clear();
    }

    async fn ehlo(&mut self, domain: &str) -> io::Result<()> {
        if domain.is_empty() {
            return self.reply("501 5.5.4 EHLO needs a domain").await;
        }
        self.reset();
        let auth = self.shared.lock().auth_required;
        // PIPELINING is not offered: this server answers strictly one command at a time.
        let mut features = vec![
            HOST.to_owned(),
            "8BITMIME".into(),
            format!("SIZE {MAX_SIZE}"),
        ];
        if auth {
            features.push("AUTH PLAIN LOGIN".into());
        }
        features.push("SMTPUTF8".into());
        let last = features.len() - 1;
        let reply: String = features
            .iter()
            .enumerate()
            .map(|(i, f)| format!("250{}{f}\r\n", if i == last { ' ' } else { '-' }))
            .collect();
        self.writer.write_all(reply.as_bytes()).await
    }

    async fn mail(&mut self, arg: &str) -> io::Result<()> {
        let auth_required = self.shared.lock().auth_required;
        if auth_required && self.auth.is_none() {
            return self.reply("530 5.7.0 Authentication required").await;
        }
        if self.mail_from.is_some() {
            return self.reply("503 5.5.1 Nested MAIL command").await;
        }
        // Parameters after the path (SIZE=, BODY=8BITMIME, SMTPUTF8) are accepted and ignored.
        match parse_path(arg, "FROM:") {
            Some(path) => {
                self.mail_from = Some(path);
                self.reply("250 2.1.0 OK").await
            }
            None => self.reply("501 5.5.4 Syntax: MAIL FROM:<address>").await,
        }
    }

    async fn rcpt(&mut self, arg: &str) -> io::Result<()> {
        if self.mail_from.is_none() {
            return self.reply("503 5.5.1 Need MAIL before RCPT").await;
        }
        let Some(path) = parse_path(arg, "TO:") else {
            return self.reply("501 5.5.4 Syntax: RCPT TO:<address>").await;
        };
        let (code, text) = take_override(&mut self.shared.lock().rcpt_reply)
            .unwrap_or_else(|| (250, "2.1.5 OK".to_owned()));
        if is_positive(code) {
            self.rcpt_to.push(path);
        }
        self.reply(&format!("{code} {text}")).await
    }

    async fn data(&mut self) -> io::Result<()> {
        if self.mail_from.is_none() {
            return self.reply("503 5.5.1 Need MAIL before DATA").await;
        }
        if self.rcpt_to.is_empty() {
            return self.reply("554 5.5.1 No valid recipients").await;
        }
        self.reply("354 End data with <CR><LF>.<CR><LF>").await?;
        let mut data = Vec::new();
        let mut too_long = false;
        loop {
            let line = self.read_data_line().await?;
            if line == b".\r\n" {
                break;
            }
            // Measured as sent, before unstuffing: the limit is on the wire.
            too_long |= line.len() > MAX_LINE;
            // The client doubled every leading dot so that a lone "." in the text cannot end
            // the data; one of them goes again here.
            data.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
        }
        let mail = ReceivedMail {
            mail_from: self.mail_from.take().unwrap_or_default(),
            rcpt_to: std::mem::take(&mut self.rcpt_to),
            data: String::from_utf8_lossy(&data).into_owned(),
            auth: self.auth.clone(),
        };
        let stall = {
            let mut state = self.shared.lock();
            match state.stall {
                Some(remaining) => {
                    state.attempts += 1;
                    state.stalled += 1;
                    state.stall = match remaining {
                        Some(n) if n <= 1 => None,
                        Some(n) => Some(Some(n - 1)),
                        None => Some(None),
                    };
                    true
                }
                None => false,
            }
        };
        if stall {
            self.shared.stalled.notify_waiters();
            // Never answers: the session ends when the client closes the connection (the read
            // sees the end of the stream) or when the sink stops.
            let mut rest = Vec::new();
            while self.reader.read_until(b'\n', &mut rest).await? != 0 {
                rest.clear();
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let (code, text) = {
            let mut state = self.shared.lock();
            state.attempts += 1;
            let (code, text) = if too_long {
                (500, "5.5.2 Line too long".to_owned())
            } else if data.len() > MAX_SIZE {
                (552, "5.3.4 Message size exceeds fixed limit".to_owned())
            } else {
                take_override(&mut state.data_reply)
                    .unwrap_or_else(|| (250, "2.0.0 OK: queued".to_owned()))
            };
            // Recorded before the reply goes out, so that a client that saw 250 can look at
            // messages() right away.
            if is_positive(code) {
                state.messages.push(mail);
            }
            (code, text)
        };
        if is_positive(code) {
            self.shared.accepted.notify_waiters();
        }
        self.reply(&format!("{code} {text}")).await
    }

    async fn auth(&mut self, arg: &str) -> io::Result<()> {
        let auth_offered = self.shared.lock().auth_required;
        if !auth_offered {
            return self.reply("502 5.5.1 AUTH not available").await;
        }
        if self.auth.is_some() {
            return self.reply("503 5.5.1 Already authenticated").await;
        }
        if self.mail_from.is_some() {
            return self
                .reply("503 5.5.1 AUTH not allowed during a mail transaction")
                .await;
        }
        let (mechanism, initial) = match arg.split_once(' ') {
            Some((mechanism, initial)) => (mechanism, Some(initial.trim().to_owned())),
            None => (arg, None),
        };
        let credentials = match mechanism.to_ascii_uppercase().as_str() {
            "PLAIN" => {
                let response = match initial {
                    Some(response) => response,
                    None => self.challenge("").await?,
                };
                match decode_response(&response).and_then(|bytes| parse_plain(&bytes)) {
                    Ok(credentials) => credentials,
                    Err(reply) => return self.reply(reply).await,
                }
            }
            "LOGIN" => {
                let user = match initial {
                    Some(user) => user,
                    None => self.challenge(LOGIN_USERNAME_PROMPT).await?,
                };
                let user = match decode_response(&user) {
                    Ok(user) => user,
                    Err(reply) => return self.reply(reply).await,
                };
                let pass = self.challenge(LOGIN_PASSWORD_PROMPT).await?;
                let pass = match decode_response(&pass) {
                    Ok(pass) => pass,
                    Err(reply) => return self.reply(reply).await,
                };
                format!(
                    "{}\0{}",
                    String::from_utf8_lossy(&user),
                    String::from_utf8_lossy(&pass)
                )
            }
            _ => {
                return self
                    .reply("504 5.5.4 Unrecognized authentication type")
                    .await;
            }
        };
        self.auth = Some(credentials);
        self.reply("235 2.7.0 Authentication successful").await
    }

    /// One line of DATA including its CRLF. A bare LF does not end a line here, because lettre
    /// (like RFC 5321) only dot-stuffs after CRLF: a "." after a bare LF is text.
    async fn read_data_line(&mut self) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        loop {
            if self.reader.read_until(b'\n', &mut line).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if line.ends_with(b"\r\n") {
                return Ok(line);
            }
        }
    }

    /// Sends a 334 prompt and returns the client's (still base64) answer.
    async fn challenge(&mut self, prompt: &str) -> io::Result<String> {
        self.reply(&format!("334 {prompt}")).await?;
        let line = self.read_line().await?;
        Ok(String::from_utf8_lossy(trim_eol(&line)).trim().to_owned())
    }

    /// One line including its line end; end of stream is an error because every caller is in
    /// the middle of the conversation.
    async fn read_line(&mut self) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        if self.reader.read_until(b'\n', &mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line)
    }

    async fn reply(&mut self, line: &str) -> io::Result<()> {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
    }
}

fn is_positive(code: u16) -> bool {
    (200..300).contains(&code)
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The address in `FROM:<a@b> params` or `TO:<a@b>`, with the keyword matched case-insensitively.
fn parse_path(arg: &str, keyword: &str) -> Option<String> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start().strip_prefix('<')?;
    let end = rest.find('>')?;
    Some(rest[..end].to_owned())
}

/// Decodes one SASL response, or gives the reply that refuses it.
fn decode_response(response: &str) -> Result<Vec<u8>, &'static str> {
    match response {
        "*" => Err("501 5.0.0 Authentication cancelled"),
        // RFC 4954: a lone "=" is an empty response.
        "=" => Ok(Vec::new()),
        _ => base64_decode(response).ok_or("501 5.5.2 Cannot decode the response"),
    }
}

/// Turns PLAIN's "authzid NUL user NUL password" into "user NUL password".
fn parse_plain(bytes: &[u8]) -> Result<String, &'static str> {
    let text = String::from_utf8_lossy(bytes);
    let mut parts = text.split('\0');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_authzid), Some(user), Some(pass), None) => Ok(format!("{user}\0{pass}")),
        _ => Err("501 5.5.2 PLAIN expects authzid NUL user NUL password"),
    }
}

/// Standard base64 with optional padding; whitespace (line breaks in bodies) is skipped and
/// anything else outside the alphabet makes it None.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0;
    let mut padded = false;
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                padded = true;
                continue;
            }
            b' ' | b'\t' | b'\r' | b'\n' => continue,
            _ => return None,
        };
        if padded {
            return None;
        }
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Six leftover bits mean a lone final character, which cannot encode a byte.
    (bits < 6).then_some(out)
}

/// Quoted-printable (RFC 2045): `=XX` is a byte, `=` at the end of a line (after optional
/// transport padding) is a soft line break; a malformed `=` is kept as it is.
fn decode_quoted_printable(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let rest = &bytes[i + 1..];
            let padding = rest
                .iter()
                .take_while(|b| **b == b' ' || **b == b'\t')
                .count();
            let after = &rest[padding..];
            if after.starts_with(b"\r\n") {
                i += 1 + padding + 2;
                continue;
            }
            if after.starts_with(b"\n") {
                i += 1 + padding + 1;
                continue;
            }
            if after.is_empty() {
                // A soft line break on the very last line joins nothing more.
                break;
            }
            if let (Some(high), Some(low)) = (
                rest.first().and_then(hex_value),
                rest.get(1).and_then(hex_value),
            ) {
                out.push((high << 4) | low);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn hex_value(b: &u8) -> Option<u8> {
    char::from(*b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Decodes RFC 2047 encoded words in a header value; whitespace between two adjacent encoded
/// words is dropped, as the RFC says, because encoders split long text that way.
fn decode_encoded_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut after_word = false;
    while let Some((start, end, decoded)) = find_encoded_word(rest) {
        let before = &rest[..start];
        if !(after_word && before.trim().is_empty()) {
            out.push_str(before);
        }
        out.push_str(&decoded);
        after_word = true;
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The first well-formed `=?charset?B|Q?text?=` in `s`: its start, end and decoded text.
fn find_encoded_word(s: &str) -> Option<(usize, usize, String)> {
    let mut from = 0;
    while let Some(found) = s[from..].find("=?") {
        let start = from + found;
        if let Some((len, decoded)) = parse_encoded_word(&s[start + 2..]) {
            return Some((start, start + 2 + len, decoded));
        }
        from = start + 2;
    }
    None
}

/// Parses `charset?enc?text?=` (the part after "=?"), returning its length and decoded text.
fn parse_encoded_word(s: &str) -> Option<(usize, String)> {
    let (charset, rest) = s.split_once('?')?;
    let (encoding, rest) = rest.split_once('?')?;
    let end = rest.find("?=")?;
    let text = &rest[..end];
    if charset.is_empty() || text.contains([' ', '\t']) {
        return None;
    }
    let bytes = match encoding {
        "B" | "b" => base64_decode(text)?,
        "Q" | "q" => decode_quoted_printable(&text.replace('_', " ")),
        _ => return None,
    };
    let len = charset.len() + 1 + encoding.len() + 1 + text.len() + 2;
    // RFC 2231 allows a language after the charset ("utf-8*en").
    let charset = charset.split('*').next().unwrap_or(charset);
    let decoded = if charset.eq_ignore_ascii_case("iso-8859-1") {
        bytes.iter().map(|b| char::from(*b)).collect()
    } else {
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Some((len, decoded))
}

mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    /// A plain SMTP client over a real socket, so the tests see exactly what a client would.
    struct Client {
        reader: BufReader<OwnedReadHalf>,
        writer: OwnedWriteHalf,
    }

    impl Client {
        async fn connect(sink: &SmtpSink) -> Client {
            let stream = TcpStream::connect(("127.0.0.1", sink.port()))
                .await
                .expect("connect to the sink");
            let (reader, writer) = stream.into_split();
            let mut client = Client {
                reader: BufReader::new(reader),
                writer,
            };
            let (code, text) = client.read_reply().await;
            assert_eq!((code, text.as_str()), (220, "localhost ESMTP test"));
            client
        }

        /// Reads one reply, joining the lines of a multi-line one with "\n".
        async fn read_reply(&mut self) -> (u16, String) {
            let mut lines = Vec::new();
            loop {
                let mut line = String::new();
                let n = self
                    .reader
                    .read_line(&mut line)
                    .await
                    .expect("read a reply");
                assert!(n > 0, "the server closed the connection");
                assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
                let line = line.trim_end_matches("\r\n");
                let code: u16 = line[..3].parse().expect("a reply code");
                lines.push(line.get(4..).unwrap_or("").to_owned());
                if line.as_bytes().get(3) != Some(&b'-') {
                    return (code, lines.join("\n"));
                }
            }
        }

        async fn write(&mut self, raw: &str) {
            self.writer
                .write_all(raw.as_bytes())
                .await
                .expect("write to the sink");
        }

        async fn send(&mut self, command: &str) -> (u16, String) {
            self.write(&format!("{command}\r\n")).await;
            self.read_reply().await
        }

        /// Sends `command` and checks the reply code, returning the reply text.
        async fn expect(&mut self, command: &str, code: u16) -> String {
            let (got, text) = self.send(command).await;
            assert_eq!(got, code, "{command:?} was answered {got} {text}");
            text
        }

        /// One whole transaction; `message` is sent dot-stuffed, as a client must.
        async fn deliver(&mut self, from: &str, to: &[&str], message: &str) -> (u16, String) {
            self.expect(&format!("MAIL FROM:<{from}>"), 250).await;
            for rcpt in to {
                self.expect(&format!("RCPT TO:<{rcpt}>"), 250).await;
            }
            self.expect("DATA", 354).await;
            let stuffed: String = message
                .split_inclusive("\r\n")
                .map(|line| {
                    if line.starts_with('.') {
                        format!(".{line}")
                    } else {
                        line.to_owned()
                    }
                })
                .collect();
            self.write(&stuffed).await;
            self.send(".").await
        }
    }

    fn base64_encode(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    fn alert(subject: &str, body: &str) -> String {
        format!(
            "From: monitor@example.com\r\nTo: ops@example.com\r\nSubject: {subject}\r\n\r\n{body}\r\n"
        )
    }

    #[tokio::test]
    async fn a_message_is_accepted_with_its_envelope_headers_and_body_readable() {
        let sink = SmtpSink::start().await;
        let mut client = Client::connect(&sink).await;
        let ehlo = client.expect("EHLO client.example", 250).await;
        assert_eq!(
            ehlo.lines().collect::<Vec<_>>(),
            ["localhost", "8BITMIME", "SIZE 10485760", "SMTPUTF8"]
        );
        let message = "From: monitor@example.com\r\n\
                       To: ops@example.com\r\n\
                       Subject: Quality of\r\n \t+49 30 1234567 is RED\r\n\
                       X-Empty:\r\n\
                       \r\n\
                       The number dropped.\r\n\
                       Check the dashboard.\r\n";
        let (code, text) = client
            .deliver(
                "monitor@example.com",
                &["ops@example.com", "oncall@example.com"],
                message,
            )
            .await;
        assert_eq!(code, 250, "{text}");
        client.expect("QUIT", 221).await;

        let mails = sink.wait_for(1, SECOND).await;
        assert_eq!(mails.len(), 1);
        let mail = &mails[0];
        assert_eq!(mail.mail_from, "monitor@example.com");
        assert_eq!(mail.rcpt_to, ["ops@example.com", "oncall@example.com"]);
        assert_eq!(mail.data, message);
        assert_eq!(mail.auth, None);
        // Header names match whatever their case, and the folded subject comes back on one line.
        assert_eq!(
            mail.header("SUBJECT").as_deref(),
            Some("Quality of \t+49 30 1234567 is RED")
        );
        assert_eq!(mail.header("x-empty").as_deref(), Some(""));
        assert_eq!(mail.header("Cc"), None);
        assert_eq!(mail.body(), "The number dropped.\r\nCheck the dashboard.");
        assert_eq!(sink.attempts(), 1);
    }

    #[tokio::test]
    async fn dot_stuffed_lines_are_unstuffed_and_only_crlf_ends_a_line() {
        let sink = SmtpSink::start().await;
        let mut client = Client::connect(&sink).await;
        client.expect("HELO client.example", 250).await;
        client.expect("MAIL FROM:<a@example.com>", 250).await;
        client.expect("RCPT TO:<b@example.com>", 250).await;
        client.expect("DATA", 354).await;
        // Written by hand, stuffed as a client must stuff it.
        client
            .write("Subject: dots\r\n\r\n..leading dot\r\n..\r\n...\r\nbare\n.\nlf\r\nend.\r\n")
            .await;
        client.expect(".", 250).await;

        let mail = &sink.messages()[0];
        assert_eq!(
            mail.data,
            "Subject: dots\r\n\r\n.leading dot\r\n.\r\n..\r\nbare\n.\nlf\r\nend.\r\n"
        );
        assert_eq!(
            mail.body(),
            ".leading dot\r\n.\r\n..\r\nbare\n.\nlf\r\nend."
        );
    }

    #[tokio::test]
    async fn a_message_ending_in_crlf_followed_by_lettres_terminator_has_the_same_body() {
        let sink = SmtpSink::start().await;
        let mut client = Client::connect(&sink).await;
        client.expect("EHLO client.example", 250).await;
        client.expect("MAIL FROM:<a@example.com>", 250).await;
        client.expect("RCPT TO:<b@example.com>", 250).await;
        client.expect("DATA", 354).await;
        // lettre writes the message and then always "\r\n.\r\n".
        client
            .write("Subject: x\r\n\r\nline one\r\nline two\r\n")
            .await;
        client.expect("\r\n.", 250).await;

        let mail = &sink.messages()[0];
        assert_eq!(mail.data, "Subject: x\r\n\r\nline one\r\nline two\r\n\r\n");
        assert_eq!(mail.body(), "line one\r\nline two");
    }

    #[tokio::test]
    async fn a_451_for_one_message_refuses_the_first_and_accepts_the_second() {
        let sink = SmtpSink::start().await;
        sink.reply_to_data(451, "4.3.0 try again later", Some(1));
        let mut client = Client::connect(&sink).await;
        client.expect("EHLO client.example", 250).await;

        let first = client
            .deliver("a@example.com", &["b@example.com"], &alert("first", "1"))
            .await;
        assert_eq!(first, (451, "4.3.0 try again later".to_owned()));
        assert!(sink.messages().is_empty(), "a refused message was recorded");

        let second = client
            .deliver("a@example.com", &["b@example.com"], &alert("second", "2"))
            .await;
        assert_eq!(second.0, 250, "{}", second.1);

        let mails = sink.messages();
        assert_eq!(mails.len(), 1);
        assert_eq!(mails[0].header("Subject").as_deref(), Some("second"));
        assert_eq!(sink.attempts(), 2);
    }

    #[tokio::test]
    async fn a_554_without_a_count_refuses_every_message_until_changed() {
        let sink = SmtpSink::start().await;
        sink.reply_to_data(554, "5.7.1 rejected", None);
        let mut client = Client::connect(&sink).await;
        client.expect("EHLO client.example", 250).await;
        for n in 0..3 {
            let reply = client
                .deliver("a@example.com", &["b@example.com"], &alert("x", "y"))
                .await;
            assert_eq!(reply, (554, "5.7.1 rejected".to_owned()), "message {n}");
        }
        assert!(sink.messages().is_empty());
        assert_eq!(sink.attempts(), 3);

        sink.reply_to_data(250, "2.0.0 fine now", None);
        let reply = client
            .deliver("a@example.com", &["b@example.com"], &alert("x", "y"))
            .await;
        assert_eq!(reply, (250, "2.0.0 fine now".to_owned()));
        assert_eq!(sink.messages().len(), 1);
        assert_eq!(sink.attempts(), 4);
    }

    #[tokio::test]
    async fn a_refused_recipient_is_left_out_and_data_without_recipients_is_refused() {
        let sink = SmtpSink::start().await;
        sink.reply_to_rcpt(550, "5.1.1 no such user", Some(1));
        let mut client = Client::connect(&sink).await;
        client.expect("EHLO client.example", 250).await;

        client.expect("MAIL FROM:<a@example.com>", 250).await;
        let refused = client.expect("RCPT TO:<gone@example.com>", 550).await;
        assert_eq!(refused, "5.1.1 no such user");
        // Nobody accepted yet, so there is no one to deliver to.
        client.expect("DATA", 554).await;
        client.expect("RCPT TO:<ops@example.com>", 250).await;
        client.expect("DATA", 354).await;
        client.write(&alert("x", "y")).await;
        client.expect(".", 250).await;

        let mail = &sink.messages()[0];
        assert_eq!(mail.rcpt_to, ["ops@example.com"]);
        // A DATA command refused up front is not a transaction.
        assert_eq!(sink.attempts(), 1);
    }

    #[tokio::test]
    async fn auth_plain_is_advertised_required_and_recorded_with_the_message() {
        let sink = SmtpSink::start().await;
        sink.require_auth(true);
        let mut client = Client::connect(&sink).await;
        let ehlo = client.expect("EHLO client.example", 250).await;
        assert!(
            ehlo.lines().any(|l| l == "AUTH PLAIN LOGIN"),
            "AUTH not advertised: {ehlo}"
        );
        client.expect("MAIL FROM:<a@example.com>", 530).await;

        let plain = base64_encode(b"\0alerts@example.com\0s3cr:et");
        client.expect(&format!("AUTH PLAIN {plain}"), 235).await;
        client.expect(&format!("AUTH PLAIN {plain}"), 503).await;
        let reply = client
            .deliver("a@example.com", &["b@example.com"], &alert("x", "y"))
            .await;
        assert_eq!(reply.0, 250, "{}", reply.1);

        let mail = &sink.messages()[0];
        assert_eq!(mail.auth.as_deref(), Some("alerts@example.com\0s3cr:et"));
        assert_eq!(
            mail.credentials(),
            Some(("alerts@example.com".to_owned(), "s3cr:et".to_owned()))
        );
    }

    #[tokio::test]
    async fn auth_plain_without_an_initial_response_is_prompted_with_334() {
        let sink = SmtpSink::start().await;
        sink.require_auth(true);
        let mut client = Client::connect(&sink).await;
        client.expect("ehlo client.example", 250).await;
        assert_eq!(client.expect("auth plain", 334).await, "");
        client
            .expect(&base64_encode(b"admin\0user\0pass"), 235)
            .await;
        client
            .deliver("a@example.com", &["b@example.com"], &alert("x", "y"))
            .await;
        assert_eq!(
            sink.messages()[0].credentials(),
            Some(("user".to_owned(), "pass".to_owned()))
        );
    }

    #[tokio::test]
    async fn auth_login_asks_for_username_then_password_and_bad_base64_is_refused() {
        let sink = SmtpSink::start().await;
        sink.require_auth(true);
        let mut client = Client::connect(&sink).await;
        client.expect("EHLO client.example", 250).await;
        client.expect("AUTH PLAIN not*base64", 501).await;
        client.expect("AUTH CRAM-MD5", 504).await;

        let prompt = client.expect("AUTH LOGIN", 334).await;
        assert_eq!(base64_decode(&prompt).as_deref(), Some(&b"Username:"[..]));
        let prompt = client.expect(&base64_encode(b"ops"), 334).await;
        assert_eq!(base64_decode(&prompt).as_deref(), Some(&b"Password:"[..]));
        client.expect(&base64_encode(b"hunter2"), 235).await;
        client
            .deliver("a@example.com", &["b@example.com"], &alert("x", "y"))
            .await;
        assert_eq!(sink.messages()[0].auth.as_deref(), Some("ops\0hunter2"));
    }

    #[tokio::test]
    async fn two_messages_on_one_connection_are_both_recorded_and_rset_drops_a_transaction() {
        let sink = SmtpSink::start().await;
        let mut client = Client::connect(&sink).await;
        client.expect("EHLO client.example", 250).await;
        client
            .deliver("one@example.com", &["ops@example.com"], &alert("1", "a"))
            .await;
        client.expect("NOOP", 250).await;
        // An abandoned transaction leaves nothing behind in the next one.
        client
            .expect("MAIL FROM:<abandoned@example.com>", 250)
            .await;
        client.expect("RCPT TO:<nobody@example.com>", 250).await;
        client.expect("RSET", 250).await;
        client
            .deliver("two@example.com", &["ops@example.com"], &alert("2", "b"))
            .await;

        let mails = sink.wait_for(2, SECOND).await;
        let envelopes: Vec<_> = mails
            .iter()
            .map(|m| (m.mail_from.as_str(), m.rcpt_to.clone(), m.body()))
            .collect();
        assert_eq!(
            envelopes,
            [
                (
                    "one@example.com",
                    vec!["ops@example.com".to_owned()],
                    "a".to_owned()
                ),
                (
                    "two@example.com",
                    vec!["ops@example.com".to_owned()],
                    "b".to_owned()
                ),
            ]
        );
    }

    #[tokio::test]
    async fn interleaved_connections_keep_separate_transactions() {
        let sink = SmtpSink::start().await;
        let mut a = Client::connect(&sink).await;
        // A server that served one connection at a time would never greet the second client.
        let mut b = Client::connect(&sink).await;
        a.expect("EHLO a.example", 250).await;
        b.expect("EHLO b.example", 250).await;
        a.expect("MAIL FROM:<a@example.com>", 250).await;
        b.expect("MAIL FROM:<b@example.com>", 250).await;
        a.expect("RCPT TO:<to-a@example.com>", 250).await;
        b.expect("RCPT TO:<to-b@example.com>", 250).await;
        b.expect("DATA", 354).await;
        a.expect("DATA", 354).await;
        b.write(&alert("from b", "b")).await;
        a.write(&alert("from a", "a")).await;
        b.expect(".", 250).await;
        a.expect(".", 250).await;

        let mails = sink.messages();
        let seen: Vec<_> = mails
            .iter()
            .map(|m| (m.mail_from.as_str(), m.rcpt_to[0].as_str(), m.body()))
            .collect();
        assert_eq!(
            seen,
            [
                ("b@example.com", "to-b@example.com", "b".to_owned()),
                ("a@example.com", "to-a@example.com", "a".to_owned()),
            ]
        );
    }

    #[tokio::test]
    async fn unknown_commands_get_502_and_commands_ignore_case() {
        let sink = SmtpSink::start().await;
        let mut client = Client::connect(&sink).await;
        client.expect("XYZZY", 502).await;
        // TLS and AUTH are not offered, so they are unknown here.
        client.expect("STARTTLS", 502).await;
        client.expect("AUTH PLAIN AGFAYg==", 502).await;
        client.expect("eHlO client.example", 250).await;
        client.expect("EHLO", 501).await;
        client.expect("RCPT TO:<b@example.com>", 503).await;
        client
            .expect("mail from:<a@example.com> BODY=8BITMIME", 250)
            .await;
        client.expect("MAIL FROM:<a@example.com>", 503).await;
        client.expect("rcpt to: <b@example.com>", 250).await;
        client.expect("RCPT <b@example.com>", 501).await;
        client.expect("data", 354).await;
        client.write(&alert("x", "y")).await;
        client.expect(".", 250).await;
        client.expect("quit", 221).await;
        assert_eq!(sink.messages()[0].rcpt_to, ["b@example.com"]);
    }

    #[tokio::test]
    async fn quoted_printable_base64_and_encoded_word_headers_are_decoded() {
        let sink = SmtpSink::start().await;
        let mut client = Client::connect(&sink).await;
        client.expect("EHLO client.example", 250).await;
        let qp = "Subject: =?utf-8?q?Qualit=C3=A4t_RED?=\r\n\
                  Content-Transfer-Encoding: quoted-printable\r\n\
                  \r\n\
                  Caf=C3=A9 is=\r\n open=3D yes=  \r\n!\r\n";
        let text = "Grüße\r\nvom Monitor ✓";
        let b64 = base64_encode(text.as_bytes());
        let (b64_head, b64_tail) = b64.split_at(12);
        let base64 = format!(
            "Subject: =?utf-8?b?{}?=\r\n =?utf-8?b?{}?= (2)\r\n\
             Content-Transfer-Encoding: BASE64\r\n\
             \r\n\
             {b64_head}\r\n{b64_tail}\r\n",
            base64_encode("Warnung: ".as_bytes()),
            base64_encode("Nummer ✗".as_bytes()),
        );
        client
            .deliver("a@example.com", &["b@example.com"], qp)
            .await;
        client
            .deliver("a@example.com", &["b@example.com"], &base64)
            .await;

        let mails = sink.wait_for(2, SECOND).await;
        assert_eq!(mails[0].header("subject").as_deref(), Some("Qualität RED"));
        assert_eq!(
            mails[0].raw_header("subject").as_deref(),
            Some("=?utf-8?q?Qualit=C3=A4t_RED?=")
        );
        assert_eq!(mails[0].body(), "Café is open= yes!");
        // The whitespace between two encoded words is folding, not text.
        assert_eq!(
            mails[1].header("Subject").as_deref(),
            Some("Warnung: Nummer ✗ (2)")
        );
        assert_eq!(mails[1].body(), text);
    }

    #[tokio::test]
    async fn wait_for_returns_once_a_message_arrives_while_it_waits() {
        let sink = SmtpSink::start().await;
        let mut client = Client::connect(&sink).await;
        client.expect("EHLO client.example", 250).await;
        let message = alert("late", "y");
        let (mails, reply) = tokio::join!(
            sink.wait_for(1, Duration::from_secs(5)),
            client.deliver("a@example.com", &["b@example.com"], &message),
        );
        assert_eq!(reply.0, 250);
        assert_eq!(mails[0].header("Subject").as_deref(), Some("late"));
    }

    #[tokio::test]
    #[should_panic(expected = "expected 1 accepted messages within 50ms, got 0 (1 DATA attempts)")]
    async fn wait_for_panics_when_nothing_is_accepted_in_time() {
        let sink = SmtpSink::start().await;
        sink.reply_to_data(451, "4.3.0 try again later", None);
        let mut client = Client::connect(&sink).await;
        client.expect("EHLO client.example", 250).await;
        client
            .deliver("a@example.com", &["b@example.com"], &alert("x", "y"))
            .await;
        sink.wait_for(1, Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn a_stopped_sink_refuses_new_connections_and_closes_open_ones() {
        let sink = SmtpSink::start().await;
        let port = sink.port();
        let mut client = Client::connect(&sink).await;
        client.expect("EHLO client.example", 250).await;
        sink.stop().await;

        let err = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect_err("connected to a stopped sink");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        // The pooled connection is gone too: the next read sees the end of the stream.
        client.writer.write_all(b"NOOP\r\n").await.ok();
        let mut rest = String::new();
        let n = client.reader.read_line(&mut rest).await.unwrap_or(0);
        assert_eq!(n, 0, "the server still answered: {rest:?}");
    }

    #[tokio::test]
    async fn a_line_over_1000_octets_with_its_crlf_is_refused_with_500_and_998_are_accepted() {
        let sink = SmtpSink::start().await;
        let mut client = Client::connect(&sink).await;
        client.expect("EHLO client.example", 250).await;
        // 998 octets of text + CRLF = 1000: the longest line RFC 5321 allows.
        let longest = "x".repeat(998);
        let reply = client
            .deliver(
                "a@example.com",
                &["b@example.com"],
                &alert("fits", &longest),
            )
            .await;
        assert_eq!(reply.0, 250, "{}", reply.1);
        let over = "y".repeat(999);
        let reply = client
            .deliver("a@example.com", &["b@example.com"], &alert("over", &over))
            .await;
        assert_eq!(reply, (500, "5.5.2 Line too long".to_owned()));
        // A header line counts the same.
        let subject = "z".repeat(1000);
        let reply = client
            .deliver(
                "a@example.com",
                &["b@example.com"],
                &alert(&subject, "short"),
            )
            .await;
        assert_eq!(reply.0, 500, "{}", reply.1);

        let mails = sink.messages();
        assert_eq!(mails.len(), 1);
        assert_eq!(mails[0].body(), longest);
        assert_eq!(sink.attempts(), 3);
        // The session goes on after a refusal.
        client.expect("NOOP", 250).await;
    }

    #[tokio::test]
    async fn a_stalled_data_is_counted_never_answered_and_the_next_one_is_served() {
        let sink = SmtpSink::start().await;
        sink.stall_data(Some(1));
        let mut client = Client::connect(&sink).await;
        client.expect("EHLO client.example", 250).await;
        client.expect("MAIL FROM:<a@example.com>", 250).await;
        client.expect("RCPT TO:<b@example.com>", 250).await;
        client.expect("DATA", 354).await;
        client.write(&alert("stalled", "x")).await;
        client.write(".\r\n").await;
        sink.wait_for_stalled(1, SECOND).await;
        let mut line = String::new();
        let waited = tokio::time::timeout(
            Duration::from_millis(100),
            client.reader.read_line(&mut line),
        )
        .await;
        assert!(
            waited.is_err(),
            "the server answered a stalled DATA: {line:?}"
        );
        assert_eq!((sink.attempts(), sink.stalled()), (1, 1));
        assert!(sink.messages().is_empty());
        drop(client);

        // Only one was to stall: a new connection is served normally.
        let mut client = Client::connect(&sink).await;
        client.expect("EHLO client.example", 250).await;
        let reply = client
            .deliver("a@example.com", &["b@example.com"], &alert("next", "y"))
            .await;
        assert_eq!(reply.0, 250, "{}", reply.1);
        assert_eq!((sink.attempts(), sink.stalled()), (2, 1));
    }

    #[test]
    fn base64_decoding_matches_encoding_and_rejects_garbage() {
        for len in 0..=7 {
            let bytes: Vec<u8> = (0..len).map(|i| 250 - i * 37).collect();
            let encoded = base64_encode(&bytes);
            assert_eq!(base64_decode(&encoded), Some(bytes.clone()), "{encoded}");
            let unpadded = encoded.trim_end_matches('=');
            assert_eq!(base64_decode(unpadded), Some(bytes), "{unpadded}");
        }
        assert_eq!(base64_encode(b"Username:"), LOGIN_USERNAME_PROMPT);
        assert_eq!(base64_encode(b"Password:"), LOGIN_PASSWORD_PROMPT);
        assert_eq!(base64_decode("aGVs\r\nbG8="), Some(b"hello".to_vec()));
        assert_eq!(base64_decode("aGVsbG8*"), None);
        assert_eq!(base64_decode("QQ==QQ=="), None);
        assert_eq!(base64_decode("QUJDR"), None);
    }
}

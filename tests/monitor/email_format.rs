//! What an alert email looks like, end to end: transitions found by real polls of the
//! simulator, digested into the outbox, sent by the real mailer (lettre) to the loopback SMTP
//! server of `smtp.rs`, and taken apart again here: the message is `multipart/alternative`,
//! plain text first; its HTML part is well-formed XHTML (checked by Python's strict XML
//! parser, `xml.dom.minidom`), has no script, image, style sheet or other remote resource, and
//! holds every item of the text part; the subject counts causes with correct plurals; a
//! WABA-level change is one item listing its numbers.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::Utc;

use crate::helpers::{TestApp, one_waba};
use crate::smtp::{ReceivedMail, SmtpSink};
use waba_monitor::notify::mailer::{Mailer, Outgoing};
use waba_monitor::sim::SimState;

const WABA1: &str = "200000000000001";
const P0: &str = "300000000000001";
const P1: &str = "300000000000002";
const T1: &str = "800000000000001";
const DASHBOARD: &str = "https://grafana.example.test/d/waba-monitor?orgId=1&refresh=1m";
const MANAGER: &str = "https://business.facebook.com/wa/manage/";
/// A verified name as hostile as Meta could send it.
const EVIL_NAME: &str = "<script>alert('x')</script> & \"Co\" <img src=x onerror=alert(1)>";

struct Mail {
    app: TestApp,
    smtp: SmtpSink,
}

impl Mail {
    async fn start(state: SimState) -> Mail {
        let smtp = SmtpSink::start().await;
        let email = format!(
            "[email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"none\"\nfrom = \"waba-monitor <monitor@example.com>\"\nto = [\"ops@example.com\"]\ntimeout = \"5s\"\nmax_age = \"1h\"\ndashboard_url = \"{DASHBOARD}\"\n",
            smtp.port()
        );
        let app = TestApp::spawn_with_extra(state, &format!("wabas = [\"{WABA1}\"]"), &email).await;
        Mail { app, smtp }
    }

    /// Sends every outbox row that is due through the real mailer, each with the HTML
    /// alternative stored with it, as the delivery worker does; returns the messages the
    /// server received and the rows' plain text.
    async fn send_outbox(&self) -> Vec<(ReceivedMail, String)> {
        let cfg = self.app.config();
        let email = cfg.email.expect("email configured");
        let mailer = Mailer::new(&email).expect("mailer");
        let store = self.app.store().await;
        let rows = store
            .pending_due(Utc::now() + chrono::Duration::seconds(1), 100)
            .await
            .expect("outbox");
        store.close().await;
        let mut bodies = Vec::new();
        for row in &rows {
            assert!(row.html.is_some(), "an email row has its HTML part");
            mailer
                .send_with_html(
                    &Outgoing {
                        recipient: &row.recipient,
                        subject: &row.subject,
                        body: &row.body,
                        message_id: &row.message_id,
                        references: row.references_hdr.as_deref(),
                        date: std::time::SystemTime::now(),
                    },
                    row.html.as_deref(),
                )
                .await
                .expect("the server accepts it");
            bodies.push(row.body.clone());
        }
        let mails = self
            .smtp
            .wait_for(rows.len(), Duration::from_secs(10))
            .await;
        mails.into_iter().zip(bodies).collect()
    }
}

/// The message is `multipart/alternative` with two UTF-8 parts, plain text first; returns the
/// decoded text and HTML parts.
fn alternative_parts(mail: &ReceivedMail) -> (String, String) {
    let content_type = mail.header("Content-Type").expect("Content-Type");
    assert!(
        content_type.starts_with("multipart/alternative;"),
        "{content_type}"
    );
    let plain = mail
        .data
        .find("Content-Type: text/plain; charset=utf-8")
        .expect("a text/plain part");
    let html = mail
        .data
        .find("Content-Type: text/html; charset=utf-8")
        .expect("a text/html part");
    assert!(plain < html, "the plain text comes first:\n{}", mail.data);
    assert_eq!(
        mail.data.matches("Content-Type: ").count(),
        3,
        "{}",
        mail.data
    );
    // Line ends as they were written (SMTP carries CRLF).
    let lf = |s: String| s.replace("\r\n", "\n");
    (lf(mail.body()), lf(mail.html().expect("the HTML part")))
}

/// What a strict XML parser makes of the HTML part.
#[derive(Debug, serde::Deserialize)]
struct Parsed {
    root: String,
    tags: Vec<String>,
    attrs: Vec<String>,
    hrefs: Vec<String>,
    /// The text of `<body>`, every text node separated by a space.
    text: String,
    li: usize,
}

/// Parses `html` with Python's `xml.dom.minidom` (strict: any unclosed tag, stray `&` or
/// undefined entity fails) and reports its elements, attributes, links and text.
fn parse_strictly(html: &str) -> Parsed {
    const SCRIPT: &str = r#"
import json, sys, xml.dom.minidom
doc = xml.dom.minidom.parseString(sys.stdin.buffer.read())
tags, attrs, hrefs, texts = set(), set(), [], []
def walk(node, in_body):
    for n in node.childNodes:
        if n.nodeType == n.ELEMENT_NODE:
            name = n.tagName.lower()
            tags.add(name)
            for i in range(n.attributes.length):
                attrs.add(n.attributes.item(i).name.lower())
            if name == "a":
                hrefs.append(n.getAttribute("href"))
            walk(n, in_body or name == "body")
        elif n.nodeType in (n.TEXT_NODE, n.CDATA_SECTION_NODE) and in_body:
            texts.append(n.data)
walk(doc, False)
print(json.dumps({"root": doc.documentElement.tagName, "tags": sorted(tags),
    "attrs": sorted(attrs), "hrefs": hrefs, "text": " ".join(texts),
    "li": len(doc.getElementsByTagName("li"))}))
"#;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (the HTML part is checked with its strict XML parser)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(html.as_bytes())
        .expect("write the HTML");
    let out = child.wait_with_output().expect("python3 ends");
    assert!(
        out.status.success(),
        "the HTML part is not well-formed: {}\n{html}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the parser's report")
}

/// Spaces collapsed, lower case.
fn norm(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// A line of the text part cut where the HTML gives its parts cells of their own: after the
/// severity ("CRITICAL  ") and at each ": ".
fn pieces(line: &str) -> Vec<String> {
    let line = line.trim();
    let line = line.strip_prefix("- ").unwrap_or(line);
    let mut out = Vec::new();
    let rest = match line.split_once("  ") {
        Some((label, rest)) if label.chars().all(|c| c.is_ascii_uppercase()) => {
            out.push(norm(label));
            rest
        }
        _ => line,
    };
    for p in rest.split(": ") {
        let p = p.trim().trim_end_matches(':').trim();
        if !p.is_empty() {
            out.push(norm(p));
        }
    }
    out
}

/// The HTML part is strict XHTML without active or remote content, and every piece of every
/// line of the text part (up to the signature) is in its text or, for a link, its hrefs.
fn assert_html_mirrors_text(html: &str, text: &str) -> Parsed {
    let parsed = parse_strictly(html);
    assert_eq!(parsed.root, "html");
    let allowed = [
        "html", "head", "meta", "title", "body", "p", "table", "tr", "th", "td", "div", "span",
        "ul", "li", "a", "code",
    ];
    for tag in &parsed.tags {
        assert!(allowed.contains(&tag.as_str()), "<{tag}> in the HTML part");
    }
    for attr in &parsed.attrs {
        assert!(
            [
                "xmlns",
                "lang",
                "http-equiv",
                "content",
                "name",
                "style",
                "href",
                "cellpadding",
                "cellspacing",
                "border",
            ]
            .contains(&attr.as_str()),
            "attribute {attr} in the HTML part"
        );
    }
    assert!(!html.contains("url("), "no remote resource in styles");
    for href in &parsed.hrefs {
        assert!(
            href.starts_with(MANAGER) || href == DASHBOARD,
            "a link to {href}"
        );
    }
    let html_text = norm(&parsed.text);
    let body = text.split("\n-- \n").next().unwrap_or(text);
    let mut checked = 0;
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        for piece in pieces(line) {
            if piece.starts_with("https://") {
                assert!(
                    parsed.hrefs.iter().any(|h| norm(h) == piece),
                    "link {piece} (of {line:?}) not in the HTML part: {:?}",
                    parsed.hrefs
                );
            } else {
                assert!(
                    html_text.contains(&piece),
                    "{piece:?} (of {line:?}) not in the HTML part:\n{html_text}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 10, "too little checked: {text}");
    parsed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_email_is_multipart_alternative_and_its_html_holds_every_item_of_the_text() {
    let mut state = one_waba(3);
    state.add_templates(WABA1, 2);
    state.phone_mut(P0).verified_name = EVIL_NAME.to_owned();
    let m = Mail::start(state).await;
    assert_eq!(m.app.poll().await.alerts, 0, "a healthy fleet");

    m.app.sim.with_state(|s| {
        s.phone_mut(P0).quality_rating = Some("RED".into());
        // Both limits of one number drop: one cause.
        s.phone_mut(P1).messaging_limit_tier = Some("TIER_250".into());
        s.phone_mut(P1).business_messaging_limit = Some("TIER_250".into());
        s.template_mut(T1).status = "PAUSED".into();
    });
    assert_eq!(m.app.poll().await.alerts, 4);
    let sent = m.send_outbox().await;
    assert_eq!(sent.len(), 1);
    let (mail, row_body) = &sent[0];

    // One of each: singular throughout.
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("[waba-monitor] CRITICAL: 1 number RED, 1 limit lowered, 1 template PAUSED")
    );
    let (text, html) = alternative_parts(mail);
    assert_eq!(
        text.trim_end(),
        row_body.trim_end(),
        "the text part is the row's"
    );

    for line in [
        "CRITICAL  +1 200-000-0000 (".to_owned(),
        format!("  phone number id: {P0}"),
        "WARNING  +1 200-000-0001 (Fleet 1 Line 2): messaging limits lowered: tier TIER_1K → TIER_250, portfolio TIER_2K → TIER_250".to_owned(),
        "template template_0 (en_US): status APPROVED → PAUSED".to_owned(),
        format!("  WhatsApp Manager: {MANAGER}phone-numbers/?waba_id={WABA1}"),
        format!("  WhatsApp Manager: {MANAGER}message-templates/?waba_id={WABA1}"),
    ] {
        assert!(text.contains(&line), "{line:?} missing from:\n{text}");
    }
    assert_eq!(text.matches("limits lowered").count(), 1, "{text}");

    let parsed = assert_html_mirrors_text(&html, &text);
    assert!(parsed.hrefs.iter().any(|h| h == DASHBOARD), "{html}");
    // Meta's hostile name is text, not markup.
    assert!(norm(&parsed.text).contains(&norm(EVIL_NAME)), "{html}");
    assert!(!parsed.tags.contains(&"script".to_owned()));
    assert!(!parsed.tags.contains(&"img".to_owned()));
    // Worst first: the critical row comes before the warnings.
    let critical = html.find(">CRITICAL<").expect("a critical row");
    let warning = html.find(">WARNING<").expect("a warning row");
    assert!(critical < warning);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portfolio_limit_drop_on_40_numbers_is_one_item_listing_the_40_numbers() {
    let m = Mail::start(one_waba(40)).await;
    assert_eq!(m.app.poll().await.alerts, 0);
    m.app.sim.with_state(|s| {
        let ids: Vec<String> = s.phones.keys().cloned().collect();
        for id in ids {
            s.phone_mut(&id).business_messaging_limit = Some("TIER_250".into());
        }
    });
    assert_eq!(m.app.poll().await.alerts, 40);
    let sent = m.send_outbox().await;
    assert_eq!(sent.len(), 1);
    let (mail, _) = &sent[0];
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some(
            format!(
                "[waba-monitor] WARNING WABA Fleet WABA 1 ({WABA1}) portfolio messaging limit TIER_2K → TIER_250 on 40 numbers"
            )
            .as_str()
        )
    );
    let (text, html) = alternative_parts(mail);
    let headlines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("WARNING  "))
        .collect();
    assert_eq!(
        headlines,
        vec![format!(
            "WARNING  WABA Fleet WABA 1 ({WABA1}): portfolio messaging limit TIER_2K → TIER_250 on 40 numbers"
        )],
        "{text}"
    );
    assert!(text.contains("  numbers affected (40):\n"), "{text}");
    let phones: Vec<String> = m.app.sim.with_state(|s| s.phones.keys().cloned().collect());
    assert_eq!(phones.len(), 40);
    for id in &phones {
        assert_eq!(
            text.matches(&format!(", phone number id {id}\n")).count(),
            1,
            "{id} listed once:\n{text}"
        );
    }
    assert_eq!(text.matches("what to do:").count(), 1, "{text}");
    let parsed = assert_html_mirrors_text(&html, &text);
    assert_eq!(parsed.li, 40);
}

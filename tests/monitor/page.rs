//! The status page of a running daemon: `/` (worst first, filters, search, escaping),
//! `/numbers/{id}` and `/wabas/{id}` (history, Meta's health errors, emails, templates), 404s,
//! the access rules off loopback (bearer, login cookie, CSRF on logout), the CSP header, and
//! the page in a real browser (headless Chromium).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;

use crate::helpers::{Daemon, TestApp};
use crate::smtp::SmtpSink;
use waba_monitor::daemon::RunOptions;
use waba_monitor::sim::{HealthError, SimState};
use waba_monitor::store::silences::Matchers;

const WABA1: &str = "200000000000001";
const WABA2: &str = "200000000000002";
/// WABA 1's numbers are 300000000000001..3, WABA 2's 300000000000004..6.
const P1: &str = "300000000000001";
const P2: &str = "300000000000002";
const P3: &str = "300000000000003";
const P4: &str = "300000000000004";
const P5: &str = "300000000000005";
const API_TOKEN: &str = "page-api-token-for-tests-0123456789";
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'";
const XSS: &str = "<script>alert(1)</script>";

/// Two WABAs of three numbers; P2 is RED, P1 carries a verified name that is markup.
fn fleet() -> SimState {
    let mut s = SimState::fleet(2, 3);
    s.phone_mut(P2).quality_rating = Some("RED".into());
    s.phone_mut(P1).verified_name = XSS.into();
    s
}

/// Discovered from their business, so the WABAs know it (the `business` filter).
fn targets() -> String {
    "businesses = [\"100000000000001\"]".to_owned()
}

struct Page {
    daemon: Daemon,
    base: String,
    http: reqwest::Client,
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Page {
    async fn start(app: &TestApp) -> Page {
        let daemon = Daemon::start(
            app,
            RunOptions {
                delivery_tick: Duration::from_millis(200),
                ..RunOptions::default()
            },
        )
        .await;
        Page {
            base: daemon.base.clone(),
            daemon,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
        }
    }

    async fn next_cycle(&mut self) -> usize {
        self.daemon.next_cycle_within(Duration::from_secs(20)).await
    }

    async fn request(&self, req: reqwest::RequestBuilder) -> Answer {
        let resp = req.send().await.expect("request");
        Answer {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.text().await.expect("body"),
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.request(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn get_with(&self, path: &str, name: &str, value: &str) -> Answer {
        self.request(
            self.http
                .get(format!("{}{path}", self.base))
                .header(name, value),
        )
        .await
    }

    async fn post_form(
        &self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Answer {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.request(req).await
    }

    async fn stop(self) {
        self.daemon.stop().await;
    }
}

fn header<'a>(a: &'a Answer, name: &str) -> &'a str {
    a.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Where a number's row is in the page (its row carries `id="n{id}"`).
fn row(body: &str, id: &str) -> Option<usize> {
    body.find(&format!("id=\"n{id}\""))
}

fn assert_html_with_csp(a: &Answer) {
    assert_eq!(header(a, "content-security-policy"), CSP);
    assert!(
        header(a, "content-type").starts_with("text/html"),
        "{}",
        header(a, "content-type")
    );
    assert_eq!(header(a, "x-content-type-options"), "nosniff");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_lists_the_red_number_first_filters_searches_and_escapes_names() {
    let app = TestApp::spawn(fleet(), &targets()).await;
    let d = Page::start(&app).await;

    let a = d.get("/").await;
    assert_eq!(a.status, 200);
    assert_html_with_csp(&a);
    assert_eq!(header(&a, "cache-control"), "no-store");
    let red = row(&a.body, P2).expect("the RED number is listed");
    for green in [P1, P3, P4, P5] {
        let at = row(&a.body, green).unwrap_or_else(|| panic!("{green} listed"));
        assert!(red < at, "RED {P2} is listed above GREEN {green}");
    }
    // Counts by state: one problem, five healthy.
    assert!(
        a.body
            .contains("<span class=\"n\">1</span><span class=\"l\">Problems</span>")
    );
    assert!(
        a.body
            .contains("<span class=\"n\">5</span><span class=\"l\">Healthy</span>")
    );
    // A verified name is untrusted text: escaped, never markup.
    assert!(
        !a.body.contains(XSS),
        "the verified name went out as markup"
    );
    assert!(a.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    // No request leaves for another host: the stylesheet is ours, there is no script.
    assert!(!a.body.contains("<script"), "no script on the page");
    assert!(!a.body.contains("src="), "nothing embedded from anywhere");
    for link in a.body.split("href=\"").skip(1) {
        assert!(
            link.starts_with('/') || link.starts_with("data:"),
            "a link off the page's host: {}",
            &link[..link.len().min(60)]
        );
    }
    let css_href = a
        .body
        .split("rel=\"stylesheet\" href=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a stylesheet link")
        .replace("&amp;", "&");
    assert!(css_href.starts_with("/static/page.css?v="), "{css_href}");
    let css = d.get(&css_href).await;
    assert_eq!(css.status, 200);
    assert!(header(&css, "content-type").starts_with("text/css"));
    assert!(header(&css, "cache-control").contains("max-age=31536000"));
    assert!(css.body.contains(".tiles"));

    // Filters in the query string.
    let only2 = d.get(&format!("/?waba={WABA2}")).await;
    assert_eq!(only2.status, 200);
    assert!(row(&only2.body, P4).is_some() && row(&only2.body, P5).is_some());
    assert!(row(&only2.body, P1).is_none() && row(&only2.body, P2).is_none());
    for state in ["critical", "RED", "red"] {
        let bad = d.get(&format!("/?state={state}")).await;
        assert!(row(&bad.body, P2).is_some(), "state={state}");
        for other in [P1, P3, P4, P5] {
            assert!(
                row(&bad.body, other).is_none(),
                "state={state} lists {other}"
            );
        }
    }
    let healthy = d.get("/?state=ok").await;
    assert!(row(&healthy.body, P2).is_none() && row(&healthy.body, P4).is_some());
    let all = d.get("/?source=main&business=100000000000001").await;
    for id in [P1, P2, P3, P4, P5] {
        assert!(
            row(&all.body, id).is_some(),
            "{id} in its source and business"
        );
    }
    let none = d.get("/?source=elsewhere").await;
    assert_eq!(none.status, 200);
    assert!(row(&none.body, P1).is_none() && none.body.contains("Nothing matches"));
    let none = d.get("/?business=999").await;
    assert!(row(&none.body, P1).is_none());

    // The search box: a GET form; digits of the display number, names, ids.
    assert!(
        a.body
            .contains("<form class=\"filters\" method=\"get\" action=\"/\"")
    );
    let display = app
        .sim
        .with_state(|s| s.phones[P5].display_phone_number.clone());
    let digits: String = display.chars().filter(char::is_ascii_digit).collect();
    for q in [display.as_str(), digits.as_str(), "Fleet 2 Line 2", P5] {
        let found = d
            .get(&format!(
                "/?{}",
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("q", q)
                    .finish()
            ))
            .await;
        assert!(row(&found.body, P5).is_some(), "q={q}");
        for other in [P1, P2, P3, P4] {
            assert!(row(&found.body, other).is_none(), "q={q} lists {other}");
        }
    }
    // A search by WABA name lists its numbers.
    let by_waba = d.get("/?q=fleet+waba+1").await;
    assert!(row(&by_waba.body, P1).is_some() && row(&by_waba.body, P4).is_none());
    // Markup typed into the search box comes back escaped.
    let echoed = d.get("/?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E").await;
    assert!(!echoed.body.contains(XSS));

    // A silence of WABA 2: listed above the table, its numbers marked, a filter of its own.
    let store = app.store().await;
    let now = chrono::Utc::now();
    store
        .add_silence(
            &Matchers {
                wabas: vec![WABA2.to_owned()],
                ..Matchers::default()
            },
            now - chrono::Duration::minutes(1),
            now + chrono::Duration::hours(2),
            "carrier maintenance <b>tonight</b>",
            "ops",
            now,
        )
        .await
        .expect("silence");
    store.close().await;
    let a = d.get("/").await;
    let silences = a
        .body
        .split("<section class=\"silences\">")
        .nth(1)
        .expect("the silences in force");
    assert!(silences.contains(&format!("WABA {WABA2}")));
    assert!(silences.contains("carrier maintenance &lt;b&gt;tonight&lt;/b&gt;"));
    assert!(
        a.body
            .contains("<span class=\"n\">3</span><span class=\"l\">Silenced</span>")
    );
    let p4_row = &a.body[row(&a.body, P4).expect("P4")..];
    let p4_row = &p4_row[..p4_row.find("</tr>").expect("row end")];
    assert!(p4_row.contains(">silenced<"), "{p4_row}");
    let p1_row = &a.body[row(&a.body, P1).expect("P1")..];
    assert!(!p1_row[..p1_row.find("</tr>").expect("row end")].contains(">silenced<"));
    let only = d.get("/?state=silenced").await;
    assert!(row(&only.body, P4).is_some() && row(&only.body, P5).is_some());
    assert!(row(&only.body, P1).is_none() && row(&only.body, P2).is_none());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_page_shows_its_history_health_errors_emails_and_templates() {
    let smtp = SmtpSink::start().await;
    let mut state = SimState::fleet(1, 2);
    state.set_health(
        P1,
        "BUSINESS",
        "LIMITED",
        Some(HealthError::business_not_verified()),
    );
    state.add_template(WABA1, "800000000000001", "order_update", "en_US", "UTILITY");
    let app = TestApp::spawn_full(
        state,
        &format!("wabas = [\"{WABA1}\"]"),
        "v24.0",
        "* * * * * *",
        &format!(
            "[email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"none\"\nfrom = \"monitor@example.com\"\nto = [\"ops@example.com\"]\ntimeout = \"5s\"\n",
            smtp.port()
        ),
    )
    .await;
    let mut d = Page::start(&app).await;
    app.sim.with_state(|s| {
        s.phone_mut(P1).quality_rating = Some("RED".into());
        s.template_mut("800000000000001").status = "PAUSED".into();
    });
    // The cycle that sees the change, and the email about it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.next_cycle().await == 0 {
        assert!(Instant::now() < deadline, "the change was never recorded");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let subject = loop {
        let found = smtp
            .messages()
            .iter()
            .filter_map(|m| m.header("Subject"))
            .find(|s| s.contains("RED"));
        if let Some(s) = found {
            break s;
        }
        assert!(Instant::now() < deadline, "no email about the RED number");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let a = d.get(&format!("/numbers/{P1}")).await;
    assert_eq!(a.status, 200);
    assert_html_with_csp(&a);
    let b = &a.body;
    // Current state and Meta's health entity with its error code and possible solution.
    assert!(b.contains("Problem"), "RED is a problem");
    assert!(b.contains("141010"), "the error code");
    assert!(b.contains("The Business has not passed business verification."));
    assert!(b.contains(
        "Visit business settings and start or resolve the business verification request."
    ));
    // The timeline: GREEN → RED, newest first, and the chart of the last 30 days.
    let timeline = b
        .split("<ol class=\"timeline\">")
        .nth(1)
        .expect("a timeline");
    let red = timeline.find(">RED<").expect("RED in the timeline");
    let first = timeline.find("presence").expect("the first sighting");
    assert!(red < first, "newest first");
    assert!(timeline.contains(">GREEN</span> → <span"));
    assert!(b.contains("<svg class=\"chart\""), "the quality chart");
    assert!(b.contains("Quality rating, last 30 days"));
    // The email sent about it (from the outbox), and the paused template of its WABA.
    let shown_subject = subject
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    assert!(
        b.contains(&shown_subject) || b.contains(&subject),
        "the email {subject:?} is listed"
    );
    assert!(b.contains("ops@example.com"));
    let templates = b
        .split("Templates with problems")
        .nth(1)
        .expect("templates");
    assert!(templates.contains("order_update") && templates.contains("PAUSED"));

    // The WABA's page lists the number, worst first, and the same email.
    let w = d.get(&format!("/wabas/{WABA1}")).await;
    assert_eq!(w.status, 200);
    assert!(row(&w.body, P1).expect("P1") < row(&w.body, P2).expect("P2"));
    assert!(w.body.contains("order_update"));
    assert!(
        w.body.contains("ops@example.com"),
        "emails about its numbers"
    );

    // Unknown ids: a 404 page (escaped id), with the same headers.
    for path in [
        "/numbers/999999".to_owned(),
        "/wabas/999999".to_owned(),
        format!("/numbers/{WABA1}"),
        "/numbers/%3Cb%3Ex".to_owned(),
    ] {
        let nf = d.get(&path).await;
        assert_eq!(nf.status, 404, "{path}");
        assert_html_with_csp(&nf);
        assert!(nf.body.contains("Not found"));
        assert!(!nf.body.contains("<b>x"), "the id is escaped");
    }
    d.stop().await;
}

/// A daemon whose `[daemon] listen` is not loopback (it is served on a loopback listener all
/// the same, so the test can reach it).
async fn off_loopback() -> (TestApp, Page) {
    let app = TestApp::spawn(fleet(), &targets()).await;
    app.write_secret("api-token", API_TOKEN);
    app.add_daemon_key("api_token_file = \"api-token\"");
    let text = std::fs::read_to_string(&app.config_path).expect("config");
    std::fs::write(
        &app.config_path,
        text.replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:9717\""),
    )
    .expect("config");
    let d = Page::start(&app).await;
    (app, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_the_page_needs_the_token_or_the_login_cookie() {
    let (_app, d) = off_loopback().await;

    // Without a token: 401 for a program, to the login form for a browser.
    for path in [
        "/".to_owned(),
        format!("/numbers/{P1}"),
        format!("/wabas/{WABA1}"),
        "/?q=x".to_owned(),
    ] {
        let a = d.get(&path).await;
        assert_eq!(a.status, 401, "{path}");
        assert!(header(&a, "www-authenticate").starts_with("Bearer"));
        assert_eq!(header(&a, "content-security-policy"), CSP);
        assert!(row(&a.body, P1).is_none() && !a.body.contains("Fleet WABA"));
    }
    let a = d
        .get_with("/?state=critical", "accept", "text/html,*/*")
        .await;
    assert_eq!(a.status, 303);
    assert_eq!(header(&a, "location"), "/login?next=%2F%3Fstate%3Dcritical");
    assert_eq!(
        d.get_with("/", "authorization", "Bearer wrong")
            .await
            .status,
        401
    );
    // The bearer header, as for /api.
    let a = d
        .get_with("/", "authorization", &format!("Bearer {API_TOKEN}"))
        .await;
    assert_eq!(a.status, 200);
    assert!(row(&a.body, P2).is_some());
    // The stylesheet and the login form are open.
    assert_eq!(d.get("/static/page.css").await.status, 200);
    let form = d.get("/login?next=/wabas/1").await;
    assert_eq!(form.status, 200);
    assert_html_with_csp(&form);
    assert!(form.body.contains("type=\"password\" name=\"token\""));
    assert!(form.body.contains("name=\"next\" value=\"/wabas/1\""));

    // A wrong token: 401, no cookie.
    let a = d
        .post_form("/login", &[("token", "wrong"), ("next", "/")], &[])
        .await;
    assert_eq!(a.status, 401);
    assert!(a.headers.get("set-cookie").is_none());
    // A login from another site is refused.
    let a = d
        .post_form(
            "/login",
            &[("token", API_TOKEN), ("next", "/")],
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(a.status, 403);
    assert!(a.headers.get("set-cookie").is_none());

    // The right token: a cookie that is HttpOnly and SameSite=Strict, not the token itself,
    // and back to where the browser was going (never to another host).
    let a = d
        .post_form(
            "/login",
            &[("token", API_TOKEN), ("next", "//evil.example/")],
            &[],
        )
        .await;
    assert_eq!(a.status, 303);
    assert_eq!(header(&a, "location"), "/");
    let a = d
        .post_form(
            "/login",
            &[("token", API_TOKEN), ("next", "/?state=critical")],
            &[],
        )
        .await;
    assert_eq!(a.status, 303);
    assert_eq!(header(&a, "location"), "/?state=critical");
    let cookie = header(&a, "set-cookie").to_owned();
    assert!(cookie.starts_with("waba_monitor_session="), "{cookie}");
    assert!(cookie.contains("; HttpOnly"), "{cookie}");
    assert!(cookie.contains("; SameSite=Strict"), "{cookie}");
    assert!(cookie.contains("; Path=/"), "{cookie}");
    assert!(
        !cookie.contains("Secure"),
        "plain http: not Secure ({cookie})"
    );
    assert!(!cookie.contains(API_TOKEN), "the cookie holds the token");
    let session = cookie.split(';').next().expect("pair").trim().to_owned();
    let value = session.split_once('=').expect("value").1;
    assert_eq!(value.len(), 64, "an HMAC-SHA256 in hex");

    // Behind an https proxy the cookie is Secure too.
    let a = d
        .post_form(
            "/login",
            &[("token", API_TOKEN)],
            &[("x-forwarded-proto", "https")],
        )
        .await;
    assert!(header(&a, "set-cookie").contains("; Secure"));

    // The cookie opens the page, which then offers a logout form with a CSRF token.
    let a = d.get_with("/", "cookie", &session).await;
    assert_eq!(a.status, 200);
    assert!(row(&a.body, P2).is_some());
    assert!(!a.body.contains(API_TOKEN));
    let csrf = a
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a CSRF token in the logout form")
        .to_owned();
    assert_ne!(csrf, value);
    assert_eq!(
        d.get_with(&format!("/numbers/{P2}"), "cookie", &session)
            .await
            .status,
        200
    );
    assert_eq!(
        d.get_with("/", "cookie", "waba_monitor_session=00ff")
            .await
            .status,
        401
    );
    // Logout needs the CSRF token.
    let a = d
        .post_form("/logout", &[], &[("cookie", session.as_str())])
        .await;
    assert_eq!(a.status, 403);
    let a = d
        .post_form(
            "/logout",
            &[("csrf", "nope")],
            &[("cookie", session.as_str())],
        )
        .await;
    assert_eq!(a.status, 403);
    let a = d
        .post_form(
            "/logout",
            &[("csrf", &csrf)],
            &[("cookie", session.as_str())],
        )
        .await;
    assert_eq!(a.status, 303);
    assert!(header(&a, "set-cookie").contains("Max-Age=0"));
    // The API keeps its own rule (bearer only).
    assert_eq!(
        d.get_with("/api/accounts", "cookie", &session).await.status,
        401
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_loopback_the_page_is_open_even_with_a_token_configured() {
    let app = TestApp::spawn(fleet(), &targets()).await;
    app.write_secret("api-token", API_TOKEN);
    app.add_daemon_key("api_token_file = \"api-token\"");
    let d = Page::start(&app).await;
    let a = d.get("/").await;
    assert_eq!(a.status, 200);
    assert!(row(&a.body, P2).is_some());
    // No login needed: the form sends the browser on.
    let a = d.get("/login?next=/wabas/1").await;
    assert_eq!(a.status, 303);
    assert_eq!(header(&a, "location"), "/wabas/1");
    // The API still wants its token.
    assert_eq!(d.get("/api/accounts").await.status, 401);
    d.stop().await;
}

// ---------------------------------------------------------------------------------------------
// A real browser

/// Debian's `chromium` (or `$CHROMIUM`). Missing is a failure, not a skip: CI installs it.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "$CHROMIUM is {}, which is no file: point it at the browser or unset it",
            p.display()
        );
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "the browser test needs Chromium and found none on PATH (chromium, chromium-browser, google-chrome) nor $CHROMIUM: install Debian's package (`apt-get install -y chromium`; .ci/run does this)"
    );
}

struct Browser {
    stdout: String,
    stderr: String,
}

/// Runs headless Chromium with `args` then `url`, with its own profile, for at most 90 s.
fn browse(profile: &Path, args: &[&str], url: &str) -> Browser {
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let out_pipe = child.stdout.take().expect("stdout");
    let err_pipe = child.stderr.take().expect("stderr");
    let read = |mut p: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = p.read_to_string(&mut s);
            s
        })
    };
    let out = read(Box::new(out_pipe));
    let err = read(Box::new(err_pipe));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish {url} within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Browser {
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// The page has no script: any console message (a CSP refusal, a failed load, an uncaught
/// error) is a fault.
fn assert_no_console_errors(b: &Browser, what: &str) {
    let bad: Vec<&str> = b
        .stderr
        .lines()
        .filter(|l| {
            l.contains(":CONSOLE")
                || l.contains("Uncaught")
                || l.contains("Refused to")
                || l.contains("Content Security Policy")
                || l.contains("Failed to load resource")
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: console errors:\n{}",
        bad.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_renders_the_fleet_worst_first_without_console_errors() {
    // Fails here, with the reason, when the browser is missing.
    chromium();
    // A fleet with something of everything, for the README's screenshot too.
    let mut state = SimState::fleet(4, 3);
    let names = [
        "Acme Retail",
        "Globex Logistics",
        "Initech Clinics",
        "Umbrella Travel",
    ];
    for (i, name) in names.iter().enumerate() {
        state
            .waba_mut(&(200_000_000_000_001u64 + i as u64).to_string())
            .name = (*name).into();
    }
    state.phone_mut(P2).quality_rating = Some("RED".into());
    state.phone_mut(P1).verified_name = XSS.into();
    state.phone_mut(P5).quality_rating = Some("YELLOW".into());
    state.phone_mut("300000000000008").status = Some("FLAGGED".into());
    state.set_health(
        "300000000000010",
        "BUSINESS",
        "LIMITED",
        Some(HealthError::business_not_verified()),
    );
    let app = TestApp::spawn(
        state,
        &format!("wabas = [\"{WABA1}\", \"{WABA2}\", \"200000000000003\", \"200000000000004\"]"),
    )
    .await;
    let d = Page::start(&app).await;
    let profile = tempfile::tempdir().expect("profile");
    let base = d.base.clone();

    let (fleet, number, shot) = tokio::task::spawn_blocking(move || {
        let fleet = browse(profile.path(), &["--dump-dom"], &format!("{base}/"));
        let number = browse(
            profile.path(),
            &["--dump-dom"],
            &format!("{base}/numbers/{P2}"),
        );
        let shot_path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
        let _ = std::fs::remove_file(&shot_path);
        let shot = browse(
            profile.path(),
            &[
                &format!("--screenshot={}", shot_path.display()),
                "--window-size=1280,900",
                "--hide-scrollbars",
            ],
            &format!("{base}/"),
        );
        (fleet, number, (shot, shot_path))
    })
    .await
    .expect("browser thread");

    // The DOM as the browser built it: the RED number above every GREEN one.
    let dom = &fleet.stdout;
    assert!(
        dom.contains("<table class=\"fleet\">"),
        "the fleet table:\n{dom}"
    );
    let red = row(dom, P2).expect("the RED number in the DOM");
    for green in [
        P3,
        P4,
        "300000000000006",
        "300000000000007",
        "300000000000012",
    ] {
        let at = row(dom, green).unwrap_or_else(|| panic!("{green} in the DOM"));
        assert!(red < at, "RED {P2} above GREEN {green}");
    }
    // The verified name stayed text: no script element in the DOM.
    assert!(!dom.contains("<script"), "a script element in the DOM");
    assert!(dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert_no_console_errors(&fleet, "/");

    assert!(
        number.stdout.contains("Quality rating, last 30 days") && number.stdout.contains("<svg"),
        "the number page in the browser:\n{}",
        number.stdout
    );
    assert_no_console_errors(&number, "/numbers/{id}");

    let (shot, shot_path) = shot;
    assert_no_console_errors(&shot, "the screenshot");
    let png = std::fs::read(&shot_path).unwrap_or_else(|e| {
        panic!(
            "no screenshot at {}: {e}\n{}",
            shot_path.display(),
            shot.stderr
        )
    });
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real picture"
    );
    // `UPDATE_SCREENSHOT=1 cargo test --test monitor headless` refreshes the README's picture.
    if std::env::var_os("UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).expect("docs/");
        std::fs::copy(&shot_path, docs.join("status-page.png")).expect("copy the screenshot");
    }
    d.stop().await;
}

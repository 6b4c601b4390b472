//! The status page's markup (maud). Every value interpolated with `(...)` is escaped, and the
//! page never uses `PreEscaped`: verified names, WABA names, Meta's error texts and a BSP's
//! strings are untrusted text. No inline `style` or script (the CSP forbids both); colours
//! come from classes chosen from fixed lists, never from the values themselves.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use super::page::{CSS_HREF, Chart, FleetView, Group, Level, Line, Story, Viewer, ago};
use crate::alerts::rules::{Severity, verdict};
use crate::model::{HealthEntity, field};
use crate::store::StatusEntry;
use crate::store::page::{FleetNumber, FleetWaba};
use crate::store::silences::Silence;

/// A number's page.
pub struct NumberView<'a> {
    pub now: DateTime<Utc>,
    pub level: Level,
    pub number: &'a FleetNumber,
    pub entry: &'a StatusEntry,
    pub waba: Option<&'a FleetWaba>,
    pub story: &'a Story,
}

/// A WABA's page.
pub struct WabaView<'a> {
    pub now: DateTime<Utc>,
    pub level: Level,
    pub waba: &'a FleetWaba,
    pub numbers: &'a [Line<'a>],
    pub story: &'a Story,
}

const DASH: &str = "—";

fn or_dash(v: Option<&str>) -> &str {
    v.filter(|s| !s.is_empty()).unwrap_or(DASH)
}

/// The class of a value as the alert rules rate it: `v-bad`, `v-warn`, `v-good` or `v-none`.
fn value_class(field_name: &str, v: Option<&str>) -> &'static str {
    match v
        .and_then(|v| verdict(field_name, None, v))
        .map(|v| v.severity)
    {
        Some(Severity::Critical) => "v v-bad",
        Some(Severity::Warning) => "v v-warn",
        Some(Severity::Resolved | Severity::Improving) => "v v-good",
        None => "v v-none",
    }
}

fn value(field_name: &str, v: Option<&str>) -> Markup {
    html! { span class=(value_class(field_name, v)) { (or_dash(v)) } }
}

/// "1 problem", "2 problems", "3 healthy"...: the word after a count of numbers.
fn counted(l: Level, n: usize) -> &'static str {
    match (l, n) {
        (Level::Critical, 1) => "problem",
        (Level::Critical, _) => "problems",
        (Level::Warning, 1) => "warning",
        (Level::Warning, _) => "warnings",
        (Level::Ok, _) => "healthy",
        (Level::Gone, _) => "gone",
    }
}

fn level_badge(l: Level) -> Markup {
    html! { span class={ "badge lvl-" (l.as_str()) } { (l.label()) } }
}

fn when(now: DateTime<Utc>, ts: &str) -> Markup {
    html! { time datetime=(ts) title=(ts) { (ago(now, ts)) " ago" } }
}

fn layout(title: &str, viewer: &Viewer, refresh: bool, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if refresh {
                    meta http-equiv="refresh" content="60";
                }
                title { (title) " · waba-monitor" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href=(CSS_HREF.as_str());
            }
            body {
                header.top {
                    a.brand href="/" { "waba-monitor" }
                    span.sub { "status" }
                    @if let Some(csrf) = &viewer.logout_csrf {
                        form.logout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (main) }
                footer {
                    "waba-monitor " (env!("CARGO_PKG_VERSION"))
                    " · times in UTC"
                    @if refresh { " · this page reloads every minute" }
                }
            }
        }
    }
}

pub fn message_page(title: &str, text: &str, viewer: &Viewer) -> Markup {
    layout(
        title,
        viewer,
        false,
        html! {
            h1 { (title) }
            p { (text) }
            p { a href="/" { "Back to the fleet" } }
        },
    )
}

pub fn not_found_page(what: &str, id: &str, viewer: &Viewer) -> Markup {
    layout(
        "Not found",
        viewer,
        false,
        html! {
            h1 { "Not found" }
            p { "No monitored " (what) " has the id " code { (id) } "." }
            p { a href={ "/?q=" (url_param(id)) } { "Search the fleet for it" } " · " a href="/" { "Back to the fleet" } }
        },
    )
}

fn url_param(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

pub fn login_page(next: &str, error: Option<&str>) -> Markup {
    layout(
        "Log in",
        &Viewer::default(),
        false,
        html! {
            h1 { "Log in" }
            p { "This daemon listens on a network address: the status page needs the API token ("
                code { "[daemon] api_token_file" } " or " code { "api_token_env" } ")." }
            @if let Some(e) = error {
                p.error { (e) }
            }
            form.login method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                label for="token" { "API token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                button type="submit" { "Log in" }
            }
        },
    )
}

// ---------------------------------------------------------------------------------------------
// The fleet

const STATES: [(&str, &str); 6] = [
    ("critical", "Problems"),
    ("warning", "Warnings"),
    ("ok", "Healthy"),
    ("gone", "Gone"),
    ("stale", "Stale"),
    ("silenced", "Silenced"),
];

pub fn fleet_page(v: &FleetView<'_>, viewer: &Viewer) -> Markup {
    let f = v.filters;
    let c = &v.counts;
    layout(
        "Fleet",
        viewer,
        true,
        html! {
            h1 { "Fleet" }
            p.meta {
                (v.fleet_numbers) " numbers in " (v.fleet_wabas) " WABAs · as of "
                time datetime=(crate::timefmt::rfc3339(v.now)) { (v.now.format("%Y-%m-%d %H:%M:%S")) }
            }
            nav.tiles aria-label="Numbers by state" {
                @for (i, l) in Level::ALL.iter().enumerate() {
                    a class={ "tile lvl-" (l.as_str()) } href=(f.href(Some(l.as_str()), None)) {
                        span.n { (c.by_level[i]) }
                        span.l { (STATES[i].1) }
                    }
                }
                a.tile.lvl-stale href=(f.href(Some("stale"), None)) {
                    span.n { (c.stale) } span.l { "Stale" }
                }
                a.tile.lvl-silenced href=(f.href(Some("silenced"), None)) {
                    span.n { (c.silenced) } span.l { "Silenced" }
                }
            }
            @if !c.quality.is_empty() {
                p.tally {
                    span.k { "Quality" }
                    @for (q, n) in &c.quality {
                        a href=(f.href(Some(q), None)) { span class=(value_class(field::QUALITY_RATING, Some(q))) { (q) } " " (n) }
                    }
                    span.k { "Status" }
                    @for (s, n) in &c.status {
                        a href=(f.href(Some(s), None)) { span class=(value_class(field::STATUS, Some(s))) { (s) } " " (n) }
                    }
                }
            }
            (filters_form(v))
            @if !v.silences.is_empty() {
                (silences_table(v.silences, v.now, "Silences in force or pending"))
            }
            @if v.groups.is_empty() {
                p.empty { @if f.is_empty() { "No number is monitored yet: the first poll has not recorded any." } @else { "Nothing matches these filters." } }
            } @else {
                p.meta {
                    (v.matching) " numbers match"
                    @if v.folding { " · healthy and gone numbers are folded into one line per WABA: search or filter to list them" }
                }
                table.fleet {
                    thead {
                        tr {
                            th { "Number" } th { "Verified name" } th { "Quality" } th { "Status" }
                            th { "Health" } th { "Limit" } th { "Since" } th { "" }
                        }
                    }
                    @for g in &v.groups {
                        (group(g, v))
                    }
                }
                (pager(v))
            }
        },
    )
}

fn filters_form(v: &FleetView<'_>) -> Markup {
    let f = v.filters;
    let known_state = f.state.is_empty() || STATES.iter().any(|(s, _)| *s == f.state);
    html! {
        form.filters method="get" action="/" role="search" {
            input type="search" name="q" value=(f.q) placeholder="Number, name or id" aria-label="Search";
            select name="source" aria-label="Source" {
                option value="" { "All sources" }
                @for s in &v.sources {
                    option value=(s) selected[*s == f.source] { (s) }
                }
                @if !f.source.is_empty() && !v.sources.contains(&f.source.as_str()) {
                    option value=(f.source) selected { (f.source) }
                }
            }
            input type="text" name="business" value=(f.business) placeholder="Business id" aria-label="Business id" inputmode="numeric";
            input type="text" name="waba" value=(f.waba) placeholder="WABA id" aria-label="WABA id" inputmode="numeric";
            select name="state" aria-label="State" {
                option value="" { "Any state" }
                @for (s, label) in STATES {
                    option value=(s) selected[s == f.state] { (label) }
                }
                @if !known_state {
                    option value=(f.state) selected { (f.state.to_uppercase()) }
                }
            }
            button type="submit" { "Filter" }
            @if !f.is_empty() {
                a.clear href="/" { "Clear" }
            }
        }
    }
}

fn group(g: &Group<'_>, v: &FleetView<'_>) -> Markup {
    let name = g.waba.and_then(|w| w.name.as_deref());
    html! {
        tbody class={ "group lvl-" (g.level.as_str()) } {
            tr.waba {
                th colspan="8" {
                    (level_badge(g.level))
                    " "
                    @if let Some(id) = g.waba_id {
                        a.wname href={ "/wabas/" (url_param(id)) } { (or_dash(name)) }
                        " " span.id { "WABA " (id) }
                    } @else {
                        span.wname { "Numbers without a known WABA" }
                    }
                    @if let Some(w) = g.waba {
                        @if g.waba_level > Level::Ok || w.health.as_deref().is_some_and(|h| h != "AVAILABLE") {
                            " " span.k { "health" } " " (value(field::HEALTH, w.health.as_deref()))
                        }
                        @if w.account_review_status.as_deref().is_some_and(|s| s != "APPROVED") {
                            " " span.k { "review" } " " (value(field::ACCOUNT_REVIEW_STATUS, w.account_review_status.as_deref()))
                        }
                        @if w.stale { " " span.tag.stale title="its source's latest polls did not read it: the state shown is the last known" { "stale" } }
                        @if !w.present { " " span.tag.gone { "gone" } }
                    }
                    @if g.waba_silenced { " " span.tag.silenced { "silenced" } }
                    " "
                    span.count {
                        (g.total) @if g.total == 1 { " number" } @else { " numbers" }
                        @for (i, l) in Level::ALL.iter().enumerate() {
                            @let n = g.by_level[i];
                            @if n > 0 && n == g.total {
                                ", all " (counted(*l, n))
                            } @else if n > 0 {
                                " · " (n) " " (counted(*l, n))
                            }
                        }
                    }
                    @if g.continued { " " span.k { "(continued)" } }
                    @if let Some(id) = g.waba_id {
                        @if v.filters.waba.is_empty() {
                            " " a.only href={ "/?waba=" (url_param(id)) } { "list only this WABA" }
                        }
                    }
                }
            }
            @for l in &g.lines {
                (number_row(l, v.now))
            }
            @if g.folded > 0 && !g.collapsed {
                tr.folded {
                    td colspan="8" {
                        "+ " (g.folded) " healthy or gone numbers not listed · "
                        @if let Some(id) = g.waba_id {
                            a href={ "/?waba=" (url_param(id)) } { "list them" }
                        } @else {
                            a href="/?state=ok" { "list healthy numbers" }
                        }
                    }
                }
            }
        }
    }
}

fn number_row(l: &Line<'_>, now: DateTime<Utc>) -> Markup {
    let n = l.n;
    html! {
        tr class={ "num lvl-" (l.level.as_str()) } id={ "n" (n.id) } {
            td {
                a href={ "/numbers/" (url_param(&n.id)) } { (or_dash(n.display_phone_number.as_deref())) }
                br; span.id { (n.id) }
            }
            td { (or_dash(n.verified_name.as_deref())) }
            td { (value(field::QUALITY_RATING, n.quality_rating.as_deref())) }
            td { (value(field::STATUS, n.status.as_deref())) }
            td { (value(field::HEALTH, n.health.as_deref())) }
            td { (or_dash(n.messaging_limit.as_deref())) }
            td { (when(now, &n.last_changed_at)) }
            td.marks {
                @if n.stale { span.tag.stale title="its source's latest polls did not read it: the state shown is the last known" { "stale" } }
                @if l.silenced { span.tag.silenced title="a silence in force matches it: its alerts are recorded, not sent" { "silenced" } }
                @if !n.present { span.tag.gone { "gone" } }
            }
        }
    }
}

fn pager(v: &FleetView<'_>) -> Markup {
    html! {
        @if v.pages > 1 {
            nav.pager aria-label="Pages" {
                @if v.page > 1 {
                    a rel="prev" href=(v.filters.href(non_empty(&v.filters.state), Some(v.page - 1))) { "← Previous" }
                }
                span { "Page " (v.page) " of " (v.pages) }
                @if v.page < v.pages {
                    a rel="next" href=(v.filters.href(non_empty(&v.filters.state), Some(v.page + 1))) { "Next →" }
                }
            }
        }
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// "2026-12-01 19:30" of a stored timestamp, with the full one on hover.
fn short_time(ts: &str) -> Markup {
    html! { time datetime=(ts) title=(ts) { (ts.get(..16).unwrap_or(ts).replace('T', " ")) } }
}

fn silences_table(silences: &[Silence], now: DateTime<Utc>, title: &str) -> Markup {
    html! {
        section.silences {
            h2 { (title) }
            table {
                thead { tr { th { "#" } th { "Matches" } th { "State" } th { "Started" } th { "Ends" } th { "By" } th { "Why" } } }
                tbody {
                    @for s in silences {
                        tr {
                            td { (s.id) }
                            td { (s.matchers.describe()) }
                            td { (s.state) }
                            td { @if s.state == "active" { (when(now, &s.starts_at)) } @else { (short_time(&s.starts_at)) } }
                            td { (short_time(&s.ends_at)) }
                            td { (s.author) }
                            td { (s.comment) }
                        }
                    }
                }
            }
            @if silences.iter().any(|s| s.state == "active") {
                p.meta { "While a silence is in force, the alerts of what it matches are recorded but not sent." }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One target

fn state_row(label: &str, content: Markup) -> Markup {
    html! { tr { th { (label) } td { (content) } } }
}

pub fn number_page(v: &NumberView<'_>, viewer: &Viewer) -> Markup {
    let e = v.entry;
    let title = or_dash(e.display_phone_number.as_deref()).to_owned();
    layout(
        &title,
        viewer,
        true,
        html! {
            p.crumbs { a href="/" { "Fleet" } " › "
                @if let Some(w) = &e.waba_id {
                    a href={ "/wabas/" (url_param(w)) } { (or_dash(v.waba.and_then(|w| w.name.as_deref()))) } " › "
                }
                "number"
            }
            h1 { (title) " " (level_badge(v.level)) }
            p.meta { (or_dash(e.verified_name.as_deref())) " · id " (e.id) " · source " (e.source) }
            table.state {
                (state_row("Quality", value(field::QUALITY_RATING, e.quality_rating.as_deref())))
                (state_row("Status", value(field::STATUS, e.status.as_deref())))
                (state_row("Health", value(field::HEALTH, e.health.as_deref())))
                (state_row("Messaging limit", html! { (or_dash(e.messaging_limit.as_deref())) }))
                (state_row("Name status", html! { (or_dash(e.name_status.as_deref())) }))
                (state_row("Throughput", html! { (or_dash(e.throughput.as_deref())) }))
                (state_row("WABA", html! {
                    @if let Some(w) = &e.waba_id {
                        a href={ "/wabas/" (url_param(w)) } { (or_dash(v.waba.and_then(|w| w.name.as_deref()))) } " " span.id { (w) }
                    } @else { (DASH) }
                }))
                (state_row("In this state since", when(v.now, &e.last_changed_at)))
                (state_row("Last read", html! {
                    (when(v.now, &e.last_polled_at))
                    @if v.number.stale { " " span.tag.stale { "stale: its source's latest polls did not read it" } }
                    @if !e.present { " " span.tag.gone { "gone from its WABA" } }
                }))
                (state_row("First seen", html! { time datetime=(e.first_seen_at) { (e.first_seen_at) } }))
            }
            (story(v.story, v.now))
        },
    )
}

pub fn waba_page(v: &WabaView<'_>, viewer: &Viewer) -> Markup {
    let w = v.waba;
    let title = or_dash(w.name.as_deref()).to_owned();
    layout(
        &title,
        viewer,
        true,
        html! {
            p.crumbs { a href="/" { "Fleet" } " › WABA" }
            h1 { (title) " " (level_badge(v.level)) }
            p.meta { "WABA " (w.id) " · business " (or_dash(w.business_id.as_deref())) " · source " (w.source) }
            table.state {
                (state_row("Health", value(field::HEALTH, w.health.as_deref())))
                (state_row("Account review", value(field::ACCOUNT_REVIEW_STATUS, w.account_review_status.as_deref())))
                (state_row("Business verification", value(field::BUSINESS_VERIFICATION_STATUS, w.business_verification_status.as_deref())))
                (state_row("Messaging limit", html! { (or_dash(w.messaging_limit.as_deref())) }))
                (state_row("In this state since", when(v.now, &w.last_changed_at)))
                (state_row("Last read", html! {
                    (when(v.now, &w.last_polled_at))
                    @if w.stale { " " span.tag.stale { "stale" } }
                    @if !w.present { " " span.tag.gone { "gone" } }
                }))
            }
            section {
                h2 { "Numbers (" (v.numbers.len()) ")" }
                @if v.numbers.is_empty() {
                    p.empty { "No number of this WABA is known." }
                } @else {
                    table.fleet {
                        thead { tr { th { "Number" } th { "Verified name" } th { "Quality" } th { "Status" } th { "Health" } th { "Limit" } th { "Since" } th { "" } } }
                        tbody {
                            @for l in v.numbers {
                                (number_row(l, v.now))
                            }
                        }
                    }
                }
            }
            (story(v.story, v.now))
        },
    )
}

fn story(s: &Story, now: DateTime<Utc>) -> Markup {
    html! {
        @if !s.silences.is_empty() {
            (silences_table(&s.silences, now, "Silences that match it"))
        }
        section {
            h2 { "Health, as Meta reports it" }
            @if s.entities.is_empty() {
                p.empty { "Meta reported no health entities." }
            } @else {
                (entities(&s.entities))
            }
        }
        section {
            h2 { (s.chart.title) }
            (chart(&s.chart))
        }
        section {
            h2 { "History" }
            @if s.history.is_empty() {
                p.empty { "No change recorded." }
            } @else {
                @if s.history_total > s.history.len() as u64 {
                    p.meta { "The latest " (s.history.len()) " of " (s.history_total) " changes (all of them: "
                        code { "waba-monitor history" } " or " code { "/api/accounts/{id}/history" } ")." }
                }
                ol.timeline {
                    @for h in &s.history {
                        li {
                            time datetime=(h.observed_at) title=(h.observed_at) { (h.observed_at.get(..19).unwrap_or(&h.observed_at).replace('T', " ")) }
                            " "
                            span.field { (h.field.replace('_', " ")) }
                            " "
                            @if let Some(old) = &h.old {
                                span class=(value_class(&h.field, Some(old))) { (old) } " → "
                            }
                            span class=(value_class(&h.field, h.new.as_deref())) { (or_dash(h.new.as_deref())) }
                            @if h.kind == "template" { " " span.k { "template " (h.id) } }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Emails sent about it" }
            @if s.emails.is_empty() {
                p.empty { "No email about it is in the outbox (sent emails are kept for the retention period)." }
            } @else {
                table.emails {
                    thead { tr { th { "Queued" } th { "Subject" } th { "To" } th { "State" } th { "Sent" } th { "Attempts" } } }
                    tbody {
                        @for m in &s.emails {
                            tr {
                                td { time datetime=(m.created_at) title=(m.created_at) { (ago(now, &m.created_at)) " ago" } }
                                td { (m.subject) }
                                td { (m.recipient) }
                                td { span class={ "mail-" (mail_state_class(&m.state)) } { (m.state) }
                                    @if let Some(err) = &m.last_error { br; span.error { (err) } } }
                                td { @if let Some(t) = &m.sent_at { time datetime=(t) title=(t) { (ago(now, t)) " ago" } } @else { (DASH) } }
                                td { (m.attempts) }
                            }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Templates with problems in its WABA" }
            @if s.templates.is_empty() {
                p.empty { "None (or its WABA's templates are not read)." }
            } @else {
                table.templates {
                    thead { tr { th { "Template" } th { "Language" } th { "Status" } th { "Quality" } th { "Category" } th { "Reason" } } }
                    tbody {
                        @for t in &s.templates {
                            tr {
                                td { (or_dash(t.name.as_deref())) br; span.id { (t.id) } }
                                td { (or_dash(t.language.as_deref())) }
                                td { span class=(template_class(t.status.as_deref())) { (or_dash(t.status.as_deref())) } }
                                td { span class=(value_class(field::QUALITY_RATING, t.quality.as_deref())) { (or_dash(t.quality.as_deref())) } }
                                td { (or_dash(t.category.as_deref())) }
                                td { (or_dash(t.rejected_reason.as_deref().filter(|r| *r != "NONE"))) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn mail_state_class(state: &str) -> &'static str {
    match state {
        "sent" => "sent",
        "pending" => "pending",
        _ => "failed",
    }
}

fn template_class(status: Option<&str>) -> &'static str {
    match status {
        Some("DISABLED") => "v v-bad",
        Some("APPROVED") => "v v-good",
        Some(_) => "v v-warn",
        None => "v v-none",
    }
}

fn entities(list: &[HealthEntity]) -> Markup {
    html! {
        table.entities {
            thead { tr { th { "Entity" } th { "Can send" } th { "Errors and possible solutions" } } }
            tbody {
                @for e in list {
                    tr {
                        td { (e.entity_type) @if let Some(id) = &e.id { br; span.id { (id) } } }
                        td { (value(field::HEALTH, Some(&e.can_send_message))) }
                        td {
                            @if e.errors.is_empty() && e.additional_info.is_empty() { (DASH) }
                            @for err in &e.errors {
                                div.err {
                                    @if let Some(code) = err.error_code { span.code { (code) } " " }
                                    (or_dash(err.error_description.as_deref()))
                                    @if let Some(fix) = &err.possible_solution {
                                        div.fix { span.k { "Possible solution: " } (fix) }
                                    }
                                }
                            }
                            @for info in &e.additional_info {
                                div.info { (info) }
                            }
                        }
                    }
                }
            }
        }
    }
}

const CHART_W: f64 = 720.0;
const CHART_H: f64 = 84.0;
const BAND_TOP: f64 = 6.0;
const BAND_H: f64 = 56.0;

/// The band a value is drawn in and its height on the step line: good high, bad low.
fn chart_class(v: &str) -> (&'static str, f64) {
    match v {
        "GREEN" | "AVAILABLE" => ("c-good", BAND_TOP + 8.0),
        "YELLOW" | "LIMITED" => ("c-warn", BAND_TOP + BAND_H / 2.0),
        "RED" | "BLOCKED" => ("c-bad", BAND_TOP + BAND_H - 8.0),
        _ => ("c-none", BAND_TOP + BAND_H / 2.0),
    }
}

fn chart(c: &Chart) -> Markup {
    let mut points = String::new();
    for s in &c.segments {
        let (_, y) = chart_class(&s.value);
        points.push_str(&format!(
            "{:.1},{y:.1} {:.1},{y:.1} ",
            s.x0 * CHART_W,
            s.x1 * CHART_W
        ));
    }
    let mut legend: Vec<&str> = c.segments.iter().map(|s| s.value.as_str()).collect();
    legend.sort_unstable();
    legend.dedup();
    html! {
        @if c.segments.is_empty() {
            p.empty { "No value recorded in this window." }
        } @else {
            svg.chart xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (CHART_W) " " (CHART_H) } width=(CHART_W) height=(CHART_H) role="img" aria-label=(c.title) {
                rect.frame x="0" y=(BAND_TOP) width=(CHART_W) height=(BAND_H) {}
                @for s in &c.segments {
                    rect class=(chart_class(&s.value).0)
                        x=(format!("{:.1}", s.x0 * CHART_W)) y=(BAND_TOP)
                        width=(format!("{:.1}", ((s.x1 - s.x0) * CHART_W).max(1.0))) height=(BAND_H) {
                        title { (s.value) ": " (s.from) " – " (s.to) }
                    }
                }
                polyline.step points=(points.trim_end()) {}
                text.axis x="0" y=(CHART_H - 4.0) { (c.start.format("%Y-%m-%d")) }
                text.axis.end x=(CHART_W) y=(CHART_H - 4.0) { "now" }
            }
            p.legend {
                @for v in legend {
                    span class={ "sw " (chart_class(v).0) } {} " " (v) " "
                }
                @if let Some(first) = c.segments.first().filter(|s| s.x0 > 0.0) {
                    span.k { " · recorded since " (first.from.get(..16).unwrap_or(&first.from).replace('T', " ")) }
                }
            }
        }
    }
}

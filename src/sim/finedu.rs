//! A simulated Finedu BSP API: the "Waba account list" endpoint, served over loopback HTTP.
//!
//! `GET /v1/whatsapp/businessAccounts?pageNo=1&pageSize=10[&accountReviewStatus=APPROVED]`
//! with `Authorization: Bearer <token>` answers one page of WABAs, each with all its phone
//! numbers nested, in camelCase, plus the page-number paging fields `total`, `size`, `current`
//! and `pages` (the reference is `reference/bsp-business-accounts-api.txt`).
//!
//! The documentation says nothing about errors or about edge cases, so the simulator makes
//! choices a Java backend behind a proxy plausibly makes, and tests should not read more into
//! them than that:
//! - errors are `{"code":<http status>,"message":"...","data":null}`: 401 for a missing or
//!   wrong token, 400 for a `pageNo` or `pageSize` outside 1..=100 or not an integer and for an
//!   unknown `accountReviewStatus`, 404 for another path, 405 for another method;
//! - an empty parameter (`pageNo=`) counts as absent, and so takes its default;
//! - `pages` is `ceil(total / size)`, so an empty listing has `pages: 0` and `data: []`, as the
//!   MyBatis-Plus page object whose field names the API reuses computes it;
//! - a `pageNo` past the end answers `data: []` with the true `total` and `pages`, and
//!   `current` echoes the page asked for;
//! - a field that is `None` is sent as JSON `null` rather than left out;
//! - the token is checked before the path, as a gateway in front of the service would.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, FixedOffset};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use url::form_urlencoded;

use super::SimState;

/// The only path the simulator serves.
pub const ACCOUNTS_PATH: &str = "/v1/whatsapp/businessAccounts";
/// The largest `pageNo` and `pageSize` the API accepts.
pub const MAX_PAGE_PARAM: u32 = 100;
const DEFAULT_PAGE_SIZE: u32 = 10;
const REVIEW_STATUSES: [&str; 3] = ["PENDING", "APPROVED", "REJECTED"];
const JSON_TYPE: &str = "application/json;charset=UTF-8";
const HTML_TYPE: &str = "text/html; charset=utf-8";
/// How long `shutdown` waits for requests in flight (a hanging fault, say) before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The timestamp of the reference's example, which every made-up timestamp counts from.
const BASE_STAMP: &str = "2025-12-01T11:04:56.000+08:00";
/// `BASE_STAMP` as Unix seconds.
const BASE_UNIX: i64 = 1_764_558_296;
/// Minutes after `BASE_STAMP` at which the demo's changes start to be stamped: a day, well after
/// the few minutes over which the demo fleet's creation times are spread.
const DEMO_LIFE_START_MINUTES: u64 = 24 * 60;

/// Ids of the demo fleet, public so the demo command and its tests can name them.
pub mod ids {
    pub const GLOBEX: &str = "512839046172801";
    pub const INITECH: &str = "512839046172802";
    /// (WABA id, phone number id, display number, verified name).
    pub const PHONES: [(&str, &str, &str, &str); 4] = [
        (GLOBEX, "623410987654301", "+1 555-0142", "Globex Dispatch"),
        (GLOBEX, "623410987654302", "+1 555-0143", "Globex Tracking"),
        (
            INITECH,
            "623410987654303",
            "+44 20 7946 0958",
            "Initech Appointments",
        ),
        (
            INITECH,
            "623410987654304",
            "+34 91 123 4567",
            "Initech Recepción",
        ),
    ];
}

/// One business phone number as the BSP lists it inside its WABA.
#[derive(Debug, Clone, PartialEq)]
pub struct FineduPhone {
    pub phone_number_id: String,
    pub display_phone_number: String,
    pub verified_name: String,
    pub status: Option<String>,
    pub quality_rating: Option<String>,
    pub code_verification_status: Option<String>,
    /// Sent as a plain string (`"STANDARD"`), unlike Meta's `{"level": ...}` object.
    pub throughput: Option<String>,
    pub messaging_limit_tier: Option<String>,
    pub create_time: String,
    pub update_time: String,
    /// Raw values keyed by the camelCase JSON name that replace (or add to) the rendered
    /// fields, e.g. `{"qualityRating": 5}` to send a wrong type.
    pub overrides: Map<String, Value>,
}

/// One WABA as the BSP lists it, its numbers nested.
#[derive(Debug, Clone, PartialEq)]
pub struct FineduWaba {
    pub waba_id: String,
    pub name: String,
    /// The BSP's own account status, `"ACTIVE"` in every example.
    pub status: String,
    pub business_verification_status: Option<String>,
    pub account_review_status: Option<String>,
    /// Sent as `whatsappBusinessManagerMessagingLimit`.
    pub business_messaging_limit: Option<String>,
    pub create_time: String,
    pub update_time: String,
    /// Sent as `businessPhoneNumbers`, in this order.
    pub phones: Vec<FineduPhone>,
    /// Raw values keyed by the camelCase JSON name that replace (or add to) the rendered
    /// fields.
    pub overrides: Map<String, Value>,
}

/// An injected failure. Each applies to every matching request until a test removes it from
/// [`FineduState::faults`], except `ShrinkAfterPage` and `GrowAfterPage`, which act once and
/// then remove themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FineduFault {
    /// 401 for every request, whatever token it carries.
    Unauthorized,
    /// An HTML error page with this status, as a proxy in front of the BSP sends, for requests
    /// of this `pageNo` (a missing `pageNo` is page 1); `None` hits every request. It comes
    /// before the token check, since the proxy answers without asking the service.
    HtmlError { status: u16, page: Option<u32> },
    /// A 200 whose JSON body is cut in the middle, for this page (`None` = every page).
    Malformed { page: Option<u32> },
    /// After a 200 for this page, the last WABA of the list disappears, so later pages report a
    /// smaller `total` (and maybe fewer `pages`): paging that changes during a walk.
    ShrinkAfterPage(u32),
    /// After a 200 for this page, a new APPROVED WABA with one number is appended, so later
    /// pages report a larger `total`.
    GrowAfterPage(u32),
    /// Sleep this long before answering; several hangs add up.
    Hang(Duration),
    /// A 200 for this page with an empty `data` array, `total` and `pages` unchanged (a BSP
    /// whose listing lost entries behind its counters).
    EmptyPage(u32),
}

/// Everything the simulator serves. Mutate it between requests through
/// [`FineduSim::with_state`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FineduState {
    /// In the order the API pages through them.
    pub wabas: Vec<FineduWaba>,
    pub faults: Vec<FineduFault>,
}

/// A timestamp in the BSP's format (`2025-12-01T11:04:56.000+08:00`), this many minutes after
/// the reference's example.
fn stamp(minutes: u64) -> String {
    let seconds = i64::try_from(minutes)
        .ok()
        .and_then(|m| m.checked_mul(60))
        .and_then(|s| s.checked_add(BASE_UNIX));
    let time = seconds.and_then(|s| DateTime::from_timestamp(s, 0));
    match (time, FixedOffset::east_opt(8 * 3600)) {
        (Some(time), Some(offset)) => time
            .with_timezone(&offset)
            .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
            .to_string(),
        // Out of chrono's range only for absurd offsets; any valid stamp will do then.
        _ => BASE_STAMP.to_owned(),
    }
}

impl FineduPhone {
    /// A healthy number: CONNECTED, GREEN, VERIFIED, STANDARD throughput, TIER_2K.
    pub fn new(id: &str, display: &str, verified_name: &str, created: String) -> Self {
        FineduPhone {
            phone_number_id: id.to_owned(),
            display_phone_number: display.to_owned(),
            verified_name: verified_name.to_owned(),
            status: Some("CONNECTED".to_owned()),
            quality_rating: Some("GREEN".to_owned()),
            code_verification_status: Some("VERIFIED".to_owned()),
            throughput: Some("STANDARD".to_owned()),
            messaging_limit_tier: Some("TIER_2K".to_owned()),
            update_time: created.clone(),
            create_time: created,
            overrides: Map::new(),
        }
    }

    fn to_json(&self, waba_id: &str) -> Value {
        let mut object = Map::new();
        object.insert("wabaId".to_owned(), json!(waba_id));
        object.insert("phoneNumberId".to_owned(), json!(self.phone_number_id));
        object.insert(
            "displayPhoneNumber".to_owned(),
            json!(self.display_phone_number),
        );
        object.insert("verifiedName".to_owned(), json!(self.verified_name));
        object.insert("status".to_owned(), json!(self.status));
        object.insert("qualityRating".to_owned(), json!(self.quality_rating));
        object.insert(
            "codeVerificationStatus".to_owned(),
            json!(self.code_verification_status),
        );
        object.insert("throughput".to_owned(), json!(self.throughput));
        object.insert(
            "messagingLimitTier".to_owned(),
            json!(self.messaging_limit_tier),
        );
        object.insert("createTime".to_owned(), json!(self.create_time));
        object.insert("updateTime".to_owned(), json!(self.update_time));
        apply_overrides(&mut object, &self.overrides);
        Value::Object(object)
    }
}

impl FineduWaba {
    /// A healthy WABA without numbers: ACTIVE, verified, APPROVED, TIER_2K.
    pub fn new(id: &str, name: &str, created: String) -> Self {
        FineduWaba {
            waba_id: id.to_owned(),
            name: name.to_owned(),
            status: "ACTIVE".to_owned(),
            business_verification_status: Some("verified".to_owned()),
            account_review_status: Some("APPROVED".to_owned()),
            business_messaging_limit: Some("TIER_2K".to_owned()),
            update_time: created.clone(),
            create_time: created,
            phones: Vec::new(),
            overrides: Map::new(),
        }
    }

    fn to_json(&self) -> Value {
        let phones: Vec<Value> = self
            .phones
            .iter()
            .map(|phone| phone.to_json(&self.waba_id))
            .collect();
        let mut object = Map::new();
        object.insert("wabaId".to_owned(), json!(self.waba_id));
        object.insert("name".to_owned(), json!(self.name));
        object.insert("status".to_owned(), json!(self.status));
        object.insert(
            "businessVerificationStatus".to_owned(),
            json!(self.business_verification_status),
        );
        object.insert(
            "accountReviewStatus".to_owned(),
            json!(self.account_review_status),
        );
        object.insert(
            "whatsappBusinessManagerMessagingLimit".to_owned(),
            json!(self.business_messaging_limit),
        );
        object.insert("businessPhoneNumbers".to_owned(), Value::Array(phones));
        object.insert("createTime".to_owned(), json!(self.create_time));
        object.insert("updateTime".to_owned(), json!(self.update_time));
        apply_overrides(&mut object, &self.overrides);
        Value::Object(object)
    }
}

fn apply_overrides(object: &mut Map<String, Value>, overrides: &Map<String, Value>) {
    for (key, value) in overrides {
        object.insert(key.clone(), value.clone());
    }
}

/// The first id counting up from `start` that `taken` rejects, for WABAs and numbers a fault
/// adds while a test may already use the obvious ones.
fn free_id(start: u64, taken: impl Fn(&str) -> bool) -> String {
    let mut n = start;
    loop {
        let id = n.to_string();
        if !taken(&id) {
            return id;
        }
        n += 1;
    }
}

/// The parameters of a valid listing request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Params {
    page_no: u32,
    page_size: u32,
    review_status: Option<String>,
}

/// The first value of a query parameter; an empty value counts as absent, as Spring binds it.
fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
        .filter(|value| !value.is_empty())
}

fn bounded(query: &[(String, String)], name: &str, default: u32) -> Result<u32, String> {
    match param(query, name) {
        None => Ok(default),
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_PAGE_PARAM).contains(n))
            .ok_or_else(|| format!("{name} must be an integer from 1 to {MAX_PAGE_PARAM}")),
    }
}

impl Params {
    fn parse(query: &[(String, String)]) -> Result<Params, String> {
        let page_no = bounded(query, "pageNo", 1)?;
        let page_size = bounded(query, "pageSize", DEFAULT_PAGE_SIZE)?;
        let review_status = match param(query, "accountReviewStatus") {
            None => None,
            Some(status) if REVIEW_STATUSES.contains(&status) => Some(status.to_owned()),
            Some(_) => {
                return Err(format!(
                    "accountReviewStatus must be one of {}",
                    REVIEW_STATUSES.join(", ")
                ));
            }
        };
        Ok(Params {
            page_no,
            page_size,
            review_status,
        })
    }
}

impl FineduState {
    /// Adds a healthy WABA at the end of the list, or redefines the one with this id in place
    /// (keeping its numbers, so a test can reshape a WABA without rebuilding them).
    pub fn add_waba(&mut self, id: &str, name: &str) -> &mut FineduWaba {
        let created = stamp(self.wabas.len() as u64 * 60);
        let mut waba = FineduWaba::new(id, name, created);
        match self.wabas.iter().position(|w| w.waba_id == id) {
            Some(index) => {
                waba.phones = std::mem::take(&mut self.wabas[index].phones);
                waba.create_time = self.wabas[index].create_time.clone();
                self.wabas[index] = waba;
                &mut self.wabas[index]
            }
            None => {
                self.wabas.push(waba);
                let last = self.wabas.len() - 1;
                &mut self.wabas[last]
            }
        }
    }

    /// Adds a healthy number at the end of its WABA's list; a WABA id not yet known is created
    /// on the fly, and a number already listed elsewhere moves.
    pub fn add_phone(
        &mut self,
        waba_id: &str,
        id: &str,
        display: &str,
        verified_name: &str,
    ) -> &mut FineduPhone {
        self.remove_phone(id);
        let waba_index = match self.wabas.iter().position(|w| w.waba_id == waba_id) {
            Some(index) => index,
            None => {
                self.add_waba(waba_id, &format!("WABA {waba_id}"));
                self.wabas.len() - 1
            }
        };
        let phones = &mut self.wabas[waba_index].phones;
        // A few minutes after its WABA, whose creation `add_waba` spaces an hour apart.
        let created = stamp(waba_index as u64 * 60 + (phones.len() as u64 + 1) * 7);
        phones.push(FineduPhone::new(id, display, verified_name, created));
        let last = phones.len() - 1;
        &mut phones[last]
    }

    fn phone_count(&self) -> usize {
        self.wabas.iter().map(|w| w.phones.len()).sum()
    }

    /// The same fleet as the Graph simulator's, in Finedu's shape: every WABA in id order with
    /// its numbers in edge order; ids, names, review and verification statuses, the portfolio
    /// limit, and each number's status, quality, code verification, throughput level and
    /// legacy tier carried over. Overrides and faults are not: their keys and kinds are Meta's.
    pub fn from_graph(state: &SimState) -> FineduState {
        let mut finedu = FineduState::default();
        for waba in state.wabas.values() {
            let added = finedu.add_waba(&waba.id, &waba.name);
            added.business_verification_status = waba.business_verification_status.clone();
            added.account_review_status = waba.account_review_status.clone();
            added.business_messaging_limit = waba.business_messaging_limit.clone();
            for phone in waba.phones.iter().filter_map(|id| state.phones.get(id)) {
                let added = finedu.add_phone(
                    &waba.id,
                    &phone.id,
                    &phone.display_phone_number,
                    &phone.verified_name,
                );
                added.status = phone.status.clone();
                added.quality_rating = phone.quality_rating.clone();
                added.code_verification_status = phone.code_verification_status.clone();
                added.throughput = phone.throughput_level.clone();
                added.messaging_limit_tier = phone.messaging_limit_tier.clone();
            }
        }
        finedu
    }

    /// A benchmark fleet of `wabas` APPROVED WABAs (`500000000000001`, ...) with
    /// `phones_per_waba` healthy numbers each (`600000000000001`, ...), numbered across the
    /// fleet. Ids and display numbers differ from [`SimState::fleet`]'s, so both can run side
    /// by side without the two sources claiming the same number by accident.
    pub fn fleet(wabas: usize, phones_per_waba: usize) -> FineduState {
        let mut state = FineduState::default();
        for w in 0..wabas {
            let waba_id = (500_000_000_000_001u64 + w as u64).to_string();
            state.add_waba(&waba_id, &format!("Finedu WABA {}", w + 1));
            for p in 0..phones_per_waba {
                let n = (w * phones_per_waba + p) as u64;
                let phone_id = (600_000_000_000_001u64 + n).to_string();
                let display = format!("+55 11 9{:04}-{:04}", (n / 10_000) % 10_000, n % 10_000);
                state.add_phone(
                    &waba_id,
                    &phone_id,
                    &display,
                    &format!("Finedu {} Line {}", w + 1, p + 1),
                );
            }
        }
        state
    }

    /// A small fleet for the demo: two BSP customers, Globex Logistics and Initech Clinics,
    /// with two numbers each; "Initech Appointments" is YELLOW. It is `demo_step(0)`.
    pub fn demo() -> FineduState {
        let mut state = FineduState::default();
        state
            .add_waba(ids::GLOBEX, "Globex Logistics")
            .business_messaging_limit = Some("TIER_10K".to_owned());
        state.add_waba(ids::INITECH, "Initech Clinics");
        for (waba, id, display, name) in ids::PHONES {
            state.add_phone(waba, id, display, name);
        }
        // A real fleet is not uniform: a number not yet moved off the legacy per-number tier,
        // and one with more throughput.
        state.phone_mut(ids::PHONES[3].1).messaging_limit_tier = Some("TIER_1K".to_owned());
        state.phone_mut(ids::PHONES[0].1).throughput = Some("HIGH".to_owned());
        state.demo_step(0);
        state
    }

    /// Deterministic "life" for the demo fleet. The statuses and ratings after `demo_step(k)`
    /// depend only on `k`:
    /// - "Globex Dispatch" is YELLOW during steps 3–5 of every 6, GREEN otherwise;
    /// - "Initech Appointments" is GREEN during steps 5–7 of every 10, YELLOW otherwise;
    /// - "Globex Tracking" is RATE_LIMITED during steps 7–8 of every 10, CONNECTED otherwise.
    ///
    /// A number whose values change gets an `updateTime` `k` minutes into the day after the
    /// fleet was created, so updates never precede creations. Numbers a caller removed are
    /// skipped.
    pub fn demo_step(&mut self, step: u64) {
        let yellow_dispatch = (3..6).contains(&(step % 6));
        let green_appointments = (5..8).contains(&(step % 10));
        let rate_limited = (7..9).contains(&(step % 10));
        let quality = |yellow: bool| if yellow { "YELLOW" } else { "GREEN" };
        let plan = [
            (ids::PHONES[0].1, "CONNECTED", quality(yellow_dispatch)),
            (
                ids::PHONES[1].1,
                if rate_limited {
                    "RATE_LIMITED"
                } else {
                    "CONNECTED"
                },
                "GREEN",
            ),
            (ids::PHONES[2].1, "CONNECTED", quality(!green_appointments)),
            (ids::PHONES[3].1, "CONNECTED", "GREEN"),
        ];
        let updated = stamp(DEMO_LIFE_START_MINUTES.saturating_add(step));
        for (id, status, rating) in plan {
            let Some(phone) = self.find_phone_mut(id) else {
                continue;
            };
            let status = Some(status.to_owned());
            let rating = Some(rating.to_owned());
            if phone.status != status || phone.quality_rating != rating {
                phone.status = status;
                phone.quality_rating = rating;
                phone.update_time = updated.clone();
            }
        }
    }

    fn find_phone_mut(&mut self, id: &str) -> Option<&mut FineduPhone> {
        self.wabas
            .iter_mut()
            .flat_map(|w| w.phones.iter_mut())
            .find(|p| p.phone_number_id == id)
    }

    /// The phone number with this id.
    ///
    /// # Panics
    /// When the id is not in the fleet: that is a mistake in the test that set it up.
    pub fn phone_mut(&mut self, id: &str) -> &mut FineduPhone {
        match self.find_phone_mut(id) {
            Some(phone) => phone,
            None => panic!("phone number {id} is not in the simulated Finedu fleet"),
        }
    }

    /// The WABA with this id.
    ///
    /// # Panics
    /// When the id is not in the fleet: that is a mistake in the test that set it up.
    pub fn waba_mut(&mut self, id: &str) -> &mut FineduWaba {
        match self.wabas.iter_mut().find(|w| w.waba_id == id) {
            Some(waba) => waba,
            None => panic!("WABA {id} is not in the simulated Finedu fleet"),
        }
    }

    /// Removes a phone number from whichever WABA lists it; an unknown id changes nothing.
    pub fn remove_phone(&mut self, id: &str) {
        for waba in &mut self.wabas {
            waba.phones.retain(|p| p.phone_number_id != id);
        }
    }

    /// Removes a WABA and its numbers; an unknown id changes nothing.
    pub fn remove_waba(&mut self, id: &str) {
        self.wabas.retain(|w| w.waba_id != id);
    }

    /// The answer to a valid listing request.
    fn page(&self, params: &Params) -> Value {
        let matching: Vec<&FineduWaba> = self
            .wabas
            .iter()
            .filter(|w| {
                params
                    .review_status
                    .as_deref()
                    .is_none_or(|wanted| w.account_review_status.as_deref() == Some(wanted))
            })
            .collect();
        let total = matching.len();
        let size = params.page_size as usize;
        let skip = (params.page_no as usize - 1) * size;
        let data: Vec<Value> = matching
            .iter()
            .skip(skip)
            .take(size)
            .map(|w| w.to_json())
            .collect();
        json!({
            "data": data,
            "total": total,
            "size": params.page_size,
            "current": params.page_no,
            "pages": total.div_ceil(size),
        })
    }

    /// Runs the faults that act once a page has been answered with a 200.
    fn after_serving(&mut self, page: u32) {
        if let Some(index) = self
            .faults
            .iter()
            .position(|f| *f == FineduFault::ShrinkAfterPage(page))
        {
            self.faults.remove(index);
            self.wabas.pop();
        }
        if let Some(index) = self
            .faults
            .iter()
            .position(|f| *f == FineduFault::GrowAfterPage(page))
        {
            self.faults.remove(index);
            self.grow();
        }
    }

    /// Appends a WABA with one number, with ids no test is likely to have used.
    fn grow(&mut self) {
        let waba_id = free_id(599_000_000_000_001, |id| {
            self.wabas.iter().any(|w| w.waba_id == id)
        });
        let phone_id = free_id(699_000_000_000_001, |id| {
            self.wabas
                .iter()
                .flat_map(|w| &w.phones)
                .any(|p| p.phone_number_id == id)
        });
        let display = format!("+1 555-{:04}", self.phone_count() % 10_000);
        let name = format!("Late Customer {}", self.wabas.len() + 1);
        self.add_waba(&waba_id, &name);
        self.add_phone(&waba_id, &phone_id, &display, &format!("{name} Line 1"));
    }
}

/// One HTTP request as the simulator received it, for tests to inspect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FineduRequest {
    pub path: String,
    /// The raw query string, empty when there is none.
    pub query: String,
    /// The raw `Authorization` header.
    pub authorization: Option<String>,
}

struct Shared {
    token: String,
    url: String,
    state: Mutex<FineduState>,
    log: Mutex<Vec<FineduRequest>>,
}

/// A poisoned lock only means a test panicked mid-update; the data is still the best we have.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running simulator. Dropping it stops the server too; `shutdown` does it gracefully.
pub struct FineduSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FineduSim {
    /// Binds `127.0.0.1:0` and serves `state` to requests carrying `Bearer <token>` until
    /// shutdown. It returns once the port is bound, so the URL can be used at once.
    pub async fn start(state: FineduState, token: &str) -> std::io::Result<FineduSim> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            token: token.to_owned(),
            url: format!("http://{addr}"),
            state: Mutex::new(state),
            log: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(async move {
                // A dropped sender also means stop.
                let _ = stopped.await;
            });
            if let Err(error) = server.await {
                tracing::warn!(%error, "simulated Finedu API stopped with an error");
            }
        });
        Ok(FineduSim {
            shared,
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The base URL a client configures, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        self.shared.url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Reads or changes the fleet and the faults; requests wait while `f` runs.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut FineduState) -> R) -> R {
        f(&mut lock(&self.shared.state))
    }

    /// Every HTTP request received since start, in order.
    pub fn requests(&self) -> Vec<FineduRequest> {
        lock(&self.shared.log).clone()
    }

    pub fn request_count(&self) -> u64 {
        lock(&self.shared.log).len() as u64
    }

    /// A cheap handle to the same simulator that a spawned task can own (the demo's stepper
    /// uses one); it cannot stop the server.
    pub fn clone_handle(&self) -> FineduHandle {
        FineduHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Stops accepting connections, lets requests in flight finish (for at most two seconds)
    /// and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for FineduSim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A shared handle to a running simulator, from [`FineduSim::clone_handle`].
#[derive(Clone)]
pub struct FineduHandle {
    shared: Arc<Shared>,
}

impl FineduHandle {
    /// See [`FineduSim::with_state`].
    pub fn with_state<R>(&self, f: impl FnOnce(&mut FineduState) -> R) -> R {
        f(&mut lock(&self.shared.state))
    }

    pub fn url(&self) -> String {
        self.shared.url.clone()
    }
}

/// A request, parsed once.
struct Incoming {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    authorization: Option<String>,
}

impl Incoming {
    /// The page a fault aimed at a page number hits: `pageNo`, 1 when absent, and no page at
    /// all when it is not a number (only faults for every page hit such a request).
    fn page_hint(&self) -> Option<u32> {
        match param(&self.query, "pageNo") {
            None => Some(1),
            Some(text) => text.parse().ok(),
        }
    }
}

/// The server's answer, before it becomes an HTTP response.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
    headers: Vec<(header::HeaderName, &'static str)>,
}

impl Reply {
    fn json(status: u16, body: String) -> Reply {
        Reply {
            status,
            content_type: JSON_TYPE,
            body,
            headers: Vec::new(),
        }
    }

    /// The BSP's error envelope, the HTTP status repeated as `code`.
    fn error(status: u16, message: &str) -> Reply {
        let body = json!({ "code": status, "message": message, "data": null });
        let mut reply = Reply::json(status, body.to_string());
        if status == 401 {
            reply.headers.push((header::WWW_AUTHENTICATE, "Bearer"));
        }
        reply
    }

    /// The kind of page a proxy in front of the BSP sends when the service behind it fails.
    fn html(status: u16) -> Reply {
        let reason = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        Reply {
            status,
            content_type: HTML_TYPE,
            body: format!(
                "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            ),
            headers: Vec::new(),
        }
    }

    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        for (name, value) in self.headers {
            headers.append(name, HeaderValue::from_static(value));
        }
        response
    }
}

/// Cuts a body in the middle, on a character boundary so it stays a valid string.
fn truncate_half(body: &mut String) {
    let mut cut = body.len() / 2;
    while !body.is_char_boundary(cut) {
        cut -= 1;
    }
    body.truncate(cut);
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    let raw_query = parts.uri.query().unwrap_or_default().to_owned();
    let incoming = Incoming {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        query: form_urlencoded::parse(raw_query.as_bytes())
            .into_owned()
            .collect(),
        authorization: parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    lock(&shared.log).push(FineduRequest {
        path: incoming.path.clone(),
        query: raw_query,
        authorization: incoming.authorization.clone(),
    });
    // The hang comes first and the answer is computed after it, so a test that changes the
    // state while a request hangs sees the change in the answer.
    let hang: Duration = lock(&shared.state)
        .faults
        .iter()
        .map(|fault| match fault {
            FineduFault::Hang(duration) => *duration,
            _ => Duration::ZERO,
        })
        .sum();
    if !hang.is_zero() {
        tokio::time::sleep(hang).await;
    }
    shared.answer(&incoming).into_response()
}

impl Shared {
    fn authorized(&self, incoming: &Incoming) -> bool {
        incoming
            .authorization
            .as_deref()
            .and_then(|value| value.trim().split_once(' '))
            .is_some_and(|(scheme, token)| {
                scheme.eq_ignore_ascii_case("bearer") && token.trim() == self.token
            })
    }

    fn answer(&self, incoming: &Incoming) -> Reply {
        let mut state = lock(&self.state);
        let page_hint = incoming.page_hint();
        let hits = |page: &Option<u32>| page.is_none() || *page == page_hint;
        let html = state.faults.iter().find_map(|fault| match fault {
            FineduFault::HtmlError { status, page } if hits(page) => Some(*status),
            _ => None,
        });
        if let Some(status) = html {
            return Reply::html(status);
        }
        if state.faults.contains(&FineduFault::Unauthorized) || !self.authorized(incoming) {
            return Reply::error(401, "Unauthorized");
        }
        if incoming.path != ACCOUNTS_PATH {
            return Reply::error(404, "Not Found");
        }
        if incoming.method != Method::GET {
            return Reply::error(405, "Method Not Allowed");
        }
        let params = match Params::parse(&incoming.query) {
            Ok(params) => params,
            Err(message) => return Reply::error(400, &message),
        };
        let mut page = state.page(&params);
        if state
            .faults
            .contains(&FineduFault::EmptyPage(params.page_no))
        {
            page["data"] = json!([]);
        }
        let mut body = page.to_string();
        let malformed = state
            .faults
            .iter()
            .any(|fault| matches!(fault, FineduFault::Malformed { page } if hits(page)));
        if malformed {
            truncate_half(&mut body);
        }
        state.after_serving(params.page_no);
        Reply::json(200, body)
    }
}

#[cfg(test)]
mod tests {
    // A failed unwrap is a failed test, which is what a test wants.
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeSet;
    use std::time::Instant;

    use super::*;

    const TOKEN: &str = "finedu-test-token";

    struct Answer {
        status: u16,
        content_type: String,
        text: String,
    }

    impl Answer {
        fn json(&self) -> Value {
            serde_json::from_str(&self.text)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
        }
    }

    async fn send(request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.unwrap();
        Answer {
            status: response.status().as_u16(),
            content_type: response
                .headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default(),
            text: response.text().await.unwrap(),
        }
    }

    /// GET the listing with this query string and the right token.
    async fn list(sim: &FineduSim, query: &str) -> Answer {
        let url = format!("{}{ACCOUNTS_PATH}?{query}", sim.url());
        send(reqwest::Client::new().get(url).bearer_auth(TOKEN)).await
    }

    async fn start(state: FineduState) -> FineduSim {
        FineduSim::start(state, TOKEN).await.unwrap()
    }

    fn waba_ids(page: &Value) -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["wabaId"].as_str().unwrap().to_owned())
            .collect()
    }

    /// (total, size, current, pages) of a page.
    fn paging(page: &Value) -> (u64, u64, u64, u64) {
        let n = |key: &str| page[key].as_u64().unwrap();
        (n("total"), n("size"), n("current"), n("pages"))
    }

    #[tokio::test]
    async fn walking_three_pages_to_the_end_lists_every_waba_once_with_all_its_numbers() {
        let sim = start(FineduState::fleet(7, 2)).await;
        let mut seen = Vec::new();
        let mut page_no = 1;
        loop {
            let answer = list(&sim, &format!("pageNo={page_no}&pageSize=3")).await;
            assert_eq!(answer.status, 200, "{}", answer.text);
            assert!(answer.content_type.starts_with("application/json"));
            let page = answer.json();
            assert_eq!(paging(&page), (7, 3, page_no, 3));
            for waba in page["data"].as_array().unwrap() {
                let phones = waba["businessPhoneNumbers"].as_array().unwrap();
                assert_eq!(phones.len(), 2);
                for phone in phones {
                    assert_eq!(phone["wabaId"], waba["wabaId"]);
                    assert_eq!(phone["qualityRating"], "GREEN");
                }
            }
            seen.extend(waba_ids(&page));
            if page_no >= paging(&page).3 {
                break;
            }
            page_no += 1;
        }
        let expected: Vec<String> = (1..=7)
            .map(|n| (500_000_000_000_000u64 + n).to_string())
            .collect();
        assert_eq!(seen, expected, "every WABA exactly once, in order");
        assert_eq!(sim.request_count(), 3);
        for request in sim.requests() {
            assert_eq!(request.path, ACCOUNTS_PATH);
            assert_eq!(
                request.authorization.as_deref(),
                Some(format!("Bearer {TOKEN}").as_str())
            );
            assert!(request.query.contains("pageSize=3"), "{}", request.query);
        }
    }

    #[tokio::test]
    async fn a_page_past_the_end_is_empty_but_keeps_the_true_totals() {
        let sim = start(FineduState::fleet(4, 1)).await;
        let page = list(&sim, "pageNo=9&pageSize=2").await.json();
        assert_eq!(page["data"], json!([]));
        assert_eq!(paging(&page), (4, 2, 9, 2));
    }

    #[tokio::test]
    async fn without_parameters_the_first_page_of_ten_is_served() {
        let sim = start(FineduState::fleet(12, 0)).await;
        let page = list(&sim, "").await.json();
        assert_eq!(paging(&page), (12, 10, 1, 2));
        assert_eq!(waba_ids(&page).len(), 10);
        let page = list(&sim, "pageNo=&pageSize=").await.json();
        assert_eq!(
            paging(&page),
            (12, 10, 1, 2),
            "empty values take the defaults"
        );
    }

    #[tokio::test]
    async fn an_empty_account_has_zero_pages_and_no_data() {
        let sim = start(FineduState::default()).await;
        let page = list(&sim, "pageNo=1&pageSize=10").await.json();
        assert_eq!(page["data"], json!([]));
        assert_eq!(paging(&page), (0, 10, 1, 0));
    }

    #[tokio::test]
    async fn the_review_status_filter_counts_and_pages_only_matching_wabas() {
        let mut state = FineduState::fleet(5, 1);
        state.waba_mut("500000000000002").account_review_status = Some("PENDING".to_owned());
        state.waba_mut("500000000000004").account_review_status = Some("REJECTED".to_owned());
        state.waba_mut("500000000000005").account_review_status = None;
        let sim = start(state).await;

        let approved = list(&sim, "accountReviewStatus=APPROVED&pageSize=1&pageNo=2").await;
        let approved = approved.json();
        assert_eq!(paging(&approved), (2, 1, 2, 2));
        assert_eq!(waba_ids(&approved), ["500000000000003"]);

        let pending = list(&sim, "accountReviewStatus=PENDING").await.json();
        assert_eq!(waba_ids(&pending), ["500000000000002"]);
        assert_eq!(pending["data"][0]["accountReviewStatus"], "PENDING");

        let all = list(&sim, "").await.json();
        assert_eq!(paging(&all).0, 5, "no filter lists every WABA");
        assert_eq!(all["data"][4]["accountReviewStatus"], Value::Null);
    }

    #[tokio::test]
    async fn an_unknown_review_status_is_refused_with_400() {
        let sim = start(FineduState::fleet(1, 1)).await;
        for status in ["approved", "DEFERRED"] {
            let answer = list(&sim, &format!("accountReviewStatus={status}")).await;
            assert_eq!(answer.status, 400, "{status}");
            let body = answer.json();
            assert_eq!(body["code"], 400);
            assert_eq!(body["data"], Value::Null);
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("accountReviewStatus")
            );
        }
    }

    #[tokio::test]
    async fn a_missing_or_wrong_token_gets_401_in_the_bsp_envelope() {
        let sim = start(FineduState::fleet(1, 1)).await;
        let url = format!("{}{ACCOUNTS_PATH}", sim.url());
        let client = reqwest::Client::new();
        let attempts = [
            client.get(&url),
            client.get(&url).bearer_auth("wrong-token"),
            client.get(&url).header(header::AUTHORIZATION, TOKEN),
            client
                .get(&url)
                .header(header::AUTHORIZATION, format!("Basic {TOKEN}")),
        ];
        for attempt in attempts {
            let answer = send(attempt).await;
            assert_eq!(answer.status, 401);
            assert_eq!(
                answer.json(),
                json!({ "code": 401, "message": "Unauthorized", "data": null })
            );
        }
        assert_eq!(sim.request_count(), 4);
        assert_eq!(sim.requests()[0].authorization, None);
    }

    #[tokio::test]
    async fn a_page_size_or_page_number_out_of_range_gets_400() {
        let sim = start(FineduState::fleet(1, 1)).await;
        for (query, param) in [
            ("pageSize=0", "pageSize"),
            ("pageSize=101", "pageSize"),
            ("pageSize=-1", "pageSize"),
            ("pageSize=ten", "pageSize"),
            ("pageNo=0", "pageNo"),
            ("pageNo=101", "pageNo"),
        ] {
            let answer = list(&sim, query).await;
            assert_eq!(answer.status, 400, "{query}");
            let body = answer.json();
            assert_eq!(body["code"], 400, "{query}");
            assert!(body["message"].as_str().unwrap().contains(param), "{query}");
        }
        let edge = list(&sim, "pageNo=100&pageSize=100").await;
        assert_eq!(edge.status, 200, "100 is still in range");
    }

    #[tokio::test]
    async fn another_path_is_404_and_another_method_is_405() {
        let sim = start(FineduState::fleet(1, 1)).await;
        let client = reqwest::Client::new();
        let other = format!("{}/v1/whatsapp/businessAccount", sim.url());
        let answer = send(client.get(other).bearer_auth(TOKEN)).await;
        assert_eq!(answer.status, 404);
        assert_eq!(answer.json()["code"], 404);
        let post = format!("{}{ACCOUNTS_PATH}", sim.url());
        let answer = send(client.post(post).bearer_auth(TOKEN)).await;
        assert_eq!(answer.status, 405);
    }

    #[tokio::test]
    async fn the_unauthorized_fault_refuses_even_the_right_token_until_cleared() {
        let sim = start(FineduState::fleet(1, 1)).await;
        sim.with_state(|s| s.faults.push(FineduFault::Unauthorized));
        for _ in 0..2 {
            assert_eq!(list(&sim, "").await.status, 401);
        }
        sim.with_state(|s| s.faults.clear());
        assert_eq!(list(&sim, "").await.status, 200);
    }

    #[tokio::test]
    async fn an_html_error_fault_hits_its_page_only_or_every_page() {
        let sim = start(FineduState::fleet(4, 1)).await;
        sim.with_state(|s| {
            s.faults.push(FineduFault::HtmlError {
                status: 502,
                page: Some(2),
            });
        });
        assert_eq!(list(&sim, "pageNo=1&pageSize=2").await.status, 200);
        let answer = list(&sim, "pageNo=2&pageSize=2").await;
        assert_eq!(answer.status, 502);
        assert!(answer.content_type.starts_with("text/html"));
        assert!(answer.text.contains("502 Bad Gateway"), "{}", answer.text);
        assert!(serde_json::from_str::<Value>(&answer.text).is_err());
        assert_eq!(
            list(&sim, "pageNo=2&pageSize=2").await.status,
            502,
            "the fault stays until removed"
        );

        sim.with_state(|s| {
            s.faults = vec![FineduFault::HtmlError {
                status: 503,
                page: None,
            }];
        });
        assert_eq!(list(&sim, "").await.status, 503);
        assert_eq!(list(&sim, "pageNo=2").await.status, 503);
        sim.with_state(|s| s.faults.clear());
        assert_eq!(list(&sim, "pageNo=2&pageSize=2").await.status, 200);
    }

    #[tokio::test]
    async fn a_malformed_fault_sends_a_200_whose_body_is_not_json() {
        // The demo fleet has a non-ASCII name, so the cut must respect character boundaries.
        let sim = start(FineduState::demo()).await;
        sim.with_state(|s| s.faults.push(FineduFault::Malformed { page: Some(1) }));
        let answer = list(&sim, "pageNo=1").await;
        assert_eq!(answer.status, 200);
        assert!(answer.text.starts_with("{\""), "{}", answer.text);
        assert!(serde_json::from_str::<Value>(&answer.text).is_err());
        assert_eq!(
            list(&sim, "pageNo=2").await.json()["data"],
            json!([]),
            "other pages stay intact"
        );
        sim.with_state(|s| s.faults = vec![FineduFault::Malformed { page: None }]);
        assert!(serde_json::from_str::<Value>(&list(&sim, "pageNo=2").await.text).is_err());
    }

    #[tokio::test]
    async fn shrink_after_page_lowers_the_totals_of_later_pages_once() {
        let sim = start(FineduState::fleet(5, 1)).await;
        sim.with_state(|s| s.faults.push(FineduFault::ShrinkAfterPage(1)));
        let first = list(&sim, "pageNo=1&pageSize=2").await.json();
        assert_eq!(paging(&first), (5, 2, 1, 3));
        assert!(
            sim.with_state(|s| s.faults.is_empty()),
            "the fault removed itself"
        );
        let second = list(&sim, "pageNo=2&pageSize=2").await.json();
        assert_eq!(paging(&second), (4, 2, 2, 2));
        let third = list(&sim, "pageNo=3&pageSize=2").await.json();
        assert_eq!(third["data"], json!([]), "the last WABA is gone");
        let again = list(&sim, "pageNo=1&pageSize=2").await.json();
        assert_eq!(paging(&again).0, 4, "it acted only once");
    }

    #[tokio::test]
    async fn grow_after_page_raises_the_totals_of_later_pages_once() {
        let sim = start(FineduState::fleet(4, 1)).await;
        sim.with_state(|s| s.faults.push(FineduFault::GrowAfterPage(2)));
        let first = list(&sim, "pageNo=1&pageSize=2").await.json();
        assert_eq!(paging(&first), (4, 2, 1, 2), "page 1 does not trigger it");
        let second = list(&sim, "pageNo=2&pageSize=2").await.json();
        assert_eq!(paging(&second), (4, 2, 2, 2));
        let third = list(&sim, "pageNo=3&pageSize=2").await.json();
        assert_eq!(paging(&third), (5, 2, 3, 3));
        let added = &third["data"][0];
        assert_eq!(added["wabaId"], "599000000000001");
        assert_eq!(added["businessPhoneNumbers"].as_array().unwrap().len(), 1);
        list(&sim, "pageNo=2&pageSize=2").await;
        assert_eq!(sim.with_state(|s| s.wabas.len()), 5, "it acted only once");
    }

    #[tokio::test]
    async fn a_hang_fault_delays_the_answer_until_removed() {
        let sim = start(FineduState::fleet(1, 1)).await;
        let hang = Duration::from_millis(300);
        sim.with_state(|s| s.faults.push(FineduFault::Hang(hang)));
        let began = Instant::now();
        let answer = list(&sim, "").await;
        assert!(
            began.elapsed() >= hang,
            "answered after {:?}",
            began.elapsed()
        );
        assert_eq!(answer.status, 200, "a hang still answers normally");

        let url = format!("{}{ACCOUNTS_PATH}", sim.url());
        let impatient = reqwest::Client::new()
            .get(url)
            .bearer_auth(TOKEN)
            .timeout(Duration::from_millis(50))
            .send()
            .await;
        assert!(impatient.unwrap_err().is_timeout());
        sim.with_state(|s| s.faults.clear());
        let began = Instant::now();
        list(&sim, "").await;
        assert!(began.elapsed() < hang);
    }

    #[tokio::test]
    async fn from_graph_carries_a_red_number_over_with_its_waba() {
        let mut graph = SimState::fleet(2, 2);
        {
            let phone = graph.phone_mut("300000000000003");
            phone.quality_rating = Some("RED".to_owned());
            phone.status = Some("FLAGGED".to_owned());
            phone.messaging_limit_tier = Some("TIER_250".to_owned());
        }
        graph.waba_mut("200000000000002").account_review_status = Some("PENDING".to_owned());
        let sim = start(FineduState::from_graph(&graph)).await;

        let page = list(&sim, "").await.json();
        assert_eq!(waba_ids(&page), ["200000000000001", "200000000000002"]);
        let waba = &page["data"][1];
        assert_eq!(waba["name"], "Fleet WABA 2");
        assert_eq!(waba["accountReviewStatus"], "PENDING");
        assert_eq!(waba["whatsappBusinessManagerMessagingLimit"], "TIER_2K");
        let phone = &waba["businessPhoneNumbers"][0];
        assert_eq!(phone["phoneNumberId"], "300000000000003");
        assert_eq!(phone["wabaId"], "200000000000002");
        assert_eq!(phone["displayPhoneNumber"], "+1 200-000-0002");
        assert_eq!(phone["verifiedName"], "Fleet 2 Line 1");
        assert_eq!(phone["qualityRating"], "RED");
        assert_eq!(phone["status"], "FLAGGED");
        assert_eq!(phone["messagingLimitTier"], "TIER_250");
        assert_eq!(phone["throughput"], "STANDARD");
        assert_eq!(
            waba["businessPhoneNumbers"][1]["qualityRating"], "GREEN",
            "only the number that changed is RED"
        );
    }

    #[tokio::test]
    async fn an_override_sends_a_wrong_type_in_place_of_the_field() {
        let mut state = FineduState::fleet(1, 2);
        state
            .phone_mut("600000000000001")
            .overrides
            .insert("qualityRating".to_owned(), json!(5));
        state.waba_mut("500000000000001").overrides.insert(
            "whatsappBusinessManagerMessagingLimit".to_owned(),
            json!({ "tier": 2000 }),
        );
        let sim = start(state).await;
        let page = list(&sim, "").await.json();
        let waba = &page["data"][0];
        assert_eq!(
            waba["whatsappBusinessManagerMessagingLimit"],
            json!({ "tier": 2000 })
        );
        assert_eq!(waba["businessPhoneNumbers"][0]["qualityRating"], json!(5));
        assert_eq!(waba["businessPhoneNumbers"][1]["qualityRating"], "GREEN");
    }

    #[tokio::test]
    async fn a_handle_changes_what_the_running_server_serves() {
        let sim = start(FineduState::demo()).await;
        let handle = sim.clone_handle();
        assert_eq!(handle.url(), sim.url());
        let stepper = tokio::spawn(async move {
            handle.with_state(|s| s.remove_phone(ids::PHONES[0].1));
        });
        stepper.await.unwrap();
        let page = list(&sim, "").await.json();
        let numbers = page["data"][0]["businessPhoneNumbers"].as_array().unwrap();
        assert_eq!(numbers.len(), 1);
        assert_eq!(numbers[0]["phoneNumberId"], ids::PHONES[1].1);
    }

    #[tokio::test]
    async fn after_shutdown_the_port_refuses_connections() {
        let sim = start(FineduState::default()).await;
        let url = format!("{}{ACCOUNTS_PATH}", sim.url());
        sim.shutdown().await;
        let result = reqwest::Client::new()
            .get(url)
            .bearer_auth(TOKEN)
            .send()
            .await;
        assert!(result.unwrap_err().is_connect());
    }

    #[test]
    fn the_demo_has_two_customers_four_numbers_and_one_yellow() {
        let demo = FineduState::demo();
        let names: Vec<&str> = demo.wabas.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["Globex Logistics", "Initech Clinics"]);
        let phones: Vec<&FineduPhone> = demo.wabas.iter().flat_map(|w| &w.phones).collect();
        assert_eq!(phones.len(), 4);
        let yellow: Vec<&str> = phones
            .iter()
            .filter(|p| p.quality_rating.as_deref() == Some("YELLOW"))
            .map(|p| p.verified_name.as_str())
            .collect();
        assert_eq!(yellow, ["Initech Appointments"]);
    }

    #[test]
    fn demo_steps_depend_only_on_the_step_and_bring_both_changes() {
        let view = |s: &FineduState| -> Vec<(Option<String>, Option<String>)> {
            s.wabas
                .iter()
                .flat_map(|w| &w.phones)
                .map(|p| (p.status.clone(), p.quality_rating.clone()))
                .collect()
        };
        let mut walked = FineduState::demo();
        let mut qualities = BTreeSet::new();
        let mut statuses = BTreeSet::new();
        let mut changed_steps = 0;
        for step in 1..=30 {
            let before = view(&walked);
            walked.demo_step(step);
            let mut jumped = FineduState::demo();
            jumped.demo_step(step);
            assert_eq!(view(&walked), view(&jumped), "step {step}");
            if view(&walked) != before {
                changed_steps += 1;
            }
            for (status, quality) in view(&walked) {
                statuses.insert(status.unwrap());
                qualities.insert(quality.unwrap());
            }
        }
        assert!(
            changed_steps >= 10,
            "only {changed_steps} steps changed anything"
        );
        assert!(qualities.contains("GREEN") && qualities.contains("YELLOW"));
        assert!(statuses.contains("RATE_LIMITED"));
        let dispatch = walked.phone_mut(ids::PHONES[0].1).clone();
        assert_ne!(
            dispatch.update_time, dispatch.create_time,
            "a change is stamped"
        );
    }

    #[test]
    fn the_fleet_uses_ids_apart_from_the_graph_fleet() {
        let finedu = FineduState::fleet(3, 2);
        let graph = SimState::fleet(3, 2);
        let finedu_ids: BTreeSet<String> = finedu
            .wabas
            .iter()
            .flat_map(|w| {
                std::iter::once(w.waba_id.clone())
                    .chain(w.phones.iter().map(|p| p.phone_number_id.clone()))
            })
            .collect();
        assert_eq!(finedu_ids.len(), 9);
        assert!(finedu_ids.contains("500000000000003"));
        assert!(finedu_ids.contains("600000000000006"));
        let graph_ids: BTreeSet<String> = graph
            .wabas
            .keys()
            .chain(graph.phones.keys())
            .cloned()
            .collect();
        assert!(finedu_ids.is_disjoint(&graph_ids));
        let displays: BTreeSet<&str> = finedu
            .wabas
            .iter()
            .flat_map(|w| &w.phones)
            .map(|p| p.display_phone_number.as_str())
            .collect();
        assert_eq!(displays.len(), 6, "display numbers are distinct too");
    }

    #[test]
    fn remove_phone_takes_the_number_out_of_its_waba_only() {
        let mut state = FineduState::fleet(2, 2);
        state.remove_phone("600000000000003");
        state.remove_phone("999");
        let counts: Vec<usize> = state.wabas.iter().map(|w| w.phones.len()).collect();
        assert_eq!(counts, [2, 1]);
        assert_eq!(state.wabas[1].phones[0].phone_number_id, "600000000000004");
    }

    #[test]
    fn timestamps_use_the_bsp_format_in_its_time_zone() {
        assert_eq!(stamp(0), BASE_STAMP);
        assert_eq!(stamp(60 * 24 * 31), "2026-01-01T11:04:56.000+08:00");
    }
}

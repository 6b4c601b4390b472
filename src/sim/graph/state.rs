//! The simulated fleet: business portfolios, WABAs, phone numbers and message templates, and the
//! builders tests, the demo and the benchmark use to shape it.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use serde_json::{Map, Value};

use super::errors::splitmix64;
use super::faults::Fault;
use super::health::{HealthError, SIM_APP_ID, phone_health, set_entity, waba_health};

/// Meta's default per-WABA budget of the WhatsApp Business Management API, in calls per hour.
pub const DEFAULT_WABA_CALL_BUDGET: u64 = 200;

/// A generous app-wide budget, so `X-App-Usage` stays low unless a test lowers it.
pub const DEFAULT_APP_CALL_BUDGET: u64 = 100_000;

/// Everything the simulator serves. Mutate it between polls through `GraphSim::with_state`.
#[derive(Debug, Clone, Default)]
pub struct SimState {
    pub businesses: BTreeMap<String, SimBusiness>,
    pub wabas: BTreeMap<String, SimWaba>,
    pub phones: BTreeMap<String, SimPhone>,
    /// Message templates by id; each WABA lists its own in `SimWaba::templates`.
    pub templates: BTreeMap<String, SimTemplate>,
    pub faults: Vec<Fault>,
    /// Calls per WABA that make `X-Business-Use-Case-Usage` report 100 %; `None` = 200.
    pub waba_call_budget: Option<u64>,
    /// Calls that make `X-App-Usage` report 100 %; `None` = 100,000.
    pub app_call_budget: Option<u64>,
    /// Numbers readable only with a token of their own (a BSP's per-number token): a
    /// `GET /{phone-number-id}` must carry it, the app's token is refused for that number
    /// (code 190), and the number's token reads nothing else.
    pub phone_tokens: BTreeMap<String, String>,
}

/// How a WABA is attached to a business portfolio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// Listed under `owned_whatsapp_business_accounts` (and `whatsapp_business_accounts`).
    Owned,
    /// Shared with the business by a client: `client_whatsapp_business_accounts`.
    Client,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SimBusiness {
    pub id: String,
    pub name: String,
    /// `whatsapp_business_manager_messaging_limit` (v24+).
    pub business_messaging_limit: Option<String>,
    /// Owned WABA ids, in the order the edge lists them.
    pub owned: Vec<String>,
    /// Client WABA ids, in the order the edge lists them.
    pub client: Vec<String>,
    /// Raw field values that replace (or add to) the rendered ones.
    pub overrides: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SimWaba {
    pub id: String,
    pub name: String,
    pub account_review_status: Option<String>,
    pub business_verification_status: Option<String>,
    pub currency: String,
    pub country: String,
    pub timezone_id: String,
    pub message_template_namespace: String,
    pub ownership_type: Option<String>,
    /// `whatsapp_business_manager_messaging_limit` (v24+).
    pub business_messaging_limit: Option<String>,
    pub is_enabled_for_insights: bool,
    /// The full `health_status` object; `Value::Null` leaves the field out.
    pub health: Value,
    /// Phone number ids, in the order the `phone_numbers` edge lists them.
    pub phones: Vec<String>,
    /// Message template ids, in the order the `message_templates` edge lists them.
    pub templates: Vec<String>,
    /// The business that owns this WABA; used for the `BUSINESS` health entity.
    pub owner_business_id: Option<String>,
    /// Raw field values that replace (or add to) the rendered ones.
    pub overrides: Map<String, Value>,
    /// `GET /{waba}/subscribed_apps` no longer lists [`SIM_APP_ID`] (the monitor's app was
    /// unsubscribed from this WABA).
    pub webhooks_unsubscribed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SimPhone {
    pub id: String,
    pub waba_id: String,
    pub display_phone_number: String,
    pub verified_name: String,
    pub status: Option<String>,
    pub quality_rating: Option<String>,
    /// Deprecated by Meta; `None` renders as JSON `null`, as some tokens now receive it.
    pub messaging_limit_tier: Option<String>,
    /// `whatsapp_business_manager_messaging_limit` (v24+).
    pub business_messaging_limit: Option<String>,
    pub name_status: Option<String>,
    pub code_verification_status: Option<String>,
    /// Rendered as `throughput: {"level": ...}`.
    pub throughput_level: Option<String>,
    pub account_mode: Option<String>,
    pub platform_type: Option<String>,
    pub country_code: String,
    pub country_dial_code: String,
    pub is_official_business_account: bool,
    pub certificate: Option<String>,
    /// The full `health_status` object; `Value::Null` leaves the field out.
    pub health: Value,
    /// Raw field values that replace (or add to) the rendered ones, e.g. `{"quality_rating": 5}`
    /// to send a wrong type.
    pub overrides: Map<String, Value>,
}

/// A message template of a WABA, served by `GET /{waba}/message_templates` in Meta's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct SimTemplate {
    /// Numeric like Meta's (webhooks send it as a JSON number when it parses as one).
    pub id: String,
    pub waba_id: String,
    pub name: String,
    /// e.g. `en_US`.
    pub language: String,
    /// APPROVED, PENDING, REJECTED, PAUSED, DISABLED, FLAGGED, IN_APPEAL, LIMIT_EXCEEDED, ...
    /// (open: any text is served as is).
    pub status: String,
    /// UTILITY, MARKETING, AUTHENTICATION.
    pub category: String,
    /// `quality_score.score`: GREEN, YELLOW, RED, UNKNOWN; `None` leaves `quality_score` out.
    pub quality: Option<String>,
    /// Rendered as `"NONE"` when `None`, as Meta does for a template that was not rejected.
    pub rejected_reason: Option<String>,
    /// Left out when `None`.
    pub previous_category: Option<String>,
    /// Raw field values that replace (or add to) the rendered ones, e.g. `{"status": 3}`.
    pub overrides: Map<String, Value>,
}

/// `quality_score.date` of every simulated template: 2026-01-01T00:00:00Z.
pub const TEMPLATE_QUALITY_DATE: i64 = 1_767_225_600;

/// The first id [`SimState::add_templates`] hands out; ids count up from here, skipping any
/// already taken, so they stay numeric (15 digits) and apart from the fleet's other ids.
pub const FIRST_TEMPLATE_ID: u64 = 800_000_000_000_001;

impl SimWaba {
    fn business_entity_id(&self) -> String {
        self.owner_business_id
            .clone()
            .unwrap_or_else(|| format!("9{}", self.id))
    }
}

/// Country and dial code from a display number such as `+44 20 7946 0123`.
fn country_of(display: &str) -> (String, String) {
    let dial: String = display
        .trim_start_matches('+')
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let country = match dial.as_str() {
        "1" => "US",
        "27" => "ZA",
        "33" => "FR",
        "34" => "ES",
        "39" => "IT",
        "44" => "GB",
        "49" => "DE",
        "52" => "MX",
        "55" => "BR",
        "62" => "ID",
        "91" => "IN",
        "234" => "NG",
        _ => "US",
    };
    (country.to_owned(), dial)
}

/// A made-up template namespace in Meta's format (a UUID with underscores), stable per id.
fn namespace_for(id: &str) -> String {
    let seed = id
        .bytes()
        .fold(0u64, |acc, b| splitmix64(acc ^ u64::from(b)));
    let a = splitmix64(seed);
    let b = splitmix64(a);
    format!(
        "{:08x}_{:04x}_{:04x}_{:04x}_{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

impl SimState {
    /// Adds (or replaces) a business portfolio; its WABA lists start empty.
    pub fn add_business(&mut self, id: &str, name: &str) -> &mut SimBusiness {
        let business = SimBusiness {
            id: id.to_owned(),
            name: name.to_owned(),
            business_messaging_limit: Some("TIER_2K".to_owned()),
            owned: Vec::new(),
            client: Vec::new(),
            overrides: Map::new(),
        };
        match self.businesses.entry(id.to_owned()) {
            Entry::Occupied(mut slot) => {
                slot.insert(business);
                slot.into_mut()
            }
            Entry::Vacant(slot) => slot.insert(business),
        }
    }

    fn business_entry(&mut self, id: &str) -> &mut SimBusiness {
        if !self.businesses.contains_key(id) {
            return self.add_business(id, &format!("Business {id}"));
        }
        self.business_mut(id)
    }

    /// Adds a healthy WABA (APPROVED, verified, health AVAILABLE), optionally attached to a
    /// business; a business id not yet known is created on the fly.
    pub fn add_waba(
        &mut self,
        business: Option<(&str, Relation)>,
        id: &str,
        name: &str,
    ) -> &mut SimWaba {
        let (owner, ownership) = match business {
            Some((business_id, Relation::Owned)) => (Some(business_id.to_owned()), "SELF"),
            Some((_, Relation::Client)) => (None, "CLIENT_OWNED"),
            None => (None, "SELF"),
        };
        if let Some((business_id, relation)) = business {
            let entry = self.business_entry(business_id);
            let list = match relation {
                Relation::Owned => &mut entry.owned,
                Relation::Client => &mut entry.client,
            };
            if !list.iter().any(|w| w == id) {
                list.push(id.to_owned());
            }
        }
        let mut waba = SimWaba {
            id: id.to_owned(),
            name: name.to_owned(),
            account_review_status: Some("APPROVED".to_owned()),
            business_verification_status: Some("verified".to_owned()),
            currency: "USD".to_owned(),
            country: "US".to_owned(),
            timezone_id: "1".to_owned(),
            message_template_namespace: namespace_for(id),
            ownership_type: Some(ownership.to_owned()),
            business_messaging_limit: Some("TIER_2K".to_owned()),
            is_enabled_for_insights: true,
            health: Value::Null,
            phones: Vec::new(),
            templates: Vec::new(),
            owner_business_id: owner,
            overrides: Map::new(),
            webhooks_unsubscribed: false,
        };
        waba.health = waba_health(id, &waba.business_entity_id());
        match self.wabas.entry(id.to_owned()) {
            Entry::Occupied(mut slot) => {
                // Replacing a WABA keeps its numbers and templates, so a test can redefine one
                // in place.
                waba.phones = std::mem::take(&mut slot.get_mut().phones);
                waba.templates = std::mem::take(&mut slot.get_mut().templates);
                slot.insert(waba);
                slot.into_mut()
            }
            Entry::Vacant(slot) => slot.insert(waba),
        }
    }

    /// Adds a healthy phone number (CONNECTED, GREEN, TIER_1K, portfolio limit TIER_2K,
    /// APPROVED name, health AVAILABLE) at the end of its WABA's list. A WABA id not yet known
    /// is created on the fly.
    pub fn add_phone(
        &mut self,
        waba_id: &str,
        id: &str,
        display: &str,
        verified_name: &str,
    ) -> &mut SimPhone {
        if !self.wabas.contains_key(waba_id) {
            self.add_waba(None, waba_id, &format!("WABA {waba_id}"));
        }
        // A number re-added under another WABA moves: it leaves the old WABA's list.
        if let Some(old_waba) = self.phones.get(id).map(|p| p.waba_id.clone())
            && old_waba != waba_id
            && let Some(waba) = self.wabas.get_mut(&old_waba)
        {
            waba.phones.retain(|p| p != id);
        }
        let business_id = self
            .wabas
            .get_mut(waba_id)
            .map(|waba| {
                if !waba.phones.iter().any(|p| p == id) {
                    waba.phones.push(id.to_owned());
                }
                waba.business_entity_id()
            })
            .unwrap_or_default();
        let (country_code, country_dial_code) = country_of(display);
        let phone = SimPhone {
            id: id.to_owned(),
            waba_id: waba_id.to_owned(),
            display_phone_number: display.to_owned(),
            verified_name: verified_name.to_owned(),
            status: Some("CONNECTED".to_owned()),
            quality_rating: Some("GREEN".to_owned()),
            messaging_limit_tier: Some("TIER_1K".to_owned()),
            business_messaging_limit: Some("TIER_2K".to_owned()),
            name_status: Some("APPROVED".to_owned()),
            code_verification_status: Some("VERIFIED".to_owned()),
            throughput_level: Some("STANDARD".to_owned()),
            account_mode: Some("LIVE".to_owned()),
            platform_type: Some("CLOUD_API".to_owned()),
            country_code,
            country_dial_code,
            is_official_business_account: false,
            certificate: Some(
                "CmQKIAjXxZyL9ZCFAhIGZW50OndhIgdBY21lIENvUNqGyb4GGkCIm3UG2Jv5sMl1CDcbyjeS"
                    .to_owned(),
            ),
            health: phone_health(id, waba_id, &business_id),
            overrides: Map::new(),
        };
        match self.phones.entry(id.to_owned()) {
            Entry::Occupied(mut slot) => {
                slot.insert(phone);
                slot.into_mut()
            }
            Entry::Vacant(slot) => slot.insert(phone),
        }
    }

    /// Removes a phone number from the fleet and from its WABA's list.
    pub fn remove_phone(&mut self, id: &str) {
        if let Some(phone) = self.phones.remove(id)
            && let Some(waba) = self.wabas.get_mut(&phone.waba_id)
        {
            waba.phones.retain(|p| p != id);
        }
    }

    /// Removes a WABA, its phone numbers, its templates, and its listing under every business.
    pub fn remove_waba(&mut self, id: &str) {
        if let Some(waba) = self.wabas.remove(id) {
            for phone in &waba.phones {
                self.phones.remove(phone);
            }
            for template in &waba.templates {
                self.templates.remove(template);
            }
        }
        for business in self.businesses.values_mut() {
            business.owned.retain(|w| w != id);
            business.client.retain(|w| w != id);
        }
    }

    /// The phone number with this id.
    ///
    /// # Panics
    /// When the id is not in the fleet: that is a mistake in the test that set it up.
    pub fn phone_mut(&mut self, id: &str) -> &mut SimPhone {
        match self.phones.get_mut(id) {
            Some(phone) => phone,
            None => panic!("phone number {id} is not in the simulated fleet"),
        }
    }

    /// Adds (or replaces) an APPROVED template with quality GREEN at the end of its WABA's
    /// list (a replaced one keeps its place; one re-added under another WABA moves there).
    ///
    /// # Panics
    /// When the WABA is not in the fleet: that is a mistake in the test that set it up.
    pub fn add_template(
        &mut self,
        waba_id: &str,
        id: &str,
        name: &str,
        language: &str,
        category: &str,
    ) -> &mut SimTemplate {
        let waba = self.waba_mut(waba_id);
        if !waba.templates.iter().any(|t| t == id) {
            waba.templates.push(id.to_owned());
        }
        if let Some(old_waba) = self.templates.get(id).map(|t| t.waba_id.clone())
            && old_waba != waba_id
            && let Some(waba) = self.wabas.get_mut(&old_waba)
        {
            waba.templates.retain(|t| t != id);
        }
        let template = SimTemplate {
            id: id.to_owned(),
            waba_id: waba_id.to_owned(),
            name: name.to_owned(),
            language: language.to_owned(),
            status: "APPROVED".to_owned(),
            category: category.to_owned(),
            quality: Some("GREEN".to_owned()),
            rejected_reason: None,
            previous_category: None,
            overrides: Map::new(),
        };
        match self.templates.entry(id.to_owned()) {
            Entry::Occupied(mut slot) => {
                slot.insert(template);
                slot.into_mut()
            }
            Entry::Vacant(slot) => slot.insert(template),
        }
    }

    /// Adds `count` APPROVED, GREEN templates at the end of a WABA's list. The `i`-th template
    /// of the WABA (counting those it already has) is named `template_{i}`, in `en_US` for even
    /// `i` and `es_ES` for odd, UTILITY for even and MARKETING for odd. Ids are numeric, from
    /// [`FIRST_TEMPLATE_ID`] + the number of templates in the fleet, skipping taken ones: the
    /// same sequence of calls always gives the same ids.
    ///
    /// # Panics
    /// When the WABA is not in the fleet: that is a mistake in the test that set it up.
    pub fn add_templates(&mut self, waba_id: &str, count: usize) {
        let first = self.waba_mut(waba_id).templates.len();
        let mut next = FIRST_TEMPLATE_ID + self.templates.len() as u64;
        for i in first..first + count {
            while self.templates.contains_key(&next.to_string()) {
                next += 1;
            }
            let (language, category) = if i % 2 == 0 {
                ("en_US", "UTILITY")
            } else {
                ("es_ES", "MARKETING")
            };
            self.add_template(
                waba_id,
                &next.to_string(),
                &format!("template_{i}"),
                language,
                category,
            );
            next += 1;
        }
    }

    /// Removes a template from the fleet and from its WABA's list; an unknown id changes
    /// nothing.
    pub fn remove_template(&mut self, id: &str) {
        if let Some(template) = self.templates.remove(id)
            && let Some(waba) = self.wabas.get_mut(&template.waba_id)
        {
            waba.templates.retain(|t| t != id);
        }
    }

    /// The template with this id.
    ///
    /// # Panics
    /// When the id is not in the fleet: that is a mistake in the test that set it up.
    pub fn template_mut(&mut self, id: &str) -> &mut SimTemplate {
        match self.templates.get_mut(id) {
            Some(template) => template,
            None => panic!("template {id} is not in the simulated fleet"),
        }
    }

    /// The WABA with this id.
    ///
    /// # Panics
    /// When the id is not in the fleet: that is a mistake in the test that set it up.
    pub fn waba_mut(&mut self, id: &str) -> &mut SimWaba {
        match self.wabas.get_mut(id) {
            Some(waba) => waba,
            None => panic!("WABA {id} is not in the simulated fleet"),
        }
    }

    /// The business with this id.
    ///
    /// # Panics
    /// When the id is not in the fleet: that is a mistake in the test that set it up.
    pub fn business_mut(&mut self, id: &str) -> &mut SimBusiness {
        match self.businesses.get_mut(id) {
            Some(business) => business,
            None => panic!("business {id} is not in the simulated fleet"),
        }
    }

    /// Adds a fault at the end of the list.
    pub fn add_fault(&mut self, fault: Fault) {
        self.faults.push(fault);
    }

    /// Sets one entity of `health_status` and recomputes the overall value, e.g.
    /// `set_health(phone, "BUSINESS", "BLOCKED", Some(HealthError::business_not_verified()))`.
    ///
    /// The id may name a phone number (only its health changes), a WABA (the WABA and all its
    /// numbers, since Meta shows a WABA problem on every number) or a business (every WABA it
    /// owns and their numbers). An unknown id changes nothing.
    pub fn set_health(
        &mut self,
        id: &str,
        entity_type: &str,
        can_send_message: &str,
        error: Option<HealthError>,
    ) {
        let error = error.as_ref();
        if let Some(phone) = self.phones.get_mut(id) {
            let entity_id = match entity_type {
                "WABA" => phone.waba_id.clone(),
                "BUSINESS" => self
                    .wabas
                    .get(&phone.waba_id)
                    .map_or_else(String::new, SimWaba::business_entity_id),
                "APP" => SIM_APP_ID.to_owned(),
                _ => id.to_owned(),
            };
            set_entity(
                &mut phone.health,
                entity_type,
                &entity_id,
                can_send_message,
                error,
            );
            return;
        }
        let wabas = if self.wabas.contains_key(id) {
            vec![id.to_owned()]
        } else if let Some(business) = self.businesses.get(id) {
            business.owned.clone()
        } else {
            return;
        };
        for waba_id in wabas {
            let Some(waba) = self.wabas.get_mut(&waba_id) else {
                continue;
            };
            let entity_id = entity_id_for(entity_type, &waba_id, waba);
            set_entity(
                &mut waba.health,
                entity_type,
                &entity_id,
                can_send_message,
                error,
            );
            let phone_ids = waba.phones.clone();
            for phone_id in phone_ids {
                if let Some(phone) = self.phones.get_mut(&phone_id) {
                    set_entity(
                        &mut phone.health,
                        entity_type,
                        &entity_id_for_phone(entity_type, &phone_id, &entity_id),
                        can_send_message,
                        error,
                    );
                }
            }
        }
    }

    /// The WABA a call about `id` is counted against: the WABA itself, or a number's or a
    /// template's WABA.
    pub fn waba_of<'a>(&'a self, id: &'a str) -> Option<&'a str> {
        if self.wabas.contains_key(id) {
            Some(id)
        } else if let Some(phone) = self.phones.get(id) {
            Some(phone.waba_id.as_str())
        } else {
            self.templates.get(id).map(|t| t.waba_id.as_str())
        }
    }

    /// A benchmark fleet: one business `100000000000001` owning `wabas` WABAs with
    /// `phones_per_waba` healthy numbers each; all ids are numeric strings.
    pub fn fleet(wabas: usize, phones_per_waba: usize) -> SimState {
        SimState::fleet_in(1, wabas, phones_per_waba)
    }

    /// [`SimState::fleet`] spread over `portfolios` businesses (`100000000000001`, ...), each
    /// owning a contiguous block of the WABAs.
    pub fn fleet_in(portfolios: usize, wabas: usize, phones_per_waba: usize) -> SimState {
        let mut state = SimState::default();
        let portfolios = portfolios.max(1);
        let business_of = |b: usize| (100_000_000_000_001u64 + b as u64).to_string();
        for b in 0..portfolios {
            let name = if portfolios == 1 {
                "Fleet Holdings".to_owned()
            } else {
                format!("Fleet Holdings {}", b + 1)
            };
            state.add_business(&business_of(b), &name);
        }
        let per_portfolio = wabas.div_ceil(portfolios).max(1);
        for w in 0..wabas {
            let business = business_of(w / per_portfolio);
            let waba_id = (200_000_000_000_001u64 + w as u64).to_string();
            state.add_waba(
                Some((&business, Relation::Owned)),
                &waba_id,
                &format!("Fleet WABA {}", w + 1),
            );
            for p in 0..phones_per_waba {
                let n = (w * phones_per_waba + p) as u64;
                let phone_id = (300_000_000_000_001u64 + n).to_string();
                let display = format!(
                    "+1 {:03}-{:03}-{:04}",
                    200 + (n / 10_000_000) % 800,
                    (n / 10_000) % 1_000,
                    n % 10_000
                );
                state.add_phone(
                    &waba_id,
                    &phone_id,
                    &display,
                    &format!("Fleet {} Line {}", w + 1, p + 1),
                );
            }
        }
        state
    }

    /// [`SimState::fleet`] with `templates_per_waba` templates in each WABA (see
    /// [`SimState::add_templates`]; WABA `w` (0-based) holds ids
    /// `FIRST_TEMPLATE_ID + w * templates_per_waba ..`).
    pub fn fleet_with_templates(
        wabas: usize,
        phones_per_waba: usize,
        templates_per_waba: usize,
    ) -> SimState {
        let mut state = SimState::fleet(wabas, phones_per_waba);
        let waba_ids: Vec<String> = state.wabas.keys().cloned().collect();
        for waba_id in waba_ids {
            state.add_templates(&waba_id, templates_per_waba);
        }
        state
    }
}

/// The id shown for an entity in a WABA's health: the WABA, its owner, or the app.
fn entity_id_for(entity_type: &str, waba_id: &str, waba: &SimWaba) -> String {
    match entity_type {
        "WABA" => waba_id.to_owned(),
        "BUSINESS" => waba.business_entity_id(),
        "APP" => SIM_APP_ID.to_owned(),
        _ => waba_id.to_owned(),
    }
}

/// The id shown for an entity in a number's health when the change came from its WABA.
fn entity_id_for_phone(entity_type: &str, phone_id: &str, waba_entity_id: &str) -> String {
    match entity_type {
        "PHONE_NUMBER" => phone_id.to_owned(),
        _ => waba_entity_id.to_owned(),
    }
}

//! The simulated fleet: business portfolios, WABAs and phone numbers, and the builders tests,
//! the demo and the benchmark use to shape it.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use serde_json::{Map, Value, json};

use super::errors::splitmix64;
use super::faults::Fault;

/// The app id shown in the `APP` entity of every `health_status`.
pub const SIM_APP_ID: &str = "334536146421587";

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
    pub faults: Vec<Fault>,
    /// Calls per WABA that make `X-Business-Use-Case-Usage` report 100 %; `None` = 200.
    pub waba_call_budget: Option<u64>,
    /// Calls that make `X-App-Usage` report 100 %; `None` = 100,000.
    pub app_call_budget: Option<u64>,
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
    /// The business that owns this WABA; used for the `BUSINESS` health entity.
    pub owner_business_id: Option<String>,
    /// Raw field values that replace (or add to) the rendered ones.
    pub overrides: Map<String, Value>,
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

/// One error inside a `health_status` entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthError {
    pub error_code: i64,
    pub error_description: String,
    pub possible_solution: String,
}

impl HealthError {
    pub fn new(error_code: i64, error_description: &str, possible_solution: &str) -> Self {
        HealthError {
            error_code,
            error_description: error_description.to_owned(),
            possible_solution: possible_solution.to_owned(),
        }
    }

    /// 141010: the business has not passed verification.
    pub fn business_not_verified() -> Self {
        HealthError::new(
            141_010,
            "The Business has not passed business verification.",
            "Visit business settings and start or resolve the business verification request.",
        )
    }

    /// 141006: a problem with the payment method.
    pub fn payment_method() -> Self {
        HealthError::new(
            141_006,
            "There is an error with the payment method.",
            "Add a valid payment method in WhatsApp Manager.",
        )
    }

    /// 141014: the WABA is banned.
    pub fn waba_banned() -> Self {
        HealthError::new(
            141_014,
            "The WhatsApp Business Account has been banned.",
            "Review the policy violation in WhatsApp Manager and request a review.",
        )
    }

    fn to_json(&self) -> Value {
        json!({
            "error_code": self.error_code,
            "error_description": self.error_description,
            "possible_solution": self.possible_solution,
        })
    }
}

/// Builds one entity of a `health_status` object.
pub fn health_entity(
    entity_type: &str,
    id: &str,
    can_send_message: &str,
    error: Option<&HealthError>,
) -> Value {
    let mut entity = json!({
        "entity_type": entity_type,
        "id": id,
        "can_send_message": can_send_message,
    });
    if let Some(error) = error {
        entity["errors"] = json!([error.to_json()]);
    }
    entity
}

/// Builds a `health_status` object whose overall `can_send_message` is the worst of its
/// entities, as Meta computes it.
pub fn health_status(entities: Vec<Value>) -> Value {
    let mut health = json!({ "can_send_message": "AVAILABLE", "entities": entities });
    recompute_overall(&mut health);
    health
}

/// How bad a `can_send_message` value is; an unknown value counts as LIMITED so that it is
/// never silently treated as healthy.
fn severity(value: &str) -> u8 {
    match value {
        "AVAILABLE" => 0,
        "BLOCKED" => 2,
        _ => 1,
    }
}

fn recompute_overall(health: &mut Value) {
    let worst = health
        .get("entities")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("can_send_message").and_then(Value::as_str))
        .max_by_key(|v| severity(v))
        .unwrap_or("AVAILABLE")
        .to_owned();
    health["can_send_message"] = Value::String(worst);
}

/// Sets (or adds) the entity of `entity_type` inside a `health_status` object.
fn set_entity(
    health: &mut Value,
    entity_type: &str,
    entity_id: &str,
    can_send_message: &str,
    error: Option<&HealthError>,
) {
    if !health.get("entities").is_some_and(Value::is_array) {
        *health = health_status(Vec::new());
    }
    let fresh = health_entity(entity_type, entity_id, can_send_message, error);
    if let Some(entities) = health.get_mut("entities").and_then(Value::as_array_mut) {
        match entities
            .iter_mut()
            .find(|e| e.get("entity_type").and_then(Value::as_str) == Some(entity_type))
        {
            Some(existing) => {
                // Keep the id the entity already had: it names the real owner.
                let id = existing.get("id").cloned();
                *existing = fresh;
                if let Some(id) = id {
                    existing["id"] = id;
                }
            }
            None => entities.push(fresh),
        }
    }
    recompute_overall(health);
}

impl SimWaba {
    fn business_entity_id(&self) -> String {
        self.owner_business_id
            .clone()
            .unwrap_or_else(|| format!("9{}", self.id))
    }
}

/// The healthy `health_status` of a WABA.
fn waba_health(waba_id: &str, business_id: &str) -> Value {
    health_status(vec![
        health_entity("WABA", waba_id, "AVAILABLE", None),
        health_entity("BUSINESS", business_id, "AVAILABLE", None),
        health_entity("APP", SIM_APP_ID, "AVAILABLE", None),
    ])
}

/// The healthy `health_status` of a phone number.
fn phone_health(phone_id: &str, waba_id: &str, business_id: &str) -> Value {
    health_status(vec![
        health_entity("PHONE_NUMBER", phone_id, "AVAILABLE", None),
        health_entity("WABA", waba_id, "AVAILABLE", None),
        health_entity("BUSINESS", business_id, "AVAILABLE", None),
        health_entity("APP", SIM_APP_ID, "AVAILABLE", None),
    ])
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
            owner_business_id: owner,
            overrides: Map::new(),
        };
        waba.health = waba_health(id, &waba.business_entity_id());
        match self.wabas.entry(id.to_owned()) {
            Entry::Occupied(mut slot) => {
                // Replacing a WABA keeps its numbers, so a test can redefine one in place.
                waba.phones = std::mem::take(&mut slot.get_mut().phones);
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
            certificate: Some("CmQKIAjXxZyL9ZCFAhIGZW50OndhIgdBY21lIENvUNqGyb4GGkCIm3UG2Jv5sMl1CDcbyjeS".to_owned()),
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

    /// Removes a WABA, its phone numbers, and its listing under every business.
    pub fn remove_waba(&mut self, id: &str) {
        if let Some(waba) = self.wabas.remove(id) {
            for phone in &waba.phones {
                self.phones.remove(phone);
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

    /// The WABA a call about `id` is counted against: the WABA itself, or a number's WABA.
    pub fn waba_of(&self, id: &str) -> Option<&str> {
        if self.wabas.contains_key(id) {
            Some(id)
        } else {
            self.phones.get(id).map(|p| p.waba_id.as_str())
        }
    }

    /// A benchmark fleet: one business `100000000000001` owning `wabas` WABAs with
    /// `phones_per_waba` healthy numbers each; all ids are numeric strings.
    pub fn fleet(wabas: usize, phones_per_waba: usize) -> SimState {
        let mut state = SimState::default();
        let business = "100000000000001";
        state.add_business(business, "Fleet Holdings");
        for w in 0..wabas {
            let waba_id = (200_000_000_000_001u64 + w as u64).to_string();
            state.add_waba(
                Some((business, Relation::Owned)),
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

    /// A small fleet for the `demo` command: the "Acme Corp" portfolio owning two WABAs, plus
    /// one WABA a client shared with it, eight numbers in all. It is `demo_step(0)`: healthy.
    pub fn demo() -> SimState {
        let mut s = SimState::default();
        s.add_business(demo::BUSINESS, "Acme Corp");
        s.add_waba(
            Some((demo::BUSINESS, Relation::Owned)),
            demo::SUPPORT,
            "Acme Support",
        );
        s.add_waba(
            Some((demo::BUSINESS, Relation::Owned)),
            demo::MARKETING,
            "Acme Marketing",
        );
        s.add_waba(
            Some((demo::BUSINESS, Relation::Client)),
            demo::GLOBEX,
            "Globex Retail",
        );
        {
            let globex = s.waba_mut(demo::GLOBEX);
            globex.owner_business_id = Some(demo::GLOBEX_OWNER.to_owned());
            globex.currency = "EUR".to_owned();
            globex.country = "DE".to_owned();
            globex.timezone_id = "123".to_owned();
            globex.health = waba_health(demo::GLOBEX, demo::GLOBEX_OWNER);
        }
        for (waba, id, display, name) in demo::PHONES {
            s.add_phone(waba, id, display, name);
        }
        // A little variety a real fleet has: a number still waiting for its display name, and
        // one whose token no longer receives the deprecated tier.
        s.phone_mut(demo::PHONES[7].1).name_status = Some("PENDING_REVIEW".to_owned());
        s.phone_mut(demo::PHONES[6].1).messaging_limit_tier = None;
        s.demo_step(0);
        s
    }

    /// Deterministic "life" for the demo fleet. The state after `demo_step(k)` depends only on
    /// `k`, so calling it with each tick's number shows a change at every step:
    /// - every step, one of three numbers moves one notch along GREEN → YELLOW → RED → GREEN;
    /// - `+1 555-0110` is FLAGGED during steps 4–7 of every 12;
    /// - `+44 20 7946 0123` is RESTRICTED (health BLOCKED) during steps 6–11 of every 12;
    /// - the Globex WABA is LIMITED by a payment-method error during steps 5–9 of every 10;
    /// - the Acme portfolio's messaging limit drops from TIER_10K to TIER_2K during steps 7–13
    ///   of every 14, and one number's legacy tier from TIER_10K to TIER_1K with it.
    ///
    /// Numbers or WABAs a caller removed are skipped.
    pub fn demo_step(&mut self, step: u64) {
        const QUALITY: [&str; 3] = ["GREEN", "YELLOW", "RED"];
        for (k, (_, id, _, _)) in demo::PHONES.iter().take(3).enumerate() {
            // Actor k advances at the steps s ≡ k (mod 3), s ≥ 1, so exactly one moves per step.
            let k = k as u64;
            let residue = if k == 0 { 3 } else { k };
            let advances = (step + 3 - residue) / 3;
            if let Some(phone) = self.phones.get_mut(*id) {
                phone.quality_rating = Some(QUALITY[(advances % 3) as usize].to_owned());
            }
        }

        let flagged = (4..8).contains(&(step % 12));
        if let Some(phone) = self.phones.get_mut(demo::PHONES[3].1) {
            phone.status = Some(if flagged { "FLAGGED" } else { "CONNECTED" }.to_owned());
        }

        let restricted = (6..12).contains(&(step % 12));
        let uk = demo::PHONES[5].1;
        if let Some(phone) = self.phones.get_mut(uk) {
            phone.status = Some(if restricted { "RESTRICTED" } else { "CONNECTED" }.to_owned());
        }
        if restricted {
            self.set_health(uk, "PHONE_NUMBER", "BLOCKED", None);
        } else {
            self.set_health(uk, "PHONE_NUMBER", "AVAILABLE", None);
        }

        if (5..10).contains(&(step % 10)) {
            self.set_health(
                demo::GLOBEX,
                "WABA",
                "LIMITED",
                Some(HealthError::payment_method()),
            );
        } else {
            self.set_health(demo::GLOBEX, "WABA", "AVAILABLE", None);
        }

        let lowered = (7..14).contains(&(step % 14));
        let limit = if lowered { "TIER_2K" } else { "TIER_10K" };
        if let Some(business) = self.businesses.get_mut(demo::BUSINESS) {
            business.business_messaging_limit = Some(limit.to_owned());
            let owned = business.owned.clone();
            for waba_id in owned {
                let Some(waba) = self.wabas.get_mut(&waba_id) else {
                    continue;
                };
                waba.business_messaging_limit = Some(limit.to_owned());
                for phone_id in waba.phones.clone() {
                    if let Some(phone) = self.phones.get_mut(&phone_id) {
                        phone.business_messaging_limit = Some(limit.to_owned());
                    }
                }
            }
        }
        if let Some(phone) = self.phones.get_mut(demo::PHONES[1].1) {
            phone.messaging_limit_tier =
                Some(if lowered { "TIER_1K" } else { "TIER_10K" }.to_owned());
        }
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

/// Ids of the demo fleet, public so the demo command and its tests can name them.
pub mod demo {
    pub const BUSINESS: &str = "104372961027384";
    pub const SUPPORT: &str = "113456789012301";
    pub const MARKETING: &str = "113456789012302";
    pub const GLOBEX: &str = "113456789012303";
    /// The client's own portfolio, not visible to the demo token.
    pub const GLOBEX_OWNER: &str = "102938475610293";
    /// (WABA id, phone number id, display number, verified name).
    pub const PHONES: [(&str, &str, &str, &str); 8] = [
        (SUPPORT, "106540352242901", "+1 555-0100", "Acme Support"),
        (SUPPORT, "106540352242902", "+1 555-0101", "Acme Billing"),
        (SUPPORT, "106540352242903", "+1 555-0102", "Acme Returns"),
        (MARKETING, "106540352242904", "+1 555-0110", "Acme Deals"),
        (MARKETING, "106540352242905", "+1 555-0111", "Acme News"),
        (MARKETING, "106540352242906", "+44 20 7946 0123", "Acme UK"),
        (GLOBEX, "106540352242907", "+49 30 901820", "Globex Kundenservice"),
        (GLOBEX, "106540352242908", "+1 555-0142", "Globex Orders"),
    ];
}

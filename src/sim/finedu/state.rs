//! The fleet the simulator serves: WABAs with their numbers nested, rendered in the BSP's
//! camelCase shape, and the builders tests and the benchmark use to shape it.

use chrono::{DateTime, FixedOffset};
use serde_json::{Map, Value, json};

use super::faults::FineduFault;
use crate::sim::SimState;

/// The timestamp of the reference's example, which every made-up timestamp counts from.
pub(super) const BASE_STAMP: &str = "2025-12-01T11:04:56.000+08:00";
/// `BASE_STAMP` as Unix seconds.
const BASE_UNIX: i64 = 1_764_558_296;

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

/// Everything the simulator serves. Mutate it between requests through
/// [`FineduSim::with_state`](super::FineduSim::with_state).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FineduState {
    /// In the order the API pages through them.
    pub wabas: Vec<FineduWaba>,
    pub faults: Vec<FineduFault>,
}

/// A timestamp in the BSP's format (`2025-12-01T11:04:56.000+08:00`), this many minutes after
/// the reference's example.
pub(super) fn stamp(minutes: u64) -> String {
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

    pub(super) fn to_json(&self) -> Value {
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

    pub(super) fn phone_count(&self) -> usize {
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

    pub(super) fn find_phone_mut(&mut self, id: &str) -> Option<&mut FineduPhone> {
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
}

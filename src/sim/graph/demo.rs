//! The demo fleet: what a new user sees the daemon watch without a Meta account.

use super::health::{HealthError, waba_health};
use super::state::{Relation, SimState};

/// Ids of the demo fleet, public so the demo command and its tests can name them.
pub mod ids {
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
        (
            GLOBEX,
            "106540352242907",
            "+49 30 901820",
            "Globex Kundenservice",
        ),
        (GLOBEX, "106540352242908", "+1 555-0142", "Globex Orders"),
    ];
    /// (WABA id, template id, name, language, category): three to four templates a WABA.
    pub const TEMPLATES: [(&str, &str, &str, &str, &str); 10] = [
        (
            SUPPORT,
            PAUSING_TEMPLATE,
            "order_confirmation",
            "en_US",
            "UTILITY",
        ),
        (
            SUPPORT,
            QUALITY_TEMPLATE,
            "delivery_update",
            "en_US",
            "UTILITY",
        ),
        (
            SUPPORT,
            RECATEGORISED_TEMPLATE,
            "account_alert",
            "es_ES",
            "UTILITY",
        ),
        (
            SUPPORT,
            "1689556908129804",
            "login_code",
            "en_US",
            "AUTHENTICATION",
        ),
        (
            MARKETING,
            "1689556908129811",
            "spring_sale",
            "en_US",
            "MARKETING",
        ),
        (
            MARKETING,
            "1689556908129812",
            "newsletter",
            "en_GB",
            "MARKETING",
        ),
        (
            MARKETING,
            PENDING_TEMPLATE,
            "summer_preview",
            "en_US",
            "MARKETING",
        ),
        (
            GLOBEX,
            "1689556908129821",
            "bestellbestaetigung",
            "de",
            "UTILITY",
        ),
        (GLOBEX, "1689556908129822", "versand_info", "de", "UTILITY"),
        (
            GLOBEX,
            "1689556908129823",
            "order_update",
            "en_US",
            "UTILITY",
        ),
    ];
    /// Paused, unpaused, paused again, then DISABLED, over every 16 steps.
    pub const PAUSING_TEMPLATE: &str = "1689556908129801";
    /// Quality GREEN → YELLOW → RED → GREEN, a notch every 2 steps.
    pub const QUALITY_TEMPLATE: &str = "1689556908129802";
    /// Re-categorised UTILITY → MARKETING once, from step 5 on.
    pub const RECATEGORISED_TEMPLATE: &str = "1689556908129803";
    /// Still in review (PENDING, quality UNKNOWN); never changes.
    pub const PENDING_TEMPLATE: &str = "1689556908129813";
}

use ids as demo;

impl SimState {
    /// A small fleet for the `demo` command: the "Acme Corp" portfolio owning two WABAs, plus
    /// one WABA a client shared with it, eight numbers and ten message templates in all. It is
    /// `demo_step(0)`: healthy.
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
        for (waba, id, name, language, category) in demo::TEMPLATES {
            s.add_template(waba, id, name, language, category);
        }
        // A template still in review has no status of its own yet, nor a quality.
        let pending = s.template_mut(demo::PENDING_TEMPLATE);
        pending.status = "PENDING".to_owned();
        pending.quality = Some("UNKNOWN".to_owned());
        // Meta allows 5,000 calls an hour to a WABA with a registered number; with the default
        // 200 a demo left running would report its budget spent within the hour.
        s.waba_call_budget = Some(5_000);
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
    ///   of every 14, and one number's legacy tier from TIER_10K to TIER_1K with it;
    /// - the template `order_confirmation` follows Meta's pause escalation over every 16 steps:
    ///   APPROVED (0–2), PAUSED (3–4, first pause), APPROVED (5–6, unpaused), PAUSED (7–9,
    ///   second pause), APPROVED (10), DISABLED (11–15), then the story starts again;
    /// - the template `delivery_update` moves one notch along GREEN → YELLOW → RED → GREEN
    ///   every 2 steps;
    /// - the template `account_alert` is re-categorised UTILITY → MARKETING at step 5 and stays
    ///   MARKETING (with `previous_category` UTILITY) from then on.
    ///
    /// Numbers, WABAs or templates a caller removed are skipped.
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
            phone.status = Some(
                if restricted {
                    "RESTRICTED"
                } else {
                    "CONNECTED"
                }
                .to_owned(),
            );
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

        if let Some(template) = self.templates.get_mut(demo::PAUSING_TEMPLATE) {
            template.status = match step % 16 {
                3..=4 | 7..=9 => "PAUSED",
                11..=15 => "DISABLED",
                _ => "APPROVED",
            }
            .to_owned();
        }
        if let Some(template) = self.templates.get_mut(demo::QUALITY_TEMPLATE) {
            template.quality = Some(QUALITY[(step / 2 % 3) as usize].to_owned());
        }
        if let Some(template) = self.templates.get_mut(demo::RECATEGORISED_TEMPLATE) {
            let recategorised = step >= 5;
            template.category = if recategorised {
                "MARKETING"
            } else {
                "UTILITY"
            }
            .to_owned();
            template.previous_category = recategorised.then(|| "UTILITY".to_owned());
        }
    }
}

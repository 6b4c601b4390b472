//! The demo fleet: two BSP customers whose numbers change on every step of the demo.

use super::state::{FineduState, stamp};

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

impl FineduState {
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
}

//! Injected failures: which request fails how, and the faults that change the fleet mid-walk.

use std::time::Duration;

use super::state::FineduState;

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

/// Whether a fault aimed at `page` (`None`: every page) hits a request whose page is `hint`
/// (see `Incoming::page_hint`).
fn hits(page: Option<u32>, hint: Option<u32>) -> bool {
    page.is_none() || page == hint
}

impl FineduState {
    /// How long the `Hang` faults delay every request, added up.
    pub(super) fn hang(&self) -> Duration {
        self.faults
            .iter()
            .map(|fault| match fault {
                FineduFault::Hang(duration) => *duration,
                _ => Duration::ZERO,
            })
            .sum()
    }

    /// The status of the first `HtmlError` that hits a request for this page.
    pub(super) fn html_error(&self, page_hint: Option<u32>) -> Option<u16> {
        self.faults.iter().find_map(|fault| match fault {
            FineduFault::HtmlError { status, page } if hits(*page, page_hint) => Some(*status),
            _ => None,
        })
    }

    pub(super) fn unauthorized(&self) -> bool {
        self.faults.contains(&FineduFault::Unauthorized)
    }

    /// Whether an `EmptyPage` fault empties this page's `data`.
    pub(super) fn empties(&self, page_no: u32) -> bool {
        self.faults.contains(&FineduFault::EmptyPage(page_no))
    }

    /// Whether a `Malformed` fault cuts the body of a request for this page.
    pub(super) fn malformed(&self, page_hint: Option<u32>) -> bool {
        self.faults
            .iter()
            .any(|fault| matches!(fault, FineduFault::Malformed { page } if hits(*page, page_hint)))
    }

    /// Runs the faults that act once a page has been answered with a 200.
    pub(super) fn after_serving(&mut self, page: u32) {
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

//! `[[meta]]`: a Meta Graph API source: its URL and API version (refused once Meta no longer
//! answers it), token, targets (businesses, WABAs, phone numbers), limits and quota share.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use toml::Spanned;
use url::Url;

use super::checks::{
    MAX_REQUEST_TIMEOUT, duration_key, int_key, is_loopback_host, max_response_bytes, source_name,
};
use super::problems::Problems;
use super::raw::RawMeta;
use super::secret_keys::{Need, secret_source};
use super::{DEFAULT_API_VERSION, DEFAULT_GRAPH_URL, META_QUOTA_PER_WABA_HOUR, graph_versions};
use crate::secrets::SecretSource;

#[derive(Debug, Clone)]
pub struct MetaSourceConfig {
    pub name: String,
    pub graph_url: Url,
    pub api_version: ApiVersion,
    pub token: SecretSource,
    pub businesses: Vec<String>,
    pub wabas: Vec<String>,
    pub phone_numbers: Vec<String>,
    pub request_timeout: Duration,
    pub max_response_bytes: u64,
    /// Graph requests in flight at once for this source.
    pub concurrency: usize,
    /// Meta's quota per app per WABA per hour (200; 5,000 once a number is registered).
    pub quota_per_waba_hour: u32,
    /// The share of that quota the daemon allows itself (0 < share <= 1).
    pub quota_share: f64,
    /// Read every WABA's message templates (`templates = false` turns it off).
    pub templates: bool,
    /// Read them every N-th cycle (1 = every cycle).
    pub templates_every: u32,
}

impl MetaSourceConfig {
    /// Calls per WABA per sliding hour the daemon allows itself.
    pub fn waba_call_budget(&self) -> u32 {
        ((f64::from(self.quota_per_waba_hour) * self.quota_share).floor() as u32).max(1)
    }
}

/// A Graph API version such as `v23.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion {
    pub major: u32,
    pub minor: u32,
}

impl ApiVersion {
    pub fn parse(s: &str) -> Option<ApiVersion> {
        let rest = s.strip_prefix('v')?;
        let (major, minor) = rest.split_once('.')?;
        Some(ApiVersion {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }

    /// `whatsapp_business_manager_messaging_limit` exists from v24.0 on; asking an older
    /// version for it fails the whole request with error #100.
    pub fn has_business_messaging_limit(self) -> bool {
        self.major >= 24
    }

    /// When Meta stops answering this version, if announced (see [`graph_versions`]).
    pub fn end_of_life(self) -> Option<NaiveDate> {
        graph_versions::end_of_life(self.major)
    }

    /// For `check-config`: a warning when the end of life is at most
    /// [`graph_versions::WARN_DAYS`] days after `today` (an ended version is refused at load).
    pub fn end_of_life_warning(self, today: NaiveDate) -> Option<String> {
        let eol = self.end_of_life()?;
        let days = (eol - today).num_days();
        (days > 0 && days <= graph_versions::WARN_DAYS).then(|| {
            format!(
                "api_version {self} reaches its end of life on {eol} (in {days} day{}): Meta stops answering it then; move to api_version = \"{DEFAULT_API_VERSION}\" (the default) before",
                if days == 1 { "" } else { "s" }
            )
        })
    }

    /// Whether Meta no longer answers this version on `today`: its end of life has come, or it
    /// is older than every version in the table (those all ended before the oldest listed).
    pub fn has_ended(self, today: NaiveDate) -> bool {
        match self.end_of_life() {
            Some(eol) => eol <= today,
            None => self.major < graph_versions::OLDEST_LISTED,
        }
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}", self.major, self.minor)
    }
}

fn validate_ids(
    list: Vec<Spanned<String>>,
    key: &str,
    seen: &mut BTreeSet<String>,
    p: &mut Problems<'_>,
) -> Vec<String> {
    let mut out = Vec::new();
    for id in list {
        let v = id.get_ref().trim();
        if v.is_empty() || !v.chars().all(|c| c.is_ascii_digit()) {
            p.add(
                Some(id.span()),
                key,
                format!("\"{}\" is not a Meta object id", id.get_ref()),
                "ids are the numeric ids from WhatsApp Manager or the API (e.g. \"106540352242922\"), not phone numbers with + or spaces",
            );
        } else if !seen.insert(v.to_owned()) {
            p.add(
                Some(id.span()),
                key,
                format!("id {v} is listed twice"),
                "list each id once",
            );
        } else {
            out.push(v.to_owned());
        }
    }
    out
}

pub(super) fn validate_meta(
    i: usize,
    span: std::ops::Range<usize>,
    raw: RawMeta,
    base_dir: &Path,
    now: DateTime<Utc>,
    p: &mut Problems<'_>,
) -> Option<MetaSourceConfig> {
    let k = |name: &str| format!("meta[{i}].{name}");
    let name = source_name(raw.name.as_ref(), span.clone(), &k("name"), "main", p);
    let graph_url = match &raw.graph_url {
        None => Url::parse(DEFAULT_GRAPH_URL).ok(),
        Some(u) => match Url::parse(u.get_ref()) {
            Ok(url) if !matches!(url.scheme(), "http" | "https") || url.host().is_none() => {
                p.add(
                    Some(u.span()),
                    &k("graph_url"),
                    format!("\"{}\" is not an http(s) URL", u.get_ref()),
                    &format!("write \"{DEFAULT_GRAPH_URL}\" or leave the key out"),
                );
                None
            }
            Ok(url) if url.scheme() == "http" && !is_loopback_host(&url) => {
                p.add(
                    Some(u.span()),
                    &k("graph_url"),
                    "plain http would send the access token in clear over the network".into(),
                    "use https (plain http is accepted for loopback simulators only)",
                );
                None
            }
            Ok(url) if url.query().is_some() || url.path() != "/" => {
                p.add(
                    Some(u.span()),
                    &k("graph_url"),
                    format!(
                        "\"{}\" has a path or query; it must be the API's base URL",
                        u.get_ref()
                    ),
                    &format!(
                        "write only scheme and host, e.g. \"{DEFAULT_GRAPH_URL}\"; the version goes in api_version"
                    ),
                );
                None
            }
            Ok(url) => Some(url),
            Err(e) => {
                p.add(
                    Some(u.span()),
                    &k("graph_url"),
                    format!("\"{}\" is not a URL: {e}", u.get_ref()),
                    &format!("write \"{DEFAULT_GRAPH_URL}\" or leave the key out"),
                );
                None
            }
        },
    };
    let today = now.date_naive();
    let current = format!("api_version = \"{DEFAULT_API_VERSION}\"");
    let api_version = match &raw.api_version {
        None => ApiVersion::parse(DEFAULT_API_VERSION),
        Some(v) => match ApiVersion::parse(v.get_ref().trim()) {
            None => {
                p.add(
                    Some(v.span()),
                    &k("api_version"),
                    format!("\"{}\" is not a Graph API version", v.get_ref()),
                    &format!(
                        "write it as Meta does, e.g. {current}, or leave the key out (default {DEFAULT_API_VERSION})"
                    ),
                );
                None
            }
            Some(version) if version.has_ended(today) => {
                let when = match version.end_of_life() {
                    Some(eol) => format!("on {eol}"),
                    None => format!("before v{}.0 did", graph_versions::OLDEST_LISTED),
                };
                p.add(
                    Some(v.span()),
                    &k("api_version"),
                    format!("{version} reached its end of life {when}: Meta no longer answers it"),
                    &format!(
                        "use a current version: {current} (the default; or leave the key out)"
                    ),
                );
                None
            }
            Some(version) => Some(version),
        },
    };
    let token = secret_source(
        &raw.access_token_env,
        &raw.access_token_file,
        (&k("access_token_env"), &k("access_token_file")),
        base_dir,
        Need::Required {
            span: span.clone(),
            what: "no access token source",
            fix: "add access_token_env = \"WABA_MONITOR_META_TOKEN\" (an environment variable holding a system-user token) or access_token_file = \"/run/credentials/waba-monitor.service/meta-token\"",
        },
        p,
    );
    let mut seen = BTreeSet::new();
    let targets_span = span.clone();
    let businesses = validate_ids(raw.businesses, &k("businesses"), &mut seen, p);
    let wabas = validate_ids(raw.wabas, &k("wabas"), &mut seen, p);
    let phone_numbers = validate_ids(raw.phone_numbers, &k("phone_numbers"), &mut seen, p);
    if businesses.is_empty() && wabas.is_empty() && phone_numbers.is_empty() && !p.has_under(&k(""))
    {
        p.add(
            Some(targets_span),
            &k("wabas"),
            "this source watches nothing".into(),
            "list at least one id in businesses, wabas or phone_numbers",
        );
    }
    let request_timeout = duration_key(
        raw.request_timeout,
        &k("request_timeout"),
        Duration::from_secs(30),
        (Duration::from_millis(100), MAX_REQUEST_TIMEOUT),
        p,
    );
    let max_response_bytes =
        max_response_bytes(raw.max_response_bytes, &k("max_response_bytes"), p);
    let concurrency = int_key(
        raw.concurrency,
        &k("concurrency"),
        4,
        1..=32,
        "use 1 to 32 (default 4)",
        p,
    ) as usize;
    let quota_per_waba_hour = int_key(
        raw.quota_per_waba_hour,
        &k("quota_per_waba_hour"),
        META_QUOTA_PER_WABA_HOUR as u32,
        1..=u32::MAX,
        "use Meta's figure: 200 (calls per hour per app per WABA), or 5000 once the WABA has a registered number",
        p,
    );
    let quota_share = match raw.quota_share {
        None => 0.5,
        Some(v) if *v.get_ref() > 0.0 && *v.get_ref() <= 1.0 => *v.get_ref(),
        Some(v) => {
            p.add(
                Some(v.span()),
                &k("quota_share"),
                format!("{} is not a share between 0 and 1", v.get_ref()),
                "use e.g. 0.5 (half of Meta's quota, the default; other tools of yours share it)",
            );
            0.5
        }
    };
    let templates = raw.templates.is_none_or(Spanned::into_inner);
    let templates_every = int_key(
        raw.templates_every,
        &k("templates_every"),
        1,
        1..=10_000,
        "use a number of cycles from 1 (every cycle, the default) to 10000, e.g. 12 to read templates once an hour with a 5-minute schedule; templates = false turns template reads off",
        p,
    );
    if p.has_under(&k("")) {
        return None;
    }
    Some(MetaSourceConfig {
        name,
        graph_url: graph_url?,
        api_version: api_version?,
        token: token?,
        businesses,
        wabas,
        phone_numbers,
        request_timeout,
        max_response_bytes,
        concurrency,
        quota_per_waba_hour,
        quota_share,
        templates,
        templates_every,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use chrono::NaiveDate;

    use crate::config::Config;
    use crate::config::tests::{GOOD, day, located};

    #[test]
    fn an_api_version_past_its_end_of_life_is_refused_naming_a_current_one() {
        let src = GOOD.replace(
            "name = \"main\"",
            "name = \"main\"\napi_version = \"v20.0\"",
        );
        let e = Config::from_toml(Path::new("m.toml"), &src).unwrap_err();
        let p = e
            .problems
            .iter()
            .find(|p| p.key == "meta[0].api_version")
            .unwrap_or_else(|| panic!("not refused:\n{e}"));
        assert_eq!(p.line, Some(8));
        assert!(p.message.contains("2026-09-24"), "{p:?}");
        let fix = p.fix.clone().unwrap_or_default();
        assert!(fix.contains("api_version = \"v2"), "{fix}");
    }

    #[test]
    fn templates_are_read_every_cycle_by_default_and_a_bad_interval_names_its_line() {
        let c = Config::from_toml(Path::new("m.toml"), GOOD).expect("valid");
        assert!(c.meta[0].templates);
        assert_eq!(c.meta[0].templates_every, 1);
        let src = GOOD.replace(
            "name = \"main\"",
            "name = \"main\"\ntemplates = false\ntemplates_every = 12",
        );
        let c = Config::from_toml(Path::new("m.toml"), &src).expect("valid");
        assert!(!c.meta[0].templates);
        assert_eq!(c.meta[0].templates_every, 12);
        let src = GOOD.replace("name = \"main\"", "name = \"main\"\ntemplates_every = 0");
        let e = Config::from_toml(Path::new("m.toml"), &src).unwrap_err();
        assert_eq!(
            located(&e),
            [("meta[0].templates_every".to_owned(), Some(8))]
        );
        let src = GOOD.replace("name = \"main\"", "name = \"main\"\ntemplates = \"yes\"");
        let e = Config::from_toml(Path::new("m.toml"), &src).unwrap_err();
        assert_eq!(located(&e), [("meta[0].templates".to_owned(), Some(8))]);
    }

    #[test]
    fn the_default_api_version_reads_the_portfolio_wide_limit() {
        let c = Config::from_toml(Path::new("m.toml"), GOOD).expect("valid");
        assert!(c.meta[0].api_version.has_business_messaging_limit());
    }

    #[test]
    fn the_load_refuses_a_version_on_the_day_it_ends_and_not_before() {
        let src = GOOD.replace(
            "name = \"main\"",
            "name = \"main\"\napi_version = \"v23.0\"",
        );
        let at = |d: NaiveDate| d.and_hms_opt(12, 0, 0).expect("a time").and_utc();
        let path = Path::new("m.toml");
        assert!(Config::from_toml_at(path, &src, at(day(2027, 10, 7))).is_ok());
        let e = Config::from_toml_at(path, &src, at(day(2027, 10, 8))).unwrap_err();
        assert_eq!(located(&e), [("meta[0].api_version".to_owned(), Some(8))]);
    }
}

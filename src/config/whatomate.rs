//! `[[whatomate]]`: a running Whatomate instance whose accounts (`GET {base_url}/api/accounts`)
//! are polled through the first `[[meta]]` source, so numbers connected there are watched
//! without a second list.

use std::path::Path;
use std::time::Duration;

use url::Url;

use super::checks::{
    MAX_REQUEST_TIMEOUT, duration_key, is_loopback_host, max_response_bytes, source_name,
};
use super::problems::Problems;
use super::raw::RawWhatomate;
use super::secret_keys::{Need, secret_source};
use crate::secrets::SecretSource;

#[derive(Debug, Clone)]
pub struct WhatomateConfig {
    pub name: String,
    /// Scheme, host and an optional path prefix; `/api/accounts` is appended.
    pub base_url: Url,
    /// Sent as the `X-API-Key` header, never in a URL.
    pub api_key: SecretSource,
    pub request_timeout: Duration,
    pub max_response_bytes: u64,
}

const EXAMPLE_URL: &str = "https://whatomate.example.com";

pub(super) fn validate_whatomate(
    i: usize,
    span: std::ops::Range<usize>,
    raw: RawWhatomate,
    base_dir: &Path,
    p: &mut Problems<'_>,
) -> Option<WhatomateConfig> {
    let k = |name: &str| format!("whatomate[{i}].{name}");
    let name = source_name(raw.name.as_ref(), span.clone(), &k("name"), "whatomate", p);
    let base_url = match &raw.base_url {
        None => {
            p.add(
                Some(span.clone()),
                &k("base_url"),
                "this [[whatomate]] block has no base_url".into(),
                &format!("add base_url = \"{EXAMPLE_URL}\" (where Whatomate serves /api)"),
            );
            None
        }
        Some(u) => match Url::parse(u.get_ref()) {
            Ok(url)
                if url.scheme() == "https"
                    || (url.scheme() == "http" && is_loopback_host(&url)) =>
            {
                if url.query().is_some()
                    || url.fragment().is_some()
                    || !url.username().is_empty()
                    || url.password().is_some()
                {
                    p.add(
                        Some(u.span()),
                        &k("base_url"),
                        format!("\"{}\" has a query, fragment or credentials", u.get_ref()),
                        &format!("write only scheme, host and path prefix, e.g. \"{EXAMPLE_URL}\"; the API key goes in api_key_env or api_key_file"),
                    );
                    None
                } else {
                    Some(url)
                }
            }
            _ => {
                p.add(
                    Some(u.span()),
                    &k("base_url"),
                    format!("\"{}\" is not an https URL", u.get_ref()),
                    &format!("write e.g. \"{EXAMPLE_URL}\" (plain http only for loopback)"),
                );
                None
            }
        },
    };
    let api_key = secret_source(
        &raw.api_key_env,
        &raw.api_key_file,
        (&k("api_key_env"), &k("api_key_file")),
        base_dir,
        Need::Required {
            span: span.clone(),
            what: "no API key source",
            fix: "add api_key_env = \"WABA_MONITOR_WHATOMATE_KEY\" (the NAME of a variable holding Whatomate's API key) or api_key_file = \"/run/credentials/waba-monitor.service/whatomate-key\"",
        },
        p,
    );
    let request_timeout = duration_key(
        raw.request_timeout,
        &k("request_timeout"),
        Duration::from_secs(30),
        (Duration::from_millis(100), MAX_REQUEST_TIMEOUT),
        p,
    );
    let max_response_bytes =
        max_response_bytes(raw.max_response_bytes, &k("max_response_bytes"), p);
    if p.has_under(&k("")) {
        return None;
    }
    Some(WhatomateConfig {
        name,
        base_url: base_url?,
        api_key: api_key?,
        request_timeout,
        max_response_bytes,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;
    use crate::config::tests::{GOOD, located};

    fn with(block: &str) -> String {
        format!("{GOOD}\n[[whatomate]]\n{block}")
    }

    #[test]
    fn a_whatomate_block_validates() {
        let src = with(
            "name = \"wm\"\nbase_url = \"https://whatomate.example.com\"\napi_key_env = \"WM_KEY\"\n",
        );
        let c = Config::from_toml(Path::new("/etc/x/monitor.toml"), &src).expect("valid");
        assert_eq!(c.whatomate.len(), 1);
        assert_eq!(c.whatomate[0].name, "wm");
        assert_eq!(
            c.whatomate[0].base_url.as_str(),
            "https://whatomate.example.com/"
        );
    }

    #[test]
    fn whatomate_problems_have_lines() {
        let src = with(
            "name = \"main\"\nbase_url = \"http://whatomate.example.com/?k=1\"\napi_key = \"x\"\n",
        );
        let e = Config::from_toml(Path::new("m.toml"), &src).unwrap_err();
        let keys = located(&e);
        let line = |key: &str| keys.iter().find(|(k, _)| k == key).and_then(|(_, l)| *l);
        assert!(line("whatomate[0].name").is_some(), "{keys:?}");
        assert!(line("whatomate[0].base_url").is_some(), "{keys:?}");
        assert!(
            line("whatomate[0].api_key").is_some(),
            "unknown key: {keys:?}"
        );
        assert!(
            line("whatomate[0].api_key_env").is_some(),
            "no key source: {keys:?}"
        );
    }

    #[test]
    fn whatomate_needs_a_meta_source() {
        let src = "[daemon]\ndatabase = \"m.db\"\npoll_schedule = \"0 */5 * * * *\"\n\n[[bsp]]\nkind = \"finedu\"\nname = \"f\"\ntoken_env = \"F\"\n\n[[whatomate]]\nname = \"wm\"\nbase_url = \"https://w.example.com\"\napi_key_env = \"WM\"\n";
        let e = Config::from_toml(Path::new("m.toml"), src).unwrap_err();
        assert!(
            located(&e)
                .iter()
                .any(|(k, l)| k == "whatomate[0]" && l.is_some()),
            "{:?}",
            located(&e)
        );
        let ok = "[daemon]\ndatabase = \"m.db\"\npoll_schedule = \"0 */5 * * * *\"\n\n[[whatomate]]\nname = \"wm\"\nbase_url = \"http://127.0.0.1:8080\"\napi_key_env = \"WM\"\n";
        assert!(Config::from_toml(Path::new("m.toml"), ok).is_err());
    }
}

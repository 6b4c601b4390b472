//! The Finedu BSP source: `GET /v1/whatsapp/businessAccounts`, page-number paging, every WABA
//! with its numbers nested, camelCase fields — turned into the same observations as Meta's.
//!
//! A walk is *complete* only if it read every page up to the page count the BSP announced,
//! the listing did not change under it (`total` or `pages` moving between pages means WABAs
//! shifted across page boundaries and one may have been skipped), no page before the last came
//! back empty, and the WABAs read add up to the announced `total`: only then may a WABA or a
//! number missing from the listing be recorded as gone. The API serves pages 1 to 100 only; a
//! listing longer than that cannot be walked to its end, which is reported as a failure
//! (`listing_truncated`) naming the `page_size` that would reach it.

use std::collections::BTreeSet;

use backon::Retryable;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::graph::parse::{self, Anomalies};
use super::graph::{ErrorClass, GraphError};
use super::{ObjectKind, SourcePoll, TargetFailure};
use crate::config::BspSourceConfig;
use crate::model::{PhoneObservation, VerificationStatus, WabaObservation};
use crate::retry::RetryPolicy;

/// The API accepts page numbers 1 to 100.
const MAX_PAGE: u32 = 100;
/// And page sizes 1 to 100.
const MAX_PAGE_SIZE: u32 = 100;

pub struct FineduSource {
    pub cfg: BspSourceConfig,
    http: reqwest::Client,
    retry: RetryPolicy,
    /// Pages requested since the source was built (for progress displays).
    pages_requested: std::sync::atomic::AtomicU64,
}

/// Classifies a non-success answer of the BSP by its HTTP status (the API documents no error
/// codes): 401/403 mean the token, 429 throttling, 5xx a passing fault.
fn http_error(status: u16, body: &[u8]) -> GraphError {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned));
    let Some(message) = message else {
        return GraphError::BadStatus {
            status,
            content_type: "not the BSP's JSON".into(),
        };
    };
    let class = match status {
        401 | 403 => ErrorClass::Auth,
        404 => ErrorClass::NotFound,
        429 => ErrorClass::RateLimited,
        s if s >= 500 => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    };
    GraphError::Api {
        class,
        http_status: status,
        code: None,
        subcode: None,
        message: crate::redact::redact(&message).chars().take(300).collect(),
        fbtrace_id: None,
        retry_after: None,
    }
}

/// Renames the BSP's camelCase fields to Meta's names so the one lenient parser reads both.
fn to_meta_phone(p: &Value) -> Value {
    let mut out = serde_json::Map::new();
    let pairs = [
        ("phoneNumberId", "id"),
        ("displayPhoneNumber", "display_phone_number"),
        ("verifiedName", "verified_name"),
        ("status", "status"),
        ("qualityRating", "quality_rating"),
        ("codeVerificationStatus", "code_verification_status"),
        ("messagingLimitTier", "messaging_limit_tier"),
        (
            "whatsappBusinessManagerMessagingLimit",
            "whatsapp_business_manager_messaging_limit",
        ),
        ("createTime", "created_time"),
        ("updateTime", "updated_time"),
    ];
    for (from, to) in pairs {
        if let Some(v) = p.get(from) {
            out.insert(to.to_owned(), v.clone());
        }
    }
    // Meta sends throughput as {"level": ...}; the BSP as a plain string.
    match p.get("throughput") {
        Some(Value::String(level)) => {
            out.insert("throughput".into(), serde_json::json!({ "level": level }));
        }
        Some(other) => {
            out.insert("throughput".into(), other.clone());
        }
        None => {}
    }
    Value::Object(out)
}

fn to_meta_waba(w: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for (from, to) in [
        ("wabaId", "id"),
        ("name", "name"),
        ("accountReviewStatus", "account_review_status"),
        ("businessVerificationStatus", "business_verification_status"),
        (
            "whatsappBusinessManagerMessagingLimit",
            "whatsapp_business_manager_messaging_limit",
        ),
        ("createTime", "created_time"),
        ("updateTime", "updated_time"),
    ] {
        if let Some(v) = w.get(from) {
            out.insert(to.to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

fn number(v: &Value, field: &str) -> Option<u64> {
    v.get(field).and_then(Value::as_u64)
}

impl FineduSource {
    pub fn new(cfg: BspSourceConfig, retry: RetryPolicy) -> Result<FineduSource, GraphError> {
        let http = super::graph::client::http_client(cfg.request_timeout)?;
        Ok(FineduSource {
            cfg,
            http,
            retry,
            pages_requested: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Pages requested since the source was built.
    pub fn requests_sent(&self) -> u64 {
        self.pages_requested
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One page, retried while the failure is transient.
    async fn page(&self, token: &SecretString, page: u32) -> Result<Value, GraphError> {
        let mut url = self.cfg.base_url.clone();
        url.set_path("/v1/whatsapp/businessAccounts");
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("pageNo", &page.to_string())
                .append_pair("pageSize", &self.cfg.page_size.to_string());
            if let Some(s) = &self.cfg.account_review_status {
                q.append_pair("accountReviewStatus", s);
            }
        }
        let attempt = || {
            let url = url.clone();
            async move {
                let resp = self
                    .http
                    .get(url)
                    .bearer_auth(token.expose_secret())
                    .send()
                    .await
                    .map_err(|e| {
                        if e.is_timeout() {
                            GraphError::Timeout(self.cfg.request_timeout)
                        } else {
                            GraphError::Connect(e.without_url().to_string())
                        }
                    })?;
                let status = resp.status().as_u16();
                if resp
                    .content_length()
                    .is_some_and(|n| n > self.cfg.max_response_bytes)
                {
                    return Err(GraphError::TooLarge {
                        limit: self.cfg.max_response_bytes,
                    });
                }
                let mut resp = resp;
                let mut body = Vec::new();
                while let Some(chunk) = resp
                    .chunk()
                    .await
                    .map_err(|e| GraphError::Malformed(e.without_url().to_string()))?
                {
                    if (body.len() + chunk.len()) as u64 > self.cfg.max_response_bytes {
                        return Err(GraphError::TooLarge {
                            limit: self.cfg.max_response_bytes,
                        });
                    }
                    body.extend_from_slice(&chunk);
                }
                if !(200..300).contains(&status) {
                    return Err(http_error(status, &body));
                }
                serde_json::from_slice::<Value>(&body).map_err(|e| {
                    GraphError::Malformed(format!("body is not JSON ({} bytes): {e}", body.len()))
                })
            }
        };
        attempt
            .retry(self.retry.builder())
            .sleep(tokio::time::sleep)
            .when(GraphError::is_retryable)
            .await
    }

    /// Walks every page. Never fails as a whole.
    pub async fn poll(&self, _now: DateTime<Utc>) -> SourcePoll {
        let mut out = SourcePoll {
            source: self.cfg.name.clone(),
            priority: PRIORITY,
            ..SourcePoll::default()
        };
        let fail = |out: &mut SourcePoll, error: GraphError| {
            out.failures.push(TargetFailure {
                kind: ObjectKind::Source,
                id: out.source.clone(),
                error,
            });
        };
        let token = match super::load_secret(&self.cfg.token).await {
            Ok(t) => t,
            Err(e) => {
                fail(
                    &mut out,
                    GraphError::Api {
                        class: ErrorClass::Auth,
                        http_status: 0,
                        code: None,
                        subcode: None,
                        message: format!("could not read the API token: {e}"),
                        fbtrace_id: None,
                        retry_after: None,
                    },
                );
                return out;
            }
        };
        let mut an = Anomalies::default();
        let mut complete = true;
        let mut shape: Option<(u64, u64)> = None;
        let mut listed: BTreeSet<String> = BTreeSet::new();
        let mut page = 1;
        loop {
            out.requests += 1;
            self.pages_requested
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let body = match self.page(&token, page).await {
                Ok(b) => b,
                Err(e) => {
                    complete = false;
                    fail(&mut out, e);
                    break;
                }
            };
            let (Some(Value::Array(data)), Some(total), Some(pages)) = (
                body.get("data"),
                number(&body, "total"),
                number(&body, "pages"),
            ) else {
                complete = false;
                fail(
                    &mut out,
                    GraphError::Malformed("page without data, total or pages".into()),
                );
                break;
            };
            match shape {
                None => shape = Some((total, pages)),
                Some(s) if s != (total, pages) => {
                    // WABAs moved across page boundaries: what was read is good, but the
                    // listing may have skipped some, so nothing can be called gone.
                    complete = false;
                    an.0.push(parse::Anomaly {
                        reason: "paging_changed",
                        field: "total",
                        detail: format!("{} -> {total} WABAs during the walk", s.0),
                    });
                    shape = Some((total, pages));
                }
                Some(_) => {}
            }
            if data.is_empty() && u64::from(page) < pages {
                // Counters that promise more than the pages deliver: nothing can be called gone.
                complete = false;
                an.0.push(parse::Anomaly {
                    reason: "paging_changed",
                    field: "data",
                    detail: format!("page {page} of {pages} is empty"),
                });
                break;
            }
            for w in data {
                let meta = to_meta_waba(w);
                let Some(waba) = parse::waba(&meta, None, &mut an) else {
                    continue;
                };
                if !listed.insert(waba.id.clone()) {
                    continue;
                }
                match w.get("businessPhoneNumbers") {
                    Some(Value::Array(phones)) => {
                        for p in phones {
                            if let Some(obs) =
                                parse::phone(&to_meta_phone(p), Some(&waba.id), &mut an)
                            {
                                out.phones.push(obs);
                            }
                        }
                        out.complete_wabas.insert(waba.id.clone());
                    }
                    None | Some(Value::Null) => {
                        out.complete_wabas.insert(waba.id.clone());
                    }
                    Some(_) => an.0.push(parse::Anomaly {
                        reason: "wrong_type",
                        field: "businessPhoneNumbers",
                        detail: waba.id.clone(),
                    }),
                }
                out.wabas.push(normalise_waba(waba));
            }
            if u64::from(page) >= pages || data.is_empty() {
                break;
            }
            if page >= MAX_PAGE {
                complete = false;
                let (total, pages) = shape.unwrap_or_default();
                let fix = if self.cfg.page_size < MAX_PAGE_SIZE {
                    format!(
                        "raise page_size from {} to {MAX_PAGE_SIZE} (up to {} WABAs)",
                        self.cfg.page_size,
                        MAX_PAGE * MAX_PAGE_SIZE
                    )
                } else {
                    "split the listing with account_review_status in several [[bsp]] blocks"
                        .to_owned()
                };
                let msg = format!(
                    "the BSP lists {total} WABAs in {pages} pages but its API serves pages 1 to {MAX_PAGE} only: {} read, the rest are not monitored; {fix}",
                    listed.len()
                );
                tracing::warn!(source = %self.cfg.name, "{msg}");
                fail(&mut out, GraphError::ListingTruncated(msg));
                break;
            }
            page += 1;
        }
        if complete
            && let Some((total, _)) = shape
            && total != listed.len() as u64
        {
            // The counters and the pages disagree: some WABA was not seen.
            complete = false;
            an.0.push(parse::Anomaly {
                reason: "paging_changed",
                field: "total",
                detail: format!("{total} WABAs announced, {} listed", listed.len()),
            });
        }
        if complete {
            // Filtered walks leave WABAs out on purpose: only an unfiltered one says "gone".
            out.complete_source = self.cfg.account_review_status.is_none();
        } else {
            out.complete_wabas.clear();
        }
        out.anomalies = an.0;
        out
    }
}

/// The BSP's own priority: Meta's view of a number wins over a BSP's (see `store::apply_in`).
pub const PRIORITY: u8 = 1;

fn normalise_waba(mut w: WabaObservation) -> WabaObservation {
    // The BSP's examples write verification in lower case, Meta's sometimes in upper: one
    // spelling in the store either way.
    if let Some(VerificationStatus::Other(raw)) = &w.business_verification_status {
        w.business_verification_status = Some(VerificationStatus::parse_any_case(raw));
    }
    w
}

/// Builds a phone observation from a BSP record (used by tests of the mapping).
pub fn phone_from_bsp(p: &Value, waba: &str) -> Option<PhoneObservation> {
    parse::phone(&to_meta_phone(p), Some(waba), &mut Anomalies::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        CodeVerificationStatus, MessagingLimit, PhoneStatus, QualityRating, ThroughputLevel,
    };

    #[test]
    fn every_documented_phone_field_is_mapped() {
        let p = serde_json::json!({
            "wabaId": "9", "phoneNumberId": "1", "displayPhoneNumber": "+1 555-0100",
            "verifiedName": "Acme", "status": "RATE_LIMITED", "qualityRating": "YELLOW",
            "codeVerificationStatus": "NOT_VERIFIED", "throughput": "STANDARD",
            "messagingLimitTier": "TIER_2K", "createTime": "2025-12-01T11:04:56.000+08:00",
            "updateTime": "2025-12-01T16:00:01.000+08:00"
        });
        let o = phone_from_bsp(&p, "9").expect("phone");
        assert_eq!(o.id, "1");
        assert_eq!(o.waba_id.as_deref(), Some("9"));
        assert_eq!(o.display_phone_number.as_deref(), Some("+1 555-0100"));
        assert_eq!(o.verified_name.as_deref(), Some("Acme"));
        assert_eq!(o.status, Some(PhoneStatus::RateLimited));
        assert_eq!(o.quality_rating, Some(QualityRating::Yellow));
        assert_eq!(
            o.code_verification_status,
            Some(CodeVerificationStatus::NotVerified)
        );
        assert_eq!(o.throughput, Some(ThroughputLevel::Standard));
        assert_eq!(o.messaging_limit_tier, Some(MessagingLimit::Tier2K));
        // The BSP writes its local time (+08:00); stored as UTC.
        assert_eq!(
            o.source_created_at.as_deref(),
            Some("2025-12-01T03:04:56.000Z")
        );
        assert_eq!(
            o.source_updated_at.as_deref(),
            Some("2025-12-01T08:00:01.000Z")
        );
    }

    #[test]
    fn every_documented_waba_field_is_mapped() {
        let w = serde_json::json!({
            "wabaId": "9", "name": "Globex", "status": "ACTIVE",
            "businessVerificationStatus": "verified", "accountReviewStatus": "APPROVED",
            "whatsappBusinessManagerMessagingLimit": "TIER_10K",
            "createTime": "2025-12-01T15:22:49.000+08:00", "updateTime": "2025-12-01T15:22:49.000+08:00"
        });
        let o = normalise_waba(
            parse::waba(&to_meta_waba(&w), None, &mut Anomalies::default()).expect("waba"),
        );
        assert_eq!(o.id, "9");
        assert_eq!(o.name.as_deref(), Some("Globex"));
        assert_eq!(
            o.business_verification_status,
            Some(VerificationStatus::Verified)
        );
        assert_eq!(
            o.account_review_status.map(|r| r.to_string()).as_deref(),
            Some("APPROVED")
        );
        assert_eq!(o.business_messaging_limit, Some(MessagingLimit::Tier10K));
        assert_eq!(
            o.source_created_at.as_deref(),
            Some("2025-12-01T07:22:49.000Z")
        );
    }

    #[test]
    fn every_bsp_status_maps_onto_the_known_statuses() {
        for s in [
            "PENDING",
            "UNVERIFIED",
            "MANUAL_REVIEW",
            "DISCONNECTED",
            "CONNECTED",
            "FLAGGED",
            "WARNED",
            "RATE_LIMITED",
            "BANNED",
            "RESTRICTED",
            "BLOCKED",
            "MIGRATED",
            "UNKNOWN",
        ] {
            let o = phone_from_bsp(&serde_json::json!({"phoneNumberId": "1", "status": s}), "9")
                .expect("phone");
            assert!(o.status.as_ref().is_some_and(PhoneStatus::is_known), "{s}");
        }
    }

    #[test]
    fn errors_are_classified_by_http_status() {
        assert_eq!(
            http_error(401, br#"{"code":401,"message":"Unauthorized"}"#).class(),
            ErrorClass::Auth
        );
        assert_eq!(
            http_error(503, br#"{"code":503,"message":"busy"}"#).class(),
            ErrorClass::Transient
        );
        assert_eq!(
            http_error(502, b"<html>bad gateway</html>").reason(),
            "bad_status"
        );
    }
}

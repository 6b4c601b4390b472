//! The simulated graph's node types: which fields and edges each has, what Graph returns
//! without `fields=`, and how a fleet object turns into field values.

use serde_json::{Map, Value, json};

use super::errors::GraphFailure;
use super::fields::FieldSpec;
use super::state::{SimBusiness, SimPhone, SimTemplate, SimWaba, TEMPLATE_QUALITY_DATE};

/// The field that exists only from Graph API v24.0 on.
pub(crate) const PORTFOLIO_LIMIT_FIELD: &str = "whatsapp_business_manager_messaging_limit";

/// Whether the API version of a request knows the portfolio-wide messaging limit field.
/// A request without a version gets the newest behaviour, as Graph uses the app's default.
pub(crate) fn has_portfolio_limit(version: Option<&str>) -> bool {
    let Some(version) = version else {
        return true;
    };
    version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|major| major.parse::<u32>().ok())
        .is_some_and(|major| major >= 24)
}

/// Node types of the simulated graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Business,
    Waba,
    Phone,
    Template,
}

/// The WABA edge listing its message templates.
pub(crate) const MESSAGE_TEMPLATES: &str = "message_templates";

impl Kind {
    pub(crate) fn type_name(self) -> &'static str {
        match self {
            Kind::Business => "Business",
            Kind::Waba => "WhatsAppBusinessAccount",
            Kind::Phone => "WhatsAppBusinessPhoneNumber",
            Kind::Template => "WhatsAppMessageTemplate",
        }
    }

    /// The node type an edge leads to, if `name` is an edge of this type.
    pub(crate) fn edge(self, name: &str) -> Option<Kind> {
        match (self, name) {
            (
                Kind::Business,
                "owned_whatsapp_business_accounts"
                | "client_whatsapp_business_accounts"
                | "whatsapp_business_accounts",
            ) => Some(Kind::Waba),
            (Kind::Waba, "phone_numbers") => Some(Kind::Phone),
            (Kind::Waba, MESSAGE_TEMPLATES) => Some(Kind::Template),
            _ => None,
        }
    }

    pub(crate) fn scalar_fields(self) -> &'static [&'static str] {
        match self {
            Kind::Business => &["id", "name", PORTFOLIO_LIMIT_FIELD],
            Kind::Waba => &[
                "id",
                "name",
                "account_review_status",
                "business_verification_status",
                "currency",
                "country",
                "timezone_id",
                "message_template_namespace",
                "ownership_type",
                "health_status",
                PORTFOLIO_LIMIT_FIELD,
                "is_enabled_for_insights",
            ],
            Kind::Phone => &[
                "id",
                "display_phone_number",
                "verified_name",
                "status",
                "quality_rating",
                "messaging_limit_tier",
                PORTFOLIO_LIMIT_FIELD,
                "name_status",
                "code_verification_status",
                "throughput",
                "account_mode",
                "platform_type",
                "country_code",
                "country_dial_code",
                "is_official_business_account",
                "certificate",
                "health_status",
            ],
            Kind::Template => &[
                "id",
                "name",
                "language",
                "status",
                "category",
                "quality_score",
                "rejected_reason",
                "previous_category",
            ],
        }
    }

    /// What Graph returns without `fields=`: a subset that notably lacks `health_status` and
    /// the limits, so a client that forgets to ask gets less than it needs.
    pub(crate) fn default_fields(self) -> &'static [&'static str] {
        match self {
            Kind::Business => &["id", "name"],
            Kind::Waba => &[
                "id",
                "name",
                "currency",
                "timezone_id",
                "message_template_namespace",
            ],
            Kind::Phone => &[
                "id",
                "display_phone_number",
                "verified_name",
                "status",
                "quality_rating",
                "code_verification_status",
                "platform_type",
                "throughput",
            ],
            // Meta also sends `components` and `parameter_format`, which the simulator lacks.
            Kind::Template => &["id", "name", "language", "status", "category"],
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Node<'a> {
    Business(&'a SimBusiness),
    Waba(&'a SimWaba),
    Phone(&'a SimPhone),
    Template(&'a SimTemplate),
}

impl<'a> Node<'a> {
    pub(crate) fn kind(self) -> Kind {
        match self {
            Node::Business(_) => Kind::Business,
            Node::Waba(_) => Kind::Waba,
            Node::Phone(_) => Kind::Phone,
            Node::Template(_) => Kind::Template,
        }
    }

    pub(crate) fn id(self) -> &'a str {
        match self {
            Node::Business(b) => &b.id,
            Node::Waba(w) => &w.id,
            Node::Phone(p) => &p.id,
            Node::Template(t) => &t.id,
        }
    }

    pub(crate) fn overrides(self) -> &'a Map<String, Value> {
        match self {
            Node::Business(b) => &b.overrides,
            Node::Waba(w) => &w.overrides,
            Node::Phone(p) => &p.overrides,
            Node::Template(t) => &t.overrides,
        }
    }

    /// The value of a scalar field: `None` = no such field on this type, `Some(None)` = the
    /// field exists but this object has no value (Graph then leaves it out).
    pub(crate) fn scalar(self, name: &str) -> Option<Option<Value>> {
        match self {
            Node::Business(b) => business_field(b, name),
            Node::Waba(w) => waba_field(w, name),
            Node::Phone(p) => phone_field(p, name),
            Node::Template(t) => template_field(t, name),
        }
    }
}

fn text(value: &str) -> Option<Value> {
    Some(Value::String(value.to_owned()))
}

fn opt(value: &Option<String>) -> Option<Value> {
    value.as_deref().and_then(text)
}

fn object(value: &Value) -> Option<Value> {
    (!value.is_null()).then(|| value.clone())
}

fn business_field(b: &SimBusiness, name: &str) -> Option<Option<Value>> {
    Some(match name {
        "id" => text(&b.id),
        "name" => text(&b.name),
        PORTFOLIO_LIMIT_FIELD => opt(&b.business_messaging_limit),
        _ => return None,
    })
}

fn waba_field(w: &SimWaba, name: &str) -> Option<Option<Value>> {
    Some(match name {
        "id" => text(&w.id),
        "name" => text(&w.name),
        "account_review_status" => opt(&w.account_review_status),
        "business_verification_status" => opt(&w.business_verification_status),
        "currency" => text(&w.currency),
        "country" => text(&w.country),
        "timezone_id" => text(&w.timezone_id),
        "message_template_namespace" => text(&w.message_template_namespace),
        "ownership_type" => opt(&w.ownership_type),
        "health_status" => object(&w.health),
        PORTFOLIO_LIMIT_FIELD => opt(&w.business_messaging_limit),
        "is_enabled_for_insights" => Some(Value::Bool(w.is_enabled_for_insights)),
        _ => return None,
    })
}

fn phone_field(p: &SimPhone, name: &str) -> Option<Option<Value>> {
    Some(match name {
        "id" => text(&p.id),
        "display_phone_number" => text(&p.display_phone_number),
        "verified_name" => text(&p.verified_name),
        "status" => opt(&p.status),
        "quality_rating" => opt(&p.quality_rating),
        // The deprecated tier is sent as an explicit null, not left out.
        "messaging_limit_tier" => Some(opt(&p.messaging_limit_tier).unwrap_or(Value::Null)),
        PORTFOLIO_LIMIT_FIELD => opt(&p.business_messaging_limit),
        "name_status" => opt(&p.name_status),
        "code_verification_status" => opt(&p.code_verification_status),
        "throughput" => p
            .throughput_level
            .as_ref()
            .map(|level| json!({ "level": level })),
        "account_mode" => opt(&p.account_mode),
        "platform_type" => opt(&p.platform_type),
        "country_code" => text(&p.country_code),
        "country_dial_code" => text(&p.country_dial_code),
        "is_official_business_account" => Some(Value::Bool(p.is_official_business_account)),
        "certificate" => opt(&p.certificate),
        "health_status" => object(&p.health),
        _ => return None,
    })
}

fn template_field(t: &SimTemplate, name: &str) -> Option<Option<Value>> {
    Some(match name {
        "id" => text(&t.id),
        "name" => text(&t.name),
        "language" => text(&t.language),
        "status" => text(&t.status),
        "category" => text(&t.category),
        "quality_score" => t
            .quality
            .as_ref()
            .map(|score| json!({ "score": score, "date": TEMPLATE_QUALITY_DATE })),
        // Meta sends the text NONE for a template that was never rejected.
        "rejected_reason" => text(t.rejected_reason.as_deref().unwrap_or("NONE")),
        "previous_category" => opt(&t.previous_category),
        _ => return None,
    })
}

/// Checks requested field names against a node type without an object at hand (an empty
/// edge), so a typo fails even when there is nothing to render.
pub(crate) fn validate(
    kind: Kind,
    fields: Option<&[FieldSpec]>,
    version: Option<&str>,
) -> Result<(), GraphFailure> {
    for spec in fields.unwrap_or_default() {
        if let Some(child) = kind.edge(&spec.name) {
            validate(child, spec.children.as_deref(), version)?;
        } else if !kind.scalar_fields().contains(&spec.name.as_str())
            || (spec.name == PORTFOLIO_LIMIT_FIELD && !has_portfolio_limit(version))
        {
            return Err(GraphFailure::nonexisting_field(
                &spec.name,
                kind.type_name(),
            ));
        }
    }
    Ok(())
}

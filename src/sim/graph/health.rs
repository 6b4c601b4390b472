//! `health_status` objects: Meta's modern "can it send?" signal on numbers and WABAs.

use serde_json::{Value, json};

/// The app id shown in the `APP` entity of every `health_status`.
pub const SIM_APP_ID: &str = "334536146421587";

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
pub(crate) fn set_entity(
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

/// The healthy `health_status` of a WABA.
pub(crate) fn waba_health(waba_id: &str, business_id: &str) -> Value {
    health_status(vec![
        health_entity("WABA", waba_id, "AVAILABLE", None),
        health_entity("BUSINESS", business_id, "AVAILABLE", None),
        health_entity("APP", SIM_APP_ID, "AVAILABLE", None),
    ])
}

/// The healthy `health_status` of a phone number.
pub(crate) fn phone_health(phone_id: &str, waba_id: &str, business_id: &str) -> Value {
    health_status(vec![
        health_entity("PHONE_NUMBER", phone_id, "AVAILABLE", None),
        health_entity("WABA", waba_id, "AVAILABLE", None),
        health_entity("BUSINESS", business_id, "AVAILABLE", None),
        health_entity("APP", SIM_APP_ID, "AVAILABLE", None),
    ])
}

//! Validation of incoming events. Every rule names the field it is about, so
//! a client sees `INVALID_ARGUMENT: event.correlation_id: …` and can fix it.

use ledger_proto::v1::{AuditEvent, EventKind, Outcome, RiskTier};
use std::time::{Duration, SystemTime};

/// Limits that the operator can tune.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_payload_bytes: usize,
    pub max_attributes: usize,
    pub max_attribute_key_bytes: usize,
    pub max_attribute_value_bytes: usize,
    /// How far in the future `occurred_at` may be, for clock skew.
    pub max_future_skew: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 1 << 20,
            max_attributes: 64,
            max_attribute_key_bytes: 128,
            max_attribute_value_bytes: 4096,
            max_future_skew: Duration::from_secs(300),
        }
    }
}

/// A rejected field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

fn err(field: &str, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: format!("event.{field}"),
        reason: reason.into(),
    }
}

fn lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && s.bytes().any(|b| b != b'0')
}

/// Text fields: bounded, no control characters (NUL would break index keys).
fn text(field: &str, value: &str, max: usize, required: bool) -> Result<(), FieldError> {
    if required && value.is_empty() {
        return Err(err(field, "required"));
    }
    if value.len() > max {
        return Err(err(
            field,
            format!("{} bytes, at most {max} allowed", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(err(field, "must not contain control characters"));
    }
    Ok(())
}

/// Checks an event against the rules of the v1 API (see ledger.proto).
pub fn validate_event(e: &AuditEvent, limits: &Limits, now: SystemTime) -> Result<(), FieldError> {
    if e.event_id.is_empty() {
        return Err(err(
            "event_id",
            "required (a client-chosen unique id, e.g. a UUID)",
        ));
    }
    if e.event_id.len() > 128
        || !e
            .event_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err(err("event_id", "1 to 128 characters of [A-Za-z0-9._:-]"));
    }
    if !lower_hex(&e.correlation_id, 32) {
        return Err(err(
            "correlation_id",
            "must be a W3C trace id: 32 lowercase hex characters, not all zero",
        ));
    }
    if !e.span_id.is_empty() && !lower_hex(&e.span_id, 16) {
        return Err(err(
            "span_id",
            "must be empty or 16 lowercase hex characters, not all zero",
        ));
    }
    if !e.parent_span_id.is_empty() && !lower_hex(&e.parent_span_id, 16) {
        return Err(err(
            "parent_span_id",
            "must be empty or 16 lowercase hex characters, not all zero",
        ));
    }
    text("agent_id", &e.agent_id, 256, true)?;
    text("session_id", &e.session_id, 256, false)?;
    text("principal", &e.principal, 256, false)?;
    let kind =
        EventKind::try_from(e.kind).map_err(|_| err("kind", format!("unknown kind {}", e.kind)))?;
    if kind == EventKind::Unspecified {
        return Err(err("kind", "required"));
    }
    let tool_required = matches!(kind, EventKind::ToolCall | EventKind::ToolResult);
    text("tool_name", &e.tool_name, 256, tool_required)?;
    text("action", &e.action, 256, false)?;
    text("resource", &e.resource, 1024, false)?;
    RiskTier::try_from(e.risk_tier)
        .map_err(|_| err("risk_tier", format!("unknown risk tier {}", e.risk_tier)))?;
    Outcome::try_from(e.outcome)
        .map_err(|_| err("outcome", format!("unknown outcome {}", e.outcome)))?;

    let ts = e
        .occurred_at
        .as_ref()
        .ok_or_else(|| err("occurred_at", "required"))?;
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(err(
            "occurred_at",
            format!("nanos is {}, must be 0 to 999999999", ts.nanos),
        ));
    }
    if ts.seconds < 0 {
        return Err(err(
            "occurred_at",
            format!("seconds is {}, must be a time after 1970-01-01", ts.seconds),
        ));
    }
    let at = SystemTime::UNIX_EPOCH + Duration::new(ts.seconds as u64, ts.nanos as u32);
    if at > now + limits.max_future_skew {
        return Err(err(
            "occurred_at",
            format!(
                "is more than {}s in the future (check the sender's clock)",
                limits.max_future_skew.as_secs()
            ),
        ));
    }

    if e.attributes.len() > limits.max_attributes {
        return Err(err(
            "attributes",
            format!(
                "{} pairs, at most {} allowed",
                e.attributes.len(),
                limits.max_attributes
            ),
        ));
    }
    for (k, v) in &e.attributes {
        if k.is_empty() || k.len() > limits.max_attribute_key_bytes {
            return Err(err(
                "attributes",
                format!(
                    "key {} ({} bytes) must be 1 to {} bytes",
                    crate::service::answers::quote(k),
                    k.len(),
                    limits.max_attribute_key_bytes
                ),
            ));
        }
        if v.len() > limits.max_attribute_value_bytes {
            return Err(err(
                &format!("attributes[{k}]"),
                format!(
                    "value of {} bytes, at most {} allowed",
                    v.len(),
                    limits.max_attribute_value_bytes
                ),
            ));
        }
    }
    if e.payload.len() > limits.max_payload_bytes {
        return Err(err(
            "payload",
            format!(
                "{} bytes, at most {} allowed",
                e.payload.len(),
                limits.max_payload_bytes
            ),
        ));
    }
    text("payload_content_type", &e.payload_content_type, 128, false)?;
    Ok(())
}

/// Nanoseconds since the epoch of a validated event's occurred_at.
pub fn occurred_nanos(e: &AuditEvent) -> u64 {
    e.occurred_at
        .as_ref()
        .map(|t| {
            (t.seconds as u64)
                .saturating_mul(1_000_000_000)
                .saturating_add(t.nanos as u64)
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn good() -> AuditEvent {
        AuditEvent {
            event_id: "evt-1".into(),
            correlation_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "00f067aa0ba902b7".into(),
            agent_id: "agent-7".into(),
            kind: EventKind::ToolCall as i32,
            tool_name: "sql".into(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    fn field_of(e: &AuditEvent) -> String {
        validate_event(e, &Limits::default(), SystemTime::now())
            .unwrap_err()
            .field
    }

    #[test]
    fn a_good_event_passes() {
        assert_eq!(
            validate_event(&good(), &Limits::default(), SystemTime::now()),
            Ok(())
        );
    }

    type Mutation = Box<dyn Fn(&mut AuditEvent)>;

    #[test]
    fn each_rule_names_its_field() {
        let cases: Vec<(&str, Mutation)> = vec![
            ("event.event_id", Box::new(|e| e.event_id.clear())),
            (
                "event.event_id",
                Box::new(|e| e.event_id = "has space".into()),
            ),
            (
                "event.correlation_id",
                Box::new(|e| e.correlation_id = "4BF92F3577B34DA6A3CE929D0E0E4736".into()),
            ),
            (
                "event.correlation_id",
                Box::new(|e| e.correlation_id = "0".repeat(32)),
            ),
            (
                "event.correlation_id",
                Box::new(|e| e.correlation_id = "abc".into()),
            ),
            ("event.span_id", Box::new(|e| e.span_id = "xyz".into())),
            (
                "event.parent_span_id",
                Box::new(|e| e.parent_span_id = "0000000000000000".into()),
            ),
            ("event.agent_id", Box::new(|e| e.agent_id.clear())),
            ("event.agent_id", Box::new(|e| e.agent_id = "a\0b".into())),
            ("event.kind", Box::new(|e| e.kind = 0)),
            ("event.kind", Box::new(|e| e.kind = 99)),
            ("event.tool_name", Box::new(|e| e.tool_name.clear())),
            ("event.risk_tier", Box::new(|e| e.risk_tier = 42)),
            ("event.outcome", Box::new(|e| e.outcome = -1)),
            ("event.occurred_at", Box::new(|e| e.occurred_at = None)),
            (
                "event.occurred_at",
                Box::new(|e| e.occurred_at.as_mut().unwrap().nanos = 1_000_000_000),
            ),
            (
                "event.occurred_at",
                Box::new(|e| {
                    e.occurred_at = Some(prost_types::Timestamp {
                        seconds: 4_000_000_000,
                        nanos: 0,
                    })
                }),
            ),
            (
                "event.attributes",
                Box::new(|e| {
                    e.attributes.insert(String::new(), "v".into());
                }),
            ),
            (
                "event.attributes",
                Box::new(|e| {
                    for i in 0..65 {
                        e.attributes.insert(format!("k{i}"), "v".into());
                    }
                }),
            ),
            (
                "event.attributes[big]",
                Box::new(|e| {
                    e.attributes.insert("big".into(), "x".repeat(4097));
                }),
            ),
            (
                "event.payload",
                Box::new(|e| e.payload = vec![0; (1 << 20) + 1]),
            ),
            (
                "event.resource",
                Box::new(|e| e.resource = "r".repeat(1025)),
            ),
        ];
        for (want, mutate) in cases {
            let mut e = good();
            mutate(&mut e);
            assert_eq!(field_of(&e), want);
        }
    }
}

//! Building events: a typed builder, and the JSON form the CLI reads.

use ledger_proto::v1::{AuditEvent, EventKind, Outcome, RiskTier};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// `n` random bytes as lowercase hex (never all zero, as trace ids require).
fn random_hex(n: usize) -> String {
    loop {
        let mut b = vec![0u8; n];
        getrandom::fill(&mut b).expect("the OS random source failed");
        if b.iter().any(|&x| x != 0) {
            return hex::encode(b);
        }
    }
}

/// A fresh W3C trace id (32 lowercase hex characters).
pub fn new_trace_id() -> String {
    random_hex(16)
}

/// A fresh W3C span id (16 lowercase hex characters).
pub fn new_span_id() -> String {
    random_hex(8)
}

/// A fresh event id (128 random bits, hex). Keep it to retry an append: the
/// server answers a repeated id with the original ack and writes nothing.
pub fn new_event_id() -> String {
    random_hex(16)
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Builder for an [`AuditEvent`]. Ids and the time default to fresh values.
///
/// ```
/// use ledger_client::{Event, EventKind, RiskTier};
/// let call = Event::new(EventKind::ToolCall, "billing-agent")
///     .tool("sql.execute")
///     .action("DELETE")
///     .resource("db://prod/customers")
///     .risk(RiskTier::High)
///     .attribute("rows", "1200")
///     .payload_json(&serde_json::json!({"query": "DELETE FROM customers"}))
///     .build();
/// assert_eq!(call.correlation_id.len(), 32);
/// // The result of the same call shares the trace, as a child span.
/// let result = Event::new(EventKind::ToolResult, "billing-agent")
///     .tool("sql.execute")
///     .child_of(&call)
///     .build();
/// assert_eq!(result.correlation_id, call.correlation_id);
/// assert_eq!(result.parent_span_id, call.span_id);
/// ```
#[derive(Debug, Clone)]
pub struct Event {
    e: AuditEvent,
}

impl Event {
    pub fn new(kind: EventKind, agent_id: impl Into<String>) -> Event {
        Event {
            e: AuditEvent {
                event_id: new_event_id(),
                correlation_id: new_trace_id(),
                span_id: new_span_id(),
                agent_id: agent_id.into(),
                kind: kind as i32,
                occurred_at: Some(timestamp(SystemTime::now())),
                ..Default::default()
            },
        }
    }

    pub fn event_id(mut self, id: impl Into<String>) -> Event {
        self.e.event_id = id.into();
        self
    }
    /// The W3C trace id that ties the events of one task together.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Event {
        self.e.correlation_id = id.into();
        self
    }
    pub fn span(mut self, span_id: impl Into<String>) -> Event {
        self.e.span_id = span_id.into();
        self
    }
    pub fn parent_span(mut self, span_id: impl Into<String>) -> Event {
        self.e.parent_span_id = span_id.into();
        self
    }
    /// Same trace as `parent`, in a new span whose parent is `parent`'s span.
    pub fn child_of(mut self, parent: &AuditEvent) -> Event {
        self.e.correlation_id = parent.correlation_id.clone();
        self.e.parent_span_id = parent.span_id.clone();
        self
    }
    pub fn session(mut self, id: impl Into<String>) -> Event {
        self.e.session_id = id.into();
        self
    }
    pub fn principal(mut self, p: impl Into<String>) -> Event {
        self.e.principal = p.into();
        self
    }
    pub fn tool(mut self, name: impl Into<String>) -> Event {
        self.e.tool_name = name.into();
        self
    }
    pub fn action(mut self, a: impl Into<String>) -> Event {
        self.e.action = a.into();
        self
    }
    pub fn resource(mut self, r: impl Into<String>) -> Event {
        self.e.resource = r.into();
        self
    }
    pub fn risk(mut self, tier: RiskTier) -> Event {
        self.e.risk_tier = tier as i32;
        self
    }
    pub fn outcome(mut self, o: Outcome) -> Event {
        self.e.outcome = o as i32;
        self
    }
    pub fn occurred_at(mut self, t: SystemTime) -> Event {
        self.e.occurred_at = Some(timestamp(t));
        self
    }
    pub fn attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Event {
        self.e.attributes.insert(key.into(), value.into());
        self
    }
    pub fn payload(mut self, content_type: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Event {
        self.e.payload = bytes.into();
        self.e.payload_content_type = content_type.into();
        self
    }
    pub fn payload_json(self, value: &serde_json::Value) -> Event {
        let bytes = serde_json::to_vec(value).expect("a JSON value always serialises");
        self.payload("application/json", bytes)
    }
    pub fn build(self) -> AuditEvent {
        self.e
    }
}

/// Lower-case snake names of the enums, as the CLI and JSON use them.
pub fn kind_name(k: i32) -> String {
    EventKind::try_from(k)
        .map(|k| {
            k.as_str_name()
                .trim_start_matches("EVENT_KIND_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| format!("kind_{k}"))
}
pub fn risk_name(r: i32) -> String {
    RiskTier::try_from(r)
        .map(|r| {
            r.as_str_name()
                .trim_start_matches("RISK_TIER_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| format!("risk_{r}"))
}
pub fn outcome_name(o: i32) -> String {
    Outcome::try_from(o)
        .map(|o| {
            o.as_str_name()
                .trim_start_matches("OUTCOME_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| format!("outcome_{o}"))
}

/// Parses `tool_call`, `TOOL_CALL` or `EVENT_KIND_TOOL_CALL`.
pub fn parse_kind(s: &str) -> Option<EventKind> {
    let up = s.to_ascii_uppercase();
    EventKind::from_str_name(&up).or_else(|| EventKind::from_str_name(&format!("EVENT_KIND_{up}")))
}
pub fn parse_risk(s: &str) -> Option<RiskTier> {
    let up = s.to_ascii_uppercase();
    RiskTier::from_str_name(&up).or_else(|| RiskTier::from_str_name(&format!("RISK_TIER_{up}")))
}
pub fn parse_outcome(s: &str) -> Option<Outcome> {
    let up = s.to_ascii_uppercase();
    Outcome::from_str_name(&up).or_else(|| Outcome::from_str_name(&format!("OUTCOME_{up}")))
}

/// One event as a JSON object, the form `ledger append` reads (one per line)
/// and the read commands print with `--json`. Missing ids are generated.
///
/// ```json
/// {"kind":"tool_call","agent_id":"billing-agent","tool_name":"sql.execute",
///  "risk_tier":"high","payload":{"query":"DELETE FROM customers"}}
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventJson {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub event_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub correlation_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub span_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub parent_span_id: String,
    pub agent_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub session_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub principal: String,
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tool_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub action: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub risk_tier: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub outcome: String,
    /// RFC 3339; now when absent.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub occurred_at: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// A JSON payload (stored as application/json) …
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    /// … or a text payload with its own content type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_text: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub payload_content_type: String,
}

/// Why a JSON event could not be turned into an [`AuditEvent`].
#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct JsonEventError {
    pub field: &'static str,
    pub reason: String,
}

impl EventJson {
    pub fn into_event(self) -> Result<AuditEvent, JsonEventError> {
        let bad = |field: &'static str, reason: String| JsonEventError { field, reason };
        let kind = parse_kind(&self.kind)
            .ok_or_else(|| bad("kind", format!("unknown kind {:?}", self.kind)))?;
        let mut b = Event::new(kind, self.agent_id)
            .session(self.session_id)
            .principal(self.principal)
            .tool(self.tool_name)
            .action(self.action)
            .resource(self.resource);
        if !self.event_id.is_empty() {
            b = b.event_id(self.event_id);
        }
        if !self.correlation_id.is_empty() {
            b = b.correlation_id(self.correlation_id);
        }
        if !self.span_id.is_empty() {
            b = b.span(self.span_id);
        }
        b = b.parent_span(self.parent_span_id);
        if !self.risk_tier.is_empty() {
            let r = parse_risk(&self.risk_tier)
                .ok_or_else(|| bad("risk_tier", format!("unknown tier {:?}", self.risk_tier)))?;
            b = b.risk(r);
        }
        if !self.outcome.is_empty() {
            let o = parse_outcome(&self.outcome)
                .ok_or_else(|| bad("outcome", format!("unknown outcome {:?}", self.outcome)))?;
            b = b.outcome(o);
        }
        if !self.occurred_at.is_empty() {
            let t = chrono::DateTime::parse_from_rfc3339(&self.occurred_at)
                .map_err(|e| bad("occurred_at", format!("not RFC 3339: {e}")))?;
            b = b.occurred_at(t.into());
        }
        for (k, v) in self.attributes {
            b = b.attribute(k, v);
        }
        match (self.payload, self.payload_text) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "payload",
                    "give either payload or payload_text, not both".into(),
                ));
            }
            (Some(v), None) => {
                b = b.payload_json(&v);
                if !self.payload_content_type.is_empty() {
                    b.e.payload_content_type = self.payload_content_type;
                }
            }
            (None, Some(t)) => {
                let ct = if self.payload_content_type.is_empty() {
                    "text/plain; charset=utf-8".to_string()
                } else {
                    self.payload_content_type
                };
                b = b.payload(ct, t.into_bytes());
            }
            (None, None) => {}
        }
        Ok(b.build())
    }

    /// The JSON form of a stored event (payload as JSON when it is JSON).
    pub fn from_event(e: &AuditEvent) -> EventJson {
        let (payload, payload_text) = if e.payload.is_empty() {
            (None, None)
        } else if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&e.payload) {
            (Some(v), None)
        } else {
            (None, Some(String::from_utf8_lossy(&e.payload).into_owned()))
        };
        let occurred_at = e
            .occurred_at
            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            .unwrap_or_default();
        let opt = |n: String, unspecified: bool| if unspecified { String::new() } else { n };
        EventJson {
            event_id: e.event_id.clone(),
            correlation_id: e.correlation_id.clone(),
            span_id: e.span_id.clone(),
            parent_span_id: e.parent_span_id.clone(),
            agent_id: e.agent_id.clone(),
            session_id: e.session_id.clone(),
            principal: e.principal.clone(),
            kind: kind_name(e.kind),
            tool_name: e.tool_name.clone(),
            action: e.action.clone(),
            resource: e.resource.clone(),
            risk_tier: opt(risk_name(e.risk_tier), e.risk_tier == 0),
            outcome: opt(outcome_name(e.outcome), e.outcome == 0),
            occurred_at,
            attributes: e.attributes.clone().into_iter().collect(),
            payload,
            payload_text,
            payload_content_type: e.payload_content_type.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_names_round_trip() {
        assert_eq!(parse_kind("tool_call"), Some(EventKind::ToolCall));
        assert_eq!(
            parse_kind("EVENT_KIND_KILL_SWITCH"),
            Some(EventKind::KillSwitch)
        );
        assert_eq!(
            kind_name(EventKind::ApprovalDenied as i32),
            "approval_denied"
        );
        assert_eq!(parse_risk("high"), Some(RiskTier::High));
        assert_eq!(
            parse_outcome("denied").map(|o| o as i32),
            parse_outcome("OUTCOME_DENIED").map(|o| o as i32)
        );
        assert_eq!(parse_kind("nonsense"), None);
    }

    #[test]
    fn json_round_trip_keeps_every_field() {
        let line = r#"{"event_id":"e-1","correlation_id":"4bf92f3577b34da6a3ce929d0e0e4736",
            "span_id":"00f067aa0ba902b7","agent_id":"a","kind":"tool_call","tool_name":"t",
            "risk_tier":"high","outcome":"success","occurred_at":"2026-11-24T08:00:00Z",
            "attributes":{"x":"1"},"payload":{"q":1}}"#;
        let j: EventJson = serde_json::from_str(line).unwrap();
        let e = j.into_event().unwrap();
        assert_eq!(e.event_id, "e-1");
        assert_eq!(e.risk_tier, RiskTier::High as i32);
        assert_eq!(e.occurred_at.unwrap().seconds, 1_795_507_200);
        assert_eq!(e.payload, br#"{"q":1}"#);
        let back = EventJson::from_event(&e);
        assert_eq!(back.occurred_at, "2026-11-24T08:00:00Z");
        assert_eq!(back.into_event().unwrap(), e);
    }

    #[test]
    fn json_errors_name_the_field() {
        let j: EventJson = serde_json::from_str(r#"{"agent_id":"a","kind":"nope"}"#).unwrap();
        assert_eq!(j.into_event().unwrap_err().field, "kind");
        let j: EventJson =
            serde_json::from_str(r#"{"agent_id":"a","kind":"decision","risk_tier":"x"}"#).unwrap();
        assert_eq!(j.into_event().unwrap_err().field, "risk_tier");
        assert!(serde_json::from_str::<EventJson>(r#"{"agnet_id":"a"}"#).is_err());
    }
}

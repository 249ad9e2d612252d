//! Text rendering for people: a trace as an indented span tree, and one-line
//! event summaries. Colour only when asked (the CLI asks on a terminal).

use crate::event::{kind_name, outcome_name, risk_name};
use crate::read::{Record, Timeline};
use ledger_proto::v1::{Outcome, RiskTier};
use std::collections::HashMap;
use std::fmt::Write;

struct Paint(bool);

impl Paint {
    fn wrap(&self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn dim(&self, s: &str) -> String {
        self.wrap("2", s)
    }
    fn bold(&self, s: &str) -> String {
        self.wrap("1", s)
    }
    fn risk(&self, r: i32) -> String {
        let name = risk_name(r).to_uppercase();
        match RiskTier::try_from(r) {
            Ok(RiskTier::High) => self.wrap("1;31", &name),
            Ok(RiskTier::Medium) => self.wrap("33", &name),
            Ok(RiskTier::Low) => self.wrap("32", &name),
            _ => String::new(),
        }
    }
    fn outcome(&self, o: i32) -> String {
        let name = outcome_name(o);
        match Outcome::try_from(o) {
            Ok(Outcome::Success) => self.wrap("32", &name),
            Ok(Outcome::Failure | Outcome::Denied | Outcome::Error) => self.wrap("31", &name),
            _ => String::new(),
        }
    }
}

fn nanos(r: &Record) -> i128 {
    r.event()
        .and_then(|e| e.occurred_at)
        .map(|t| t.seconds as i128 * 1_000_000_000 + t.nanos as i128)
        .unwrap_or(0)
}

fn clock(ns: i128) -> String {
    let secs = ns.div_euclid(1_000_000_000) as i64;
    let sub = ns.rem_euclid(1_000_000_000) as u32;
    chrono::DateTime::from_timestamp(secs, sub)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_default()
}

fn duration(ns: i128) -> String {
    let ms = ns as f64 / 1e6;
    if ms.abs() < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// One line describing an event (without time or index).
pub fn describe(r: &Record, color: bool) -> String {
    let p = Paint(color);
    let Some(e) = r.event() else {
        return p.dim("(redaction entry)");
    };
    let mut parts = vec![format!("{:<18}", kind_name(e.kind)), p.bold(&e.agent_id)];
    for s in [&e.tool_name, &e.action, &e.resource] {
        if !s.is_empty() {
            parts.push(s.clone());
        }
    }
    let risk = p.risk(e.risk_tier);
    if !risk.is_empty() {
        parts.push(risk);
    }
    let outcome = p.outcome(e.outcome);
    if !outcome.is_empty() {
        parts.push(outcome);
    }
    if !e.principal.is_empty() {
        parts.push(p.dim(&format!("by {}", e.principal)));
    }
    if r.payload_redacted {
        parts.push(p.dim("[payload redacted]"));
    }
    parts.join("  ")
}

/// One line per event for listings: index, time, description.
pub fn event_line(r: &Record, color: bool) -> String {
    let p = Paint(color);
    format!(
        "{}  {}  {}",
        p.dim(&format!("#{:<8}", r.index)),
        clock(nanos(r)),
        describe(r, color)
    )
}

/// A trace as an indented span tree: each span with its duration, each
/// event with its time, offset from the start of the trace, kind, agent,
/// tool, risk tier and outcome.
pub fn timeline(t: &Timeline, correlation_id: &str, color: bool) -> String {
    let p = Paint(color);
    let mut out = String::new();
    let by_index: HashMap<u64, &Record> = t.records.iter().map(|r| (r.index, r)).collect();
    let start = t.records.iter().map(nanos).min().unwrap_or(0);
    let end = t.records.iter().map(nanos).max().unwrap_or(0);
    let proved = t.records.iter().filter(|r| r.proved).count();
    let _ = writeln!(
        out,
        "{} {}  {} events, {} spans, {}",
        p.bold("trace"),
        correlation_id,
        t.records.len(),
        t.spans.len(),
        duration(end - start)
    );
    if let Some(cp) = &t.checkpoint {
        let proofs = if proved > 0 {
            format!(", {proved} inclusion proofs verified")
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{}",
            p.dim(&format!(
                "as of signed checkpoint {} size {} (signature verified{proofs})",
                cp.checkpoint.origin, cp.checkpoint.size
            ))
        );
    }
    let spans: HashMap<&str, &ledger_proto::v1::SpanNode> =
        t.spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    // Depth-first, iteratively: (span id, prefix for its children, is last).
    let mut stack: Vec<(String, String, bool)> = t
        .roots
        .iter()
        .rev()
        .enumerate()
        .map(|(i, id)| (id.clone(), String::new(), i == 0))
        .collect();
    let mut seen = std::collections::HashSet::new();
    while let Some((id, prefix, last)) = stack.pop() {
        if !seen.insert(id.clone()) {
            continue; // A cycle in parent links: show each span once.
        }
        let Some(span) = spans.get(id.as_str()) else {
            continue;
        };
        let recs: Vec<&Record> = span
            .entry_indexes
            .iter()
            .filter_map(|i| by_index.get(i).copied())
            .collect();
        let (s0, s1) = (
            recs.iter().map(|r| nanos(r)).min().unwrap_or(0),
            recs.iter().map(|r| nanos(r)).max().unwrap_or(0),
        );
        let branch = if last { "└─ " } else { "├─ " };
        let label = if id.is_empty() {
            "(no span)"
        } else {
            id.as_str()
        };
        let _ = writeln!(
            out,
            "{prefix}{branch}{} {}  {}",
            p.bold("span"),
            label,
            p.dim(&duration(s1 - s0))
        );
        let inner = format!("{prefix}{}", if last { "   " } else { "│  " });
        for r in recs {
            let _ = writeln!(
                out,
                "{inner}{} {}  {}  {}",
                p.dim(&format!("#{}", r.index)),
                clock(nanos(r)),
                p.dim(&format!("+{:>9}", duration(nanos(r) - start))),
                describe(r, color)
            );
        }
        for (i, child) in span.child_span_ids.iter().rev().enumerate() {
            stack.push((child.clone(), inner.clone(), i == 0));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use ledger_proto::v1::{EventKind, LedgerEntry, SpanNode};

    fn rec(index: u64, e: ledger_proto::v1::AuditEvent) -> Record {
        Record {
            index,
            entry: LedgerEntry {
                index,
                event: Some(e),
                ..Default::default()
            },
            leaf_hash: ledger_verify::Hash::ZERO,
            payload: None,
            payload_redacted: false,
            proved: false,
        }
    }

    #[test]
    fn a_trace_draws_as_an_indented_tree() {
        let t0 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_507_200);
        let call = Event::new(EventKind::ToolCall, "billing-agent")
            .tool("sql.execute")
            .risk(RiskTier::High)
            .span("00000000000000a1")
            .occurred_at(t0)
            .build();
        let result = Event::new(EventKind::ToolResult, "billing-agent")
            .tool("sql.execute")
            .outcome(Outcome::Success)
            .child_of(&call)
            .span("00000000000000b2")
            .occurred_at(t0 + std::time::Duration::from_millis(120))
            .build();
        let t = Timeline {
            records: vec![rec(4, call), rec(9, result)],
            spans: vec![
                SpanNode {
                    span_id: "00000000000000a1".into(),
                    entry_indexes: vec![4],
                    child_span_ids: vec!["00000000000000b2".into()],
                    ..Default::default()
                },
                SpanNode {
                    span_id: "00000000000000b2".into(),
                    parent_span_id: "00000000000000a1".into(),
                    entry_indexes: vec![9],
                    ..Default::default()
                },
            ],
            roots: vec!["00000000000000a1".into()],
            checkpoint: None,
        };
        let text = timeline(&t, "abc", false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "trace abc  2 events, 2 spans, 120 ms");
        assert!(lines[1].starts_with("└─ span 00000000000000a1"), "{text}");
        assert!(
            lines[2].starts_with("   #4 2026-11-24 08:00:00.000  +     0 ms  tool_call"),
            "{text}"
        );
        assert!(lines[2].contains("HIGH"), "{text}");
        assert!(
            lines[3].starts_with("   └─ span 00000000000000b2"),
            "{text}"
        );
        assert!(
            lines[4].contains("+   120 ms  tool_result") && lines[4].contains("success"),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "no colour when not asked");
        assert!(timeline(&t, "abc", true).contains("\x1b[1;31mHIGH"));
    }
}

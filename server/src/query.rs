//! Queries over a log's stored entries and the indexes written at ingest:
//! filters, the plan that picks the driving index, pages with stable
//! cursors, and trace timelines with their span trees.
//!
//! Every listing is a view of the log at one tree size (a snapshot covered by
//! a signed checkpoint): entries appended meanwhile never shift a page, so
//! paging has no gaps and no repeats, and every result can be proved against
//! that checkpoint.

use crate::store::{self, IndexScan, Store, StoreError, cf};
use crate::validate::occurred_nanos;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ledger_proto::v1::{EventFilter, EventKind, LedgerEntry, Outcome, RiskTier, SpanNode};
use ledger_verify::entry::decode_entry;
use std::collections::BTreeMap;

/// Results per page when the caller does not say.
pub const DEFAULT_PAGE: usize = 100;
/// Most results per page.
pub const MAX_PAGE: usize = 1000;
/// Index keys examined per page before a partial page is returned with a
/// cursor, so a needle-in-a-haystack filter cannot pin a server thread.
pub const SCAN_BUDGET: usize = 200_000;
/// Most entries in one timeline answer.
pub const MAX_TIMELINE: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A request field is malformed: (field path, reason).
    #[error("{0}: {1}")]
    Invalid(&'static str, String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored entry {0} does not decode")]
    Corrupt(u64),
    #[error("trace has more than {MAX_TIMELINE} events; page through it with ListEvents")]
    TooLarge,
}

/// A compiled [`EventFilter`]: the conditions every result meets.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    correlation: Option<[u8; 16]>,
    agent: Option<String>,
    principal: Option<String>,
    tool: Option<String>,
    kinds: Vec<i32>,
    risks: Vec<i32>,
    outcomes: Vec<i32>,
    from_ns: Option<u64>,
    to_ns: Option<u64>,
}

fn ts_nanos(field: &'static str, t: &prost_types::Timestamp) -> Result<u64, QueryError> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(QueryError::Invalid(
            field,
            format!("nanos is {}, must be 0 to 999999999", t.nanos),
        ));
    }
    if t.seconds < 0 {
        return Err(QueryError::Invalid(
            field,
            format!("seconds is {}, must be a time after 1970-01-01", t.seconds),
        ));
    }
    Ok(t.seconds as u64 * 1_000_000_000 + t.nanos as u64)
}

/// Longest agent id, principal or tool name an event may carry (the
/// ingest limits), so the longest a filter on them can usefully be.
const MAX_FILTER_TEXT: usize = 256;

/// Every value of a repeated enum filter must be one the API defines.
fn check_enums(
    field: &'static str,
    values: &[i32],
    known: impl Fn(i32) -> bool,
) -> Result<(), QueryError> {
    match values.iter().position(|&v| !known(v)) {
        None => Ok(()),
        Some(i) => Err(QueryError::Invalid(
            field,
            format!(
                "value {} at position {i} is not one the API defines (see ledger.proto)",
                values[i]
            ),
        )),
    }
}

impl Filter {
    pub fn from_proto(f: Option<&EventFilter>) -> Result<Filter, QueryError> {
        let Some(f) = f else {
            return Ok(Filter::default());
        };
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        // Values no event can have are refused, not matched against nothing.
        for (field, value) in [
            ("filter.agent_id", &f.agent_id),
            ("filter.principal", &f.principal),
            ("filter.tool_name", &f.tool_name),
        ] {
            if value.len() > MAX_FILTER_TEXT {
                return Err(QueryError::Invalid(
                    field,
                    format!(
                        "{} bytes; events hold at most {MAX_FILTER_TEXT}, so nothing could match",
                        value.len()
                    ),
                ));
            }
        }
        check_enums("filter.kinds", &f.kinds, |v| {
            EventKind::try_from(v).is_ok_and(|k| k != EventKind::Unspecified)
        })?;
        check_enums("filter.risk_tiers", &f.risk_tiers, |v| {
            RiskTier::try_from(v).is_ok()
        })?;
        check_enums("filter.outcomes", &f.outcomes, |v| {
            Outcome::try_from(v).is_ok()
        })?;
        let correlation = if f.correlation_id.is_empty() {
            None
        } else {
            Some(parse_trace_id("filter.correlation_id", &f.correlation_id)?)
        };
        let from_ns = f
            .occurred_from
            .as_ref()
            .map(|t| ts_nanos("filter.occurred_from", t))
            .transpose()?;
        let to_ns = f
            .occurred_to
            .as_ref()
            .map(|t| ts_nanos("filter.occurred_to", t))
            .transpose()?;
        if let (Some(a), Some(b)) = (from_ns, to_ns)
            && a > b
        {
            return Err(QueryError::Invalid(
                "filter.occurred_to",
                "is before occurred_from".into(),
            ));
        }
        Ok(Filter {
            correlation,
            agent: non_empty(&f.agent_id),
            principal: non_empty(&f.principal),
            tool: non_empty(&f.tool_name),
            kinds: f.kinds.clone(),
            risks: f.risk_tiers.clone(),
            outcomes: f.outcomes.clone(),
            from_ns,
            to_ns,
        })
    }

    /// A filter for one trace.
    pub fn trace(correlation: [u8; 16]) -> Filter {
        Filter {
            correlation: Some(correlation),
            ..Filter::default()
        }
    }

    pub fn matches(&self, entry: &LedgerEntry) -> bool {
        let Some(e) = entry.event.as_ref() else {
            // Redaction entries carry no event; only an unfiltered view shows them.
            return self.is_empty();
        };
        let eq = |want: &Option<String>, got: &str| want.as_deref().is_none_or(|w| w == got);
        let any = |want: &[i32], got: i32| want.is_empty() || want.contains(&got);
        let t = occurred_nanos(e);
        self.correlation
            .is_none_or(|c| hex::encode(c) == e.correlation_id)
            && eq(&self.agent, &e.agent_id)
            && eq(&self.principal, &e.principal)
            && eq(&self.tool, &e.tool_name)
            && any(&self.kinds, e.kind)
            && any(&self.risks, e.risk_tier)
            && any(&self.outcomes, e.outcome)
            && self.from_ns.is_none_or(|f| t >= f)
            && self.to_ns.is_none_or(|to| t < to)
    }

    fn is_empty(&self) -> bool {
        self.correlation.is_none()
            && self.agent.is_none()
            && self.principal.is_none()
            && self.tool.is_none()
            && self.kinds.is_empty()
            && self.risks.is_empty()
            && self.outcomes.is_empty()
            && self.from_ns.is_none()
            && self.to_ns.is_none()
    }

    /// The index to walk: the most selective one the filter allows (keys
    /// and ranges are the store's: [`store::IndexScan`]).
    fn plan(&self, snapshot: u64) -> Plan {
        let scan = if let Some(c) = &self.correlation {
            IndexScan::Correlation(c)
        } else if let Some(a) = &self.agent {
            IndexScan::Agent(a)
        } else if let Some(p) = &self.principal {
            IndexScan::Principal(p)
        } else if let Some(t) = &self.tool {
            IndexScan::Tool(t)
        } else if self.from_ns.is_some() || self.to_ns.is_some() {
            IndexScan::Time {
                from: self.from_ns.unwrap_or(0),
                to: self.to_ns.unwrap_or(u64::MAX),
            }
        } else {
            IndexScan::Entries { below: snapshot }
        };
        let (cf, lower, upper) = scan.bounds();
        let mut plan = Plan {
            id: 0,
            cf,
            lower,
            upper,
        };
        plan.id = PLANS
            .iter()
            .position(|c| *c == plan.cf)
            .expect("plans are listed") as u8;
        plan
    }
}

/// Column families a cursor may point into; a cursor names one by position.
const PLANS: [&str; 6] = [
    cf::BY_CORRELATION,
    cf::BY_AGENT,
    cf::BY_PRINCIPAL,
    cf::BY_TOOL,
    cf::BY_TIME,
    cf::ENTRIES,
];

struct Plan {
    id: u8,
    cf: &'static str,
    lower: Vec<u8>,
    upper: Vec<u8>,
}

/// `32 lowercase hex` → 16 bytes.
pub fn parse_trace_id(field: &'static str, s: &str) -> Result<[u8; 16], QueryError> {
    let bad = || {
        QueryError::Invalid(
            field,
            "must be a W3C trace id: 32 lowercase hex characters".into(),
        )
    };
    if s.len() != 32 || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(bad());
    }
    let v = hex::decode(s).map_err(|_| bad())?;
    v.try_into().map_err(|_| bad())
}

/// Where a listing stands: the snapshot it views and the last index key it
/// examined. Opaque to clients (URL-safe base64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub snapshot: u64,
    plan: u8,
    descending: bool,
    last_key: Vec<u8>,
}

impl Cursor {
    pub fn to_token(&self) -> String {
        let mut b = vec![1u8, self.plan, self.descending as u8];
        b.extend_from_slice(&self.snapshot.to_be_bytes());
        b.extend_from_slice(&self.last_key);
        B64.encode(b)
    }

    pub fn from_token(token: &str) -> Result<Cursor, QueryError> {
        let bad = || {
            QueryError::Invalid(
                "page_token",
                "not a token this server issued (pass next_page_token back unchanged)".into(),
            )
        };
        let b = B64.decode(token).map_err(|_| bad())?;
        if b.len() < 11 || b[0] != 1 || b[1] as usize >= PLANS.len() || b[2] > 1 {
            return Err(bad());
        }
        Ok(Cursor {
            plan: b[1],
            descending: b[2] == 1,
            snapshot: u64::from_be_bytes(b[3..11].try_into().map_err(|_| bad())?),
            last_key: b[11..].to_vec(),
        })
    }
}

/// One result: index and stored entry bytes (decoded alongside).
pub struct Hit {
    pub index: u64,
    pub bytes: Vec<u8>,
    pub entry: LedgerEntry,
}

pub struct Page {
    pub hits: Vec<Hit>,
    /// Where to resume; None when the listing is complete.
    pub next: Option<Cursor>,
}

/// One page of entries matching `filter` in the log as of `snapshot` (a tree
/// size), resuming after `cursor`. `limit` is clipped to [1, MAX_PAGE].
pub fn list(
    store: &Store,
    filter: &Filter,
    snapshot: u64,
    cursor: Option<&Cursor>,
    descending: bool,
    limit: usize,
) -> Result<Page, QueryError> {
    let (snapshot, after) = match cursor {
        Some(c) => {
            if c.descending != descending {
                return Err(QueryError::Invalid(
                    "page_token",
                    "was issued for a different filter or order".into(),
                ));
            }
            (c.snapshot, Some(c.last_key.as_slice()))
        }
        None => (snapshot, None),
    };
    let plan = filter.plan(snapshot);
    if cursor.is_some_and(|c| c.plan != plan.id) {
        return Err(QueryError::Invalid(
            "page_token",
            "was issued for a different filter or order".into(),
        ));
    }
    let limit = limit.clamp(1, MAX_PAGE);
    let mut hits = Vec::new();
    let mut examined = 0usize;
    let mut last_key: Option<Vec<u8>> = None;
    let mut exhausted = true;
    let mut pending: Vec<(Vec<u8>, u64, Option<Vec<u8>>)> = Vec::new();
    let mut it = store.scan(plan.cf, &plan.lower, &plan.upper, after, descending);
    'scan: loop {
        // Gather a chunk of candidate keys, then fetch their entries at once.
        pending.clear();
        for kv in it.by_ref() {
            let (k, v) = kv?;
            examined += 1;
            let index = store::index_of_key(&k).unwrap_or(u64::MAX);
            if index < snapshot {
                let value = (plan.cf == cf::ENTRIES).then(|| v.to_vec());
                pending.push((k.to_vec(), index, value));
            } else {
                last_key = Some(k.to_vec());
            }
            if pending.len() >= 256 || examined >= SCAN_BUDGET {
                break;
            }
        }
        if pending.is_empty() {
            if examined >= SCAN_BUDGET {
                exhausted = false;
            }
            break;
        }
        let missing: Vec<u64> = pending
            .iter()
            .filter(|p| p.2.is_none())
            .map(|p| p.1)
            .collect();
        let mut fetched = store.entries(&missing)?.into_iter();
        for (key, index, value) in pending.drain(..) {
            let bytes = match value {
                Some(v) => v,
                None => fetched.next().flatten().ok_or(QueryError::Corrupt(index))?,
            };
            let entry = decode_entry(&bytes).map_err(|_| QueryError::Corrupt(index))?;
            last_key = Some(key);
            if filter.matches(&entry) {
                hits.push(Hit {
                    index,
                    bytes,
                    entry,
                });
                if hits.len() >= limit {
                    exhausted = false;
                    break 'scan;
                }
            }
        }
        if examined >= SCAN_BUDGET {
            exhausted = false;
            break;
        }
    }
    // A full page may have been the last: peek so the caller is not sent
    // back for an empty page.
    if !exhausted && examined < SCAN_BUDGET && hits.len() >= limit {
        let lk = last_key.clone().unwrap_or_default();
        let more = store
            .scan(plan.cf, &plan.lower, &plan.upper, Some(&lk), descending)
            .next()
            .is_some();
        exhausted = !more;
    }
    let next = match (exhausted, last_key) {
        (false, Some(k)) => Some(Cursor {
            snapshot,
            plan: plan.id,
            descending,
            last_key: k,
        }),
        _ => None,
    };
    Ok(Page { hits, next })
}

/// Every entry of one trace in the log as of `snapshot`, in log order.
pub fn timeline(store: &Store, trace: [u8; 16], snapshot: u64) -> Result<Vec<Hit>, QueryError> {
    let filter = Filter::trace(trace);
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = list(store, &filter, snapshot, cursor.as_ref(), false, MAX_PAGE)?;
        out.extend(page.hits);
        if out.len() > MAX_TIMELINE {
            return Err(QueryError::TooLarge);
        }
        match page.next {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// The span tree of a trace: nodes in first-appearance order, and the
/// roots (spans with no parent, or whose parent is not in the trace).
pub fn span_tree(hits: &[Hit]) -> (Vec<SpanNode>, Vec<String>) {
    let mut order: Vec<String> = Vec::new();
    let mut nodes: BTreeMap<String, SpanNode> = BTreeMap::new();
    for h in hits {
        let Some(e) = h.entry.event.as_ref() else {
            continue;
        };
        let node = nodes.entry(e.span_id.clone()).or_insert_with(|| {
            order.push(e.span_id.clone());
            SpanNode {
                span_id: e.span_id.clone(),
                ..Default::default()
            }
        });
        node.entry_indexes.push(h.index);
        if node.parent_span_id.is_empty() && !e.parent_span_id.is_empty() {
            node.parent_span_id = e.parent_span_id.clone();
        }
    }
    let mut roots = Vec::new();
    for id in &order {
        let parent = nodes[id].parent_span_id.clone();
        if !parent.is_empty() && parent != *id && nodes.contains_key(&parent) {
            if let Some(p) = nodes.get_mut(&parent) {
                p.child_span_ids.push(id.clone());
            }
        } else {
            roots.push(id.clone());
        }
    }
    let spans = order.iter().filter_map(|id| nodes.remove(id)).collect();
    (spans, roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(f: EventFilter) -> Filter {
        Filter::from_proto(Some(&f)).unwrap()
    }

    #[test]
    fn a_filter_walks_its_most_selective_index() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736".to_string();
        let cases = [
            (
                EventFilter {
                    correlation_id: trace.clone(),
                    agent_id: "a".into(),
                    tool_name: "t".into(),
                    ..Default::default()
                },
                cf::BY_CORRELATION,
            ),
            (
                EventFilter {
                    agent_id: "a".into(),
                    principal: "p".into(),
                    tool_name: "t".into(),
                    ..Default::default()
                },
                cf::BY_AGENT,
            ),
            (
                EventFilter {
                    principal: "p".into(),
                    tool_name: "t".into(),
                    ..Default::default()
                },
                cf::BY_PRINCIPAL,
            ),
            (
                EventFilter {
                    tool_name: "t".into(),
                    kinds: vec![1],
                    ..Default::default()
                },
                cf::BY_TOOL,
            ),
            (
                EventFilter {
                    occurred_to: Some(prost_types::Timestamp {
                        seconds: 5,
                        nanos: 0,
                    }),
                    risk_tiers: vec![3],
                    ..Default::default()
                },
                cf::BY_TIME,
            ),
            (
                EventFilter {
                    kinds: vec![2],
                    outcomes: vec![1],
                    ..Default::default()
                },
                cf::ENTRIES,
            ),
        ];
        for (f, want) in cases {
            let plan = filter(f.clone()).plan(0);
            assert_eq!(plan.cf, want, "{f:?}");
            assert_eq!(PLANS[plan.id as usize], want);
        }
    }

    #[test]
    fn page_tokens_round_trip_and_refuse_what_the_server_did_not_issue() {
        let c = Cursor {
            snapshot: 1234,
            plan: 1,
            descending: true,
            last_key: b"agent-7\x00\x00\x00\x00\x00\x00\x00\x00\x09".to_vec(),
        };
        let back = Cursor::from_token(&c.to_token()).unwrap();
        assert_eq!(
            (back.snapshot, back.plan, back.descending, &back.last_key),
            (1234, 1, true, &c.last_key)
        );
        let mut raw = B64.decode(c.to_token()).unwrap();
        raw[1] = PLANS.len() as u8; // no such plan
        for bad in [
            "".to_string(),
            "%%%".to_string(),
            B64.encode([1u8, 0, 0]),
            B64.encode(&raw),
            B64.encode([2u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
        ] {
            assert!(
                matches!(
                    Cursor::from_token(&bad),
                    Err(QueryError::Invalid("page_token", _))
                ),
                "{bad:?}"
            );
        }
    }
}

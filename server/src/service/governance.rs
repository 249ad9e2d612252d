//! The Governance service: approval decisions and the kill switch, written
//! by the server on behalf of approvers under reserved event ids (see the
//! proto), so a gateway can trust what it reads back.

use super::Logs;
use super::proofs::blocking;
use crate::auth::{Action, caller};
use crate::log::Log;
use ledger_proto::v1::governance_server::Governance;
use ledger_proto::v1::{
    AgentState, AuditEvent, AwaitDecisionRequest, DecideRequest, Decision, EntryRecord, EventKind,
    GetAgentStateRequest, Outcome, SetAgentStateRequest,
};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Event ids the server keeps for itself: `Append` refuses them.
pub const RESERVED: &str = "ledger:";

/// Longest wait of `AwaitDecision`.
const MAX_WAIT: Duration = Duration::from_secs(300);

pub struct GovernanceService {
    pub logs: Arc<Logs>,
}

fn hash32(s: &str) -> String {
    hex::encode(&ledger_verify::hash::sha256(&[s.as_bytes()]).as_bytes()[..16])
}

/// The event id of the decision on request `id`.
pub fn decision_id(request_event_id: &str) -> String {
    format!("{RESERVED}decision:{}", hash32(request_event_id))
}

/// The event id of the `n`-th state change of `agent`.
pub fn agent_state_id(agent: &str, n: u64) -> String {
    format!("{RESERVED}agent-state:{}:{n}", hash32(agent))
}

/// The stored entry under a dedup id, if any.
async fn entry_of(log: &Arc<Log>, event_id: String) -> Result<Option<EntryRecord>, Status> {
    let log = log.clone();
    blocking(move || {
        let storage = |e: crate::store::StoreError| Status::unavailable(e.to_string());
        let Some(index) = log.store.dedup(&event_id).map_err(storage)? else {
            return Ok(None);
        };
        let bytes = log
            .store
            .entry(index)
            .map_err(storage)?
            .ok_or_else(|| Status::data_loss(format!("entry {index} is missing")))?;
        Ok(Some(EntryRecord {
            index,
            leaf_hash: ledger_verify::leaf_hash(&bytes).to_vec(),
            entry: bytes,
            ..Default::default()
        }))
    })
    .await
}

fn event_of(r: &EntryRecord) -> Result<AuditEvent, Status> {
    ledger_verify::entry::decode_entry(&r.entry)
        .map_err(|e| Status::data_loss(e.to_string()))?
        .event
        .ok_or_else(|| Status::data_loss(format!("entry {} holds no event", r.index)))
}

fn decision_of(r: Option<EntryRecord>) -> Result<Decision, Status> {
    Ok(match r {
        None => Decision::default(),
        Some(r) => Decision {
            decided: true,
            granted: event_of(&r)?.kind == EventKind::ApprovalGranted as i32,
            entry: Some(r),
        },
    })
}

fn reason_ok(reason: &str) -> Result<(), Status> {
    if reason.trim().is_empty() || reason.len() > 1024 {
        return Err(Status::invalid_argument(
            "reason: required, 1 to 1024 bytes (it is kept in the entry)",
        ));
    }
    Ok(())
}

fn now() -> prost_types::Timestamp {
    std::time::SystemTime::now().into()
}

/// Appends a server-written event as `writer` and waits for it.
async fn append(log: &Arc<Log>, event: AuditEvent, writer: String) -> Result<u64, Status> {
    let rx = log.submit(Some(event), writer).map_err(|r| r.to_status())?;
    let ack = Log::await_ack(rx).await.map_err(|r| r.to_status())?;
    let ack = log.settle(ack).await.map_err(|r| r.to_status())?;
    Ok(ack.index)
}

/// The state of `agent`: the number of changes (found by doubling, then
/// bisecting, over the deterministic ids) and the latest.
async fn agent_state(log: &Arc<Log>, agent: &str) -> Result<AgentState, Status> {
    let exists = |n: u64| {
        let (log, id) = (log.clone(), agent_state_id(agent, n));
        async move {
            blocking(move || {
                log.store
                    .dedup(&id)
                    .map(|i| i.is_some())
                    .map_err(|e| Status::unavailable(e.to_string()))
            })
            .await
        }
    };
    let (mut lo, mut hi) = (0u64, 1u64);
    while exists(hi).await? {
        lo = hi;
        hi *= 2;
    }
    // Changes 1..=lo exist, hi does not.
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if exists(mid).await? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let mut state = AgentState {
        agent_id: agent.to_string(),
        changes: lo,
        ..Default::default()
    };
    if lo > 0 {
        let r = entry_of(log, agent_state_id(agent, lo))
            .await?
            .ok_or_else(|| Status::data_loss("an agent state vanished"))?;
        state.killed = event_of(&r)?.action == "kill";
        state.entry = Some(r);
    }
    Ok(state)
}

type StateStream = Pin<Box<dyn Stream<Item = Result<AgentState, Status>> + Send>>;

#[tonic::async_trait]
impl Governance for GovernanceService {
    async fn decide(&self, req: Request<DecideRequest>) -> Result<Response<Decision>, Status> {
        let (who, req, log) = self.logs.open(req, Action::Govern, |r| &r.log)?;
        reason_ok(&req.reason)?;
        let request = entry_of(&log, req.request_event_id.clone())
            .await?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "request_event_id: no event {} in this log",
                    super::answers::quote(&req.request_event_id)
                ))
            })?;
        let asked = event_of(&request)?;
        if asked.kind != EventKind::ApprovalRequested as i32 {
            return Err(Status::failed_precondition(format!(
                "request_event_id: entry {} is not an approval request",
                request.index
            )));
        }
        let id = decision_id(&req.request_event_id);
        if let Some(existing) = entry_of(&log, id.clone()).await? {
            let d = decision_of(Some(existing))?;
            return Err(Status::already_exists(format!(
                "request {} was already {} by entry {}; the first decision stands",
                super::answers::quote(&req.request_event_id),
                if d.granted { "granted" } else { "denied" },
                d.entry.map_or(0, |e| e.index)
            )));
        }
        let event = AuditEvent {
            event_id: id.clone(),
            correlation_id: asked.correlation_id.clone(),
            span_id: hash32(&id)[..16].to_string(),
            parent_span_id: asked.span_id.clone(),
            agent_id: asked.agent_id.clone(),
            session_id: asked.session_id.clone(),
            kind: if req.grant {
                EventKind::ApprovalGranted
            } else {
                EventKind::ApprovalDenied
            } as i32,
            tool_name: asked.tool_name.clone(),
            action: if req.grant { "grant" } else { "deny" }.into(),
            risk_tier: asked.risk_tier,
            outcome: Outcome::Success as i32,
            occurred_at: Some(now()),
            attributes: [
                (
                    "approval.request_event_id".to_string(),
                    req.request_event_id.clone(),
                ),
                (
                    "approval.request_index".to_string(),
                    request.index.to_string(),
                ),
                ("reason".to_string(), req.reason.clone()),
            ]
            .into(),
            ..Default::default()
        };
        append(&log, event, who.name).await?;
        let d = decision_of(entry_of(&log, id).await?)?;
        Ok(Response::new(d))
    }

    async fn await_decision(
        &self,
        req: Request<AwaitDecisionRequest>,
    ) -> Result<Response<Decision>, Status> {
        let (_, req, log) = self.logs.open(req, Action::Observe, |r| &r.log)?;
        let wait = Duration::from_secs(req.wait_seconds.into()).min(MAX_WAIT);
        let deadline = Instant::now() + wait;
        let id = decision_id(&req.request_event_id);
        let mut committed = log.watch_committed();
        loop {
            committed.borrow_and_update();
            if let Some(r) = entry_of(&log, id.clone()).await? {
                return Ok(Response::new(decision_of(Some(r))?));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Response::new(Decision::default()));
            }
            if tokio::time::timeout(left, committed.changed())
                .await
                .is_ok_and(|r| r.is_err())
            {
                return Err(Status::unavailable("the server is shutting down"));
            }
        }
    }

    async fn set_agent_state(
        &self,
        req: Request<SetAgentStateRequest>,
    ) -> Result<Response<AgentState>, Status> {
        let (who, req, log) = self.logs.open(req, Action::Govern, |r| &r.log)?;
        reason_ok(&req.reason)?;
        if req.agent_id.is_empty() || req.agent_id.len() > 256 {
            return Err(Status::invalid_argument(
                "agent_id: required, 1 to 256 bytes",
            ));
        }
        // Changes are numbered; two approvers at once: one retries.
        for _ in 0..8 {
            let n = agent_state(&log, &req.agent_id).await?.changes + 1;
            let id = agent_state_id(&req.agent_id, n);
            let event = AuditEvent {
                event_id: id.clone(),
                correlation_id: hash32(&id),
                span_id: hash32(&format!("{id}/span"))[..16].to_string(),
                agent_id: req.agent_id.clone(),
                kind: EventKind::KillSwitch as i32,
                action: if req.killed { "kill" } else { "revive" }.into(),
                outcome: Outcome::Success as i32,
                occurred_at: Some(now()),
                attributes: [
                    ("reason".to_string(), req.reason.clone()),
                    ("agent_state.change".to_string(), n.to_string()),
                ]
                .into(),
                ..Default::default()
            };
            match append(&log, event, who.name.clone()).await {
                Ok(_) => return Ok(Response::new(agent_state(&log, &req.agent_id).await?)),
                Err(s) if s.code() == tonic::Code::AlreadyExists => continue,
                Err(s) => return Err(s),
            }
        }
        Err(Status::aborted("agent state changed concurrently; retry"))
    }

    async fn get_agent_state(
        &self,
        req: Request<GetAgentStateRequest>,
    ) -> Result<Response<AgentState>, Status> {
        let (_, req, log) = self.logs.open(req, Action::Observe, |r| &r.log)?;
        Ok(Response::new(agent_state(&log, &req.agent_id).await?))
    }

    type WatchAgentStateStream = StateStream;

    async fn watch_agent_state(
        &self,
        req: Request<GetAgentStateRequest>,
    ) -> Result<Response<StateStream>, Status> {
        let who = caller(&req)?;
        let req = req.into_inner();
        let log = self
            .logs
            .authorize(&who, Action::Observe, &req.log)?
            .clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut committed = log.watch_committed();
            let mut last: Option<u64> = None;
            loop {
                committed.borrow_and_update();
                match agent_state(&log, &req.agent_id).await {
                    Ok(s) => {
                        if last != Some(s.changes) {
                            last = Some(s.changes);
                            if tx.send(Ok(s)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
                tokio::select! {
                    r = committed.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

//! `ledger mcp`: an MCP audit gateway between an agent (the MCP client) and
//! an MCP server, over stdio. Everything passes through byte for byte except
//! `tools/call`: before forwarding, the call is appended to the ledger and
//! its durable ack awaited (fail-closed: no record, no call); a call the
//! policy marks is held until an approver's decision is in the ledger; a
//! killed agent's calls are refused; the server's answer is recorded as the
//! call's result before it goes back. See docs/mcp.md.

use crate::{Client, Error};
use anyhow::{Context, Result};
use ledger_proto::v1::{AuditEvent, EventKind, Outcome, RiskTier};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

/// `ledger mcp` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct McpArgs {
    /// The agent this gateway stands in front of (its events' agent_id).
    #[arg(long)]
    pub agent: String,
    /// On whose behalf the agent acts, if known.
    #[arg(long, default_value = "")]
    pub principal: String,
    /// Policy file (TOML): risk tiers and approvals per tool (docs/mcp.md).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Seconds a call may wait for an approval; then it is denied.
    #[arg(long, default_value_t = 300)]
    pub approval_timeout: u64,
    /// Forward calls the ledger cannot record (logged loudly on stderr; each
    /// is recorded once the ledger is back). Default: refuse them.
    #[arg(long)]
    pub fail_open: bool,
    /// Where calls forwarded unrecorded (fail-open) and results that could
    /// not be recorded wait until the ledger takes them (survives restarts;
    /// replayed at start and every half second).
    #[arg(long, default_value = ".ledger-mcp.spool")]
    pub spool: PathBuf,
    /// Streamable HTTP: listen here (e.g. 127.0.0.1:8710) for the MCP
    /// client, with --upstream; instead of a command.
    #[arg(long, requires = "upstream")]
    pub listen: Option<std::net::SocketAddr>,
    /// Streamable HTTP: the MCP server's endpoint URL (http://host:port/mcp).
    #[arg(long, requires = "listen")]
    pub upstream: Option<String>,
    /// stdio: the MCP server to start, and its arguments (after `--`).
    #[arg(last = true, num_args = 1.., required_unless_present = "upstream")]
    pub command: Vec<String>,
}

/// One tool rule of the policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolRule {
    /// Tool name pattern; `*` matches any run of characters.
    pub name: String,
    pub risk: Option<String>,
    #[serde(default)]
    pub approval: bool,
}

/// An argument rule: arguments (as JSON text) matching `argument` raise the
/// tier and may require approval.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgumentRule {
    #[serde(default = "star")]
    pub tool: String,
    pub argument: String,
    pub risk: Option<String>,
    #[serde(default)]
    pub approval: bool,
}

fn star() -> String {
    "*".into()
}

/// The gateway's policy file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub default_risk: Option<String>,
    #[serde(default)]
    pub default_approval: bool,
    #[serde(default)]
    pub tools: Vec<ToolRule>,
    #[serde(default)]
    pub rules: Vec<ArgumentRule>,
}

/// What the policy says of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub risk: RiskTier,
    pub approval: bool,
}

/// `*`-glob match.
pub fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

fn risk_of(s: &str) -> Result<RiskTier> {
    RiskTier::from_str_name(&format!("RISK_TIER_{}", s.to_ascii_uppercase()))
        .with_context(|| format!("risk {s:?}: low, medium or high"))
}

/// A policy with its argument patterns compiled.
pub struct CompiledPolicy {
    policy: Policy,
    patterns: Vec<regex::Regex>,
}

impl CompiledPolicy {
    pub fn new(policy: Policy) -> Result<CompiledPolicy> {
        let patterns = policy
            .rules
            .iter()
            .map(|r| {
                regex::Regex::new(&r.argument)
                    .with_context(|| format!("rules.argument {:?}", r.argument))
            })
            .collect::<Result<_>>()?;
        for r in policy.tools.iter().filter_map(|t| t.risk.as_deref()) {
            risk_of(r)?;
        }
        for r in policy.rules.iter().filter_map(|t| t.risk.as_deref()) {
            risk_of(r)?;
        }
        if let Some(r) = &policy.default_risk {
            risk_of(r)?;
        }
        Ok(CompiledPolicy { policy, patterns })
    }

    pub fn load(path: &std::path::Path) -> Result<CompiledPolicy> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading policy {}", path.display()))?;
        let policy: Policy =
            toml::from_str(&text).with_context(|| format!("policy {}", path.display()))?;
        CompiledPolicy::new(policy)
    }

    /// The verdict on calling `tool` with `arguments`: the first tool rule
    /// that matches (else the defaults), raised by every argument rule that
    /// matches.
    pub fn judge(&self, tool: &str, arguments: &Value) -> Verdict {
        let p = &self.policy;
        let parse = |r: &Option<String>| r.as_deref().and_then(|r| risk_of(r).ok());
        let mut v = Verdict {
            risk: parse(&p.default_risk).unwrap_or(RiskTier::Unspecified),
            approval: p.default_approval,
        };
        if let Some(t) = p.tools.iter().find(|t| glob(&t.name, tool)) {
            v.risk = parse(&t.risk).unwrap_or(v.risk);
            v.approval = t.approval;
        }
        let text = arguments.to_string();
        for (r, re) in p.rules.iter().zip(&self.patterns) {
            if glob(&r.tool, tool) && re.is_match(&text) {
                if let Some(risk) = parse(&r.risk)
                    && risk as i32 > v.risk as i32
                {
                    v.risk = risk;
                }
                v.approval |= r.approval;
            }
        }
        v
    }
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

/// A JSON-RPC error answer to request `id`.
fn refusal(id: &Value, code: i64, message: String) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}).to_string()
}

/// JSON-RPC error code of the gateway's refusals (implementation-defined
/// server error range).
pub const REFUSED: i64 = -32001;

struct Pending {
    tool: String,
    trace: String,
    call_span: String,
    risk: RiskTier,
}

struct Gateway {
    client: Client,
    args: McpArgs,
    policy: CompiledPolicy,
    session: String,
    trace: String,
    killed: Arc<AtomicBool>,
    kill_changed: tokio::sync::watch::Receiver<u64>,
    pending: Mutex<HashMap<String, Pending>>,
    to_client: Mutex<tokio::io::Stdout>,
    to_server: Mutex<Option<tokio::process::ChildStdin>>,
    /// Trace per Streamable HTTP session id.
    http_sessions: Mutex<HashMap<String, String>>,
    /// Guards the spool file of events to record when the ledger is back.
    spool: Mutex<()>,
}

impl Gateway {
    fn event(
        &self,
        kind: EventKind,
        tool: &str,
        trace: &str,
        span: &str,
        parent: &str,
    ) -> AuditEvent {
        AuditEvent {
            event_id: format!("mcp-{}-{}", self.session, random_hex(8)),
            correlation_id: trace.to_string(),
            span_id: span.to_string(),
            parent_span_id: parent.to_string(),
            agent_id: self.args.agent.clone(),
            session_id: self.session.clone(),
            principal: self.args.principal.clone(),
            kind: kind as i32,
            tool_name: tool.to_string(),
            occurred_at: Some(SystemTime::now().into()),
            ..Default::default()
        }
    }

    /// Adds an event to the spool (synced).
    async fn spool_add(&self, e: &AuditEvent) -> std::io::Result<()> {
        use base64::Engine;
        let _g = self.spool.lock().await;
        let line =
            base64::engine::general_purpose::STANDARD.encode(prost::Message::encode_to_vec(e));
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.args.spool)
            .await?;
        f.write_all(format!("{line}\n").as_bytes()).await?;
        f.sync_all().await
    }

    /// Appends what the spool holds; keeps what the ledger did not take.
    async fn spool_replay(&self) {
        use base64::Engine;
        let _g = self.spool.lock().await;
        let Ok(text) = tokio::fs::read_to_string(&self.args.spool).await else {
            return;
        };
        if text.trim().is_empty() {
            return;
        }
        let mut left = String::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let event = base64::engine::general_purpose::STANDARD
                .decode(line)
                .ok()
                .and_then(|b| <AuditEvent as prost::Message>::decode(b.as_slice()).ok());
            let Some(event) = event else { continue };
            match self.client.append(event).await {
                Ok(ack) => eprintln!("ledger mcp: recorded late: entry {}", ack.index),
                Err(_) => {
                    left.push_str(line);
                    left.push('\n');
                }
            }
        }
        let tmp = self.args.spool.with_extension("tmp");
        if tokio::fs::write(&tmp, left.as_bytes()).await.is_ok() {
            let _ = tokio::fs::rename(&tmp, &self.args.spool).await;
        }
    }

    async fn send_client(&self, line: &str) {
        let mut out = self.to_client.lock().await;
        let _ = out.write_all(line.as_bytes()).await;
        let _ = out.write_all(b"\n").await;
        let _ = out.flush().await;
    }

    async fn send_server(&self, line: &str) -> std::io::Result<()> {
        let mut guard = self.to_server.lock().await;
        let w = guard
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no MCP server process"))?;
        w.write_all(line.as_bytes()).await?;
        w.write_all(b"\n").await?;
        w.flush().await
    }

    /// The agent's kill state now, from the ledger (fresh: a kill committed
    /// before a call's own entry is always seen).
    async fn killed_now(&self) -> Result<Option<String>, Error> {
        let s = self.client.agent_state(&self.args.agent).await?;
        self.killed.store(s.killed, Ordering::SeqCst);
        Ok(s.killed.then(|| {
            let (index, reason) = s
                .entry
                .as_ref()
                .and_then(|e| {
                    ledger_verify::entry::decode_entry(&e.entry)
                        .ok()
                        .map(|d| (e.index, d))
                })
                .map(|(i, d)| {
                    (
                        i,
                        d.event
                            .and_then(|e| e.attributes.get("reason").cloned())
                            .unwrap_or_default(),
                    )
                })
                .unwrap_or_default();
            format!(
                "agent {} is stopped by a kill switch (ledger entry {index}: {reason})",
                self.args.agent
            )
        }))
    }

    /// Handles one `tools/call` request: record, judge, approve, forward.
    /// Everything before a `tools/call` may be forwarded: the kill switch,
    /// the durable record, the policy and any approval. `session` is the
    /// MCP session (its trace unless the request carries a traceparent).
    async fn admit_call(
        &self,
        msg: &Value,
        session: &str,
        session_trace: &str,
    ) -> Result<Pending, String> {
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        let tool = params
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let arguments = params.get("arguments").cloned().unwrap_or(Value::Null);
        // One MCP session is one trace, unless the request carries the
        // agent's own W3C trace context.
        let (trace, parent) = params
            .get("_meta")
            .and_then(|m| m.get("traceparent"))
            .and_then(Value::as_str)
            .and_then(parse_traceparent)
            .unwrap_or_else(|| (session_trace.to_string(), String::new()));
        let span = random_hex(8);
        let verdict = self.policy.judge(&tool, &arguments);
        if self.killed.load(Ordering::SeqCst)
            && let Ok(Some(why)) = self.killed_now().await
        {
            return Err(why);
        }
        let mut event = self.event(EventKind::ToolCall, &tool, &trace, &span, &parent);
        event.session_id = session.to_string();
        event.risk_tier = verdict.risk as i32;
        event.action = "tools/call".into();
        event.attributes = [
            ("mcp.method.name".to_string(), "tools/call".to_string()),
            ("mcp.session.id".to_string(), session.to_string()),
            ("jsonrpc.request.id".to_string(), id.to_string()),
        ]
        .into();
        event.payload = serde_json::to_vec(&json!({"arguments": arguments})).unwrap_or_default();
        event.payload_content_type = "application/json".into();
        let recorded = self.client.append(event.clone()).await;
        let was_recorded = recorded.is_ok();
        match recorded {
            Ok(_) => {}
            Err(e) if self.args.fail_open => {
                eprintln!(
                    "ledger mcp: FAIL-OPEN: forwarding {tool} (request {id}) UNRECORDED: the ledger could not record it: {e}"
                );
                event
                    .attributes
                    .insert("ledger.recorded_late".into(), "fail-open".into());
                if let Err(e) = self.spool_add(&event).await {
                    eprintln!("ledger mcp: FAIL-OPEN: and the spool cannot be written: {e}");
                }
            }
            Err(e) => {
                return Err(format!(
                    "not forwarded: the audit ledger could not record this call ({e}); the gateway is fail-closed"
                ));
            }
        }
        if was_recorded {
            // A kill committed before this call's entry stops it.
            match self.killed_now().await {
                Ok(Some(why)) => return Err(why),
                Ok(None) => {}
                Err(e) if !self.args.fail_open => {
                    return Err(format!(
                        "not forwarded: the kill-switch state could not be read ({e})"
                    ));
                }
                Err(_) => {}
            }
        }
        if verdict.approval {
            self.approve(&tool, &trace, &span, verdict.risk).await?;
        }
        Ok(Pending {
            tool,
            trace,
            call_span: span,
            risk: verdict.risk,
        })
    }

    /// Handles one `tools/call` request over stdio.
    async fn call(self: Arc<Self>, line: String, msg: Value) {
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        let pending = match self.admit_call(&msg, &self.session, &self.trace).await {
            Ok(p) => p,
            Err(why) => return self.send_client(&refusal(&id, REFUSED, why)).await,
        };
        self.pending.lock().await.insert(id.to_string(), pending);
        if let Err(e) = self.send_server(&line).await {
            self.pending.lock().await.remove(&id.to_string());
            self.send_client(&refusal(
                &id,
                REFUSED,
                format!("the MCP server is gone: {e}"),
            ))
            .await;
        }
    }

    /// Appends an approval request and waits for the decision (or a kill,
    /// or the time-out, which denies).
    async fn approve(
        &self,
        tool: &str,
        trace: &str,
        call_span: &str,
        risk: RiskTier,
    ) -> Result<(), String> {
        let mut req = self.event(
            EventKind::ApprovalRequested,
            tool,
            trace,
            &random_hex(8),
            call_span,
        );
        req.risk_tier = risk as i32;
        req.action = "approve tools/call".into();
        let request_id = req.event_id.clone();
        self.client.append(req).await.map_err(|e| {
            format!("not forwarded: the approval request could not be recorded ({e})")
        })?;
        eprintln!(
            "ledger mcp: {tool} needs approval: ledger approve {request_id} --reason … (or ledger deny {request_id} --reason …); waiting up to {} s",
            self.args.approval_timeout
        );
        let deadline = Instant::now() + Duration::from_secs(self.args.approval_timeout);
        let mut kills = self.kill_changed.clone();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let mut d = self.event(
                    EventKind::ApprovalDenied,
                    tool,
                    trace,
                    &random_hex(8),
                    call_span,
                );
                d.action = "timeout".into();
                d.attributes = [
                    ("approval.request_event_id".to_string(), request_id.clone()),
                    ("reason".to_string(), "no decision in time".to_string()),
                ]
                .into();
                let _ = self.client.append(d).await;
                return Err(format!(
                    "denied: no approval of request {request_id} within {} s",
                    self.args.approval_timeout
                ));
            }
            let wait = left.as_secs().clamp(1, 30) as u32;
            tokio::select! {
                d = self.client.await_decision(&request_id, wait) => {
                    match d {
                        Ok(d) if d.decided => {
                            let (who, reason) = d.entry.as_ref()
                                .and_then(|e| ledger_verify::entry::decode_entry(&e.entry).ok())
                                .map(|e| (e.writer, e.event.and_then(|ev| ev.attributes.get("reason").cloned()).unwrap_or_default()))
                                .unwrap_or_default();
                            if !d.granted {
                                return Err(format!("denied by {who}: {reason}"));
                            }
                            // Granted, durably: one more check of the kill switch.
                            return match self.killed_now().await {
                                Ok(Some(why)) => Err(why),
                                Ok(None) => Ok(()),
                                Err(e) => Err(format!("not forwarded: the kill-switch state could not be read ({e})")),
                            };
                        }
                        Ok(_) => {}
                        Err(e) => {
                            eprintln!("ledger mcp: waiting for a decision: {e}");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
                _ = kills.changed() => {
                    if let Ok(Some(why)) = self.killed_now().await {
                        return Err(why);
                    }
                }
            }
        }
    }

    /// Records the server's answer to a call as its result.
    async fn record_result(&self, p: Pending, msg: &Value) {
        let (outcome, payload) = if let Some(err) = msg.get("error") {
            (Outcome::Error, json!({"error": err}))
        } else {
            let result = msg.get("result").cloned().unwrap_or(Value::Null);
            let failed = result.get("isError").and_then(Value::as_bool) == Some(true);
            (
                if failed {
                    Outcome::Failure
                } else {
                    Outcome::Success
                },
                json!({"result": result}),
            )
        };
        let mut e = self.event(
            EventKind::ToolResult,
            &p.tool,
            &p.trace,
            &random_hex(8),
            &p.call_span,
        );
        e.outcome = outcome as i32;
        e.risk_tier = p.risk as i32;
        e.action = "tools/call result".into();
        e.payload = serde_json::to_vec(&payload).unwrap_or_default();
        e.payload_content_type = "application/json".into();
        if let Err(err) = self.client.append(e.clone()).await {
            eprintln!(
                "ledger mcp: the result of {} could not be recorded ({err}); it will be",
                p.tool
            );
            e.attributes
                .insert("ledger.recorded_late".into(), "result".into());
            if let Err(err) = self.spool_add(&e).await {
                eprintln!("ledger mcp: and the spool cannot be written: {err}");
            }
        }
    }

    /// Handles one line from the server: a response to a recorded call is
    /// recorded as its result before it is passed on.
    async fn from_server(self: Arc<Self>, line: String) {
        let msg: Option<Value> = serde_json::from_str(&line).ok();
        let id = msg
            .as_ref()
            .filter(|m| m.get("result").is_some() || m.get("error").is_some())
            .and_then(|m| m.get("id"))
            .map(Value::to_string);
        let pending = match id {
            Some(id) => self.pending.lock().await.remove(&id),
            None => None,
        };
        if let (Some(p), Some(msg)) = (pending, msg) {
            self.record_result(p, &msg).await;
        }
        self.send_client(&line).await;
    }
}

/// (trace id, parent span id) of a W3C `traceparent`.
fn parse_traceparent(tp: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = tp.split('-').collect();
    let ok = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
    };
    (parts.len() >= 4 && ok(parts[1], 32) && ok(parts[2], 16))
        .then(|| (parts[1].to_ascii_lowercase(), parts[2].to_ascii_lowercase()))
}

/// Runs the gateway until the client or the server goes away.
pub async fn run(client: Client, args: McpArgs) -> Result<()> {
    let policy = match &args.policy {
        Some(p) => CompiledPolicy::load(p)?,
        None => CompiledPolicy::new(Policy::default())?,
    };
    let mut child = None;
    let mut server_in = None;
    let mut server_out = None;
    if args.upstream.is_none() {
        let mut c = tokio::process::Command::new(&args.command[0])
            .args(&args.command[1..])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting the MCP server {:?}", args.command[0]))?;
        server_in = Some(c.stdin.take().context("server stdin")?);
        server_out = Some(c.stdout.take().context("server stdout")?);
        child = Some(c);
    }
    let (kill_tx, kill_rx) = tokio::sync::watch::channel(0u64);
    let gw = Arc::new(Gateway {
        client: client.clone(),
        session: random_hex(8),
        trace: random_hex(16),
        killed: Arc::new(AtomicBool::new(false)),
        kill_changed: kill_rx,
        pending: Mutex::new(HashMap::new()),
        to_client: Mutex::new(tokio::io::stdout()),
        to_server: Mutex::new(server_in),
        http_sessions: Mutex::new(HashMap::new()),
        spool: Mutex::new(()),
        policy,
        args,
    });
    // Read the agent's state before the first call; then follow it.
    if let Ok(Some(why)) = gw.killed_now().await {
        eprintln!("ledger mcp: {why}");
    }
    {
        let gw = gw.clone();
        tokio::spawn(async move {
            loop {
                let stream = gw
                    .client
                    .governance()
                    .watch_agent_state(ledger_proto::v1::GetAgentStateRequest {
                        log: String::new(),
                        agent_id: gw.args.agent.clone(),
                    })
                    .await;
                if let Ok(resp) = stream {
                    let mut s = resp.into_inner();
                    while let Ok(Some(state)) = s.message().await {
                        gw.killed.store(state.killed, Ordering::SeqCst);
                        kill_tx.send_modify(|n| *n += 1);
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
    // Record what fail-open let through, once the ledger is back.
    {
        let gw = gw.clone();
        tokio::spawn(async move {
            loop {
                gw.spool_replay().await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
    if let (Some(listen), Some(upstream)) = (gw.args.listen, gw.args.upstream.clone()) {
        return http::serve(gw, listen, upstream).await;
    }
    let server_out = server_out.context("server stdout")?;
    let from_server = {
        let gw = gw.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(server_out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                // In order: a response must not overtake what came before it.
                gw.clone().from_server(line).await;
            }
        })
    };
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let msg: Option<Value> = serde_json::from_str(&line).ok();
        let is_call = msg.as_ref().is_some_and(|m| {
            m.get("method").and_then(Value::as_str) == Some("tools/call") && m.get("id").is_some()
        });
        if is_call {
            tokio::spawn(gw.clone().call(line, msg.unwrap_or(Value::Null)));
        } else if gw.send_server(&line).await.is_err() {
            break;
        }
    }
    // The client is gone: let the server finish what it has, then stop.
    gw.to_server.lock().await.take();
    let _ = tokio::time::timeout(Duration::from_secs(5), from_server).await;
    // Give the spool a last chance (what stays is replayed next start).
    gw.spool_replay().await;
    if let Some(mut c) = child {
        let _ = c.kill().await;
    }
    Ok(())
}

/// The Streamable HTTP transport: every request is passed to the upstream
/// MCP endpoint and its answer passed back unchanged; a `tools/call` POST
/// is admitted first (record, policy, approval, kill switch) and its
/// answer (JSON, or the SSE stream holding it) recorded before it is
/// returned. One `Mcp-Session-Id` is one trace.
mod http {
    use super::*;
    use axum::body::{Body, Bytes};
    use axum::extract::State;
    use axum::http::{HeaderMap, Method, Request, Response, StatusCode, Uri, header};
    use http_body_util::BodyExt;
    use hyper_util::client::legacy::Client as HttpClient;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;

    #[derive(Clone)]
    struct Ctx {
        gw: Arc<Gateway>,
        upstream: Uri,
        http: HttpClient<HttpConnector, Body>,
    }

    fn json_answer(body: String) -> Response<Body> {
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap_or_default()
    }

    /// The JSON-RPC message answering `id` in a response body (JSON, or
    /// the `data:` lines of an SSE stream).
    fn answer_in(body: &[u8], id: &Value) -> Option<Value> {
        let text = String::from_utf8_lossy(body);
        let direct: Option<Value> = serde_json::from_str(&text).ok();
        let mut candidates: Vec<Value> = direct.into_iter().collect();
        candidates.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str(d.trim()).ok()),
        );
        candidates.into_iter().find(|m| {
            m.get("id") == Some(id) && (m.get("result").is_some() || m.get("error").is_some())
        })
    }

    async fn forward(
        ctx: &Ctx,
        method: Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response<Body>, String> {
        let mut target = ctx.upstream.clone().into_parts();
        if let Some(q) = uri.query() {
            let path = ctx.upstream.path();
            target.path_and_query = format!("{path}?{q}").parse().ok();
        }
        let target = Uri::from_parts(target).map_err(|e| e.to_string())?;
        let mut req = Request::builder().method(method).uri(target);
        for (k, v) in headers {
            if k != header::HOST && k != header::CONTENT_LENGTH {
                req = req.header(k, v);
            }
        }
        let req = req.body(Body::from(body)).map_err(|e| e.to_string())?;
        ctx.http
            .request(req)
            .await
            .map(|r| r.map(Body::new))
            .map_err(|e| format!("the MCP server cannot be reached: {e}"))
    }

    async fn handle(
        State(ctx): State<Ctx>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response<Body> {
        let msg: Option<Value> = (method == Method::POST)
            .then(|| serde_json::from_slice(&body).ok())
            .flatten();
        let call = msg.filter(|m| {
            m.get("method").and_then(Value::as_str) == Some("tools/call") && m.get("id").is_some()
        });
        let Some(call) = call else {
            // Not a tool call: passed through, streamed.
            return match forward(&ctx, method, &uri, &headers, body).await {
                Ok(r) => r,
                Err(e) => Response::builder()
                    .status(StatusCode::BAD_GATEWAY)
                    .body(Body::from(e))
                    .unwrap_or_default(),
            };
        };
        let id = call.get("id").cloned().unwrap_or(Value::Null);
        let session = headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let trace = {
            let mut s = ctx.gw.http_sessions.lock().await;
            s.entry(session.clone())
                .or_insert_with(|| random_hex(16))
                .clone()
        };
        let pending = match ctx.gw.admit_call(&call, &session, &trace).await {
            Ok(p) => p,
            Err(why) => return json_answer(refusal(&id, REFUSED, why)),
        };
        let resp = match forward(&ctx, method, &uri, &headers, body).await {
            Ok(r) => r,
            Err(e) => return json_answer(refusal(&id, REFUSED, e)),
        };
        let (mut parts, incoming) = resp.into_parts();
        // Sent whole now: the upstream's framing does not apply.
        parts.headers.remove(header::TRANSFER_ENCODING);
        parts.headers.remove(header::CONTENT_LENGTH);
        let bytes = match incoming.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return json_answer(refusal(
                    &id,
                    REFUSED,
                    format!("the MCP server's answer broke off: {e}"),
                ));
            }
        };
        if let Some(answer) = answer_in(&bytes, &id) {
            ctx.gw.record_result(pending, &answer).await;
        }
        Response::from_parts(parts, Body::from(bytes))
    }

    pub async fn serve(
        gw: Arc<Gateway>,
        listen: std::net::SocketAddr,
        upstream: String,
    ) -> Result<()> {
        let upstream: Uri = upstream
            .parse()
            .with_context(|| format!("--upstream {upstream:?}"))?;
        let http = HttpClient::builder(TokioExecutor::new()).build(HttpConnector::new());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Ctx { gw, upstream, http });
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("--listen {listen}"))?;
        eprintln!("ledger mcp: listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        Ok(())
    }
}

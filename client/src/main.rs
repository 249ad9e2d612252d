//! `ledger`: the command-line client of Agent Ledger.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use ledger_client::event::{parse_kind, parse_outcome, parse_risk};
use ledger_client::read::ReadOptions;
use ledger_client::{Client, Event, EventFilter, EventJson, Leaf, NoteVerifier, Record, render};
use ledger_verify::checkpoint::open_checkpoint;
use std::io::IsTerminal;
use std::io::{BufRead, Write};

#[derive(Parser)]
#[command(
    name = "ledger",
    version,
    about = "Append to, query and prove an Agent Ledger",
    long_about = "Append to, query and prove an Agent Ledger.\n\n\
        Every checkpoint and proof the server returns is checked against the \
        log's public key (--key, as printed by ledgerd at start-up) before it \
        is shown.",
    after_help = "Examples:\n  \
        ledger append --kind tool_call --agent billing-agent --tool sql.execute --risk high\n  \
        cat events.jsonl | ledger append\n  \
        ledger --key \"$KEY\" checkpoint -o trusted.note\n  \
        ledger --key \"$KEY\" proof 41\n  \
        ledger --key \"$KEY\" consistency --old trusted.note"
)]
struct Cli {
    /// Server address.
    #[arg(
        long,
        global = true,
        env = "LEDGER_SERVER",
        default_value = "http://127.0.0.1:7400"
    )]
    server: String,
    /// Log to use (default: the caller's own log).
    #[arg(long, global = true, env = "LEDGER_LOG", default_value = "")]
    log: String,
    /// The log's verifier key (`origin+keyid+base64`).
    #[arg(long, global = true, env = "LEDGER_KEY")]
    key: Option<NoteVerifier>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    /// API key (`alk_<id>.<secret>`, from `ledgerd keys create`).
    #[arg(long, global = true, env = "LEDGER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Use TLS, trusting this CA certificate (PEM) for the server's.
    #[arg(long, global = true, env = "LEDGER_CA")]
    ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mutual TLS (with --client-key).
    #[arg(long, global = true, env = "LEDGER_CERT", requires = "client_key")]
    cert: Option<std::path::PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, global = true, env = "LEDGER_CLIENT_KEY", requires = "cert")]
    client_key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Append one event from flags, or JSON lines from stdin (one event per line).
    Append(Box<AppendArgs>),
    /// Show the latest (or a stored) signed checkpoint, verified.
    Checkpoint {
        /// A stored checkpoint of this size instead of the latest.
        #[arg(long, default_value_t = 0)]
        size: u64,
        /// Also write the signed note to this file (keep it to check consistency later).
        #[arg(short, long)]
        output: Option<std::path::PathBuf>,
    },
    /// Prove an entry is in the log (by index, or --event-id), verified.
    Proof {
        /// Leaf index.
        index: Option<u64>,
        #[arg(long, conflicts_with = "index")]
        event_id: Option<String>,
        /// Against the stored checkpoint of this size (default: the latest).
        #[arg(long, default_value_t = 0)]
        size: u64,
        /// Also write the proof as a C2SP tlog-proof file, for
        /// `ledger-verify inclusion` (with the entry bytes: --entry-out).
        #[arg(short, long)]
        output: Option<std::path::PathBuf>,
        /// Write the entry's stored bytes (the leaf input) here.
        #[arg(long)]
        entry_out: Option<std::path::PathBuf>,
    },
    /// Every event of one trace, drawn as a span tree.
    Timeline {
        /// The W3C trace id (32 hex characters).
        correlation_id: String,
        /// Fetch and verify an inclusion proof for every event (needs --key).
        #[arg(long)]
        prove: bool,
        /// Include payloads (JSON output).
        #[arg(long)]
        payloads: bool,
    },
    /// Events matching filters (combined with AND), oldest first.
    Events(EventsArgs),
    /// The newest entries; with -f, follow new ones as they commit.
    Tail {
        /// Keep following.
        #[arg(short, long)]
        follow: bool,
        /// Entries to show before following.
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: u64,
        /// Start at this index instead (everything from it is shown).
        #[arg(long)]
        from_index: Option<u64>,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Export a range of the log as a bundle file for offline audit.
    Export {
        #[arg(short, long)]
        output: std::path::PathBuf,
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// One past the last index (default: the latest checkpoint).
        #[arg(long, default_value_t = 0)]
        end: u64,
        /// Leave payloads out (commitments still cover them).
        #[arg(long)]
        no_payloads: bool,
    },
    /// Erase the payload of an entry (admins only): appends a redaction entry
    /// naming who and why; the tree still verifies.
    Redact {
        /// The entry whose payload is erased.
        index: u64,
        /// Why: legal basis or ticket (recorded in the log).
        #[arg(long)]
        reason: String,
    },
    /// Grant an approval request (approver or admin role): the server
    /// appends the decision, naming you; a gateway holding the call goes on.
    Approve {
        /// The event_id of the APPROVAL_REQUESTED event.
        request: String,
        #[arg(long)]
        reason: String,
    },
    /// Deny an approval request (approver or admin role).
    Deny {
        request: String,
        #[arg(long)]
        reason: String,
    },
    /// Stop an agent at once (approver or admin role): every gateway for it
    /// refuses further tool calls until `ledger revive`.
    Kill {
        #[arg(long)]
        agent: String,
        #[arg(long)]
        reason: String,
    },
    /// Let a killed agent act again (approver or admin role).
    Revive {
        #[arg(long)]
        agent: String,
        #[arg(long)]
        reason: String,
    },
    /// An agent's kill-switch state.
    AgentState {
        #[arg(long)]
        agent: String,
    },
    /// Run an MCP audit gateway: every tools/call is recorded (and, by
    /// policy, held for approval) before it is forwarded; see docs/mcp.md.
    Mcp(ledger_client::mcp::McpArgs),
    /// Ask the server whether it is serving (gRPC health); exit 0 if so.
    /// For container health checks. Also shows where the log stands
    /// (committed, signed, indexed, mirrored, anchored; the mirror's lag)
    /// when the caller may read it.
    Health,
    /// Prove the log only grew since a checkpoint you kept (no rewrite, no fork).
    Consistency {
        /// A signed checkpoint note saved earlier (`ledger checkpoint -o`).
        #[arg(long)]
        old: std::path::PathBuf,
        /// Up to this stored size (default: the latest).
        #[arg(long, default_value_t = 0)]
        size: u64,
    },
}

#[derive(Args, Clone, Default)]
struct FilterArgs {
    #[arg(long)]
    correlation_id: Option<String>,
    #[arg(long)]
    agent: Option<String>,
    #[arg(long)]
    principal: Option<String>,
    #[arg(long)]
    tool: Option<String>,
    /// Any of these kinds (repeatable).
    #[arg(long = "kind")]
    kinds: Vec<String>,
    /// Any of these risk tiers (repeatable).
    #[arg(long = "risk")]
    risks: Vec<String>,
    /// Any of these outcomes (repeatable).
    #[arg(long = "outcome")]
    outcomes: Vec<String>,
    /// occurred_at at or after (RFC 3339).
    #[arg(long)]
    from: Option<String>,
    /// occurred_at before (RFC 3339).
    #[arg(long)]
    to: Option<String>,
}

#[derive(Args)]
struct EventsArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Most events to show (0: all).
    #[arg(long, default_value_t = 100)]
    limit: u64,
    /// Newest first.
    #[arg(long)]
    desc: bool,
    /// Fetch and verify an inclusion proof for every event (needs --key).
    #[arg(long)]
    prove: bool,
    /// Include payloads (JSON output).
    #[arg(long)]
    payloads: bool,
}

fn timestamp(flag: &str, s: &str) -> Result<prost_types::Timestamp> {
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .with_context(|| format!("{flag}: {s:?} is not an RFC 3339 time"))?;
    Ok(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    })
}

impl FilterArgs {
    fn to_filter(&self) -> Result<EventFilter> {
        let mut f = EventFilter {
            correlation_id: self.correlation_id.clone().unwrap_or_default(),
            agent_id: self.agent.clone().unwrap_or_default(),
            principal: self.principal.clone().unwrap_or_default(),
            tool_name: self.tool.clone().unwrap_or_default(),
            ..Default::default()
        };
        for k in &self.kinds {
            f.kinds
                .push(parse_kind(k).with_context(|| format!("--kind: unknown kind {k:?}"))? as i32);
        }
        for r in &self.risks {
            f.risk_tiers
                .push(parse_risk(r).with_context(|| format!("--risk: unknown tier {r:?}"))? as i32);
        }
        for o in &self.outcomes {
            f.outcomes.push(
                parse_outcome(o).with_context(|| format!("--outcome: unknown {o:?}"))? as i32,
            );
        }
        if let Some(t) = &self.from {
            f.occurred_from = Some(timestamp("--from", t)?);
        }
        if let Some(t) = &self.to {
            f.occurred_to = Some(timestamp("--to", t)?);
        }
        Ok(f)
    }
}

/// A record as JSON: the event, where it sits, and what was checked.
/// A timestamp as `--json` prints it: seconds since the epoch.
fn epoch_seconds(t: prost_types::Timestamp) -> f64 {
    t.seconds as f64 + t.nanos as f64 / 1e9
}

fn record_json(r: &Record) -> serde_json::Value {
    let mut v = serde_json::json!({
        "index": r.index,
        "leaf_hash": r.leaf_hash.to_hex(),
        "writer": r.entry.writer,
        "integrated_at": r.entry.integrated_at.map(epoch_seconds),
        "payload_redacted": r.payload_redacted,
        "proved": r.proved,
    });
    if let Some(e) = r.event() {
        let mut ev = EventJson::from_event(e);
        match &r.payload {
            Some(p) => {
                let with = ledger_client::AuditEvent {
                    payload: p.clone(),
                    ..e.clone()
                };
                ev = EventJson::from_event(&with);
            }
            None => {
                ev.payload = None;
                ev.payload_text = None;
            }
        }
        v["event"] = serde_json::to_value(ev).unwrap_or_default();
    }
    v
}

#[derive(Args)]
struct AppendArgs {
    /// Event kind (tool_call, tool_result, model_call, decision, approval_requested,
    /// approval_granted, approval_denied, policy_violation, kill_switch, handoff, custom).
    /// Without it, JSON lines are read from stdin.
    #[arg(long)]
    kind: Option<String>,
    #[arg(long)]
    agent: Option<String>,
    #[arg(long)]
    tool: Option<String>,
    #[arg(long)]
    action: Option<String>,
    #[arg(long)]
    resource: Option<String>,
    /// low, medium or high.
    #[arg(long)]
    risk: Option<String>,
    /// success, failure, denied or error.
    #[arg(long)]
    outcome: Option<String>,
    #[arg(long)]
    principal: Option<String>,
    #[arg(long)]
    session: Option<String>,
    /// W3C trace id (default: a new one).
    #[arg(long)]
    correlation_id: Option<String>,
    #[arg(long)]
    span_id: Option<String>,
    #[arg(long)]
    parent_span_id: Option<String>,
    /// Event id (default: a new random one). Re-using one is a safe retry.
    #[arg(long)]
    event_id: Option<String>,
    /// key=value, repeatable.
    #[arg(long = "attr", value_parser = parse_attr)]
    attrs: Vec<(String, String)>,
    /// A JSON payload.
    #[arg(long)]
    payload: Option<String>,
    /// Ask for a receipt (offline proof the ledger accepted the event),
    /// check it against --key, and write it to FILE as a C2SP tlog-proof
    /// whose `extra` line is the stored entry. One event only.
    #[arg(long, value_name = "FILE")]
    receipt: Option<std::path::PathBuf>,
}

fn parse_attr(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

fn event_from_flags(a: AppendArgs, kind: &str) -> Result<ledger_client::AuditEvent> {
    let kind = parse_kind(kind).with_context(|| format!("--kind: unknown kind {kind:?}"))?;
    let agent = a.agent.context("--agent is required")?;
    let mut b = Event::new(kind, agent);
    macro_rules! set {
        ($field:expr, $method:ident) => {
            if let Some(v) = $field {
                b = b.$method(v);
            }
        };
    }
    set!(a.tool, tool);
    set!(a.action, action);
    set!(a.resource, resource);
    set!(a.principal, principal);
    set!(a.session, session);
    set!(a.correlation_id, correlation_id);
    set!(a.span_id, span);
    set!(a.parent_span_id, parent_span);
    set!(a.event_id, event_id);
    if let Some(r) = a.risk {
        b = b.risk(parse_risk(&r).with_context(|| format!("--risk: unknown tier {r:?}"))?);
    }
    if let Some(o) = a.outcome {
        b = b.outcome(parse_outcome(&o).with_context(|| format!("--outcome: unknown {o:?}"))?);
    }
    for (k, v) in a.attrs {
        b = b.attribute(k, v);
    }
    if let Some(p) = a.payload {
        let v: serde_json::Value = serde_json::from_str(&p).context("--payload: not JSON")?;
        b = b.payload_json(&v);
    }
    Ok(b.build())
}

fn print_ack(ack: &ledger_client::AppendAck, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "event_id": ack.event_id,
                "index": ack.index,
                "leaf_hash": hex::encode(&ack.leaf_hash),
                "duplicate": ack.duplicate,
                // Seconds since the epoch, like record timestamps.
                "integrated_at": ack.integrated_at.map(epoch_seconds),
                "checkpoint_size": ack.checkpoint_size,
                "checkpoint_due": ack.checkpoint_due.map(epoch_seconds),
            })
        );
    } else {
        let dup = if ack.duplicate {
            " (already recorded)"
        } else {
            ""
        };
        let signed = if ack.checkpoint_size > 0 {
            format!(", signed in checkpoint {}", ack.checkpoint_size)
        } else {
            ", durable; signature due within the checkpoint interval".to_string()
        };
        println!("{} → entry {}{dup}{signed}", ack.event_id, ack.index);
    }
}

async fn run(cli: Cli) -> Result<()> {
    let read =
        |p: &std::path::Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let tls = if cli.ca.is_some() || cli.cert.is_some() || cli.server.starts_with("https://") {
        Some(ledger_client::TlsOptions {
            ca_pem: cli.ca.as_deref().map(read).transpose()?,
            identity: match (&cli.cert, &cli.client_key) {
                (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
                _ => None,
            },
            domain: None,
        })
    } else {
        None
    };
    // The gateway runs for long and must start (and fail closed) while the
    // ledger is down: it connects on first use.
    let lazy = matches!(cli.cmd, Cmd::Mcp(_));
    let mut client = Client::connect_with(&cli.server, tls, lazy)
        .await?
        .log(cli.log.clone());
    if let Some(t) = &cli.token {
        client = client.with_token(t)?;
    }
    if let Some(k) = cli.key.clone() {
        client = client.verifying_with(k);
    }
    match cli.cmd {
        Cmd::Append(a) => cmd_append(&mut client, a, cli.json).await?,
        Cmd::Checkpoint { size, output } => {
            cmd_checkpoint(&mut client, size, output, cli.json).await?
        }
        Cmd::Proof {
            index,
            event_id,
            size,
            output,
            entry_out,
        } => {
            cmd_proof(
                &mut client,
                index,
                event_id,
                size,
                output,
                entry_out,
                cli.json,
            )
            .await?
        }
        Cmd::Timeline {
            correlation_id,
            prove,
            payloads,
        } => cmd_timeline(&mut client, correlation_id, prove, payloads, cli.json).await?,
        Cmd::Events(a) => cmd_events(&mut client, a, cli.json).await?,
        Cmd::Tail {
            follow,
            lines,
            from_index,
            filter,
        } => cmd_tail(&mut client, follow, lines, from_index, filter, cli.json).await?,
        Cmd::Export {
            output,
            start,
            end,
            no_payloads,
        } => cmd_export(&mut client, output, start, end, no_payloads, cli.json).await?,
        Cmd::Redact { index, reason } => cmd_redact(&mut client, index, reason, cli.json).await?,
        Cmd::Health => cmd_health(&mut client, cli.json).await?,
        Cmd::Approve { request, reason } => {
            cmd_decide(&client, &request, true, &reason, cli.json).await?
        }
        Cmd::Deny { request, reason } => {
            cmd_decide(&client, &request, false, &reason, cli.json).await?
        }
        Cmd::Kill { agent, reason } => {
            cmd_agent_state(&client, &agent, Some((true, reason)), cli.json).await?
        }
        Cmd::Revive { agent, reason } => {
            cmd_agent_state(&client, &agent, Some((false, reason)), cli.json).await?
        }
        Cmd::AgentState { agent } => cmd_agent_state(&client, &agent, None, cli.json).await?,
        Cmd::Mcp(args) => ledger_client::mcp::run(client, args).await?,
        Cmd::Consistency { old, size } => {
            cmd_consistency(&mut client, old, size, cli.key.as_ref(), cli.json).await?
        }
    }
    std::io::stdout().flush().ok();
    Ok(())
}

/// `ledger append`.
async fn cmd_append(client: &mut Client, a: Box<AppendArgs>, json: bool) -> Result<()> {
    if let Some(path) = a.receipt.clone() {
        let ev = match a.kind.clone() {
            Some(kind) => event_from_flags(*a, &kind)?,
            None => {
                let text = std::io::read_to_string(std::io::stdin()).context("reading stdin")?;
                let mut lines = text.lines().filter(|l| !l.trim().is_empty());
                let line = lines.next().context("stdin: no event")?;
                anyhow::ensure!(
                    lines.next().is_none(),
                    "--receipt takes one event; stdin has more"
                );
                serde_json::from_str::<EventJson>(line)
                    .context("stdin line 1: not an event")?
                    .into_event()
                    .context("stdin line 1")?
            }
        };
        let (ack, receipt, verified) = client.append_with_receipt(ev).await?;
        let file =
            ledger_verify::receipt::to_tlog_proof(&receipt).map_err(|e| anyhow::anyhow!("{e}"))?;
        std::fs::write(&path, file.to_text())
            .with_context(|| format!("writing {}", path.display()))?;
        print_ack(&ack, json);
        if !json {
            println!(
                "receipt: entry {} in {} at size {} (verified) → {}",
                ack.index,
                verified.checkpoint.origin,
                verified.checkpoint.size,
                path.display()
            );
        }
    } else if let Some(kind) = a.kind.clone() {
        let ev = event_from_flags(*a, &kind)?;
        print_ack(&client.append(ev).await?, json);
    } else {
        let stdin = std::io::stdin();
        for (n, line) in stdin.lock().lines().enumerate() {
            let line = line.context("reading stdin")?;
            if line.trim().is_empty() {
                continue;
            }
            let ev: EventJson = serde_json::from_str(&line)
                .with_context(|| format!("stdin line {}: not an event", n + 1))?;
            let ev = ev
                .into_event()
                .with_context(|| format!("stdin line {}", n + 1))?;
            let ack = client
                .append(ev)
                .await
                .with_context(|| format!("stdin line {}", n + 1))?;
            print_ack(&ack, json);
        }
    }
    Ok(())
}

/// `ledger checkpoint`.
async fn cmd_checkpoint(
    client: &mut Client,
    size: u64,
    output: Option<std::path::PathBuf>,
    json: bool,
) -> Result<()> {
    let cp = client.checkpoint(size).await?;
    if let Some(path) = output {
        std::fs::write(&path, &cp.note).with_context(|| format!("writing {}", path.display()))?;
    }
    if json {
        println!(
            "{}",
            serde_json::json!({
                "origin": cp.checkpoint.origin,
                "tree_size": cp.checkpoint.size,
                "root_hash": cp.checkpoint.root.to_hex(),
                "note": cp.note,
                "verified": true,
            })
        );
    } else {
        println!(
            "{} — {} entries, root {} (signature verified)",
            cp.checkpoint.origin,
            cp.checkpoint.size,
            cp.checkpoint.root.to_hex()
        );
    }
    Ok(())
}

/// `ledger proof`.
async fn cmd_proof(
    client: &mut Client,
    index: Option<u64>,
    event_id: Option<String>,
    size: u64,
    output: Option<std::path::PathBuf>,
    entry_out: Option<std::path::PathBuf>,
    json: bool,
) -> Result<()> {
    let leaf = match (index, event_id) {
        (Some(i), _) => Leaf::Index(i),
        (None, Some(id)) => Leaf::EventId(id),
        (None, None) => bail!("give an index or --event-id"),
    };
    let p = client.inclusion(leaf, size).await?;
    if let Some(path) = &output {
        let file = ledger_verify::tlog_proof::TlogProof {
            extra: None,
            index: p.index,
            proof: p.hashes.clone(),
            checkpoint_note: p.note.clone(),
        };
        std::fs::write(path, file.to_text())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &entry_out {
        let mut entries = client.entries(p.index, p.index + 1).await?;
        let bytes = entries.pop().context("the server returned no entry")?.entry;
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    if json {
        println!(
            "{}",
            serde_json::json!({
                "index": p.index,
                "leaf_hash": p.leaf_hash.to_hex(),
                "tree_size": p.checkpoint.size,
                "root_hash": p.checkpoint.root.to_hex(),
                "hashes": p.hashes.iter().map(|h| h.to_hex()).collect::<Vec<_>>(),
                "checkpoint": p.note,
                "verified": true,
            })
        );
    } else {
        println!(
            "entry {} (leaf {}) is in {} at size {}: proof of {} hashes verified",
            p.index,
            p.leaf_hash.to_hex(),
            p.checkpoint.origin,
            p.checkpoint.size,
            p.hashes.len()
        );
    }
    Ok(())
}

/// `ledger timeline`.
async fn cmd_timeline(
    client: &mut Client,
    correlation_id: String,
    prove: bool,
    payloads: bool,
    json: bool,
) -> Result<()> {
    let t = client
        .timeline(
            &correlation_id,
            ReadOptions {
                payloads,
                proofs: prove,
                proof_size: 0,
            },
        )
        .await?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "correlation_id": correlation_id,
                "entries": t.records.iter().map(record_json).collect::<Vec<_>>(),
                "spans": t.spans.iter().map(|s| serde_json::json!({
                    "span_id": s.span_id,
                    "parent_span_id": s.parent_span_id,
                    "entry_indexes": s.entry_indexes,
                    "child_span_ids": s.child_span_ids,
                })).collect::<Vec<_>>(),
                "root_span_ids": t.roots,
                "checkpoint_size": t.checkpoint.as_ref().map(|c| c.checkpoint.size),
            })
        );
    } else if t.records.is_empty() {
        println!("no events with correlation id {correlation_id}");
    } else {
        print!("{}", render::timeline(&t, &correlation_id, color()));
    }
    Ok(())
}

/// `ledger events`.
async fn cmd_events(client: &mut Client, a: EventsArgs, json: bool) -> Result<()> {
    let filter = a.filter.to_filter()?;
    let opts = ReadOptions {
        payloads: a.payloads,
        proofs: a.prove,
        proof_size: 0,
    };
    let mut token = None;
    let mut shown = 0u64;
    let color = color();
    'pages: loop {
        let want = if a.limit == 0 {
            1000
        } else {
            (a.limit - shown).min(1000)
        };
        let page = client
            .list_events(filter.clone(), want as u32, token.take(), a.desc, opts)
            .await?;
        for r in &page.records {
            if json {
                println!("{}", record_json(r));
            } else {
                println!("{}", render::event_line(r, color));
            }
            shown += 1;
            if a.limit != 0 && shown >= a.limit {
                break 'pages;
            }
        }
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    if !json && shown == 0 {
        eprintln!("no matching events");
    }
    Ok(())
}

/// `ledger tail`.
async fn cmd_tail(
    client: &mut Client,
    follow: bool,
    lines: u64,
    from_index: Option<u64>,
    filter: FilterArgs,
    json: bool,
) -> Result<()> {
    let filter = filter.to_filter()?;
    let color = color();
    let print = |r: &Record| {
        if json {
            println!("{}", record_json(r));
        } else {
            println!("{}", render::event_line(r, color));
        }
        std::io::stdout().flush().ok();
    };
    // The last `lines` matching entries, oldest first.
    let mut start = from_index;
    if start.is_none() {
        let page = client
            .list_events(
                filter.clone(),
                lines.clamp(1, 1000) as u32,
                None,
                true,
                ReadOptions::default(),
            )
            .await?;
        let size = page.checkpoint.as_ref().map(|c| c.checkpoint.size);
        let mut recs = page.records;
        recs.reverse();
        if lines > 0 {
            recs.iter().for_each(print);
        }
        start = Some(match (recs.last(), size) {
            (Some(r), _) => r.index + 1,
            (None, Some(s)) => s,
            (None, None) => client
                .checkpoint(0)
                .await
                .map(|c| c.checkpoint.size)
                .unwrap_or(0),
        });
    }
    let mut tail = client.tail(start.unwrap_or(0), filter, false);
    if follow {
        loop {
            let r = tail.next().await?;
            print(&r);
        }
    } else if from_index.is_some() {
        // From an index without -f: up to the current end.
        let end = client
            .checkpoint(0)
            .await
            .map(|c| c.checkpoint.size)
            .unwrap_or(0);
        while tail.position() < end {
            let r = tail.next().await?;
            print(&r);
            if r.index + 1 >= end {
                break;
            }
        }
    }
    Ok(())
}

/// `ledger export`.
async fn cmd_export(
    client: &mut Client,
    output: std::path::PathBuf,
    start: u64,
    end: u64,
    no_payloads: bool,
    json: bool,
) -> Result<()> {
    let tmp = output.with_extension("partial");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} exporting {pos}/{len} entries [{bar:40}] {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    let written = client
        .export(start, end, !no_payloads, &mut w, |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
        .await?;
    bar.finish_and_clear();
    w.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &output).with_context(|| format!("renaming to {}", output.display()))?;
    if json {
        println!("{}", serde_json::json!({"file": output, "bytes": written}));
    } else {
        println!(
            "wrote {} ({written} bytes); check it with: ledger-verify bundle --key KEY {}",
            output.display(),
            output.display()
        );
    }
    Ok(())
}

/// `ledger redact`.
async fn cmd_redact(client: &mut Client, index: u64, reason: String, json: bool) -> Result<()> {
    let ack = client.redact(index, &reason).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"target_index": index, "redaction_index": ack.index, "duplicate": ack.duplicate})
        );
    } else {
        println!("payload of entry {index} redacted by entry {}", ack.index);
    }
    Ok(())
}

/// `ledger approve` / `ledger deny`.
async fn cmd_decide(
    client: &Client,
    request: &str,
    grant: bool,
    reason: &str,
    json: bool,
) -> Result<()> {
    let d = client.decide(request, grant, reason).await?;
    let index = d.entry.as_ref().map_or(0, |e| e.index);
    if json {
        println!(
            "{}",
            serde_json::json!({"request_event_id": request, "granted": d.granted, "index": index})
        );
    } else {
        println!(
            "{request} {} by entry {index}",
            if d.granted { "granted" } else { "denied" }
        );
    }
    Ok(())
}

/// `ledger kill` / `ledger revive` / `ledger agent-state`.
async fn cmd_agent_state(
    client: &Client,
    agent: &str,
    change: Option<(bool, String)>,
    json: bool,
) -> Result<()> {
    let s = match change {
        Some((killed, reason)) => client.set_agent_state(agent, killed, &reason).await?,
        None => client.agent_state(agent).await?,
    };
    let index = s.entry.as_ref().map(|e| e.index);
    if json {
        println!(
            "{}",
            serde_json::json!({"agent_id": agent, "killed": s.killed, "changes": s.changes, "index": index})
        );
    } else {
        println!(
            "agent {agent}: {}{}",
            if s.killed { "KILLED" } else { "active" },
            index.map_or(String::new(), |i| format!(" (entry {i})"))
        );
    }
    Ok(())
}

/// `ledger health`.
async fn cmd_health(client: &mut Client, json: bool) -> Result<()> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let status = HealthClient::new(client.channel())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner()
        .status;
    // 1 = SERVING in grpc.health.v1.
    if status != 1 {
        bail!("server is not serving (health status {status})");
    }
    // The log's progress, when this caller may read it (a writer may not).
    let log = client.status().await.ok();
    if json {
        let log = log.map(|s| {
            serde_json::json!({
                "log": s.log,
                "origin": s.origin,
                "committed_size": s.committed_size,
                "signed_size": s.signed_size,
                "indexed_size": s.indexed_size,
                "anchored_size": s.anchored_size,
                "mirror_enabled": s.mirror_enabled,
                "mirrored_size": s.mirrored_size,
                "mirror_lag_entries": s.mirror_lag_entries,
                "mirror_lag_seconds": s.mirror_lag_seconds,
                "ack_after_mirror": s.ack_after_mirror,
            })
        });
        println!("{}", serde_json::json!({"serving": true, "log": log}));
        return Ok(());
    }
    println!("serving");
    if let Some(s) = log {
        println!(
            "log {} ({}): {} committed, {} signed, {} indexed, {} anchored",
            s.log, s.origin, s.committed_size, s.signed_size, s.indexed_size, s.anchored_size
        );
        if s.mirror_enabled {
            println!(
                "mirror: {} mirrored, lag {} entries / {:.1} s{}",
                s.mirrored_size,
                s.mirror_lag_entries,
                s.mirror_lag_seconds,
                if s.ack_after_mirror {
                    " (acks wait for the mirror)"
                } else {
                    ""
                }
            );
        } else {
            println!("mirror: off (the entries live on the server's disk only)");
        }
    }
    Ok(())
}

/// `ledger consistency`.
async fn cmd_consistency(
    client: &mut Client,
    old: std::path::PathBuf,
    size: u64,
    key: Option<&NoteVerifier>,
    json: bool,
) -> Result<()> {
    let key = key.context("--key is required to trust the old checkpoint")?;
    let text =
        std::fs::read_to_string(&old).with_context(|| format!("reading {}", old.display()))?;
    let old_cp = open_checkpoint(&text, key)
        .with_context(|| format!("{}: not a checkpoint signed by this key", old.display()))?;
    let c = client.consistency(&old_cp, size).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "old_size": c.old.size,
                "new_size": c.new.size,
                "new_root_hash": c.new.root.to_hex(),
                "hashes": c.hashes.iter().map(|h| h.to_hex()).collect::<Vec<_>>(),
                "new_checkpoint": c.new_note,
                "verified": true,
            })
        );
    } else {
        println!(
            "the log at size {} extends your checkpoint of size {}: proof of {} hashes verified",
            c.new.size,
            c.old.size,
            c.hashes.len()
        );
    }
    Ok(())
}

/// Colour on a terminal, unless NO_COLOR is set.
fn color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ledger: {e:#}");
            // Verification failures are the one thing a script must not miss.
            let verification = e
                .downcast_ref::<ledger_client::Error>()
                .is_some_and(|e| matches!(e, ledger_client::Error::Verification(_)));
            std::process::ExitCode::from(if verification { 1 } else { 2 })
        }
    }
}

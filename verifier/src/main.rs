//! `ledger-verify`: the auditor's command-line verifier. It trusts nothing but
//! the log's public key: every claim is recomputed from the bytes given.
//!
//! Exit codes: 0 verified, 1 verification failed (tampering or a bad proof),
//! 2 usage or I/O error.

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Parser, Subcommand, ValueEnum};
use ledger_verify::anchors::{Anchor, check_anchors};
use ledger_verify::audit::{Finding, TamperKind, audit_bundle_against};
use ledger_verify::checkpoint::open_checkpoint;
use ledger_verify::hash::{Hash, leaf_hash};
use ledger_verify::note::NoteVerifier;
use ledger_verify::proof::verify_consistency;
use ledger_verify::tlog_proof::TlogProof;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[path = "cli/mirror.rs"]
mod mirror_cli;

#[derive(Parser)]
#[command(
    name = "ledger-verify",
    version,
    about = "Verify an Agent Ledger log: signed checkpoints, inclusion and consistency proofs",
    long_about = "Verify an Agent Ledger log from the outside. Needs only the log's public \
                  verifier key (`origin+keyid+base64`, as printed by `ledgerd` at start-up) \
                  and the material to check.\n\nExit status: 0 verified, 1 verification \
                  failed, 2 usage or I/O error."
)]
struct Cli {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human, global = true)]
    format: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Check a signed checkpoint (C2SP tlog-checkpoint note) against the log key.
    Checkpoint {
        /// The log's verifier key, or a file holding it.
        #[arg(long)]
        key: String,
        /// The checkpoint note file ("-" for standard input).
        file: PathBuf,
    },
    /// Check an offline inclusion proof (C2SP tlog-proof file) for one entry.
    #[command(visible_alias = "inclusion")]
    Proof {
        #[arg(long)]
        key: String,
        /// The stored entry bytes (as exported); its leaf hash is computed.
        #[arg(
            long,
            conflicts_with = "leaf_hash",
            required_unless_present = "leaf_hash"
        )]
        entry: Option<PathBuf>,
        /// The entry's leaf hash in hex, instead of --entry.
        #[arg(long)]
        leaf_hash: Option<String>,
        /// The .tlog-proof file.
        file: PathBuf,
    },
    /// Check an append receipt (`ledger append --receipt FILE`): the entry it
    /// carries (or --entry) is at its own index in a checkpoint signed by
    /// the key. Prints what the entry records.
    Receipt {
        #[arg(long)]
        key: String,
        /// The stored entry bytes, when the receipt file does not carry them
        /// (must equal them when it does).
        #[arg(long)]
        entry: Option<PathBuf>,
        /// The receipt file (a C2SP tlog-proof whose extra line is the entry).
        file: PathBuf,
    },
    /// Audit an export bundle offline: re-hash every entry, follow the hash
    /// chain, recompute the root at every signed checkpoint, check every
    /// signature and every payload against its commitment.
    Bundle {
        #[arg(long)]
        key: String,
        /// The bundle file (`ledger export -o FILE`).
        file: PathBuf,
        /// Also check the data against the anchored checkpoints in this
        /// directory or `s3://bucket/prefix`.
        #[arg(long)]
        anchors: Option<String>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Audit a log straight from its object-storage mirror (a directory or
    /// `s3://bucket/prefix`, holding `<origin>/checkpoint`, `tile/…`,
    /// `payload/…`): every entry bundle up to the mirrored checkpoint is
    /// re-hashed, chained and checked against it, every hash tile against
    /// the recomputed tree, every payload against its commitment, and the
    /// anchors (given, or found beside the mirror). Same findings and exit
    /// codes as `bundle`.
    Mirror {
        #[arg(long)]
        key: String,
        /// The mirror: a directory or `s3://bucket/prefix`.
        source: String,
        /// Anchors to hold the mirror to (directory or `s3://bucket/prefix`);
        /// default: anchors kept beside the mirror, if any.
        #[arg(long)]
        anchors: Option<String>,
        /// Objects fetched at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Check the anchored checkpoints in a directory or `s3://bucket/prefix`:
    /// every one signed by the key, one history, never going back. (S3 uses
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION and, for
    /// S3-compatible stores, AWS_ENDPOINT_URL.)
    Anchors {
        #[arg(long)]
        key: String,
        source: String,
    },
    /// Check a running server: its current checkpoint is signed by the key
    /// and extends every anchored checkpoint (no fork, no rollback).
    Live {
        #[arg(long)]
        key: String,
        /// The server's gRPC address.
        #[arg(long, default_value = "http://127.0.0.1:7400")]
        server: String,
        /// The anchors to hold it to (directory or `s3://bucket/prefix`).
        #[arg(long)]
        anchors: Option<String>,
        /// Log name on the server (default: its default log).
        #[arg(long, default_value = "")]
        log: String,
    },
    /// Check that a newer checkpoint extends an older one (RFC 9162 consistency).
    Consistency {
        #[arg(long)]
        key: String,
        /// The older signed checkpoint.
        #[arg(long)]
        old: PathBuf,
        /// The newer signed checkpoint.
        #[arg(long)]
        new: PathBuf,
        /// The consistency proof: one base64 hash per line.
        #[arg(long)]
        proof: PathBuf,
    },
}

/// A verification outcome: what was checked and whether it held.
struct Report {
    ok: bool,
    summary: String,
    details: serde_json::Value,
}

fn read_input(path: &Path) -> Result<String> {
    if path == Path::new("-") {
        return std::io::read_to_string(std::io::stdin()).context("reading standard input");
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn parse_key(arg: &str) -> Result<NoteVerifier> {
    let text = if Path::new(arg).is_file() {
        std::fs::read_to_string(arg).with_context(|| format!("reading key file {arg}"))?
    } else {
        arg.to_string()
    };
    text.trim().parse().with_context(|| {
        format!(
            "{:?} is not a verifier key (name+keyid+base64)",
            text.trim()
        )
    })
}

/// Reads anchor objects from a directory or `s3://bucket/prefix`, keeping
/// those of `origin` (`<origin>/checkpoint.<size>`).
fn read_anchors(source: &str, origin: &str) -> Result<Vec<Anchor>> {
    if let Some(rest) = source.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_end_matches('/');
        let list_prefix = if prefix.is_empty() {
            format!("{origin}/checkpoint.")
        } else {
            format!("{prefix}/{origin}/checkpoint.")
        };
        return read_s3_anchors(bucket, &list_prefix);
    }
    let root = Path::new(source);
    anyhow::ensure!(root.is_dir(), "{source}: not a directory");
    let dir = if root.join(origin).is_dir() {
        root.join(origin)
    } else {
        root.to_path_buf()
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("checkpoint.") {
            continue;
        }
        let path = e.path();
        out.push(Anchor {
            key: path.display().to_string(),
            note: std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
            written_at: e.metadata().ok().and_then(|m| m.modified().ok()),
        });
    }
    Ok(out)
}

fn read_s3_anchors(bucket: &str, prefix: &str) -> Result<Vec<Anchor>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = mirror_cli::s3_client_from_env();
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "listing s3://{bucket}/{prefix}: {}",
                        aws_sdk_s3::error::DisplayErrorContext(&e)
                    )
                })?;
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                let body = client
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "reading s3://{bucket}/{key}: {}",
                            aws_sdk_s3::error::DisplayErrorContext(&e)
                        )
                    })?
                    .body
                    .collect()
                    .await?
                    .into_bytes();
                out.push(Anchor {
                    key: format!("s3://{bucket}/{key}"),
                    note: body.to_vec(),
                    written_at: o
                        .last_modified()
                        .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
                });
            }
            match page.next_continuation_token() {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
        Ok(out)
    })
}

/// Reads and checks the anchors of `key`'s log in `source`; a store with
/// none of them is a finding (`truncated` at 0): asked to hold a log to its
/// anchors, there is nothing that vouches for it.
fn checked_anchors(
    source: &str,
    key: &NoteVerifier,
) -> Result<(Vec<Anchor>, ledger_verify::anchors::AnchorCheck)> {
    let anchors = read_anchors(source, key.name())?;
    let mut check = check_anchors(&anchors, key);
    if anchors.is_empty() {
        check.findings.push(Finding {
            kind: TamperKind::Truncated,
            index: 0,
            detail: format!("{source}: no anchors of {} found", key.name()),
        });
    }
    Ok((anchors, check))
}

fn findings_text(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| format!("\n  {:?} at {}: {}", f.kind, f.index, f.detail))
        .collect()
}

fn anchors_report(key: &str, source: &str) -> Result<Report> {
    let key = parse_key(key)?;
    let (anchors, check) = checked_anchors(source, &key)?;
    let ok = check.findings.is_empty();
    let latest = check.checkpoints.last().map(|c| c.size).unwrap_or(0);
    let summary = if ok {
        format!(
            "anchors OK: {} checkpoints of {} signed by the key, one history up to size {latest}",
            check.checkpoints.len(),
            key.name()
        )
    } else {
        format!(
            "anchors TAMPERED: {} finding(s){}",
            check.findings.len(),
            findings_text(&check.findings)
        )
    };
    Ok(Report {
        ok,
        summary,
        details: json!({"anchors": anchors.len(), "verified": check.checkpoints.len(), "latest_size": latest, "findings": check.findings}),
    })
}

fn live(key: &str, server: &str, anchors: Option<&str>, log: &str) -> Result<Report> {
    use ledger_verify::proto::proofs_client::ProofsClient;
    use ledger_verify::proto::{GetCheckpointRequest, GetConsistencyProofRequest};
    let key = parse_key(key)?;
    let mut anchored = match anchors {
        Some(src) => checked_anchors(src, &key)?.1,
        None => Default::default(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut findings = std::mem::take(&mut anchored.findings);
    let latest = rt.block_on(async {
        let mut client = ProofsClient::connect(server.to_string())
            .await
            .with_context(|| format!("connecting to {server}"))?;
        let cp = client
            .get_checkpoint(GetCheckpointRequest { log: log.to_string(), tree_size: 0 })
            .await
            .context("GetCheckpoint")?
            .into_inner();
        let latest = match open_checkpoint(&cp.note, &key) {
            Ok(c) => c,
            Err(e) => {
                findings.push(Finding { kind: TamperKind::BadSignature, index: cp.tree_size, detail: format!("the server's checkpoint: {e}") });
                return anyhow::Ok(None);
            }
        };
        for a in &anchored.checkpoints {
            if a.size > latest.size {
                findings.push(Finding {
                    kind: TamperKind::RolledBack,
                    index: latest.size,
                    detail: format!("the server is at size {} but size {} was anchored", latest.size, a.size),
                });
                continue;
            }
            let proof = client
                .get_consistency_proof(GetConsistencyProofRequest { log: log.to_string(), old_size: a.size, new_size: latest.size })
                .await
                .with_context(|| format!("consistency proof {}..{}", a.size, latest.size))?
                .into_inner()
                .proof
                .map(|p| p.hashes)
                .unwrap_or_default();
            let hashes: Option<Vec<Hash>> = proof.iter().map(|h| Hash::from_slice(h)).collect();
            let ok = hashes.is_some_and(|h| verify_consistency(a.size, latest.size, &h, &a.root, &latest.root).is_ok());
            if !ok {
                findings.push(Finding {
                    kind: TamperKind::Forked,
                    index: a.size,
                    detail: format!("the server's log at size {} does not extend the checkpoint anchored at size {}", latest.size, a.size),
                });
            }
        }
        anyhow::Ok(Some(latest))
    })?;
    let ok = findings.is_empty();
    let size = latest.as_ref().map(|c| c.size).unwrap_or(0);
    let summary = if ok && anchors.is_none() {
        format!(
            "live OK: {server} serves {} at size {size}, signed by the key (no anchors given: nothing was checked against the log's past; pass --anchors to check for rollbacks and forks)",
            key.name()
        )
    } else if ok {
        format!(
            "live OK: {server} serves {} at size {size}, signed by the key, extending all {} anchored checkpoints",
            key.name(),
            anchored.checkpoints.len()
        )
    } else {
        format!(
            "live TAMPERED: {} finding(s){}",
            findings.len(),
            findings_text(&findings)
        )
    };
    Ok(Report {
        ok,
        summary,
        details: json!({"tree_size": size, "anchors_checked": anchored.checkpoints.len(), "findings": findings}),
    })
}

/// The audits' progress bar (`what` leads it), or none with --quiet.
fn progress_bar(quiet: bool, what: &str) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} {what} {{pos}}/{{len}} entries [{{bar:40}}] {{per_sec}} eta {{eta}}"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    )
}

fn audit(key: &str, file: &Path, anchors: Option<&str>, quiet: bool) -> Result<Report> {
    let key = parse_key(key)?;
    let anchored = match anchors {
        Some(src) => checked_anchors(src, &key)?.1,
        None => Default::default(),
    };
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let input = std::io::BufReader::with_capacity(1 << 20, f);
    let bar = progress_bar(quiet, "auditing");
    let started = std::time::Instant::now();
    let mut report = audit_bundle_against(input, &key, &anchored.checkpoints, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .with_context(|| format!("reading {}", file.display()))?;
    bar.finish_and_clear();
    report
        .findings
        .splice(0..0, anchored.findings.iter().cloned());
    let secs = started.elapsed().as_secs_f64();
    let rate = report.entries as f64 / secs.max(1e-9);
    let ok = report.clean();
    let summary = if ok {
        let anchored = if anchors.is_some() {
            format!(
                "; {} anchors matched, entries up to {} also covered by an anchor",
                report.anchors_matched, report.anchored_size
            )
        } else {
            String::new()
        };
        format!(
            "bundle OK: {} entries {}..{} of {}, every one covered by a verified signed checkpoint ({} checked, latest size {}){anchored}; {} payloads checked, {} redacted ({} by entries after the range, proved); root {} ({:.1} s, {:.0} entries/s)",
            report.entries,
            report.start,
            report.tree_size,
            report.origin,
            report.checkpoints_checked,
            report.verified_size,
            report.payloads_checked,
            report.payloads_redacted,
            report.redaction_proofs_checked,
            report.root,
            secs,
            rate
        )
    } else {
        let mut s = format!(
            "bundle TAMPERED: {} finding(s) in {} entries of {}; data verified up to size {}",
            report.findings.len(),
            report.entries,
            report.origin,
            report.verified_size
        );
        s.push_str(&findings_text(&report.findings));
        s
    };
    let mut details = serde_json::to_value(&report)?;
    details["seconds"] = json!(secs);
    details["entries_per_second"] = json!(rate);
    Ok(Report {
        ok,
        summary,
        details,
    })
}

fn receipt(key: &str, entry: Option<&Path>, file: &Path) -> Result<Report> {
    let key = parse_key(key)?;
    let given = entry
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .transpose()?;
    let rejected = |why: String| Report {
        ok: false,
        summary: format!("receipt REJECTED: {why}"),
        details: json!({"error": why}),
    };
    let proof = match TlogProof::parse(&read_input(file)?) {
        Ok(p) => p,
        Err(e) => return Ok(rejected(e.to_string())),
    };
    let bytes = match (proof.extra.clone(), given) {
        (Some(a), Some(b)) if a != b => {
            return Ok(rejected(
                "the --entry file differs from the entry the receipt carries".into(),
            ));
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => {
            return Ok(rejected(
                "the receipt carries no entry and no --entry was given: it would prove a position, not an event".into(),
            ));
        }
    };
    match ledger_verify::receipt::verify(
        &bytes,
        proof.index,
        &proof.proof,
        &proof.checkpoint_note,
        &key,
    ) {
        Ok(v) => {
            let ev = v.entry.event.clone().unwrap_or_default();
            Ok(Report {
                ok: true,
                summary: format!(
                    "receipt OK: entry {} ({} {} by {}, writer {}) is in {} at size {}",
                    v.entry.index,
                    ev.event_id,
                    ledger_verify::proto::EventKind::try_from(ev.kind)
                        .map(|k| k.as_str_name())
                        .unwrap_or("EVENT_KIND_UNKNOWN"),
                    ev.agent_id,
                    v.entry.writer,
                    v.checkpoint.origin,
                    v.checkpoint.size
                ),
                details: json!({
                    "index": v.entry.index,
                    "event_id": ev.event_id,
                    "agent_id": ev.agent_id,
                    "writer": v.entry.writer,
                    "leaf_hash": v.leaf_hash.to_hex(),
                    "tree_size": v.checkpoint.size,
                    "root": v.checkpoint.root.to_hex(),
                }),
            })
        }
        Err(e) => Ok(rejected(e.to_string())),
    }
}

fn run(command: Command) -> Result<Report> {
    Ok(match command {
        Command::Bundle {
            key,
            file,
            anchors,
            quiet,
        } => audit(&key, &file, anchors.as_deref(), quiet)?,
        Command::Anchors { key, source } => anchors_report(&key, &source)?,
        Command::Mirror {
            key,
            source,
            anchors,
            concurrency,
            quiet,
        } => mirror_cli::audit(&key, &source, anchors.as_deref(), concurrency, quiet)?,
        Command::Receipt { key, entry, file } => receipt(&key, entry.as_deref(), &file)?,
        Command::Live {
            key,
            server,
            anchors,
            log,
        } => live(&key, &server, anchors.as_deref(), &log)?,
        Command::Checkpoint { key, file } => {
            let key = parse_key(&key)?;
            let note = read_input(&file)?;
            match open_checkpoint(&note, &key) {
                Ok(cp) => Report {
                    ok: true,
                    summary: format!(
                        "checkpoint OK: {} size {} root {}",
                        cp.origin, cp.size, cp.root
                    ),
                    details: json!({"origin": cp.origin, "tree_size": cp.size, "root": cp.root.to_hex()}),
                },
                Err(e) => Report {
                    ok: false,
                    summary: format!("checkpoint REJECTED: {e}"),
                    details: json!({"error": e.to_string()}),
                },
            }
        }
        Command::Proof {
            key,
            entry,
            leaf_hash: leaf_hex,
            file,
        } => {
            let key = parse_key(&key)?;
            let entry_bytes = match &entry {
                Some(path) => Some(
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
                ),
                None => None,
            };
            let leaf = match (&entry_bytes, leaf_hex) {
                (Some(bytes), _) => leaf_hash(bytes),
                (None, Some(h)) => {
                    Hash::from_hex(&h).context("--leaf-hash must be 64 hex characters")?
                }
                (None, None) => anyhow::bail!("give --entry or --leaf-hash"),
            };
            let proof = match TlogProof::parse(&read_input(&file)?) {
                Ok(p) => p,
                Err(e) => {
                    return Ok(Report {
                        ok: false,
                        summary: format!("inclusion REJECTED: {e}"),
                        details: json!({"error": e.to_string()}),
                    });
                }
            };
            // The entry's bytes state its own index: a proof for another
            // position proves nothing about this entry.
            if let Some(bytes) = &entry_bytes {
                let claimed = ledger_verify::entry::decode_head(bytes).map(|h| h.index);
                if claimed.as_ref().ok() != Some(&proof.index) {
                    let why = match claimed {
                        Ok(i) => format!(
                            "the entry says it is index {i}, the proof is for index {}",
                            proof.index
                        ),
                        Err(e) => format!("the --entry file is not a stored entry: {e}"),
                    };
                    return Ok(Report {
                        ok: false,
                        summary: format!("inclusion REJECTED: {why}"),
                        details: json!({"index": proof.index, "error": why}),
                    });
                }
            }
            match proof.verify(&key, &leaf) {
                Ok(cp) => Report {
                    ok: true,
                    summary: format!(
                        "inclusion OK: {} {} is in {} at size {}{}",
                        if entry_bytes.is_some() {
                            "entry"
                        } else {
                            "the leaf hash at index"
                        },
                        proof.index,
                        cp.origin,
                        cp.size,
                        if proof.extra.is_some() {
                            " (the file's extra data is not covered by the proof)"
                        } else {
                            ""
                        }
                    ),
                    details: json!({"index": proof.index, "tree_size": cp.size, "root": cp.root.to_hex(), "leaf_hash": leaf.to_hex(), "entry_checked": entry_bytes.is_some()}),
                },
                Err(e) => Report {
                    ok: false,
                    summary: format!("inclusion REJECTED for entry {}: {e}", proof.index),
                    details: json!({"index": proof.index, "error": e.to_string()}),
                },
            }
        }
        Command::Consistency {
            key,
            old,
            new,
            proof,
        } => {
            let key = parse_key(&key)?;
            let checkpoints =
                [&old, &new].map(|p| read_input(p).map(|n| open_checkpoint(&n, &key)));
            let [old_cp, new_cp] = checkpoints;
            let (old_cp, new_cp) = match (old_cp?, new_cp?) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) => {
                    return Ok(Report {
                        ok: false,
                        summary: format!("consistency REJECTED: checkpoint: {e}"),
                        details: json!({"error": e.to_string()}),
                    });
                }
            };
            let hashes = read_input(&proof)?
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    B64.decode(l.trim())
                        .ok()
                        .and_then(|b| Hash::from_slice(&b))
                        .ok_or_else(|| {
                            format!(
                                "proof line {:?} is not a base64 SHA-256 hash",
                                l.chars().take(64).collect::<String>()
                            )
                        })
                })
                .collect::<Result<Vec<_>, String>>();
            let hashes = match hashes {
                Ok(h) => h,
                Err(e) => {
                    return Ok(Report {
                        ok: false,
                        summary: format!("consistency REJECTED: {e}"),
                        details: json!({"error": e}),
                    });
                }
            };
            match verify_consistency(
                old_cp.size,
                new_cp.size,
                &hashes,
                &old_cp.root,
                &new_cp.root,
            ) {
                Ok(()) => Report {
                    ok: true,
                    summary: format!(
                        "consistency OK: size {} extends size {}",
                        new_cp.size, old_cp.size
                    ),
                    details: json!({"old_size": old_cp.size, "new_size": new_cp.size}),
                },
                Err(e) => Report {
                    ok: false,
                    summary: format!(
                        "consistency REJECTED between sizes {} and {}: {e} (the log forked or rolled back)",
                        old_cp.size, new_cp.size
                    ),
                    details: json!({"old_size": old_cp.size, "new_size": new_cp.size, "error": e.to_string()}),
                },
            }
        }
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(report) => {
            match cli.format {
                Format::Human => println!("{}", report.summary),
                Format::Json => {
                    let mut v = report.details;
                    v["ok"] = json!(report.ok);
                    println!("{v}");
                }
            }
            if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("ledger-verify: {e:#}");
            ExitCode::from(2)
        }
    }
}

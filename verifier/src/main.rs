//! `ledger-verify`: the auditor's command-line verifier. It trusts nothing but
//! the log's public key: every claim is recomputed from the bytes given.
//!
//! Exit codes: 0 verified, 1 verification failed (tampering or a bad proof),
//! 2 usage or I/O error.

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Parser, Subcommand, ValueEnum};
use ledger_verify::audit::audit_bundle;
use ledger_verify::checkpoint::open_checkpoint;
use ledger_verify::hash::{Hash, leaf_hash};
use ledger_verify::note::NoteVerifier;
use ledger_verify::proof::verify_consistency;
use ledger_verify::tlog_proof::TlogProof;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
    /// Audit an export bundle offline: re-hash every entry, follow the hash
    /// chain, recompute the root at every signed checkpoint, check every
    /// signature and every payload against its commitment.
    Bundle {
        #[arg(long)]
        key: String,
        /// The bundle file (`ledger export -o FILE`).
        file: PathBuf,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
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

fn audit(key: &str, file: &Path, quiet: bool) -> Result<Report> {
    let key = parse_key(key)?;
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let input = std::io::BufReader::with_capacity(1 << 20, f);
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} auditing {pos}/{len} entries [{bar:40}] {per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        )
    };
    let started = std::time::Instant::now();
    let report = audit_bundle(input, &key, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .with_context(|| format!("reading {}", file.display()))?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let rate = report.entries as f64 / secs.max(1e-9);
    let ok = report.clean();
    let summary = if ok {
        format!(
            "bundle OK: {} entries {}..{} of {}, {} checkpoints verified (latest size {}), {} payloads checked, {} redacted; root {} ({:.1} s, {:.0} entries/s)",
            report.entries,
            report.start,
            report.tree_size,
            report.origin,
            report.checkpoints_checked,
            report.verified_size,
            report.payloads_checked,
            report.payloads_redacted,
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
        for f in &report.findings {
            s.push_str(&format!("\n  {:?} at {}: {}", f.kind, f.index, f.detail));
        }
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

fn run(command: Command) -> Result<Report> {
    Ok(match command {
        Command::Bundle { key, file, quiet } => audit(&key, &file, quiet)?,
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
            let leaf = match (entry, leaf_hex) {
                (Some(path), _) => leaf_hash(
                    &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
                ),
                (None, Some(h)) => {
                    Hash::from_hex(&h).context("--leaf-hash must be 64 hex characters")?
                }
                (None, None) => anyhow::bail!("give --entry or --leaf-hash"),
            };
            let proof = TlogProof::parse(&read_input(&file)?).context("parsing the proof file")?;
            match proof.verify(&key, &leaf) {
                Ok(cp) => Report {
                    ok: true,
                    summary: format!(
                        "inclusion OK: entry {} is in {} at size {}",
                        proof.index, cp.origin, cp.size
                    ),
                    details: json!({"index": proof.index, "tree_size": cp.size, "root": cp.root.to_hex(), "leaf_hash": leaf.to_hex()}),
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
                        .with_context(|| format!("proof line {l:?} is not a base64 SHA-256 hash"))
                })
                .collect::<Result<Vec<_>>>()?;
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

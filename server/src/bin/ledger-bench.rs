//! `ledger-bench`: the ingest load generator.
//!
//! Starts a `ledgerd` on a scratch directory (or uses `--server`), drives it
//! with N concurrent `AppendStream`s of fixed-size events, and prints:
//! 1. saturation throughput (events/s) with ack latency percentiles;
//! 2. ack latency at a fixed fraction of that rate (default one half);
//! 3. the baseline: the same encoded events written straight into a fresh
//!    RocksDB with `sync = true` batches of the mean group size the server
//!    used, and the ledger/baseline ratio.
//!
//! Figures only; nothing here asserts on time.

use anyhow::{Context, Result, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use ledger_proto::v1::ingest_client::IngestClient;
use ledger_proto::v1::{AppendRequest, AuditEvent, EventKind, RiskTier, append_response};
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Mutex, Semaphore, mpsc};
use tonic::transport::{Channel, Endpoint};

#[derive(Parser, Clone)]
#[command(
    name = "ledger-bench",
    version,
    about = "Load generator for ledgerd: events/s, ack latency, and a raw RocksDB baseline"
)]
struct Cli {
    /// Use this running server instead of starting one (then there is no
    /// batch-size figure and no baseline unless --baseline-batch is given).
    #[arg(long)]
    server: Option<String>,
    /// Scratch directory for the server's data and the baseline database.
    #[arg(long, default_value = "/tmp/ledger-bench")]
    dir: PathBuf,
    /// Concurrent append streams.
    #[arg(long, default_value_t = 64)]
    streams: usize,
    /// gRPC connections the streams are spread over.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Encoded size of each event in bytes (the payload is sized to fit).
    #[arg(long, default_value_t = 512)]
    event_bytes: usize,
    /// Events in flight per stream (unacknowledged).
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Seconds of each measured phase (after a 1 s warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Rate of the latency phase as a fraction of the measured throughput.
    #[arg(long, default_value_t = 0.5)]
    latency_fraction: f64,
    /// Batch size for the baseline when --server is given.
    #[arg(long)]
    baseline_batch: Option<usize>,
    /// Skip the baseline.
    #[arg(long)]
    no_baseline: bool,
}

/// An event of exactly `size` encoded bytes.
fn event(stream: usize, seq: u64, size: usize, run: &str) -> AuditEvent {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let mut e = AuditEvent {
        event_id: format!("{run}-{stream}-{seq}"),
        correlation_id: format!("{:016x}{:016x}", stream as u64 + 1, seq / 16 + 1),
        span_id: format!("{:016x}", seq + 1),
        parent_span_id: String::new(),
        agent_id: format!("agent-{stream}"),
        session_id: format!("session-{stream}"),
        principal: "bench@example.com".into(),
        kind: EventKind::ToolCall as i32,
        tool_name: format!("tool-{}", seq % 8),
        action: "execute".into(),
        resource: "db://bench/table".into(),
        risk_tier: RiskTier::Medium as i32,
        outcome: 0,
        occurred_at: Some(prost_types::Timestamp {
            seconds: now.as_secs() as i64,
            nanos: now.subsec_nanos() as i32,
        }),
        attributes: Default::default(),
        payload: Vec::new(),
        payload_content_type: "application/octet-stream".into(),
    };
    let base = e.encoded_len();
    // Field tag + a length varint of up to 2 bytes.
    let fill = size.saturating_sub(base + 3);
    e.payload = vec![b'x'; fill];
    while e.encoded_len() > size && !e.payload.is_empty() {
        e.payload.pop();
    }
    e
}

struct Phase {
    acks: u64,
    rejected: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

/// Runs `streams` AppendStreams for `duration`, each keeping up to `window`
/// events in flight; with `rate` set, paces sends to that total rate.
async fn drive(
    channels: &[Channel],
    cli: &Cli,
    run: &str,
    duration: Duration,
    rate: Option<f64>,
) -> Result<Phase> {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let mut tasks = Vec::new();
    for s in 0..cli.streams {
        let channel = channels[s % channels.len()].clone();
        let (stop, measuring, acks, rejected, hist) = (
            stop.clone(),
            measuring.clone(),
            acks.clone(),
            rejected.clone(),
            hist.clone(),
        );
        let (size, window, run) = (cli.event_bytes, cli.window, run.to_string());
        let per_stream = rate.map(|r| r / cli.streams as f64);
        tasks.push(tokio::spawn(async move {
            let mut client = IngestClient::new(channel);
            let (tx, rx) = mpsc::channel::<AppendRequest>(window);
            let mut responses = client
                .append_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?
                .into_inner();
            let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<Instant>();
            let credits = Arc::new(Semaphore::new(window));
            let sender = {
                let (stop, credits) = (stop.clone(), credits.clone());
                tokio::spawn(async move {
                    let mut seq = 0u64;
                    let start = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(r) = per_stream {
                            // Pace: send event `seq` at start + seq/r, with a
                            // random-free fixed schedule (open loop).
                            let due = start + Duration::from_secs_f64(seq as f64 / r);
                            tokio::time::sleep_until(due.into()).await;
                        }
                        let Ok(permit) = credits.acquire().await else {
                            break;
                        };
                        permit.forget();
                        let req = AppendRequest {
                            log: String::new(),
                            event: Some(event(s, seq, size, &run)),
                        };
                        let _ = sent_tx.send(Instant::now());
                        if tx.send(req).await.is_err() {
                            break;
                        }
                        seq += 1;
                    }
                })
            };
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            while let Some(resp) = responses.message().await? {
                let sent = sent_rx.recv().await.context("ack without a send")?;
                credits.add_permits(1);
                if !measuring.load(Ordering::Relaxed) {
                    continue;
                }
                match resp.result {
                    Some(append_response::Result::Ack(_)) => {
                        acks.fetch_add(1, Ordering::Relaxed);
                        local.saturating_record(sent.elapsed().as_micros() as u64);
                    }
                    _ => {
                        rejected.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            sender.abort();
            hist.lock().await.add(&local)?;
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(duration).await;
    let n = acks.load(Ordering::Relaxed);
    let r = rejected.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    let latency = Arc::try_unwrap(hist)
        .map_err(|_| anyhow::anyhow!("histogram still shared"))?
        .into_inner();
    Ok(Phase {
        acks: n,
        rejected: r,
        elapsed,
        latency,
    })
}

fn report(name: &str, p: &Phase) -> f64 {
    let rate = p.acks as f64 / p.elapsed.as_secs_f64();
    let ms = |q: f64| p.latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{name:<12} {rate:>10.0} events/s   ack latency p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  max {:>7.2} ms   ({} acked, {} rejected in {:.1} s)",
        ms(0.5),
        ms(0.99),
        ms(0.999),
        p.latency.max() as f64 / 1000.0,
        p.acks,
        p.rejected,
        p.elapsed.as_secs_f64()
    );
    rate
}

/// The baseline: the same encoded events, keyed by index, in sync batches.
fn baseline(dir: &Path, cli: &Cli, batch: usize, seconds: u64) -> Result<f64> {
    let path = dir.join("baseline-db");
    let _ = std::fs::remove_dir_all(&path);
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    let db = rocksdb::DB::open(&opts, &path)?;
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(true);
    let events: Vec<Vec<u8>> = (0..batch)
        .map(|i| event(0, i as u64, cli.event_bytes, "baseline").encode_to_vec())
        .collect();
    let start = Instant::now();
    let mut index = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        let mut b = rocksdb::WriteBatch::default();
        for e in &events {
            b.put(index.to_be_bytes(), e);
            index += 1;
        }
        db.write_opt(b, &wo)?;
    }
    let rate = index as f64 / start.elapsed().as_secs_f64();
    drop(db);
    let _ = std::fs::remove_dir_all(&path);
    Ok(rate)
}

struct Spawned {
    child: Child,
    grpc: String,
    metrics: String,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_server(dir: &Path) -> Result<Spawned> {
    let data = dir.join("data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(dir)?;
    let ready = dir.join("ready.json");
    let _ = std::fs::remove_file(&ready);
    let exe = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .join("ledgerd");
    let child = Command::new(&exe)
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .arg("--ready-file")
        .arg(&ready)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let mut spawned = Spawned {
        child,
        grpc: String::new(),
        metrics: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            let v: serde_json::Value = serde_json::from_str(&text)?;
            spawned.grpc = format!("http://{}", v["grpc"].as_str().unwrap_or_default());
            spawned.metrics = v["metrics"].as_str().unwrap_or_default().to_string();
            return Ok(spawned);
        }
        if let Some(status) = spawned.child.try_wait()? {
            bail!("ledgerd exited: {status}");
        }
        if Instant::now() > deadline {
            bail!("ledgerd not ready after 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Mean commit group size so far, from the server's metrics.
fn mean_batch(metrics_addr: &str) -> Result<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(metrics_addr)?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let sum = value("ledger_commit_batch_size_sum").context("no batch size sum")?;
    let count = value("ledger_commit_batch_size_count").context("no batch size count")?;
    Ok(if count > 0.0 { sum / count } else { 0.0 })
}

async fn connect(addr: &str, n: usize) -> Result<Vec<Channel>> {
    let mut v = Vec::new();
    for _ in 0..n.max(1) {
        v.push(
            Endpoint::from_shared(addr.to_string())?
                .tcp_nodelay(true)
                .initial_stream_window_size(Some(4 << 20))
                .initial_connection_window_size(Some(16 << 20))
                .connect()
                .await
                .with_context(|| format!("connecting to {addr}"))?,
        );
    }
    Ok(v)
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let spawned = match &cli.server {
        Some(_) => None,
        None => Some(spawn_server(&cli.dir)?),
    };
    let addr = cli
        .server
        .clone()
        .or_else(|| spawned.as_ref().map(|s| s.grpc.clone()))
        .context("no server")?;
    let channels = connect(&addr, cli.connections).await?;
    let run = format!(
        "b{}",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)?
            .as_millis()
    );
    println!(
        "ledger-bench: {} streams over {} connections, {}-byte events, window {}, {} s per phase, server {addr}",
        cli.streams, cli.connections, cli.event_bytes, cli.window, cli.seconds
    );
    let seconds = Duration::from_secs(cli.seconds);
    let sat = drive(&channels, &cli, &format!("{run}s"), seconds, None).await?;
    let rate = report("saturation", &sat);
    let batch = match (&spawned, cli.baseline_batch) {
        (_, Some(b)) => Some(b as f64),
        (Some(s), None) => Some(mean_batch(&s.metrics)?),
        (None, None) => None,
    };
    let target = rate * cli.latency_fraction;
    let lat = drive(&channels, &cli, &format!("{run}l"), seconds, Some(target)).await?;
    report(&format!("{:.0}% rate", cli.latency_fraction * 100.0), &lat);
    drop(channels);
    drop(spawned);
    if let (Some(batch), false) = (batch, cli.no_baseline) {
        let b = (batch.round() as usize).max(1);
        let base = baseline(&cli.dir, &cli, b, cli.seconds)?;
        println!(
            "baseline     {base:>10.0} events/s   raw RocksDB, sync batches of {b} (mean group size of the saturation run)"
        );
        println!("ratio        {:>10.2}   ledger / baseline", rate / base);
    }
    Ok(())
}

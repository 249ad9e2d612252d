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

#[path = "ledger-bench/console.rs"]
mod console;
#[path = "ledger-bench/mirror.rs"]
mod mirror;
#[path = "ledger-bench/otlp.rs"]
mod otlp;
#[path = "ledger-bench/peer.rs"]
mod peer;
#[path = "ledger-bench/wire.rs"]
mod wire;

use anyhow::{Context, Result, bail};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use ledger_proto::v1::{AuditEvent, EventKind, RiskTier};
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Mutex, Semaphore, mpsc};
use tonic::transport::{Channel, Endpoint};
use wire::{Answer, Encoded, Gen};

#[derive(Parser)]
#[command(
    name = "ledger-bench",
    version,
    about = "Load generator for ledgerd: ingest throughput and latency against a raw RocksDB baseline, and timeline query speed"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Append throughput, ack latency, and the raw RocksDB baseline.
    Ingest(IngestArgs),
    /// Fill a log, then time timelines: one large trace, and many small
    /// ones queried concurrently.
    Query(QueryArgs),
    /// Time the full offline audit of a bundle against plain SHA-256 of
    /// the same file on this machine, in the same run.
    Audit(AuditArgs),
    /// The peer teams build instead of a ledger: a hash-chained audit table
    /// in PostgreSQL (chain computed in the database, serialised on the
    /// chain head, synchronous_commit on), measured beside ledgerd in the
    /// same run: durable ingest by 64 writers, and a 1,000-event timeline.
    Peer(PeerArgs),
    /// The object-storage mirror: ingest with it off and on, its lag at a
    /// fixed rate, ack latency with ack_after_mirror, restore speed, and
    /// `ledger-verify mirror` against `bundle`.
    Mirror(MirrorArgs),
    /// OTLP ingest: a Rust OTLP/gRPC load generator and the Python
    /// OpenTelemetry exporter against AppendStream, and the Python SDK's
    /// streaming appender.
    Otlp(OtlpArgs),
    /// The incident console: time to first render of a large trace with
    /// every proof verified in headless Chromium, and the bytes it moved.
    Console(ConsoleArgs),
}

#[derive(Args, Clone)]
struct ConsoleArgs {
    /// Scratch directory for the server's data.
    #[arg(long, default_value = "/tmp/ledger-bench")]
    dir: PathBuf,
    /// Events in the trace.
    #[arg(long, default_value_t = 1000)]
    events: usize,
    /// Other events in the log (so proofs have a realistic depth).
    #[arg(long, default_value_t = 100_000)]
    noise: usize,
    /// Fresh page loads to time.
    #[arg(long, default_value_t = 7)]
    runs: usize,
}

#[derive(Args, Clone)]
struct OtlpArgs {
    #[command(flatten)]
    load: Load,
    /// Seconds of each phase.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Concurrent Export calls of the Rust load generator.
    #[arg(long, default_value_t = 16)]
    otlp_workers: usize,
}

#[derive(Args, Clone)]
struct MirrorArgs {
    #[command(flatten)]
    load: Load,
    /// Seconds of the lag and the ack_after_mirror phases.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Rate of the lag phase, events/s.
    #[arg(long, default_value_t = 50_000.0)]
    rate: f64,
    /// Rate of the ack_after_mirror phase, events/s.
    #[arg(long, default_value_t = 2_000.0)]
    ack_rate: f64,
    /// S3 endpoint of the mirror (default: a scratch directory).
    #[arg(long)]
    s3_endpoint: Option<String>,
    /// Bucket of the S3 mirror (must exist).
    #[arg(long, default_value = "ledger-bench")]
    bucket: String,
    /// Skip the saturation phases (an S3 emulator cannot absorb them).
    #[arg(long)]
    no_saturation: bool,
    /// Saturation slices each way: a server with the mirror off and one
    /// with it on run side by side and take the load in turns (on, off,
    /// off, on, and again), so that the machine's drift falls on both alike.
    /// The ratio is the mirror-on side's rate over the mirror-off side's.
    #[arg(long, default_value_t = 6)]
    slices: usize,
    /// Seconds each saturation slice counts (after a second's ramp).
    #[arg(long, default_value_t = 5)]
    slice_seconds: u64,
    /// Compare two builds instead, both with the mirror on: the side that
    /// would have the mirror off runs this ledgerd binary (the ratio is
    /// then this bench's ledgerd over it). Only the saturation slices run.
    #[arg(long, conflicts_with = "no_saturation")]
    compare_with: Option<PathBuf>,
    /// Run only the saturation comparison (and its warm-up).
    #[arg(long, conflicts_with = "no_saturation")]
    saturation_only: bool,
    /// Measure the saturation ratio paired instead of in slices: both
    /// servers take their full load at once, each with its own load
    /// generator on half the CPUs, the halves swapped every
    /// `--slice-seconds` for `2 × --slices` periods (Linux).
    #[arg(long)]
    paired: bool,
    /// Seconds of a saturation phase with the mirror on before the slices,
    /// not counted (0: none).
    #[arg(long, default_value_t = 5)]
    warmup: u64,
}

#[derive(Args, Clone)]
struct AuditArgs {
    /// The bundle file (`ledger export -o FILE`).
    bundle: PathBuf,
    /// The log's verifier key.
    #[arg(long)]
    key: String,
}

#[derive(Args, Clone)]
struct Load {
    /// Use this running server instead of starting one.
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
    /// Ask for a receipt (signed checkpoint + inclusion proof) with every ack.
    #[arg(long)]
    receipts: bool,
    /// Send `AppendBatch` calls of up to this many events instead of one
    /// `AppendStream` message per event (1: streams). Each stream sends, in
    /// one batch, the events it has ready (up to this many) when it has
    /// credit; latency counts from when an event was ready, so it includes
    /// any wait for the batch.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// The process id of the server this bench started (its threads' CPU
    /// time is then reported per event).
    #[arg(skip)]
    server_pid: Option<u32>,
}

#[derive(Args, Clone)]
struct IngestArgs {
    #[command(flatten)]
    load: Load,
    /// Seconds of each measured phase (after a 1 s warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Rate of the latency phase as a fraction of the measured throughput.
    #[arg(long, default_value_t = 0.5)]
    latency_fraction: f64,
    /// Only a latency phase at this many events/s (no saturation run, no
    /// baseline).
    #[arg(long)]
    rate: Option<f64>,
    /// Batch size for the baseline when --server is given.
    #[arg(long)]
    baseline_batch: Option<usize>,
    /// Skip the baseline.
    #[arg(long)]
    no_baseline: bool,
    /// The latency-vs-rate curve instead: each of these rates (events/s,
    /// comma-separated; `sat` for saturation) on a fresh server, `--repeat`
    /// times, then a table of the medians and ranges.
    #[arg(long, value_delimiter = ',')]
    curve: Vec<String>,
    /// Runs per point of `--curve` (this machine's figures vary from run to
    /// run; the median of several is the figure to quote).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
}

#[derive(Args, Clone)]
struct PeerArgs {
    #[command(flatten)]
    load: Load,
    /// Seconds of each ingest phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Rows (and ledger entries) of the timeline phase.
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    /// PostgreSQL's bin directory (default: `pg_config --bindir`, else the
    /// newest /usr/lib/postgresql/*/bin).
    #[arg(long)]
    pg_bin: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct QueryArgs {
    #[command(flatten)]
    load: Load,
    /// Entries to fill the log with.
    #[arg(long, default_value_t = 10_000_000)]
    entries: u64,
    /// Events of the large trace, spread evenly through the log.
    #[arg(long, default_value_t = 1000)]
    trace_events: u64,
    /// Events per small trace.
    #[arg(long, default_value_t = 10)]
    small_trace_events: u64,
    /// Concurrent small timeline queries.
    #[arg(long, default_value_t = 1000)]
    concurrent: usize,
    /// Seconds of the concurrent query phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Reuse the data left in --dir by an earlier fill with the same settings.
    #[arg(long)]
    reuse: bool,
}

/// When a drive ends.
#[derive(Clone, Copy)]
enum Until {
    /// After a warm-up second, measure for this long.
    Elapsed(Duration),
    /// Send exactly this many events per stream, all measured.
    Count(u64),
}

/// An event of exactly `size` encoded bytes.
fn event(stream: usize, seq: u64, size: usize, run: &str) -> AuditEvent {
    sized(
        AuditEvent {
            event_id: format!("{run}-{stream}-{seq}"),
            correlation_id: format!("{:016x}{:016x}", stream as u64 + 1, seq / 16 + 1),
            span_id: format!("{:016x}", seq + 1),
            agent_id: format!("agent-{stream}"),
            session_id: format!("session-{stream}"),
            tool_name: format!("tool-{}", seq % 8),
            ..template()
        },
        size,
    )
}

/// Fields every generated event shares.
fn template() -> AuditEvent {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    AuditEvent {
        principal: "bench@example.com".into(),
        kind: EventKind::ToolCall as i32,
        action: "execute".into(),
        resource: "db://bench/table".into(),
        risk_tier: RiskTier::Medium as i32,
        occurred_at: Some(prost_types::Timestamp {
            seconds: now.as_secs() as i64,
            nanos: now.subsec_nanos() as i32,
        }),
        payload_content_type: "application/octet-stream".into(),
        ..Default::default()
    }
}

/// Pads the payload so the event encodes to exactly `size` bytes (or as
/// close as its fixed fields allow).
fn sized(mut e: AuditEvent, size: usize) -> AuditEvent {
    let base = e.encoded_len();
    // Field tag + a length varint of up to 2 bytes.
    e.payload = vec![b'x'; size.saturating_sub(base + 3)];
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
    /// The server's CPU seconds over the measured window, by thread group
    /// (when this bench started the server, on Linux).
    cpu: Option<Vec<(&'static str, f64)>>,
}

/// Thread groups of ledgerd, by thread name prefix.
const THREAD_GROUPS: [(&str, &str); 5] = [
    ("sequencer", "sequencer"),
    ("tokio-rt-worker", "gRPC workers"),
    ("indexer", "indexer"),
    ("rocksdb", "RocksDB flush"),
    ("mirror", "mirror"),
];

/// CPU seconds (user + system) of each thread group of process `pid` so
/// far, from /proc; threads of no group count as "other". None where
/// /proc cannot be read.
fn thread_cpu(pid: Option<u32>) -> Option<Vec<(&'static str, f64)>> {
    let pid = pid?;
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let mut out: Vec<(&'static str, f64)> = THREAD_GROUPS
        .iter()
        .map(|(_, g)| (*g, 0.0))
        .chain([("other", 0.0)])
        .collect();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(stat) = std::fs::read_to_string(task.ok()?.path().join("stat")) else {
            continue; // The thread ended.
        };
        // `pid (comm) state ...`: comm may hold spaces, so split at the
        // last ')'; utime and stime are fields 14 and 15.
        let (head, rest) = stat.rsplit_once(')')?;
        let comm = head.split_once('(')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let used: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        let group = THREAD_GROUPS
            .iter()
            .position(|(prefix, _)| comm.starts_with(prefix))
            .unwrap_or(THREAD_GROUPS.len());
        out[group].1 += used / ticks;
    }
    Some(out)
}

/// `after - before`, group by group.
fn cpu_between(
    before: Option<Vec<(&'static str, f64)>>,
    after: Option<Vec<(&'static str, f64)>>,
) -> Option<Vec<(&'static str, f64)>> {
    let (b, a) = (before?, after?);
    Some(
        a.iter()
            .zip(&b)
            .map(|((g, x), (_, y))| (*g, x - y))
            .collect(),
    )
}

/// Runs `load.streams` AppendStreams, each keeping up to `load.window`
/// events in flight; with `rate` set, paces sends to that total rate.
async fn drive(
    channels: &[Channel],
    load: &Load,
    make: Gen,
    until: Until,
    rate: Option<f64>,
) -> Result<Phase> {
    let counters = Counters {
        stop: Arc::new(AtomicBool::new(false)),
        measuring: Arc::new(AtomicBool::new(matches!(until, Until::Count(_)))),
        acks: Arc::new(AtomicU64::new(0)),
        rejected: Arc::new(AtomicU64::new(0)),
        hist: Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
            1, 60_000_000, 3,
        )?)),
    };
    let quota = match until {
        Until::Count(n) => n,
        Until::Elapsed(_) => u64::MAX,
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..load.streams {
        let channel = channels[s % channels.len()].clone();
        let (c, make) = (counters.clone(), make.clone());
        let window = load.window;
        let receipts = load.receipts;
        let per_stream = rate.map(|r| r / load.streams as f64);
        if load.batch > 1 {
            let shape = BatchShape {
                stream: s,
                batch: load.batch,
                window,
                receipts,
                per_stream,
                quota,
            };
            tasks.push(tokio::spawn(batch_stream(channel, make, shape, c)));
            continue;
        }
        tasks.push(tokio::spawn(stream_load(
            channel,
            make,
            StreamShape {
                stream: s,
                window,
                receipts,
                per_stream,
                quota,
            },
            c,
        )));
    }
    let mut cpu_before = thread_cpu(load.server_pid);
    let start = match until {
        Until::Elapsed(d) => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            counters.measuring.store(true, Ordering::Relaxed);
            cpu_before = thread_cpu(load.server_pid);
            let start = Instant::now();
            tokio::time::sleep(d).await;
            Some(start)
        }
        Until::Count(_) => None,
    };
    let (n, r) = counters.counts();
    let cpu = cpu_between(cpu_before, thread_cpu(load.server_pid));
    let elapsed = start.unwrap_or(started).elapsed();
    counters
        .stop
        .store(matches!(until, Until::Elapsed(_)), Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    let (n, r, elapsed) = match until {
        Until::Count(_) => {
            let (n, r) = counters.counts();
            (n, r, started.elapsed())
        }
        Until::Elapsed(_) => (n, r, elapsed),
    };
    let latency = Arc::try_unwrap(counters.hist)
        .map_err(|_| anyhow::anyhow!("histogram still shared"))?
        .into_inner();
    Ok(Phase {
        acks: n,
        rejected: r,
        elapsed,
        latency,
        cpu,
    })
}

/// How one stream sends.
struct StreamShape {
    stream: usize,
    window: usize,
    receipts: bool,
    /// Events/s of this stream (None: as fast as the window allows).
    per_stream: Option<f64>,
    quota: u64,
}

/// One AppendStream, driven by one task: it sends every event that is due
/// (open loop at `per_stream`, or whenever the window has room), keeps the
/// send times of the events in flight in order, and times each ack against
/// its event's send. One task and no channels of its own per stream, so the
/// load generator spends little of the machine it shares with the server.
async fn stream_load(channel: Channel, make: Gen, shape: StreamShape, c: Counters) -> Result<()> {
    use std::collections::VecDeque;
    // Never full: at most `window` requests are unanswered.
    let (tx, rx) = mpsc::channel::<Encoded>(shape.window + 1);
    let mut responses =
        wire::append_stream(channel, tokio_stream::wrappers::ReceiverStream::new(rx)).await?;
    let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(shape.window);
    let start = Instant::now();
    let due = |n: u64| {
        shape
            .per_stream
            .map(|r| start + Duration::from_secs_f64(n as f64 / r))
    };
    let (mut seq, mut received) = (0u64, 0u64);
    loop {
        if c.stop.load(Ordering::Relaxed) || received >= shape.quota {
            break;
        }
        // Send what is due and fits the window.
        let now = Instant::now();
        while seq < shape.quota
            && in_flight.len() < shape.window
            && due(seq).is_none_or(|d| d <= now)
            && !c.stop.load(Ordering::Relaxed)
        {
            let req = Encoded::new(|b| make(shape.stream, seq, b), shape.receipts);
            in_flight.push_back(Instant::now());
            if tx.try_send(req).is_err() {
                bail!("stream {}: the request channel closed", shape.stream);
            }
            seq += 1;
        }
        let next = (seq < shape.quota && in_flight.len() < shape.window)
            .then(|| due(seq))
            .flatten();
        tokio::select! {
            biased;
            resp = responses.message() => {
                let Some(resp) = resp? else { break };
                let sent = in_flight.pop_front().context("ack without a send")?;
                received += 1;
                c.record(&resp, sent.elapsed(), &mut local);
            }
            _ = tokio::time::sleep_until(next.unwrap_or(now).into()), if next.is_some() => {}
        }
    }
    drop(tx);
    c.hist.lock().await.add(&local)?;
    Ok(())
}

/// What a load phase counts, shared by its streams.
#[derive(Clone)]
struct Counters {
    stop: Arc<AtomicBool>,
    measuring: Arc<AtomicBool>,
    acks: Arc<AtomicU64>,
    rejected: Arc<AtomicU64>,
    hist: Arc<Mutex<Histogram<u64>>>,
}

impl Counters {
    /// Counts one answer while measuring: an ack, with its `latency` in
    /// `local`, or a rejection.
    fn record(&self, r: &Answer, latency: Duration, local: &mut Histogram<u64>) {
        if !self.measuring.load(Ordering::Relaxed) {
            return;
        }
        if r.is_ack() {
            self.acks.fetch_add(1, Ordering::Relaxed);
            local.saturating_record(latency.as_micros() as u64);
        } else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Acks and rejections counted so far.
    fn counts(&self) -> (u64, u64) {
        (
            self.acks.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
        )
    }
}

/// How one batching stream sends.
struct BatchShape {
    stream: usize,
    batch: usize,
    window: usize,
    receipts: bool,
    per_stream: Option<f64>,
    quota: u64,
}

/// One stream of `AppendBatch` calls: takes the events that are ready (all
/// that are due, up to the batch size and the credit left), sends them as
/// one call, and keeps up to `window` events in flight over several calls.
async fn batch_stream(channel: Channel, make: Gen, shape: BatchShape, c: Counters) -> Result<()> {
    let credits = Arc::new(Semaphore::new(shape.window));
    let local = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let mut calls = tokio::task::JoinSet::new();
    let start = Instant::now();
    let mut seq = 0u64;
    while seq < shape.quota && !c.stop.load(Ordering::Relaxed) {
        let due_of = |n: u64| {
            shape
                .per_stream
                .map(|r| start + Duration::from_secs_f64(n as f64 / r))
        };
        if let Some(due) = due_of(seq) {
            tokio::time::sleep_until(due.into()).await;
        }
        let Ok(first) = credits.clone().acquire_owned().await else {
            break;
        };
        first.forget();
        // Everything due by now (every event, when not paced), as far as
        // batch size, credit and quota allow.
        let now = Instant::now();
        let mut ready = vec![due_of(seq).unwrap_or(now)];
        while ready.len() < shape.batch && seq + (ready.len() as u64) < shape.quota {
            let n = seq + ready.len() as u64;
            let due = due_of(n).unwrap_or(now);
            if due > now {
                break;
            }
            let Ok(p) = credits.try_acquire() else { break };
            p.forget();
            ready.push(due);
        }
        let req = Encoded::new(
            |b| {
                for i in 0..ready.len() as u64 {
                    make(shape.stream, seq + i, b);
                }
            },
            shape.receipts,
        );
        seq += ready.len() as u64;
        let (channel, credits, local, c) =
            (channel.clone(), credits.clone(), local.clone(), c.clone());
        calls.spawn(async move {
            let results = wire::append_batch(channel, req).await?;
            credits.add_permits(ready.len());
            let mut h = local.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            let now = Instant::now();
            for (r, ready) in results.iter().zip(&ready) {
                c.record(r, now - *ready, &mut h);
            }
            anyhow::Ok(())
        });
        while let Some(done) = calls.try_join_next() {
            done??;
        }
    }
    while let Some(done) = calls.join_next().await {
        done??;
    }
    let local = Arc::try_unwrap(local)
        .map_err(|_| anyhow::anyhow!("histogram still shared"))?
        .into_inner()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    c.hist.lock().await.add(&local)?;
    Ok(())
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
    if let Some(us) = cpu_per_event(p) {
        println!("{:<12} {}", "", cpu_line(&us));
    }
    rate
}

/// The server's CPU microseconds per event by thread group, as a report
/// line shows them (groups under 0.05 µs left out of the list, not the
/// total).
fn cpu_line(us: &[(&'static str, f64)]) -> String {
    let parts: Vec<String> = us
        .iter()
        .filter(|(_, v)| *v >= 0.05)
        .map(|(g, v)| format!("{g} {v:.1}"))
        .collect();
    let total: f64 = us.iter().map(|(_, v)| v).sum();
    format!(
        "server CPU per event, µs: {} (total {total:.1})",
        parts.join(", ")
    )
}

/// The server's CPU microseconds per acked event, by thread group.
fn cpu_per_event(p: &Phase) -> Option<Vec<(&'static str, f64)>> {
    let cpu = p.cpu.as_ref()?;
    (p.acks > 0).then(|| {
        cpu.iter()
            .map(|(g, s)| (*g, s * 1e6 / p.acks as f64))
            .collect()
    })
}

/// The baseline: the same encoded events, keyed by index, in sync batches.
fn baseline(dir: &Path, event_bytes: usize, batch: usize, seconds: u64) -> Result<f64> {
    let path = dir.join("baseline-db");
    let _ = std::fs::remove_dir_all(&path);
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    let db = rocksdb::DB::open(&opts, &path)?;
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(true);
    let events: Vec<Vec<u8>> = (0..batch)
        .map(|i| event(0, i as u64, event_bytes, "baseline").encode_to_vec())
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
    verifier_key: String,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_server(dir: &Path, fresh: bool) -> Result<Spawned> {
    spawn_server_with(dir, fresh, None)
}

/// [`spawn_server`] with a TOML configuration.
fn spawn_server_with(dir: &Path, fresh: bool, config: Option<&str>) -> Result<Spawned> {
    let exe = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .join("ledgerd");
    spawn_exe(&exe, dir, fresh, config)
}

/// [`spawn_server_with`], from the ledgerd binary `exe`.
fn spawn_exe(exe: &Path, dir: &Path, fresh: bool, config: Option<&str>) -> Result<Spawned> {
    let data = dir.join("data");
    if fresh {
        let _ = std::fs::remove_dir_all(&data);
    }
    std::fs::create_dir_all(dir)?;
    let ready = dir.join("ready.json");
    let _ = std::fs::remove_file(&ready);
    let mut cmd = Command::new(exe);
    if let Some(c) = config {
        let path = dir.join("bench.toml");
        std::fs::write(&path, c)?;
        cmd.arg("--config").arg(path);
    }
    let child = cmd
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
        verifier_key: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            let v: serde_json::Value = serde_json::from_str(&text)?;
            spawned.grpc = format!("http://{}", v["grpc"].as_str().unwrap_or_default());
            spawned.metrics = v["metrics"].as_str().unwrap_or_default().to_string();
            spawned.verifier_key = v["logs"][0]["verifier_key"]
                .as_str()
                .unwrap_or_default()
                .to_string();
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

async fn start(load: &Load, fresh: bool) -> Result<(Option<Spawned>, String, Vec<Channel>)> {
    let spawned = match &load.server {
        Some(_) => None,
        None => Some(spawn_server(&load.dir, fresh)?),
    };
    let addr = load
        .server
        .clone()
        .or_else(|| spawned.as_ref().map(|s| s.grpc.clone()))
        .context("no server")?;
    let channels = connect(&addr, load.connections).await?;
    Ok((spawned, addr, channels))
}

fn run_id() -> String {
    let ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    format!("b{ms}")
}

async fn ingest(a: IngestArgs) -> Result<()> {
    let (spawned, addr, channels) = start(&a.load, true).await?;
    let load = &Load {
        server_pid: spawned.as_ref().map(|s| s.child.id()),
        ..a.load.clone()
    };
    println!(
        "ledger-bench ingest: {} streams over {} connections, {}-byte events, window {}, {}, {} s per phase{}, server {addr}",
        load.streams,
        load.connections,
        load.event_bytes,
        load.window,
        if load.batch > 1 {
            format!("AppendBatch of up to {}", load.batch)
        } else {
            "AppendStream".to_string()
        },
        a.seconds,
        if load.receipts { ", receipts" } else { "" }
    );
    let gen_for = |run: String| -> Gen { wire::bench_events(run, a.load.event_bytes) };
    let seconds = Until::Elapsed(Duration::from_secs(a.seconds));
    let run = run_id();
    if !a.curve.is_empty() {
        drop(channels);
        drop(spawned);
        return curve(&a).await;
    }
    if let Some(r) = a.rate {
        let lat = drive(
            &channels,
            load,
            gen_for(format!("{run}r")),
            seconds,
            Some(r),
        )
        .await?;
        report(&format!("{r:.0}/s"), &lat);
        return Ok(());
    }
    let sat = drive(&channels, load, gen_for(format!("{run}s")), seconds, None).await?;
    let rate = report("saturation", &sat);
    let batch = match (&spawned, a.baseline_batch) {
        (_, Some(b)) => Some(b as f64),
        (Some(s), None) => Some(mean_batch(&s.metrics)?),
        (None, None) => None,
    };
    let target = rate * a.latency_fraction;
    let lat = drive(
        &channels,
        load,
        gen_for(format!("{run}l")),
        seconds,
        Some(target),
    )
    .await?;
    report(&format!("{:.0}% rate", a.latency_fraction * 100.0), &lat);
    drop(channels);
    drop(spawned);
    if let (Some(batch), false) = (batch, a.no_baseline) {
        let b = (batch.round() as usize).max(1);
        let base = baseline(&load.dir, load.event_bytes, b, a.seconds)?;
        println!(
            "baseline     {base:>10.0} events/s   raw RocksDB, sync batches of {b} (mean group size of the saturation run)"
        );
        println!("ratio        {:>10.2}   ledger / baseline", rate / base);
    }
    Ok(())
}

/// One point of a curve: a rate (None: saturation) and what each run gave.
struct Point {
    rate: Option<f64>,
    /// Per run: events/s, p50 and p99 ms, and the server's CPU µs per
    /// event in the sequencer and in all (NaN where not measured).
    runs: Vec<[f64; 5]>,
}

/// `ingest --curve`: every point on a fresh server, `repeat` times over,
/// then the median (and range) of throughput, p50 and p99 per point.
async fn curve(a: &IngestArgs) -> Result<()> {
    let mut points = Vec::new();
    for r in &a.curve {
        let rate = match r.as_str() {
            "sat" | "saturation" => None,
            n => Some(
                n.parse::<f64>()
                    .with_context(|| format!("--curve: {n:?} is not a rate"))?,
            ),
        };
        points.push(Point {
            rate,
            runs: Vec::new(),
        });
    }
    let size = a.load.event_bytes;
    for n in 0..a.repeat.max(1) {
        for p in points.iter_mut() {
            let (spawned, _, channels) = start(&a.load, true).await?;
            let load = Load {
                server_pid: spawned.as_ref().map(|s| s.child.id()),
                ..a.load.clone()
            };
            let run = format!("{}c{n}", run_id());
            let make = wire::bench_events(run, size);
            let until = Until::Elapsed(Duration::from_secs(a.seconds));
            let phase = drive(&channels, &load, make, until, p.rate).await?;
            let name = p
                .rate
                .map_or("saturation".to_string(), |r| format!("{r:.0}/s"));
            let got = report(&name, &phase);
            let ms = |q: f64| phase.latency.value_at_quantile(q) as f64 / 1000.0;
            let us = cpu_per_event(&phase);
            let sequencer = us
                .as_ref()
                .and_then(|v| v.iter().find(|(g, _)| *g == "sequencer"))
                .map_or(f64::NAN, |(_, v)| *v);
            let total = us.map_or(f64::NAN, |v| v.iter().map(|(_, v)| v).sum());
            p.runs.push([got, ms(0.5), ms(0.99), sequencer, total]);
            drop(channels);
            drop(spawned);
        }
    }
    println!(
        "\n| rate | events/s | p50 ms | p99 ms | server CPU µs/event: sequencer | all threads |   (median of {}, range)",
        a.repeat.max(1)
    );
    println!("|---|---|---|---|---|---|");
    for p in &points {
        let stat = |i: usize| {
            let mut v: Vec<f64> = p.runs.iter().map(|r| r[i]).collect();
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2], v[0], v[v.len() - 1])
        };
        let (t, t0, t1) = stat(0);
        let (p50, a0, a1) = stat(1);
        let (p99, b0, b1) = stat(2);
        let (sq, sq0, sq1) = stat(3);
        let (all, all0, all1) = stat(4);
        let name = p
            .rate
            .map_or("saturation".to_string(), |r| format!("{r:.0}/s"));
        println!(
            "| {name} | {t:.0} ({t0:.0}–{t1:.0}) | {p50:.2} ({a0:.2}–{a1:.2}) | {p99:.2} ({b0:.2}–{b1:.2}) | {sq:.1} ({sq0:.1}–{sq1:.1}) | {all:.1} ({all0:.1}–{all1:.1}) |"
        );
    }
    Ok(())
}

/// Trace id of the large trace.
fn big_trace() -> String {
    format!("{:032x}", 0xb16_u128 << 64 | 1)
}

/// Trace id of small trace `t`.
fn small_trace(t: u64) -> String {
    format!("{:016x}{:016x}", 0x5a11_u64, t + 1)
}

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0;
    format!(
        "p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} queries)",
        q(0.5),
        q(0.99),
        q(1.0),
        v.len()
    )
}

/// The shape of a timeline benchmark's log: `total` entries, every
/// `every`-th in the one large trace, the rest in traces of `small`.
struct TraceFill {
    total: u64,
    per_stream: u64,
    every: u64,
    small: u64,
}

impl TraceFill {
    fn new(load: &Load, entries: u64, trace_events: u64, small: u64) -> TraceFill {
        let streams = load.streams as u64;
        let per_stream = entries.div_ceil(streams);
        let total = per_stream * streams;
        TraceFill {
            total,
            per_stream,
            every: (total / trace_events.max(1)).max(1),
            small: small.max(1),
        }
    }

    /// Appends the log's events.
    async fn fill(&self, channels: &[Channel], load: &Load) -> Result<Phase> {
        let (streams, every, small) = (load.streams as u64, self.every, self.small);
        let size = load.event_bytes;
        let run = run_id();
        let make = wire::from_events(move |s, seq| {
            let g = seq * streams + s as u64;
            let trace = if g.is_multiple_of(every) {
                big_trace()
            } else {
                small_trace(g / small)
            };
            sized(
                AuditEvent {
                    event_id: format!("{run}-{g}"),
                    correlation_id: trace,
                    span_id: format!("{:016x}", g % 7 + 1),
                    agent_id: format!("agent-{}", g % 100),
                    tool_name: format!("tool-{}", g % 8),
                    ..template()
                },
                size,
            )
        });
        drive(channels, load, make, Until::Count(self.per_stream), None).await
    }
}

/// Times `runs` timelines of the large trace; returns its event count and
/// the times.
async fn big_timelines(
    channel: &Channel,
    proofs: bool,
    runs: usize,
) -> Result<(usize, Vec<Duration>)> {
    use ledger_proto::v1::TimelineRequest;
    use ledger_proto::v1::query_client::QueryClient;
    let client = QueryClient::new(channel.clone()).max_decoding_message_size(256 << 20);
    let mut times = Vec::new();
    let mut n = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let r = client
            .clone()
            .get_timeline(TimelineRequest {
                correlation_id: big_trace(),
                with_proofs: proofs,
                ..Default::default()
            })
            .await?
            .into_inner();
        times.push(t.elapsed());
        n = r.entries.len();
    }
    Ok((n, times))
}

async fn query(a: QueryArgs) -> Result<()> {
    use ledger_proto::v1::TimelineRequest;
    use ledger_proto::v1::query_client::QueryClient;
    let (spawned, addr, channels) = start(&a.load, !a.reuse).await?;
    let load = &a.load;
    let shape = TraceFill::new(load, a.entries, a.trace_events, a.small_trace_events);
    let (total, every, small) = (shape.total, shape.every, shape.small);
    println!(
        "ledger-bench query: log of {total} entries, one trace of {} events spread through it, small traces of {small}, server {addr}",
        total / every
    );
    if !a.reuse {
        let fill = shape.fill(&channels, load).await?;
        report("fill", &fill);
    }
    for proofs in [false, true] {
        let (n, times) = big_timelines(&channels[0], proofs, 30).await?;
        println!(
            "timeline of {n} events{}: {}",
            if proofs { " with inclusion proofs" } else { "" },
            percentiles(times)
        );
    }
    // Many small timelines at once: `concurrent` queries always in flight.
    let traces = (total / small).max(1);
    let stop = Instant::now() + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    for w in 0..a.concurrent {
        let client = QueryClient::new(channels[w % channels.len()].clone());
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            let mut x = (w as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            while Instant::now() < stop {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let t = Instant::now();
                let r = client
                    .clone()
                    .get_timeline(TimelineRequest {
                        correlation_id: small_trace(x % traces),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                anyhow::ensure!(!r.entries.is_empty(), "small trace {} is empty", x % traces);
                times.push(t.elapsed());
            }
            anyhow::Ok(times)
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} concurrent small timelines: {:.0} queries/s, latency {}",
        a.concurrent,
        all.len() as f64 / secs,
        percentiles(all)
    );
    drop(spawned);
    Ok(())
}

/// SHA-256 of a whole file, read as the audit reads it; returns seconds.
fn hash_file(path: &Path) -> Result<(f64, u64)> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut h = sha2::Sha256::new();
    let mut n = 0u64;
    let t = Instant::now();
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    std::hint::black_box(h.finalize());
    Ok((t.elapsed().as_secs_f64(), n))
}

fn audit(a: AuditArgs) -> Result<()> {
    let key: ledger_verify::NoteVerifier = a
        .key
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("--key: {e}"))?;
    // Plain hashing before and after, so both sides see the same page cache.
    let (before, bytes) = hash_file(&a.bundle)?;
    let t = Instant::now();
    let f = std::fs::File::open(&a.bundle)?;
    let report = ledger_verify::audit::audit_bundle(
        std::io::BufReader::with_capacity(1 << 20, f),
        &key,
        |_, _| {},
    )?;
    let secs = t.elapsed().as_secs_f64();
    let (after, _) = hash_file(&a.bundle)?;
    let sha = (before + after) / 2.0;
    let mb = bytes as f64 / 1e6;
    println!(
        "audit        {:>10.0} entries/s  {:>7.1} MB/s  ({} entries, {} checkpoints, {} payloads, {:.1} s, {})",
        report.entries as f64 / secs,
        mb / secs,
        report.entries,
        report.checkpoints_checked,
        report.payloads_checked,
        secs,
        if report.clean() { "clean" } else { "FINDINGS" }
    );
    println!(
        "sha-256      {:>10.0} entries/s  {:>7.1} MB/s  (the same {mb:.0} MB, mean of {before:.1} s and {after:.1} s)",
        report.entries as f64 / sha,
        mb / sha
    );
    println!("ratio        {:>10.2}   audit / plain SHA-256", sha / secs);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().cmd {
        Bench::Ingest(a) => ingest(a).await,
        Bench::Query(a) => query(a).await,
        Bench::Audit(a) => audit(a),
        Bench::Peer(a) => peer::run(a).await,
        Bench::Mirror(a) => mirror::run(a).await,
        Bench::Otlp(a) => otlp::run(a).await,
        Bench::Console(a) => console::run(a).await,
    }
}

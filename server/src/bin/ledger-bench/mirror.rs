//! The mirror's figures, each phase on a fresh ledgerd started here:
//!
//! 1. ingest at saturation with the mirror off and on, in pairs whose
//!    order alternates (the ratio);
//! 2. the mirror's lag at a fixed rate (sampled from the server's
//!    `ledger_mirror_lag_seconds` every 100 ms: p50/p99);
//! 3. ack latency with `mirror.ack_after_mirror` at a fixed rate;
//! 4. restore speed (`ledgerd restore` from the mirror of phase 2);
//! 5. `ledger-verify mirror` against `ledger-verify bundle` on that log.
//!
//! The mirror is a scratch directory, or S3 with `--s3-endpoint` and
//! `--bucket` (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).

use super::{Load, MirrorArgs, Phase, Spawned, Until, drive, report, run_id, spawn_server_with};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Removes a directory when dropped.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `[mirror]` section for this run.
fn mirror_config(a: &MirrorArgs, dir: &Path, prefix: &str, ack_after: bool) -> String {
    let mut c = String::from("[anchor]\nbackend = \"none\"\n[mirror]\n");
    if ack_after {
        c.push_str("ack_after_mirror = true\n");
    }
    match &a.s3_endpoint {
        Some(e) => c.push_str(&format!(
            "backend = \"s3\"\n[mirror.s3]\nbucket = \"{}\"\nprefix = \"{prefix}\"\nendpoint = \"{e}\"\nforce_path_style = true\nretention_days = 1\n",
            a.bucket
        )),
        None => c.push_str(&format!(
            "backend = \"dir\"\ndir = {:?}\n",
            dir.join("mirror").join(prefix).display().to_string()
        )),
    }
    c
}

/// Where `ledgerd restore --from` and `ledger-verify mirror` find it.
fn mirror_source(a: &MirrorArgs, dir: &Path, prefix: &str) -> String {
    match &a.s3_endpoint {
        Some(_) => format!("s3://{}/{prefix}", a.bucket),
        None => dir.join("mirror").join(prefix).display().to_string(),
    }
}

/// A metric's value from the server's metrics text.
fn metric(addr: &str, name: &str) -> Result<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {name} in the metrics"))
}

async fn channels(addr: &str, n: usize) -> Result<Vec<Channel>> {
    super::connect(addr, n).await
}

fn gen_for(load: &Load, run: String) -> super::Gen {
    super::wire::bench_events(run, load.event_bytes)
}

/// Drives server `s` at saturation for `seconds` (measuring its CPU by
/// thread group, the mirror's threads among them).
async fn saturation(a: &MirrorArgs, s: &Spawned, run: String, seconds: u64) -> Result<Phase> {
    let ch = channels(&s.grpc, a.load.connections).await?;
    let load = Load {
        server_pid: Some(s.child.id()),
        ..a.load.clone()
    };
    drive(
        &ch,
        &load,
        gen_for(&a.load, run),
        Until::Elapsed(Duration::from_secs(seconds)),
        None,
    )
    .await
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|x, y| x.total_cmp(y));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// The median (of an even count, the mean of the middle two).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|x, y| x.total_cmp(y));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Waits for the mirror to hold every committed entry; returns how long.
fn wait_caught_up(metrics: &str, limit: Duration) -> Result<Duration> {
    let started = Instant::now();
    loop {
        if metric(metrics, "ledger_mirror_lag_entries")? == 0.0
            && metric(metrics, "ledger_mirrored_tree_size")? > 0.0
        {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            bail!("the mirror did not catch up within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Saturation with the mirror off, the other with it on, in that order or,
/// with `on_first`, the other way round; returns the ratio (on / off).
/// Alternating the order from pair to pair keeps a drift of the machine's
/// speed during a run (this shared machine's can move by a third within
/// an hour) from counting against whichever phase always runs second.
/// Each phase has its own data directory under `pairs`, removed when the
/// run ends: a phase that started by deleting the one before it would pay
/// the file system's cost of that (see `run`).
async fn saturation_pair(
    a: &MirrorArgs,
    dir: &Path,
    pairs: &Path,
    run: &str,
    on_first: bool,
) -> Result<f64> {
    let (off, on) = if on_first {
        let on = saturation_on(a, dir, pairs, run).await?;
        (saturation_off(a, pairs, run).await?, on)
    } else {
        let off = saturation_off(a, pairs, run).await?;
        (off, saturation_on(a, dir, pairs, run).await?)
    };
    println!("ratio        {:>10.2}   mirror on / off", on / off);
    Ok(on / off)
}

/// One saturation phase with the mirror off; events/s.
async fn saturation_off(a: &MirrorArgs, pairs: &Path, run: &str) -> Result<f64> {
    let s = spawn_server_with(
        &pairs.join(format!("{run}-off")),
        true,
        Some("[anchor]\nbackend = \"none\"\n"),
    )?;
    let p = saturation(a, &s, format!("{run}-off"), a.seconds).await?;
    Ok(report("mirror off", &p))
}

/// One saturation phase with the mirror on; events/s. Waits for the
/// mirror to catch up after it (the wait is not counted).
async fn saturation_on(a: &MirrorArgs, dir: &Path, pairs: &Path, run: &str) -> Result<f64> {
    let cfg = mirror_config(a, dir, &format!("{run}-sat"), false);
    let s = spawn_server_with(&pairs.join(format!("{run}-on")), true, Some(&cfg))?;
    let p = saturation(a, &s, format!("{run}-on"), a.seconds).await?;
    let r = report("mirror on", &p);
    let caught = wait_caught_up(&s.metrics, Duration::from_secs(600))?;
    // Entries the mirror had to read back from the store because its
    // in-memory feed no longer held them (it fell that far behind).
    let read_back = metric(&s.metrics, "ledger_mirror_read_back_entries_total")?;
    println!(
        "             mirror caught up {:.1} s after the load stopped; {read_back:.0} entries read back from the store",
        caught.as_secs_f64()
    );
    Ok(r)
}

pub async fn run(a: MirrorArgs) -> Result<()> {
    let dir = a.load.dir.clone();
    std::fs::create_dir_all(&dir)?;
    // A run removes its directory mirrors and the data directories of its
    // saturation pairs when it ends, not when the next phase or run starts:
    // ext4 without a journal skips inodes freed in the last minute (the last
    // six while their inode table block is dirty) and pays a buffer-cache
    // lookup for each one it skips on every file it creates.
    // Measured here, a mirror-on phase that started right after a deletion
    // spent 60-70% of its file-writing threads' time in that scan. A run
    // started within minutes of another still pays for the first's removal.
    let scratch = dir.join("mirror");
    let pairs = dir.join("pairs");
    if scratch.exists() || pairs.exists() {
        println!(
            "(removing what an interrupted run left; the next figures include the file system's cost of that)"
        );
        let _ = std::fs::remove_dir_all(&scratch);
        let _ = std::fs::remove_dir_all(&pairs);
    }
    let _cleanup = (RemoveOnDrop(scratch), RemoveOnDrop(pairs.clone()));
    let run = run_id();
    let where_ = match &a.s3_endpoint {
        Some(e) => format!("S3 at {e}, bucket {}", a.bucket),
        None => format!("directory {}", dir.join("mirror").display()),
    };
    println!(
        "ledger-bench mirror: {} streams, {}-byte events, {} s per phase, mirror in {where_}",
        a.load.streams, a.load.event_bytes, a.seconds
    );

    // 1. Throughput, in pairs of a mirror-off and a mirror-on phase, the
    // order alternating (off first in the first pair); each "on" mirror is
    // kept until the run ends, so no pair pays for deleting another's.
    if !a.no_saturation {
        if a.warmup > 0 {
            // The first phase of a run has measured faster than the rest
            // (server CPU per event a sixth lower), the first mirror-on
            // phase slower: a phase not counted takes both.
            let s = spawn_server_with(
                &pairs.join(format!("{run}-warmup")),
                true,
                Some(&mirror_config(&a, &dir, &format!("{run}-warmup"), false)),
            )?;
            let p = saturation(&a, &s, format!("{run}-warmup"), a.warmup).await?;
            report("warm-up", &p);
            println!("             (mirror on, not counted)");
        }
        let mut ratios = Vec::new();
        for n in 0..a.pairs.max(1) {
            let on_first = n % 2 == 1;
            ratios.push(saturation_pair(&a, &dir, &pairs, &format!("{run}-{n}"), on_first).await?);
        }
        if ratios.len() > 1 {
            let all: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
            println!(
                "ratio median {:>10.3}   mirror on / off over {} pairs ({})",
                median(&mut ratios),
                all.len(),
                all.join(", ")
            );
        }
    }

    // 2. Lag at a fixed rate.
    let prefix = format!("{run}-lag");
    let cfg = mirror_config(&a, &dir, &prefix, false);
    let server = spawn_server_with(&dir, true, Some(&cfg))?;
    let ch = channels(&server.grpc, a.load.connections).await?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (metrics, stop) = (server.metrics.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut lag = Vec::new();
            // Past the warm-up second of the drive.
            std::thread::sleep(Duration::from_secs(1));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(v) = metric(&metrics, "ledger_mirror_lag_seconds") {
                    lag.push(v);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            lag
        })
    };
    let p = drive(
        &ch,
        &a.load,
        gen_for(&a.load, format!("{run}-lag")),
        Until::Elapsed(Duration::from_secs(a.seconds)),
        Some(a.rate),
    )
    .await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut lag = sampler.join().map_err(|_| anyhow::anyhow!("sampler"))?;
    report(&format!("{:.0}/s", a.rate), &p);
    println!(
        "mirror lag   p50 {:>6.2} s  p99 {:>6.2} s  max {:>6.2} s   (age of the oldest unmirrored entry, {} samples at 100 ms)",
        percentile(&mut lag, 0.5),
        percentile(&mut lag, 0.99),
        percentile(&mut lag, 1.0),
        lag.len()
    );
    wait_caught_up(&server.metrics, Duration::from_secs(600))?;
    let size = metric(&server.metrics, "ledger_mirrored_tree_size")? as u64;
    let key = server.verifier_key.clone();
    // The next phase starts afresh; the restore needs this log's key.
    let key_file = dir.join("lag.key");
    std::fs::copy(dir.join("data/logs/default/log.key"), &key_file)?;

    // 5 (before stopping the server): a bundle of the same log, for the
    // verifier comparison.
    let bundle = dir.join("bench.bundle");
    let exe_dir = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .to_path_buf();
    let out = Command::new(exe_dir.join("ledger"))
        .args(["--server", &server.grpc, "export", "-o"])
        .arg(&bundle)
        .args(["--end", &size.to_string()])
        .output()
        .context("running ledger export (build the client too)")?;
    if !out.status.success() {
        bail!("ledger export: {}", String::from_utf8_lossy(&out.stderr));
    }
    drop(ch);
    drop(server);

    // 3. Ack latency with ack_after_mirror.
    {
        let cfg = mirror_config(&a, &dir, &format!("{run}-ack"), true);
        let s = spawn_server_with(&dir, true, Some(&cfg))?;
        let ch = channels(&s.grpc, a.load.connections).await?;
        let p = drive(
            &ch,
            &a.load,
            gen_for(&a.load, format!("{run}-ack")),
            Until::Elapsed(Duration::from_secs(a.seconds)),
            Some(a.ack_rate),
        )
        .await?;
        report("ack_after", &p);
        println!(
            "             (acks with mirror.ack_after_mirror at {:.0}/s: each waits for its bundle and a checkpoint in the mirror)",
            a.ack_rate
        );
    }

    // 4. Restore speed.
    let restore_dir = dir.join("restored");
    let _ = std::fs::remove_dir_all(&restore_dir);
    let src = mirror_source(&a, &dir, &prefix);
    let cfg_path = dir.join("restore.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "{cfg}[[logs]]\nid = \"default\"\norigin = \"ledger.local/default\"\nkey_file = {:?}\n",
            key_file.display().to_string()
        ),
    )?;
    let started = Instant::now();
    let out = Command::new(exe_dir.join("ledgerd"))
        .arg("--config")
        .arg(&cfg_path)
        .arg("--data-dir")
        .arg(&restore_dir)
        .args(["restore", "--from", &src])
        .env("RUST_LOG", "warn")
        .output()?;
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("ledgerd restore: {}", String::from_utf8_lossy(&out.stderr));
    }
    println!(
        "restore      {:>10.0} entries/s   ({size} entries in {secs:.1} s, audited as read)",
        size as f64 / secs
    );

    // 5. Verifying the mirror against verifying a bundle of the same log.
    let time = |args: &[&str]| -> Result<f64> {
        let started = Instant::now();
        let out = Command::new(exe_dir.join("ledger-verify"))
            .args(args)
            .output()
            .context("running ledger-verify (build it too)")?;
        if !out.status.success() {
            bail!(
                "ledger-verify {args:?}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(started.elapsed().as_secs_f64())
    };
    let m = time(&["mirror", "--key", &key, "--quiet", &src])?;
    let b = time(&[
        "bundle",
        "--key",
        &key,
        "--quiet",
        bundle.to_str().unwrap_or(""),
    ])?;
    println!(
        "verify       mirror {:>10.0} entries/s   bundle {:>10.0} entries/s   ({size} entries; ratio {:.2})",
        size as f64 / m,
        size as f64 / b,
        b / m
    );
    Ok(())
}

//! The mirror's figures, each phase on a fresh ledgerd started here:
//!
//! 1. ingest at saturation with the mirror off and on, two servers side by
//!    side taking the load in turns (the ratio);
//! 2. the mirror's lag at a fixed rate (sampled from the server's
//!    `ledger_mirror_lag_seconds` every 100 ms: p50/p99);
//! 3. ack latency with `mirror.ack_after_mirror` at a fixed rate;
//! 4. restore speed (`ledgerd restore` from the mirror of phase 2);
//! 5. `ledger-verify mirror` against `ledger-verify bundle` on that log.
//!
//! The mirror is a scratch directory, or S3 with `--s3-endpoint` and
//! `--bucket` (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).

use super::{
    Load, MirrorArgs, Phase, Spawned, Until, cpu_per_event, drive, report, run_id, spawn_exe,
    spawn_server_with,
};
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

/// Adds slice `p` to `total`: events, time, latencies and CPU.
fn add_slice(total: &mut Option<Phase>, p: Phase) -> Result<()> {
    let Some(t) = total else {
        *total = Some(p);
        return Ok(());
    };
    t.acks += p.acks;
    t.rejected += p.rejected;
    t.elapsed += p.elapsed;
    t.latency.add(&p.latency)?;
    t.cpu = t.cpu.take().zip(p.cpu).map(|(a, b)| {
        a.into_iter()
            .zip(b)
            .map(|((g, x), (_, y))| (g, x + y))
            .collect()
    });
    Ok(())
}

/// Whether slice `k` goes to the mirror-on server: on, off, off, on, and
/// again, so that each side has as many slices early in a block as late.
fn on_turn(k: usize) -> bool {
    matches!(k % 4, 0 | 3)
}

/// The two servers of a saturation comparison, and each side's name (in
/// the totals, and short in each slice's line).
struct Pair {
    on: Spawned,
    off: Spawned,
    names: [&'static str; 2],
    short: [&'static str; 2],
}

/// Starts the two fresh servers of a saturation comparison under `pairs`:
/// mirror on and mirror off, or with `--compare-with` this build's and
/// that binary's, both with the mirror on.
fn spawn_pair(a: &MirrorArgs, dir: &Path, pairs: &Path, run: &str) -> Result<Pair> {
    let cfg = mirror_config(a, dir, &format!("{run}-sat"), false);
    let (off, names, short) = match &a.compare_with {
        Some(other) => (
            spawn_exe(
                other,
                &pairs.join(format!("{run}-off")),
                true,
                Some(&mirror_config(a, dir, &format!("{run}-other"), false)),
            )?,
            ["this build", "other build"],
            ["this", "other"],
        ),
        None => (
            spawn_server_with(
                &pairs.join(format!("{run}-off")),
                true,
                Some("[anchor]\nbackend = \"none\"\n"),
            )?,
            ["mirror on", "mirror off"],
            ["on", "off"],
        ),
    };
    let on = spawn_server_with(&pairs.join(format!("{run}-on")), true, Some(&cfg))?;
    Ok(Pair {
        on,
        off,
        names,
        short,
    })
}

/// Ingest at saturation with the mirror off and on, side by side: two
/// fresh servers run at once, each on its own data directory under
/// `pairs`, and the load goes to one at a time, in slices of
/// `--slice-seconds` in the order on, off, off, on (repeated), `--slices`
/// slices each. A drift of the machine's speed (this shared machine's can
/// move by a quarter within minutes) then falls on both sides alike, where
/// 10 s phases one after the other each caught a different part of it.
/// Each slice ramps up for a second before it counts, as every phase does;
/// after a mirror-on slice the mirror catches up before the next slice
/// starts (not counted: a mirror-on slice starts, as it ends, with the lag
/// a mirror keeps under full load). Prints the ratio (on / off) of the
/// two sides' rates.
///
/// With `--compare-with`, the side that would have the mirror off runs that
/// ledgerd binary, its mirror on too: the ratio then compares two
/// builds under the same drift.
async fn saturation_sliced(a: &MirrorArgs, dir: &Path, pairs: &Path, run: &str) -> Result<()> {
    let Pair {
        on,
        off,
        names,
        short,
    } = spawn_pair(a, dir, pairs, run)?;
    let (mut on_total, mut off_total) = (None, None);
    // Each block of four slices: events and seconds, mirror on then off.
    let mut blocks: Vec<[(u64, f64); 2]> = Vec::new();
    for k in 0..2 * a.slices.max(1) {
        let is_on = on_turn(k);
        let (s, side) = if is_on {
            (&on, short[0])
        } else {
            (&off, short[1])
        };
        let p = saturation(a, s, format!("{run}-{side}-{k}"), a.slice_seconds).await?;
        let rate = p.acks as f64 / p.elapsed.as_secs_f64();
        let cpu = cpu_per_event(&p).map_or(String::new(), |us| {
            let total: f64 = us.iter().map(|(_, v)| v).sum();
            let mirror = us.iter().find(|(g, _)| *g == "mirror").map_or(0.0, |m| m.1);
            format!("   server CPU {total:.1} µs/event, the mirror's {mirror:.1}")
        });
        println!("  slice {:>2} {side:<5} {rate:>10.0} events/s{cpu}", k + 1);
        if k % 4 == 0 {
            blocks.push([(0, 0.0); 2]);
        }
        let block = blocks.last_mut().context("a block")?;
        let counted = &mut block[usize::from(!is_on)];
        counted.0 += p.acks;
        counted.1 += p.elapsed.as_secs_f64();
        if is_on {
            add_slice(&mut on_total, p)?;
            wait_caught_up(&on.metrics, Duration::from_secs(600))?;
        } else {
            add_slice(&mut off_total, p)?;
            if a.compare_with.is_some() {
                wait_caught_up(&off.metrics, Duration::from_secs(600))?;
            }
        }
    }
    let (Some(on_total), Some(off_total)) = (on_total, off_total) else {
        bail!("no slices ran");
    };
    let off_rate = report(names[1], &off_total);
    let on_rate = report(names[0], &on_total);
    // Entries the mirror had to read back from the store because its
    // in-memory feed no longer held them (it fell that far behind).
    let read_back = metric(&on.metrics, "ledger_mirror_read_back_entries_total")?;
    println!("             {read_back:.0} entries read back from the store");
    let each: Vec<f64> = blocks
        .iter()
        .filter(|[on, off]| on.0 > 0 && off.0 > 0)
        .map(|[on, off]| (on.0 as f64 / on.1) / (off.0 as f64 / off.1))
        .collect();
    println!(
        "ratio        {:>10.3}   {} / {}, {} slices of {} s each way, side by side (blocks of four: {})",
        on_rate / off_rate,
        names[0],
        names[1],
        a.slices.max(1),
        a.slice_seconds,
        spread(&each)
    );
    Ok(())
}

/// The mean of `ratios` and its standard error (the sample standard
/// deviation over the square root of their number), if there are two or
/// more.
fn mean_and_error(ratios: &[f64]) -> Option<(f64, f64)> {
    let n = ratios.len() as f64;
    if ratios.len() < 2 {
        return None;
    }
    let mean = ratios.iter().sum::<f64>() / n;
    let var = ratios.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Some((mean, (var / n).sqrt()))
}

/// Each of `ratios`, then their mean and its standard error: how far a
/// run's figure can be trusted (a single run on a shared machine can move
/// by several hundredths).
fn spread(ratios: &[f64]) -> String {
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
    match mean_and_error(ratios) {
        Some((mean, error)) => format!(
            "{}; their mean {mean:.3} ± {error:.3} standard error",
            each.join(", ")
        ),
        None => each.join(", "),
    }
}

/// A child process killed when dropped (a load generator).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The CPUs this process may run on, split in two halves.
#[cfg(target_os = "linux")]
fn cpu_halves() -> Result<[Vec<usize>; 2]> {
    use rustix::thread::{CpuSet, sched_getaffinity};
    let mine = sched_getaffinity(None)?;
    let cpus: Vec<usize> = (0..CpuSet::MAX_CPU).filter(|&c| mine.is_set(c)).collect();
    anyhow::ensure!(cpus.len() >= 2, "--paired needs at least two CPUs");
    let (a, b) = cpus.split_at(cpus.len() / 2);
    Ok([a.to_vec(), b.to_vec()])
}

/// Pins every thread of process `pid` to `cpus` (a thread that ended
/// meanwhile is skipped; threads started later inherit the set).
#[cfg(target_os = "linux")]
fn pin(pid: u32, cpus: &[usize]) -> Result<()> {
    use rustix::thread::{CpuSet, sched_setaffinity};
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c);
    }
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let tid: i32 = task?.file_name().to_string_lossy().parse()?;
        if let Some(tid) = rustix::process::Pid::from_raw(tid) {
            let _ = sched_setaffinity(Some(tid), &set);
        }
    }
    Ok(())
}

/// Ingest at saturation with the mirror off and on, paired: both servers
/// take their full load at the same time, each with a load generator of
/// its own (this bench's `ingest`, as a child process), and each server
/// and its generator run on half the CPUs, the halves swapped every
/// `--slice-seconds` (`2 × --slices` periods), so that each side gets the
/// same CPU, any drift of the machine's speed falls on both at once, and
/// what one half of the CPUs has more of (this machine takes every disk
/// interrupt on one CPU) falls on each side half the time. What this
/// cannot separate: work the mirror causes outside its process (disk
/// interrupts, write-back, memory bandwidth) is shared by both sides, so
/// it favours the mirror-on side a little. Prints the ratio of the events
/// each side appended over the periods, and each pair of periods' (one in
/// each placement).
#[cfg(target_os = "linux")]
async fn saturation_paired(a: &MirrorArgs, dir: &Path, pairs: &Path, run: &str) -> Result<()> {
    let halves = cpu_halves()?;
    let Pair {
        on,
        off,
        names,
        short,
    } = spawn_pair(a, dir, pairs, run)?;
    let periods = 2 * a.slices.max(1);
    let seconds = a.slice_seconds.max(1);
    let exe = std::env::current_exe()?;
    let generator = |s: &Spawned| -> Result<KillOnDrop> {
        let l = &a.load;
        let child = Command::new(&exe)
            .arg("ingest")
            .args(["--server", &s.grpc, "--no-baseline"])
            .args(["--seconds", &(periods as u64 * seconds + 60).to_string()])
            .args(["--streams", &l.streams.to_string()])
            .args(["--connections", &l.connections.to_string()])
            .args(["--event-bytes", &l.event_bytes.to_string()])
            .args(["--window", &l.window.to_string()])
            .args(["--batch", &l.batch.to_string()])
            .args(l.receipts.then_some("--receipts"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("starting a load generator")?;
        Ok(KillOnDrop(child))
    };
    let sides = [(&on, generator(&on)?), (&off, generator(&off)?)];
    let place = |k: usize| -> Result<()> {
        for (i, (server, load)) in sides.iter().enumerate() {
            let cpus = &halves[(i + k) % 2];
            pin(server.child.id(), cpus)?;
            pin(load.0.id(), cpus)?;
        }
        Ok(())
    };
    let appended = |s: &Spawned| metric(&s.metrics, "ledger_appended_entries_total");
    place(0)?;
    // The generators start, connect and ramp up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu_before = [
        super::thread_cpu(Some(on.child.id())),
        super::thread_cpu(Some(off.child.id())),
    ];
    let started = Instant::now();
    let mut totals = [0.0f64; 2];
    let mut per_period: Vec<[f64; 2]> = Vec::with_capacity(periods);
    for k in 0..periods {
        place(k)?;
        let before = [appended(&on)?, appended(&off)?];
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let after = [appended(&on)?, appended(&off)?];
        let secs = t.elapsed().as_secs_f64();
        let rates = [(after[0] - before[0]) / secs, (after[1] - before[1]) / secs];
        println!(
            "  period {:>2}   {:<5} {:>9.0} events/s on CPUs {:?}   {:<5} {:>9.0} events/s on CPUs {:?}",
            k + 1,
            short[0],
            rates[0],
            halves[k % 2],
            short[1],
            rates[1],
            halves[(k + 1) % 2]
        );
        totals[0] += after[0] - before[0];
        totals[1] += after[1] - before[1];
        per_period.push(rates);
    }
    let elapsed = started.elapsed().as_secs_f64();
    for (i, s) in [&on, &off].into_iter().enumerate() {
        let cpu = super::cpu_between(cpu_before[i].clone(), super::thread_cpu(Some(s.child.id())));
        let line = cpu.map_or(String::new(), |groups| {
            let us: Vec<_> = groups
                .into_iter()
                .map(|(g, v)| (g, v * 1e6 / totals[i]))
                .collect();
            format!("   {}", super::cpu_line(&us))
        });
        println!(
            "{:<12} {:>10.0} events/s{line}",
            names[i],
            totals[i] / elapsed
        );
    }
    let pairs_of_periods: Vec<f64> = per_period
        .chunks(2)
        .map(|p| {
            let on: f64 = p.iter().map(|r| r[0]).sum();
            let off: f64 = p.iter().map(|r| r[1]).sum();
            on / off
        })
        .collect();
    println!(
        "ratio        {:>10.3}   {} / {}, paired: both at once for {periods} periods of {seconds} s, each on half the CPUs, swapped each period (pairs of periods: {})",
        totals[0] / totals[1],
        names[0],
        names[1],
        spread(&pairs_of_periods)
    );
    Ok(())
}

#[cfg(not(target_os = "linux"))]
async fn saturation_paired(_: &MirrorArgs, _: &Path, _: &Path, _: &str) -> Result<()> {
    bail!("--paired needs Linux (CPU affinity)")
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
        "ledger-bench mirror: {} streams, {}-byte events, saturation in {} slices of {} s each way, {} s for the lag and ack phases, mirror in {where_}",
        a.load.streams,
        a.load.event_bytes,
        a.slices.max(1),
        a.slice_seconds,
        a.seconds
    );

    // 1. Throughput with the mirror off and on, side by side; the mirror
    // and both data directories are kept until the run ends, so no phase
    // pays for deleting another's.
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
        if a.paired {
            saturation_paired(&a, &dir, &pairs, &run).await?;
        } else {
            saturation_sliced(&a, &dir, &pairs, &run).await?;
        }
    }
    if a.compare_with.is_some() || a.saturation_only {
        return Ok(());
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

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::Histogram;

    #[test]
    fn slices_go_on_off_off_on_so_each_side_has_as_many_early_as_late() {
        let order: Vec<bool> = (0..8).map(on_turn).collect();
        assert_eq!(order, [true, false, false, true, true, false, false, true]);
        // Within every block of four, the mean position of each side's
        // slices is the same.
        for block in order.chunks(4) {
            let at = |side: bool| -> usize {
                block
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| **s == side)
                    .map(|(i, _)| i)
                    .sum()
            };
            assert_eq!(at(true), at(false));
        }
    }

    fn slice(acks: u64, secs: u64, latency_us: u64, cpu: f64) -> Phase {
        let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        latency.record(latency_us).unwrap();
        Phase {
            acks,
            rejected: 0,
            elapsed: Duration::from_secs(secs),
            latency,
            cpu: Some(vec![("sequencer", cpu), ("mirror", cpu / 10.0)]),
        }
    }

    #[test]
    fn the_error_of_a_mean_ratio_is_its_spread_over_the_root_of_their_number() {
        assert_eq!(mean_and_error(&[0.9]), None, "one ratio has no spread");
        let (mean, error) = mean_and_error(&[0.8, 0.9, 1.0, 0.9]).unwrap();
        assert!((mean - 0.9).abs() < 1e-12);
        // Sample variance 0.02 / 3; over 4 ratios.
        assert!(
            (error - (0.02f64 / 3.0 / 4.0).sqrt()).abs() < 1e-12,
            "{error}"
        );
        assert_eq!(
            spread(&[0.8, 1.0]),
            "0.800, 1.000; their mean 0.900 ± 0.100 standard error"
        );
    }

    #[test]
    fn slices_add_up_to_one_phase() {
        let mut total = None;
        add_slice(&mut total, slice(500, 5, 1_000, 2.0)).unwrap();
        add_slice(&mut total, slice(700, 5, 9_000, 3.0)).unwrap();
        let t = total.unwrap();
        assert_eq!((t.acks, t.elapsed), (1_200, Duration::from_secs(10)));
        assert_eq!(t.latency.len(), 2);
        assert!(t.latency.max() >= 9_000 && t.latency.min() <= 1_000);
        assert_eq!(t.cpu, Some(vec![("sequencer", 5.0), ("mirror", 0.5)]));
    }
}

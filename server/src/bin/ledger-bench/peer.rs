//! The peer: a hash-chained audit table in PostgreSQL, what teams build
//! instead of a ledger (and what AWS recommends in place of QLDB), measured
//! beside ledgerd on the same machine in the same run.
//!
//! PostgreSQL comes from the distribution's packages and is started here in
//! a scratch directory on a loopback port. The table keeps a SHA-256 chain
//! over the previous row's hash, computed in the database by a function that
//! locks the chain head (so appends are serialised, as such a chain must
//! be), with `synchronous_commit = on` and `fsync = on`. Load comes from
//! `pgbench`: 64 clients appending 512-byte events, then one client timing
//! the timeline of a 1,000-event trace in a large indexed table.

use super::{
    Load, PeerArgs, Phase, TraceFill, Until, big_timelines, drive, percentiles, report, run_id,
    start,
};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The schema: events, the chain head, and the append function that
/// extends the chain under the head's row lock.
const SCHEMA: &str = r#"
CREATE TABLE audit_events (
    seq       bigint PRIMARY KEY,
    trace_id  text   NOT NULL,
    agent_id  text   NOT NULL,
    body      bytea  NOT NULL,
    prev_hash bytea  NOT NULL,
    hash      bytea  NOT NULL
);
CREATE INDEX audit_events_trace ON audit_events (trace_id, seq);
CREATE TABLE chain_head (id int PRIMARY KEY, seq bigint NOT NULL, hash bytea NOT NULL);
INSERT INTO chain_head VALUES (1, 0, '\x0000000000000000000000000000000000000000000000000000000000000000');
CREATE FUNCTION append_event(t text, a text, b bytea) RETURNS bigint AS $$
DECLARE h chain_head%ROWTYPE; n bytea;
BEGIN
    SELECT * INTO h FROM chain_head WHERE id = 1 FOR UPDATE;
    n := sha256(h.hash || convert_to(t, 'UTF8') || convert_to(a, 'UTF8') || b);
    INSERT INTO audit_events VALUES (h.seq + 1, t, a, b, h.hash, n);
    UPDATE chain_head SET seq = h.seq + 1, hash = n WHERE id = 1;
    RETURN h.seq + 1;
END $$ LANGUAGE plpgsql;
"#;

/// One append by a pgbench client: a 32-hex trace id, an agent id and a
/// 448-byte body, 512 bytes of event.
const APPEND: &str = "\\set t random(1, 1000000000)\n\
SELECT append_event(md5(:t::text), 'agent-' || :client_id, decode(repeat('ab', 448), 'hex'));\n";

/// The timeline of the large trace.
const TIMELINE: &str = "SELECT seq, agent_id, body, hash FROM audit_events WHERE trace_id = 'big-trace' ORDER BY seq;\n";

/// PostgreSQL's programs.
struct Pg {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// Run as this user (PostgreSQL refuses to run as root).
    user: Option<&'static str>,
}

impl Pg {
    fn cmd(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        match self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = self
            .cmd(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {program}"))?;
        if !out.status.success() {
            bail!(
                "{program} {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn sql(&self, sql: &str) -> Result<String> {
        let port = self.port.to_string();
        self.run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "bench",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-qAt",
                "-c",
                sql,
            ],
        )
    }

    /// Runs a pgbench script; returns transactions/s and the per-transaction
    /// latencies from its log.
    fn bench(
        &self,
        dir: &Path,
        name: &str,
        script: &str,
        clients: usize,
        secs: u64,
    ) -> Result<(f64, Vec<Duration>)> {
        let script_path = dir.join(format!("{name}.sql"));
        std::fs::write(&script_path, script)?;
        let logs = dir.join(format!("{name}-log"));
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs)?;
        if self.user.is_some() {
            chown(&logs)?;
            chown(&script_path)?;
        }
        let (port, c, t) = (self.port.to_string(), clients.to_string(), secs.to_string());
        let out = self
            .cmd("pgbench")
            .current_dir(&logs)
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "bench", "-n"])
            .args(["-c", &c, "-j", "2", "-T", &t, "-l", "-f"])
            .arg(&script_path)
            .arg("postgres")
            .stdin(Stdio::null())
            .output()
            .context("running pgbench")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!("pgbench: {text}{}", String::from_utf8_lossy(&out.stderr));
        }
        let tps = text
            .lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .context("no tps in pgbench's output")?;
        // Log lines: client transaction latency_us script epoch epoch_us.
        let mut lat = Vec::new();
        for e in std::fs::read_dir(&logs)? {
            for line in std::fs::read_to_string(e?.path())?.lines() {
                if let Some(us) = line.split_whitespace().nth(2).and_then(|v| v.parse().ok()) {
                    lat.push(Duration::from_micros(us));
                }
            }
        }
        Ok((tps, lat))
    }
}

fn chown(p: &Path) -> Result<()> {
    let ok = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(p)
        .status()?
        .success();
    anyhow::ensure!(ok, "chown {}", p.display());
    Ok(())
}

/// PostgreSQL's bin directory.
fn pg_bin(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(b) = given {
        return Ok(b);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("postgres").exists() {
            return Ok(dir);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (apt-get install postgresql)")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
    });
    found
        .pop()
        .context("no PostgreSQL server under /usr/lib/postgresql")
}

/// A free loopback port.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts a scratch cluster; stops it when dropped.
struct Cluster(Pg);

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.0.data.to_string_lossy().into_owned();
        let _ = self
            .0
            .run("pg_ctl", &["-D", &data, "-m", "immediate", "stop"]);
    }
}

fn start_pg(dir: &Path, bin: PathBuf) -> Result<Cluster> {
    let root = nix_is_root();
    let data = dir.join("pgdata");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    if root {
        chown(dir)?;
    }
    let pg = Pg {
        bin,
        data: data.clone(),
        port: free_port()?,
        user: root.then_some("postgres"),
    };
    let d = data.to_string_lossy().into_owned();
    pg.run(
        "initdb",
        &["-D", &d, "-U", "bench", "--auth=trust", "-E", "UTF8"],
    )?;
    let opts = format!(
        "-p {} -c listen_addresses=127.0.0.1 -k {} -c synchronous_commit=on -c fsync=on \
         -c max_connections=100 -c shared_buffers=512MB -c wal_buffers=16MB -c max_wal_size=4GB",
        pg.port,
        dir.display()
    );
    let log = dir.join("pg.log").to_string_lossy().into_owned();
    pg.run(
        "pg_ctl",
        &["-D", &d, "-l", &log, "-o", &opts, "-w", "start"],
    )?;
    Ok(Cluster(pg))
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub async fn run(a: PeerArgs) -> Result<()> {
    let load: &Load = &a.load;
    let pg_dir = load.dir.join("postgres");
    let cluster = start_pg(&pg_dir, pg_bin(a.pg_bin.clone())?)?;
    let pg = &cluster.0;
    let version = pg.sql("SHOW server_version")?;
    println!(
        "ledger-bench peer: PostgreSQL {} (hash chain in the database, serialised on the chain head, synchronous_commit on) vs ledgerd, {} writers, 512-byte events, {} s per phase",
        version.trim(),
        load.streams,
        a.seconds
    );
    pg.sql(SCHEMA)?;

    // Durable ingest.
    let (pg_tps, pg_lat) = pg.bench(&pg_dir, "append", APPEND, load.streams, a.seconds)?;
    let rows: u64 = pg
        .sql("SELECT count(*) FROM audit_events")?
        .trim()
        .parse()?;
    let chain_ok = pg.sql(
        "SELECT bool_and(e.prev_hash = p.hash) FROM audit_events e JOIN audit_events p ON p.seq = e.seq - 1",
    )?;
    println!(
        "postgres     {pg_tps:>10.0} events/s   append latency {}   ({rows} rows, chain intact: {})",
        percentiles(pg_lat),
        chain_ok.trim()
    );
    let (spawned, _addr, channels) = start(load, true).await?;
    let run = run_id();
    let gen_fn = super::wire::bench_events(run, load.event_bytes);
    let led: Phase = drive(
        &channels,
        load,
        gen_fn,
        Until::Elapsed(Duration::from_secs(a.seconds)),
        None,
    )
    .await?;
    let led_rate = report("ledgerd", &led);
    println!(
        "ratio        {:>10.1}   ledgerd / PostgreSQL, durable ingest",
        led_rate / pg_tps
    );

    // Timelines: the same shape of log in both, one 1,000-event trace.
    let shape = TraceFill::new(load, a.entries, 1000, 10);
    pg.sql("TRUNCATE audit_events")?;
    pg.sql(&format!(
        "INSERT INTO audit_events \
         SELECT g, CASE WHEN g % {every} = 0 THEN 'big-trace' ELSE md5((g / 10)::text) END, \
                'agent-' || (g % 100), decode(repeat('ab', 448), 'hex'), \
                sha256(int8send(g - 1)), sha256(int8send(g)) \
         FROM generate_series(0, {last}) AS g; ANALYZE audit_events;",
        every = shape.every,
        last = shape.total - 1
    ))?;
    let (_, pg_q) = pg.bench(&pg_dir, "timeline", TIMELINE, 1, 5)?;
    let pg_p50 = median(&pg_q);
    println!(
        "postgres     timeline of {} rows in {} (indexed): {}",
        shape.total / shape.every,
        shape.total,
        percentiles(pg_q)
    );
    drop(channels);
    drop(spawned);
    let (spawned, _addr, channels) = start(load, true).await?;
    let fill = shape.fill(&channels, load).await?;
    report("fill", &fill);
    let (n, times) = big_timelines(&channels[0], false, 30).await?;
    let led_p50 = median(&times);
    println!(
        "ledgerd      timeline of {n} events in {}: {}",
        shape.total,
        percentiles(times)
    );
    let (_, proved) = big_timelines(&channels[0], true, 30).await?;
    println!(
        "ledgerd      the same with an inclusion proof per event: {}",
        percentiles(proved)
    );
    println!(
        "ratio        {:>10.1}   PostgreSQL p50 / ledgerd p50, timeline",
        pg_p50.as_secs_f64() / led_p50.as_secs_f64()
    );
    drop(spawned);
    Ok(())
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

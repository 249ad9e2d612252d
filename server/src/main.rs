//! `ledgerd`: the Agent Ledger server.

use clap::Parser;

// glibc malloc spent a tenth of the server's time under load (profiled);
// mimalloc's thread-local free lists cut that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use ledgerd::config::{Config, LogFormat};
use std::net::SocketAddr;
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "ledgerd",
    version,
    about = "Agent Ledger server: a tamper-evident flight recorder for AI agents",
    long_about = "Agent Ledger server. Agents stream audit events over gRPC; each is appended \
                  durably to an append-only Merkle log in RocksDB and covered by a signed \
                  checkpoint before it is acknowledged.\n\nWith no options it serves one log \
                  from ./ledger-data on 127.0.0.1:7400 (metrics on 127.0.0.1:7401). Settings \
                  come from the defaults, then --config FILE (TOML), then environment \
                  variables and flags."
)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "LEDGERD_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (databases and log keys).
    #[arg(long, env = "LEDGERD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// gRPC listen address (port 0 picks a free port).
    #[arg(long, env = "LEDGERD_LISTEN")]
    listen: Option<SocketAddr>,
    /// Prometheus metrics listen address.
    #[arg(long, env = "LEDGERD_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Serve the tlog-tiles HTTP read API on this address (off by default).
    #[arg(long, env = "LEDGERD_TILES_LISTEN")]
    tiles_listen: Option<SocketAddr>,
    /// Serve the incident console (web page and HTTP JSON API) on this
    /// address (off by default).
    #[arg(long, env = "LEDGERD_CONSOLE_LISTEN")]
    console_listen: Option<SocketAddr>,
    /// OTLP/HTTP listen address (`POST /v1/traces`; default 127.0.0.1:4318).
    #[arg(long, env = "LEDGERD_OTLP_HTTP_LISTEN")]
    otlp_http_listen: Option<SocketAddr>,
    /// Mirror every log to this directory (sets mirror.backend = "dir").
    #[arg(long, env = "LEDGERD_MIRROR_DIR")]
    mirror_dir: Option<PathBuf>,
    /// Log line format.
    #[arg(long, env = "LEDGERD_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Write the bound addresses and log verifier keys as JSON to this file
    /// once serving.
    #[arg(long, env = "LEDGERD_READY_FILE")]
    ready_file: Option<PathBuf>,
    /// Load and check the configuration, print it as TOML, and exit.
    #[arg(long)]
    check_config: bool,
    /// Generate a signing key for a log with this origin: the private key
    /// goes to standard output (save it as the log's key_file, mode 0600),
    /// the public verifier key to standard error. Then exit.
    #[arg(long, value_name = "ORIGIN")]
    generate_key: Option<String>,
    /// Print the configuration reference (Markdown) and exit.
    #[arg(long)]
    config_reference: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Manage credentials (API keys, client certificates) in
    /// `<data_dir>/access.json`; a running server picks changes up within a second.
    #[command(subcommand)]
    Keys(Keys),
    /// Rebuild the data directory from the object-storage mirror after the
    /// disk was lost: every log of the configuration is read back from
    /// `<from>/<origin>/`, audited (entries, chain, tiles, payloads, root,
    /// anchors) and written into a fresh store; anything inconsistent and
    /// nothing is kept. Each log's signing key must be at its key_file (the
    /// mirror holds no private key). Start the server afterwards: it
    /// rebuilds the query indexes and continues each log at its next index.
    Restore {
        /// The mirror: a directory or `s3://bucket/prefix` (region and
        /// endpoint from [mirror.s3], else AWS_REGION / AWS_ENDPOINT_URL).
        #[arg(long)]
        from: String,
    },
}

/// What a new credential may do, and where.
#[derive(clap::Args)]
struct Grant {
    /// The log (tenant) it is bound to.
    #[arg(long)]
    tenant: String,
    #[arg(long, value_enum)]
    role: ledgerd::auth::Role,
    /// For writers: an agent id it may append as (repeatable; none: any).
    #[arg(long = "agent")]
    agents: Vec<String>,
    /// Who or what it is for.
    #[arg(long, default_value = "")]
    note: String,
}

#[derive(clap::Subcommand)]
enum Keys {
    /// Create an API key; the token is printed once and only its hash is kept.
    Create {
        #[command(flatten)]
        grant: Grant,
    },
    /// Register a client certificate (PEM) for mutual TLS.
    AddCert {
        #[command(flatten)]
        grant: Grant,
        /// The client's certificate, PEM.
        cert: PathBuf,
    },
    /// Revoke a credential by id.
    Revoke { id: String },
    /// List credentials (never secrets).
    List,
}

fn keys(config: &Config, cmd: Keys) -> anyhow::Result<()> {
    use ledgerd::auth::AccessFile;
    let path = AccessFile::path(&config.data_dir);
    let mut file = AccessFile::load(&path)?;
    let tenant_ok = |t: &str| {
        anyhow::ensure!(
            config.logs.iter().any(|l| l.id == t),
            "--tenant {t:?}: no such log in the configuration"
        );
        Ok(())
    };
    match cmd {
        Keys::Create { grant: g } => {
            tenant_ok(&g.tenant)?;
            let token = file.create_key(&g.tenant, g.role, g.agents, &g.note)?;
            file.save(&path)?;
            println!("{token}");
        }
        Keys::AddCert { grant: g, cert } => {
            tenant_ok(&g.tenant)?;
            let pem = std::fs::read(&cert)?;
            let id = file.add_cert(&g.tenant, g.role, g.agents, &pem, &g.note)?;
            file.save(&path)?;
            println!("{id}");
        }
        Keys::Revoke { id } => {
            file.revoke(&id)?;
            file.save(&path)?;
            println!("revoked {id}");
        }
        Keys::List => {
            for c in &file.credentials {
                println!(
                    "{}\t{:?}\t{}\t{:?}\t{}\t{}{}",
                    c.id,
                    c.kind,
                    c.tenant,
                    c.role,
                    c.agents.join(","),
                    c.note,
                    if c.revoked_at.is_some() {
                        "\tREVOKED"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    Ok(())
}

fn load(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(v) = &cli.data_dir {
        config.data_dir = v.clone();
    }
    if let Some(v) = cli.listen {
        config.listen = v;
    }
    if let Some(v) = cli.metrics_listen {
        config.metrics_listen = v;
    }
    if let Some(v) = cli.tiles_listen {
        config.tiles.listen = Some(v);
    }
    if let Some(v) = cli.console_listen {
        config.console.listen = Some(v);
    }
    if let Some(v) = cli.otlp_http_listen {
        config.otlp.http_listen = Some(v);
    }
    if let Some(v) = &cli.mirror_dir {
        config.mirror.backend = ledgerd::config::MirrorBackend::Dir;
        config.mirror.dir = Some(v.clone());
    }
    if let Some(v) = cli.log_format {
        config.log_format = v;
    }
    config.validate()?;
    Ok(config)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if cli.config_reference {
        print!("{}", ledgerd::config::reference());
        return std::process::ExitCode::SUCCESS;
    }
    if let Some(origin) = &cli.generate_key {
        return match ledger_verify::NoteSigner::generate(origin) {
            Ok(k) => {
                println!("{}", k.to_private_key_string());
                eprintln!("verifier key: {}", k.verifier());
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ledgerd: --generate-key: {e}");
                std::process::ExitCode::from(2)
            }
        };
    }
    let config = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ledgerd: configuration error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Some(Command::Keys(k)) = cli.command {
        return match keys(&config, k) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ledgerd keys: {e:#}");
                std::process::ExitCode::from(2)
            }
        };
    }
    if let Some(Command::Restore { from }) = &cli.command {
        init_tracing(config.log_format);
        return restore(&config, from);
    }
    if cli.check_config {
        match toml::to_string_pretty(&config) {
            Ok(t) => {
                println!("{t}");
                return std::process::ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("ledgerd: {e}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    init_tracing(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ledgerd: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ledgerd::server::run(config, cli.ready_file)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("ledgerd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `ledgerd restore`: prints what it restored, one line per log.
fn restore(config: &Config, from: &str) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ledgerd restore: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ledgerd::restore::restore(config, from)) {
        Ok(logs) => {
            for r in logs {
                println!(
                    "restored log {} ({}): {} entries, {} payloads, {} tiles checked, {} anchors matched, in {:.1} s ({:.0} entries/s)",
                    r.log,
                    r.origin,
                    r.entries,
                    r.payloads,
                    r.tiles_checked,
                    r.anchors_matched,
                    r.seconds,
                    r.entries as f64 / r.seconds.max(1e-9)
                );
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ledgerd restore: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        // Colour only on a terminal: log files and journald get plain text.
        LogFormat::Human => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(
                std::io::IsTerminal::is_terminal(&std::io::stdout())
                    && std::env::var_os("NO_COLOR").is_none(),
            )
            .init(),
    }
}

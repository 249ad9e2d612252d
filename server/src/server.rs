//! Start-up, serving and graceful shutdown of `ledgerd`.

use crate::config::Config;
use crate::log::{Log, LogSettings};
use crate::metrics::{self, Metrics};
use crate::service::Logs;
use crate::service::admin::AdminService;
use crate::service::export::ExportService;
use crate::service::ingest::IngestService;
use crate::service::proofs::ProofsService;
use crate::service::query::QueryService;
use crate::validate::Limits;
use anyhow::Context;
use ledger_proto::v1::admin_server::AdminServer;
use ledger_proto::v1::export_server::ExportServer;
use ledger_proto::v1::ingest_server::IngestServer;
use ledger_proto::v1::proofs_server::ProofsServer;
use ledger_proto::v1::query_server::QueryServer;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// What a started server tells its supervisor (and the tests): where it
/// listens and the public keys of its logs.
#[derive(Debug, Serialize)]
pub struct Ready {
    pub grpc: String,
    pub metrics: String,
    /// The tlog-tiles read API, when served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tiles: Option<String>,
    /// OTLP/HTTP, when served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_http: Option<String>,
    /// The incident console (`http://…` or `https://…`), when served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console: Option<String>,
    pub logs: Vec<ReadyLog>,
}

#[derive(Debug, Serialize)]
pub struct ReadyLog {
    pub id: String,
    pub origin: String,
    pub verifier_key: String,
    pub tree_size: u64,
}

pub fn limits_of(config: &Config) -> Limits {
    let i = &config.ingest;
    Limits {
        max_payload_bytes: i.max_payload_bytes,
        max_attributes: i.max_attributes,
        max_attribute_key_bytes: i.max_attribute_key_bytes,
        max_attribute_value_bytes: i.max_attribute_value_bytes,
        max_future_skew: Duration::from_secs(i.max_future_skew_secs),
    }
}

/// Opens every log (checking each against its last checkpoint).
pub fn open_logs(config: &Config, metrics: &Arc<Metrics>) -> anyhow::Result<Vec<Arc<Log>>> {
    config
        .logs
        .iter()
        .map(|l| {
            Log::open(
                LogSettings {
                    id: l.id.clone(),
                    origin: l.origin.clone(),
                    dir: config.log_dir(&l.id),
                    key_file: config.key_file(l),
                    queue_events: config.ingest.queue_events,
                    queue_bytes: config.ingest.queue_bytes,
                    max_batch: config.ingest.max_batch,
                    checkpoint_interval: Duration::from_millis(config.checkpoint.interval_ms),
                    limits: limits_of(config),
                    mirrored: config.mirror.backend != crate::config::MirrorBackend::None,
                    ack_after_mirror: config.mirror.ack_after_mirror,
                    index_pace: crate::indexer::PACE,
                    feed_bytes: crate::mirror::feed::FEED_BYTES,
                },
                metrics.clone(),
            )
            .with_context(|| format!("log {}", l.id))
        })
        .collect()
}

/// The rustls server configuration, when TLS is configured.
fn tls_config(config: &Config) -> anyhow::Result<Option<ServerTlsConfig>> {
    let t = &config.tls;
    let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) else {
        return Ok(None);
    };
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = &t.client_ca_file {
        tls = tls
            .client_ca_root(Certificate::from_pem(read(ca)?))
            .client_auth_optional(t.client_auth == crate::config::ClientAuth::Optional);
    }
    Ok(Some(tls))
}

/// Background tasks that follow the logs (anchorers, mirrors), stopped
/// together.
struct Followers {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Followers {
    fn new() -> (Followers, tokio::sync::watch::Receiver<bool>) {
        let (stop, rx) = tokio::sync::watch::channel(false);
        (
            Followers {
                stop,
                tasks: Vec::new(),
            },
            rx,
        )
    }

    /// Asks them to stop and waits for their last round.
    async fn finish(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Starts one anchorer per log on the configured store.
async fn start_anchoring(
    config: &Config,
    logs: Vec<Arc<Log>>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Followers> {
    use crate::anchor::Anchorer;
    use crate::config::AnchorBackend;
    use crate::objects::{DirStore, ObjectStore, S3Store};
    let (mut followers, stop) = Followers::new();
    fn spawn<S: ObjectStore>(
        store: Arc<S>,
        logs: Vec<Arc<Log>>,
        metrics: &Arc<Metrics>,
        interval: Duration,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        tracing::info!(store = %store.describe(), interval = ?interval, "anchoring checkpoints");
        logs.into_iter()
            .map(|log| {
                let a = Anchorer {
                    store: store.clone(),
                    log,
                    metrics: metrics.clone(),
                    interval,
                };
                tokio::spawn(a.run(stop.clone(), Duration::from_secs(10)))
            })
            .collect()
    }
    let interval = Duration::from_secs(config.anchor.interval_secs);
    followers.tasks = match config.anchor.backend {
        AnchorBackend::None => {
            tracing::warn!(
                "anchoring is disabled: nothing outside this machine vouches for the log"
            );
            Vec::new()
        }
        AnchorBackend::Dir => {
            let dir = config.anchor_dir();
            let store = DirStore::new(&dir)
                .with_context(|| format!("anchor directory {}", dir.display()))?;
            spawn(Arc::new(store), logs, metrics, interval, stop)
        }
        AnchorBackend::S3 => {
            let store = S3Store::connect(&config.anchor.s3.settings(), "anchor.s3", true).await?;
            spawn(Arc::new(store), logs, metrics, interval, stop)
        }
    };
    Ok(followers)
}

/// Starts one mirror publisher per log on the configured store.
async fn start_mirroring(
    config: &Config,
    logs: Vec<Arc<Log>>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Followers> {
    use crate::config::MirrorBackend;
    use crate::mirror::Mirror;
    use crate::objects::{DirStore, ObjectStore, S3Store};
    let (mut followers, stop) = Followers::new();
    /// One pool for every log's mirror, niced as RocksDB's flushes are
    /// (see mirror::Mirror::builder).
    fn pool(threads: usize) -> anyhow::Result<Arc<crate::niced::Niced>> {
        Ok(Arc::new(
            crate::niced::Niced::new("mirror", threads, 10)
                .context("starting the mirror's threads")?,
        ))
    }
    fn spawn<S: ObjectStore>(
        store: Arc<S>,
        payload_store: Arc<S>,
        logs: &[Arc<Log>],
        metrics: &Arc<Metrics>,
        concurrency: usize,
        builder: Arc<crate::niced::Niced>,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
        tracing::info!(store = %store.describe(), "mirroring logs");
        Ok(logs
            .iter()
            .map(|log| {
                let m = Mirror {
                    store: store.clone(),
                    payload_store: payload_store.clone(),
                    log: log.clone(),
                    metrics: metrics.clone(),
                    concurrency,
                    builder: builder.clone(),
                };
                tokio::spawn(m.run(stop.clone(), Duration::from_secs(30)))
            })
            .collect())
    }
    let n = config.mirror.concurrency;
    followers.tasks = match config.mirror.backend {
        MirrorBackend::None => Vec::new(),
        MirrorBackend::Dir => {
            let dir = config.mirror_dir();
            // Each unit of a round (a tile's three objects) is built and
            // written on one niced thread; the store's own calls (the
            // round's sync, the checkpoint) run on the same pool.
            let pool = pool(crate::mirror::units_at_once(n).max(2))?;
            let store = Arc::new(
                DirStore::new(&dir)
                    .with_context(|| format!("mirror directory {}", dir.display()))?
                    .on_pool(pool.clone()),
            );
            spawn(store.clone(), store, &logs, metrics, n, pool, &stop)?
        }
        MirrorBackend::S3 => {
            let s3 = &config.mirror.s3;
            let store =
                Arc::new(S3Store::connect(&s3.settings(&s3.bucket), "mirror.s3", false).await?);
            let payloads = if s3.payload_bucket.is_empty() {
                store.clone()
            } else {
                Arc::new(
                    S3Store::connect(&s3.settings(&s3.payload_bucket), "mirror.s3.payload", false)
                        .await?,
                )
            };
            spawn(store, payloads, &logs, metrics, n, pool(2)?, &stop)?
        }
    };
    Ok(followers)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs the server until SIGINT or SIGTERM, then drains queued appends and
/// stops.
pub async fn run(config: Config, ready_file: Option<PathBuf>) -> anyhow::Result<()> {
    config.validate()?;
    let metrics = Metrics::new();
    let logs = open_logs(&config, &metrics)?;
    let logs = Arc::new(Logs::new(logs, &config.logs[0].id));

    let grpc_listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding gRPC address {}", config.listen))?;
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .with_context(|| format!("binding metrics address {}", config.metrics_listen))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let metrics_addr = metrics_listener.local_addr()?;

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<IngestServer<IngestService>>().await;
    health.set_serving::<ProofsServer<ProofsService>>().await;
    health.set_serving::<QueryServer<QueryService>>().await;
    health.set_serving::<ExportServer<ExportService>>().await;
    let tiles_listener = match config.tiles.listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding tiles address {addr}"))?,
        ),
        None => None,
    };
    let tiles_addr = tiles_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let access = crate::auth::Access::new(config.auth.required, &config.data_dir)?;
    spawn_credential_refresh(access.clone());
    let otlp = Arc::new(crate::otlp::OtlpIngest {
        logs: logs.clone(),
        limiter: Arc::new(crate::auth::RateLimiter::new(
            config.limits.events_per_second,
            config.limits.burst_events,
            config.limits.daily_events,
        )),
        mapping: crate::otlp::Mapping {
            keep_non_genai: config.otlp.keep_non_genai,
            max_attributes: config.ingest.max_attributes,
            max_attribute_key_bytes: config.ingest.max_attribute_key_bytes,
            max_attribute_value_bytes: config.ingest.max_attribute_value_bytes,
        },
    });
    let otlp_addr = start_otlp_http(&config, &otlp, &access, stop_rx.clone()).await?;
    let grpc = grpc_server(
        &config,
        &logs,
        &access,
        &otlp,
        health_service,
        grpc_listener,
        stopped(stop_rx.clone()),
    )?;
    let console_url = start_console(&config, &logs, &access, stop_rx.clone()).await?;
    if let Some(l) = tiles_listener {
        tokio::spawn(crate::tiles_http::serve(
            l,
            logs.clone(),
            access.clone(),
            stopped(stop_rx.clone()),
        ));
    }
    let grpc_task = tokio::spawn(grpc);
    let metrics_task = tokio::spawn(metrics::serve(
        metrics_listener,
        metrics.clone(),
        stopped(stop_rx.clone()),
    ));

    let mirrors = start_mirroring(&config, logs.all().cloned().collect(), &metrics).await?;
    let anchorers = start_anchoring(&config, logs.all().cloned().collect(), &metrics).await?;
    announce_ready(
        &logs,
        grpc_addr,
        metrics_addr,
        Endpoints {
            tiles: tiles_addr,
            otlp_http: otlp_addr,
            console: console_url,
        },
        ready_file,
    )?;

    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutdown requested: draining queued appends"),
        r = grpc_task => {
            r??;
            anyhow::bail!("gRPC server stopped unexpectedly");
        }
    }
    health
        .set_not_serving::<IngestServer<IngestService>>()
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    drain(&logs, mirrors, anchorers).await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), metrics_task).await;
    tracing::info!("ledgerd stopped");
    Ok(())
}

/// Commits and signs everything queued, then lets the mirrors publish and
/// the anchorers anchor that final state (in that order: anchors vouch for
/// mirrored checkpoints).
async fn drain(logs: &Logs, mirrors: Followers, anchorers: Followers) {
    for log in logs.all() {
        log.shutdown().await;
    }
    mirrors.finish().await;
    anchorers.finish().await;
}

/// The largest OTLP export request taken: a batch of spans, each up to an
/// event's payload limit (exporters send up to 512 spans a batch).
fn otlp_request_limit(config: &Config) -> usize {
    (config.ingest.max_payload_bytes + crate::service::answers::REQUEST_OVERHEAD) * 4
}

/// Starts OTLP/HTTP when configured; returns its address. The default
/// address being taken is not fatal (another server or collector on this
/// machine has it); an address set explicitly must bind.
async fn start_otlp_http(
    config: &Config,
    otlp: &Arc<crate::otlp::OtlpIngest>,
    access: &Arc<crate::auth::Access>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<std::net::SocketAddr>> {
    let Some(addr) = config.otlp.http_listen else {
        return Ok(None);
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) if addr == crate::config::default_otlp_http() => {
            tracing::warn!(%addr, error = %e, "OTLP/HTTP not served: its default address is taken (set otlp.http_listen or --otlp-http-listen); OTLP/gRPC is on the main port");
            return Ok(None);
        }
        Err(e) => return Err(anyhow::anyhow!("binding OTLP/HTTP address {addr}: {e}")),
    };
    let local = listener.local_addr()?;
    tokio::spawn(crate::otlp::http::serve(
        listener,
        otlp.clone(),
        access.clone(),
        otlp_request_limit(config),
        stopped(stop),
    ));
    Ok(Some(local))
}

/// Starts the incident console when configured (over TLS when the server
/// has a certificate); returns its URL.
async fn start_console(
    config: &Config,
    logs: &Arc<Logs>,
    access: &Arc<crate::auth::Access>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<String>> {
    let Some(addr) = config.console.listen else {
        return Ok(None);
    };
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding console address {addr}"))?;
    let local = tcp.local_addr()?;
    let tls = match (&config.tls.cert_file, &config.tls.key_file) {
        (Some(cert), Some(key)) => Some(crate::console::tls_acceptor(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = crate::console::ConsoleListener::new(tcp, tls)?;
    tokio::spawn(crate::console::serve(
        listener,
        logs.clone(),
        access.clone(),
        stopped(stop),
    ));
    Ok(Some(format!("{scheme}://{local}/")))
}

/// Resolves when the stop flag turns true.
async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// The gRPC server: every service behind authentication, one request size
/// limit, the bad-request answers layer, TLS when configured; it serves
/// `listener` until `shutdown` resolves.
fn grpc_server<H, F>(
    config: &Config,
    logs: &Arc<Logs>,
    access: &Arc<crate::auth::Access>,
    otlp: &Arc<crate::otlp::OtlpIngest>,
    health_service: tonic_health::pb::health_server::HealthServer<H>,
    grpc_listener: tokio::net::TcpListener,
    shutdown: F,
) -> anyhow::Result<
    impl std::future::Future<Output = Result<(), tonic::transport::Error>> + use<H, F>,
>
where
    H: tonic_health::pb::health_server::Health,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ledger_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building gRPC reflection")?;

    let authn = crate::auth::Authenticate(access.clone());
    let limiter = otlp.limiter.clone();
    // One request size limit for every RPC, named in the answer to an
    // oversized request.
    let max_message = config.ingest.max_payload_bytes + crate::service::answers::REQUEST_OVERHEAD;
    let ingest = InterceptedService::new(
        IngestServer::new(IngestService {
            logs: logs.clone(),
            limiter,
            request_limit: max_message,
        })
        .max_decoding_message_size(max_message),
        authn.clone(),
    );
    let proofs = InterceptedService::new(
        ProofsServer::new(ProofsService { logs: logs.clone() })
            .max_decoding_message_size(max_message),
        authn.clone(),
    );
    let query = InterceptedService::new(
        QueryServer::new(QueryService { logs: logs.clone() })
            .max_encoding_message_size(256 << 20)
            .max_decoding_message_size(max_message),
        authn.clone(),
    );
    let export = InterceptedService::new(
        ExportServer::new(ExportService { logs: logs.clone() })
            .max_decoding_message_size(max_message),
        authn.clone(),
    );
    let admin = InterceptedService::new(
        AdminServer::new(AdminService { logs: logs.clone() })
            .max_decoding_message_size(max_message),
        authn.clone(),
    );
    let governance = InterceptedService::new(
        ledger_proto::v1::governance_server::GovernanceServer::new(
            crate::service::governance::GovernanceService { logs: logs.clone() },
        )
        .max_decoding_message_size(max_message),
        authn.clone(),
    );
    let traces = InterceptedService::new(
        opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(
            crate::otlp::OtlpGrpc(otlp.clone()),
        )
        .max_decoding_message_size(otlp_request_limit(config)),
        authn,
    );
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls_config(config)? {
        builder = builder.tls_config(tls).context("TLS configuration")?;
    }

    Ok(builder
        .layer(crate::service::answers::RequestErrors { limit: max_message })
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(ingest)
        .add_service(proofs)
        .add_service(query)
        .add_service(export)
        .add_service(admin)
        .add_service(traces)
        .add_service(governance)
        // The builder's tcp_nodelay only reaches sockets tonic accepts
        // itself; without it here every small response waits out the
        // peer's delayed ACK (~40 ms).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(grpc_listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(std::time::Duration::from_secs(60))),
            shutdown,
        ))
}

/// Re-reads the credentials file every second, so revocations and new keys
/// take effect within a second.
fn spawn_credential_refresh(access: Arc<crate::auth::Access>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let a = access.clone();
            // A stat (and a read when it changed): off the async threads.
            let _ = tokio::task::spawn_blocking(move || a.refresh_shared()).await;
        }
    });
}

/// The optional HTTP endpoints a started server serves.
struct Endpoints {
    tiles: Option<std::net::SocketAddr>,
    otlp_http: Option<std::net::SocketAddr>,
    console: Option<String>,
}

/// Logs what is served (each log's verifier key above all) and writes the
/// ready file, atomically, for whoever waits on it.
fn announce_ready(
    logs: &Logs,
    grpc_addr: std::net::SocketAddr,
    metrics_addr: std::net::SocketAddr,
    endpoints: Endpoints,
    ready_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    if let Some(url) = &endpoints.console {
        tracing::info!(console = %url, "incident console served");
    }
    let ready = Ready {
        grpc: grpc_addr.to_string(),
        metrics: metrics_addr.to_string(),
        tiles: endpoints.tiles.map(|a| a.to_string()),
        otlp_http: endpoints.otlp_http.map(|a| a.to_string()),
        console: endpoints.console,
        logs: logs
            .all()
            .map(|l| ReadyLog {
                id: l.id.clone(),
                origin: l.origin.clone(),
                verifier_key: l.verifier.to_string(),
                tree_size: l
                    .latest_checkpoint()
                    .map(|c| c.checkpoint.size)
                    .unwrap_or(0),
            })
            .collect(),
    };
    for l in &ready.logs {
        tracing::info!(log = %l.id, origin = %l.origin, verifier_key = %l.verifier_key, tree_size = l.tree_size, "serving log");
    }
    tracing::info!(grpc = %grpc_addr, metrics = %metrics_addr, "ledgerd ready");
    if let Some(path) = ready_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&ready)?)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(())
}

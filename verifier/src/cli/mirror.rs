//! `ledger-verify mirror`: audits a log straight from its object-storage
//! mirror (a directory or `s3://bucket/prefix`), with no server and no
//! export step.

use super::{Report, checked_anchors, findings_text, parse_key, progress_bar, read_anchors};
use anyhow::{Context, Result};
use ledger_verify::anchors::check_anchors;
use ledger_verify::mirror::{Fetch, audit_mirror};
use serde_json::json;
use std::path::PathBuf;

/// An S3 client from the standard environment: AWS_ACCESS_KEY_ID,
/// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION and, for
/// S3-compatible stores, AWS_ENDPOINT_URL (path-style addressing).
pub fn s3_client_from_env() -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut b = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(
            env("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
        ));
    if let (Some(k), Some(s)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        b = b.credentials_provider(Credentials::new(
            k,
            s,
            env("AWS_SESSION_TOKEN"),
            None,
            "environment",
        ));
    }
    if let Some(e) = env("AWS_ENDPOINT_URL") {
        b = b.endpoint_url(e).force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(b.build())
}

/// One log's mirror in a directory: `<root>/<origin>/…` (or `<root>/…`
/// when given the log's own directory).
struct DirMirror {
    root: PathBuf,
}

impl Fetch for DirMirror {
    fn fetch(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.root.join(path)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}

/// One log's mirror in S3: `s3://<bucket>/<prefix>/<origin>/…`, read from
/// many threads through one runtime.
struct S3Mirror {
    client: aws_sdk_s3::Client,
    runtime: tokio::runtime::Runtime,
    bucket: String,
    prefix: String,
}

impl Fetch for S3Mirror {
    fn fetch(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
        let key = format!("{}{path}", self.prefix);
        self.runtime.block_on(async {
            match self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await
            {
                Ok(o) => o
                    .body
                    .collect()
                    .await
                    .map(|b| Some(b.into_bytes().to_vec()))
                    .map_err(|e| std::io::Error::other(format!("s3://{}/{key}: {e}", self.bucket))),
                Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => Ok(None),
                Err(e) => Err(std::io::Error::other(format!(
                    "s3://{}/{key}: {}",
                    self.bucket,
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                ))),
            }
        })
    }
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}

/// The mirror of `origin` at `source`.
fn open(source: &str, origin: &str) -> Result<Box<dyn Fetch>> {
    if let Some(rest) = source.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            format!("{origin}/")
        } else {
            format!("{prefix}/{origin}/")
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        return Ok(Box::new(S3Mirror {
            client: s3_client_from_env(),
            runtime,
            bucket: bucket.to_string(),
            prefix,
        }));
    }
    let root = PathBuf::from(source);
    anyhow::ensure!(root.is_dir(), "{source}: not a directory");
    let root = if root.join(origin).join("checkpoint").is_file() || root.join(origin).is_dir() {
        root.join(origin)
    } else {
        root
    };
    Ok(Box::new(DirMirror { root }))
}

/// Adapts a boxed source to the audit's `Fetch + Sync` bound.
struct Boxed<'a>(&'a dyn Fetch);

impl Fetch for Boxed<'_> {
    fn fetch(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
        self.0.fetch(path)
    }
    fn describe(&self) -> String {
        self.0.describe()
    }
}

/// `ledger-verify mirror`.
pub fn audit(
    key: &str,
    source: &str,
    anchors: Option<&str>,
    concurrency: usize,
    quiet: bool,
) -> Result<Report> {
    let key = parse_key(key)?;
    // Anchors: those given, else any kept beside the mirror.
    let anchored = match anchors {
        Some(src) => checked_anchors(src, &key)?.1,
        None => {
            let found = read_anchors(source, key.name()).unwrap_or_default();
            check_anchors(&found, &key)
        }
    };
    let src = open(source, key.name())?;
    let bar = progress_bar(quiet, "auditing the mirror");
    let started = std::time::Instant::now();
    let mut report = audit_mirror(
        &Boxed(src.as_ref()),
        &key,
        &anchored.checkpoints,
        concurrency,
        |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
        |_| {},
    )
    .with_context(|| format!("reading the mirror at {source}"))?;
    bar.finish_and_clear();
    report
        .audit
        .findings
        .splice(0..0, anchored.findings.iter().cloned());
    let secs = started.elapsed().as_secs_f64();
    let a = &report.audit;
    let rate = a.entries as f64 / secs.max(1e-9);
    let ok = a.clean();
    let summary = if ok {
        format!(
            "mirror OK: {} entries of {} at {}, every one covered by the mirrored checkpoint (size {}){}; {} hash tiles match the tree; {} payloads checked, {} redacted; root {} ({:.1} s, {:.0} entries/s)",
            a.entries,
            a.origin,
            src.describe(),
            a.verified_size,
            if a.anchors_matched > 0 {
                format!(
                    "; {} anchors matched, up to size {}",
                    a.anchors_matched, a.anchored_size
                )
            } else {
                "; no anchors checked".to_string()
            },
            report.tiles_checked,
            a.payloads_checked,
            a.payloads_redacted,
            a.root,
            secs,
            rate
        )
    } else {
        format!(
            "mirror TAMPERED: {} finding(s) in {} entries of {} at {}; data verified up to size {}{}",
            a.findings.len(),
            a.entries,
            key.name(),
            src.describe(),
            a.verified_size,
            findings_text(&a.findings)
        )
    };
    let mut details = serde_json::to_value(&report)?;
    details["seconds"] = json!(secs);
    details["entries_per_second"] = json!(rate);
    details["source"] = json!(src.describe());
    Ok(Report {
        ok,
        summary,
        details,
    })
}

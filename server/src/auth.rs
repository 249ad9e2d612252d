//! Who is calling, and what they may do.
//!
//! Callers authenticate with a bearer API key (`authorization: Bearer
//! alk_<id>.<secret>`) or, over mutual TLS, a client certificate registered
//! by its SHA-256 fingerprint. Each credential is bound to one tenant (a log)
//! and one role. Only hashes of secrets are stored, in `<data_dir>/access.json`,
//! which `ledgerd keys …` edits and the server re-reads when it changes.
//!
//! The authenticated identity is what the server writes into each entry's
//! `writer`; nothing in a request can choose it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;
use tonic::Status;

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Append events (optionally only as some agent ids).
    Writer,
    /// Query, timelines, checkpoints and proofs.
    Reader,
    /// Reader, plus export.
    Auditor,
    /// Everything, including redaction.
    Admin,
    /// Reader, plus approval decisions and the kill switch (Governance).
    Approver,
}

/// The operations roles are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Append,
    Read,
    Export,
    Redact,
    /// Decide on approvals, kill and revive agents.
    Govern,
    /// Await decisions and watch agent states (every role).
    Observe,
}

impl Role {
    pub fn allows(self, a: Action) -> bool {
        matches!(
            (self, a),
            (Role::Admin, _)
                | (_, Action::Observe)
                | (Role::Writer, Action::Append)
                | (Role::Reader | Role::Auditor | Role::Approver, Action::Read)
                | (Role::Auditor, Action::Export)
                | (Role::Approver, Action::Govern)
        )
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Recorded as the entry's writer: `key:<id>`, `cert:<fingerprint>`, or
    /// `anonymous@<ip>` when authentication is off.
    pub name: String,
    /// The one log it may touch; None only for the anonymous caller of a
    /// server without authentication.
    pub tenant: Option<String>,
    pub role: Role,
    /// For writers: the agent ids it may append as (empty: any).
    pub agents: Vec<String>,
}

impl Identity {
    /// Checks the role, and resolves the log a request names ("" = the
    /// caller's own) within the caller's tenant.
    pub fn check(&self, action: Action, requested_log: &str) -> Result<Option<String>, Status> {
        if !self.role.allows(action) {
            return Err(Status::permission_denied(format!(
                "{}: role {:?} may not {action:?}",
                self.name, self.role
            )));
        }
        match &self.tenant {
            None => Ok((!requested_log.is_empty()).then(|| requested_log.to_string())),
            Some(t) if requested_log.is_empty() || requested_log == t => Ok(Some(t.clone())),
            Some(_) => Err(Status::permission_denied(format!(
                "log: {} may not use log {}",
                self.name,
                crate::service::answers::quote(requested_log)
            ))),
        }
    }

    /// A pinned writer may only append as its agents.
    pub fn check_agent(&self, agent_id: &str) -> Result<(), Status> {
        if self.agents.is_empty() || self.agents.iter().any(|a| a == agent_id) {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "event.agent_id: {} may only append as {:?}, not {}",
            self.name,
            self.agents,
            crate::service::answers::quote(agent_id)
        )))
    }
}

/// One credential as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Credential {
    pub id: String,
    pub tenant: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<String>,
    /// `key`: SHA-256 of the secret; `cert`: SHA-256 of the certificate (DER).
    pub kind: CredentialKind,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CredentialKind {
    Key,
    Cert,
}

/// The credentials file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AccessFile {
    pub credentials: Vec<Credential>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl AccessFile {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("access.json")
    }

    pub fn load(path: &Path) -> anyhow::Result<AccessFile> {
        match std::fs::read_to_string(path) {
            Ok(t) => {
                Ok(serde_json::from_str(&t)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AccessFile::default()),
            Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
        }
    }

    /// Writes atomically (temporary file, fsync, rename), mode 0600.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let tmp = path.with_extension("json.tmp");
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        o.mode(0o600);
        let mut f = o.open(&tmp)?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Adds an API key; returns the token (shown once, never stored).
    pub fn create_key(
        &mut self,
        tenant: &str,
        role: Role,
        agents: Vec<String>,
        note: &str,
    ) -> anyhow::Result<String> {
        let mut id = [0u8; 6];
        let mut secret = [0u8; 32];
        getrandom::fill(&mut id).map_err(|e| anyhow::anyhow!("randomness: {e}"))?;
        getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("randomness: {e}"))?;
        let id = hex::encode(id);
        let secret = B64.encode(secret);
        self.credentials.push(Credential {
            id: id.clone(),
            tenant: tenant.to_string(),
            role,
            agents,
            kind: CredentialKind::Key,
            sha256: hex::encode(Sha256::digest(secret.as_bytes())),
            note: note.to_string(),
            created_at: now(),
            revoked_at: None,
        });
        Ok(format!("alk_{id}.{secret}"))
    }

    /// Registers a client certificate (PEM) by its fingerprint.
    pub fn add_cert(
        &mut self,
        tenant: &str,
        role: Role,
        agents: Vec<String>,
        pem: &[u8],
        note: &str,
    ) -> anyhow::Result<String> {
        let der = pem_to_der(pem)?;
        let fp = hex::encode(Sha256::digest(&der));
        let id = fp[..12].to_string();
        self.credentials.push(Credential {
            id: id.clone(),
            tenant: tenant.to_string(),
            role,
            agents,
            kind: CredentialKind::Cert,
            sha256: fp,
            note: note.to_string(),
            created_at: now(),
            revoked_at: None,
        });
        Ok(id)
    }

    pub fn revoke(&mut self, id: &str) -> anyhow::Result<()> {
        let c = self
            .credentials
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or_else(|| anyhow::anyhow!("no credential {id:?}"))?;
        c.revoked_at.get_or_insert_with(now);
        Ok(())
    }
}

/// The DER bytes of the first certificate in a PEM text.
fn pem_to_der(pem: &[u8]) -> anyhow::Result<Vec<u8>> {
    let text = std::str::from_utf8(pem)?;
    let body: String = text
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .and_then(|r| r.split("-----END CERTIFICATE-----").next())
        .ok_or_else(|| anyhow::anyhow!("no PEM certificate found"))?
        .split_whitespace()
        .collect();
    Ok(base64::engine::general_purpose::STANDARD.decode(body)?)
}

/// Constant-time equality of two hex digests.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The server's view of the credentials, re-read when the file changes.
pub struct Access {
    required: bool,
    path: PathBuf,
    state: RwLock<(Option<SystemTime>, AccessFile)>,
    /// Held while the file is being checked: callers that arrive meanwhile
    /// wait for that check instead of each stat'ing the file.
    checking: std::sync::Mutex<()>,
    /// Checks completed so far.
    checks: std::sync::atomic::AtomicU64,
}

impl Access {
    pub fn new(required: bool, data_dir: &Path) -> anyhow::Result<Arc<Access>> {
        let path = AccessFile::path(data_dir);
        let file = AccessFile::load(&path)?;
        let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        Ok(Arc::new(Access {
            required,
            path,
            state: RwLock::new((mtime, file)),
            checking: Default::default(),
            checks: Default::default(),
        }))
    }

    pub fn required(&self) -> bool {
        self.required
    }

    /// Re-reads the file if it changed (revocations take effect here).
    pub fn refresh(&self) {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let changed = self.state.read().map(|s| s.0 != mtime).unwrap_or(true);
        if !changed {
            return;
        }
        match AccessFile::load(&self.path) {
            Ok(f) => {
                if let Ok(mut s) = self.state.write() {
                    *s = (mtime, f);
                    tracing::info!(file = %self.path.display(), "credentials reloaded");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "credentials file unreadable; keeping the previous one")
            }
        }
    }

    /// [`Access::refresh`], shared: if a check is running, waits for it and
    /// takes its result rather than checking again. On a tokio worker of a
    /// multi-threaded runtime (the interceptor, for a credential not known
    /// yet) the wait and the stat run in `block_in_place`, so the worker's
    /// other tasks move to another thread meanwhile. An unauthenticated
    /// flood thus costs one stat at a time, not one per request.
    pub fn refresh_shared(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        let seen = self.checks.load(SeqCst);
        let check = || {
            let _one = self.checking.lock().unwrap_or_else(|p| p.into_inner());
            if self.checks.load(SeqCst) != seen {
                return; // Checked while we waited.
            }
            self.refresh();
            self.checks.fetch_add(1, SeqCst);
        };
        let on_worker = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if on_worker {
            tokio::task::block_in_place(check)
        } else {
            check()
        }
    }

    /// What a client sending a credential to a server without
    /// authentication should know: a credential it sends is still checked.
    fn off_note(&self) -> &'static str {
        if self.required {
            ""
        } else {
            " (authentication is off on this server, but a credential that is sent must be valid: send none to be served anonymously)"
        }
    }

    fn identity_of(c: &Credential) -> Identity {
        let prefix = match c.kind {
            CredentialKind::Key => "key",
            CredentialKind::Cert => "cert",
        };
        Identity {
            name: format!("{prefix}:{}@{}", c.id, c.tenant),
            tenant: Some(c.tenant.clone()),
            role: c.role,
            agents: c.agents.clone(),
        }
    }

    /// Authenticates a request from its metadata and TLS peer certificate.
    /// A credential not known yet makes it re-read the file first (a key
    /// created a moment ago works at once).
    pub fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        peer_cert_der: Option<&[u8]>,
        peer_ip: Option<std::net::IpAddr>,
    ) -> Result<Identity, Status> {
        match self.lookup(metadata, peer_cert_der, peer_ip) {
            Err(s) if s.code() == tonic::Code::Unauthenticated => {
                self.refresh_shared();
                self.lookup(metadata, peer_cert_der, peer_ip)
            }
            other => other,
        }
    }

    fn lookup(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        peer_cert_der: Option<&[u8]>,
        peer_ip: Option<std::net::IpAddr>,
    ) -> Result<Identity, Status> {
        let state = self
            .state
            .read()
            .map_err(|_| Status::internal("credentials lock poisoned"))?;
        let live = |c: &&Credential| c.revoked_at.is_none();
        if let Some(auth) = metadata.get("authorization") {
            let token = auth
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .and_then(|t| t.strip_prefix("alk_"))
                .and_then(|t| t.split_once('.'))
                .ok_or_else(|| {
                    Status::unauthenticated(format!(
                        "authorization: expected `Bearer alk_<id>.<secret>`{}",
                        self.off_note()
                    ))
                })?;
            let (id, secret) = token;
            let hash = hex::encode(Sha256::digest(secret.as_bytes()));
            return state
                .1
                .credentials
                .iter()
                .filter(live)
                .find(|c| c.kind == CredentialKind::Key && c.id == id && same(&c.sha256, &hash))
                .map(Access::identity_of)
                .ok_or_else(|| {
                    Status::unauthenticated(format!(
                        "authorization: unknown or revoked API key{}",
                        self.off_note()
                    ))
                });
        }
        if let Some(der) = peer_cert_der {
            let fp = hex::encode(Sha256::digest(der));
            if let Some(c) = state
                .1
                .credentials
                .iter()
                .filter(live)
                .find(|c| c.kind == CredentialKind::Cert && same(&c.sha256, &fp))
            {
                return Ok(Access::identity_of(c));
            }
            if self.required {
                return Err(Status::unauthenticated(
                    "client certificate is not registered (or was revoked)",
                ));
            }
        }
        if self.required {
            return Err(Status::unauthenticated(
                "authentication required: an API key (authorization: Bearer …) or a registered client certificate",
            ));
        }
        Ok(Identity {
            name: match peer_ip {
                Some(ip) => format!("anonymous@{ip}"),
                None => "anonymous".into(),
            },
            tenant: None,
            role: Role::Admin,
            agents: Vec::new(),
        })
    }
}

/// Authenticates an HTTP request (the tiles and OTLP/HTTP endpoints) the
/// way the gRPC interceptor does: its `authorization` header, off the async
/// threads (an unknown key re-reads the credentials file).
pub async fn authenticate_http(
    access: &Arc<Access>,
    headers: http::HeaderMap,
    peer: std::net::IpAddr,
) -> Result<Identity, Status> {
    let metadata = tonic::metadata::MetadataMap::from_headers(headers);
    let access = access.clone();
    tokio::task::spawn_blocking(move || access.authenticate(&metadata, None, Some(peer)))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
}

/// The gRPC interceptor: authenticates and attaches the [`Identity`].
#[derive(Clone)]
pub struct Authenticate(pub Arc<Access>);

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let cert = req
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| c.to_vec()));
        let ip = req.remote_addr().map(|a| a.ip());
        let id = self.0.authenticate(req.metadata(), cert.as_deref(), ip)?;
        req.extensions_mut().insert(id);
        Ok(req)
    }
}

/// The identity the interceptor attached to a request.
pub fn caller<T>(req: &tonic::Request<T>) -> Result<Identity, Status> {
    req.extensions()
        .get::<Identity>()
        .cloned()
        .ok_or_else(|| Status::internal("request was not authenticated"))
}

/// Token buckets per caller: a noisy credential runs out of its own
/// tokens and gets `RESOURCE_EXHAUSTED` while the others carry on.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: std::sync::Mutex<std::collections::HashMap<String, (f64, std::time::Instant)>>,
    daily: u64,
    /// Per caller: (UTC day number, events appended that day).
    days: std::sync::Mutex<std::collections::HashMap<String, (u64, u64)>>,
}

/// Why an append was held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Rate,
    Quota,
}

impl RateLimiter {
    /// `rate` events/s sustained, `burst` on top, `daily` per UTC day;
    /// 0 = unlimited.
    pub fn new(rate: u64, burst: u64, daily: u64) -> RateLimiter {
        RateLimiter {
            rate: rate as f64,
            burst: (rate.max(burst)) as f64,
            buckets: Default::default(),
            daily,
            days: Default::default(),
        }
    }

    /// Admits one event from `who`, or says which limit holds it back.
    pub fn admit(&self, who: &str) -> Result<(), Limited> {
        if self.daily > 0 {
            let day = now() / 86_400;
            if let Ok(mut d) = self.days.lock() {
                let (d_day, count) = d.entry(who.to_string()).or_insert((day, 0));
                if *d_day != day {
                    *d_day = day;
                    *count = 0;
                }
                if *count >= self.daily {
                    return Err(Limited::Quota);
                }
                *count += 1;
            }
        }
        if self.take(who) {
            Ok(())
        } else {
            Err(Limited::Rate)
        }
    }

    /// Takes one event's token for `who`; false when it has none left.
    fn take(&self, who: &str) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let now = std::time::Instant::now();
        let Ok(mut b) = self.buckets.lock() else {
            return true;
        };
        let (tokens, last) = b.entry(who.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// All credentials by id, for `ledgerd keys list`.
pub fn listing(f: &AccessFile) -> BTreeMap<String, &Credential> {
    f.credentials.iter().map(|c| (c.id.clone(), c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_they_say() {
        use Action::*;
        // Append, Read, Export, Redact, Govern, Observe.
        let table = [
            (Role::Writer, [true, false, false, false, false, true]),
            (Role::Reader, [false, true, false, false, false, true]),
            (Role::Auditor, [false, true, true, false, false, true]),
            (Role::Approver, [false, true, false, false, true, true]),
            (Role::Admin, [true, true, true, true, true, true]),
        ];
        for (role, allowed) in table {
            for (a, want) in [Append, Read, Export, Redact, Govern, Observe]
                .into_iter()
                .zip(allowed)
            {
                assert_eq!(role.allows(a), want, "{role:?} {a:?}");
            }
        }
    }

    #[test]
    fn keys_authenticate_until_revoked_and_only_hashes_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = AccessFile::path(dir.path());
        let mut f = AccessFile::default();
        let token = f
            .create_key("acme", Role::Writer, vec!["agent-a".into()], "ci")
            .unwrap();
        f.save(&path).unwrap();
        let stored = std::fs::read_to_string(&path).unwrap();
        let secret = token.split_once('.').unwrap().1;
        assert!(
            !stored.contains(secret),
            "the secret itself is never stored"
        );

        let access = Access::new(true, dir.path()).unwrap();
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert("authorization", format!("Bearer {token}").parse().unwrap());
        let id = access.authenticate(&md, None, None).unwrap();
        assert_eq!(id.tenant.as_deref(), Some("acme"));
        assert!(id.check_agent("agent-a").is_ok());
        assert!(id.check_agent("agent-b").is_err());
        assert_eq!(
            id.check(Action::Append, "").unwrap().as_deref(),
            Some("acme")
        );
        assert!(id.check(Action::Append, "other").is_err());
        assert!(id.check(Action::Read, "").is_err());

        let mut wrong = tonic::metadata::MetadataMap::new();
        let forged = format!("Bearer {}x", &token[..token.len() - 1]);
        wrong.insert("authorization", forged.parse().unwrap());
        assert_eq!(
            access.authenticate(&wrong, None, None).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert!(
            access
                .authenticate(&tonic::metadata::MetadataMap::new(), None, None)
                .is_err()
        );

        // Revocation is picked up on refresh.
        let mut f = AccessFile::load(&path).unwrap();
        let id_ = f.credentials[0].id.clone();
        f.revoke(&id_).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        f.save(&path).unwrap();
        access.refresh();
        assert!(access.authenticate(&md, None, None).is_err());
    }
}

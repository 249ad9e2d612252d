//! gRPC handlers: thin. They resolve the log, identify the caller, validate
//! and hand over to the log; they never order or write anything themselves.

pub mod admin;
pub mod answers;
pub mod export;
pub mod governance;
pub mod ingest;
pub mod proofs;
pub mod query;

use crate::log::Log;
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::Status;

/// The logs this server hosts, by id.
pub struct Logs {
    by_id: BTreeMap<String, Arc<Log>>,
    default_id: String,
}

impl Logs {
    pub fn new(logs: Vec<Arc<Log>>, default_id: &str) -> Logs {
        Logs {
            by_id: logs.into_iter().map(|l| (l.id.clone(), l)).collect(),
            default_id: default_id.to_string(),
        }
    }

    /// The log a request names; empty means the default log.
    pub fn resolve(&self, id: &str) -> Result<&Arc<Log>, Status> {
        let id = if id.is_empty() { &self.default_id } else { id };
        self.by_id.get(id).ok_or_else(|| {
            Status::not_found(format!(
                "log: no log named {} on this server",
                answers::quote(id)
            ))
        })
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Log>> {
        self.by_id.values()
    }
}

impl Logs {
    /// Takes a request apart for a handler: the authenticated caller, the
    /// message, and the log it names, once the caller may do `action` there.
    pub fn open<T>(
        &self,
        req: tonic::Request<T>,
        action: crate::auth::Action,
        log_of: fn(&T) -> &str,
    ) -> Result<(crate::auth::Identity, T, Arc<Log>), Status> {
        let who = crate::auth::caller(&req)?;
        let msg = req.into_inner();
        let log = self.authorize(&who, action, log_of(&msg))?.clone();
        Ok((who, msg, log))
    }

    /// The log a caller may use for `action`: its own tenant's (the one the
    /// request names must be it, or empty).
    pub fn authorize(
        &self,
        who: &crate::auth::Identity,
        action: crate::auth::Action,
        requested: &str,
    ) -> Result<&Arc<Log>, Status> {
        let name = who.check(action, requested)?;
        self.resolve(name.as_deref().unwrap_or(""))
    }
}

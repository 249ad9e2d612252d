//! The Admin service: redaction of a payload (legal erasure), for admins of
//! the log only. Nothing is ever deleted or updated otherwise.

use super::Logs;
use crate::auth::Action;
use ledger_proto::v1::admin_server::Admin;
use ledger_proto::v1::{AppendAck, RedactRequest};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct AdminService {
    pub logs: Arc<Logs>,
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn redact(&self, req: Request<RedactRequest>) -> Result<Response<AppendAck>, Status> {
        let (who, req, log) = self.logs.open(req, Action::Redact, |r| &r.log)?;
        let ack = log
            .redact(req.target_index, &req.reason, who.name)
            .await
            .map_err(|r| r.to_status())?;
        log.settle(ack)
            .await
            .map(Response::new)
            .map_err(|r| r.to_status())
    }
}

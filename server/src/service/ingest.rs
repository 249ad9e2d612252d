//! The Ingest service: unary `Append` and bidirectional `AppendStream`.

use super::{Logs, writer_of};
use crate::log::{Log, Rejection};
use futures_util::stream::{FuturesOrdered, StreamExt};
use ledger_proto::v1::ingest_server::Ingest;
use ledger_proto::v1::{
    AppendAck, AppendRejection, AppendRequest, AppendResponse, append_response,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Events of one stream in flight at once. Bounds per-stream memory and,
/// together with the sequencer queue, the server's.
const STREAM_WINDOW: usize = 4096;

pub struct IngestService {
    pub logs: Arc<Logs>,
}

type Pending = Pin<Box<dyn Future<Output = AppendResponse> + Send>>;

fn rejected(event_id: String, r: Rejection) -> AppendResponse {
    AppendResponse {
        result: Some(append_response::Result::Rejection(AppendRejection {
            event_id,
            code: r.code as i32,
            message: r.message,
            field: r.field,
        })),
    }
}

fn acked(ack: AppendAck) -> AppendResponse {
    AppendResponse {
        result: Some(append_response::Result::Ack(ack)),
    }
}

#[tonic::async_trait]
impl Ingest for IngestService {
    async fn append(&self, req: Request<AppendRequest>) -> Result<Response<AppendAck>, Status> {
        let writer = writer_of(&req);
        let req = req.into_inner();
        let log = self.logs.resolve(&req.log)?;
        log.append(req.event, writer)
            .await
            .map(Response::new)
            .map_err(|r| r.to_status())
    }

    type AppendStreamStream = ReceiverStream<Result<AppendResponse, Status>>;

    async fn append_stream(
        &self,
        req: Request<Streaming<AppendRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let writer = writer_of(&req);
        let mut inbound = req.into_inner();
        let logs = self.logs.clone();
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let mut pending: FuturesOrdered<Pending> = FuturesOrdered::new();
            let mut inbound_open = true;
            loop {
                tokio::select! {
                    biased;
                    Some(resp) = pending.next(), if !pending.is_empty() => {
                        if tx.send(Ok(resp)).await.is_err() {
                            return; // Client went away; queued events still commit.
                        }
                    }
                    msg = inbound.message(), if inbound_open && pending.len() < STREAM_WINDOW => {
                        match msg {
                            Ok(Some(req)) => {
                                let event_id = req.event.as_ref().map(|e| e.event_id.clone()).unwrap_or_default();
                                let submitted = logs
                                    .resolve(&req.log)
                                    .map_err(|s| Rejection { code: s.code(), message: s.message().to_string(), field: "log".into() })
                                    .and_then(|log| log.submit(req.event, writer.clone()));
                                let fut: Pending = match submitted {
                                    Ok(rx) => Box::pin(async move {
                                        match Log::await_ack(rx).await {
                                            Ok(ack) => acked(ack),
                                            Err(r) => rejected(event_id, r),
                                        }
                                    }),
                                    Err(r) => Box::pin(std::future::ready(rejected(event_id, r))),
                                };
                                pending.push_back(fut);
                            }
                            Ok(None) => inbound_open = false,
                            Err(status) => {
                                tracing::debug!(%status, "append stream ended with an error from the client");
                                inbound_open = false;
                            }
                        }
                    }
                    else => break,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

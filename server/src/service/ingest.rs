//! The Ingest service: unary `Append` and bidirectional `AppendStream`.

use super::Logs;
use super::answers::request_status;
use crate::auth::{Action, Identity, RateLimiter, caller};
use crate::log::{Log, Rejection};
use ledger_proto::v1::ingest_server::Ingest;
use ledger_proto::v1::{
    AppendAck, AppendBatchRequest, AppendBatchResponse, AppendRejection, AppendRequest,
    AppendResponse, append_response,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Most events an `AppendBatch` may carry (the API says so).
const MAX_BATCH_EVENTS: usize = 4096;

/// Events of one stream in flight at once. Bounds per-stream memory and,
/// together with the sequencer queue, the server's.
const STREAM_WINDOW: usize = 4096;

pub struct IngestService {
    pub logs: Arc<Logs>,
    pub limiter: Arc<RateLimiter>,
    /// The request size limit, for the answer to an oversized message.
    pub request_limit: usize,
}

pub(crate) type AckReceiver =
    tokio::sync::oneshot::Receiver<Result<AppendAck, crate::sequencer::SequencerError>>;

/// Everything between a request and the sequencer: the caller's right to
/// this log and this agent id, its rate, then validation and the queue.
pub(crate) fn admit(
    logs: &Logs,
    limiter: &RateLimiter,
    who: &Identity,
    req: AppendRequest,
) -> Result<(AckReceiver, Arc<Log>), Rejection> {
    let from_status = |s: Status, field: &str| Rejection {
        code: s.code(),
        message: s.message().to_string(),
        field: field.into(),
    };
    let log = logs
        .authorize(who, Action::Append, &req.log)
        .map_err(|s| from_status(s, "log"))?;
    if let Some(e) = &req.event {
        who.check_agent(&e.agent_id)
            .map_err(|s| from_status(s, "event.agent_id"))?;
        if e.event_id.starts_with(super::governance::RESERVED) {
            return Err(Rejection {
                code: tonic::Code::InvalidArgument,
                message: format!(
                    "event.event_id: the {:?} prefix is reserved for entries the server writes (approval decisions, kill switches)",
                    super::governance::RESERVED
                ),
                field: "event.event_id".into(),
            });
        }
    }
    if let Err(l) = limiter.admit(&who.name) {
        let message = match l {
            crate::auth::Limited::Rate => format!("{}: over its rate limit; retry later", who.name),
            crate::auth::Limited::Quota => {
                format!(
                    "{}: daily quota of events used up; retry tomorrow (UTC)",
                    who.name
                )
            }
        };
        return Err(Rejection {
            code: tonic::Code::ResourceExhausted,
            message,
            field: String::new(),
        });
    }
    let rx = log.submit(req.event, who.name.clone())?;
    Ok((rx, log.clone()))
}

/// Waits for the ack and, when asked for, attaches its receipt.
async fn ack_with_receipt(
    rx: AckReceiver,
    log: Arc<Log>,
    receipt: bool,
) -> Result<AppendAck, Rejection> {
    let mut ack = log.settle(Log::await_ack(rx).await?).await?;
    if receipt {
        ack.receipt = Some(log.receipt(ack.index).await?);
    }
    Ok(ack)
}

type Pending = Pin<Box<dyn Future<Output = AppendResponse> + Send>>;

/// The answer to one request of a stream, in the making. Most are a bare
/// wait for the sequencer's ack: no boxed future, no task of their own.
enum Waiting {
    /// Refused at admission (rare: boxed, to keep the common case small).
    Ready(Box<AppendResponse>),
    /// Accepted: the sequencer's answer is the response.
    Ack { event_id: String, rx: AckReceiver },
    /// Accepted, and more to do once acked (a receipt, or the mirror).
    Slow(Pending),
}

impl Future for Waiting {
    type Output = AppendResponse;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<AppendResponse> {
        match self.get_mut() {
            Waiting::Ready(r) => std::task::Poll::Ready(std::mem::take(&mut **r)),
            Waiting::Ack { event_id, rx } => Pin::new(rx)
                .poll(cx)
                .map(|answer| answered(std::mem::take(event_id), Log::ack_result(answer))),
            Waiting::Slow(f) => f.as_mut().poll(cx),
        }
    }
}

/// Admits one request and answers with what becomes of it: its ack (with a
/// receipt when asked for) once durable, or why it was refused.
fn waiting(logs: &Logs, limiter: &RateLimiter, who: &Identity, req: AppendRequest) -> Waiting {
    let event_id = req
        .event
        .as_ref()
        .map(|e| e.event_id.clone())
        .unwrap_or_default();
    let receipt = req.receipt;
    match admit(logs, limiter, who, req) {
        Ok((rx, log)) if !receipt && !log.acks_after_mirror() => Waiting::Ack { event_id, rx },
        Ok((rx, log)) => Waiting::Slow(Box::pin(async move {
            answered(event_id, ack_with_receipt(rx, log, receipt).await)
        })),
        Err(r) => Waiting::Ready(Box::new(rejected(event_id, r))),
    }
}

/// The next response of a stream, in request order: the first of `queue`
/// once it is answered (only the first is waited on; when it is answered
/// the stream's task wakes and takes every answered one after it).
async fn next_in_order(queue: &mut std::collections::VecDeque<Waiting>) -> AppendResponse {
    std::future::poll_fn(|cx| {
        let Some(first) = queue.front_mut() else {
            return std::task::Poll::Pending;
        };
        let answer = std::task::ready!(Pin::new(first).poll(cx));
        queue.pop_front();
        std::task::Poll::Ready(answer)
    })
    .await
}

/// The response to the request of `event_id`: its ack, or why it was
/// refused.
fn answered(event_id: String, result: Result<AppendAck, Rejection>) -> AppendResponse {
    match result {
        Ok(ack) => acked(ack),
        Err(r) => rejected(event_id, r),
    }
}

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
        let who = caller(&req)?;
        let req = req.into_inner();
        let receipt = req.receipt;
        let (rx, log) = admit(&self.logs, &self.limiter, &who, req).map_err(|r| r.to_status())?;
        ack_with_receipt(rx, log, receipt)
            .await
            .map(Response::new)
            .map_err(|r| r.to_status())
    }

    async fn append_batch(
        &self,
        req: Request<AppendBatchRequest>,
    ) -> Result<Response<AppendBatchResponse>, Status> {
        let who = caller(&req)?;
        let AppendBatchRequest {
            log,
            events,
            receipt,
        } = req.into_inner();
        if events.is_empty() {
            return Err(Status::invalid_argument(
                "events: a batch needs at least one event",
            ));
        }
        if events.len() > MAX_BATCH_EVENTS {
            return Err(Status::invalid_argument(format!(
                "events: {} events in one batch, over the {MAX_BATCH_EVENTS} a batch may hold; split it",
                events.len()
            )));
        }
        self.logs.authorize(&who, Action::Append, &log)?;
        let each: Vec<Waiting> = events
            .into_iter()
            .map(|event| {
                let one = AppendRequest {
                    log: log.clone(),
                    event: Some(event),
                    receipt,
                };
                waiting(&self.logs, &self.limiter, &who, one)
            })
            .collect();
        let results = futures_util::future::join_all(each).await;
        Ok(Response::new(AppendBatchResponse { results }))
    }

    type AppendStreamStream = ReceiverStream<Result<AppendResponse, Status>>;

    async fn append_stream(
        &self,
        req: Request<Streaming<AppendRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let who = caller(&req)?;
        let mut inbound = req.into_inner();
        let logs = self.logs.clone();
        let limiter = self.limiter.clone();
        let (tx, rx) = mpsc::channel(256);
        let limit = self.request_limit;
        tokio::spawn(async move {
            let mut in_flight = std::collections::VecDeque::new();
            let mut inbound_open = true;
            // Why the client's side of the stream broke, sent after the acks
            // of everything before it: a client must not read a clean end.
            let mut broken: Option<Status> = None;
            loop {
                tokio::select! {
                    biased;
                    resp = next_in_order(&mut in_flight), if !in_flight.is_empty() => {
                        if tx.send(Ok(resp)).await.is_err() {
                            return; // Client went away; queued events still commit.
                        }
                    }
                    msg = inbound.message(), if inbound_open && in_flight.len() < STREAM_WINDOW => {
                        match msg {
                            Ok(Some(req)) => in_flight.push_back(waiting(&logs, &limiter, &who, req)),
                            Ok(None) => inbound_open = false,
                            Err(status) => {
                                tracing::debug!(%status, "append stream ended with an error from the client");
                                inbound_open = false;
                                broken = Some(request_status(&status, limit).unwrap_or(status));
                            }
                        }
                    }
                    else => break,
                }
            }
            if let Some(status) = broken {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

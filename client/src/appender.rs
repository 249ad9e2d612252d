//! A streaming appender: many events in flight on one `AppendStream`, acks
//! matched in order, and on a broken connection the unacknowledged events
//! are sent again with the same `event_id`, so each is recorded exactly once.

use crate::{Client, Error};
use ledger_proto::v1::{AppendAck, AppendRequest, AuditEvent, append_response};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

type Reply = oneshot::Sender<Result<AppendAck, Error>>;

/// Settings of an [`Appender`].
#[derive(Debug, Clone, Copy)]
pub struct AppenderOptions {
    /// Events sent but not yet acknowledged, at most.
    pub window: usize,
    /// Reconnection attempts for one outage before the pending events fail.
    pub max_retries: u32,
}

impl Default for AppenderOptions {
    fn default() -> Self {
        AppenderOptions {
            window: 1024,
            max_retries: 8,
        }
    }
}

/// Appends over a long-lived stream. Cheap to clone; all clones share it.
///
/// ```no_run
/// # async fn demo(client: ledger_client::Client) -> Result<(), ledger_client::Error> {
/// use ledger_client::{Event, EventKind};
/// let appender = client.appender(Default::default());
/// // Queue many, then wait for the acks (each arrives once durable).
/// let mut acks = Vec::new();
/// for n in 0..1000 {
///     let e = Event::new(EventKind::Decision, "planner").attribute("step", n.to_string()).build();
///     acks.push(appender.send(e).await?);
/// }
/// for ack in acks {
///     let ack = ack.await?;
///     assert!(ack.index < u64::MAX);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Appender {
    tx: mpsc::Sender<(AuditEvent, Reply)>,
}

/// The ack of one queued event.
pub struct PendingAck(oneshot::Receiver<Result<AppendAck, Error>>);

impl std::future::Future for PendingAck {
    type Output = Result<AppendAck, Error>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|r| {
            r.unwrap_or_else(|_| Err(Error::Status(tonic::Status::aborted("appender stopped"))))
        })
    }
}

impl Client {
    /// A streaming appender on this client's log.
    pub fn appender(&self, opts: AppenderOptions) -> Appender {
        let (tx, rx) = mpsc::channel(opts.window.max(1));
        tokio::spawn(run(self.clone(), opts, rx));
        Appender { tx }
    }
}

impl Appender {
    /// Queues an event; the returned future resolves to its ack (or its
    /// rejection). Waits while the window is full.
    pub async fn send(&self, event: AuditEvent) -> Result<PendingAck, Error> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((event, reply))
            .await
            .map_err(|_| Error::Status(tonic::Status::aborted("appender stopped")))?;
        Ok(PendingAck(rx))
    }

    /// Appends one event and waits for its ack.
    pub async fn append(&self, event: AuditEvent) -> Result<AppendAck, Error> {
        self.send(event).await?.await
    }
}

fn status_of(r: ledger_proto::v1::AppendRejection) -> tonic::Status {
    tonic::Status::new(tonic::Code::from(r.code), r.message)
}

/// One event's result in an `AppendResponse`.
pub(crate) fn response_result(
    r: ledger_proto::v1::AppendResponse,
) -> Result<AppendAck, tonic::Status> {
    match r.result {
        Some(append_response::Result::Ack(ack)) => Ok(ack),
        Some(append_response::Result::Rejection(r)) => Err(status_of(r)),
        None => Err(tonic::Status::internal("the server sent an empty result")),
    }
}

/// The appender's task: one stream at a time, re-sending what it did not
/// acknowledge when a stream breaks.
async fn run(client: Client, opts: AppenderOptions, mut rx: mpsc::Receiver<(AuditEvent, Reply)>) {
    let mut inflight: VecDeque<(AuditEvent, Reply)> = VecDeque::new();
    let mut input_open = true;
    let mut failures = 0u32;
    while input_open || !inflight.is_empty() {
        let (req_tx, req_rx) = mpsc::channel::<AppendRequest>(opts.window.max(1));
        let opened = client
            .ingest()
            .append_stream(ReceiverStream::new(req_rx))
            .await;
        let mut responses = match opened {
            Ok(r) => r.into_inner(),
            Err(status) => {
                failures += 1;
                if failures > opts.max_retries {
                    for (_, reply) in inflight.drain(..) {
                        let _ = reply.send(Err(Error::Status(status.clone())));
                    }
                    failures = 0;
                    if !input_open {
                        return;
                    }
                }
                tokio::time::sleep(backoff(failures)).await;
                if inflight.is_empty() && input_open {
                    // Nothing to resend; wait for work before reconnecting.
                    match rx.recv().await {
                        Some(job) => inflight.push_back(job),
                        None => return,
                    }
                }
                continue;
            }
        };
        // Re-send what the last stream did not acknowledge, in order.
        let mut broken = false;
        for (event, _) in &inflight {
            let req = AppendRequest {
                log: client.log.clone(),
                event: Some(event.clone()),
                receipt: false,
            };
            if req_tx.send(req).await.is_err() {
                broken = true;
                break;
            }
        }
        while !broken && (input_open || !inflight.is_empty()) {
            tokio::select! {
                job = rx.recv(), if input_open && inflight.len() < opts.window => {
                    match job {
                        Some((event, reply)) => {
                            let req = AppendRequest { log: client.log.clone(), event: Some(event.clone()), receipt: false };
                            inflight.push_back((event, reply));
                            if req_tx.send(req).await.is_err() {
                                broken = true;
                            }
                        }
                        None => input_open = false,
                    }
                }
                msg = responses.message() => {
                    match msg {
                        Ok(Some(resp)) => {
                            failures = 0;
                            let Some((_, reply)) = inflight.pop_front() else { continue };
                            let _ = reply.send(response_result(resp).map_err(Error::Status));
                        }
                        Ok(None) | Err(_) => broken = true,
                    }
                }
            }
        }
        if broken {
            failures += 1;
            if failures > opts.max_retries {
                for (_, reply) in inflight.drain(..) {
                    let _ = reply.send(Err(Error::Status(tonic::Status::unavailable(
                        "the ledger stayed unreachable; these events may not be recorded, retry them with the same event_id",
                    ))));
                }
                failures = 0;
            }
            tokio::time::sleep(backoff(failures)).await;
        }
    }
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(50u64 << failures.min(6))
}

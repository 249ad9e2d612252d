//! Answers a client can act on, for what goes wrong before a handler runs
//! and for anything that would quote the client's own input back.
//!
//! tonic answers a request that does not decode with `INTERNAL` (which
//! clients read as a server fault and retry forever) and an oversized one
//! with a bare `OUT_OF_RANGE`. [`RequestErrors`] rewrites both into the
//! statuses the API documents: `INVALID_ARGUMENT` naming the field prost
//! could not decode, and `RESOURCE_EXHAUSTED` naming the limit and the
//! setting that raises it. Every status message is also capped, so no
//! client input can inflate it past a client's metadata limit.

use http::{HeaderMap, Response};
use tonic::{Code, Status};

/// Longest piece of client input a status message quotes.
pub const MAX_QUOTE: usize = 64;
/// Longest status message sent: well under the 8 KiB of metadata most
/// gRPC clients accept by default.
pub const MAX_MESSAGE: usize = 1024;

/// Extra room above the largest payload for the rest of a request.
pub const REQUEST_OVERHEAD: usize = 256 << 10;

/// `s` quoted for a message: at most [`MAX_QUOTE`] characters, escaped, and
/// its full length when it was cut.
pub fn quote(s: &str) -> String {
    if s.chars().count() <= MAX_QUOTE {
        return format!("{s:?}");
    }
    let head: String = s.chars().take(MAX_QUOTE).collect();
    format!("{head:?}… ({} bytes)", s.len())
}

/// A message cut to [`MAX_MESSAGE`] bytes at a character boundary.
pub fn bounded(message: &str) -> String {
    if message.len() <= MAX_MESSAGE {
        return message.to_string();
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// The status a client should see for `status`, which tonic produced while
/// reading a request; `limit` is the request size limit in force.
pub fn request_status(status: &Status, limit: usize) -> Option<Status> {
    let msg = status.message();
    match status.code() {
        Code::Internal if msg.starts_with("failed to decode Protobuf message") => {
            let detail = msg
                .trim_start_matches("failed to decode Protobuf message")
                .trim_start_matches(": ");
            Some(Status::invalid_argument(bounded(&format!(
                "the request does not decode as the RPC's message: {detail}"
            ))))
        }
        Code::Internal if msg.starts_with("protocol error") => {
            Some(Status::invalid_argument(bounded(msg)))
        }
        Code::OutOfRange if msg.starts_with("Error, decoded message length too large") => {
            let found = msg
                .split("found ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .unwrap_or("?");
            Some(Status::resource_exhausted(format!(
                "the request is {found} bytes, over the limit of {limit} bytes \
                 (ingest.max_payload_bytes + 256 KiB); put large content in the event's payload, \
                 split a batch (AppendBatch) into smaller ones, and raise ingest.max_payload_bytes \
                 if one event must be larger"
            )))
        }
        _ if msg.len() > MAX_MESSAGE => Some(Status::new(status.code(), bounded(msg))),
        _ => None,
    }
}

/// Rewrites statuses in the headers of a trailers-only response (how tonic
/// answers a unary or server-streaming request it could not read).
fn rewrite(headers: &mut HeaderMap, limit: usize) {
    if !headers.contains_key("grpc-status") {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    if let Some(better) = request_status(&status, limit) {
        headers.remove("grpc-message");
        headers.remove("grpc-status-details-bin");
        let _ = better.add_header(headers);
    }
}

/// The tower layer that applies [`request_status`] to every gRPC response.
#[derive(Clone, Copy)]
pub struct RequestErrors {
    /// The request size limit, for the message.
    pub limit: usize,
}

impl<S> tower::Layer<S> for RequestErrors {
    type Service = RequestErrorsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestErrorsService {
            inner,
            limit: self.limit,
        }
    }
}

#[derive(Clone)]
pub struct RequestErrorsService<S> {
    inner: S,
    limit: usize,
}

impl<S, Req, B> tower::Service<Req> for RequestErrorsService<S>
where
    S: tower::Service<Req, Response = Response<B>>,
    S::Future: Send + 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<B>, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let limit = self.limit;
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            rewrite(resp.headers_mut(), limit);
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_messages_are_bounded() {
        assert_eq!(quote("abc"), "\"abc\"");
        let long = "k".repeat(1 << 20);
        let q = quote(&long);
        assert!(q.len() < 100 && q.contains("1048576 bytes"), "{q}");
        assert_eq!(bounded(&"é".repeat(2000)).chars().count(), 513);
    }

    #[test]
    fn tonic_decode_and_size_errors_become_documented_codes() {
        let s = Status::internal(
            "failed to decode Protobuf message: AuditEvent.correlation_id: invalid string value: data is not UTF-8 encoded",
        );
        let b = request_status(&s, 10).unwrap();
        assert_eq!(b.code(), Code::InvalidArgument);
        assert!(
            b.message().contains("AuditEvent.correlation_id"),
            "{}",
            b.message()
        );

        let s = Status::out_of_range(
            "Error, decoded message length too large: found 5000000 bytes, the limit is: 4194304 bytes",
        );
        let b = request_status(&s, 1310720).unwrap();
        assert_eq!(b.code(), Code::ResourceExhausted);
        assert!(b.message().contains("5000000") && b.message().contains("1310720"));
        assert!(b.message().contains("ingest.max_payload_bytes"));

        // Our own statuses pass as they are.
        assert!(request_status(&Status::out_of_range("end: 9 is past 3"), 1).is_none());

        let mut h = HeaderMap::new();
        Status::internal("failed to decode Protobuf message: invalid wire type")
            .add_header(&mut h)
            .unwrap();
        rewrite(&mut h, 1);
        let got = Status::from_header_map(&h).unwrap();
        assert_eq!(got.code(), Code::InvalidArgument);
    }
}

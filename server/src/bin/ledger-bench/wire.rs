//! The load generator's side of the wire: requests whose events are
//! written straight into their protobuf encoding, and answers decoded only
//! as far as "ack or rejection".
//!
//! At saturation the generator shares the machine's cores with the server,
//! so every microsecond it spends per event is one the server does not get.
//! Built as messages (six `format!`s, a dozen strings, a payload vector,
//! prost's encoder) and decoded in full (strings, hashes, timestamps), an
//! event cost the generator about 3.6 µs; written here, 2.2–2.4 µs. The
//! server receives the same events either way: the tests below decode what
//! [`bench_events`] writes and compare it with `event()`, field by field.

use anyhow::{Context, Result};
use bytes::{Buf, BufMut};
use ledger_proto::v1::AuditEvent;
use prost::Message;
use prost::encoding::{DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint};
use std::sync::Arc;
use std::time::SystemTime;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// Appends event `seq` of stream `stream` to a request, as its field 2
/// (`AppendRequest.event`, or one of `AppendBatchRequest.events`): key,
/// length, encoded `AuditEvent`.
pub type Gen = Arc<dyn Fn(usize, u64, &mut Vec<u8>) + Send + Sync>;

/// Events from `make`, encoded by prost: for events with fields of their
/// own, where the generator's cost does not matter.
pub fn from_events(make: impl Fn(usize, u64) -> AuditEvent + Send + Sync + 'static) -> Gen {
    Arc::new(move |stream, seq, out| {
        prost::encoding::message::encode(2, &make(stream, seq), out);
    })
}

/// The load's events: the same fields and values as [`super::event`]
/// (`run` in the event id, a fresh `occurred_at`), encoded to `size` bytes
/// (or as close as the fixed fields allow) without building a message.
pub fn bench_events(run: String, size: usize) -> Gen {
    let template = super::template();
    // Fields every event shares, in one encoding: principal, kind, action,
    // resource, risk tier; and the content type (field 17, after the
    // payload).
    let shared = AuditEvent {
        principal: template.principal,
        kind: template.kind,
        action: template.action,
        resource: template.resource,
        risk_tier: template.risk_tier,
        ..Default::default()
    }
    .encode_to_vec();
    let tail = AuditEvent {
        payload_content_type: template.payload_content_type,
        ..Default::default()
    }
    .encode_to_vec();
    Arc::new(move |stream, seq, out| {
        let body = &mut Vec::with_capacity(160);
        let stream = stream as u64;
        text(body, 1, |b| {
            b.extend_from_slice(run.as_bytes());
            b.push(b'-');
            decimal(b, stream);
            b.push(b'-');
            decimal(b, seq);
        });
        text(body, 2, |b| {
            hex16(b, stream + 1);
            hex16(b, seq / 16 + 1);
        });
        text(body, 3, |b| hex16(b, seq + 1));
        text(body, 5, |b| {
            b.extend_from_slice(b"agent-");
            decimal(b, stream);
        });
        text(body, 6, |b| {
            b.extend_from_slice(b"session-");
            decimal(b, stream);
        });
        text(body, 9, |b| {
            b.extend_from_slice(b"tool-");
            decimal(b, seq % 8);
        });
        body.extend_from_slice(&shared);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let at = prost_types::Timestamp {
            seconds: now.as_secs() as i64,
            nanos: now.subsec_nanos() as i32,
        };
        prost::encoding::message::encode(14, &at, body);
        let payload = payload_len(size.saturating_sub(body.len() + tail.len()));
        let payload_field = if payload == 0 {
            0
        } else {
            2 + encoded_len_varint(payload as u64) + payload
        };
        let len = body.len() + payload_field + tail.len();
        encode_key(2, WireType::LengthDelimited, out);
        encode_varint(len as u64, out);
        out.extend_from_slice(body);
        if payload > 0 {
            encode_key(16, WireType::LengthDelimited, out);
            encode_varint(payload as u64, out);
            out.resize(out.len() + payload, b'x');
        }
        out.extend_from_slice(&tail);
    })
}

/// The longest payload whose field (a 2-byte key, the length, the bytes)
/// fits in `room` bytes.
fn payload_len(room: usize) -> usize {
    let mut n = room.saturating_sub(3);
    while n > 0 && 2 + encoded_len_varint(n as u64) + n > room {
        n -= 1;
    }
    n
}

/// A string field of under 128 bytes (one length byte), written by `write`.
fn text(out: &mut Vec<u8>, tag: u32, write: impl FnOnce(&mut Vec<u8>)) {
    encode_key(tag, WireType::LengthDelimited, out);
    let at = out.len();
    out.push(0);
    write(out);
    let n = out.len() - at - 1;
    assert!(n < 128, "a generated field of {n} bytes");
    out[at] = n as u8;
}

/// `v` in decimal.
fn decimal(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `v` as 16 lower-case hex digits.
fn hex16(out: &mut Vec<u8>, v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend((0..16).rev().map(|i| HEX[(v >> (i * 4)) as usize & 0xf]));
}

/// A request already encoded: events written by a [`Gen`], then the
/// `receipt` flag. `AppendRequest` and `AppendBatchRequest` share their
/// field numbers (2: the event or events, 3: receipt), so one encoding
/// serves both.
#[derive(Debug, Default, Clone)]
pub struct Encoded(Vec<u8>);

impl Encoded {
    /// The request whose events `events` appends (each with a [`Gen`]).
    pub fn new(events: impl FnOnce(&mut Vec<u8>), receipt: bool) -> Encoded {
        let mut bytes = Vec::with_capacity(600);
        events(&mut bytes);
        if receipt {
            prost::encoding::bool::encode(3, &true, &mut bytes);
        }
        Encoded(bytes)
    }
}

impl Message for Encoded {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Never decoded: requests only go out.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// An `AppendResponse`, read only as far as whether it is an ack (field 1);
/// the ack's fields and any rejection are skipped unread.
#[derive(Clone, PartialEq, Message)]
pub struct Answer {
    #[prost(message, optional, tag = "1")]
    ack: Option<Skipped>,
}

impl Answer {
    pub fn is_ack(&self) -> bool {
        self.ack.is_some()
    }
}

/// A message whose fields are all skipped.
#[derive(Clone, PartialEq, Message)]
pub struct Skipped {}

/// An `AppendBatchResponse`: its results (field 1), each an [`Answer`].
#[derive(Clone, PartialEq, Message)]
pub struct BatchAnswer {
    #[prost(message, repeated, tag = "1")]
    pub results: Vec<Answer>,
}

/// The gRPC client of `channel`, once it is ready for a call.
async fn ready(channel: Channel) -> Result<tonic::client::Grpc<Channel>> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.context("the channel is not ready")?;
    Ok(grpc)
}

/// `Ingest.AppendStream` of `requests`; its answers.
pub async fn append_stream(
    channel: Channel,
    requests: impl tokio_stream::Stream<Item = Encoded> + Send + 'static,
) -> Result<tonic::Streaming<Answer>> {
    let path = PathAndQuery::from_static("/agentledger.v1.Ingest/AppendStream");
    let codec = tonic_prost::ProstCodec::<Encoded, Answer>::default();
    let answers = ready(channel)
        .await?
        .streaming(tonic::Request::new(requests), path, codec)
        .await?;
    Ok(answers.into_inner())
}

/// `Ingest.AppendBatch` of `request`; its answers.
pub async fn append_batch(channel: Channel, request: Encoded) -> Result<Vec<Answer>> {
    let path = PathAndQuery::from_static("/agentledger.v1.Ingest/AppendBatch");
    let codec = tonic_prost::ProstCodec::<Encoded, BatchAnswer>::default();
    let answer = ready(channel)
        .await?
        .unary(tonic::Request::new(request), path, codec)
        .await?;
    Ok(answer.into_inner().results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_proto::v1::{
        AppendBatchRequest, AppendRejection, AppendRequest, AppendResponse, append_response,
    };

    /// What the server decodes from a request the generator wrote.
    fn decoded(make: &Gen, stream: usize, seq: u64, receipt: bool) -> AppendRequest {
        let req = Encoded::new(|b| make(stream, seq, b), receipt);
        AppendRequest::decode(req.encode_to_vec().as_slice()).expect("a valid AppendRequest")
    }

    #[test]
    fn written_events_are_the_reference_events_at_the_asked_size() {
        for size in [0, 100, 200, 300, 512, 513, 1_000, 16_600, 70_000] {
            let make = bench_events("b17s".into(), size);
            for (stream, seq) in [(0, 0), (3, 7), (63, 1_000_003), (7, u32::MAX as u64)] {
                let got = decoded(&make, stream, seq, false);
                assert_eq!(got.log, "");
                assert!(!got.receipt);
                let mut got = got.event.expect("an event");
                // Exactly the asked size where the fixed fields leave room.
                if size >= 300 {
                    assert_eq!(got.encoded_len(), size, "stream {stream}, seq {seq}");
                }
                let mut want = super::super::event(stream, seq, size, "b17s");
                assert!(got.occurred_at.is_some());
                got.occurred_at = None;
                want.occurred_at = None;
                assert_eq!(got, want, "size {size}, stream {stream}, seq {seq}");
            }
        }
    }

    #[test]
    fn a_request_carries_its_receipt_flag_and_a_batch_all_its_events() {
        let make = bench_events("r".into(), 512);
        assert!(decoded(&make, 1, 2, true).receipt);
        let batch = Encoded::new(
            |b| {
                for seq in 0..5 {
                    make(4, seq, b);
                }
            },
            true,
        );
        let batch = AppendBatchRequest::decode(batch.encode_to_vec().as_slice()).unwrap();
        assert!(batch.receipt);
        let ids: Vec<_> = batch.events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, ["r-4-0", "r-4-1", "r-4-2", "r-4-3", "r-4-4"]);
        let from = from_events(|s, q| AuditEvent {
            event_id: format!("e{s}.{q}"),
            ..Default::default()
        });
        assert_eq!(decoded(&from, 2, 9, false).event.unwrap().event_id, "e2.9");
    }

    #[test]
    fn answers_tell_acks_from_rejections() {
        let ack = AppendResponse {
            result: Some(append_response::Result::Ack(Default::default())),
        };
        let rejection = AppendResponse {
            result: Some(append_response::Result::Rejection(AppendRejection {
                event_id: "x".into(),
                ..Default::default()
            })),
        };
        let read = |r: &AppendResponse| Answer::decode(r.encode_to_vec().as_slice()).unwrap();
        assert!(read(&ack).is_ack());
        assert!(!read(&rejection).is_ack());
        let batch = ledger_proto::v1::AppendBatchResponse {
            results: vec![rejection, ack],
        };
        let read = BatchAnswer::decode(batch.encode_to_vec().as_slice()).unwrap();
        let acks: Vec<_> = read.results.iter().map(Answer::is_ack).collect();
        assert_eq!(acks, [false, true]);
    }
}

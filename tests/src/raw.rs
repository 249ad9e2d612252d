//! gRPC calls with request bodies of arbitrary bytes: what a broken or
//! hostile client sends. The answer's body is returned as bytes too.

use bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// A codec that sends and receives message bodies as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// How a call ended: `Ok(messages)` or the status.
pub type Outcome = Result<Vec<Vec<u8>>, Status>;

/// Calls `method` (`/package.Service/Method`) with `body`, reading every
/// response message; `streaming` sends it as a one-message client stream
/// (for bidirectional methods), `server_streaming` reads a stream back.
pub async fn call(
    channel: Channel,
    method: &'static str,
    bodies: Vec<Vec<u8>>,
    kind: RpcKind,
    max_response: usize,
) -> Outcome {
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(max_response);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = PathAndQuery::from_static(method);
    match kind {
        RpcKind::Unary => {
            let body = bodies.into_iter().next().unwrap_or_default();
            let r = grpc.unary(Request::new(body), path, RawCodec).await?;
            Ok(vec![r.into_inner()])
        }
        RpcKind::ServerStreaming => {
            let body = bodies.into_iter().next().unwrap_or_default();
            let s = grpc.server_streaming(Request::new(body), path, RawCodec);
            drain(s.await?.into_inner()).await
        }
        RpcKind::Bidi => {
            let stream = tokio_stream::iter(bodies);
            let s = grpc.streaming(Request::new(stream), path, RawCodec);
            drain(s.await?.into_inner()).await
        }
    }
}

/// Every message of a response stream, or the status it ended with.
async fn drain(mut s: tonic::Streaming<Vec<u8>>) -> Outcome {
    let mut out = Vec::new();
    while let Some(m) = s.message().await? {
        out.push(m);
    }
    Ok(out)
}

/// The shape of a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcKind {
    Unary,
    ServerStreaming,
    Bidi,
}

//! Append receipts: the writer's offline proof that the ledger accepted its
//! event, on unary and streamed appends and on retries.

use ledger_client::{Client, Event, EventKind};
use ledger_e2e::{Server, event};
use ledger_proto::v1::{AppendRequest, append_response};
use ledger_verify::receipt::{check_event, verify_proto};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_prove_acceptance_offline() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let key = server.verifier.clone();
    let c = Client::connect(&server.grpc)
        .await
        .unwrap()
        .verifying_with(key.clone());

    // Through the library: checked against the key and the event sent.
    let sent = Event::new(EventKind::ToolCall, "billing-agent")
        .tool("sql.execute")
        .event_id("with-receipt")
        .payload_json(&serde_json::json!({"query": "DELETE FROM t"}))
        .build();
    let (ack, receipt, verified) = c.append_with_receipt(sent.clone()).await.unwrap();
    assert_eq!(verified.entry.index, ack.index);
    assert!(verified.checkpoint.size > ack.index);

    // A retry of the same event gets the original ack and a receipt of it.
    let (again, _, v2) = c.append_with_receipt(sent.clone()).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(v2.leaf_hash, verified.leaf_hash);

    // The receipt does not vouch for another event or payload.
    let mut other = sent.clone();
    other.payload = b"{\"query\":\"SELECT 1\"}".to_vec();
    assert!(check_event(&verified.entry, &other, &receipt.payload_salt).is_err());

    // On a stream, each request that asks gets one; the others do not.
    let mut ingest = server.endpoint.ingest().await;
    let reqs: Vec<AppendRequest> = (0..20)
        .map(|i| AppendRequest {
            log: String::new(),
            event: Some(event(&format!("s-{i}"), i)),
            receipt: i % 2 == 0,
        })
        .collect();
    let mut out = ingest
        .append_stream(tokio_stream::iter(reqs.clone()))
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(resp) = out.message().await.unwrap() {
        let Some(append_response::Result::Ack(ack)) = resp.result else {
            panic!("{resp:?}")
        };
        let asked = reqs[n].receipt;
        assert_eq!(ack.receipt.is_some(), asked, "request {n}");
        if let Some(r) = &ack.receipt {
            let v = verify_proto(r, &key).unwrap();
            assert_eq!(v.entry.index, ack.index);
            check_event(&v.entry, reqs[n].event.as_ref().unwrap(), &r.payload_salt).unwrap();
        }
        n += 1;
    }
    assert_eq!(n, 20);
}

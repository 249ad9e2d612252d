"""The Python SDK against a real ledgerd."""

import asyncio
import base64
import threading

import pytest

from agent_ledger import (
    AsyncLedger,
    Ledger,
    LedgerError,
    VerificationError,
    leaf_hash,
    new_trace_id,
    open_checkpoint,
    verify_inclusion,
)
from agent_ledger.verify import ed25519_verify


def test_append_read_back_and_prove(server):
    with Ledger(server.url, key=server.key) as ledger:
        trace = new_trace_id()
        ack = ledger.append(
            "tool_call",
            "billing-agent",
            tool="sql.execute",
            risk="high",
            payload={"query": "DELETE FROM customers"},
            correlation_id=trace,
            event_id="evt-1",
        )
        assert ack.index == 0 and not ack.duplicate
        events = ledger.timeline(trace, payloads=True)
        assert [e.tool_name for e in events] == ["sql.execute"]
        e = events[0]
        assert (e.kind, e.risk_tier, e.agent_id) == ("tool_call", "high", "billing-agent")
        assert e.payload_json() == {"query": "DELETE FROM customers"}
        assert e.writer.startswith("anonymous@")
        assert leaf_hash(e.entry) == e.leaf_hash == ack.leaf_hash
        assert [x.index for x in ledger.events(agent_id="billing-agent")] == [0]
        cp = ledger.checkpoint()
        assert cp.size == 1 and cp.origin == "ledger.local/default"
        assert ledger.prove(0).size == 1
        assert ledger.prove(event_id="evt-1").size == 1


def test_a_retry_with_the_same_event_is_the_same_entry(server):
    with Ledger(server.url) as ledger:
        from agent_ledger import build_event

        event = build_event("decision", "a", action="approve", event_id="same-1")
        first = ledger.append(event)
        second = ledger.append(event)
        assert second.index == first.index and second.duplicate


def test_rejected_input_raises_naming_the_field(server):
    with Ledger(server.url) as ledger:
        with pytest.raises(LedgerError) as e:
            ledger.append("tool_call", "a", tool="x", correlation_id="not-a-trace-id")
        assert e.value.code == "INVALID_ARGUMENT"
        assert e.value.field == "event.correlation_id"
        with pytest.raises(LedgerError) as e:
            ledger.append("tool_call", "a")  # a tool call names its tool
        assert e.value.field == "event.tool_name"
        with pytest.raises(LedgerError) as e:
            ledger.append("no_such_kind", "a")
        assert e.value.field == "kind"


def test_tool_call_records_before_the_body_and_the_outcome_after(server):
    ledger = Ledger(server.url, agent_id="billing-agent")
    with ledger.trace() as trace:
        with ledger.tool_call("sql.execute", args={"q": "SELECT 1"}, risk="low") as call:
            # The call is durable before the tool runs.
            seen = ledger.timeline(trace)
            assert [(e.kind, e.tool_name) for e in seen] == [("tool_call", "sql.execute")]
            call.result = {"rows": 1}
        with pytest.raises(ZeroDivisionError):
            with ledger.tool_call("divide", args={"by": 0}):
                1 / 0
    events = ledger.timeline(trace, payloads=True)
    assert [(e.kind, e.tool_name, e.outcome) for e in events] == [
        ("tool_call", "sql.execute", "unspecified"),
        ("tool_result", "sql.execute", "success"),
        ("tool_call", "divide", "unspecified"),
        ("tool_result", "divide", "error"),
    ]
    assert events[1].parent_span_id == events[0].span_id
    assert events[1].payload_json() == {"result": {"rows": 1}}
    assert "ZeroDivisionError" in events[3].payload_json()["error"]
    ledger.close()


def test_a_tool_call_the_ledger_refuses_does_not_run(server):
    ledger = Ledger(server.url, agent_id="a")
    ran = []
    with pytest.raises(LedgerError):
        with ledger.tool_call("x", correlation_id="bad"):
            ran.append(1)
    assert ran == []


def test_the_decorator_records_sync_and_async_functions(server):
    ledger = Ledger(server.url, agent_id="agent-d")

    @ledger.audited_tool("math.add", risk="low")
    def add(a, b):
        return a + b

    @ledger.audited_tool()
    async def fetch(url):
        await asyncio.sleep(0)
        return {"url": url, "status": 200}

    with ledger.trace() as trace:
        assert add(2, 3) == 5
        assert asyncio.run(fetch("https://example.com")) == {"url": "https://example.com", "status": 200}
    events = ledger.timeline(trace, payloads=True)
    assert [(e.kind, e.tool_name) for e in events] == [
        ("tool_call", "math.add"),
        ("tool_result", "math.add"),
        ("tool_call", "fetch"),
        ("tool_result", "fetch"),
    ]
    assert events[0].payload_json() == {"arguments": {"a": 2, "b": 3}}
    assert events[1].payload_json() == {"result": 5}


def test_append_batch_answers_each_event_in_order(server):
    with Ledger(server.url, key=server.key) as ledger:
        from agent_ledger import Ack, build_event

        trace = new_trace_id()
        events = [
            build_event("decision", "planner", action="step", correlation_id=trace, event_id="batch-0"),
            {"kind": "tool_call", "tool": "x", "correlation_id": "not-a-trace-id"},
            build_event("tool_call", "planner", tool="search", correlation_id=trace, event_id="batch-2"),
        ]
        first, refused, third = ledger.append_batch(events, agent_id="planner")
        assert isinstance(first, Ack) and isinstance(third, Ack)
        assert (first.event_id, third.event_id) == ("batch-0", "batch-2")
        assert isinstance(refused, LedgerError)
        assert (refused.code, refused.field) == ("INVALID_ARGUMENT", "event.correlation_id")
        assert [e.event_id for e in ledger.timeline(trace)] == ["batch-0", "batch-2"]
        again = ledger.append_batch([events[0], events[2]], agent_id="planner")
        assert [(a.index, a.duplicate) for a in again] == [(first.index, True), (third.index, True)]
        # A dict is built afresh (new span id): the same event_id, other content.
        conflict = ledger.append_batch([{"kind": "decision", "action": "step", "event_id": "batch-0"}], agent_id="planner")[0]
        assert isinstance(conflict, LedgerError) and conflict.code == "ALREADY_EXISTS"
        with pytest.raises(LedgerError) as e:
            ledger.append_batch([])
        assert (e.value.code, e.value.field) == ("INVALID_ARGUMENT", "events")

    async def run():
        async with AsyncLedger(server.url) as aledger:
            acks = await aledger.append_batch([{"kind": "decision", "action": "a"}] * 2, agent_id="async-agent")
            assert all(isinstance(a, Ack) and not a.duplicate for a in acks)
            assert acks[1].index == acks[0].index + 1

    asyncio.run(run())


def test_the_async_client(server):
    async def run():
        async with AsyncLedger(server.url, agent_id="agent-x", key=server.key) as ledger:
            trace = new_trace_id()
            ack = await ledger.append("model_call", "agent-x", correlation_id=trace, resource="gpt-4o")
            async with ledger.tool_call("search", args={"q": "x"}, correlation_id=trace) as call:
                call.result = ["a"]

            @ledger.audited_tool("lookup")
            async def lookup(k):
                return k.upper()

            from agent_ledger.client import _current_trace

            _current_trace.set(trace)
            assert await lookup("k") == "K"
            events = await ledger.timeline(trace)
            assert [e.kind for e in events] == [
                "model_call", "tool_call", "tool_result", "tool_call", "tool_result"
            ]
            assert (await ledger.prove(ack.index)).size >= 5
            assert (await ledger.checkpoint()).size >= 5

    asyncio.run(run())


def test_the_appender_resends_after_a_crash_and_each_event_lands_once(server):
    ledger = Ledger(server.url, timeout=60)
    appender = ledger.appender(window=256)
    futures = []
    crashed = threading.Event()

    def crash():
        server.kill9()
        server.restart_same_port()
        crashed.set()

    for i in range(3000):
        futures.append(appender.send("decision", "agent-r", action="step", event_id=f"r-{i}"))
        if i == 1500:
            threading.Thread(target=crash).start()
    crashed.wait(60)
    acks = [f.result(timeout=120) for f in futures]
    appender.close()
    assert len({a.index for a in acks}) == 3000, "each event has its own entry"
    events = Ledger(server.url).events(agent_id="agent-r", limit=10000)
    ids = [e.event_id for e in events]
    assert len(ids) == 3000 and len(set(ids)) == 3000, "every event exactly once"
    assert appender.reconnects >= 1


def test_tail_follows_new_entries(server):
    ledger = Ledger(server.url)
    ledger.append("decision", "t", action="first")
    got = []

    def follow():
        for e in ledger.tail(0):
            got.append(e.action)
            if len(got) == 2:
                break

    t = threading.Thread(target=follow)
    t.start()
    ledger.append("decision", "t", action="second")
    t.join(30)
    assert got == ["first", "second"]


def test_offline_checks_reject_a_tampered_note_or_proof(server):
    ledger = Ledger(server.url, key=server.key)
    for i in range(5):
        ledger.append("decision", "v", action=f"a{i}")
    cp = ledger.checkpoint()
    # The note, with its root changed: refused.
    lines = cp.note.split("\n")
    root = bytearray(base64.b64decode(lines[2]))
    root[0] ^= 1
    lines[2] = base64.b64encode(bytes(root)).decode()
    with pytest.raises(VerificationError):
        open_checkpoint("\n".join(lines), server.key)
    # Another key's note: refused.
    with pytest.raises(VerificationError):
        open_checkpoint(cp.note, "other.example/log+00000000+AQ" + "A" * 42 + "=")
    # A proof with a hash changed: refused.
    from agent_ledger._proto import ledger_pb2 as pb

    resp = ledger._proofs.GetInclusionProof(pb.GetInclusionProofRequest(index=2))
    hashes = [bytes(h) for h in resp.proof.hashes]
    verify_inclusion(2, resp.proof.tree_size, bytes(resp.leaf_hash), hashes, open_checkpoint(resp.checkpoint.note, server.key).root)
    bad = [bytes([hashes[0][0] ^ 1]) + hashes[0][1:]] + hashes[1:]
    with pytest.raises(VerificationError):
        verify_inclusion(2, resp.proof.tree_size, bytes(resp.leaf_hash), bad, cp.root)
    with pytest.raises(VerificationError):
        verify_inclusion(3, resp.proof.tree_size, bytes(resp.leaf_hash), hashes, cp.root)


def test_ed25519_against_rfc8032_vectors():
    # RFC 8032, section 7.1, TEST 1 and TEST 2.
    pk = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    sig = bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    assert ed25519_verify(pk, b"", sig)
    assert not ed25519_verify(pk, b"x", sig)
    pk2 = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
    sig2 = bytes.fromhex(
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
    )
    assert ed25519_verify(pk2, bytes([0x72]), sig2)

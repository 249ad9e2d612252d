"""Agent Ledger for Python: append audit events to a tamper-evident ledger,
record tool calls before they run, read timelines back, and verify
checkpoints and inclusion proofs offline.

    from agent_ledger import Ledger

    ledger = Ledger("http://127.0.0.1:7400", agent_id="billing-agent", key=KEY)
    with ledger.tool_call("sql.execute", args={"query": q}, risk="high") as call:
        call.result = run(q)
"""

from .aio import AsyncLedger, AsyncToolCall
from .client import (
    Ack,
    Appender,
    Event,
    Ledger,
    LedgerError,
    ToolCall,
    build_event,
    new_span_id,
    new_trace_id,
)
from .verify import (
    Checkpoint,
    VerificationError,
    VerifierKey,
    leaf_hash,
    open_checkpoint,
    verify_inclusion,
)

__version__ = "0.1.0"

__all__ = [
    "Ack",
    "Appender",
    "AsyncLedger",
    "AsyncToolCall",
    "Checkpoint",
    "Event",
    "Ledger",
    "LedgerError",
    "ToolCall",
    "VerificationError",
    "VerifierKey",
    "build_event",
    "leaf_hash",
    "new_span_id",
    "new_trace_id",
    "open_checkpoint",
    "verify_inclusion",
]

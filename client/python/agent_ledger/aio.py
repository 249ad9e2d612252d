"""The asyncio client: :class:`AsyncLedger`."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Dict, List, Optional, Sequence, TypeVar, Union

import grpc

from ._proto import ledger_pb2 as pb
from ._proto import ledger_pb2_grpc as rpc
from .client import (
    Ack,
    Event,
    LedgerError,
    _channel,
    _error,
    _metadata,
    _batch,
    _result,
    _ToolCallRecord,
    build_event,
)
from .verify import Checkpoint, VerifierKey, open_checkpoint, verify_inclusion

__all__ = ["AsyncLedger", "AsyncToolCall"]

F = TypeVar("F", bound=Callable[..., Any])


class AsyncLedger:
    """:class:`~agent_ledger.Ledger` for asyncio code (grpc.aio), with the
    same arguments and methods, awaited."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:7400",
        *,
        token: Optional[str] = None,
        ca: Optional[str] = None,
        log: str = "",
        key: Optional[str] = None,
        agent_id: Optional[str] = None,
        timeout: float = 30.0,
    ) -> None:
        self._channel = _channel(grpc.aio, url, ca)
        self._metadata = _metadata(token)
        self.log = log
        self.key = VerifierKey.parse(key) if key else None
        self.agent_id = agent_id
        self.timeout = timeout
        self._ingest = rpc.IngestStub(self._channel)
        self._query = rpc.QueryStub(self._channel)
        self._proofs = rpc.ProofsStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncLedger":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def _call(self, method: Callable[..., Any], request: Any) -> Any:
        try:
            return await method(request, metadata=self._metadata, timeout=self.timeout)
        except grpc.RpcError as e:
            raise _error(e) from None

    async def append(
        self, kind: Union[str, int, "pb.AuditEvent"], agent_id: str = "", **fields: Any
    ) -> Ack:
        event = kind if isinstance(kind, pb.AuditEvent) else build_event(kind, agent_id, **fields)
        return Ack.of(await self._call(self._ingest.Append, pb.AppendRequest(log=self.log, event=event)))

    async def append_batch(self, events: Sequence[Any], agent_id: str = "") -> List[Union[Ack, LedgerError]]:
        """:meth:`agent_ledger.Ledger.append_batch`."""
        resp = await self._call(self._ingest.AppendBatch, _batch(events, agent_id, self.log))
        return [_result(r) for r in resp.results]

    def tool_call(
        self,
        tool: str,
        *,
        args: Any = None,
        agent_id: Optional[str] = None,
        risk: Union[str, int, None] = None,
        **fields: Any,
    ) -> "AsyncToolCall":
        return AsyncToolCall(self, tool, args, agent_id or self.agent_id, risk, fields)

    def audited_tool(
        self,
        tool: Optional[str] = None,
        *,
        agent_id: Optional[str] = None,
        risk: Union[str, int, None] = None,
    ) -> Callable[[F], F]:
        """Records each call of an async function as a tool call."""

        def wrap(fn: F) -> F:
            if not inspect.iscoroutinefunction(fn):
                raise TypeError("AsyncLedger.audited_tool wraps async functions; use Ledger for sync ones")
            name = tool or fn.__name__
            sig = inspect.signature(fn)

            @functools.wraps(fn)
            async def wrapper(*a: Any, **kw: Any) -> Any:
                try:
                    args: Dict[str, Any] = dict(sig.bind(*a, **kw).arguments)
                except TypeError:
                    args = {"args": list(a), "kwargs": kw}
                async with self.tool_call(name, args=args, agent_id=agent_id, risk=risk) as call:
                    call.result = await fn(*a, **kw)
                    return call.result

            return wrapper  # type: ignore[return-value]

        return wrap

    async def timeline(self, correlation_id: str, payloads: bool = False) -> List[Event]:
        resp = await self._call(
            self._query.GetTimeline,
            pb.TimelineRequest(log=self.log, correlation_id=correlation_id, include_payloads=payloads),
        )
        return [Event.of(r) for r in resp.entries]

    async def events(self, *, agent_id: str = "", tool: str = "", limit: int = 100) -> List[Event]:
        resp = await self._call(
            self._query.ListEvents,
            pb.ListEventsRequest(
                log=self.log,
                filter=pb.EventFilter(agent_id=agent_id, tool_name=tool),
                page_size=min(limit, 1000),
            ),
        )
        return [Event.of(r) for r in resp.entries]

    async def checkpoint(self) -> Checkpoint:
        cp = await self._call(self._proofs.GetCheckpoint, pb.GetCheckpointRequest(log=self.log))
        return self._open(cp.note)

    def _open(self, note: str) -> Checkpoint:
        if self.key is None:
            raise LedgerError("FAILED_PRECONDITION", "no verifier key: pass key=…", "key")
        return open_checkpoint(note, self.key)

    async def prove(self, index: int) -> Checkpoint:
        resp = await self._call(
            self._proofs.GetInclusionProof, pb.GetInclusionProofRequest(log=self.log, index=index)
        )
        cp = self._open(resp.checkpoint.note)
        p = resp.proof
        if p.tree_size != cp.size or p.leaf_index != index:
            raise LedgerError("DATA_LOSS", "the proof is not for this entry and checkpoint")
        verify_inclusion(p.leaf_index, p.tree_size, bytes(resp.leaf_hash), list(p.hashes), cp.root)
        return cp


class AsyncToolCall(_ToolCallRecord):
    """``async with ledger.tool_call(...) as call:`` (see ``Ledger.tool_call``)."""

    def __init__(self, ledger: AsyncLedger, tool: str, args: Any, agent_id: Optional[str], risk: Any, fields: Dict[str, Any]) -> None:
        super().__init__(tool, args, agent_id, risk, fields)
        self.ledger = ledger

    async def __aenter__(self) -> "AsyncToolCall":
        self.call_ack = await self.ledger.append(self._call_event())
        return self

    async def __aexit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        self.result_ack = await self.ledger.append(self._result_event(exc_type, exc))

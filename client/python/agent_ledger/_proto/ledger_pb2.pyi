import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_TOOL_CALL: _ClassVar[EventKind]
    EVENT_KIND_TOOL_RESULT: _ClassVar[EventKind]
    EVENT_KIND_MODEL_CALL: _ClassVar[EventKind]
    EVENT_KIND_DECISION: _ClassVar[EventKind]
    EVENT_KIND_APPROVAL_REQUESTED: _ClassVar[EventKind]
    EVENT_KIND_APPROVAL_GRANTED: _ClassVar[EventKind]
    EVENT_KIND_APPROVAL_DENIED: _ClassVar[EventKind]
    EVENT_KIND_POLICY_VIOLATION: _ClassVar[EventKind]
    EVENT_KIND_KILL_SWITCH: _ClassVar[EventKind]
    EVENT_KIND_HANDOFF: _ClassVar[EventKind]
    EVENT_KIND_CUSTOM: _ClassVar[EventKind]
    EVENT_KIND_AGENT_STEP: _ClassVar[EventKind]

class RiskTier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RISK_TIER_UNSPECIFIED: _ClassVar[RiskTier]
    RISK_TIER_LOW: _ClassVar[RiskTier]
    RISK_TIER_MEDIUM: _ClassVar[RiskTier]
    RISK_TIER_HIGH: _ClassVar[RiskTier]

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_SUCCESS: _ClassVar[Outcome]
    OUTCOME_FAILURE: _ClassVar[Outcome]
    OUTCOME_DENIED: _ClassVar[Outcome]
    OUTCOME_ERROR: _ClassVar[Outcome]
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_TOOL_CALL: EventKind
EVENT_KIND_TOOL_RESULT: EventKind
EVENT_KIND_MODEL_CALL: EventKind
EVENT_KIND_DECISION: EventKind
EVENT_KIND_APPROVAL_REQUESTED: EventKind
EVENT_KIND_APPROVAL_GRANTED: EventKind
EVENT_KIND_APPROVAL_DENIED: EventKind
EVENT_KIND_POLICY_VIOLATION: EventKind
EVENT_KIND_KILL_SWITCH: EventKind
EVENT_KIND_HANDOFF: EventKind
EVENT_KIND_CUSTOM: EventKind
EVENT_KIND_AGENT_STEP: EventKind
RISK_TIER_UNSPECIFIED: RiskTier
RISK_TIER_LOW: RiskTier
RISK_TIER_MEDIUM: RiskTier
RISK_TIER_HIGH: RiskTier
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_SUCCESS: Outcome
OUTCOME_FAILURE: Outcome
OUTCOME_DENIED: Outcome
OUTCOME_ERROR: Outcome

class AuditEvent(_message.Message):
    __slots__ = ("event_id", "correlation_id", "span_id", "parent_span_id", "agent_id", "session_id", "principal", "kind", "tool_name", "action", "resource", "risk_tier", "outcome", "occurred_at", "attributes", "payload", "payload_content_type")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TOOL_NAME_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    RISK_TIER_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    correlation_id: str
    span_id: str
    parent_span_id: str
    agent_id: str
    session_id: str
    principal: str
    kind: EventKind
    tool_name: str
    action: str
    resource: str
    risk_tier: RiskTier
    outcome: Outcome
    occurred_at: _timestamp_pb2.Timestamp
    attributes: _containers.ScalarMap[str, str]
    payload: bytes
    payload_content_type: str
    def __init__(self, event_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., span_id: _Optional[str] = ..., parent_span_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., session_id: _Optional[str] = ..., principal: _Optional[str] = ..., kind: _Optional[_Union[EventKind, str]] = ..., tool_name: _Optional[str] = ..., action: _Optional[str] = ..., resource: _Optional[str] = ..., risk_tier: _Optional[_Union[RiskTier, str]] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attributes: _Optional[_Mapping[str, str]] = ..., payload: _Optional[bytes] = ..., payload_content_type: _Optional[str] = ...) -> None: ...

class Redaction(_message.Message):
    __slots__ = ("target_index", "reason")
    TARGET_INDEX_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    target_index: int
    reason: str
    def __init__(self, target_index: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class LedgerEntry(_message.Message):
    __slots__ = ("index", "prev_leaf_hash", "integrated_at", "writer", "event", "payload_commitment", "payload_size", "redaction")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PREV_LEAF_HASH_FIELD_NUMBER: _ClassVar[int]
    INTEGRATED_AT_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_COMMITMENT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SIZE_FIELD_NUMBER: _ClassVar[int]
    REDACTION_FIELD_NUMBER: _ClassVar[int]
    index: int
    prev_leaf_hash: bytes
    integrated_at: _timestamp_pb2.Timestamp
    writer: str
    event: AuditEvent
    payload_commitment: bytes
    payload_size: int
    redaction: Redaction
    def __init__(self, index: _Optional[int] = ..., prev_leaf_hash: _Optional[bytes] = ..., integrated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., writer: _Optional[str] = ..., event: _Optional[_Union[AuditEvent, _Mapping]] = ..., payload_commitment: _Optional[bytes] = ..., payload_size: _Optional[int] = ..., redaction: _Optional[_Union[Redaction, _Mapping]] = ...) -> None: ...

class SignedCheckpoint(_message.Message):
    __slots__ = ("note", "origin", "tree_size", "root_hash")
    NOTE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    ROOT_HASH_FIELD_NUMBER: _ClassVar[int]
    note: str
    origin: str
    tree_size: int
    root_hash: bytes
    def __init__(self, note: _Optional[str] = ..., origin: _Optional[str] = ..., tree_size: _Optional[int] = ..., root_hash: _Optional[bytes] = ...) -> None: ...

class InclusionProof(_message.Message):
    __slots__ = ("leaf_index", "tree_size", "hashes")
    LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    leaf_index: int
    tree_size: int
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, leaf_index: _Optional[int] = ..., tree_size: _Optional[int] = ..., hashes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ConsistencyProof(_message.Message):
    __slots__ = ("old_size", "new_size", "hashes")
    OLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    NEW_SIZE_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    old_size: int
    new_size: int
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, old_size: _Optional[int] = ..., new_size: _Optional[int] = ..., hashes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class AppendRequest(_message.Message):
    __slots__ = ("log", "event", "receipt")
    LOG_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    log: str
    event: AuditEvent
    receipt: bool
    def __init__(self, log: _Optional[str] = ..., event: _Optional[_Union[AuditEvent, _Mapping]] = ..., receipt: _Optional[bool] = ...) -> None: ...

class Receipt(_message.Message):
    __slots__ = ("entry", "inclusion", "checkpoint", "payload_salt")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    INCLUSION_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SALT_FIELD_NUMBER: _ClassVar[int]
    entry: bytes
    inclusion: InclusionProof
    checkpoint: SignedCheckpoint
    payload_salt: bytes
    def __init__(self, entry: _Optional[bytes] = ..., inclusion: _Optional[_Union[InclusionProof, _Mapping]] = ..., checkpoint: _Optional[_Union[SignedCheckpoint, _Mapping]] = ..., payload_salt: _Optional[bytes] = ...) -> None: ...

class AppendAck(_message.Message):
    __slots__ = ("event_id", "index", "leaf_hash", "integrated_at", "duplicate", "receipt", "checkpoint_size", "checkpoint_due")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LEAF_HASH_FIELD_NUMBER: _ClassVar[int]
    INTEGRATED_AT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_DUE_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    index: int
    leaf_hash: bytes
    integrated_at: _timestamp_pb2.Timestamp
    duplicate: bool
    receipt: Receipt
    checkpoint_size: int
    checkpoint_due: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., index: _Optional[int] = ..., leaf_hash: _Optional[bytes] = ..., integrated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duplicate: _Optional[bool] = ..., receipt: _Optional[_Union[Receipt, _Mapping]] = ..., checkpoint_size: _Optional[int] = ..., checkpoint_due: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AppendRejection(_message.Message):
    __slots__ = ("event_id", "code", "message", "field")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    code: int
    message: str
    field: str
    def __init__(self, event_id: _Optional[str] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...

class AppendResponse(_message.Message):
    __slots__ = ("ack", "rejection")
    ACK_FIELD_NUMBER: _ClassVar[int]
    REJECTION_FIELD_NUMBER: _ClassVar[int]
    ack: AppendAck
    rejection: AppendRejection
    def __init__(self, ack: _Optional[_Union[AppendAck, _Mapping]] = ..., rejection: _Optional[_Union[AppendRejection, _Mapping]] = ...) -> None: ...

class AppendBatchRequest(_message.Message):
    __slots__ = ("log", "events", "receipt")
    LOG_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    log: str
    events: _containers.RepeatedCompositeFieldContainer[AuditEvent]
    receipt: bool
    def __init__(self, log: _Optional[str] = ..., events: _Optional[_Iterable[_Union[AuditEvent, _Mapping]]] = ..., receipt: _Optional[bool] = ...) -> None: ...

class AppendBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AppendResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[AppendResponse, _Mapping]]] = ...) -> None: ...

class EntryRecord(_message.Message):
    __slots__ = ("index", "entry", "leaf_hash", "payload", "payload_salt", "payload_redacted", "inclusion")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    LEAF_HASH_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SALT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_REDACTED_FIELD_NUMBER: _ClassVar[int]
    INCLUSION_FIELD_NUMBER: _ClassVar[int]
    index: int
    entry: bytes
    leaf_hash: bytes
    payload: bytes
    payload_salt: bytes
    payload_redacted: bool
    inclusion: InclusionProof
    def __init__(self, index: _Optional[int] = ..., entry: _Optional[bytes] = ..., leaf_hash: _Optional[bytes] = ..., payload: _Optional[bytes] = ..., payload_salt: _Optional[bytes] = ..., payload_redacted: _Optional[bool] = ..., inclusion: _Optional[_Union[InclusionProof, _Mapping]] = ...) -> None: ...

class EventFilter(_message.Message):
    __slots__ = ("correlation_id", "agent_id", "principal", "tool_name", "kinds", "risk_tiers", "outcomes", "occurred_from", "occurred_to")
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    TOOL_NAME_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    RISK_TIERS_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_FROM_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_TO_FIELD_NUMBER: _ClassVar[int]
    correlation_id: str
    agent_id: str
    principal: str
    tool_name: str
    kinds: _containers.RepeatedScalarFieldContainer[EventKind]
    risk_tiers: _containers.RepeatedScalarFieldContainer[RiskTier]
    outcomes: _containers.RepeatedScalarFieldContainer[Outcome]
    occurred_from: _timestamp_pb2.Timestamp
    occurred_to: _timestamp_pb2.Timestamp
    def __init__(self, correlation_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., principal: _Optional[str] = ..., tool_name: _Optional[str] = ..., kinds: _Optional[_Iterable[_Union[EventKind, str]]] = ..., risk_tiers: _Optional[_Iterable[_Union[RiskTier, str]]] = ..., outcomes: _Optional[_Iterable[_Union[Outcome, str]]] = ..., occurred_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., occurred_to: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListEventsRequest(_message.Message):
    __slots__ = ("log", "filter", "page_size", "page_token", "include_payloads", "with_proofs", "proof_tree_size", "descending")
    LOG_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    WITH_PROOFS_FIELD_NUMBER: _ClassVar[int]
    PROOF_TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    DESCENDING_FIELD_NUMBER: _ClassVar[int]
    log: str
    filter: EventFilter
    page_size: int
    page_token: str
    include_payloads: bool
    with_proofs: bool
    proof_tree_size: int
    descending: bool
    def __init__(self, log: _Optional[str] = ..., filter: _Optional[_Union[EventFilter, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., include_payloads: _Optional[bool] = ..., with_proofs: _Optional[bool] = ..., proof_tree_size: _Optional[int] = ..., descending: _Optional[bool] = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ("entries", "next_page_token", "checkpoint")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[EntryRecord]
    next_page_token: str
    checkpoint: SignedCheckpoint
    def __init__(self, entries: _Optional[_Iterable[_Union[EntryRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., checkpoint: _Optional[_Union[SignedCheckpoint, _Mapping]] = ...) -> None: ...

class TimelineRequest(_message.Message):
    __slots__ = ("log", "correlation_id", "include_payloads", "with_proofs", "proof_tree_size")
    LOG_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    WITH_PROOFS_FIELD_NUMBER: _ClassVar[int]
    PROOF_TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    log: str
    correlation_id: str
    include_payloads: bool
    with_proofs: bool
    proof_tree_size: int
    def __init__(self, log: _Optional[str] = ..., correlation_id: _Optional[str] = ..., include_payloads: _Optional[bool] = ..., with_proofs: _Optional[bool] = ..., proof_tree_size: _Optional[int] = ...) -> None: ...

class SpanNode(_message.Message):
    __slots__ = ("span_id", "parent_span_id", "entry_indexes", "child_span_ids")
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    ENTRY_INDEXES_FIELD_NUMBER: _ClassVar[int]
    CHILD_SPAN_IDS_FIELD_NUMBER: _ClassVar[int]
    span_id: str
    parent_span_id: str
    entry_indexes: _containers.RepeatedScalarFieldContainer[int]
    child_span_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, span_id: _Optional[str] = ..., parent_span_id: _Optional[str] = ..., entry_indexes: _Optional[_Iterable[int]] = ..., child_span_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class TimelineResponse(_message.Message):
    __slots__ = ("entries", "spans", "root_span_ids", "checkpoint")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    SPANS_FIELD_NUMBER: _ClassVar[int]
    ROOT_SPAN_IDS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[EntryRecord]
    spans: _containers.RepeatedCompositeFieldContainer[SpanNode]
    root_span_ids: _containers.RepeatedScalarFieldContainer[str]
    checkpoint: SignedCheckpoint
    def __init__(self, entries: _Optional[_Iterable[_Union[EntryRecord, _Mapping]]] = ..., spans: _Optional[_Iterable[_Union[SpanNode, _Mapping]]] = ..., root_span_ids: _Optional[_Iterable[str]] = ..., checkpoint: _Optional[_Union[SignedCheckpoint, _Mapping]] = ...) -> None: ...

class TailRequest(_message.Message):
    __slots__ = ("log", "from_index", "filter", "include_payloads")
    LOG_FIELD_NUMBER: _ClassVar[int]
    FROM_INDEX_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    log: str
    from_index: int
    filter: EventFilter
    include_payloads: bool
    def __init__(self, log: _Optional[str] = ..., from_index: _Optional[int] = ..., filter: _Optional[_Union[EventFilter, _Mapping]] = ..., include_payloads: _Optional[bool] = ...) -> None: ...

class GetEntriesRequest(_message.Message):
    __slots__ = ("log", "start", "end", "include_payloads")
    LOG_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    log: str
    start: int
    end: int
    include_payloads: bool
    def __init__(self, log: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., include_payloads: _Optional[bool] = ...) -> None: ...

class GetCheckpointRequest(_message.Message):
    __slots__ = ("log", "tree_size")
    LOG_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    log: str
    tree_size: int
    def __init__(self, log: _Optional[str] = ..., tree_size: _Optional[int] = ...) -> None: ...

class GetInclusionProofRequest(_message.Message):
    __slots__ = ("log", "index", "event_id", "tree_size")
    LOG_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    log: str
    index: int
    event_id: str
    tree_size: int
    def __init__(self, log: _Optional[str] = ..., index: _Optional[int] = ..., event_id: _Optional[str] = ..., tree_size: _Optional[int] = ...) -> None: ...

class GetInclusionProofResponse(_message.Message):
    __slots__ = ("proof", "leaf_hash", "checkpoint")
    PROOF_FIELD_NUMBER: _ClassVar[int]
    LEAF_HASH_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    proof: InclusionProof
    leaf_hash: bytes
    checkpoint: SignedCheckpoint
    def __init__(self, proof: _Optional[_Union[InclusionProof, _Mapping]] = ..., leaf_hash: _Optional[bytes] = ..., checkpoint: _Optional[_Union[SignedCheckpoint, _Mapping]] = ...) -> None: ...

class GetConsistencyProofRequest(_message.Message):
    __slots__ = ("log", "old_size", "new_size")
    LOG_FIELD_NUMBER: _ClassVar[int]
    OLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    NEW_SIZE_FIELD_NUMBER: _ClassVar[int]
    log: str
    old_size: int
    new_size: int
    def __init__(self, log: _Optional[str] = ..., old_size: _Optional[int] = ..., new_size: _Optional[int] = ...) -> None: ...

class GetConsistencyProofResponse(_message.Message):
    __slots__ = ("proof", "new_checkpoint")
    PROOF_FIELD_NUMBER: _ClassVar[int]
    NEW_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    proof: ConsistencyProof
    new_checkpoint: SignedCheckpoint
    def __init__(self, proof: _Optional[_Union[ConsistencyProof, _Mapping]] = ..., new_checkpoint: _Optional[_Union[SignedCheckpoint, _Mapping]] = ...) -> None: ...

class GetLogStatusRequest(_message.Message):
    __slots__ = ("log",)
    LOG_FIELD_NUMBER: _ClassVar[int]
    log: str
    def __init__(self, log: _Optional[str] = ...) -> None: ...

class LogStatus(_message.Message):
    __slots__ = ("log", "origin", "committed_size", "signed_size", "indexed_size", "anchored_size", "mirror_enabled", "mirrored_size", "mirror_lag_entries", "mirror_lag_seconds", "ack_after_mirror")
    LOG_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_SIZE_FIELD_NUMBER: _ClassVar[int]
    SIGNED_SIZE_FIELD_NUMBER: _ClassVar[int]
    INDEXED_SIZE_FIELD_NUMBER: _ClassVar[int]
    ANCHORED_SIZE_FIELD_NUMBER: _ClassVar[int]
    MIRROR_ENABLED_FIELD_NUMBER: _ClassVar[int]
    MIRRORED_SIZE_FIELD_NUMBER: _ClassVar[int]
    MIRROR_LAG_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    MIRROR_LAG_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ACK_AFTER_MIRROR_FIELD_NUMBER: _ClassVar[int]
    log: str
    origin: str
    committed_size: int
    signed_size: int
    indexed_size: int
    anchored_size: int
    mirror_enabled: bool
    mirrored_size: int
    mirror_lag_entries: int
    mirror_lag_seconds: float
    ack_after_mirror: bool
    def __init__(self, log: _Optional[str] = ..., origin: _Optional[str] = ..., committed_size: _Optional[int] = ..., signed_size: _Optional[int] = ..., indexed_size: _Optional[int] = ..., anchored_size: _Optional[int] = ..., mirror_enabled: _Optional[bool] = ..., mirrored_size: _Optional[int] = ..., mirror_lag_entries: _Optional[int] = ..., mirror_lag_seconds: _Optional[float] = ..., ack_after_mirror: _Optional[bool] = ...) -> None: ...

class ExportRequest(_message.Message):
    __slots__ = ("log", "start", "end", "include_payloads")
    LOG_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    log: str
    start: int
    end: int
    include_payloads: bool
    def __init__(self, log: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., include_payloads: _Optional[bool] = ...) -> None: ...

class ExportChunk(_message.Message):
    __slots__ = ("data", "entries_done", "entries_total")
    DATA_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_DONE_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    entries_done: int
    entries_total: int
    def __init__(self, data: _Optional[bytes] = ..., entries_done: _Optional[int] = ..., entries_total: _Optional[int] = ...) -> None: ...

class BundleHeader(_message.Message):
    __slots__ = ("origin", "verifier_key", "start", "end", "prefix_hashes", "prev_leaf_hash", "includes_payloads", "created_at")
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    VERIFIER_KEY_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    PREFIX_HASHES_FIELD_NUMBER: _ClassVar[int]
    PREV_LEAF_HASH_FIELD_NUMBER: _ClassVar[int]
    INCLUDES_PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    origin: str
    verifier_key: str
    start: int
    end: int
    prefix_hashes: _containers.RepeatedScalarFieldContainer[bytes]
    prev_leaf_hash: bytes
    includes_payloads: bool
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, origin: _Optional[str] = ..., verifier_key: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., prefix_hashes: _Optional[_Iterable[bytes]] = ..., prev_leaf_hash: _Optional[bytes] = ..., includes_payloads: _Optional[bool] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class BundleEnd(_message.Message):
    __slots__ = ("entries", "checkpoints", "redaction_proofs")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    REDACTION_PROOFS_FIELD_NUMBER: _ClassVar[int]
    entries: int
    checkpoints: int
    redaction_proofs: int
    def __init__(self, entries: _Optional[int] = ..., checkpoints: _Optional[int] = ..., redaction_proofs: _Optional[int] = ...) -> None: ...

class RedactionProof(_message.Message):
    __slots__ = ("index", "entry", "checkpoint", "inclusion", "consistency")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    INCLUSION_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    index: int
    entry: bytes
    checkpoint: SignedCheckpoint
    inclusion: InclusionProof
    consistency: ConsistencyProof
    def __init__(self, index: _Optional[int] = ..., entry: _Optional[bytes] = ..., checkpoint: _Optional[_Union[SignedCheckpoint, _Mapping]] = ..., inclusion: _Optional[_Union[InclusionProof, _Mapping]] = ..., consistency: _Optional[_Union[ConsistencyProof, _Mapping]] = ...) -> None: ...

class BundleItem(_message.Message):
    __slots__ = ("header", "entry", "checkpoint", "end", "redaction_proof")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    REDACTION_PROOF_FIELD_NUMBER: _ClassVar[int]
    header: BundleHeader
    entry: EntryRecord
    checkpoint: SignedCheckpoint
    end: BundleEnd
    redaction_proof: RedactionProof
    def __init__(self, header: _Optional[_Union[BundleHeader, _Mapping]] = ..., entry: _Optional[_Union[EntryRecord, _Mapping]] = ..., checkpoint: _Optional[_Union[SignedCheckpoint, _Mapping]] = ..., end: _Optional[_Union[BundleEnd, _Mapping]] = ..., redaction_proof: _Optional[_Union[RedactionProof, _Mapping]] = ...) -> None: ...

class RedactRequest(_message.Message):
    __slots__ = ("log", "target_index", "reason")
    LOG_FIELD_NUMBER: _ClassVar[int]
    TARGET_INDEX_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    log: str
    target_index: int
    reason: str
    def __init__(self, log: _Optional[str] = ..., target_index: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class DecideRequest(_message.Message):
    __slots__ = ("log", "request_event_id", "grant", "reason")
    LOG_FIELD_NUMBER: _ClassVar[int]
    REQUEST_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    log: str
    request_event_id: str
    grant: bool
    reason: str
    def __init__(self, log: _Optional[str] = ..., request_event_id: _Optional[str] = ..., grant: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class AwaitDecisionRequest(_message.Message):
    __slots__ = ("log", "request_event_id", "wait_seconds")
    LOG_FIELD_NUMBER: _ClassVar[int]
    REQUEST_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    log: str
    request_event_id: str
    wait_seconds: int
    def __init__(self, log: _Optional[str] = ..., request_event_id: _Optional[str] = ..., wait_seconds: _Optional[int] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("decided", "granted", "entry")
    DECIDED_FIELD_NUMBER: _ClassVar[int]
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    decided: bool
    granted: bool
    entry: EntryRecord
    def __init__(self, decided: _Optional[bool] = ..., granted: _Optional[bool] = ..., entry: _Optional[_Union[EntryRecord, _Mapping]] = ...) -> None: ...

class SetAgentStateRequest(_message.Message):
    __slots__ = ("log", "agent_id", "killed", "reason")
    LOG_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KILLED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    log: str
    agent_id: str
    killed: bool
    reason: str
    def __init__(self, log: _Optional[str] = ..., agent_id: _Optional[str] = ..., killed: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class GetAgentStateRequest(_message.Message):
    __slots__ = ("log", "agent_id")
    LOG_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    log: str
    agent_id: str
    def __init__(self, log: _Optional[str] = ..., agent_id: _Optional[str] = ...) -> None: ...

class AgentState(_message.Message):
    __slots__ = ("agent_id", "killed", "changes", "entry")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KILLED_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    killed: bool
    changes: int
    entry: EntryRecord
    def __init__(self, agent_id: _Optional[str] = ..., killed: _Optional[bool] = ..., changes: _Optional[int] = ..., entry: _Optional[_Union[EntryRecord, _Mapping]] = ...) -> None: ...

import datetime

from eventline.v1 import event_pb2 as _event_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeletionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELETION_STATE_UNSPECIFIED: _ClassVar[DeletionState]
    DELETION_STATE_PENDING: _ClassVar[DeletionState]
    DELETION_STATE_RUNNING: _ClassVar[DeletionState]
    DELETION_STATE_DONE: _ClassVar[DeletionState]

class SchemaMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCHEMA_MODE_UNSPECIFIED: _ClassVar[SchemaMode]
    SCHEMA_MODE_ENFORCE: _ClassVar[SchemaMode]
    SCHEMA_MODE_WARN: _ClassVar[SchemaMode]
DELETION_STATE_UNSPECIFIED: DeletionState
DELETION_STATE_PENDING: DeletionState
DELETION_STATE_RUNNING: DeletionState
DELETION_STATE_DONE: DeletionState
SCHEMA_MODE_UNSPECIFIED: SchemaMode
SCHEMA_MODE_ENFORCE: SchemaMode
SCHEMA_MODE_WARN: SchemaMode

class Deletion(_message.Message):
    __slots__ = ("deletion_id", "tenant_id", "user_id", "state", "events_deleted", "request_time", "finish_time")
    DELETION_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    REQUEST_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    deletion_id: str
    tenant_id: str
    user_id: str
    state: DeletionState
    events_deleted: int
    request_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    def __init__(self, deletion_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., user_id: _Optional[str] = ..., state: _Optional[_Union[DeletionState, str]] = ..., events_deleted: _Optional[int] = ..., request_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DeleteUserRequest(_message.Message):
    __slots__ = ("tenant_id", "user_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    user_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class DeleteUserResponse(_message.Message):
    __slots__ = ("deletion",)
    DELETION_FIELD_NUMBER: _ClassVar[int]
    deletion: Deletion
    def __init__(self, deletion: _Optional[_Union[Deletion, _Mapping]] = ...) -> None: ...

class GetDeletionRequest(_message.Message):
    __slots__ = ("tenant_id", "deletion_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    DELETION_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    deletion_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., deletion_id: _Optional[str] = ...) -> None: ...

class GetDeletionResponse(_message.Message):
    __slots__ = ("deletion",)
    DELETION_FIELD_NUMBER: _ClassVar[int]
    deletion: Deletion
    def __init__(self, deletion: _Optional[_Union[Deletion, _Mapping]] = ...) -> None: ...

class Retention(_message.Message):
    __slots__ = ("raw_retention_seconds", "rollup_retention_seconds")
    RAW_RETENTION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ROLLUP_RETENTION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    raw_retention_seconds: int
    rollup_retention_seconds: int
    def __init__(self, raw_retention_seconds: _Optional[int] = ..., rollup_retention_seconds: _Optional[int] = ...) -> None: ...

class GetRetentionRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class GetRetentionResponse(_message.Message):
    __slots__ = ("retention",)
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    retention: Retention
    def __init__(self, retention: _Optional[_Union[Retention, _Mapping]] = ...) -> None: ...

class SetRetentionRequest(_message.Message):
    __slots__ = ("tenant_id", "retention")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    retention: Retention
    def __init__(self, tenant_id: _Optional[str] = ..., retention: _Optional[_Union[Retention, _Mapping]] = ...) -> None: ...

class SetRetentionResponse(_message.Message):
    __slots__ = ("retention",)
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    retention: Retention
    def __init__(self, retention: _Optional[_Union[Retention, _Mapping]] = ...) -> None: ...

class QuarantinedEvent(_message.Message):
    __slots__ = ("quarantine_id", "event_id", "event_type", "reason", "payload", "receive_time")
    QUARANTINE_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_TIME_FIELD_NUMBER: _ClassVar[int]
    quarantine_id: str
    event_id: str
    event_type: str
    reason: str
    payload: str
    receive_time: _timestamp_pb2.Timestamp
    def __init__(self, quarantine_id: _Optional[str] = ..., event_id: _Optional[str] = ..., event_type: _Optional[str] = ..., reason: _Optional[str] = ..., payload: _Optional[str] = ..., receive_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListQuarantinedRequest(_message.Message):
    __slots__ = ("tenant_id", "event_type", "page_size", "page_token")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    event_type: str
    page_size: int
    page_token: str
    def __init__(self, tenant_id: _Optional[str] = ..., event_type: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListQuarantinedResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[QuarantinedEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[QuarantinedEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ReplayQuarantinedRequest(_message.Message):
    __slots__ = ("tenant_id", "quarantine_ids", "all", "event_type")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    QUARANTINE_IDS_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    quarantine_ids: _containers.RepeatedScalarFieldContainer[str]
    all: bool
    event_type: str
    def __init__(self, tenant_id: _Optional[str] = ..., quarantine_ids: _Optional[_Iterable[str]] = ..., all: _Optional[bool] = ..., event_type: _Optional[str] = ...) -> None: ...

class ReplayQuarantinedResponse(_message.Message):
    __slots__ = ("accepted", "duplicates", "rejected", "results")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicates: int
    rejected: int
    results: _containers.RepeatedCompositeFieldContainer[_event_pb2.EventResult]
    def __init__(self, accepted: _Optional[int] = ..., duplicates: _Optional[int] = ..., rejected: _Optional[int] = ..., results: _Optional[_Iterable[_Union[_event_pb2.EventResult, _Mapping]]] = ...) -> None: ...

class PurgeQuarantinedRequest(_message.Message):
    __slots__ = ("tenant_id", "quarantine_ids", "all", "event_type")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    QUARANTINE_IDS_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    quarantine_ids: _containers.RepeatedScalarFieldContainer[str]
    all: bool
    event_type: str
    def __init__(self, tenant_id: _Optional[str] = ..., quarantine_ids: _Optional[_Iterable[str]] = ..., all: _Optional[bool] = ..., event_type: _Optional[str] = ...) -> None: ...

class PurgeQuarantinedResponse(_message.Message):
    __slots__ = ("purged",)
    PURGED_FIELD_NUMBER: _ClassVar[int]
    purged: int
    def __init__(self, purged: _Optional[int] = ...) -> None: ...

class EventSchema(_message.Message):
    __slots__ = ("event_type", "schema", "mode", "update_time")
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    event_type: str
    schema: _struct_pb2.Struct
    mode: SchemaMode
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, event_type: _Optional[str] = ..., schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., mode: _Optional[_Union[SchemaMode, str]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SetEventSchemaRequest(_message.Message):
    __slots__ = ("tenant_id", "event_type", "schema", "mode")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    event_type: str
    schema: _struct_pb2.Struct
    mode: SchemaMode
    def __init__(self, tenant_id: _Optional[str] = ..., event_type: _Optional[str] = ..., schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., mode: _Optional[_Union[SchemaMode, str]] = ...) -> None: ...

class SetEventSchemaResponse(_message.Message):
    __slots__ = ("schema",)
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    schema: EventSchema
    def __init__(self, schema: _Optional[_Union[EventSchema, _Mapping]] = ...) -> None: ...

class ListEventSchemasRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class ListEventSchemasResponse(_message.Message):
    __slots__ = ("schemas",)
    SCHEMAS_FIELD_NUMBER: _ClassVar[int]
    schemas: _containers.RepeatedCompositeFieldContainer[EventSchema]
    def __init__(self, schemas: _Optional[_Iterable[_Union[EventSchema, _Mapping]]] = ...) -> None: ...

class DeleteEventSchemaRequest(_message.Message):
    __slots__ = ("tenant_id", "event_type")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    event_type: str
    def __init__(self, tenant_id: _Optional[str] = ..., event_type: _Optional[str] = ...) -> None: ...

class DeleteEventSchemaResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

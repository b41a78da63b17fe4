import datetime

from eventline.v1 import event_pb2 as _event_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrackRequest(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _event_pb2.Event
    def __init__(self, event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ...) -> None: ...

class TrackResponse(_message.Message):
    __slots__ = ("result", "watermark")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    WATERMARK_FIELD_NUMBER: _ClassVar[int]
    result: _event_pb2.EventResult
    watermark: str
    def __init__(self, result: _Optional[_Union[_event_pb2.EventResult, _Mapping]] = ..., watermark: _Optional[str] = ...) -> None: ...

class IngestBatchRequest(_message.Message):
    __slots__ = ("events", "sent_at")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_event_pb2.Event]
    sent_at: _timestamp_pb2.Timestamp
    def __init__(self, events: _Optional[_Iterable[_Union[_event_pb2.Event, _Mapping]]] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class IngestBatchResponse(_message.Message):
    __slots__ = ("results", "accepted", "duplicates", "rejected", "watermark")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    WATERMARK_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_event_pb2.EventResult]
    accepted: int
    duplicates: int
    rejected: int
    watermark: str
    def __init__(self, results: _Optional[_Iterable[_Union[_event_pb2.EventResult, _Mapping]]] = ..., accepted: _Optional[int] = ..., duplicates: _Optional[int] = ..., rejected: _Optional[int] = ..., watermark: _Optional[str] = ...) -> None: ...

class IngestStreamRequest(_message.Message):
    __slots__ = ("events", "sent_at")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_event_pb2.Event]
    sent_at: _timestamp_pb2.Timestamp
    def __init__(self, events: _Optional[_Iterable[_Union[_event_pb2.Event, _Mapping]]] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class IngestStreamResponse(_message.Message):
    __slots__ = ("accepted", "duplicates", "rejected", "results", "watermark", "results_truncated")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    WATERMARK_FIELD_NUMBER: _ClassVar[int]
    RESULTS_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicates: int
    rejected: int
    results: _containers.RepeatedCompositeFieldContainer[_event_pb2.EventResult]
    watermark: str
    results_truncated: bool
    def __init__(self, accepted: _Optional[int] = ..., duplicates: _Optional[int] = ..., rejected: _Optional[int] = ..., results: _Optional[_Iterable[_Union[_event_pb2.EventResult, _Mapping]]] = ..., watermark: _Optional[str] = ..., results_truncated: _Optional[bool] = ...) -> None: ...

class IngestBidiRequest(_message.Message):
    __slots__ = ("sequence", "events", "sent_at")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    events: _containers.RepeatedCompositeFieldContainer[_event_pb2.Event]
    sent_at: _timestamp_pb2.Timestamp
    def __init__(self, sequence: _Optional[int] = ..., events: _Optional[_Iterable[_Union[_event_pb2.Event, _Mapping]]] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class IngestBidiResponse(_message.Message):
    __slots__ = ("sequence", "results", "watermark")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    WATERMARK_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    results: _containers.RepeatedCompositeFieldContainer[_event_pb2.EventResult]
    watermark: str
    def __init__(self, sequence: _Optional[int] = ..., results: _Optional[_Iterable[_Union[_event_pb2.EventResult, _Mapping]]] = ..., watermark: _Optional[str] = ...) -> None: ...

class ValidateEventsRequest(_message.Message):
    __slots__ = ("events", "sent_at")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_event_pb2.Event]
    sent_at: _timestamp_pb2.Timestamp
    def __init__(self, events: _Optional[_Iterable[_Union[_event_pb2.Event, _Mapping]]] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ValidateEventsResponse(_message.Message):
    __slots__ = ("results", "valid", "invalid", "warnings")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    VALID_FIELD_NUMBER: _ClassVar[int]
    INVALID_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_event_pb2.EventResult]
    valid: int
    invalid: int
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, results: _Optional[_Iterable[_Union[_event_pb2.EventResult, _Mapping]]] = ..., valid: _Optional[int] = ..., invalid: _Optional[int] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

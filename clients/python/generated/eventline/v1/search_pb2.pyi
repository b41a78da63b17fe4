import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchIndex(_message.Message):
    __slots__ = ("tenant_id", "enabled", "enable_time", "events_indexed", "caught_up")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    ENABLE_TIME_FIELD_NUMBER: _ClassVar[int]
    EVENTS_INDEXED_FIELD_NUMBER: _ClassVar[int]
    CAUGHT_UP_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    enabled: bool
    enable_time: _timestamp_pb2.Timestamp
    events_indexed: int
    caught_up: bool
    def __init__(self, tenant_id: _Optional[str] = ..., enabled: _Optional[bool] = ..., enable_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., events_indexed: _Optional[int] = ..., caught_up: _Optional[bool] = ...) -> None: ...

class GetSearchIndexRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class GetSearchIndexResponse(_message.Message):
    __slots__ = ("search_index",)
    SEARCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    search_index: SearchIndex
    def __init__(self, search_index: _Optional[_Union[SearchIndex, _Mapping]] = ...) -> None: ...

class SetSearchIndexRequest(_message.Message):
    __slots__ = ("tenant_id", "enabled")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    enabled: bool
    def __init__(self, tenant_id: _Optional[str] = ..., enabled: _Optional[bool] = ...) -> None: ...

class SetSearchIndexResponse(_message.Message):
    __slots__ = ("search_index",)
    SEARCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    search_index: SearchIndex
    def __init__(self, search_index: _Optional[_Union[SearchIndex, _Mapping]] = ...) -> None: ...

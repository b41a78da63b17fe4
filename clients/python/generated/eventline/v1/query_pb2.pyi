import datetime

from eventline.v1 import event_pb2 as _event_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Measure(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEASURE_UNSPECIFIED: _ClassVar[Measure]
    MEASURE_EVENTS: _ClassVar[Measure]
    MEASURE_UNIQUE_USERS: _ClassVar[Measure]

class PropertyGroupKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROPERTY_GROUP_KIND_UNSPECIFIED: _ClassVar[PropertyGroupKind]
    PROPERTY_GROUP_KIND_VALUE: _ClassVar[PropertyGroupKind]
    PROPERTY_GROUP_KIND_MISSING: _ClassVar[PropertyGroupKind]
    PROPERTY_GROUP_KIND_OTHER: _ClassVar[PropertyGroupKind]

class Interval(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INTERVAL_UNSPECIFIED: _ClassVar[Interval]
    INTERVAL_MINUTE: _ClassVar[Interval]
    INTERVAL_HOUR: _ClassVar[Interval]
    INTERVAL_DAY: _ClassVar[Interval]

class RetentionInterval(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RETENTION_INTERVAL_UNSPECIFIED: _ClassVar[RetentionInterval]
    RETENTION_INTERVAL_DAY: _ClassVar[RetentionInterval]
    RETENTION_INTERVAL_WEEK: _ClassVar[RetentionInterval]
MEASURE_UNSPECIFIED: Measure
MEASURE_EVENTS: Measure
MEASURE_UNIQUE_USERS: Measure
PROPERTY_GROUP_KIND_UNSPECIFIED: PropertyGroupKind
PROPERTY_GROUP_KIND_VALUE: PropertyGroupKind
PROPERTY_GROUP_KIND_MISSING: PropertyGroupKind
PROPERTY_GROUP_KIND_OTHER: PropertyGroupKind
INTERVAL_UNSPECIFIED: Interval
INTERVAL_MINUTE: Interval
INTERVAL_HOUR: Interval
INTERVAL_DAY: Interval
RETENTION_INTERVAL_UNSPECIFIED: RetentionInterval
RETENTION_INTERVAL_DAY: RetentionInterval
RETENTION_INTERVAL_WEEK: RetentionInterval

class ListEventsRequest(_message.Message):
    __slots__ = ("event_type", "user_id", "start_time", "end_time", "page_size", "page_token", "property_filters", "min_watermark")
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PROPERTY_FILTERS_FIELD_NUMBER: _ClassVar[int]
    MIN_WATERMARK_FIELD_NUMBER: _ClassVar[int]
    event_type: str
    user_id: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    property_filters: _containers.RepeatedScalarFieldContainer[str]
    min_watermark: str
    def __init__(self, event_type: _Optional[str] = ..., user_id: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., property_filters: _Optional[_Iterable[str]] = ..., min_watermark: _Optional[str] = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_event_pb2.Event]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[_event_pb2.Event, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ExportEventsRequest(_message.Message):
    __slots__ = ("event_type", "user_id", "start_time", "end_time", "cursor", "property_filters")
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    PROPERTY_FILTERS_FIELD_NUMBER: _ClassVar[int]
    event_type: str
    user_id: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    cursor: str
    property_filters: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, event_type: _Optional[str] = ..., user_id: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cursor: _Optional[str] = ..., property_filters: _Optional[_Iterable[str]] = ...) -> None: ...

class ExportEventsResponse(_message.Message):
    __slots__ = ("event", "cursor")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    event: _event_pb2.Event
    cursor: str
    def __init__(self, event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ..., cursor: _Optional[str] = ...) -> None: ...

class TailEventsRequest(_message.Message):
    __slots__ = ("event_type", "user_id", "start_time", "cursor", "property_filters")
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    PROPERTY_FILTERS_FIELD_NUMBER: _ClassVar[int]
    event_type: str
    user_id: str
    start_time: _timestamp_pb2.Timestamp
    cursor: str
    property_filters: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, event_type: _Optional[str] = ..., user_id: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cursor: _Optional[str] = ..., property_filters: _Optional[_Iterable[str]] = ...) -> None: ...

class TailEventsResponse(_message.Message):
    __slots__ = ("event", "cursor")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    event: _event_pb2.Event
    cursor: str
    def __init__(self, event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ..., cursor: _Optional[str] = ...) -> None: ...

class CountEventsRequest(_message.Message):
    __slots__ = ("event_type", "start_time", "end_time", "min_watermark", "group_by_property", "group_limit", "measure")
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    MIN_WATERMARK_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_PROPERTY_FIELD_NUMBER: _ClassVar[int]
    GROUP_LIMIT_FIELD_NUMBER: _ClassVar[int]
    MEASURE_FIELD_NUMBER: _ClassVar[int]
    event_type: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    min_watermark: str
    group_by_property: str
    group_limit: int
    measure: Measure
    def __init__(self, event_type: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., min_watermark: _Optional[str] = ..., group_by_property: _Optional[str] = ..., group_limit: _Optional[int] = ..., measure: _Optional[_Union[Measure, str]] = ...) -> None: ...

class CountEventsResponse(_message.Message):
    __slots__ = ("count", "exact", "groups")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    count: int
    exact: bool
    groups: _containers.RepeatedCompositeFieldContainer[PropertyGroup]
    def __init__(self, count: _Optional[int] = ..., exact: _Optional[bool] = ..., groups: _Optional[_Iterable[_Union[PropertyGroup, _Mapping]]] = ...) -> None: ...

class PropertyGroup(_message.Message):
    __slots__ = ("kind", "value", "count")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    kind: PropertyGroupKind
    value: str
    count: int
    def __init__(self, kind: _Optional[_Union[PropertyGroupKind, str]] = ..., value: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class TopEventTypesRequest(_message.Message):
    __slots__ = ("start_time", "end_time", "limit", "min_watermark", "group_by_property", "group_limit")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    MIN_WATERMARK_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_PROPERTY_FIELD_NUMBER: _ClassVar[int]
    GROUP_LIMIT_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    limit: int
    min_watermark: str
    group_by_property: str
    group_limit: int
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limit: _Optional[int] = ..., min_watermark: _Optional[str] = ..., group_by_property: _Optional[str] = ..., group_limit: _Optional[int] = ...) -> None: ...

class EventTypeCount(_message.Message):
    __slots__ = ("event_type", "count", "groups")
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    event_type: str
    count: int
    groups: _containers.RepeatedCompositeFieldContainer[PropertyGroup]
    def __init__(self, event_type: _Optional[str] = ..., count: _Optional[int] = ..., groups: _Optional[_Iterable[_Union[PropertyGroup, _Mapping]]] = ...) -> None: ...

class TopEventTypesResponse(_message.Message):
    __slots__ = ("event_types",)
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    event_types: _containers.RepeatedCompositeFieldContainer[EventTypeCount]
    def __init__(self, event_types: _Optional[_Iterable[_Union[EventTypeCount, _Mapping]]] = ...) -> None: ...

class EventTimeseriesRequest(_message.Message):
    __slots__ = ("event_type", "start_time", "end_time", "interval", "min_watermark", "group_by_property", "group_limit", "measure")
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    MIN_WATERMARK_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_PROPERTY_FIELD_NUMBER: _ClassVar[int]
    GROUP_LIMIT_FIELD_NUMBER: _ClassVar[int]
    MEASURE_FIELD_NUMBER: _ClassVar[int]
    event_type: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    interval: Interval
    min_watermark: str
    group_by_property: str
    group_limit: int
    measure: Measure
    def __init__(self, event_type: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., interval: _Optional[_Union[Interval, str]] = ..., min_watermark: _Optional[str] = ..., group_by_property: _Optional[str] = ..., group_limit: _Optional[int] = ..., measure: _Optional[_Union[Measure, str]] = ...) -> None: ...

class TimeseriesBucket(_message.Message):
    __slots__ = ("start_time", "count", "groups")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    count: int
    groups: _containers.RepeatedCompositeFieldContainer[PropertyGroup]
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., count: _Optional[int] = ..., groups: _Optional[_Iterable[_Union[PropertyGroup, _Mapping]]] = ...) -> None: ...

class EventTimeseriesResponse(_message.Message):
    __slots__ = ("buckets", "exact")
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    buckets: _containers.RepeatedCompositeFieldContainer[TimeseriesBucket]
    exact: bool
    def __init__(self, buckets: _Optional[_Iterable[_Union[TimeseriesBucket, _Mapping]]] = ..., exact: _Optional[bool] = ...) -> None: ...

class FunnelRequest(_message.Message):
    __slots__ = ("steps", "conversion_window", "start_time", "end_time", "property_filters", "min_watermark", "group_by_property", "group_limit")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    CONVERSION_WINDOW_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PROPERTY_FILTERS_FIELD_NUMBER: _ClassVar[int]
    MIN_WATERMARK_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_PROPERTY_FIELD_NUMBER: _ClassVar[int]
    GROUP_LIMIT_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedScalarFieldContainer[str]
    conversion_window: _duration_pb2.Duration
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    property_filters: _containers.RepeatedScalarFieldContainer[str]
    min_watermark: str
    group_by_property: str
    group_limit: int
    def __init__(self, steps: _Optional[_Iterable[str]] = ..., conversion_window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., property_filters: _Optional[_Iterable[str]] = ..., min_watermark: _Optional[str] = ..., group_by_property: _Optional[str] = ..., group_limit: _Optional[int] = ...) -> None: ...

class FunnelStep(_message.Message):
    __slots__ = ("event_type", "users")
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    event_type: str
    users: int
    def __init__(self, event_type: _Optional[str] = ..., users: _Optional[int] = ...) -> None: ...

class FunnelGroup(_message.Message):
    __slots__ = ("kind", "value", "steps")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    kind: PropertyGroupKind
    value: str
    steps: _containers.RepeatedCompositeFieldContainer[FunnelStep]
    def __init__(self, kind: _Optional[_Union[PropertyGroupKind, str]] = ..., value: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[FunnelStep, _Mapping]]] = ...) -> None: ...

class FunnelResponse(_message.Message):
    __slots__ = ("steps", "groups")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedCompositeFieldContainer[FunnelStep]
    groups: _containers.RepeatedCompositeFieldContainer[FunnelGroup]
    def __init__(self, steps: _Optional[_Iterable[_Union[FunnelStep, _Mapping]]] = ..., groups: _Optional[_Iterable[_Union[FunnelGroup, _Mapping]]] = ...) -> None: ...

class RetentionRequest(_message.Message):
    __slots__ = ("start_event_type", "return_event_type", "interval", "start_time", "end_time", "min_watermark")
    START_EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    RETURN_EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    MIN_WATERMARK_FIELD_NUMBER: _ClassVar[int]
    start_event_type: str
    return_event_type: str
    interval: RetentionInterval
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    min_watermark: str
    def __init__(self, start_event_type: _Optional[str] = ..., return_event_type: _Optional[str] = ..., interval: _Optional[_Union[RetentionInterval, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., min_watermark: _Optional[str] = ...) -> None: ...

class RetentionCohort(_message.Message):
    __slots__ = ("start_time", "users", "returned")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    RETURNED_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    users: int
    returned: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., users: _Optional[int] = ..., returned: _Optional[_Iterable[int]] = ...) -> None: ...

class RetentionResponse(_message.Message):
    __slots__ = ("cohorts",)
    COHORTS_FIELD_NUMBER: _ClassVar[int]
    cohorts: _containers.RepeatedCompositeFieldContainer[RetentionCohort]
    def __init__(self, cohorts: _Optional[_Iterable[_Union[RetentionCohort, _Mapping]]] = ...) -> None: ...

class SearchEventsRequest(_message.Message):
    __slots__ = ("query", "start_time", "end_time", "event_type", "user_id", "property_filters", "page_size", "page_token")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PROPERTY_FILTERS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    query: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    event_type: str
    user_id: str
    property_filters: _containers.RepeatedScalarFieldContainer[str]
    page_size: int
    page_token: str
    def __init__(self, query: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event_type: _Optional[str] = ..., user_id: _Optional[str] = ..., property_filters: _Optional[_Iterable[str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class SearchEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_event_pb2.Event]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[_event_pb2.Event, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

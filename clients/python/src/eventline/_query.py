"""Query helpers shared by `Client` and `AsyncClient`: request messages built from Python
arguments, responses turned into plain Python values, and the resume logic of export and
tail streams."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, Union

import grpc
from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

from eventline._events import MAX_EVENT_TYPE_CHARS, check_text, from_timestamp, to_timestamp
from eventline._retry import Backoff, retry_delay
from eventline.v1 import event_pb2, query_pb2

logger = logging.getLogger("eventline")

PropertyFilters = Union[Mapping[str, Any], Sequence[str], None]

INTERVALS = {
    "minute": query_pb2.INTERVAL_MINUTE,
    "hour": query_pb2.INTERVAL_HOUR,
    "day": query_pb2.INTERVAL_DAY,
}

#: What a count or a series counts: events, or the distinct user_id values among them.
MeasureName = Literal["events", "unique_users"]
MEASURES = {
    "events": query_pb2.MEASURE_EVENTS,
    "unique_users": query_pb2.MEASURE_UNIQUE_USERS,
}

#: The width of a retention cohort: a UTC day, or 7 UTC days from the window's first day.
RetentionIntervalName = Literal["day", "week"]
RETENTION_INTERVALS = {
    "day": query_pb2.RETENTION_INTERVAL_DAY,
    "week": query_pb2.RETENTION_INTERVAL_WEEK,
}

#: Which events (or funnel users) a `PropertyGroup` holds: those whose property has the
#: group's `value`, those without the property, or those whose value is not among the
#: `group_limit` most frequent ones.
GroupKind = Literal["value", "missing", "other"]
GROUP_KINDS: Dict[int, GroupKind] = {
    query_pb2.PROPERTY_GROUP_KIND_VALUE: "value",
    query_pb2.PROPERTY_GROUP_KIND_MISSING: "missing",
    query_pb2.PROPERTY_GROUP_KIND_OTHER: "other",
}

# The server's limits (crates/eventline-core/src/query.rs and breakdown.rs), checked here
# so a request it would refuse raises in the caller, naming the argument.
MAX_TOP_LIMIT = 1000
MAX_GROUP_LIMIT = 100
MAX_PROPERTY_CHARS = 128
MIN_FUNNEL_STEPS = 2
MAX_FUNNEL_STEPS = 10
MAX_CONVERSION_WINDOW = timedelta(days=90)

# Worth reopening an export or tail for; anything else is the caller's to see.
RESUMABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.ABORTED,
    }
)


@dataclass(frozen=True)
class Event:
    """A stored event. Times are aware UTC datetimes; `cursor` (exports and tails) resumes
    a stream right after this event."""

    event_id: str
    event_type: str
    user_id: Optional[str]
    session_id: Optional[str]
    timestamp: datetime
    properties: Dict[str, Any]
    received_at: Optional[datetime]
    client_timestamp: Optional[datetime]
    cursor: Optional[str] = None


@dataclass(frozen=True)
class PropertyGroup:
    """The part of a count whose `group_by_property` had one value.

    `kind` is "value" (events whose property equals `value`), "missing" (events without
    the property) or "other" (values beyond the `group_limit` most frequent ones).
    `value` is the property's JSON value as Python (`"pro"`, `5`, `True`, `None`,
    `{"a": 1}`) for kind "value", and None for the other kinds. Values compare as JSON:
    the string "5" and the number 5 are two groups."""

    kind: GroupKind
    value: Any
    count: int


@dataclass(frozen=True)
class EventCount:
    """The answer of `Client.count`: the number of events (or unique users), whether
    that number is exact (unique users over more than 100,000 events are estimated), and
    with `group_by_property` the count per value: the largest first (ties by value),
    then "missing", then "other"; empty groups left out."""

    count: int
    exact: bool = True
    groups: Tuple[PropertyGroup, ...] = ()


@dataclass(frozen=True)
class EventTypeCount:
    """One event type and its count; with `group_by_property`, the count per value,
    ordered as `EventCount.groups`."""

    event_type: str
    count: int
    groups: Tuple[PropertyGroup, ...] = ()


@dataclass(frozen=True)
class Bucket:
    """One time-series bucket: its aligned UTC start and its count (events or unique
    users); with `group_by_property`, the count per group, the same groups in the same
    order in every bucket of a series, zeros included."""

    start_time: datetime
    count: int
    groups: Tuple[PropertyGroup, ...] = ()


@dataclass(frozen=True)
class Timeseries:
    """The answer of `Client.series`: every bucket of the window, oldest first, empty
    ones with count 0, and whether every count is exact (see `EventCount.exact`)."""

    buckets: Tuple[Bucket, ...]
    exact: bool = True


@dataclass(frozen=True)
class FunnelStep:
    """One funnel step: its event type and the users who reached it (and every step
    before it)."""

    event_type: str
    users: int


@dataclass(frozen=True)
class FunnelGroup:
    """The funnel of the users whose entering event had one value of the
    `group_by_property` (kind and value as in `PropertyGroup`)."""

    kind: GroupKind
    value: Any
    steps: Tuple[FunnelStep, ...]


@dataclass(frozen=True)
class Funnel:
    """The answer of `Client.funnel`: one `FunnelStep` per requested step, in order, and
    with `group_by_property` one `FunnelGroup` per value (the most entering users first,
    ties by value, then "missing", then "other"), whose steps add up to `steps`."""

    steps: Tuple[FunnelStep, ...]
    groups: Tuple[FunnelGroup, ...] = ()

    @property
    def conversion(self) -> float:
        """The share of entering users who reached the last step (0.0 when none entered)."""
        entered = self.steps[0].users if self.steps else 0
        return self.steps[-1].users / entered if entered else 0.0


@dataclass(frozen=True)
class RetentionCohort:
    """The users whose first start event fell in the interval beginning at `start_time`
    (UTC), and `returned[i]`: how many of them did the return event `i` intervals after
    their own (`returned[0]` is the cohort's own interval), up to the window's last
    interval."""

    start_time: datetime
    users: int
    returned: Tuple[int, ...]


def timestamp(field: str, value: Optional[datetime]) -> Optional[timestamp_pb2.Timestamp]:
    if value is None:
        return None
    seconds, nanos = to_timestamp(field, value)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def property_filters(filters: PropertyFilters) -> List[str]:
    """`{"plan": "pro", "seats": 5}` or `["plan=pro"]` as the API's "key=value" strings."""
    if filters is None:
        return []
    if isinstance(filters, Mapping):
        return [
            f"{key}={value if isinstance(value, str) else json.dumps(value)}"
            for key, value in filters.items()
        ]
    if isinstance(filters, str):
        raise TypeError("property_filters: a mapping or a list of 'key=value' strings, not a str")
    return list(filters)


def interval(value: str) -> Any:
    try:
        return INTERVALS[value]
    except KeyError:
        raise ValueError(f"interval: one of {sorted(INTERVALS)}, got {value!r}") from None


def _plain(value: Any) -> Any:
    # Struct numbers are doubles; integral ones come back as int, as the server's JSON has them.
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def properties_dict(properties: struct_pb2.Struct) -> Dict[str, Any]:
    return _plain(json_format.MessageToDict(properties))


def to_event(message: event_pb2.Event, cursor: Optional[str] = None) -> Event:
    return Event(
        event_id=message.event_id,
        event_type=message.event_type,
        user_id=message.user_id or None,
        session_id=message.session_id or None,
        timestamp=from_timestamp(message.timestamp),
        properties=properties_dict(message.properties),
        received_at=from_timestamp(message.received_at) if message.HasField("received_at") else None,
        client_timestamp=(
            from_timestamp(message.client_timestamp)
            if message.HasField("client_timestamp")
            else None
        ),
        cursor=cursor or None,
    )


def list_request(
    event_type: Optional[str],
    user_id: Optional[str],
    start_time: Optional[datetime],
    end_time: Optional[datetime],
    filters: PropertyFilters,
    page_size: int,
    min_watermark: Optional[str],
) -> query_pb2.ListEventsRequest:
    return query_pb2.ListEventsRequest(
        event_type=event_type or "",
        user_id=user_id or "",
        start_time=timestamp("start_time", start_time),
        end_time=timestamp("end_time", end_time),
        property_filters=property_filters(filters),
        page_size=page_size,
        min_watermark=min_watermark or "",
    )


class Resume:
    """The state of an export or tail across reconnects: the last cursor, and for a tail
    that started "now", the time it started, so a reconnect before the first event
    replays from then instead of leaving a gap."""

    def __init__(
        self,
        make_request: Callable[[Optional[str], Optional[datetime]], Any],
        cursor: Optional[str],
        start_time: Optional[datetime],
        reconnect: bool,
        backoff: Backoff,
        max_retry_duration: float,
        replay_from_open: bool,
    ) -> None:
        self.cursor = cursor
        self._make_request = make_request
        self._start_time = start_time
        self._reconnect = reconnect
        self._backoff = backoff
        self._max_retry_duration = max_retry_duration
        self._replay_from_open = replay_from_open
        self._failing_since: Optional[float] = None

    def request(self) -> Any:
        if self.cursor is None and self._start_time is None and self._replay_from_open:
            self._start_time = datetime.now().astimezone()
        return self._make_request(self.cursor, self._start_time)

    def seen(self, message: Any) -> Event:
        self._backoff.reset()
        self._failing_since = None
        self.cursor = message.cursor or self.cursor
        return to_event(message.event, cursor=message.cursor)

    def delay_before_retry(self, error: grpc.RpcError) -> float:
        """The wait before reopening; raises `error` when it should not be retried."""
        code = error.code()
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if (
            not self._reconnect
            or code not in RESUMABLE_CODES
            or now - self._failing_since > self._max_retry_duration
        ):
            raise error
        delay = self._backoff.next_delay(retry_delay(error.trailing_metadata()))
        logger.warning(
            "eventline stream broken (%s: %s); resuming in %.2fs", code.name, error.details(), delay
        )
        return delay


def measure(value: str) -> Any:
    try:
        return MEASURES[value]
    except KeyError:
        raise ValueError(f"measure: one of {sorted(MEASURES)}, got {value!r}") from None


def retention_interval(value: str) -> Any:
    try:
        return RETENTION_INTERVALS[value]
    except KeyError:
        raise ValueError(f"interval: one of {sorted(RETENTION_INTERVALS)}, got {value!r}") from None


def window(
    start_time: Optional[datetime], end_time: Optional[datetime]
) -> Tuple[Optional[timestamp_pb2.Timestamp], Optional[timestamp_pb2.Timestamp]]:
    """The window's timestamps; [start_time, end_time) must not be empty."""
    start = timestamp("start_time", start_time)
    end = timestamp("end_time", end_time)
    if start is not None and end is not None and (start.seconds, start.nanos) >= (end.seconds, end.nanos):
        raise ValueError("start_time: must be before end_time")
    return start, end


def optional_event_type(field: str, value: Optional[str]) -> str:
    return "" if value is None or value == "" else check_text(field, value, 1, MAX_EVENT_TYPE_CHARS)


def bounded_int(field: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field}: must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{field}: must be {low} to {high}, got {value}")
    return value


def group_by(property_name: Optional[str], limit: Optional[int]) -> Tuple[str, int]:
    """(group_by_property, group_limit) as the request carries them; 0 is the default."""
    if property_name is None or property_name == "":
        if limit is not None:
            raise ValueError("group_limit: needs group_by_property")
        return "", 0
    check_text("group_by_property", property_name, 1, MAX_PROPERTY_CHARS)
    if limit is None:
        return property_name, 0
    return property_name, bounded_int("group_limit", limit, 1, MAX_GROUP_LIMIT)


def counted_groups(
    measure_name: str, property_name: Optional[str], limit: Optional[int]
) -> Tuple[Any, str, int]:
    """The measure and the breakdown of a count or a series, which do not combine."""
    measure_value = measure(measure_name)
    property_name, limit = group_by(property_name, limit)
    if property_name and measure_value == query_pb2.MEASURE_UNIQUE_USERS:
        raise ValueError("group_by_property: cannot be combined with measure='unique_users'")
    return measure_value, property_name, limit


def steps(value: Sequence[str]) -> List[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"steps: must be a sequence of event types, got {type(value).__name__}")
    if not MIN_FUNNEL_STEPS <= len(value) <= MAX_FUNNEL_STEPS:
        raise ValueError(
            f"steps: must hold {MIN_FUNNEL_STEPS} to {MAX_FUNNEL_STEPS} event types, got {len(value)}"
        )
    return [check_text(f"steps[{index}]", step, 1, MAX_EVENT_TYPE_CHARS) for index, step in enumerate(value)]


def conversion_window(value: Optional[timedelta]) -> Optional[duration_pb2.Duration]:
    if value is None:
        return None
    if not isinstance(value, timedelta):
        raise TypeError(f"conversion_window: must be a datetime.timedelta, got {type(value).__name__}")
    if not timedelta(0) < value <= MAX_CONVERSION_WINDOW:
        raise ValueError(f"conversion_window: must be more than 0 and at most 90 days, got {value}")
    duration = duration_pb2.Duration()
    duration.FromTimedelta(value)
    return duration


def group_value(kind: GroupKind, text: str) -> Any:
    return json.loads(text) if kind == "value" and text else None


def property_groups(groups: Sequence[query_pb2.PropertyGroup]) -> Tuple[PropertyGroup, ...]:
    result = []
    for group in groups:
        kind = GROUP_KINDS.get(group.kind)
        if kind is None:
            raise ValueError(f"the server sent a group of unknown kind {group.kind}")
        result.append(PropertyGroup(kind, group_value(kind, group.value), int(group.count)))
    return tuple(result)


def count_request(
    event_type: Optional[str],
    start_time: Optional[datetime],
    end_time: Optional[datetime],
    min_watermark: Optional[str],
    measure_name: str = "events",
    group_by_property: Optional[str] = None,
    group_limit: Optional[int] = None,
) -> query_pb2.CountEventsRequest:
    measure_value, property_name, limit = counted_groups(measure_name, group_by_property, group_limit)
    start, end = window(start_time, end_time)
    return query_pb2.CountEventsRequest(
        event_type=optional_event_type("event_type", event_type),
        start_time=start,
        end_time=end,
        min_watermark=min_watermark or "",
        measure=measure_value,
        group_by_property=property_name,
        group_limit=limit,
    )


def count_result(response: query_pb2.CountEventsResponse) -> EventCount:
    return EventCount(int(response.count), response.exact, property_groups(response.groups))


def top_request(
    start_time: Optional[datetime],
    end_time: Optional[datetime],
    limit: int,
    min_watermark: Optional[str],
    group_by_property: Optional[str] = None,
    group_limit: Optional[int] = None,
) -> query_pb2.TopEventTypesRequest:
    property_name, groups = group_by(group_by_property, group_limit)
    start, end = window(start_time, end_time)
    return query_pb2.TopEventTypesRequest(
        start_time=start,
        end_time=end,
        limit=bounded_int("limit", limit, 1, MAX_TOP_LIMIT),
        min_watermark=min_watermark or "",
        group_by_property=property_name,
        group_limit=groups,
    )


def top_result(response: query_pb2.TopEventTypesResponse) -> List[EventTypeCount]:
    return [
        EventTypeCount(item.event_type, int(item.count), property_groups(item.groups))
        for item in response.event_types
    ]


def timeseries_request(
    interval_name: str,
    event_type: Optional[str],
    start_time: Optional[datetime],
    end_time: Optional[datetime],
    min_watermark: Optional[str],
    measure_name: str = "events",
    group_by_property: Optional[str] = None,
    group_limit: Optional[int] = None,
) -> query_pb2.EventTimeseriesRequest:
    measure_value, property_name, limit = counted_groups(measure_name, group_by_property, group_limit)
    start, end = window(start_time, end_time)
    return query_pb2.EventTimeseriesRequest(
        interval=interval(interval_name),
        event_type=optional_event_type("event_type", event_type),
        start_time=start,
        end_time=end,
        min_watermark=min_watermark or "",
        measure=measure_value,
        group_by_property=property_name,
        group_limit=limit,
    )


def timeseries_result(response: query_pb2.EventTimeseriesResponse) -> Timeseries:
    return Timeseries(
        tuple(
            Bucket(from_timestamp(bucket.start_time), int(bucket.count), property_groups(bucket.groups))
            for bucket in response.buckets
        ),
        response.exact,
    )


def funnel_request(
    step_types: Sequence[str],
    window_length: Optional[timedelta],
    start_time: Optional[datetime],
    end_time: Optional[datetime],
    filters: PropertyFilters,
    group_by_property: Optional[str],
    group_limit: Optional[int],
    min_watermark: Optional[str],
) -> query_pb2.FunnelRequest:
    checked_steps = steps(step_types)
    duration = conversion_window(window_length)
    property_name, limit = group_by(group_by_property, group_limit)
    start, end = window(start_time, end_time)
    return query_pb2.FunnelRequest(
        steps=checked_steps,
        conversion_window=duration,
        start_time=start,
        end_time=end,
        property_filters=property_filters(filters),
        min_watermark=min_watermark or "",
        group_by_property=property_name,
        group_limit=limit,
    )


def funnel_steps(items: Sequence[query_pb2.FunnelStep]) -> Tuple[FunnelStep, ...]:
    return tuple(FunnelStep(step.event_type, int(step.users)) for step in items)


def funnel_result(response: query_pb2.FunnelResponse) -> Funnel:
    groups = []
    for group in response.groups:
        kind = GROUP_KINDS.get(group.kind)
        if kind is None:
            raise ValueError(f"the server sent a group of unknown kind {group.kind}")
        groups.append(FunnelGroup(kind, group_value(kind, group.value), funnel_steps(group.steps)))
    return Funnel(funnel_steps(response.steps), tuple(groups))


def retention_request(
    start_event_type: str,
    return_event_type: str,
    interval_name: str,
    start_time: Optional[datetime],
    end_time: Optional[datetime],
    min_watermark: Optional[str],
) -> query_pb2.RetentionRequest:
    check_text("start_event_type", start_event_type, 1, MAX_EVENT_TYPE_CHARS)
    check_text("return_event_type", return_event_type, 1, MAX_EVENT_TYPE_CHARS)
    interval_value = retention_interval(interval_name)
    start, end = window(start_time, end_time)
    return query_pb2.RetentionRequest(
        start_event_type=start_event_type,
        return_event_type=return_event_type,
        interval=interval_value,
        start_time=start,
        end_time=end,
        min_watermark=min_watermark or "",
    )


def retention_result(response: query_pb2.RetentionResponse) -> List[RetentionCohort]:
    return [
        RetentionCohort(
            from_timestamp(cohort.start_time), int(cohort.users), tuple(int(n) for n in cohort.returned)
        )
        for cohort in response.cohorts
    ]


RequestFactory = Callable[[Optional[str], Optional[datetime]], Any]


def export_requests(
    event_type: Optional[str],
    user_id: Optional[str],
    end_time: Optional[datetime],
    filters: PropertyFilters,
) -> RequestFactory:
    """Builds the ExportEvents request for a (cursor, start_time) resume position."""
    filter_strings = property_filters(filters)
    end = timestamp("end_time", end_time)

    def make(cursor: Optional[str], start_time: Optional[datetime]) -> query_pb2.ExportEventsRequest:
        return query_pb2.ExportEventsRequest(
            event_type=event_type or "",
            user_id=user_id or "",
            start_time=timestamp("start_time", start_time),
            end_time=end,
            cursor=cursor or "",
            property_filters=filter_strings,
        )

    return make


def tail_requests(
    event_type: Optional[str], user_id: Optional[str], filters: PropertyFilters
) -> RequestFactory:
    """Builds the TailEvents request for a (cursor, start_time) resume position."""
    filter_strings = property_filters(filters)

    def make(cursor: Optional[str], start_time: Optional[datetime]) -> query_pb2.TailEventsRequest:
        return query_pb2.TailEventsRequest(
            event_type=event_type or "",
            user_id=user_id or "",
            start_time=timestamp("start_time", start_time),
            cursor=cursor or "",
            property_filters=filter_strings,
        )

    return make

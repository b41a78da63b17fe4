"""Query helpers shared by `Client` and `AsyncClient`: request messages built from Python
arguments, responses turned into plain Python values, and the resume logic of export and
tail streams."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import grpc
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from eventline._events import from_timestamp, to_timestamp
from eventline._retry import Backoff, retry_delay
from eventline.v1 import event_pb2, query_pb2

logger = logging.getLogger("eventline")

PropertyFilters = Union[Mapping[str, Any], Sequence[str], None]

INTERVALS = {
    "minute": query_pb2.INTERVAL_MINUTE,
    "hour": query_pb2.INTERVAL_HOUR,
    "day": query_pb2.INTERVAL_DAY,
}

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
class EventTypeCount:
    event_type: str
    count: int


@dataclass(frozen=True)
class Bucket:
    """One time-series bucket: its aligned UTC start and its count."""

    start_time: datetime
    count: int


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


def count_request(
    event_type: Optional[str],
    start_time: Optional[datetime],
    end_time: Optional[datetime],
    min_watermark: Optional[str],
) -> query_pb2.CountEventsRequest:
    return query_pb2.CountEventsRequest(
        event_type=event_type or "",
        start_time=timestamp("start_time", start_time),
        end_time=timestamp("end_time", end_time),
        min_watermark=min_watermark or "",
    )


def top_request(
    start_time: Optional[datetime],
    end_time: Optional[datetime],
    limit: int,
    min_watermark: Optional[str],
) -> query_pb2.TopEventTypesRequest:
    return query_pb2.TopEventTypesRequest(
        start_time=timestamp("start_time", start_time),
        end_time=timestamp("end_time", end_time),
        limit=limit,
        min_watermark=min_watermark or "",
    )


def top_result(response: query_pb2.TopEventTypesResponse) -> List[EventTypeCount]:
    return [EventTypeCount(item.event_type, int(item.count)) for item in response.event_types]


def timeseries_request(
    interval_name: str,
    event_type: Optional[str],
    start_time: Optional[datetime],
    end_time: Optional[datetime],
    min_watermark: Optional[str],
) -> query_pb2.EventTimeseriesRequest:
    return query_pb2.EventTimeseriesRequest(
        interval=interval(interval_name),
        event_type=event_type or "",
        start_time=timestamp("start_time", start_time),
        end_time=timestamp("end_time", end_time),
        min_watermark=min_watermark or "",
    )


def timeseries_result(response: query_pb2.EventTimeseriesResponse) -> List[Bucket]:
    return [Bucket(from_timestamp(bucket.start_time), int(bucket.count)) for bucket in response.buckets]


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

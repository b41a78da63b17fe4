"""`eventline.Client`: the synchronous client. `track()` feeds the producer; the query
methods are blocking calls and iterators."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any, Iterator, List, Optional, Sequence

import grpc

from eventline import _query
from eventline._base import ClientCore
from eventline._options import Counts
from eventline._query import (
    Bucket,
    Event,
    EventCount,
    EventTypeCount,
    Funnel,
    MeasureName,
    PropertyFilters,
    RetentionCohort,
    RetentionIntervalName,
    Timeseries,
)
from eventline.v1 import query_pb2_grpc

logger = logging.getLogger("eventline")


class EventStream:
    """An export or tail as an iterator of `Event`s that reopens itself after a broken
    connection, resuming right after the last event it returned. `cursor` is that
    position: pass it as `cursor=` to continue in another process."""

    def __init__(self, open_call: Any, resume: _query.Resume) -> None:
        self._open_call = open_call
        self._resume = resume
        self._call: Any = None
        self._closed = False

    @property
    def cursor(self) -> Optional[str]:
        return self._resume.cursor

    def __iter__(self) -> "EventStream":
        return self

    def __next__(self) -> Event:
        while not self._closed:
            if self._call is None:
                self._call = self._open_call(self._resume.request())
            try:
                message = next(self._call)
            except StopIteration:
                self._closed = True
                break
            except grpc.RpcError as error:
                if self._closed:
                    break
                self._call = None
                time.sleep(self._resume.delay_before_retry(error))
                continue
            return self._resume.seen(message)
        raise StopIteration

    def close(self) -> None:
        """Cancels the stream; iteration ends."""
        self._closed = True
        if self._call is not None:
            self._call.cancel()

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class Client(ClientCore):
    """A synchronous eventline client: `Client("localhost:50051", api_key="elk_...")`.
    Arguments are described on `ClientCore`."""

    def _query_stub(self) -> query_pb2_grpc.QueryServiceStub:
        return query_pb2_grpc.QueryServiceStub(self._sender_channel.get())

    def _unary(self, method: str, request: Any) -> Any:
        return getattr(self._query_stub(), method)(
            request, metadata=self._connection.metadata, timeout=self._connection.timeout
        )

    # -- producer ----------------------------------------------------------------------

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Waits until every event tracked before the call is acknowledged; False when the
        timeout came first."""
        return self._producer.flush(timeout)

    def shutdown(self, timeout: Optional[float] = None) -> Counts:
        """Flushes, stops the sender and returns the final counts; events still
        unacknowledged at the timeout are counted as failed."""
        return self._producer.shutdown(timeout)

    # -- queries -----------------------------------------------------------------------

    def list_events(
        self,
        event_type: Optional[str] = None,
        user_id: Optional[str] = None,
        start_time: Optional[datetime] = None,
        end_time: Optional[datetime] = None,
        property_filters: PropertyFilters = None,
        page_size: int = 100,
        min_watermark: Optional[str] = None,
    ) -> Iterator[Event]:
        """Every matching event, newest first, fetched page by page as iteration goes."""
        request = _query.list_request(
            event_type, user_id, start_time, end_time, property_filters, page_size, min_watermark
        )
        while True:
            page = self._unary("ListEvents", request)
            for message in page.events:
                yield _query.to_event(message)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def count_events(
        self,
        event_type: Optional[str] = None,
        start_time: Optional[datetime] = None,
        end_time: Optional[datetime] = None,
        min_watermark: Optional[str] = None,
        *,
        measure: MeasureName = "events",
    ) -> int:
        """The number of matching events in [start_time, end_time) (default: 30 days), or
        with `measure="unique_users"` of distinct users among them; see `count`."""
        request = _query.count_request(event_type, start_time, end_time, min_watermark, measure)
        return int(self._unary("CountEvents", request).count)

    def count(
        self,
        event_type: Optional[str] = None,
        start_time: Optional[datetime] = None,
        end_time: Optional[datetime] = None,
        *,
        measure: MeasureName = "events",
        group_by_property: Optional[str] = None,
        group_limit: Optional[int] = None,
        min_watermark: Optional[str] = None,
    ) -> EventCount:
        """The count in [start_time, end_time) (default: 30 days) with whether it is exact,
        and with `group_by_property` broken down by that top-level property's value
        (`group_limit` values, 1 to 100, default 10, get a group of their own).

        `measure` is "events" or "unique_users" (distinct user_id values; events without
        one are left out; estimated, `exact=False`, over more than 100,000 events); a
        breakdown counts events only."""
        request = _query.count_request(
            event_type, start_time, end_time, min_watermark, measure, group_by_property, group_limit
        )
        return _query.count_result(self._unary("CountEvents", request))

    def top_event_types(
        self,
        start_time: Optional[datetime] = None,
        end_time: Optional[datetime] = None,
        limit: int = 10,
        min_watermark: Optional[str] = None,
        *,
        group_by_property: Optional[str] = None,
        group_limit: Optional[int] = None,
    ) -> List[EventTypeCount]:
        """The `limit` (1 to 1000) most frequent event types, by descending count, ties by
        name; with `group_by_property`, each type's count per value (see `count`)."""
        request = _query.top_request(
            start_time, end_time, limit, min_watermark, group_by_property, group_limit
        )
        return _query.top_result(self._unary("TopEventTypes", request))

    def timeseries(
        self,
        interval: str = "hour",
        event_type: Optional[str] = None,
        start_time: Optional[datetime] = None,
        end_time: Optional[datetime] = None,
        min_watermark: Optional[str] = None,
        *,
        measure: MeasureName = "events",
        group_by_property: Optional[str] = None,
        group_limit: Optional[int] = None,
    ) -> List[Bucket]:
        """Counts per UTC `interval` ("minute", "hour" or "day"), empty buckets included;
        the buckets of `series`."""
        return list(
            self.series(
                interval, event_type, start_time, end_time, measure=measure,
                group_by_property=group_by_property, group_limit=group_limit,
                min_watermark=min_watermark,
            ).buckets
        )

    def series(
        self,
        interval: str = "hour",
        event_type: Optional[str] = None,
        start_time: Optional[datetime] = None,
        end_time: Optional[datetime] = None,
        *,
        measure: MeasureName = "events",
        group_by_property: Optional[str] = None,
        group_limit: Optional[int] = None,
        min_watermark: Optional[str] = None,
    ) -> Timeseries:
        """Counts per UTC `interval` ("minute", "hour" or "day"), the first bucket holding
        start_time, empty buckets 0, with whether every count is exact. `measure` and
        `group_by_property` as in `count`: unique users are counted per bucket, and a
        breakdown lists the same groups (the window's most frequent values) in every
        bucket."""
        request = _query.timeseries_request(
            interval, event_type, start_time, end_time, min_watermark, measure,
            group_by_property, group_limit,
        )
        return _query.timeseries_result(self._unary("EventTimeseries", request))

    def funnel(
        self,
        steps: Sequence[str],
        conversion_window: Optional[timedelta] = None,
        start_time: Optional[datetime] = None,
        end_time: Optional[datetime] = None,
        *,
        property_filters: PropertyFilters = None,
        group_by_property: Optional[str] = None,
        group_limit: Optional[int] = None,
        min_watermark: Optional[str] = None,
    ) -> Funnel:
        """The users who went through `steps` (2 to 10 event types) in order.

        A user enters at their first `steps[0]` event in [start_time, end_time) (default:
        30 days); each next step is a later (or simultaneous) event of its type, at most
        `conversion_window` (default 30 days, at most 90) after entering, possibly after
        end_time. Events without a user_id are left out. `property_filters` applies to
        every step's events; `group_by_property` splits the funnel by that property of
        each user's entering event."""
        request = _query.funnel_request(
            steps, conversion_window, start_time, end_time, property_filters,
            group_by_property, group_limit, min_watermark,
        )
        return _query.funnel_result(self._unary("Funnel", request))

    def retention(
        self,
        start_event_type: str,
        return_event_type: str,
        interval: RetentionIntervalName = "day",
        start_time: Optional[datetime] = None,
        end_time: Optional[datetime] = None,
        *,
        min_watermark: Optional[str] = None,
    ) -> List[RetentionCohort]:
        """One cohort per `interval` ("day" or "week", counted from start_time rounded
        down to a UTC day) of [start_time, end_time) (default: 30 days), oldest first:
        the users whose first `start_event_type` event fell in it, and per interval from
        theirs to the last, how many did `return_event_type` in it (in their own
        interval, at or after that first start event). Events without a user_id are left
        out."""
        request = _query.retention_request(
            start_event_type, return_event_type, interval, start_time, end_time, min_watermark
        )
        return _query.retention_result(self._unary("Retention", request))

    def export(
        self,
        event_type: Optional[str] = None,
        user_id: Optional[str] = None,
        start_time: Optional[datetime] = None,
        end_time: Optional[datetime] = None,
        property_filters: PropertyFilters = None,
        cursor: Optional[str] = None,
        reconnect: bool = True,
    ) -> EventStream:
        """Every matching event, oldest first; resumes by itself after a broken
        connection, and from `cursor` when given."""
        requests = _query.export_requests(event_type, user_id, end_time, property_filters)
        return self._stream("ExportEvents", requests, cursor, start_time, reconnect, False)

    def tail(
        self,
        event_type: Optional[str] = None,
        user_id: Optional[str] = None,
        start_time: Optional[datetime] = None,
        property_filters: PropertyFilters = None,
        cursor: Optional[str] = None,
        reconnect: bool = True,
    ) -> EventStream:
        """Events from `cursor` or `start_time` (default: now), then live ones as they
        commit, without a gap or a repeat, across reconnects. Runs until closed."""
        requests = _query.tail_requests(event_type, user_id, property_filters)
        return self._stream("TailEvents", requests, cursor, start_time, reconnect, True)

    def _stream(
        self,
        method: str,
        requests: _query.RequestFactory,
        cursor: Optional[str],
        start_time: Optional[datetime],
        reconnect: bool,
        replay_from_open: bool,
    ) -> EventStream:
        resume = self._resume(requests, cursor, start_time, reconnect, replay_from_open)

        def open_call(request: Any) -> Any:
            return getattr(self._query_stub(), method)(request, metadata=self._connection.metadata)

        return EventStream(open_call, resume)

    # -- lifecycle ---------------------------------------------------------------------

    def close(self, timeout: Optional[float] = None) -> Counts:
        """Shuts the producer down (see `shutdown`) and closes the channel."""
        counts = self.shutdown(self._options.shutdown_timeout if timeout is None else timeout)
        self._sender_channel.close()
        return counts

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

"""`eventline.AsyncClient`: the same constructor and method names as `Client`, with the
queries on `grpc.aio`. `track()` stays a plain call that returns at once; the producer's
sender is the same daemon thread as in `Client`, so `flush` and `shutdown` are awaited
without blocking the event loop."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any, AsyncIterator, List, Optional, Sequence

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


class AsyncEventStream:
    """An export or tail as an async iterator of `Event`s; see `EventStream`."""

    def __init__(self, open_call: Any, resume: _query.Resume) -> None:
        self._open_call = open_call
        self._resume = resume
        self._call: Any = None
        self._closed = False

    @property
    def cursor(self) -> Optional[str]:
        return self._resume.cursor

    def __aiter__(self) -> "AsyncEventStream":
        return self

    async def __anext__(self) -> Event:
        while not self._closed:
            if self._call is None:
                self._call = self._open_call(self._resume.request())
            try:
                message = await self._call.read()
            except grpc.RpcError as error:
                if self._closed:
                    break
                self._call = None
                await asyncio.sleep(self._resume.delay_before_retry(error))
                continue
            if message is grpc.aio.EOF:
                self._closed = True
                break
            return self._resume.seen(message)
        raise StopAsyncIteration

    def close(self) -> None:
        """Cancels the stream; iteration ends."""
        self._closed = True
        if self._call is not None:
            self._call.cancel()

    async def __aenter__(self) -> "AsyncEventStream":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.close()


class AsyncClient(ClientCore):
    """An asyncio eventline client with the arguments and method names of `Client`."""

    _channel: Optional[grpc.aio.Channel] = None

    def _query_stub(self) -> query_pb2_grpc.QueryServiceStub:
        # grpc.aio channels belong to the event loop that creates them: open on first use.
        if self._channel is None:
            self._channel = self._connection.aio_channel()
        return query_pb2_grpc.QueryServiceStub(self._channel)

    async def _unary(self, method: str, request: Any) -> Any:
        return await getattr(self._query_stub(), method)(
            request, metadata=self._connection.metadata, timeout=self._connection.timeout
        )

    # -- producer ----------------------------------------------------------------------

    async def flush(self, timeout: Optional[float] = None) -> bool:
        """See `Client.flush`."""
        return await asyncio.get_running_loop().run_in_executor(None, self._producer.flush, timeout)

    async def shutdown(self, timeout: Optional[float] = None) -> Counts:
        """See `Client.shutdown`."""
        return await asyncio.get_running_loop().run_in_executor(
            None, self._producer.shutdown, timeout
        )

    # -- queries -----------------------------------------------------------------------

    async def list_events(
        self,
        event_type: Optional[str] = None,
        user_id: Optional[str] = None,
        start_time: Optional[datetime] = None,
        end_time: Optional[datetime] = None,
        property_filters: PropertyFilters = None,
        page_size: int = 100,
        min_watermark: Optional[str] = None,
    ) -> AsyncIterator[Event]:
        """Every matching event, newest first, fetched page by page as iteration goes."""
        request = _query.list_request(
            event_type, user_id, start_time, end_time, property_filters, page_size, min_watermark
        )
        while True:
            page = await self._unary("ListEvents", request)
            for message in page.events:
                yield _query.to_event(message)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    async def count_events(
        self,
        event_type: Optional[str] = None,
        start_time: Optional[datetime] = None,
        end_time: Optional[datetime] = None,
        min_watermark: Optional[str] = None,
        *,
        measure: MeasureName = "events",
    ) -> int:
        """See `Client.count_events`."""
        request = _query.count_request(event_type, start_time, end_time, min_watermark, measure)
        return int((await self._unary("CountEvents", request)).count)

    async def count(
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
        """See `Client.count`."""
        request = _query.count_request(
            event_type, start_time, end_time, min_watermark, measure, group_by_property, group_limit
        )
        return _query.count_result(await self._unary("CountEvents", request))

    async def top_event_types(
        self,
        start_time: Optional[datetime] = None,
        end_time: Optional[datetime] = None,
        limit: int = 10,
        min_watermark: Optional[str] = None,
        *,
        group_by_property: Optional[str] = None,
        group_limit: Optional[int] = None,
    ) -> List[EventTypeCount]:
        """See `Client.top_event_types`."""
        request = _query.top_request(
            start_time, end_time, limit, min_watermark, group_by_property, group_limit
        )
        return _query.top_result(await self._unary("TopEventTypes", request))

    async def timeseries(
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
        """See `Client.timeseries`."""
        series = await self.series(
            interval, event_type, start_time, end_time, measure=measure,
            group_by_property=group_by_property, group_limit=group_limit,
            min_watermark=min_watermark,
        )
        return list(series.buckets)

    async def series(
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
        """See `Client.series`."""
        request = _query.timeseries_request(
            interval, event_type, start_time, end_time, min_watermark, measure,
            group_by_property, group_limit,
        )
        return _query.timeseries_result(await self._unary("EventTimeseries", request))

    async def funnel(
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
        """See `Client.funnel`."""
        request = _query.funnel_request(
            steps, conversion_window, start_time, end_time, property_filters,
            group_by_property, group_limit, min_watermark,
        )
        return _query.funnel_result(await self._unary("Funnel", request))

    async def retention(
        self,
        start_event_type: str,
        return_event_type: str,
        interval: RetentionIntervalName = "day",
        start_time: Optional[datetime] = None,
        end_time: Optional[datetime] = None,
        *,
        min_watermark: Optional[str] = None,
    ) -> List[RetentionCohort]:
        """See `Client.retention`."""
        request = _query.retention_request(
            start_event_type, return_event_type, interval, start_time, end_time, min_watermark
        )
        return _query.retention_result(await self._unary("Retention", request))

    def export(
        self,
        event_type: Optional[str] = None,
        user_id: Optional[str] = None,
        start_time: Optional[datetime] = None,
        end_time: Optional[datetime] = None,
        property_filters: PropertyFilters = None,
        cursor: Optional[str] = None,
        reconnect: bool = True,
    ) -> AsyncEventStream:
        """See `Client.export`."""
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
    ) -> AsyncEventStream:
        """See `Client.tail`."""
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
    ) -> AsyncEventStream:
        resume = self._resume(requests, cursor, start_time, reconnect, replay_from_open)

        def open_call(request: Any) -> Any:
            return getattr(self._query_stub(), method)(request, metadata=self._connection.metadata)

        return AsyncEventStream(open_call, resume)

    # -- lifecycle ---------------------------------------------------------------------

    async def close(self, timeout: Optional[float] = None) -> Counts:
        """Shuts the producer down (see `shutdown`) and closes the channels."""
        counts = await self.shutdown(self._options.shutdown_timeout if timeout is None else timeout)
        self._sender_channel.close()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        return counts

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

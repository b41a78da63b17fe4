"""eventline: the Python SDK for eventline.

`Client` (synchronous) and `AsyncClient` (asyncio) share one producer contract, written
in clients/README.md: `track()` returns at once and never raises for the network; every
event ends up counted as accepted, duplicate, rejected, dropped or failed. The messages
generated from the protos are in `eventline.v1`.
"""

from eventline._aio import AsyncClient, AsyncEventStream
from eventline._client import Client, EventStream
from eventline._connection import VERSION as __version__
from eventline._events import uuid7
from eventline._producer import Counts, ProducerOptions, RejectedEvent, Stats
from eventline._query import Bucket, Event, EventTypeCount

__all__ = [
    "AsyncClient",
    "AsyncEventStream",
    "Bucket",
    "Client",
    "Counts",
    "Event",
    "EventStream",
    "EventTypeCount",
    "ProducerOptions",
    "RejectedEvent",
    "Stats",
    "__version__",
    "uuid7",
]

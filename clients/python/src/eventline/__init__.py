"""eventline: the Python SDK for eventline.

`Client` (synchronous) and `AsyncClient` (asyncio) share one producer contract, written
in clients/README.md: `track()` returns at once and never raises for the network; every
event ends up counted as accepted, duplicate, rejected, dropped or failed. The messages
generated from the protos are in `eventline.v1`.
"""

import os as _os

# gRPC keeps working in a forked child (gunicorn, celery) only with its fork support on,
# which it reads once, when grpc is first imported: turn it on unless the application
# chose otherwise. The producer also takes its sender out of gRPC before each fork().
_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "1")

from eventline._aio import AsyncClient, AsyncEventStream  # noqa: E402
from eventline._client import Client, EventStream  # noqa: E402
from eventline._connection import VERSION as __version__  # noqa: E402
from eventline._events import uuid7  # noqa: E402
from eventline._options import Counts, ProducerOptions, RejectedEvent, Stats  # noqa: E402
from eventline._query import (  # noqa: E402
    Bucket,
    Event,
    EventCount,
    EventTypeCount,
    Funnel,
    FunnelGroup,
    FunnelStep,
    GroupKind,
    MeasureName,
    PropertyGroup,
    RetentionCohort,
    RetentionIntervalName,
    Timeseries,
)

__all__ = [
    "AsyncClient",
    "AsyncEventStream",
    "Bucket",
    "Client",
    "Counts",
    "Event",
    "EventCount",
    "EventStream",
    "EventTypeCount",
    "Funnel",
    "FunnelGroup",
    "FunnelStep",
    "GroupKind",
    "MeasureName",
    "ProducerOptions",
    "PropertyGroup",
    "RejectedEvent",
    "RetentionCohort",
    "RetentionIntervalName",
    "Stats",
    "Timeseries",
    "__version__",
    "uuid7",
]

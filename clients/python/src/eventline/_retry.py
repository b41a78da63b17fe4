"""Retry decisions shared by the producer and the resumable streams: which status codes
are worth retrying, the server's `google.rpc.RetryInfo`, and exponential backoff with
full jitter."""

from __future__ import annotations

import random
from typing import Any, Optional, Sequence

import grpc
from google.rpc import error_details_pb2, status_pb2

# A broken connection, a restarting server, overload and a database outage.
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    }
)

_DETAILS_KEY = "grpc-status-details-bin"


def retry_delay(trailing_metadata: Optional[Sequence[Any]]) -> Optional[float]:
    """The delay of a `google.rpc.RetryInfo` in the status details trailer, in seconds."""
    for key, value in trailing_metadata or ():
        if key != _DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except Exception:  # a malformed trailer is ignored, as if absent
            return None
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


class Backoff:
    """Exponential backoff with full jitter: a random delay in [0, min(cap, base * 2^n)]."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self.attempt = 0

    def next_delay(self, server_delay: Optional[float] = None) -> float:
        ceiling = min(self.maximum, self.initial * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 62)
        jittered = random.uniform(0, ceiling)
        # The server knows when it will have room: never retry earlier than it asks.
        if server_delay is not None:
            return max(server_delay, jittered)
        return jittered

    def reset(self) -> None:
        self.attempt = 0

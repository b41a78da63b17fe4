"""Turns a `track()` call into an `eventline.v1.Event`, checking at once every limit the
server enforces (crates/eventline-core/src/validate.rs), so an event that would be
rejected raises in the caller instead of being dropped later.

Errors name the field as the server does: `event_type`, `properties.plan.tags[2]`, `event`.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Optional, Tuple

from google.protobuf import timestamp_pb2

from eventline.v1 import event_pb2

MAX_EVENT_ID_CHARS = 128
MAX_EVENT_TYPE_CHARS = 128
MAX_ID_CHARS = 256
MAX_EVENT_BYTES = 1024 * 1024
MAX_PROPERTIES_DEPTH = 10
MAX_EVENTS_PER_MESSAGE = 2000
MIN_EVENT_UNIX_SECONDS = 31_536_000  # 1971-01-01T00:00:00Z
MAX_FUTURE_SKEW_SECONDS = 3600

# Rust's char::is_control: Unicode category Cc.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def uuid7(_random_bits=random.getrandbits, _time_ns=time.time_ns) -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, version, 74 random bits.

    The random bits come from the `random` module's shared generator, seeded from the OS
    and reseeded in every forked child by Python itself, so parent and child never share
    a sequence; ids need uniqueness, not secrecy, and this is twice as fast as urandom.
    """
    millis = _time_ns() // 1_000_000
    bits = _random_bits(74)
    return "%08x-%04x-%04x-%04x-%012x" % (
        (millis >> 16) & 0xFFFF_FFFF,
        millis & 0xFFFF,
        0x7000 | (bits >> 62),
        0x8000 | ((bits >> 48) & 0x3FFF),
        bits & 0xFFFF_FFFF_FFFF,
    )


def check_text(field: str, value: Any, min_chars: int, max_chars: int) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{field}: must be a str, got {type(value).__name__}")
    if not min_chars <= len(value) <= max_chars:
        raise ValueError(f"{field}: must be {min_chars} to {max_chars} characters, got {len(value)}")
    if _CONTROL.search(value):
        raise ValueError(f"{field}: must not contain control characters")
    return value


def _optional_id(field: str, value: Optional[str]) -> str:
    if value is None or value == "":
        return ""
    return check_text(field, value, 1, MAX_ID_CHARS)


def to_timestamp(field: str, value: datetime) -> Tuple[int, int]:
    """(seconds, nanos) since the epoch; a naive datetime is taken as UTC."""
    if not isinstance(value, datetime):
        raise TypeError(f"{field}: must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    delta = value - _EPOCH
    seconds = delta.days * 86_400 + delta.seconds
    return seconds, delta.microseconds * 1000


def from_timestamp(timestamp: timestamp_pb2.Timestamp) -> datetime:
    """An aware UTC datetime (microsecond precision, as the server stores)."""
    return datetime.fromtimestamp(timestamp.seconds, timezone.utc).replace(
        microsecond=timestamp.nanos // 1000
    )


def _check_properties(value: Any, path: str, depth: int) -> int:
    """Checks one JSON-compatible value; returns an upper bound of its encoded size."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{path}: must not contain NUL characters")
        try:
            return len(value.encode("utf-8")) + 12
        except UnicodeEncodeError:
            raise ValueError(f"{path}: must be valid UTF-8 (lone surrogate)") from None
    if value is None or isinstance(value, bool):
        return 4
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{path}: must be a finite number, got {value}")
        if isinstance(value, int) and abs(value) > 1.7976931348623157e308:
            raise ValueError(f"{path}: is too large for a JSON number")
        return 12
    if isinstance(value, Mapping):
        return _check_mapping(value, path, depth + 1)
    if isinstance(value, (list, tuple)):
        if depth + 1 > MAX_PROPERTIES_DEPTH:
            raise ValueError(f"{path}: nests deeper than {MAX_PROPERTIES_DEPTH} levels")
        size = 12
        for index, item in enumerate(value):
            size += _check_properties(item, f"{path}[{index}]", depth + 1) + 12
        return size
    raise TypeError(f"{path}: {type(value).__name__} is not JSON-compatible")


def _check_mapping(mapping: Mapping, path: str, depth: int) -> int:
    if depth > MAX_PROPERTIES_DEPTH:
        raise ValueError(f"{path}: nests deeper than {MAX_PROPERTIES_DEPTH} levels")
    size = 12
    for key, item in mapping.items():
        if not isinstance(key, str):
            raise TypeError(f"{path}: keys must be str, got {type(key).__name__} {key!r}")
        if "\x00" in key:
            raise ValueError(f"{path}: keys must not contain NUL characters")
        size += len(key) * 4 + 24 + _check_properties(item, f"{path}.{key}", depth)
    return size


def _now_timestamp() -> Tuple[int, int]:
    nanos = time.time_ns()
    return nanos // 1_000_000_000, nanos % 1_000_000_000


def build_event(
    event_type: str,
    user_id: Optional[str] = None,
    properties: Optional[Mapping[str, Any]] = None,
    timestamp: Optional[datetime] = None,
    event_id: Optional[str] = None,
    session_id: Optional[str] = None,
) -> event_pb2.Event:
    """Validates one event as the server would and builds its message.

    Raises ValueError or TypeError naming the field for anything the server rejects.
    """
    check_text("event_type", event_type, 1, MAX_EVENT_TYPE_CHARS)
    if event_id is None:
        event_id = uuid7()
    else:
        check_text("event_id", event_id, 1, MAX_EVENT_ID_CHARS)
    if timestamp is None:
        seconds, nanos = _now_timestamp()
    else:
        seconds, nanos = to_timestamp("timestamp", timestamp)
        if seconds < MIN_EVENT_UNIX_SECONDS:
            raise ValueError(f"timestamp: {timestamp.isoformat()} is before 1971-01-01T00:00:00Z")
        if seconds > time.time() + MAX_FUTURE_SKEW_SECONDS:
            raise ValueError(f"timestamp: {timestamp.isoformat()} is more than 1 hour ahead")
    event = event_pb2.Event(
        event_id=event_id,
        event_type=event_type,
        user_id=_optional_id("user_id", user_id),
        session_id=_optional_id("session_id", session_id),
        timestamp=timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos),
    )
    size_bound = 0
    if properties is not None:
        if not isinstance(properties, Mapping):
            raise TypeError(
                f"properties: must be a mapping (dict), got {type(properties).__name__}"
            )
        size_bound = _check_mapping(properties, "properties", 1)
        if properties:
            event.properties.update(properties)
    # The bound is cheap and usually decides; only a large event pays for the exact size.
    if size_bound + 1024 > MAX_EVENT_BYTES and event.ByteSize() > MAX_EVENT_BYTES:
        raise ValueError(
            f"event: encoded event is {event.ByteSize()} bytes, "
            f"over the limit of {MAX_EVENT_BYTES} bytes"
        )
    return event


__all__ = ["build_event", "uuid7", "to_timestamp", "from_timestamp"]

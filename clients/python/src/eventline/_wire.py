"""How queued events go on the wire. `track()` encodes each event once, framed as an
`IngestBidiRequest.events` entry; a batch is then its header plus the framed events
joined, with no message copies in the sender thread."""

from __future__ import annotations

from typing import List, Sequence

from google.protobuf import timestamp_pb2

from eventline.v1 import event_pb2, ingest_pb2


def _now() -> timestamp_pb2.Timestamp:
    sent_at = timestamp_pb2.Timestamp()
    sent_at.GetCurrentTime()
    return sent_at


def bidi_request(sequence: int, events: Sequence[bytes]) -> bytes:
    """The encoded IngestBidiRequest: its header fields, then the framed events as they
    were queued (protobuf fields may come in any order)."""
    header = ingest_pb2.IngestBidiRequest(sequence=sequence, sent_at=_now())
    return header.SerializeToString() + b"".join(events)


_EVENTS_FIELD_TAG = 0x12  # IngestBidiRequest.events: field 2, length-delimited
_BATCH_EVENTS_FIELD_TAG = b"\x0a"  # IngestBatchRequest.events: field 1, length-delimited


def batch_request(events: Sequence[bytes]) -> bytes:
    """The batch as an encoded IngestBatchRequest (the events re-tagged as field 1)."""
    header = ingest_pb2.IngestBatchRequest(sent_at=_now()).SerializeToString()
    return header + b"".join(_BATCH_EVENTS_FIELD_TAG + framed[1:] for framed in events)


def frame_event(encoded: bytes) -> bytes:
    """`encoded` as one IngestBidiRequest.events entry: tag, varint length, bytes."""
    length = len(encoded)
    if length < 0x80:
        return bytes((_EVENTS_FIELD_TAG, length)) + encoded
    prefix = bytearray((_EVENTS_FIELD_TAG,))
    while length >= 0x80:
        prefix.append((length & 0x7F) | 0x80)
        length >>= 7
    prefix.append(length)
    return bytes(prefix) + encoded


def queued_events(framed: List[bytes]) -> List[event_pb2.Event]:
    """The events of framed queue entries, decoded (for reports and tests)."""
    return list(ingest_pb2.IngestBidiRequest.FromString(b"".join(framed)).events)


def event_type(framed: bytes) -> str:
    return queued_events([framed])[0].event_type

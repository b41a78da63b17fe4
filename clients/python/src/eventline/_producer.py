"""The producer behind `Client.track()`: a bounded queue, a daemon sender thread that
streams numbered batches over `IngestBidi`, and exact accounting of every event.

Every successful `track()` ends in exactly one of accepted, duplicates, rejected,
dropped or failed; until then it is queued or in flight. The contract is written in
clients/README.md.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional

import grpc
from google.protobuf import timestamp_pb2

from eventline._events import MAX_EVENTS_PER_MESSAGE
from eventline._retry import RETRYABLE_CODES, Backoff, retry_delay
from eventline.v1 import event_pb2, ingest_pb2

logger = logging.getLogger("eventline")

# The server takes messages up to 20 MiB; a batch stops growing before 16 MiB.
MAX_BATCH_BYTES = 16 * 1024 * 1024
# How long fork() waits for the sender to leave gRPC.
FORK_QUIESCE_TIMEOUT = 2.0
QUEUE_FULL_POLICIES = ("drop_newest", "drop_oldest")

_ACCEPTED = event_pb2.INGEST_STATUS_ACCEPTED
_DUPLICATE = event_pb2.INGEST_STATUS_DUPLICATE
_REJECTED = event_pb2.INGEST_STATUS_REJECTED


@dataclass(frozen=True)
class Counts:
    """Final outcomes; their sum is the number of successful `track()` calls."""

    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    dropped: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.accepted + self.duplicates + self.rejected + self.dropped + self.failed


@dataclass(frozen=True)
class Stats(Counts):
    """`Counts` plus the events still on their way."""

    queued: int = 0
    in_flight: int = 0


@dataclass(frozen=True)
class RejectedEvent:
    """An event the server refused, with its message naming the field."""

    event_id: str
    event_type: str
    error: str


@dataclass
class ProducerOptions:
    """Producer settings; the defaults are the table in clients/README.md."""

    max_queue_size: int = 10_000
    queue_full_policy: str = "drop_newest"
    max_batch: int = 500
    flush_interval: float = 1.0
    max_in_flight: int = 4
    initial_backoff: float = 0.1
    max_backoff: float = 30.0
    max_retry_duration: float = 600.0
    ack_timeout: float = 30.0
    shutdown_timeout: float = 10.0
    on_rejected: Optional[Callable[[RejectedEvent], Any]] = None

    def validate(self) -> None:
        def positive(name: str) -> None:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)!r}")

        for name in ("max_queue_size", "max_batch", "flush_interval", "max_in_flight",
                     "initial_backoff", "max_backoff", "max_retry_duration", "ack_timeout"):
            positive(name)
        if self.max_batch > MAX_EVENTS_PER_MESSAGE:
            raise ValueError(f"max_batch: at most {MAX_EVENTS_PER_MESSAGE}, got {self.max_batch}")
        if self.queue_full_policy not in QUEUE_FULL_POLICIES:
            raise ValueError(
                f"queue_full_policy: one of {QUEUE_FULL_POLICIES}, got {self.queue_full_policy!r}"
            )
        if self.shutdown_timeout < 0:
            raise ValueError(f"shutdown_timeout: must not be negative, got {self.shutdown_timeout}")


class _Batch:
    __slots__ = ("sequence", "events", "first_serial", "first_sent")

    def __init__(self, sequence: int, events: List[bytes], first_serial: int) -> None:
        self.sequence = sequence
        self.events = events
        self.first_serial = first_serial
        self.first_sent: Optional[float] = None


class _Stream:
    """One IngestBidi call; `closed` ends its request generator, `sent` maps the
    sequence numbers written on it to when they were written."""

    __slots__ = ("closed", "call", "sent")

    def __init__(self) -> None:
        self.closed = False
        self.call: Any = None
        self.sent: Dict[int, float] = {}


# Opens IngestBidi with requests already encoded (see _request).
OpenStream = Callable[[Iterator[bytes]], Any]
# Calls IngestBatch with an encoded request and a timeout (see _send_unary).
SendBatch = Callable[[bytes, float], Any]
# Returned when a stream could not start its thread (interpreter exit, Python 3.12).
_NO_NEW_THREADS = object()


class Producer:
    """Queues events and sends them from a daemon thread; see the module docstring."""

    def __init__(
        self, open_stream: OpenStream, send_batch: SendBatch, options: ProducerOptions
    ) -> None:
        options.validate()
        self._open_stream = open_stream
        self._send_batch = send_batch
        self._options = options
        self._reset_state()
        reference = weakref.ref(self)
        os.register_at_fork(
            before=lambda: _call(reference, "_before_fork"),
            after_in_parent=lambda: _call(reference, "_after_fork_in_parent"),
            after_in_child=lambda: _call(reference, "_after_fork_in_child"),
        )
        # At exit: first flush while threads can still start (Python 3.12+ refuses new
        # threads, which a gRPC stream needs, once atexit handlers run), then shut down.
        register_early = getattr(threading, "_register_atexit", None)
        if register_early is not None:
            try:
                register_early(_call, reference, "_flush_at_exit")
            except RuntimeError:  # created while the interpreter is already exiting
                pass
        atexit.register(_call, reference, "_shutdown_at_exit")

    def _reset_state(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        # Each event as it goes on the wire: the IngestBidiRequest.events field, framed
        # (bytes, which the garbage collector never scans however long the queue).
        self._queue: Deque[bytes] = deque()
        # Events ever appended to the queue; the head's serial is _enqueued - len + 1.
        self._oldest_enqueued = 0.0
        self._tracked = 0
        self._enqueued = 0
        self._accepted = 0
        self._duplicates = 0
        self._rejected = 0
        self._dropped = 0
        self._failed = 0
        self._in_flight: Dict[int, _Batch] = {}
        self._in_flight_events = 0
        self._next_sequence = 1
        self._flush_target = 0
        # Batches allowed in flight: max_in_flight, halved on RESOURCE_EXHAUSTED and
        # grown by one per window of acknowledgements (AIMD), so an overloaded server
        # is offered only what it can take instead of refusals that end every stream.
        self._window = self._options.max_in_flight
        self._acks_toward_growth = 0
        self._stopping = False
        self._abandoned = False
        # Set by the before-fork hook: the sender leaves gRPC and parks until it clears.
        self._forking = False
        self._parked = False
        self._final: Optional[Counts] = None
        self._thread: Optional[threading.Thread] = None
        self._stream: Optional[_Stream] = None

    # -- the calling thread ------------------------------------------------------------

    def enqueue(self, event: event_pb2.Event) -> None:
        """Queues a validated event; never blocks on the network, never raises for it."""
        framed = _frame_event(event.SerializeToString())
        options = self._options
        with self._cond:
            if self._final is not None or self._stopping:
                raise RuntimeError("eventline client is shut down: track() after shutdown()")
            if self._thread is None:
                self._start_sender()
            self._tracked += 1
            queue = self._queue
            if len(queue) >= options.max_queue_size:
                self._dropped += 1
                if options.queue_full_policy == "drop_newest":
                    self._log_drop()
                    return
                queue.popleft()
                self._log_drop()
            if not queue:
                self._oldest_enqueued = time.monotonic()
            self._enqueued += 1
            queue.append(framed)
            if len(queue) == options.max_batch:
                self._cond.notify_all()

    def _log_drop(self) -> None:
        if self._dropped == 1 or self._dropped % 10_000 == 0:
            logger.warning(
                "eventline queue full (%d events): %d events dropped so far",
                self._options.max_queue_size,
                self._dropped,
            )

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Waits until every event tracked before the call is acknowledged (True), or
        until the timeout (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._enqueued
            self._flush_target = max(self._flush_target, target)
            self._cond.notify_all()
            while not self._done_through(target):
                if deadline is None:
                    self._cond.wait()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def _done_through(self, serial: int) -> bool:
        if self._queue and self._head_serial() <= serial:
            return False
        return all(batch.first_serial > serial for batch in self._in_flight.values())

    def _head_serial(self) -> int:
        return self._enqueued - len(self._queue) + 1

    def shutdown(self, timeout: Optional[float] = None) -> Counts:
        """Flushes, stops the sender and returns the final counts; later calls return the
        same counts. Events not acknowledged by the timeout are counted as failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._final is not None:
                return self._final
            self._stopping = True
            self._flush_target = self._enqueued
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                self._abandon()
                thread.join(1.0)
        with self._cond:
            lost = len(self._queue) + self._in_flight_events
            if lost:
                logger.error("eventline shutdown: %d events not acknowledged, counted as failed", lost)
            self._failed += lost
            self._queue.clear()
            self._in_flight.clear()
            self._in_flight_events = 0
            self._final = self._counts()
            self._cond.notify_all()
            return self._final

    def _abandon(self) -> None:
        with self._cond:
            self._abandoned = True
            stream = self._stream
            self._cond.notify_all()
        if stream is not None and stream.call is not None:
            stream.call.cancel()

    def stats(self) -> Stats:
        with self._cond:
            counts = self._counts()
            return Stats(
                **counts.__dict__,
                queued=len(self._queue),
                in_flight=self._in_flight_events,
            )

    def _counts(self) -> Counts:
        return Counts(
            accepted=self._accepted,
            duplicates=self._duplicates,
            rejected=self._rejected,
            dropped=self._dropped,
            failed=self._failed,
        )

    # -- fork and exit -----------------------------------------------------------------

    def _before_fork(self) -> None:
        # gRPC survives fork() only when no thread is inside it (and with fork support on,
        # see eventline/__init__.py): end the stream and park the sender first. Unacked
        # batches are resent after the fork, with the same ids.
        with self._cond:
            thread = self._thread
            stream = self._stream
            if thread is not None and thread.is_alive():
                self._forking = True
                if stream is not None:
                    stream.closed = True
                self._cond.notify_all()
            else:
                thread = None
        if thread is not None:
            if stream is not None and stream.call is not None:
                stream.call.cancel()
            deadline = time.monotonic() + FORK_QUIESCE_TIMEOUT
            with self._cond:
                while not self._parked and thread.is_alive() and time.monotonic() < deadline:
                    self._cond.wait(deadline - time.monotonic())
                if not self._parked and thread.is_alive():
                    logger.warning("eventline: the sender did not pause before fork()")
        self._cond.acquire()  # held across fork(): the child copies a consistent state

    def _after_fork_in_parent(self) -> None:
        self._forking = False
        self._cond.notify_all()
        self._cond.release()

    def _after_fork_in_child(self) -> None:
        # The parent keeps and sends its queued events; the child starts empty, with a
        # sender thread of its own once it tracks something.
        self._reset_state()

    def _flush_at_exit(self) -> None:
        if self._final is None and self._tracked:
            self.flush(self._options.shutdown_timeout)

    def _shutdown_at_exit(self) -> None:
        if self._final is None and self._tracked:
            self.shutdown(self._options.shutdown_timeout)

    # -- the sender thread -------------------------------------------------------------

    def _start_sender(self) -> None:
        self._thread = threading.Thread(target=self._run, name="eventline-sender", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = Backoff(self._options.initial_backoff, self._options.max_backoff)
        while True:
            with self._cond:
                self._park_while_forking()
                while not (self._queue or self._in_flight or self._stopping):
                    self._cond.wait()
                    self._park_while_forking()
                if self._abandoned or not (self._queue or self._in_flight):
                    return
                stream = self._stream = _Stream()
            error: Any = self._stream_until_broken(stream, backoff)
            if self._forking:
                continue  # ended for a fork(): resume afterwards, without backoff
            if error is _NO_NEW_THREADS:
                self._send_unary(backoff)
                return
            if error is None:
                with self._cond:
                    if self._stopping and not (self._queue or self._in_flight):
                        return
                # The server ended the stream without our half-close: reconnect, paced.
                error = _UnexpectedError("the server ended the stream", grpc.StatusCode.UNAVAILABLE)
            delay = self._after_broken_stream(error, backoff)
            with self._cond:
                deadline = time.monotonic() + delay
                while not self._abandoned and time.monotonic() < deadline:
                    self._park_while_forking()
                    self._cond.wait(max(0.0, deadline - time.monotonic()))
                if self._abandoned:
                    return

    def _park_while_forking(self) -> None:
        """Waits (holding the condition, outside gRPC) while a fork() is under way."""
        while self._forking:
            self._parked = True
            self._cond.notify_all()
            self._cond.wait()
        self._parked = False

    def _stream_until_broken(self, stream: _Stream, backoff: Backoff) -> Optional[Any]:
        try:
            stream.call = self._open_stream(self._requests(stream))
            for ack in stream.call:
                self._on_ack(ack)
                backoff.reset()
            return None
        except grpc.RpcError as error:
            return error
        except RuntimeError as error:
            if "interpreter shutdown" not in str(error):
                raise
            return _NO_NEW_THREADS
        except Exception as error:  # a bug must not kill the sender silently
            logger.exception("eventline sender: unexpected error")
            return _UnexpectedError(repr(error), grpc.StatusCode.UNKNOWN)
        finally:
            with self._cond:
                stream.closed = True
                self._cond.notify_all()

    def _send_unary(self, backoff: Backoff) -> None:
        """Sends what is left with IngestBatch, one batch at a time, from this thread.

        A gRPC stream needs a thread of its own, and Python 3.12 refuses to start threads
        once the interpreter exits: the events still queued then (a short script that
        tracks and ends) go out this way, with the same ids and the same accounting.
        """
        while True:
            with self._cond:
                while not (self._in_flight or self._queue or self._stopping or self._abandoned):
                    self._cond.wait()
                if self._abandoned or not (self._in_flight or self._queue):
                    return
                if self._in_flight:
                    batch = self._in_flight[min(self._in_flight)]
                else:
                    batch = self._take_batch(time.monotonic())
            request = _batch_request(batch)
            try:
                response = self._send_batch(request, self._options.ack_timeout)
            except grpc.RpcError as error:
                delay = self._after_broken_stream(error, backoff)
                with self._cond:
                    self._cond.wait(delay)
                continue
            backoff.reset()
            self._on_results(batch.sequence, response.results)

    def _after_broken_stream(self, error: Any, backoff: Backoff) -> float:
        code = error.code()
        server_delay = None
        if code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
            server_delay = retry_delay(error.trailing_metadata())
        delay = backoff.next_delay(server_delay)
        now = time.monotonic()
        with self._cond:
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                self._window = max(1, self._window // 2)
                self._acks_toward_growth = 0
            if code not in RETRYABLE_CODES:
                expired = list(self._in_flight.values())
                reason = f"{code.name} is not retryable"
            else:
                limit = self._options.max_retry_duration
                expired = [
                    batch
                    for batch in self._in_flight.values()
                    if batch.first_sent is not None and now + delay - batch.first_sent > limit
                ]
                reason = f"unacknowledged for over max_retry_duration={limit}s"
            for batch in expired:
                del self._in_flight[batch.sequence]
                self._in_flight_events -= len(batch.events)
                self._failed += len(batch.events)
            in_flight = len(self._in_flight)
            self._cond.notify_all()
        if expired:
            logger.error(
                "eventline: %d events failed (%s): %s: %s",
                sum(len(batch.events) for batch in expired),
                reason,
                code.name,
                error.details(),
            )
        logger.warning(
            "eventline stream broken (%s: %s); %d batches to resend, reconnecting in %.2fs",
            code.name,
            error.details(),
            in_flight,
            delay,
        )
        return delay

    def _requests(self, stream: _Stream) -> Iterator[bytes]:
        """The request side of one stream: first every unacknowledged batch again (same
        sequence and event ids), then new batches as they fill or their time comes,
        never more unacknowledged ones than the window allows."""
        while True:
            with self._cond:
                batch = self._next_batch(stream)
                if batch is _STALLED:
                    call = stream.call
                elif batch is None:
                    return
                else:
                    stream.sent[batch.sequence] = time.monotonic()
            if batch is _STALLED:
                # A server that holds a batch this long without acknowledging it is
                # stuck (or unreachable without a reset): break the stream and resend.
                logger.warning("eventline: no acknowledgement within ack_timeout; reconnecting")
                if call is not None:
                    call.cancel()
                return
            yield _request(batch)

    def _next_batch(self, stream: _Stream) -> Any:
        """Waits (holding the condition) for a batch to send; None ends the stream and
        _STALLED breaks it."""
        options = self._options
        while True:
            if stream.closed or self._abandoned:
                return None
            unsent = [seq for seq in self._in_flight if seq not in stream.sent]
            waiting_since = [stream.sent[seq] for seq in self._in_flight if seq in stream.sent]
            ack_due = min(waiting_since) + options.ack_timeout if waiting_since else None
            if ack_due is not None and time.monotonic() >= ack_due:
                return _STALLED
            if unsent:
                if len(waiting_since) < self._window:
                    return self._in_flight[min(unsent)]
                self._wait_until(ack_due)
                continue
            queue = self._queue
            if queue and len(self._in_flight) < self._window:
                now = time.monotonic()
                due = self._oldest_enqueued + options.flush_interval
                if (
                    len(queue) >= options.max_batch
                    or self._head_serial() <= self._flush_target
                    or self._stopping
                    or now >= due
                ):
                    return self._take_batch(now)
                self._wait_until(due if ack_due is None else min(due, ack_due))
                continue
            if self._stopping and not queue and not self._in_flight:
                return None  # everything acknowledged: half-close
            self._wait_until(ack_due)

    def _wait_until(self, deadline: Optional[float]) -> None:
        if deadline is None:
            self._cond.wait()
        else:
            self._cond.wait(max(0.0, deadline - time.monotonic()))

    def _take_batch(self, now: float) -> _Batch:
        queue = self._queue
        first_serial = self._head_serial()
        events: List[bytes] = []
        batch_bytes = 0
        while queue and len(events) < self._options.max_batch:
            size = len(queue[0])
            if events and batch_bytes + size > MAX_BATCH_BYTES:
                break
            events.append(queue.popleft())
            batch_bytes += size
        batch = _Batch(self._next_sequence, events, first_serial)
        batch.first_sent = now
        self._next_sequence += 1
        self._in_flight[batch.sequence] = batch
        self._in_flight_events += len(events)
        return batch

    def _on_ack(self, ack: ingest_pb2.IngestBidiResponse) -> None:
        self._on_results(ack.sequence, ack.results)

    def _on_results(self, sequence: int, results: Any) -> None:
        """Counts the per-event results of the batch `sequence`."""
        rejected: List[RejectedEvent] = []
        with self._cond:
            batch = self._in_flight.pop(sequence, None)
            if batch is None:
                return  # already counted (shutdown gave up on it)
            self._in_flight_events -= len(batch.events)
            self._acks_toward_growth += 1
            if self._acks_toward_growth >= self._window:
                self._acks_toward_growth = 0
                self._window = min(self._options.max_in_flight, self._window + 1)
            reported = 0
            for result in results:
                status = result.status
                if status == _ACCEPTED:
                    self._accepted += 1
                elif status == _DUPLICATE:
                    self._duplicates += 1
                elif status == _REJECTED:
                    self._rejected += 1
                    event_type = (
                        _event_type(batch.events[result.index])
                        if result.index < len(batch.events)
                        else ""
                    )
                    rejected.append(RejectedEvent(result.event_id, event_type, result.error))
                else:
                    self._failed += 1
                reported += 1
            missing = len(batch.events) - reported
            if missing > 0:
                self._failed += missing
            self._cond.notify_all()
        if missing > 0:
            logger.error("eventline: ack for batch %d lacks %d results", sequence, missing)
        for event in rejected:
            logger.warning(
                "eventline: event %s (%s) rejected: %s", event.event_id, event.event_type, event.error
            )
            if self._options.on_rejected is not None:
                try:
                    self._options.on_rejected(event)
                except Exception:
                    logger.exception("eventline: on_rejected callback raised")


# Returned by _next_batch when the oldest batch on the stream waited over ack_timeout.
_STALLED = object()


def _request(batch: _Batch) -> bytes:
    """The encoded IngestBidiRequest: its header fields, then the framed events as they
    were queued (protobuf fields may come in any order)."""
    sent_at = timestamp_pb2.Timestamp()
    sent_at.GetCurrentTime()
    header = ingest_pb2.IngestBidiRequest(sequence=batch.sequence, sent_at=sent_at)
    return header.SerializeToString() + b"".join(batch.events)


_EVENTS_FIELD_TAG = 0x12  # IngestBidiRequest.events: field 2, length-delimited
_BATCH_EVENTS_FIELD_TAG = b"\x0a"  # IngestBatchRequest.events: field 1, length-delimited


def _batch_request(batch: _Batch) -> bytes:
    """The batch as an encoded IngestBatchRequest (the events re-tagged as field 1)."""
    sent_at = timestamp_pb2.Timestamp()
    sent_at.GetCurrentTime()
    header = ingest_pb2.IngestBatchRequest(sent_at=sent_at).SerializeToString()
    return header + b"".join(_BATCH_EVENTS_FIELD_TAG + framed[1:] for framed in batch.events)


def _frame_event(encoded: bytes) -> bytes:
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


def _event_type(framed: bytes) -> str:
    return queued_events([framed])[0].event_type


class _UnexpectedError:
    """A stream that ended without a gRPC error status, treated as a retryable break."""

    def __init__(self, details: str, code: grpc.StatusCode) -> None:
        self._details = details
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> None:
        return None


def _call(reference: "weakref.ref[Producer]", method: str) -> None:
    producer = reference()
    if producer is not None:
        getattr(producer, method)()

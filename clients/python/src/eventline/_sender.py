"""The sender thread of the producer: one IngestBidi stream at a time, numbered batches
from the queue, per-event acknowledgements, reconnects with backoff, and the window of
batches in flight. `Producer` (eventline/_producer.py) owns the state this works on;
every method here runs on the sender thread or on gRPC's request thread, under the
producer's condition where it touches shared state."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional

import grpc

from eventline import _wire as wire
from eventline._options import ProducerOptions, RejectedEvent
from eventline._retry import RETRYABLE_CODES, Backoff, retry_delay
from eventline.v1 import event_pb2, ingest_pb2

logger = logging.getLogger("eventline")

# The server takes messages up to 20 MiB; a batch stops growing before 16 MiB.
MAX_BATCH_BYTES = 16 * 1024 * 1024

_ACCEPTED = event_pb2.INGEST_STATUS_ACCEPTED
_DUPLICATE = event_pb2.INGEST_STATUS_DUPLICATE
_REJECTED = event_pb2.INGEST_STATUS_REJECTED


class Batch:
    __slots__ = ("sequence", "events", "first_serial", "first_sent")

    def __init__(self, sequence: int, events: List[bytes], first_serial: int) -> None:
        self.sequence = sequence
        self.events = events
        self.first_serial = first_serial
        self.first_sent: Optional[float] = None


class Stream:
    """One IngestBidi call; `closed` ends its request generator, `sent` maps the
    sequence numbers written on it to when they were written, and `requesting` is true
    while gRPC's thread runs the request generator (a fork waits for it to end)."""

    __slots__ = ("closed", "call", "sent", "requesting")

    def __init__(self) -> None:
        self.closed = False
        self.call: Any = None
        self.sent: Dict[int, float] = {}
        self.requesting = False


# Opens IngestBidi with requests already encoded (see _request).
OpenStream = Callable[[Iterator[bytes]], Any]
# Calls IngestBatch with an encoded request and a timeout (see _send_unary).
SendBatch = Callable[[bytes, float], Any]
# Returned when a stream could not start its thread (interpreter exit, Python 3.12).
_NO_NEW_THREADS = object()



class Sender:
    """The sender-thread half of `Producer` (a mixin: the state is the producer's, set
    in Producer._reset_state and guarded by `_cond`)."""

    _cond: threading.Condition
    _options: ProducerOptions
    _open_stream: OpenStream
    _send_batch: SendBatch
    _queue: Deque[bytes]
    _enqueued: int
    _oldest_enqueued: float
    _accepted: int
    _duplicates: int
    _rejected: int
    _failed: int
    _in_flight: Dict[int, Batch]
    _in_flight_events: int
    _next_sequence: int
    _flush_target: int
    _window: int
    _acks_toward_growth: int
    _stopping: bool
    _abandoned: bool
    _forking: bool
    _parked: bool
    _thread: Optional[threading.Thread]
    _stream: Optional[Stream]

    def _head_serial(self) -> int:
        """The serial of the queue's first event (events are numbered as queued)."""
        return self._enqueued - len(self._queue) + 1

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
                stream = self._stream = Stream()
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

    def _stream_until_broken(self, stream: Stream, backoff: Backoff) -> Optional[Any]:
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
            request = wire.batch_request(batch.events)
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

    def _requests(self, stream: Stream) -> Iterator[bytes]:
        """The request side of one stream: first every unacknowledged batch again (same
        sequence and event ids), then new batches as they fill or their time comes,
        never more unacknowledged ones than the window allows."""
        with self._cond:
            stream.requesting = True
        try:
            yield from self._request_batches(stream)
        finally:
            with self._cond:
                stream.requesting = False
                self._cond.notify_all()

    def _request_batches(self, stream: Stream) -> Iterator[bytes]:
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
            yield wire.bidi_request(batch.sequence, batch.events)

    def _next_batch(self, stream: Stream) -> Any:
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

    def _take_batch(self, now: float) -> Batch:
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
        batch = Batch(self._next_sequence, events, first_serial)
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
                        wire.event_type(batch.events[result.index])
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

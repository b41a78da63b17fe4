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
from typing import Optional

from eventline import _wire as wire
from eventline._options import Counts, ProducerOptions, Stats
from eventline._sender import OpenStream, SendBatch, Sender, Stream
from eventline.v1 import event_pb2

logger = logging.getLogger("eventline")

# How long fork() waits for the sender to leave gRPC.
FORK_QUIESCE_TIMEOUT = 2.0


class Producer(Sender):
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
        self._queue = deque()
        # Events ever appended to the queue; the head's serial is _enqueued - len + 1.
        self._oldest_enqueued = 0.0
        self._tracked = 0
        self._enqueued = 0
        self._accepted = 0
        self._duplicates = 0
        self._rejected = 0
        self._dropped = 0
        self._failed = 0
        self._in_flight = {}
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
        self._thread = None
        self._stream = None

    # -- the calling thread ------------------------------------------------------------

    def enqueue(self, event: event_pb2.Event) -> None:
        """Queues a validated event; never blocks on the network, never raises for it."""
        framed = wire.frame_event(event.SerializeToString())
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
                while not self._quiesced(thread, stream) and time.monotonic() < deadline:
                    self._cond.wait(deadline - time.monotonic())
                if not self._quiesced(thread, stream):
                    logger.warning("eventline: the sender did not pause before fork()")
        # The lock is not held across fork(): gRPC's own fork handler, which runs after
        # this one, waits for its threads, and the one running our request generator
        # needs the lock to end. The child does not need a consistent copy either: it
        # starts from a fresh state and a fresh lock.

    def _quiesced(self, thread: threading.Thread, stream: Optional[Stream]) -> bool:
        """The sender is parked (or gone) and the request generator has ended."""
        parked = self._parked or not thread.is_alive()
        return parked and (stream is None or not stream.requesting)

    def _after_fork_in_parent(self) -> None:
        with self._cond:
            self._forking = False
            self._cond.notify_all()

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


def _call(reference: "weakref.ref[Producer]", method: str) -> None:
    producer = reference()
    if producer is not None:
        getattr(producer, method)()

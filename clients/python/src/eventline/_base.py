"""What `Client` and `AsyncClient` share: the constructor, the producer (`track`,
`stats`) and the resume state of export and tail streams."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping, Optional, Sequence, Tuple

from eventline import _query
from eventline._connection import Connection, ProcessChannel
from eventline._events import build_event
from eventline._options import ProducerOptions, Stats
from eventline._producer import Producer
from eventline._retry import Backoff


class ClientCore:
    """The constructor and producer side of both clients.

    `target` is host:port, http://host:port or https://host:port; `https://` or
    `tls=True` uses TLS (with `root_certificates`, `private_key` and `certificate_chain`
    for a private CA or mTLS). `api_key` defaults to $EVENTLINE_API_KEY. `timeout`
    bounds each unary query, in seconds. Every producer setting of clients/README.md is a
    keyword argument: `max_queue_size`, `queue_full_policy`, `max_batch`,
    `flush_interval`, `max_in_flight`, `initial_backoff`, `max_backoff`,
    `max_retry_duration`, `ack_timeout`, `shutdown_timeout`, `on_rejected`.
    """

    def __init__(
        self,
        target: str = "localhost:50051",
        api_key: Optional[str] = None,
        *,
        tls: bool = False,
        root_certificates: Optional[bytes] = None,
        private_key: Optional[bytes] = None,
        certificate_chain: Optional[bytes] = None,
        timeout: Optional[float] = 30.0,
        channel_options: Sequence[Tuple[str, Any]] = (),
        **producer_options: Any,
    ) -> None:
        self._options = ProducerOptions(**producer_options)
        self._connection = Connection(
            target, api_key, tls, root_certificates, private_key, certificate_chain,
            timeout, list(channel_options),
        )
        # The sender thread's channel (synchronous gRPC), reopened in a forked child.
        self._sender_channel = ProcessChannel(self._connection)
        self._producer = Producer(
            self._sender_channel.open_ingest_stream, self._sender_channel.send_batch, self._options
        )

    def track(
        self,
        event_type: str,
        user_id: Optional[str] = None,
        properties: Optional[Mapping[str, Any]] = None,
        timestamp: Optional[datetime] = None,
        event_id: Optional[str] = None,
        session_id: Optional[str] = None,
    ) -> str:
        """Queues one event and returns its event_id at once.

        Never waits for the network and never raises for a network problem. Raises
        ValueError or TypeError, naming the field, for an event the server would reject
        (see clients/README.md). Naive datetimes are UTC.
        """
        event = build_event(event_type, user_id, properties, timestamp, event_id, session_id)
        self._producer.enqueue(event)
        return event.event_id

    def stats(self) -> Stats:
        """The counts so far, plus the events queued and in flight."""
        return self._producer.stats()

    def _resume(
        self,
        requests: _query.RequestFactory,
        cursor: Optional[str],
        start_time: Optional[datetime],
        reconnect: bool,
        replay_from_open: bool,
    ) -> _query.Resume:
        return _query.Resume(
            requests, cursor, start_time, reconnect,
            Backoff(self._options.initial_backoff, self._options.max_backoff),
            self._options.max_retry_duration, replay_from_open,
        )

"""Connection settings shared by `Client` and `AsyncClient`: target parsing, TLS, the API
key and channel options."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple

import grpc

VERSION = "0.1.0"

_DEFAULT_CHANNEL_OPTIONS: List[Tuple[str, Any]] = [
    # Finds a dead peer (a crashed server behind a silent network) within ~40 s.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    # gRPC's own reconnect backoff (default 1 s x 1.6 up to 120 s) would hold calls back
    # after a server restart long after the producer's backoff says to retry.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 30_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.primary_user_agent", f"eventline-python/{VERSION}"),
]


@dataclass
class Connection:
    """Where and how to connect; `target` is host:port, http://host:port or
    https://host:port (https means TLS)."""

    target: str
    api_key: Optional[str]
    tls: bool = False
    root_certificates: Optional[bytes] = None
    private_key: Optional[bytes] = None
    certificate_chain: Optional[bytes] = None
    timeout: Optional[float] = 30.0
    channel_options: Sequence[Tuple[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.target, str) or not self.target:
            raise ValueError(f"target: must be host:port or an http(s) URL, got {self.target!r}")
        if self.target.startswith("https://"):
            self.target, self.tls = self.target[len("https://"):], True
        elif self.target.startswith("http://"):
            self.target = self.target[len("http://"):]
        self.target = self.target.rstrip("/")
        if self.api_key is None:
            self.api_key = os.environ.get("EVENTLINE_API_KEY")
        if self.api_key is not None and not isinstance(self.api_key, str):
            raise TypeError(f"api_key: must be a str, got {type(self.api_key).__name__}")
        if self.root_certificates or self.private_key or self.certificate_chain:
            self.tls = True

    @property
    def metadata(self) -> Tuple[Tuple[str, str], ...]:
        return (("x-api-key", self.api_key),) if self.api_key else ()

    @property
    def options(self) -> List[Tuple[str, Any]]:
        overridden = {name for name, _ in self.channel_options}
        defaults = [option for option in _DEFAULT_CHANNEL_OPTIONS if option[0] not in overridden]
        return defaults + list(self.channel_options)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )

    def sync_channel(self) -> grpc.Channel:
        if self.tls:
            return grpc.secure_channel(self.target, self.credentials(), options=self.options)
        return grpc.insecure_channel(self.target, options=self.options)

    def aio_channel(self) -> "grpc.aio.Channel":
        if self.tls:
            return grpc.aio.secure_channel(self.target, self.credentials(), options=self.options)
        return grpc.aio.insecure_channel(self.target, options=self.options)


class ProcessChannel:
    """A synchronous channel owned by the current process. A forked child never uses its
    parent's channel: it opens its own on first use."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._channel: Optional[grpc.Channel] = None
        self._pid = 0
        # Closing the parent's channel from the child could disturb the parent's
        # connections; the child keeps the inherited object alive and unused instead.
        self._inherited: List[grpc.Channel] = []

    def get(self) -> grpc.Channel:
        if self._channel is None or self._pid != os.getpid():
            if self._channel is not None:
                self._inherited.append(self._channel)
            self._channel = self._connection.sync_channel()
            self._pid = os.getpid()
        return self._channel

    def open_ingest_stream(self, requests: Any) -> Any:
        """IngestBidi taking requests already encoded by the producer (no serializer)."""
        from eventline.v1 import ingest_pb2

        call: Any = self.get().stream_stream(
            "/eventline.v1.IngestService/IngestBidi",
            request_serializer=None,
            response_deserializer=ingest_pb2.IngestBidiResponse.FromString,
        )
        return call(requests, metadata=self._connection.metadata)

    def send_batch(self, request: bytes, timeout: float) -> Any:
        """IngestBatch with a request already encoded by the producer."""
        from eventline.v1 import ingest_pb2

        call: Any = self.get().unary_unary(
            "/eventline.v1.IngestService/IngestBatch",
            request_serializer=None,
            response_deserializer=ingest_pb2.IngestBatchResponse.FromString,
        )
        return call(request, metadata=self._connection.metadata, timeout=timeout)

    def close(self) -> None:
        if self._channel is not None and self._pid == os.getpid():
            self._channel.close()
            self._channel = None

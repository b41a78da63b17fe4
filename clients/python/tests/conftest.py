"""Runs the real `eventline` binary ($EVENTLINE_BIN) against a fresh PostgreSQL database
per test, on free ports, as crates/eventline/tests/common/mod.rs does."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from typing import Dict, Iterator, Optional, Sequence

import eventline  # noqa: F401  (first, as applications do: it turns on gRPC's fork support)
import grpc
import pytest

API_KEY = "elk_test_bootstrap_key_0123456789abcdef"
DATABASE_URL = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres"


def pytest_configure(config: pytest.Config) -> None:
    binary = os.environ.get("EVENTLINE_BIN")
    if not binary:
        raise pytest.UsageError("EVENTLINE_BIN is not set: point it at the eventline server binary")
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise pytest.UsageError(f"EVENTLINE_BIN={binary} is not an executable file")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stable_free_port() -> int:
    """A free port below the kernel's ephemeral range (32768-60999), so that no client's
    source port takes it while a test restarts the server on it."""
    for _ in range(200):
        port = random.randrange(20_000, 32_000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


def psql(sql: str) -> None:
    subprocess.run(["psql", DATABASE_URL, "-qAt", "-c", sql], check=True, capture_output=True)


def serving(address: str, credentials: Optional[grpc.ChannelCredentials] = None) -> bool:
    """grpc.health.v1.Health/Check answers SERVING (status 1: bytes 08 01); over TLS
    with `credentials`."""
    channel = (
        grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    )
    with channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        try:
            return check(b"", timeout=1) == b"\x08\x01"
        except grpc.RpcError:
            return False


class Server:
    """One `eventline serve` process; `kill()` and `start()` keep its ports and database.
    `args` are added to `serve` (such as --tls-cert); `credentials` are the TLS
    credentials the health check needs when the server speaks TLS."""

    def __init__(
        self,
        database_url: str,
        env: Optional[Dict[str, str]] = None,
        args: Sequence[str] = (),
        credentials: Optional[grpc.ChannelCredentials] = None,
    ) -> None:
        self.grpc_port = stable_free_port()
        self.metrics_port = stable_free_port()
        self.address = f"127.0.0.1:{self.grpc_port}"
        self.env = {
            **os.environ,
            "EVENTLINE_DATABASE_URL": database_url,
            "EVENTLINE_GRPC_ADDR": self.address,
            "EVENTLINE_HTTP_ADDR": f"127.0.0.1:{stable_free_port()}",
            "EVENTLINE_METRICS_ADDR": f"127.0.0.1:{self.metrics_port}",
            "EVENTLINE_BOOTSTRAP_API_KEY": API_KEY,
            "EVENTLINE_LOG_LEVEL": "warn",
            **(env or {}),
        }
        self.args = list(args)
        self.credentials = credentials
        self.log = tempfile.NamedTemporaryFile(prefix="eventline-server-", suffix=".log", delete=False)
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [os.environ["EVENTLINE_BIN"], "serve", *self.args],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"eventline serve exited with {self.process.returncode}: {self.logs()}")
            if serving(self.address, self.credentials):
                return
            time.sleep(0.1)
        raise RuntimeError(f"eventline serve was not SERVING within 60 s: {self.logs()}")

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing answers."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def logs(self) -> str:
        with open(self.log.name, encoding="utf-8", errors="replace") as log:
            return log.read()[-4000:]

    def metric(self, name: str, labels: str = "") -> float:
        """The value of one Prometheus sample, e.g. metric("x_total", 'outcome="rejected"')."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        wanted = f"{name}{{{labels}}}" if labels else name
        for line in text.splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        return 0.0


@pytest.fixture
def database() -> Iterator[str]:
    name = f"eventline_test_py_{uuid.uuid4().hex[:12]}"
    psql(f'CREATE DATABASE "{name}"')
    base, _, _ = DATABASE_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def make_server(database: str) -> Iterator:
    """Starts servers on the test's database; every one is killed at the end."""
    servers = []

    def make(
        env: Optional[Dict[str, str]] = None,
        args: Sequence[str] = (),
        credentials: Optional[grpc.ChannelCredentials] = None,
    ) -> Server:
        server = Server(database, env, args, credentials)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.kill()
        os.unlink(server.log.name)


@pytest.fixture
def server(make_server) -> Server:
    return make_server()

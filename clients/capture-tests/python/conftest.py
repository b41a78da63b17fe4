"""Runs the real `eventline` binary ($EVENTLINE_BIN) on free ports against a fresh
PostgreSQL database per test, and reads what it stored back through the REST gateway's
ListEvents and CountEvents. A server can be killed (SIGKILL) and restarted on the same
ports and database, to check that the SDKs' own retries lose nothing."""

import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
import uuid

import pytest

API_KEY = "elk_capture_test_bootstrap_key_0123456789"
DATABASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
EPOCH = "2000-01-01T00:00:00Z"


def free_port():
    """A port free now, outside the ephemeral range so a restart finds it free again."""
    while True:
        port = random.randint(20000, 32000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


def psql(sql):
    subprocess.run(["psql", DATABASE_URL, "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True)


class Server:
    """One eventline server; `kill()` and `start()` keep its ports and database."""

    def __init__(self, database_url, extra_env):
        binary = os.environ.get("EVENTLINE_BIN")
        if not binary:
            raise RuntimeError("EVENTLINE_BIN is not set: build the server (cargo build -p eventline)")
        self.binary = binary
        self.database_url = database_url
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.extra_env = extra_env
        self.process = None

    def start(self):
        env = dict(os.environ)
        env.update(
            EVENTLINE_DATABASE_URL=self.database_url,
            EVENTLINE_HTTP_ADDR=f"127.0.0.1:{self.http_port}",
            EVENTLINE_GRPC_ADDR=f"127.0.0.1:{self.grpc_port}",
            EVENTLINE_METRICS_ADDR=f"127.0.0.1:{self.metrics_port}",
            EVENTLINE_BOOTSTRAP_API_KEY=API_KEY,
            EVENTLINE_LOG_LEVEL="warn",
        )
        env.update(self.extra_env)
        self.process = subprocess.Popen([self.binary, "serve"], env=env, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"eventline exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("eventline did not become ready within 30 s")

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def get(self, path, **params):
        query = urllib.parse.urlencode(params)
        request = urllib.request.Request(f"{self.url}{path}?{query}", headers={"X-API-Key": API_KEY})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)

    def events(self):
        """Every stored event (ListEvents, all pages)."""
        events, token = [], ""
        while True:
            page = self.get("/v1/events", page_size=1000, start_time=EPOCH, page_token=token)
            events.extend(page["events"])
            token = page.get("next_page_token", "")
            if not token:
                return events

    def count(self):
        """CountEvents over all time."""
        return int(self.get("/v1/stats/count", start_time=EPOCH)["count"])

    def metric(self, name_and_labels):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith(name_and_labels + " "):
                    return float(line.split()[-1])
        return None


@pytest.fixture
def make_server():
    """Starts servers on fresh databases (extra `EVENTLINE_*` settings as keyword
    arguments); stops them and drops the databases afterwards."""
    started = []

    def make(**extra_env):
        name = f"eventline_test_capture_py_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        psql(f"CREATE DATABASE {name}")
        parts = urllib.parse.urlsplit(DATABASE_URL)
        server = Server(urllib.parse.urlunsplit(parts._replace(path="/" + name)), extra_env)
        started.append((server, name))
        server.start()
        return server

    yield make
    for server, name in started:
        server.stop()
        psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def assert_each_stored_once(stored, expected):
    """`expected` maps event id to (event_type, user_id, {property: value}); every one must
    be stored exactly once with them, and nothing else stored."""
    ids = [event["event_id"] for event in stored]
    duplicated = {event_id for event_id in ids if ids.count(event_id) > 1} if len(ids) != len(set(ids)) else set()
    assert not duplicated, f"stored more than once: {sorted(duplicated)[:5]}"
    by_id = {event["event_id"]: event for event in stored}
    missing = [event_id for event_id in expected if event_id not in by_id]
    assert not missing, f"{len(missing)} of {len(expected)} events missing, e.g. {missing[:5]}"
    unexpected = [event_id for event_id in by_id if event_id not in expected]
    assert not unexpected, f"unexpected events stored: {unexpected[:5]}"
    for event_id, (event_type, user_id, properties) in expected.items():
        event = by_id[event_id]
        assert event["event_type"] == event_type, (event_id, event["event_type"], event_type)
        assert event.get("user_id", "") == user_id, (event_id, event.get("user_id"), user_id)
        for name, value in properties.items():
            assert event["properties"].get(name) == value, (event_id, name, event["properties"])

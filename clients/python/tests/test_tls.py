"""TLS: an https:// target with a private CA, through a TLS-terminating proxy in front of
the real server (the server itself speaks plaintext gRPC)."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import threading

import pytest

import eventline
from conftest import API_KEY


@pytest.fixture
def certificate(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )
    return key, cert


@pytest.fixture
def tls_proxy(server, certificate):
    """Terminates TLS (ALPN h2) and pipes the bytes to the server; yields its port."""
    key, cert = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    context.set_alpn_protocols(["h2"])
    host, port = server.address.rsplit(":", 1)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    listening = {}

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def handle(client_reader, client_writer):
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(
            pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer),
            return_exceptions=True,
        )

    async def serve():
        proxy = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
        listening["port"] = proxy.sockets[0].getsockname()[1]
        started.set()
        async with proxy:
            await proxy.serve_forever()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    serving = asyncio.run_coroutine_threadsafe(serve(), loop)
    assert started.wait(10), "the TLS proxy did not start"
    yield listening["port"], cert.read_bytes()
    serving.cancel()

    async def cancel_connections():
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(cancel_connections(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_https_target_with_a_private_ca_tracks_and_queries_over_tls(tls_proxy):
    port, ca = tls_proxy
    client = eventline.Client(f"https://localhost:{port}", api_key=API_KEY, root_certificates=ca)
    for number in range(100):
        client.track("secure", properties={"n": number})
    assert client.shutdown(timeout=60) == eventline.Counts(accepted=100)
    assert client.count_events(event_type="secure") == 100
    client.close()


def test_tls_against_an_untrusted_certificate_fails_the_events_not_the_caller(tls_proxy):
    port, _ = tls_proxy
    client = eventline.Client(f"https://localhost:{port}", api_key=API_KEY)  # system CAs only
    client.track("untrusted")  # never raises for the network
    assert client.shutdown(timeout=2) == eventline.Counts(failed=1)

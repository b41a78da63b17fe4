"""TLS against the real server with native TLS (`serve --tls-cert --tls-key`, and
`--tls-client-ca` for mTLS): an https:// target with a private CA, an untrusted
certificate, and client certificates. Certificates are made with openssl per module."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from pathlib import Path
from typing import Dict

import grpc
import pytest

import eventline
from conftest import API_KEY


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> Dict[str, Path]:
    """A self-signed CA (P-256) that can sign certificates."""
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", "2", "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )
    return {"key": key, "cert": cert}


def make_leaf(directory: Path, name: str, ca: Dict[str, Path], extensions: str) -> Dict[str, Path]:
    """A certificate for `name` signed by `ca`, with `extensions` (openssl config lines)."""
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.pem"
    extfile = directory / f"{name}.ext"
    extfile.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n" + extensions)
    openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
    )
    openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca["cert"]), "-CAkey", str(ca["key"]),
        "-set_serial", str(secrets.randbelow(2**63) + 1), "-days", "1", "-out", str(cert),
        "-extfile", str(extfile),
    )
    return {"key": key, "cert": cert}


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Dict[str, Dict[str, Path]]:
    """A server CA signing the server's certificate (localhost and 127.0.0.1), a client CA
    signing a client certificate, and a client certificate from a CA the server does not
    know."""
    directory = tmp_path_factory.mktemp("pki")
    server_ca = make_ca(directory, "server-ca")
    client_ca = make_ca(directory, "client-ca")
    stranger_ca = make_ca(directory, "stranger-ca")
    return {
        "server_ca": server_ca,
        "client_ca": client_ca,
        "server": make_leaf(
            directory, "localhost", server_ca,
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        "client": make_leaf(directory, "client", client_ca, "extendedKeyUsage=clientAuth\n"),
        "stranger": make_leaf(directory, "stranger", stranger_ca, "extendedKeyUsage=clientAuth\n"),
    }


def tls_server(make_server, pki, *, mtls: bool = False):
    args = ["--tls-cert", str(pki["server"]["cert"]), "--tls-key", str(pki["server"]["key"])]
    client = {}
    if mtls:
        args += ["--tls-client-ca", str(pki["client_ca"]["cert"])]
        client = {
            "private_key": pki["client"]["key"].read_bytes(),
            "certificate_chain": pki["client"]["cert"].read_bytes(),
        }
    credentials = grpc.ssl_channel_credentials(pki["server_ca"]["cert"].read_bytes(), **client)
    server = make_server(args=args, credentials=credentials)
    return server, f"https://localhost:{server.grpc_port}"


def handshake_failures(server) -> float:
    return server.metric("eventline_tls_handshakes_total", 'outcome="failed"')


def test_https_target_with_a_private_ca_tracks_and_queries_over_tls(make_server, pki):
    server, target = tls_server(make_server, pki)
    ca = pki["server_ca"]["cert"].read_bytes()
    client = eventline.Client(target, api_key=API_KEY, root_certificates=ca)
    tracked = [client.track("secure", properties={"n": number}) for number in range(100)]
    assert client.shutdown(timeout=60) == eventline.Counts(accepted=100)
    assert client.count_events(event_type="secure") == 100
    assert sorted(event.event_id for event in client.list_events(event_type="secure")) == sorted(tracked)
    client.close()
    assert server.metric("eventline_tls_handshakes_total", 'outcome="ok"') >= 1


def test_async_client_over_tls_tracks_and_queries(make_server, pki):
    _, target = tls_server(make_server, pki)
    ca = pki["server_ca"]["cert"].read_bytes()

    async def scenario():
        async with eventline.AsyncClient(target, api_key=API_KEY, root_certificates=ca) as client:
            tracked = [client.track("secure-async", properties={"n": n}) for n in range(100)]
            assert await client.flush(timeout=60)
            assert await client.count_events(event_type="secure-async") == 100
            listed = [event.event_id async for event in client.list_events(event_type="secure-async")]
            assert sorted(listed) == sorted(tracked)
            counts = await client.shutdown()
        assert counts == eventline.Counts(accepted=100)

    asyncio.run(scenario())


def test_tls_against_an_untrusted_certificate_fails_the_events_not_the_caller(make_server, pki):
    server, target = tls_server(make_server, pki)
    client = eventline.Client(target, api_key=API_KEY)  # system CAs only
    client.track("untrusted")  # never raises for the network
    assert client.shutdown(timeout=2) == eventline.Counts(failed=1)
    client.close()
    assert handshake_failures(server) >= 1


def test_mtls_client_with_a_certificate_from_the_client_ca_is_served(make_server, pki):
    _, target = tls_server(make_server, pki, mtls=True)
    client = eventline.Client(
        target,
        api_key=API_KEY,
        root_certificates=pki["server_ca"]["cert"].read_bytes(),
        private_key=pki["client"]["key"].read_bytes(),
        certificate_chain=pki["client"]["cert"].read_bytes(),
    )
    for number in range(50):
        client.track("mutual", properties={"n": number})
    assert client.shutdown(timeout=60) == eventline.Counts(accepted=50)
    assert client.count_events(event_type="mutual") == 50
    client.close()


@pytest.mark.parametrize("identity", [None, "stranger"], ids=["no-certificate", "unknown-ca"])
def test_mtls_client_without_an_accepted_certificate_fails_its_events_not_the_caller(
    make_server, pki, identity
):
    server, target = tls_server(make_server, pki, mtls=True)
    extra = {}
    if identity:
        extra = {
            "private_key": pki[identity]["key"].read_bytes(),
            "certificate_chain": pki[identity]["cert"].read_bytes(),
        }
    client = eventline.Client(
        target, api_key=API_KEY, root_certificates=pki["server_ca"]["cert"].read_bytes(), **extra
    )
    client.track("refused")  # never raises for the network
    assert client.shutdown(timeout=2) == eventline.Counts(failed=1)
    with pytest.raises(grpc.RpcError) as query:  # queries do raise, as UNAVAILABLE
        client.count_events(event_type="refused")
    assert query.value.code() == grpc.StatusCode.UNAVAILABLE
    client.close()
    assert handshake_failures(server) >= 1

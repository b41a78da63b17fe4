"""The chart and the binary cannot drift: the real `eventline` binary, started with exactly
the args and environment of the rendered migration Job and Deployment (database pointed at
a fresh test PostgreSQL, ports on free loopback ports), migrates, starts and reports ready;
every EVENTLINE_* name the chart sets is a setting the binary accepts; the TLS render, with
real certificates mounted as the kubelet mounts its Secrets, serves TLS and mTLS, passes its
probes on the plaintext metrics port and picks up a renewed certificate; the Citus render's
migration Job refuses a database without the citus extension."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import (
    EXTERNAL_DATABASE,
    FULLNAME,
    REPO,
    SECRET_SETTINGS,
    admin_database_url,
    binary_settings,
    chart_values,
    find,
    flatten,
    free_port,
    grpc_serving,
    http_request,
    readme_config,
    readme_settings,
    render_objects,
    rendered_containers,
    require_tool,
    run_spec,
    run_to_completion,
    setting_of,
    start_server,
    user_secrets,
)


def test_migration_job_command_migrates(chart_server):
    assert "migrations applied" in chart_server.migrated.stdout


def test_deployment_command_starts_and_reports_ready(chart_server):
    assert grpc_serving(chart_server.grpc)
    status, body = http_request(f"{chart_server.http}/readyz")
    assert status == 200, body
    status, _ = http_request(f"{chart_server.http}/healthz")
    assert status == 200
    status, metrics = http_request(chart_server.metrics)
    assert status == 200 and "eventline_writer_queue_events" in metrics


def test_rendered_env_is_what_the_binary_runs_with(chart_server):
    env = chart_server.spec.env
    # Everything the chart sets except the adapted addresses, database and data dir is
    # passed through untouched: the generated bootstrap key works against the server.
    key = env["EVENTLINE_BOOTSTRAP_API_KEY"]
    assert key.startswith("elk_") and len(key) >= 20
    assert len(env["EVENTLINE_ADMIN_TOKEN"]) >= 16
    status, body = http_request(
        f"{chart_server.http}/v1/events", method="POST", body={"event_type": "helm_check"}, headers={"X-API-Key": key}
    )
    assert status == 201, body
    status, body = http_request(
        f"{chart_server.http}/v1/events", method="POST", body={"event_type": "helm_check"}, headers={"X-API-Key": "elk_wrong_key_0123456789abcdef"}
    )
    assert status == 401, body
    # JSON logs, as configured through the chart (stdout's start-up banner is plain text).
    assert env["EVENTLINE_LOG_FORMAT"] == "json"
    records = [json.loads(line) for line in chart_server.log_text().splitlines() if line.startswith("{")]
    assert any(record.get("level") == "INFO" for record in records), chart_server.log_text()


def test_every_chart_setting_reaches_a_binary_that_knows_it(eventline_bin, make_database, workdir):
    """Every README setting, set under config: (or from the user's Secrets for the secret
    ones), is accepted by `eventline migrate` run with the rendered Job environment; so are
    the values.yaml defaults (the chart_server fixture). A misspelt key in a known section
    is refused by name: the binary's config denies unknown keys."""
    database_url = make_database()
    # Every README setting with a literal default, through the chart's template.
    objects = render_objects({**EXTERNAL_DATABASE, "config": readme_config()}) + user_secrets(database_url)
    server_container, migrate_container = rendered_containers(objects)
    ports = {"grpc": free_port(), "http": free_port(), "metrics": free_port()}
    spec = run_spec(migrate_container, objects, database_url, str(workdir / "data-migrate"), ports)
    # The read replica URL comes from the user's Secret, through the rendered env.
    assert spec.env["EVENTLINE_DATABASE_READ_URL"] == database_url
    server_env = run_spec(server_container, objects, database_url, str(workdir / "data-migrate"), ports).env
    assert server_env["EVENTLINE_BOOTSTRAP_API_KEY"] == "elk_user_bootstrap_key_0123456789"
    result = run_to_completion(eventline_bin, spec)
    assert result.returncode == 0, result.stdout + result.stderr

    spec.env["EVENTLINE_WRITER_QUEUE_EVENTZ"] = "5"
    refused = run_to_completion(eventline_bin, spec)
    assert refused.returncode != 0
    assert "queue_eventz" in refused.stderr, refused.stderr


def test_citus_migration_job_command_fails_the_install_on_a_database_without_citus(eventline_bin, make_database, workdir):
    """database.citus: the rendered Job's `migrate --require-citus`, pointed at a plain
    PostgreSQL, exits 1 naming the fix instead of installing single-node (on a Citus
    coordinator it distributes: scripts/test-citus runs that half)."""
    database_url = make_database()
    values = {**EXTERNAL_DATABASE, "database": {**EXTERNAL_DATABASE["database"], "citus": True}}
    objects = render_objects(values) + user_secrets(database_url)
    _, migrate_container = rendered_containers(objects)
    ports = {"grpc": free_port(), "http": free_port(), "metrics": free_port()}
    spec = run_spec(migrate_container, objects, database_url, str(workdir / "data-citus"), ports)
    assert spec.args == ["migrate", "--require-citus"]
    result = run_to_completion(eventline_bin, spec)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no citus extension" in result.stderr and "CREATE EXTENSION citus" in result.stderr, result.stderr


def test_sigterm_drains_within_the_grace_period(chart_server, eventline_bin, workdir):
    """A second replica from the same rendered Deployment stops cleanly on SIGTERM within
    terminationGracePeriodSeconds minus the preStop sleep."""
    server_container, _ = rendered_containers(chart_server.objects)
    pod = [o for o in chart_server.objects if o["kind"] == "Deployment"][0]["spec"]["template"]["spec"]
    budget = pod["terminationGracePeriodSeconds"] - server_container["lifecycle"]["preStop"]["sleep"]["seconds"]
    ports = {"grpc": free_port(), "http": free_port(), "metrics": free_port()}
    spec = run_spec(server_container, chart_server.objects, chart_server.spec.env["EVENTLINE_DATABASE_URL"], str(workdir / "data2"), ports)
    replica = start_server(eventline_bin, spec, workdir)
    code = replica.stop(signal.SIGTERM, timeout=budget)
    assert code == 0, f"exit {code} after SIGTERM:\n{replica.log_text()}"


def test_wait_for_postgresql_init_container_waits_then_passes():
    """The bundled-database init container's command, run here with the machine's
    pg_isready: it returns once PostgreSQL answers and keeps waiting while nothing does."""
    require_tool("pg_isready")
    for kind in ("Deployment", "Job"):
        objects = render_objects()
        pod = next(o for o in objects if o["kind"] == kind)["spec"]["template"]["spec"]
        (init,) = pod["initContainers"]
        env = {e["name"]: e["value"] for e in init["env"]}
        assert env["HOST"] == f"{FULLNAME}-postgresql" and env["PORT"] == "5432"
        admin = urllib.parse.urlsplit(admin_database_url())
        up = subprocess.run(init["command"], env={**os.environ, "HOST": admin.hostname, "PORT": str(admin.port or 5432)}, capture_output=True, timeout=30)
        assert up.returncode == 0, up.stdout + up.stderr
        with pytest.raises(subprocess.TimeoutExpired):
            subprocess.run(init["command"], env={**os.environ, "HOST": "127.0.0.1", "PORT": str(free_port())}, capture_output=True, timeout=3)


@pytest.fixture(scope="module")
def known_to_binary(eventline_bin, workdir) -> set[str]:
    directory = workdir / "settings-probe"
    directory.mkdir()
    return binary_settings(eventline_bin, directory)


def test_readme_settings_are_settings_the_binary_knows(known_to_binary):
    unknown = set(readme_settings()) - known_to_binary
    assert not unknown, f"the README's Configuration table lists settings the binary does not know: {sorted(unknown)}"


def test_every_eventline_name_the_chart_can_set_is_a_binary_setting(known_to_binary):
    """Authoritative for sections too: the binary ignores EVENTLINE_<unknown section>_*
    variables (its env provider keeps only its own sections), so a name outside its
    settings would be dropped silently, where an unknown key in a known section fails."""
    production = yaml.safe_load((REPO / "helm" / "examples" / "values-production.yaml").read_text())
    for values in ({}, {**EXTERNAL_DATABASE, "config": readme_config()}, production):
        for container in rendered_containers(render_objects(values)):
            for entry in container["env"]:
                if entry["name"].startswith("EVENTLINE_"):
                    assert setting_of(entry["name"]) in known_to_binary, f"{entry['name']} is not a setting of the binary"
    documented = set(readme_settings())
    # Left to the server on purpose: no rate limit by default, the TLS paths come from the
    # tls.* values, no EVENTLINE_TLS_* variable is set while TLS is off, tracing is off
    # until an OTLP endpoint is given, and NATS subscriptions until a NATS server is.
    unset_on_purpose = {"limits.events_per_second_per_key", "tls.cert_path", "tls.key_path",
                        "tls.client_ca_path", "tls.reload_interval_ms", "tracing.otlp_endpoint",
                        "streams.nats_url"}
    in_values = set(flatten(chart_values()["config"])) | SECRET_SETTINGS | unset_on_purpose
    undocumented = sorted(known_to_binary - documented)
    if undocumented or known_to_binary - in_values:
        # Not a failure: config: sets any of them without a chart change. The README's
        # table (and then values.yaml's defaults) should catch up.
        warnings.warn(
            f"binary settings missing from the README's Configuration table: {undocumented}; "
            f"without a default in values.yaml: {sorted(known_to_binary - in_values)}",
            stacklevel=1,
        )


# --- TLS: the TLS render with real certificates ------------------------------------------


@pytest.fixture(scope="module")
def tls_binary(eventline_bin) -> str:
    """The binary, which must have TLS (`serve --help` lists --tls-cert): an older one
    fails the test, never skips it."""
    help_text = subprocess.run([eventline_bin, "serve", "--help"], capture_output=True, text=True, timeout=60).stdout
    if "--tls-cert" not in help_text:
        pytest.fail(f"{eventline_bin} has no TLS settings (`serve --help` lists no --tls-cert): rebuild it")
    return eventline_bin


@dataclass
class Certificates:
    server_crt: Path
    server_key: Path
    renewed_crt: Path
    renewed_key: Path
    ca_crt: Path
    client_crt: Path
    client_key: Path


def make_certificates(directory: Path) -> Certificates:
    """A server certificate for localhost and 127.0.0.1, its renewal (a new key), a client
    CA and a client certificate it signed."""
    openssl = require_tool("openssl")

    def run(*args):
        result = subprocess.run([openssl, *args], cwd=directory, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"openssl {' '.join(args)}: {result.stderr}"

    def self_signed(name, subject, *extra):
        run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
            "-subj", subject, *extra, "-keyout", f"{name}.key", "-out", f"{name}.crt")

    for name in ("server", "renewed"):
        self_signed(name, "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1")
    self_signed("ca", "/CN=eventline test client CA")
    run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", "/CN=eventline test client", "-keyout", "client.key", "-out", "client.csr")
    (directory / "client.ext").write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
    run("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
        "-extfile", "client.ext", "-out", "client.crt")
    d = directory
    return Certificates(d / "server.crt", d / "server.key", d / "renewed.crt", d / "renewed.key", d / "ca.crt", d / "client.crt", d / "client.key")


class SecretVolume:
    """A Secret volume laid out as the kubelet writes one: the files in a timestamped
    directory, `..data` pointing at it and one symlink per key through `..data`. An update
    writes a new directory and swaps `..data` with one rename, so a reader of the mounted
    directory sees the old files or the new ones, never a mix (a subPath mount would keep
    the old files for good)."""

    def __init__(self, path: Path, files: dict[str, bytes]):
        self.path = path
        self.generation = 0
        path.mkdir(parents=True)
        self.update(files)
        for key in files:
            (path / key).symlink_to(f"..data/{key}")

    def update(self, files: dict[str, bytes]) -> None:
        self.generation += 1
        data = self.path / "..data"
        previous = data.resolve() if data.exists() else None
        target = self.path / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{self.generation}"
        target.mkdir()
        for key, content in files.items():
            (target / key).write_bytes(content)
        (self.path / "..data_tmp").symlink_to(target.name)
        os.replace(self.path / "..data_tmp", data)
        if previous:
            shutil.rmtree(previous)


def mount_secret_volumes(container: dict, pod: dict, secrets: dict[str, dict[str, bytes]], root: Path, env: dict[str, str]) -> dict[str, SecretVolume]:
    """Every Secret volume the container mounts, filled from `secrets` (name -> files) under
    `root`; env values under a mountPath are pointed at the same file there, which must be
    one of the Secret's keys."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounted = {}
    for mount in container["volumeMounts"]:
        source = volumes[mount["name"]].get("secret")
        if source is None:
            continue
        assert mount.get("readOnly") is True and "subPath" not in mount, mount
        volume = SecretVolume(root / mount["name"], secrets[source["secretName"]])
        mounted[mount["name"]] = volume
        prefix = mount["mountPath"].rstrip("/") + "/"
        for name, value in env.items():
            if value.startswith(prefix):
                local = volume.path / value.removeprefix(prefix)
                assert local.is_file(), f"{name}={value}: Secret {source['secretName']} has no key {value.removeprefix(prefix)}"
                env[name] = str(local)
    return mounted


def probe_passes(probe: dict, container: dict, ports: dict[str, int]) -> bool:
    """A kubelet httpGet probe (plaintext, 200-399) against the adapted ports."""
    get = probe["httpGet"]
    assert get.get("scheme", "HTTP") == "HTTP", probe
    port = get["port"]
    if isinstance(port, int):
        port = next(p["name"] for p in container["ports"] if p["containerPort"] == port)
    try:
        status, _ = http_request(f"http://127.0.0.1:{ports[port]}{get['path']}", timeout=2)
    except (OSError, http.client.HTTPException):
        return False
    return 200 <= status < 400


def tls_context(certs: Certificates, *, client_certificate: bool = True) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(certs.server_crt))
    context.load_verify_locations(cafile=str(certs.renewed_crt))
    if client_certificate:
        context.load_cert_chain(str(certs.client_crt), str(certs.client_key))
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def served_certificate(port: int, context: ssl.SSLContext) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with context.wrap_socket(sock, server_hostname="localhost") as tls:
            return tls.getpeercert(binary_form=True)


def https_request(url: str, context: ssl.SSLContext, *, method: str = "GET", body: object | None = None, headers: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def grpc_health(addr: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [require_tool("grpcurl"), *flags, "-max-time", "5", addr, "grpc.health.v1.Health/Check"],
        capture_output=True, text=True, timeout=30,
    )


def test_tls_render_serves_tls_and_mtls_probes_on_metrics_and_reloads_a_renewed_certificate(tls_binary, known_to_binary, make_database, workdir):
    """The TLS-on render with mTLS (plus a per-key rate limit and a short reload interval
    through config:), run by the real binary with real certificates laid out as the
    kubelet mounts the chart's Secret volumes: its startup, readiness and liveness probes
    pass on the plaintext metrics port; gRPC and HTTP speak TLS only and want a client
    certificate; a renewed certificate swapped in as the kubelet does is served without a
    restart; every EVENTLINE_* name it sets is a binary setting."""
    directory = workdir / "tls"
    directory.mkdir()
    certs = make_certificates(directory)
    values = {
        "tls": {"enabled": True, "existingSecret": "eventline-tls", "clientCaSecret": "eventline-client-ca"},
        "config": {"limits": {"events_per_second_per_key": 1000}, "tls": {"reload_interval_ms": 200}},
    }
    objects = render_objects(values)
    server_container, migrate_container = rendered_containers(objects)
    for container in (server_container, migrate_container):
        for entry in container["env"]:
            if entry["name"].startswith("EVENTLINE_"):
                assert setting_of(entry["name"]) in known_to_binary, f"{entry['name']} is not a setting of the binary"
    pod = find(objects, "Deployment", FULLNAME)["spec"]["template"]["spec"]
    database_url = make_database()
    ports = {"grpc": free_port(), "http": free_port(), "metrics": free_port()}
    data_dir = str(directory / "data")
    migrated = run_to_completion(tls_binary, run_spec(migrate_container, objects, database_url, data_dir, ports))
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr

    spec = run_spec(server_container, objects, database_url, data_dir, ports)
    # The user's Secrets: cert-manager's kubernetes.io/tls one and the client CA.
    secrets = {
        "eventline-tls": {"tls.crt": certs.server_crt.read_bytes(), "tls.key": certs.server_key.read_bytes()},
        "eventline-client-ca": {"ca.crt": certs.ca_crt.read_bytes()},
    }
    volumes = mount_secret_volumes(server_container, pod, secrets, directory / "volumes", spec.env)
    assert set(volumes) == {"tls", "client-ca"}
    assert {name for name, value in spec.env.items() if value.startswith(str(directory / "volumes"))} == {
        "EVENTLINE_TLS_CERT_PATH", "EVENTLINE_TLS_KEY_PATH", "EVENTLINE_TLS_CLIENT_CA_PATH",
    }
    assert spec.env["EVENTLINE_LIMITS_EVENTS_PER_SECOND_PER_KEY"] == "1000"

    server = start_server(tls_binary, spec, directory, ready=lambda s: probe_passes(server_container["startupProbe"], server_container, ports))
    try:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert probe_passes(server_container[probe], server_container, ports), f"{probe} {server_container[probe]} fails:\n{server.log_text()}"
        status, metrics = http_request(server.metrics)
        assert status == 200 and "eventline_writer_queue_events" in metrics, "the metrics port stays plaintext"

        # gRPC: TLS with a client certificate only.
        client = ("-cacert", str(certs.server_crt), "-cert", str(certs.client_crt), "-key", str(certs.client_key))
        checked = grpc_health(server.grpc, *client)
        assert checked.returncode == 0 and json.loads(checked.stdout).get("status") == "SERVING", checked.stderr
        assert grpc_health(server.grpc, "-plaintext").returncode != 0, "the gRPC port answers plaintext"
        assert grpc_health(server.grpc, "-cacert", str(certs.server_crt)).returncode != 0, "the gRPC port takes a client without a certificate"

        # HTTP: HTTPS with a client certificate only; the generated bootstrap key works.
        https = f"https://127.0.0.1:{ports['http']}"
        context = tls_context(certs)
        status, body = https_request(f"{https}/readyz", context)
        assert status == 200, body
        key = spec.env["EVENTLINE_BOOTSTRAP_API_KEY"]
        status, body = https_request(f"{https}/v1/events", context, method="POST", body={"event_type": "tls_check"}, headers={"X-API-Key": key})
        assert status == 201, body
        with pytest.raises((OSError, http.client.HTTPException)):
            https_request(f"{https}/readyz", tls_context(certs, client_certificate=False))
        try:
            status, _ = http_request(f"http://127.0.0.1:{ports['http']}/readyz", timeout=5)
            assert status != 200, "the HTTP port answers plaintext"
        except (OSError, http.client.HTTPException):
            pass

        # cert-manager renews: the kubelet swaps the Secret's files; no restart.
        original = ssl.PEM_cert_to_DER_cert(certs.server_crt.read_text())
        renewed = ssl.PEM_cert_to_DER_cert(certs.renewed_crt.read_text())
        assert {served_certificate(ports[name], context) for name in ("grpc", "http")} == {original}
        volumes["tls"].update({"tls.crt": certs.renewed_crt.read_bytes(), "tls.key": certs.renewed_key.read_bytes()})
        deadline = time.monotonic() + 15
        while {served_certificate(ports[name], context) for name in ("grpc", "http")} != {renewed}:
            assert time.monotonic() < deadline, f"the renewed certificate was not served within 15 s:\n{server.log_text()}"
            time.sleep(0.2)
        assert server.process.poll() is None
        checked = grpc_health(server.grpc, "-cacert", str(certs.renewed_crt), "-cert", str(certs.client_crt), "-key", str(certs.client_key))
        assert checked.returncode == 0, checked.stderr
    finally:
        server.stop(signal.SIGTERM)

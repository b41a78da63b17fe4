"""Shared helpers for the chart tests: rendering with the real Helm library, the README's
configuration table, a fresh PostgreSQL database per use, and the real `eventline`
binary started with exactly what the rendered chart gives its containers."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import helm_python
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "eventline"
RELEASE = "ev"
NAMESPACE = "ns"
FULLNAME = f"{RELEASE}-eventline"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/postgres"
# Settings that are secrets: the chart sets them from Secrets, never from `config:`.
SECRET_SETTINGS = {"database.url", "database.read_url", "admin.token", "bootstrap.api_key"}
# An external database and auth Secret managed by the user.
EXTERNAL_DATABASE = {
    "postgresql": {"enabled": False},
    "database": {"existingSecret": "eventline-db", "urlKey": "url", "readUrlKey": "read-url"},
    "existingSecret": "eventline-auth",
}


def user_secrets(database_url: str) -> list[dict]:
    """The Secrets EXTERNAL_DATABASE refers to, as a user would create them."""

    def secret(name, data):
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": encoded}

    return [
        secret("eventline-db", {"url": database_url, "read-url": database_url}),
        secret("eventline-auth", {"admin-token": "admin-token-0123456789abcdef", "bootstrap-api-key": "elk_user_bootstrap_key_0123456789"}),
    ]


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: run the chart tests with `bash scripts/test-helm`, which installs it")
    return path


# --- rendering ---------------------------------------------------------------------------


def render(values: dict | None = None, *, upgrade: bool = False) -> dict[str, str]:
    """Renders the chart offline with the real Helm library: template path -> text."""
    chart = helm_python.Chart.load(str(CHART))
    return chart.render(
        values or {},
        name=RELEASE,
        namespace=NAMESPACE,
        is_install=not upgrade,
        is_upgrade=upgrade,
    )


def render_objects(values: dict | None = None, **kwargs) -> list[dict]:
    """Every Kubernetes object the chart renders (NOTES.txt left out)."""
    objects = []
    for path, text in render(values, **kwargs).items():
        if path.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                objects.append(document)
    return objects


def find(objects: list[dict], kind: str, name: str | None = None) -> dict:
    matches = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in matches]}"
    return matches[0]


def kinds(objects: list[dict]) -> list[str]:
    return sorted(o["kind"] for o in objects)


def chart_env_names(container: dict) -> set[str]:
    return {entry["name"] for entry in container.get("env", [])}


# --- the README's configuration table ----------------------------------------------------


@dataclass
class Setting:
    key: str
    env: str
    default: str


def readme_settings() -> dict[str, Setting]:
    """Rows `| `key` | `ENV` … | default |` of the README's Configuration table."""
    text = (REPO / "README.md").read_text()
    match = re.search(r"^## Configuration\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, "README.md has no '## Configuration' section"
    settings = {}
    for line in match.group(1).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        key = cells[0].strip("`")
        env = re.match(r"`(EVENTLINE_[A-Z0-9_]+)`", cells[1])
        assert env, f"README Configuration row {key!r} names no EVENTLINE_* variable: {line}"
        settings[key] = Setting(key, env.group(1), cells[2])
    assert len(settings) >= 10, f"README Configuration table parsed to only {sorted(settings)}"
    return settings


def readme_literal(default: str) -> object | None:
    """A README default such as `256`, `1.0`, `["*"]` or `0.0.0.0:8080` as a values.yaml value;
    None for defaults that are not one literal (`unset: SQLite`)."""
    literal = re.match(r"`([^`]*)`", default)
    if not literal:
        return None
    text = literal.group(1)
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d+\.\d+", text):
        return float(text)
    if text.startswith("["):
        return json.loads(text)
    return text


# values.yaml deliberately differs from the binary's defaults only here: JSON logs for log
# collectors, and data.dir is a volume's mountPath, so it must be absolute.
CHART_OVERRIDES = {"log.format": "json", "data.dir": "/var/lib/eventline"}


def readme_config() -> dict:
    """A `config:` map setting every README setting that has a literal default to it (the
    secrets aside; CHART_OVERRIDES where the chart needs another value): what a user
    mirroring the table one to one would write."""
    config: dict = {}
    for key, setting in readme_settings().items():
        value = CHART_OVERRIDES.get(key, readme_literal(setting.default))
        if key in SECRET_SETTINGS or value is None:
            continue
        section, name = key.split(".", 1)
        config.setdefault(section, {})[name] = value
    return config


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    """{'grpc': {'addr': x}} -> {'grpc.addr': x}."""
    flat = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def chart_values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


# --- ports, PostgreSQL -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def admin_database_url() -> str:
    return os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def _with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def make_database():
    """Creates fresh `eventline_test_helm_*` databases; drops them at the end."""
    psql = require_tool("psql")
    admin = admin_database_url()
    created = []

    def create() -> str:
        name = f"eventline_test_helm_{uuid.uuid4().hex[:12]}"
        subprocess.run([psql, admin, "-qAt", "-c", f'CREATE DATABASE "{name}"'], check=True, capture_output=True)
        created.append(name)
        return _with_database(admin, name)

    yield create
    for name in created:
        subprocess.run([psql, admin, "-qAt", "-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'], capture_output=True)


# --- the binary, run as the chart runs it ------------------------------------------------


@pytest.fixture(scope="session")
def eventline_bin() -> str:
    path = os.environ.get("EVENTLINE_BIN")
    if not path:
        pytest.fail("EVENTLINE_BIN is not set: point it at an eventline binary (cargo build -p eventline)")
    if not os.access(path, os.X_OK):
        pytest.fail(f"EVENTLINE_BIN={path} is not an executable file")
    return path


def resolve_env(container: dict, objects: list[dict]) -> dict[str, str]:
    """The container's environment as the kubelet would build it: literal values, and
    secretKeyRefs read from the Secrets the chart rendered (optional ones may be absent)."""
    secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
    env = {}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        secret = secrets.get(ref["name"])
        data = (secret or {}).get("data", {})
        if ref["key"] in data:
            env[entry["name"]] = base64.b64decode(data[ref["key"]]).decode()
        else:
            assert ref.get("optional"), f"{entry['name']}: Secret {ref['name']} key {ref['key']} is not rendered and not optional"
    assert not container.get("envFrom"), "envFrom is not resolved by these tests"
    return env


@dataclass
class RunSpec:
    """A command line and environment taken from a rendered container, adapted to this
    machine: the database is the test's, listen addresses are free loopback ports and
    data.dir a temporary directory. Everything else is exactly as rendered."""

    args: list[str]
    env: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)


ADDR_SETTINGS = {"EVENTLINE_GRPC_ADDR": "grpc", "EVENTLINE_HTTP_ADDR": "http", "EVENTLINE_METRICS_ADDR": "metrics"}


def run_spec(container: dict, objects: list[dict], database_url: str, data_dir: str, ports: dict[str, int]) -> RunSpec:
    env = resolve_env(container, objects)
    assert "EVENTLINE_DATABASE_URL" in env, "the chart sets no EVENTLINE_DATABASE_URL"
    env["EVENTLINE_DATABASE_URL"] = database_url
    env["EVENTLINE_DATA_DIR"] = data_dir
    for name, port_name in ADDR_SETTINGS.items():
        if name in env:
            env[name] = f"127.0.0.1:{ports[port_name]}"
    command = list(container.get("command", [])) + list(container.get("args", []))
    return RunSpec(command, env, ports)


def process_env(spec_env: dict[str, str]) -> dict[str, str]:
    # Only the rendered variables reach the binary (plus PATH/HOME for the process itself).
    base = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    return {**base, **spec_env}


def grpc_serving(addr: str) -> bool:
    grpcurl = require_tool("grpcurl")
    result = subprocess.run(
        [grpcurl, "-plaintext", "-max-time", "2", addr, "grpc.health.v1.Health/Check"],
        capture_output=True,
        text=True,
    )
    return result.returncode == 0 and json.loads(result.stdout or "{}").get("status") == "SERVING"


@dataclass
class Server:
    process: subprocess.Popen
    spec: RunSpec
    log: Path

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.spec.ports['grpc']}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.spec.ports['http']}"

    @property
    def metrics(self) -> str:
        return f"http://127.0.0.1:{self.spec.ports['metrics']}/metrics"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGKILL, timeout: float = 60) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return None
        return self.process.returncode


def run_to_completion(binary: str, spec: RunSpec, timeout: float = 120) -> subprocess.CompletedProcess:
    assert spec.args, "the container has no args"
    return subprocess.run([binary, *spec.args], env=process_env(spec.env), capture_output=True, text=True, timeout=timeout)


def start_server(binary: str, spec: RunSpec, workdir: Path, timeout: float = 60, ready=None) -> Server:
    """Starts the binary and waits until `ready(server)` (default: grpc.health.v1 says
    SERVING over plaintext gRPC)."""
    log = workdir / f"eventline-{spec.ports['grpc']}.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen([binary, *spec.args], env=process_env(spec.env), stdout=sink, stderr=subprocess.STDOUT)
    server = Server(process, spec, log)
    ready = ready or (lambda s: grpc_serving(s.grpc))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"eventline {' '.join(spec.args)} exited with {process.returncode}:\n{server.log_text()}")
        if ready(server):
            return server
        time.sleep(0.2)
    server.stop()
    pytest.fail(f"eventline did not report ready within {timeout} s:\n{server.log_text()}")


def _expected_fields(binary: str, toml: str, directory: Path) -> list[str]:
    """The field names the binary's config error lists for an unknown key in `toml`."""
    path = directory / "probe.toml"
    path.write_text(toml)
    env = process_env({"EVENTLINE_DATA_DIR": str(directory / "data")})
    result = subprocess.run([binary, "migrate", "--config", str(path)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0, f"the binary accepted an unknown setting: {toml!r}"
    match = re.search(r"unknown field: found `zz_not_a_setting`, expected `(.*)` for key", result.stderr)
    assert match, f"unexpected error for an unknown setting: {result.stderr}"
    # serde: "`a`", "`a` or `b`", "one of `a`, `b`, `c`".
    return re.findall(r"`([a-z_]+)`", match.group(1))


def binary_settings(binary: str, directory: Path) -> set[str]:
    """Every setting the binary knows, as it says itself: its config denies unknown
    fields and names the expected ones, for the sections and for each section's keys."""
    sections = _expected_fields(binary, "[zz_not_a_setting]\nx = 1\n", directory)
    assert "grpc" in sections and "writer" in sections, sections
    settings = set()
    for section in sections:
        keys = _expected_fields(binary, f"[{section}]\nzz_not_a_setting = 1\n", directory)
        settings |= {f"{section}.{key}" for key in keys}
    return settings


def setting_of(env_name: str) -> str:
    """EVENTLINE_GRPC_MAX_CONNECTIONS -> grpc.max_connections, as the binary maps it (the
    first underscore after the prefix splits section and key)."""
    return env_name.removeprefix("EVENTLINE_").lower().replace("_", ".", 1)


def rendered_containers(objects: list[dict]) -> tuple[dict, dict]:
    deployment = find(objects, "Deployment", FULLNAME)
    job = find(objects, "Job", f"{FULLNAME}-migrate")
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    return server, migrate


@pytest.fixture(scope="session")
def workdir():
    path = Path(tempfile.mkdtemp(prefix="eventline-helm-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def chart_server(eventline_bin, make_database, workdir):
    """The real binary run with the default chart's Deployment args and env, after the
    migration Job's command ran to completion on the same fresh database."""
    objects = render_objects()
    server_container, migrate_container = rendered_containers(objects)
    database_url = make_database()
    ports = {"grpc": free_port(), "http": free_port(), "metrics": free_port()}
    data_dir = str(workdir / "data")
    migrate = run_spec(migrate_container, objects, database_url, data_dir, ports)
    migrated = run_to_completion(eventline_bin, migrate)
    assert migrated.returncode == 0, f"`eventline {' '.join(migrate.args)}` failed:\n{migrated.stdout}\n{migrated.stderr}"
    spec = run_spec(server_container, objects, database_url, data_dir, ports)
    server = start_server(eventline_bin, spec, workdir)
    server.migrated = migrated
    server.objects = objects
    yield server
    server.stop()


def http_request(url: str, *, method: str = "GET", body: object | None = None, headers: dict | None = None, timeout: float = 10):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()

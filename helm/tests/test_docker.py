"""The Dockerfile: hadolint, and what the chart relies on (non-root, entrypoint, ports, the
build context holding every workspace member)."""

from __future__ import annotations

import re
import subprocess
import tomllib

from conftest import REPO, chart_values, require_tool

DOCKERFILE = (REPO / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.+)$", DOCKERFILE, re.M)]


def test_hadolint_finds_nothing():
    result = subprocess.run(
        [require_tool("hadolint"), "--failure-threshold", "info", "Dockerfile"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_non_root_with_the_entrypoint_and_ports_the_chart_uses():
    stages = instructions("FROM")
    assert len(stages) == 2 and stages[0].endswith(" AS build")
    assert stages[1].startswith("gcr.io/distroless/cc-debian12:nonroot")
    (user,) = instructions("USER")
    assert user.split(":")[0] == "65532"
    assert chart_values()["podSecurityContext"]["runAsUser"] == 65532
    assert instructions("ENTRYPOINT") == ['["eventline"]']
    assert instructions("CMD") == ['["serve"]']
    (exposed,) = instructions("EXPOSE")
    config = chart_values()["config"]
    ports = {config[name]["addr"].rsplit(":", 1)[1] for name in ("grpc", "http", "metrics")}
    assert set(exposed.split()) == ports == {"50051", "8080", "9090"}


def test_build_context_holds_every_workspace_member():
    members = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["members"]
    copied = {line.split()[0].rstrip("/") for line in instructions("COPY") if not line.startswith("--")}
    allowed = {line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    assert {"Cargo.toml", "Cargo.lock"} <= allowed
    for member in members:
        top = member.split("/")[0]
        assert top in copied, f"workspace member {member} is not copied into the build stage"
        assert top in allowed, f"workspace member {member} is excluded by .dockerignore"
    # build.rs reads ../../proto; sqlx embeds migrations/; the gateway embeds console/dist.
    assert {"proto", "migrations", "console/dist"} <= copied & allowed


def test_build_stage_uses_the_workspace_rust_version():
    rust_version = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["package"]["rust-version"]
    assert f"ARG RUST_VERSION={rust_version}" in DOCKERFILE

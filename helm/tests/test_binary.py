"""The chart and the binary cannot drift: the real `eventline` binary, started with exactly
the args and environment of the rendered migration Job and Deployment (database pointed at
a fresh test PostgreSQL, ports on free loopback ports), migrates, starts and reports ready;
every EVENTLINE_* name the chart sets is a setting the binary accepts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.parse
import warnings

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
    in_values = set(flatten(chart_values()["config"])) | SECRET_SETTINGS
    undocumented = sorted(known_to_binary - documented)
    if undocumented or known_to_binary - in_values:
        # Not a failure: config: sets any of them without a chart change. The README's
        # table (and then values.yaml's defaults) should catch up.
        warnings.warn(
            f"binary settings missing from the README's Configuration table: {undocumented}; "
            f"without a default in values.yaml: {sorted(known_to_binary - in_values)}",
            stacklevel=1,
        )

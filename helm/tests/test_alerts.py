"""promtool on exactly the rule groups the chart ships: `check rules`, then the unit tests
in alerts_test.yaml, where every alert fires in one case and stays silent in another."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import find, render_objects, require_tool

HERE = Path(__file__).resolve().parent
MONITORING = {"monitoring": {"assumeCRDs": True, "prometheusRule": {"enabled": True}}}


def shipped_groups() -> list[dict]:
    return find(render_objects(MONITORING), "PrometheusRule")["spec"]["groups"]


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("rules")
    (directory / "rules.yaml").write_text(yaml.safe_dump({"groups": shipped_groups()}, sort_keys=False))
    shutil.copy(HERE / "alerts_test.yaml", directory / "alerts_test.yaml")
    return directory


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_check_rules(rules_dir):
    result = promtool("check", "rules", "rules.yaml", cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 11 rules found" in result.stdout


def test_promtool_unit_tests_pass(rules_dir):
    result = promtool("test", "rules", "alerts_test.yaml", cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_case():
    alerts = {rule["alert"] for group in shipped_groups() for rule in group["rules"]}
    expected = {
        "EventlineGrpcErrorRatioHigh",
        "EventlineHttpErrorRatioHigh",
        "EventlineLatencyP99High",
        "EventlineIngestStalled",
        "EventlineEventTypeSpike",
        "EventlineWriterQueueNearFull",
        "EventlineNotReady",
        "EventlineRequestMemoryBudgetRefusing",
        "EventlineReplicaLagging",
        "EventlineDown",
        "EventlineRestarting",
    }
    assert alerts == expected
    cases = yaml.safe_load((HERE / "alerts_test.yaml").read_text())["tests"]
    fires, silent = set(), set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else silent).add(check["alertname"])
    assert fires == alerts, f"alerts never shown firing: {alerts - fires}"
    assert silent == alerts, f"alerts never shown staying silent: {alerts - silent}"


def test_every_rule_selects_this_release_only():
    for group in shipped_groups():
        for rule in group["rules"]:
            assert 'namespace="ns", job="ev-eventline"' in rule["expr"], rule["alert"]
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_queue_alert_follows_the_configured_queue_size():
    values = {"monitoring": {"assumeCRDs": True, "prometheusRule": {"enabled": True}}, "config": {"writer": {"queue_events": 250000}}}
    groups = find(render_objects(values), "PrometheusRule")["spec"]["groups"]
    (rule,) = [r for g in groups for r in g["rules"] if r["alert"] == "EventlineWriterQueueNearFull"]
    assert "/ 250000 > 0.8" in rule["expr"]

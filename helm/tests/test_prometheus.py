"""The dashboard and the rules against real data: a real Prometheus (Debian's package)
scrapes the eventline the chart's Deployment started while events are ingested and
queried, beside a second pod of the release whose reads go to a read URL (the replica
lag gauges exist only there); every metric the dashboard and the rules name is in
/metrics, every rule evaluates without error, and every dashboard panel's query returns
data."""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import (
    CHART,
    EXTERNAL_DATABASE,
    FULLNAME,
    NAMESPACE,
    REPO,
    find,
    free_port,
    http_request,
    render_objects,
    rendered_containers,
    require_tool,
    run_spec,
    start_server,
    user_secrets,
)

DASHBOARD = json.loads((CHART / "files" / "dashboard.json").read_text())
# Grafana's variables, as a user of this release would pick them.
VARIABLES = {"$namespace": NAMESPACE, "$job": FULLNAME, "$__rate_interval": "1m", "$__range": "1h"}
# Series Prometheus makes itself rather than reads from /metrics.
SYNTHETIC = {"up"}
# Counters of rare events, which the server registers at zero so that a rule's
# `increase()` sees the first one (an absent series has no increase to show).
RARE_COUNTERS = {"eventline_budget_refusals_total", "eventline_connections_evicted_total"}
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")


def panel_queries() -> list[tuple[str, str]]:
    queries = []
    for panel in DASHBOARD["panels"]:
        for target in panel.get("targets") or []:
            queries.append((f"{panel['title']} [{target['refId']}]", target["expr"]))
    return queries


def rule_groups() -> list[dict]:
    values = {"monitoring": {"assumeCRDs": True, "prometheusRule": {"enabled": True}}}
    return find(render_objects(values), "PrometheusRule")["spec"]["groups"]


def used_metric_names() -> set[str]:
    used = set()
    for _, expr in panel_queries():
        used |= set(SELECTOR.findall(expr))
    for group in rule_groups():
        for rule in group["rules"]:
            used |= set(SELECTOR.findall(rule["expr"]))
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "query":
            used |= set(SELECTOR.findall(variable["definition"] + "{")) - {"label_values"}
    return used


def readme_metrics() -> set[str]:
    text = (REPO / "README.md").read_text()
    section = re.search(r"^### Metrics\n(.*?)(?=^##)", text, re.S | re.M)
    assert section, "README.md has no '### Metrics' section"
    return set(re.findall(r"`(eventline_[a-z_]+)", section.group(1)))


def test_dashboard_and_rules_use_only_the_readme_metrics():
    """Names as the README documents them; histograms appear as _bucket, _count, _sum."""
    documented = readme_metrics()
    assert len(documented) >= 10
    for name in used_metric_names() - SYNTHETIC:
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        assert name in documented or base in documented, f"{name} is not in the README's Metrics section"


def substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unresolved variable in {expr}"
    return expr


def metric_names(text: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


class Prometheus:
    def __init__(self, url: str, process: subprocess.Popen, log: Path):
        self.url, self.process, self.log = url, process, log

    def get(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params)
        status, body = http_request(f"{self.url}{path}{'?' + query if query else ''}")
        assert status == 200, f"{path} {params}: {status} {body}"
        return json.loads(body)

    def query(self, expr: str) -> list[dict]:
        answer = self.get("/api/v1/query", query=expr)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]


@pytest.fixture(scope="module")
def replica_reader(chart_server, eventline_bin, workdir):
    """A second pod of the release, from the render for an external database whose Secret
    also holds a read URL (database.readUrlKey): only a pod whose reads go to a replica
    exports eventline_replica_lag_*. The read URL is chart_server's database, a primary,
    so the lag it reports is 0."""
    database_url = chart_server.spec.env["EVENTLINE_DATABASE_URL"]
    objects = render_objects(EXTERNAL_DATABASE) + user_secrets(database_url)
    server_container, _ = rendered_containers(objects)
    ports = {"grpc": free_port(), "http": free_port(), "metrics": free_port()}
    spec = run_spec(server_container, objects, database_url, str(workdir / "data-replica-reader"), ports)
    assert spec.env["EVENTLINE_DATABASE_READ_URL"] == database_url
    server = start_server(eventline_bin, spec, workdir)
    yield server
    server.stop()


def target(server) -> str:
    return server.metrics.removeprefix("http://").removesuffix("/metrics")


@pytest.fixture(scope="module")
def prometheus(chart_server, replica_reader, workdir):
    binary = require_tool("prometheus")
    directory = workdir / "prometheus"
    directory.mkdir()
    (directory / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yaml"],
        # What a ServiceMonitor gives: job = the Service's name, a namespace label.
        "scrape_configs": [{"job_name": FULLNAME, "static_configs": [{"targets": [target(chart_server), target(replica_reader)], "labels": {"namespace": NAMESPACE}}]}],
    }
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = directory / "prometheus.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=directory,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"prometheus exited with {process.returncode}:\n{log.read_text()}")
        try:
            if http_request(f"{server.url}/-/ready", timeout=1)[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.2)
    else:
        process.kill()
        pytest.fail(f"prometheus was not ready within 30 s:\n{log.read_text()}")
    yield server
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def grpcurl(server, key: str, method: str, body: dict) -> dict:
    result = subprocess.run(
        [require_tool("grpcurl"), "-plaintext", "-max-time", "10", "-H", f"x-api-key: {key}", "-d", json.dumps(body), server.grpc, method],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, f"{method}: {result.stderr}"
    return json.loads(result.stdout or "{}")


def drive_traffic(server, rounds: int) -> None:
    """Ingest (accepted, duplicate, rejected; several types) over REST and gRPC, and query."""
    key = server.spec.env["EVENTLINE_BOOTSTRAP_API_KEY"]
    headers = {"X-API-Key": key}
    for round_number in range(rounds):
        events = [{"event_type": kind, "user_id": f"u{n}"} for n, kind in enumerate(["signup", "view", "view", "purchase"] * 5)]
        events += [{"event_type": "view", "event_id": "always-the-same"}, {"event_type": ""}]
        status, body = http_request(f"{server.http}/v1/events:batch", method="POST", body={"events": events}, headers=headers)
        assert status == 200, body
        results = json.loads(body)["results"]
        assert len(results) == len(events)
        grpcurl(server, key, "eventline.v1.IngestService/Track", {"event": {"event_type": "signup", "event_id": f"t-{uuid.uuid4()}"}})
        status, body = http_request(f"{server.http}/v1/stats/count?event_type=view", headers=headers)
        assert status == 200, body
        grpcurl(server, key, "eventline.v1.QueryService/TopEventTypes", {"limit": 5})
        if round_number:
            time.sleep(0.5)


@pytest.fixture(scope="module")
def scraped(chart_server, prometheus):
    """Traffic, a live tail, then wait (bounded) until Prometheus holds the final counts."""
    key = chart_server.spec.env["EVENTLINE_BOOTSTRAP_API_KEY"]
    tail = subprocess.Popen(
        [require_tool("grpcurl"), "-plaintext", "-H", f"x-api-key: {key}", "-d", "{}", chart_server.grpc, "eventline.v1.QueryService/TailEvents"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Traffic only after Prometheus's first scrape of both pods, so its samples see
        # counters rise.
        deadline = time.monotonic() + 30
        while len(prometheus.query(f'up{{job="{FULLNAME}"}} == 1')) < 2:
            assert time.monotonic() < deadline, f"Prometheus did not scrape both pods within 30 s: {prometheus.query('up')}"
            time.sleep(0.2)
        drive_traffic(chart_server, rounds=8)
        status, text = http_request(chart_server.metrics)
        assert status == 200
        accepted = next(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith('eventline_ingest_events_total{outcome="accepted"}')
        )
        deadline = time.monotonic() + 30
        expr = f'sum(eventline_ingest_events_total{{job="{FULLNAME}", outcome="accepted"}})'
        while time.monotonic() < deadline:
            result = prometheus.query(expr)
            if result and float(result[0]["value"][1]) >= accepted:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"Prometheus did not scrape {accepted} accepted events within 30 s: {prometheus.query(expr)}")
        # A few more scrapes so every rate window holds several samples after the traffic.
        time.sleep(3)
        yield text
    finally:
        tail.kill()
        tail.wait()


def test_every_metric_the_dashboard_and_rules_use_is_exported(scraped, replica_reader):
    status, replica_text = http_request(replica_reader.metrics)
    assert status == 200
    assert {"eventline_replica_lag_bytes", "eventline_replica_lag_seconds"} <= metric_names(replica_text)
    exported = metric_names(scraped) | metric_names(replica_text)
    used = used_metric_names()
    missing = used - exported - SYNTHETIC
    assert not missing, f"not in /metrics: {sorted(missing)}"
    assert len(used) >= 10
    assert RARE_COUNTERS <= used, "a rare counter no panel or rule uses"


def test_rare_counters_are_exported_at_zero_before_their_first_event(scraped):
    values = {
        line.split()[0]: float(line.split()[1])
        for line in scraped.splitlines()
        if line and not line.startswith("#") and line.split()[0] in RARE_COUNTERS
    }
    assert values == {name: 0.0 for name in RARE_COUNTERS}


# Panels that are 0 on a healthy, idle-queued server; every other one shows activity.
# The budget is held only while a request is in flight; refusals and evictions need a
# server at its limits (their queries return 0 through `or vector(0)` until then). The
# replica_reader's read URL is the primary itself, which is never behind.
MAY_BE_ZERO = {"RPC server-error ratio", "Writer queue depth", "Request memory budget in use",
               "Budget refusals per second", "Evicted connections per second",
               "Rate-limited events per second", "Replica lag", "Replica WAL behind"}


@pytest.mark.parametrize(("panel", "expr"), panel_queries(), ids=[title for title, _ in panel_queries()])
def test_dashboard_panel_returns_data(scraped, prometheus, panel, expr):
    result = prometheus.query(substitute(expr))
    assert result, f"{panel}: no series for {substitute(expr)}"
    values = [float(series["value"][1]) for series in result]
    finite = [v for v in values if math.isfinite(v)]
    assert finite, f"{panel}: only NaN/Inf: {result}"
    if panel.rsplit(" [", 1)[0] not in MAY_BE_ZERO:
        assert max(finite) > 0, f"{panel}: all zero: {result}"


def test_dashboard_variables_find_this_release(scraped, prometheus):
    assert prometheus.get("/api/v1/label/namespace/values", **{"match[]": "eventline_writer_queue_events"})["data"] == [NAMESPACE]
    jobs = prometheus.get("/api/v1/label/job/values", **{"match[]": f'eventline_writer_queue_events{{namespace="{NAMESPACE}"}}'})["data"]
    assert jobs == [FULLNAME]


def test_every_rule_evaluates_against_real_series(scraped, prometheus):
    deadline = time.monotonic() + 20
    while True:
        rules = [r for g in prometheus.get("/api/v1/rules")["data"]["groups"] for r in g["rules"]]
        if rules and all(r.get("lastEvaluation", "").startswith("20") and r["health"] != "unknown" for r in rules):
            break
        assert time.monotonic() < deadline, f"rules not evaluated within 20 s: {rules}"
        time.sleep(0.5)
    assert len(rules) == 11
    broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not broken, broken
    # A healthy server under light traffic: nothing that signals an outage fires.
    firing = {r["name"] for r in rules if r["state"] == "firing"}
    assert not firing & {"EventlineDown", "EventlineNotReady", "EventlineIngestStalled"}, firing


def test_dashboard_is_well_formed_for_grafana():
    panels = DASHBOARD["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    assert DASHBOARD["uid"] == "eventline" and DASHBOARD["schemaVersion"] >= 36
    assert [v["name"] for v in DASHBOARD["templating"]["list"]] == ["datasource", "namespace", "job"]
    occupied = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["description"], panel["title"]
        for target in panel["targets"]:
            assert 'namespace="$namespace", job="$job"' in target["expr"], f"{panel['title']}: not scoped to the chosen release"
    titles = {panel["title"] for panel in panels}
    for wanted in ["RPCs per second", "RPC latency p95 / p99", "HTTP latency p95 / p99", "Events per second by outcome",
                   "Events per second by type", "Top event types", "Hourly traffic", "Writer batch size",
                   "Writer commit latency", "Writer queue depth", "Store operation latency p95", "Pool connections", "Live tails",
                   "Readiness", "Request memory budget in use", "Budget refusals per second", "Evicted connections per second",
                   "Replica lag", "Replica WAL behind"]:
        assert wanted in titles

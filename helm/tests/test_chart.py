"""Lint, render and validate the chart with the real Helm library and the Kubernetes
OpenAPI schemas of every version the chart claims; the values schema; what the templates
promise (probes, hardening, ports, checksums, secrets, monitoring)."""

from __future__ import annotations

import json
import re
import warnings

import helm_python
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml
from conftest import (
    CHART,
    CHART_OVERRIDES,
    EXTERNAL_DATABASE,
    FULLNAME,
    NAMESPACE,
    REPO,
    SECRET_SETTINGS,
    chart_env_names,
    chart_values,
    find,
    flatten,
    kinds,
    readme_config,
    readme_literal,
    readme_settings,
    render,
    render_objects,
    rendered_containers,
)

MONITORING = {
    "monitoring": {
        "assumeCRDs": True,
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboards": {"enabled": True},
    }
}
EVERYTHING_ON = {
    "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12, "targetMemoryUtilizationPercentage": 80},
    "podDisruptionBudget": {"enabled": True},
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "http": {"tls": [{"secretName": "eventline-tls", "hosts": ["eventline.example.com"]}]},
        "grpc": {"enabled": True, "tls": [{"secretName": "eventline-grpc-tls", "hosts": ["grpc.eventline.example.com"]}]},
    },
    "networkPolicy": {
        "enabled": True,
        "apiFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        "egress": {"enabled": True, "extraRules": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 5432, "protocol": "TCP"}]}]},
    },
}
# TLS from a cert-manager Secret, and mTLS with a client CA.
TLS_ON = {"tls": {"enabled": True, "existingSecret": "eventline-tls", "clientCaSecret": "eventline-client-ca"}}
# Set by the chart from tls.* rather than from config:; the README's Configuration table
# does not list the server's tls.* settings yet (test_binary.py checks them against the
# binary's own list of settings).
TLS_ENV = {
    "EVENTLINE_TLS_CERT_PATH": "/etc/eventline/tls/tls.crt",
    "EVENTLINE_TLS_KEY_PATH": "/etc/eventline/tls/tls.key",
    "EVENTLINE_TLS_CLIENT_CA_PATH": "/etc/eventline/client-ca/ca.crt",
}
# An external Citus coordinator: its URL in the user's Secret, migrate --require-citus.
CITUS = {**EXTERNAL_DATABASE, "database": {**EXTERNAL_DATABASE["database"], "citus": True}}
PRODUCTION_EXAMPLE = yaml.safe_load((REPO / "helm" / "examples" / "values-production.yaml").read_text())

SCENARIOS = {
    "citus-coordinator": CITUS,
    "defaults": {},
    "external-database": EXTERNAL_DATABASE,
    "hpa-pdb-ingress-networkpolicy": EVERYTHING_ON,
    "monitoring": MONITORING,
    "production-example": PRODUCTION_EXAMPLE,
    "tls-mtls": TLS_ON,
}
EXPECTED_KINDS = {
    "citus-coordinator": ["Deployment", "Job", "Service", "ServiceAccount"],
    "defaults": ["Deployment", "Job", "Secret", "Secret", "Service", "Service", "Service", "ServiceAccount", "StatefulSet"],
    "external-database": ["Deployment", "Job", "Service", "ServiceAccount"],
    "hpa-pdb-ingress-networkpolicy": [
        "Deployment", "HorizontalPodAutoscaler", "Ingress", "Ingress", "Job", "NetworkPolicy", "NetworkPolicy",
        "PodDisruptionBudget", "Secret", "Secret", "Service", "Service", "Service", "ServiceAccount", "StatefulSet",
    ],
    "monitoring": [
        "ConfigMap", "Deployment", "Job", "PrometheusRule", "Secret", "Secret", "Service", "Service", "Service",
        "ServiceAccount", "ServiceMonitor", "StatefulSet",
    ],
    # The TLS Secrets are the user's (cert-manager's): referenced, never rendered.
    "tls-mtls": ["Deployment", "Job", "Secret", "Secret", "Service", "Service", "Service", "ServiceAccount", "StatefulSet"],
}
# Prometheus Operator CRDs: no OpenAPI schema ships offline; test_crd_objects_are_consistent
# and test_alerts.py (promtool) check them instead.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}


def claimed_versions() -> list[str]:
    """Every minor version kubernetes-validate has schemas for that Chart.yaml's
    kubeVersion admits (`>=X.Y.Z-0`, optionally `<A.B.C-0`)."""
    constraint = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    lower = re.search(r">=\s*(\d+)\.(\d+)", constraint)
    upper = re.search(r"<\s*(\d+)\.(\d+)", constraint)
    assert lower, f"kubeVersion {constraint!r} has no lower bound"
    low = (int(lower.group(1)), int(lower.group(2)))
    high = (int(upper.group(1)), int(upper.group(2))) if upper else (99, 0)
    shipped = sorted(set(kubernetes_validate.utils.all_versions()), key=lambda v: tuple(map(int, v.split("."))))
    versions = [v for v in shipped if low <= tuple(map(int, v.split(".")[:2])) < high]
    assert versions and versions[0].startswith(f"{low[0]}.{low[1]}."), (
        f"kubeVersion {constraint!r} claims {low[0]}.{low[1]}, but kubernetes-validate ships no schema for it: {shipped}"
    )
    return versions


def helm_error(values: dict) -> str:
    with pytest.raises(helm_python.HelmError) as raised:
        render(values)
    return str(raised.value)


# --- lint and render ---------------------------------------------------------------------


def lint_problems(values: dict, kube_version: str) -> list:
    report = helm_python.lint(str(CHART), values, strict=True, namespace=NAMESPACE, kube_version=kube_version)
    return [m for m in report["messages"] if m["severity"] >= 2] + [{"error": e} for e in report.get("errors", [])]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_lint_strict_passes(scenario):
    for version in (claimed_versions()[0], claimed_versions()[-1]):
        assert not lint_problems(SCENARIOS[scenario], f"v{version}"), (version, lint_problems(SCENARIOS[scenario], f"v{version}"))


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_object_validates_for_every_claimed_kubernetes_version(scenario):
    objects = render_objects(SCENARIOS[scenario])
    if scenario in EXPECTED_KINDS:
        assert kinds(objects) == sorted(EXPECTED_KINDS[scenario])
    versions = claimed_versions()
    checked = 0
    for obj in objects:
        assert obj["metadata"].get("namespace", NAMESPACE) == NAMESPACE or obj["kind"] == "ConfigMap"
        if obj["kind"] in CRD_KINDS:
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} is invalid for Kubernetes {version}: {error.message} at {list(error.path)}")
            checked += 1
    assert checked >= len(versions) * 4


def test_claimed_versions_start_at_the_kube_version_floor():
    versions = claimed_versions()
    # The preStop sleep action is on by default from 1.30; the floor must not go lower.
    assert versions[0] == "1.30.0", versions
    assert "1.37.0" in versions


def test_crd_objects_are_consistent():
    objects = render_objects(MONITORING)
    service = find(objects, "Service", FULLNAME)
    monitor = find(objects, "ServiceMonitor")
    port_names = {port["name"] for port in service["spec"]["ports"]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert "metrics" in port_names
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    rule = find(objects, "PrometheusRule")
    assert [g["name"] for g in rule["spec"]["groups"]] == ["eventline"]
    dashboard = find(objects, "ConfigMap", f"{FULLNAME}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["eventline.json"]) == json.loads((CHART / "files" / "dashboard.json").read_text())


def test_monitoring_objects_need_the_operator_api_or_assume_crds():
    values = {"monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}}
    rendered = render(values)
    objects = render_objects(values)
    assert not {"ServiceMonitor", "PrometheusRule"} & set(kinds(objects))
    assert "no\nmonitoring.coreos.com/v1 API" in rendered["eventline/templates/NOTES.txt"]


# --- the values schema -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"replicaCount": "three"}, "replicaCount"),
        ({"replicas": 3}, "replicas"),
        ({"image": {"tagg": "1.0"}}, "tagg"),
        ({"service": {"ports": {"grpc": 70000}}}, "grpc"),
        ({"config": {"grpc": {"addr": "0.0.0.0:99999"}}}, "addr"),
        ({"config": {"http": {"addr": "8080"}}}, "addr"),
        ({"config": {"writer": {"queue_events": "lots"}}}, "queue_events"),
        ({"config": {"log": {"format": "xml"}}}, "format"),
        ({"config": {"database": {"url": "postgres://in-plain-sight"}}}, "url"),
        ({"config": {"admin": {"token": "0123456789abcdef0123"}}}, "admin"),
        ({"config": {"Grpc": {"addr": "0.0.0.0:1"}}}, "Grpc"),
        # EVENTLINE_MY_SECTION_KEY would read back as my.section_key.
        ({"config": {"my_section": {"key": 1}}}, "my_section"),
        ({"postgresql": {"enabled": "yes"}}, "enabled"),
        ({"autoscaling": {"targetCPUUtilizationPercentage": 150}}, "targetCPUUtilizationPercentage"),
        ({"config": {"limits": {"events_per_second_per_key": 0}}}, "events_per_second_per_key"),
        ({"config": {"limits": {"events_per_second_per_key": "fast"}}}, "events_per_second_per_key"),
        # The certificate paths are the chart's (tls.*), where it mounts the Secrets.
        ({"config": {"tls": {"cert_path": "/certs/tls.crt"}}}, "cert_path"),
        ({"config": {"tls": {"reload_interval_ms": 0}}}, "reload_interval_ms"),
        ({"tls": {"enabled": True}}, "existingSecret"),
        ({"tls": {"enabled": True, "existingSecret": ""}}, "existingSecret"),
        ({"tls": {"enabled": "yes", "existingSecret": "eventline-tls"}}, "enabled"),
        ({"tls": {"enabled": True, "existingSecret": 5}}, "existingSecret"),
        ({"tls": {"enabled": True, "existingSecret": "Eventline_TLS"}}, "existingSecret"),
        ({"tls": {"enabled": True, "existingSecret": "eventline-tls", "clientCaSecret": ["ca"]}}, "clientCaSecret"),
        # A client CA without TLS would be ignored: refused instead.
        ({"tls": {"enabled": False, "clientCaSecret": "eventline-client-ca"}}, "enabled"),
        ({"tls": {"enabled": True, "existingSecret": "eventline-tls", "secretName": "x"}}, "secretName"),
        ({"postgresql": {"enabled": False}, "database": {"existingSecret": "db", "citus": "yes"}}, "citus"),
    ],
)
def test_schema_rejects_wrong_values_naming_them(values, named):
    message = helm_error(values)
    assert "values don't meet the specifications of the schema" in message, message
    assert named in message, message


def test_schema_accepts_a_setting_the_server_gains_later():
    """config is open: a new key in a known section, or a new section, renders."""
    objects = render_objects({"config": {"grpc": {"some_future_timeout_ms": 300000}, "future": {"budget_bytes": 67108864}}})
    server, migrate = rendered_containers(objects)
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["EVENTLINE_GRPC_SOME_FUTURE_TIMEOUT_MS"] == "300000"
    assert env["EVENTLINE_FUTURE_BUDGET_BYTES"] == "67108864"
    assert chart_env_names(server) >= chart_env_names(migrate) - {"EVENTLINE_DATABASE_READ_URL"}


def test_schema_covers_every_value_in_values_yaml():
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(values, node, path):
        if "$ref" in node:
            node = schema["$defs"][node["$ref"].split("/")[-1]]
        if not isinstance(values, dict) or "properties" not in node:
            return
        for key, value in values.items():
            assert key in node["properties"], f"{path}{key} is in values.yaml but not described in values.schema.json"
            walk(value, node["properties"][key], f"{path}{key}.")

    assert schema["additionalProperties"] is False
    walk(chart_values(), schema, "")


def test_the_template_refuses_two_databases_or_none():
    assert "exclude each other" in helm_error({"database": {"existingSecret": "db"}})
    assert "no database" in helm_error({"postgresql": {"enabled": False}})


def test_the_template_refuses_citus_without_an_external_coordinator():
    # The bundled PostgreSQL has no Citus: refused naming both values, whatever else is set.
    for values in ({"database": {"citus": True}}, {"database": {"citus": True, "existingSecret": "db"}}):
        message = helm_error(values)
        assert "database.citus" in message and "postgresql.enabled=true" in message, message
        assert "has no Citus" in message and "postgresql.enabled=false" in message, message
    # Without the bundled one, the coordinator's URL must come from database.existingSecret.
    message = helm_error({"postgresql": {"enabled": False}, "database": {"citus": True}})
    assert "no database: set database.existingSecret" in message, message


# --- config: one to one with the server's settings ---------------------------------------


def test_values_config_sets_only_readme_settings():
    settings = readme_settings()
    config = flatten(chart_values()["config"])
    unknown = sorted(set(config) - set(settings))
    assert not unknown, f"values.yaml config sets settings the README does not list: {unknown}"
    assert SECRET_SETTINGS <= set(settings), "the README no longer lists a secret setting the chart sets from a Secret"
    assert not SECRET_SETTINGS & set(config), "a secret setting has a plain default in values.yaml"


def test_every_readme_setting_maps_to_its_readme_variable():
    """The template is generic: every row of the README's table, set under config:, becomes
    exactly the variable the table names (a setting added later included)."""
    settings = readme_settings()
    config = readme_config()
    server, migrate = rendered_containers(render_objects({"config": config}))
    rendered = {e["name"]: e.get("value") for e in server["env"]}
    for key, value in flatten(config).items():
        env = settings[key].env
        assert env in rendered, f"config.{key} did not render {env}"
        expected = json.dumps(value) if isinstance(value, list) else str(value)
        if isinstance(value, float) and value.is_integer():
            expected = str(int(value))  # the template writes 1.0 as 1, which the server reads alike
        assert rendered[env] == expected, f"{env}={rendered[env]!r}, want {expected!r}"
    assert chart_env_names(migrate) == chart_env_names(server) - {"EVENTLINE_ADMIN_TOKEN", "EVENTLINE_BOOTSTRAP_API_KEY"}


def test_values_config_defaults_equal_the_server_defaults():
    settings = readme_settings()
    for key, value in flatten(chart_values()["config"]).items():
        if key in CHART_OVERRIDES:
            assert value == CHART_OVERRIDES[key]
            continue
        default = readme_literal(settings[key].default)
        assert default is not None, f"README default of {key} is not a literal: {settings[key].default!r}"
        assert value == default, f"values.yaml config.{key} = {value!r}, README default {default!r}"


def test_every_eventline_variable_the_chart_sets_is_a_readme_setting():
    known = {s.env for s in readme_settings().values()}
    everything = flatten(chart_values()["config"])
    undocumented = set()
    for scenario, values in SCENARIOS.items():
        for container in rendered_containers(render_objects(values)):
            names = {n for n in chart_env_names(container) if n.startswith("EVENTLINE_")}
            assert names - known <= set(TLS_ENV), f"{scenario}: the chart sets variables the server does not know: {names - known - set(TLS_ENV)}"
            undocumented |= names - known
    assert len(everything) >= 15
    if undocumented:
        warnings.warn(f"the chart sets variables the README's Configuration table does not list yet: {sorted(undocumented)}", stacklevel=1)


def test_config_values_become_env_generically():
    values = {"config": {"writer": {"queue_events": 1000000, "enqueue_timeout_ms": 2500}, "http": {"cors_origins": ["https://a.example", "https://b.example"]}}}
    server, _ = rendered_containers(render_objects(values))
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["EVENTLINE_WRITER_QUEUE_EVENTS"] == "1000000"  # not 1e+06
    assert env["EVENTLINE_WRITER_ENQUEUE_TIMEOUT_MS"] == "2500"
    assert json.loads(env["EVENTLINE_HTTP_CORS_ORIGINS"]) == ["https://a.example", "https://b.example"]
    # Unset (null) settings are left out rather than set to an empty string.
    server, _ = rendered_containers(render_objects({"config": {"writer": {"workers": None}}}))
    assert "EVENTLINE_WRITER_WORKERS" not in chart_env_names(server)


def test_rate_limit_and_tls_reload_settings_go_through_config():
    """The server's newer settings need no chart change: config.limits and config.tls
    become their variables like every other setting."""
    values = {"config": {"limits": {"events_per_second_per_key": 1000}, "tls": {"reload_interval_ms": 2000}}}
    server, migrate = rendered_containers(render_objects(values))
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["EVENTLINE_LIMITS_EVENTS_PER_SECOND_PER_KEY"] == "1000"
    assert env["EVENTLINE_TLS_RELOAD_INTERVAL_MS"] == "2000"
    assert env["EVENTLINE_LIMITS_REQUEST_MEMORY_BYTES"] == "67108864"
    assert "EVENTLINE_LIMITS_EVENTS_PER_SECOND_PER_KEY" in chart_env_names(migrate)
    # values.yaml leaves the limit unset (unlimited, the server's default) and shows how.
    assert "events_per_second_per_key" not in chart_values()["config"]["limits"]
    assert "# events_per_second_per_key: " in (CHART / "values.yaml").read_text()
    server, _ = rendered_containers(render_objects())
    assert "EVENTLINE_LIMITS_EVENTS_PER_SECOND_PER_KEY" not in chart_env_names(server)


def test_config_changes_roll_the_pods():
    def checksum(values):
        deployment = find(render_objects(values), "Deployment")
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum({}) == checksum({})
    assert checksum({}) != checksum({"config": {"log": {"level": "debug"}}})


# --- the Deployment ----------------------------------------------------------------------


def test_deployment_ports_probes_and_hardening():
    objects = render_objects({"config": {"grpc": {"addr": "0.0.0.0:7000"}}})
    deployment = find(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 7000, "http": 8080, "metrics": 9090}
    assert container["startupProbe"]["grpc"] == {"port": 7000}
    assert container["readinessProbe"]["grpc"] == {"port": 7000}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["args"] == ["serve"]
    # Service links would inject EVENTLINE_PORT, EVENTLINE_SERVICE_HOST, … for a release
    # named eventline: variables in the server's own namespace.
    assert pod["enableServiceLinks"] is False
    assert find(objects, "Job")["spec"]["template"]["spec"]["enableServiceLinks"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["runAsNonRoot"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["resources"]["limits"]["memory"]
    assert {v["name"] for v in pod["volumes"]} == {"tmp", "data"}
    spread = pod["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for constraint in spread:
        assert constraint["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    service = find(objects, "Service", FULLNAME)
    assert {(p["name"], p["targetPort"], p["appProtocol"]) for p in service["spec"]["ports"]} == {
        ("grpc", "grpc", "kubernetes.io/h2c"),
        ("http", "http", "http"),
        ("metrics", "metrics", "http"),
    }


# --- TLS ---------------------------------------------------------------------------------


def server_pod(objects: list[dict]) -> tuple[dict, dict]:
    pod = find(objects, "Deployment", FULLNAME)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def test_tls_off_renders_no_tls_volume_or_env_and_keeps_the_grpc_probes():
    objects = render_objects()
    pod, container = server_pod(objects)
    assert not {n for n in chart_env_names(container) if n.startswith("EVENTLINE_TLS_")}
    assert {v["name"] for v in pod["volumes"]} == {"tmp", "data"}
    assert not [m for m in container["volumeMounts"] if m["mountPath"].startswith("/etc/eventline")]
    assert container["startupProbe"]["grpc"] == {"port": 50051}
    assert container["readinessProbe"]["grpc"] == {"port": 50051}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert "-plaintext" in render()["eventline/templates/NOTES.txt"]


def test_tls_on_mounts_the_secret_as_a_directory_sets_the_paths_and_probes_the_metrics_port():
    values = {"tls": {"enabled": True, "existingSecret": "eventline-tls"}}
    objects = render_objects(values)
    pod, container = server_pod(objects)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert {n: env[n] for n in env if n.startswith("EVENTLINE_TLS_")} == {
        "EVENTLINE_TLS_CERT_PATH": TLS_ENV["EVENTLINE_TLS_CERT_PATH"],
        "EVENTLINE_TLS_KEY_PATH": TLS_ENV["EVENTLINE_TLS_KEY_PATH"],
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    # The whole Secret, every key (a kubernetes.io/tls Secret's tls.crt and tls.key, and
    # cert-manager's ca.crt): no items, no subPath, so the kubelet's atomic swap of a
    # renewed certificate reaches the running pod.
    assert volumes["tls"] == {"name": "tls", "secret": {"secretName": "eventline-tls"}}
    assert set(volumes) == {"tmp", "data", "tls"}
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "tls"]
    assert mount == {"name": "tls", "mountPath": "/etc/eventline/tls", "readOnly": True}
    for name in ("EVENTLINE_TLS_CERT_PATH", "EVENTLINE_TLS_KEY_PATH"):
        directory, key = env[name].rsplit("/", 1)
        assert directory == mount["mountPath"] and key in {"tls.crt", "tls.key"}
    assert not [m for m in container["volumeMounts"] if "subPath" in m or "subPathExpr" in m]
    # gRPC and HTTP speak TLS only; the kubelet's probes go to the plaintext metrics port.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 50051, "http": 8080, "metrics": 9090}
    assert container["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "grpc" not in container[probe] and "scheme" not in container[probe]["httpGet"]
    assert container["startupProbe"]["failureThreshold"] == chart_values()["probes"]["startup"]["failureThreshold"]
    # The Service no longer claims cleartext HTTP/2 for the TLS ports.
    service = find(objects, "Service", FULLNAME)
    assert {(p["name"], p["appProtocol"]) for p in service["spec"]["ports"]} == {
        ("grpc", "https"), ("http", "https"), ("metrics", "http"),
    }
    # `migrate` serves nothing: the Job gets neither the Secret nor the paths.
    _, migrate = rendered_containers(objects)
    job_pod = find(objects, "Job")["spec"]["template"]["spec"]
    assert not {n for n in chart_env_names(migrate) if n.startswith("EVENTLINE_TLS_")}
    assert {v["name"] for v in job_pod["volumes"]} == {"tmp", "data"}
    # Prometheus keeps scraping the plaintext metrics port.
    monitor = find(render_objects({**values, **MONITORING}), "ServiceMonitor")
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}]
    notes = render(values)["eventline/templates/NOTES.txt"]
    assert "-plaintext" not in notes and "grpcurl -insecure localhost:50051" in notes and "https://localhost:8080" in notes


def test_mtls_env_and_volume_only_with_a_client_ca_secret():
    _, container = server_pod(render_objects({"tls": {"enabled": True, "existingSecret": "eventline-tls"}}))
    assert "EVENTLINE_TLS_CLIENT_CA_PATH" not in chart_env_names(container)
    assert "client-ca" not in {m["name"] for m in container["volumeMounts"]}

    pod, container = server_pod(render_objects(TLS_ON))
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert {n: env[n] for n in env if n.startswith("EVENTLINE_TLS_")} == TLS_ENV
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["client-ca"] == {"name": "client-ca", "secret": {"secretName": "eventline-client-ca"}}
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "client-ca"]
    assert mount == {"name": "client-ca", "mountPath": "/etc/eventline/client-ca", "readOnly": True}
    assert env["EVENTLINE_TLS_CLIENT_CA_PATH"] == f"{mount['mountPath']}/ca.crt"
    notes = render(TLS_ON)["eventline/templates/NOTES.txt"]
    assert "grpcurl -insecure -cert client.crt -key client.key" in notes and "eventline-client-ca" in notes


def test_tls_with_ingress_warns_until_the_backend_protocol_is_tls():
    ingress = {"enabled": True, "className": "nginx", "grpc": {"enabled": True}}
    notes = render({**TLS_ON, "ingress": ingress})["eventline/templates/NOTES.txt"]
    assert "ingress.grpc has\nnginx.ingress.kubernetes.io/backend-protocol: GRPC." in notes, notes
    assert "ingress.http has\nno nginx.ingress.kubernetes.io/backend-protocol." in notes, notes
    protocol = "nginx.ingress.kubernetes.io/backend-protocol"
    ingress["grpc"]["annotations"] = {protocol: "GRPCS"}
    ingress["http"] = {"annotations": {protocol: "HTTPS"}}
    objects = render_objects({**TLS_ON, "ingress": ingress})
    assert find(objects, "Ingress", f"{FULLNAME}-grpc")["metadata"]["annotations"][protocol] == "GRPCS"
    assert find(objects, "Ingress", FULLNAME)["metadata"]["annotations"][protocol] == "HTTPS"
    assert "WARNING" not in render({**TLS_ON, "ingress": ingress})["eventline/templates/NOTES.txt"]
    # Without TLS the default GRPC (h2c) is right, and nothing is said.
    assert "WARNING" not in render({"ingress": {"enabled": True, "grpc": {"enabled": True}}})["eventline/templates/NOTES.txt"]


def test_termination_grace_covers_the_servers_sigterm_drain():
    """preStop sleep + the server's drain (SHUTDOWN_GRACE for in-flight requests, then as
    long again for the writer) must fit in terminationGracePeriodSeconds."""
    source = (REPO / "crates" / "eventline-server" / "src" / "lib.rs").read_text()
    grace = re.search(r"const SHUTDOWN_GRACE: Duration = Duration::from_secs\((\d+)\)", source)
    assert grace, "SHUTDOWN_GRACE not found in crates/eventline-server/src/lib.rs"
    pod = find(render_objects(), "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + 2 * int(grace.group(1))


def test_external_database_and_existing_secret_are_referenced_not_generated():
    objects = render_objects(EXTERNAL_DATABASE)
    assert "Secret" not in kinds(objects) and "StatefulSet" not in kinds(objects)
    server, migrate = rendered_containers(objects)
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in server["env"] if "valueFrom" in e}
    assert refs["EVENTLINE_DATABASE_URL"] == {"name": "eventline-db", "key": "url"}
    assert refs["EVENTLINE_DATABASE_READ_URL"] == {"name": "eventline-db", "key": "read-url"}
    assert refs["EVENTLINE_ADMIN_TOKEN"]["name"] == "eventline-auth"
    assert refs["EVENTLINE_BOOTSTRAP_API_KEY"] == {"name": "eventline-auth", "key": "bootstrap-api-key", "optional": True}
    job = find(objects, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert migrate["args"] == ["migrate"]
    assert "EVENTLINE_ADMIN_TOKEN" not in chart_env_names(migrate)


def test_citus_coordinator_migrates_with_require_citus():
    objects = render_objects(CITUS)
    server, migrate = rendered_containers(objects)
    assert migrate["args"] == ["migrate", "--require-citus"]
    assert server["args"] == ["serve"]
    # Before the release's pods exist: the install fails if nothing could be distributed.
    assert find(objects, "Job")["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in migrate["env"] if "valueFrom" in e}
    assert refs["EVENTLINE_DATABASE_URL"] == {"name": "eventline-db", "key": "url"}
    # Off by default, and for any other external PostgreSQL: plain `migrate`.
    assert chart_values()["database"]["citus"] is False
    for values in ({}, EXTERNAL_DATABASE):
        _, migrate = rendered_containers(render_objects(values))
        assert migrate["args"] == ["migrate"]


def test_generated_secrets_are_kept_and_bundled_database_migrates_after_install():
    objects = render_objects()
    for secret in (o for o in objects if o["kind"] == "Secret"):
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    auth = find(objects, "Secret", FULLNAME)
    assert set(auth["data"]) == {"admin-token", "bootstrap-api-key"}
    job = find(objects, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"
    statefulset = find(objects, "StatefulSet")
    claim = statefulset["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"


def test_hpa_pdb_ingress_and_network_policy():
    objects = render_objects(EVERYTHING_ON)
    assert "replicas" not in find(objects, "Deployment")["spec"]
    hpa = find(objects, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}
    assert find(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    grpc_ingress = find(objects, "Ingress", f"{FULLNAME}-grpc")
    assert grpc_ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    backend = grpc_ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": FULLNAME, "port": {"name": "grpc"}}
    http_ingress = find(objects, "Ingress", FULLNAME)
    assert http_ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] == {"name": "http"}
    policy = find(objects, "NetworkPolicy", FULLNAME)
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    database_policy = find(objects, "NetworkPolicy", f"{FULLNAME}-postgresql")
    allowed = database_policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"]
    assert {"key": "app.kubernetes.io/component", "operator": "In", "values": ["server", "migrations"]} in allowed


def test_notes_say_how_to_reach_the_api_fetch_the_key_and_use_grpcurl():
    notes = render()["eventline/templates/NOTES.txt"]
    assert f"port-forward svc/{FULLNAME}" in notes
    assert f"get secret {FULLNAME} -o jsonpath='{{.data.bootstrap-api-key}}'" in notes
    assert "grpcurl -plaintext" in notes and "grpc.health.v1.Health/Check" in notes


def test_argocd_example_points_at_this_chart_with_schema_valid_values():
    application = yaml.safe_load((REPO / "helm" / "examples" / "argocd-application.yaml").read_text())
    assert application["apiVersion"] == "argoproj.io/v1alpha1" and application["kind"] == "Application"
    source = application["spec"]["source"]
    assert source["path"] == "helm/eventline"
    values = yaml.safe_load(source["helm"]["valuesObject"]) if isinstance(source["helm"].get("valuesObject"), str) else source["helm"]["valuesObject"]
    objects = render_objects(values)  # the schema and the template checks pass
    assert "StatefulSet" not in kinds(objects), "the GitOps example must use an external database"
    assert not [o for o in objects if o["kind"] == "Secret"], "GitOps renders without lookup: secrets must be existing ones"


def test_the_value_names_users_and_tools_rely_on_exist():
    values = chart_values()
    for path in [
        "image.repository", "image.tag", "replicaCount", "config", "existingSecret", "postgresql.enabled",
        "database.existingSecret", "database.citus", "autoscaling.enabled", "podDisruptionBudget.enabled", "ingress.enabled",
        "networkPolicy.enabled", "monitoring.serviceMonitor.enabled", "monitoring.prometheusRule.enabled",
        "monitoring.dashboards.enabled", "tls.enabled", "tls.existingSecret", "tls.clientCaSecret",
    ]:
        node = values
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, f"values.yaml has no {path}"
            node = node[part]


def test_bundled_postgresql_runs_with_the_write_settings_readme_recommends():
    def server_flags(values: dict | None = None) -> dict[str, str]:
        statefulset = find(render_objects(values), "StatefulSet", f"{FULLNAME}-postgresql")
        args = statefulset["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[0::2] == ["-c"] * (len(args) // 2), args
        return dict(flag.split("=", 1) for flag in args[1::2])

    flags = server_flags()
    # The one that measured to matter (README "Performance"), and shared_buffers sized to the limit.
    assert flags["wal_buffers"] == "16MB"
    assert flags["shared_buffers"] == "256MB"
    assert flags["port"] == "5432"
    raised = server_flags({"postgresql": {"settings": {"shared_buffers": "4GB", "work_mem": "64MB"}}})
    assert raised["shared_buffers"] == "4GB" and raised["work_mem"] == "64MB"
    assert "invalid propertyName 'bad name'" in helm_error({"postgresql": {"settings": {"bad name": "1"}}})

"""One version for the workspace, the chart and the image; a Keep a Changelog entry for it."""

from __future__ import annotations

import re
import tomllib

import yaml
from conftest import CHART, REPO, find, render_objects


def workspace_version() -> str:
    return tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["package"]["version"]


def test_chart_version_and_app_version_are_the_workspace_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == workspace_version()
    assert chart["version"] == workspace_version()


def test_the_image_tag_defaults_to_the_workspace_version():
    deployment = find(render_objects(), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"].endswith(f":{workspace_version()}")
    assert deployment["metadata"]["labels"]["app.kubernetes.io/version"] == workspace_version()


def test_changelog_follows_keep_a_changelog_with_this_version():
    text = (REPO / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog")
    assert "https://keepachangelog.com/en/1.1.0/" in text and "https://semver.org/spec/v2.0.0.html" in text
    assert re.search(r"^## \[Unreleased\]$", text, re.M)
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", text, re.M)
    assert releases and releases[0][0] == workspace_version(), f"newest release in CHANGELOG.md is not {workspace_version()}: {releases}"
    headings = set(re.findall(r"^### (\w+)$", text, re.M))
    assert headings <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}, headings
    for version, _ in releases:
        assert re.search(rf"^\[{re.escape(version)}\]: \S+", text, re.M), f"no link reference for [{version}]"

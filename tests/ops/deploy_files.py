"""The operator files in deploy/ and the metric names they use."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.ha.cluster import REPO

DEPLOY = REPO / "deploy"
ALERTS = DEPLOY / "prometheus" / "rportd-alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "rportd-alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "rportd-dashboard.json"
UNIT = DEPLOY / "rportd.service"

_NAME = re.compile(r"\b((?:rportd|process)_[a-z_]+)\b")


def dashboard_exprs(path: Path = DASHBOARD) -> list[str]:
    dashboard = json.loads(path.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def metric_names_used() -> set[str]:
    """Every metric name the dashboard and the alert rules query."""
    text = "\n".join(dashboard_exprs()) + "\n" + ALERTS.read_text()
    return set(_NAME.findall(text))

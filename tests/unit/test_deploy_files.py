"""deploy/: the Grafana dashboard and the Prometheus alert rules parse, and every metric (and label) they use
is one emailkit exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from emailkit.metrics.record import families

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "emailkit-dashboard.json"
ALERTS = DEPLOY / "prometheus" / "emailkit-alerts.yml"

_NAME = re.compile(r"\bemailkit_[a-z_]+\b")
_SELECTOR = re.compile(r"\b(emailkit_[a-z_]+)\{([^}]*)\}")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def exported() -> dict[str, set[str]]:
    """Each series name emailkit exposes, with its label names."""
    names: dict[str, set[str]] = {}
    for metric in vars(families()).values():
        kind = getattr(metric, "_type", None)
        if kind is None:
            continue
        base, labels = metric._name, set(metric._labelnames)
        if kind == "counter":
            names[f"{base}_total"] = labels
        elif kind == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                names[base + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
        else:
            names[base] = labels
    return names


def check(expr: str, where: str) -> set[str]:
    names = exported()
    used = set(_NAME.findall(expr))
    assert used, f"{where}: no emailkit metric in {expr!r}"
    assert used <= names.keys(), f"{where}: not exported: {sorted(used - names.keys())}"
    every_label = set().union(*(names[n] for n in used))
    for name, matchers in _SELECTOR.findall(expr):
        for matcher in filter(None, (m.strip() for m in matchers.split(","))):
            label = re.split(r"=~|!=|!~|=", matcher)[0].strip()
            assert label in names[name], f"{where}: {name} has no label {label!r}"
    for grouping in _GROUPING.findall(expr):
        for label in filter(None, (g.strip() for g in grouping.split(","))):
            assert label in every_label, f"{where}: no metric of {sorted(used)} has the label {label!r}"
    return used


def test_the_dashboard_uses_only_exported_metrics() -> None:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    used: set[str] = set()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= check(target["expr"], panel["title"])
    # Every family is on the dashboard somewhere.
    bases = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used}
    assert {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in exported()} <= bases


def test_the_alert_rules_parse_and_use_only_exported_metrics() -> None:
    rules: dict[str, Any] = yaml.safe_load(ALERTS.read_text())
    alerts = {}
    for group in rules["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert rule["annotations"]["summary"]
            check(rule["expr"], rule["alert"])
            alerts[rule["alert"]] = rule["expr"]
    # What the issue asks the rules to watch.
    assert 'status="failed"' in alerts["EmailkitSendFailureRate"]
    assert 'type="complaint"' in alerts["EmailkitComplaintRate"]
    assert "emailkit_queue_depth" in alerts["EmailkitCampaignStuck"]
    assert "deriv(emailkit_queue_depth" in alerts["EmailkitQueueGrowing"]
    assert "emailkit_webhook_signature_failures_total" in alerts["EmailkitWebhookSignatureFailures"]

"""The Grafana dashboard and the Prometheus alert rules in deploy/observability/ name only metrics (and labels)
that libs/telemetry/metrics.py exports, and between them cover every one of those metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from libs.telemetry import metrics

ASSETS = Path(__file__).resolve().parents[1] / "deploy" / "observability"
SELECTOR = re.compile(r"\b(weft_[a-z0-9_]+)\b(\{[^}]*\})?")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def dashboard_exprs() -> list[str]:
    panels = json.loads((ASSETS / "grafana-dashboard.json").read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def alert_rules() -> list[dict]:
    return [r for g in yaml.safe_load((ASSETS / "alerts.yml").read_text())["groups"] for r in g["rules"]]


def labels_of() -> dict[str, set[str]]:
    """Every exported series name -> the labels it may carry (histogram buckets add `le`)."""
    found = {}
    for metric in metrics.ALL:
        for name in metrics.names():
            if name == metric._name or (name.startswith(metric._name + "_") and name.removeprefix(
                    metric._name + "_") in ("total", "created", "bucket", "sum", "count")):
                found[name] = set(metric._labelnames) | ({"le"} if name.endswith("_bucket") else set())
    return found


def problems(expr: str, known: dict[str, set[str]]) -> list[str]:
    found, used = [], set()
    for name, selector in SELECTOR.findall(expr):
        if name not in known:
            found.append(f"unknown metric {name}")
            continue
        used |= known[name]
        for label in MATCHER.findall(selector or ""):
            if label not in known[name]:
                found.append(f"{name} has no label {label}")
    for group in GROUPING.findall(expr):
        found += [f"grouping by unknown label {label}" for label in (g.strip() for g in group.split(",")) if label
                  and label not in used]
    return found


def test_every_metric_the_dashboard_and_alerts_name_exists_with_those_labels():
    known = labels_of()
    exprs = dashboard_exprs() + [r["expr"] for r in alert_rules()]
    assert len(exprs) > 20
    assert {e: p for e in exprs if (p := problems(e, known))} == {}


def test_the_checker_notices_a_wrong_name_or_label():
    known = labels_of()
    assert problems("rate(weft_http_request_total[5m])", known) == ["unknown metric weft_http_request_total"]
    assert problems('weft_runs_finished_total{tenant="a"}', known) == ["weft_runs_finished_total has no label tenant"]
    assert problems("sum by (tenant) (weft_runs_started_total)", known) == ["grouping by unknown label tenant"]


def test_the_dashboard_shows_every_metric():
    named = {name for e in dashboard_exprs() for name, _ in SELECTOR.findall(e)}
    shown = {m._name for m in metrics.ALL if any(n == m._name or n.startswith(m._name + "_") for n in named)}
    assert sorted(m._name for m in metrics.ALL if m._name not in shown) == []


def test_alerts_cover_errors_latency_lag_backlog_dead_letters_and_late_timers():
    named = {name for r in alert_rules() for name, _ in SELECTOR.findall(r["expr"])}
    for needed in ("weft_http_requests_total", "weft_http_request_duration_seconds_bucket", "weft_relay_lag_events",
                   "weft_relay_held_back_seconds",
                   "weft_command_backlog", "weft_webhook_attempts_total", "weft_timers_late"):
        assert needed in named
    assert all(r["alert"].startswith("Weft") and r["annotations"]["summary"] for r in alert_rules())

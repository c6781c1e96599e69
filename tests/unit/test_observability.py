"""deploy/observability/: the Grafana dashboard and the Prometheus alert rules name only metrics a
node's ``/metrics`` really exports — a renamed family fails here, not on an on-call's screen."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.conftest import Node, make_node

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
# Series Prometheus makes itself for every target (not exported by the node).
PROMETHEUS_OWN = {"up"}
# PromQL's functions and keywords used in the files (anything else that is a word is a metric).
PROMQL_WORDS = {"sum", "rate", "increase", "histogram_quantile", "count", "max", "or", "and"}
SCRAPE = "scrape-" + "o" * 40


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    # With a webhook, so the notification families exist too.
    webhook = {"CHAT_PUSH_WEBHOOK_URL": "http://127.0.0.1:9/push", "CHAT_PUSH_WEBHOOK_SECRET": "w" * 40}
    yield from make_node(tmp_path, CHAT_METRICS_TOKEN=SCRAPE, **webhook)


def exported(node: Node) -> set[str]:
    """Every sample name of /metrics (counters with _total, histograms with _bucket/_sum/_count)."""
    text = node.client.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE}"}).text
    families = list(text_string_to_metric_families(text))
    # A gauge family with no series yet is still exported (an embedded node has no breaker to show).
    return {sample.name for family in families for sample in family.samples} | {f.name for f in families if f.type == "gauge"}


def referenced(expr: str) -> set[str]:
    """The metric names in a PromQL expression: its words once strings, label matchers, ranges
    and ``by (…)`` groupings are taken out, less functions, keywords and numbers."""
    bare = re.sub(r'"[^"]*"', "", expr)
    bare = re.sub(r"\b(?:by|without)\s*\([^)]*\)", " ", bare)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)
    return {word for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", bare) if word not in PROMQL_WORDS}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((OBSERVABILITY / "chat-dashboard.json").read_text())

    def walk(panels: list[dict[str, Any]]) -> Iterator[str]:
        for panel in panels:
            yield from (target["expr"] for target in panel.get("targets", []))
            yield from walk(panel.get("panels", []))

    exprs = list(walk(dashboard["panels"]))
    # Variables: label_values(METRIC{…}, label) — the metric only.
    exprs += [re.sub(r"label_values\((\w+).*", r"\1", v["query"]) for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load((OBSERVABILITY / "chat-alerts.yaml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_the_dashboard_and_the_alerts_name_only_exported_metrics(node: Node) -> None:
    names = exported(node)
    exprs = dashboard_exprs() + [rule["expr"] for rule in alert_rules()]
    used = set().union(*(referenced(e) for e in exprs)) - PROMETHEUS_OWN
    assert len(used) > 25, used  # the parse found the metrics, not nothing
    missing = sorted(used - names)
    assert not missing, f"referenced but not exported: {missing}"


def test_every_alert_is_complete_and_documented() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    rules = alert_rules()
    assert len(rules) >= 10
    for rule in rules:
        assert set(rule) >= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("page", "warning"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert f"`{rule['alert']}`" in doc, f"docs/operations.md does not explain {rule['alert']}"


def test_the_dashboard_uses_its_datasource_variable_everywhere() -> None:
    dashboard = json.loads((OBSERVABILITY / "chat-dashboard.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert 'job="$job"' in target["expr"], (panel["title"], target["expr"])


def test_the_name_check_sees_what_it_must() -> None:
    """The check above is only as good as this parse: names in every position, nothing else."""
    expr = 'histogram_quantile(0.99, sum by (instance, le) (rate(chat_x_bucket{job="chat", code=~"a|b"}[5m]))) > 0.1'
    expr += ' and chat_y / chat_z > 2 or up{job="chat"} == 0'
    assert referenced(expr) == {"chat_x_bucket", "chat_y", "chat_z", "up"}

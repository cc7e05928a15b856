"""The monitoring assets: Prometheus config and alert rules, their promtool unit tests, the Grafana dashboard and
the runbook.

Needs `promtool` and `prometheus` (Debian package `prometheus`, installed by CI); when they are missing the tests
FAIL, they do not skip. No Kafka or Redis needed: the live test serves a synthetic /metrics page.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer import metrics
from tests.support.prometheus import (
    PrometheusClient,
    dashboard_expressions,
    metric_names,
    rule_expressions,
    running_prometheus,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "lead-attribution.json"
RUNBOOK = REPO_ROOT / "docs" / "runbook.md"


# What the consumer exports: name -> (type, {label: values}), read from its real metrics registry.
def _exported_metrics() -> dict[str, tuple[str, dict[str, tuple[str, ...]]]]:
    exported: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {}
    for family in metrics.REGISTRY.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        labels: dict[str, set[str]] = {}
        for sample in family.samples:
            for key, value in sample.labels.items():
                if key != "le":
                    labels.setdefault(key, set()).add(value)
        if name == "leads_consumer_lag":  # per partition, created once partitions are assigned
            labels = {"partition": {"0", "1", "2"}}
        exported[name] = (family.type, {key: tuple(sorted(values)) for key, values in labels.items()})
    return exported


EXPORTED_METRICS = _exported_metrics()
KNOWN_METRICS = frozenset(EXPORTED_METRICS) | {"up"}

SEVERITIES = {"critical", "warning", "info"}


# ---------------------------------------------------------------------------------------------------------------
# promtool
# ---------------------------------------------------------------------------------------------------------------


def _require(program: str) -> str:
    """The program's path; FAILS the test (never skips) when it is missing."""
    path = shutil.which(program)
    if path is None:
        pytest.fail(
            f"{program} not found on PATH: install the Debian package 'prometheus' "
            "(apt-get install -y prometheus); the monitoring tests must not be skipped"
        )
    return path


def _run_promtool(*args: str) -> None:
    result = subprocess.run(
        [_require("promtool"), *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, (
        f"promtool {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )


def test_promtool_check_rules() -> None:
    _run_promtool("check", "rules", "deploy/prometheus/alerts.yml")


def test_promtool_check_config() -> None:
    _run_promtool("check", "config", "deploy/prometheus/prometheus.yml")


def test_promtool_unit_tests() -> None:
    _run_promtool("test", "rules", "deploy/prometheus/alerts_test.yml")


# ---------------------------------------------------------------------------------------------------------------
# Static checks of the rules, the dashboard and the runbook
# ---------------------------------------------------------------------------------------------------------------


def _alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def _dashboard() -> dict[str, Any]:
    document = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def _all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _all_panels(panel.get("panels", []))


def _github_anchor(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _runbook_anchors() -> set[str]:
    text = RUNBOOK.read_text(encoding="utf-8")
    anchors = {
        _github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.MULTILINE)
    }
    anchors |= set(re.findall(r"""<a\s+(?:id|name)=["']([^"']+)["']""", text))
    return anchors


def test_expected_alerts_are_defined() -> None:
    names = [rule["alert"] for rule in _alert_rules()]
    assert len(names) == len(set(names)), f"duplicate alert names: {names}"
    assert set(names) >= {
        "LeadsConsumerStalled",
        "LeadsConsumerLagHigh",
        "LeadsDeadLetterRatioHigh",
        "LeadsUnlinkedSpike",
        "LeadsRedisErrors",
        "LeadsNotReady",
        "LeadsCommitFailures",
        "LeadsConsumerDown",
    }


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    for rule in _alert_rules():
        name = rule["alert"]
        labels = rule.get("labels", {})
        annotations = rule.get("annotations", {})
        assert labels.get("severity") in SEVERITIES, f"{name}: severity label must be one of {SEVERITIES}"
        for key in ("summary", "description", "runbook_url"):
            assert str(annotations.get(key, "")).strip(), f"{name}: missing annotation {key}"
        for key, value in labels.items():  # static labels only: never anything taken from the data
            assert "{{" not in str(value), f"{name}: label {key} is templated"


def test_every_runbook_url_points_to_an_existing_runbook_section() -> None:
    anchors = _runbook_anchors()
    for rule in _alert_rules():
        url = str(rule["annotations"]["runbook_url"])
        path, _, anchor = url.partition("#")
        assert path.endswith("docs/runbook.md"), f"{rule['alert']}: runbook_url {url} is not docs/runbook.md"
        assert anchor, f"{rule['alert']}: runbook_url {url} has no #anchor"
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in {RUNBOOK.relative_to(REPO_ROOT)}"


def test_dashboard_and_rules_reference_only_exported_metrics() -> None:
    dashboard = _dashboard()
    expressions = dashboard_expressions(DASHBOARD) + rule_expressions(ALERTS)
    for variable in dashboard["templating"]["list"]:
        if variable.get("type") == "query":
            expressions.append(str(variable.get("definition", "")))
    assert expressions
    unknown = {name: expr for expr in expressions for name in metric_names(expr) if name not in KNOWN_METRICS}
    assert not unknown, f"metrics not exported by the consumer: {unknown}"


def test_dashboard_covers_the_important_metrics() -> None:
    used = set().union(*(metric_names(expr) for expr in dashboard_expressions(DASHBOARD)))
    missing = KNOWN_METRICS - used
    assert not missing, f"metrics not shown on the dashboard: {sorted(missing)}"


def test_dashboard_is_importable_and_described() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    panels = list(_all_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        if panel["type"] == "row":
            continue
        title = panel.get("title")
        assert title and str(panel.get("description", "")).strip(), f"panel {title!r} has no description"
        assert panel.get("targets"), f"panel {title!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", f"panel {title!r}: fixed data source"
            # rate()/increase() windows follow the scrape interval, never a hard-coded duration
            for window in re.findall(r"(?:rate|increase)\([^\[]*\[([^\]]+)\]", target["expr"]):
                assert window == "$__rate_interval", f"panel {title!r}: range [{window}] in {target['expr']}"


# ---------------------------------------------------------------------------------------------------------------
# The helpers themselves
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("up", {"up"}),
        ('up{job="lead-attribution"} == 0 or absent(up{job="lead-attribution"})', {"up"}),
        (
            'histogram_quantile(0.99, sum by (le) (rate(leads_batch_size_bucket{job=~"leads_x"}[1m])))',
            {"leads_batch_size"},
        ),
        ("sum(rate(leads_batch_size_sum[1m])) / sum(rate(leads_batch_size_count[1m]))", {"leads_batch_size"}),
        (
            "sum without (partition) (leads_consumer_lag) > 0 and on (instance) leads_assigned_partitions > 0",
            {"leads_consumer_lag", "leads_assigned_partitions"},
        ),
        ('label_replace(leads_redis_up == 0, "leads_fake", "x", "", "")', {"leads_redis_up"}),
        ("avg_over_time((sum by (job) (rate(leads_unlinked_total[15m])))[1d:5m])", {"leads_unlinked_total"}),
        ("time() - leads_last_processed_timestamp_seconds # up", {"leads_last_processed_timestamp_seconds"}),
    ],
)
def test_metric_names(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


def test_dashboard_expressions_substitute_every_variable() -> None:
    expressions = dashboard_expressions(DASHBOARD)
    assert len(expressions) >= 30
    for expr in expressions:
        assert "$" not in expr and "[[" not in expr, expr
    assert any("[1m]" in expr for expr in expressions)


# ---------------------------------------------------------------------------------------------------------------
# A real Prometheus: every dashboard query and every rule evaluates without error
# ---------------------------------------------------------------------------------------------------------------

_BUCKETS = ("0.005", "0.05", "0.5", "5", "60", "+Inf")


def _exposition(elapsed: float) -> str:
    """A /metrics page with every exported series; counters and histograms grow with time."""
    tick = int(elapsed * 10)
    lines: list[str] = []
    for name, (kind, labels) in EXPORTED_METRICS.items():
        lines.append(f"# TYPE {name} {kind}")
        label_sets = (
            [{}] if not labels else [{key: value} for key, values in labels.items() for value in values]
        )
        for label_set in label_sets:
            rendered = ",".join(f'{key}="{value}"' for key, value in label_set.items())
            if kind == "histogram":
                for index, bound in enumerate(_BUCKETS):
                    lines.append(f'{name}_bucket{{le="{bound}"}} {tick * (index + 1)}')
                lines.append(f"{name}_sum {tick * 0.7}")
                lines.append(f"{name}_count {tick * len(_BUCKETS)}")
            else:
                series = f"{name}{{{rendered}}}" if rendered else name
                if kind == "counter":
                    value: float = tick
                else:
                    value = time.time() if name.endswith("timestamp_seconds") else 1
                lines.append(f"{series} {value}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def fake_consumer_metrics() -> Iterator[str]:
    started = time.monotonic()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = _exposition(time.monotonic() - started).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def prometheus(
    fake_consumer_metrics: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusClient]:
    _require("prometheus")
    workdir = tmp_path_factory.mktemp("prometheus")
    with running_prometheus(fake_consumer_metrics, ALERTS, workdir, _free_port()) as client:
        client.wait_for_scrape("lead-attribution")
        time.sleep(2.5)  # a few more scrapes, so that rate() has two samples in its window
        yield client


def test_prometheus_evaluates_every_dashboard_query(prometheus: PrometheusClient) -> None:
    empty = []
    for expr in dashboard_expressions(DASHBOARD):
        data = prometheus.query(expr)  # raises on a PromQL error
        if not data["result"]:
            empty.append(expr)
    assert not empty, f"dashboard queries without any series on a fully populated /metrics page: {empty}"


def test_prometheus_evaluates_every_rule(prometheus: PrometheusClient) -> None:
    for expr in rule_expressions(ALERTS):
        prometheus.query(expr)
    deadline = time.monotonic() + 20
    while True:
        rules = [rule for group in prometheus.rules() for rule in group["rules"]]
        if rules and all(rule.get("health") != "unknown" for rule in rules):
            break
        assert time.monotonic() < deadline, f"rules not evaluated in time: {rules}"
        time.sleep(0.5)
    assert len(rules) == len(rule_expressions(ALERTS))
    broken = {rule["name"]: rule.get("lastError") for rule in rules if rule.get("health") != "ok"}
    assert not broken, f"rules failing in Prometheus: {broken}"

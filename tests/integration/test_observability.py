"""A real Prometheus scraping a real consumer: every dashboard and alert expression evaluates,
and names only metrics the consumer exports. Logs carry no customer data."""

from __future__ import annotations

import time
from pathlib import Path

from harness.kafka import Topics, lead, produce, read_topic
from harness.process import REPO, free_port
from tests.integration.conftest import StartConsumer
from tests.support.prometheus import dashboard_expressions, metric_names, rule_expressions, running_prometheus

DASHBOARD = REPO / "deploy" / "grafana" / "lead-attribution.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"

SECRET_CID = "cid-Zq81xK"  # noqa: S105 - marker strings, not passwords
SECRET_EMAIL = "very.private.person@example.org"  # noqa: S105
SECRET_NAME = "Priscilla Privatename"  # noqa: S105


def test_every_dashboard_and_alert_expression_evaluates_against_the_consumer(
    topics: Topics, start_consumer: StartConsumer, tmp_path: Path
) -> None:
    consumer = start_consumer(LEADS_ORPHAN_GRACE_SECONDS="1", LEADS_LOG_LEVEL="DEBUG")
    produce(
        topics.input,
        [
            lead(SECRET_CID, "signup", clickId="k1", customerEmail=SECRET_EMAIL, customerName=SECRET_NAME),
            lead("c-2", "signup_started", clickId="k2", mode="deferred", customerName=SECRET_NAME),
            lead("c-2", "email_verified"),
            lead("c-3", "email_verified", customerEmail=SECRET_EMAIL),
            lead("c-4", "x", clickId="k", mode="bogus", customerEmail=SECRET_EMAIL),
        ],
    )
    read_topic(topics.attributed, expected=2)
    read_topic(topics.unlinked, expected=1, timeout_s=15)
    time.sleep(6)  # one librdkafka statistics interval, so per-partition lag is exported

    exported = {
        line.split("{")[0].split(" ")[0]
        for line in consumer.metrics_text().splitlines()
        if line and not line.startswith("#")
    }
    expressions = dashboard_expressions(DASHBOARD) + rule_expressions(ALERTS)
    assert len(expressions) > 30
    with running_prometheus(
        f"127.0.0.1:{consumer.port}", ALERTS, tmp_path / "prom", free_port()
    ) as prometheus:
        prometheus.wait_for_scrape("lead-attribution")
        time.sleep(3)  # a few scrapes, so rate() has two points
        scraped = {s[0]["__name__"] for s in prometheus.vector('{job="lead-attribution"}')}
        for expression in expressions:
            for name in metric_names(expression) - {"up"}:
                family = {name, name + "_bucket", name + "_sum", name + "_count"}
                assert family & exported, f"{name} (in {expression!r}) is not exported by the consumer"
                assert family & scraped, f"{name} (in {expression!r}) was not scraped by Prometheus"
            prometheus.query(expression)  # raises on any evaluation error
        attributed = prometheus.vector('sum(leads_attributed_total{job="lead-attribution"})')
        assert attributed and attributed[0][1] == 2
        lag = prometheus.vector('leads_consumer_lag{job="lead-attribution"}')
        assert {labels["partition"] for labels, _ in lag} <= {"0", "1", "2"} and lag
        assert prometheus.rules(), "alert rules were not loaded"
        for group in prometheus.rules():
            for rule in group["rules"]:
                assert rule["health"] == "ok", rule
    metrics_text = consumer.metrics_text()
    assert consumer.stop() == 0

    logs = consumer.logs()
    assert "consumer started" in logs
    for secret in (SECRET_CID, SECRET_EMAIL, SECRET_NAME, "c-2", "c-3"):
        assert secret not in logs, f"customer data {secret!r} leaked into the logs"
        assert secret not in metrics_text, f"customer data {secret!r} leaked into a metric label"


def test_readyz_reports_redis_outage_reason(topics: Topics, start_consumer: StartConsumer) -> None:
    # With Redis unreachable at start-up the consumer keeps checking and says why it is not ready.
    consumer = start_consumer(wait_ready=False, LEADS_REDIS_URL="redis://127.0.0.1:1/0")
    deadline = time.monotonic() + 20
    status, body = 0, ""
    while time.monotonic() < deadline:
        try:
            status, body = consumer.get("/readyz")
        except OSError:  # the HTTP server is not listening yet
            time.sleep(0.3)
            continue
        if status == 503 and "redis" in body:
            break
        time.sleep(0.3)
    assert status == 503 and "starting: redis at 127.0.0.1:1: unreachable" in body, body
    assert consumer.get("/healthz")[0] == 200
    assert consumer.stop() == 0

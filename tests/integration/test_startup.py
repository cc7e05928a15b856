"""Start-up that explains itself: each dependency that fails is one line naming it and what
failed, within 10 s, without a traceback; `leadattr run` keeps checking with readiness saying why,
goes on once the dependency is there, and exits 3 after LEADS_STARTUP_TIMEOUT_SECONDS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from harness.kafka import SECURE, Topics, create_topics, grant_service_acls, lead, produce, read_topic
from harness.process import REPO, free_port
from tests.integration.conftest import StartConsumer


def _first_problem_after(output: str, started: float) -> float:
    """Seconds from ``started`` (epoch) to the first start-up problem logged."""
    for line in output.splitlines():
        if line.startswith("{") and "start-up check failed" in line:
            logged = datetime.fromisoformat(json.loads(line)["ts"].replace("Z", "+00:00")).timestamp()
            return logged - started
    raise AssertionError(f"no start-up problem logged:\n{output}")


def test_unreachable_kafka_and_redis_are_named_within_seconds(start_consumer: StartConsumer) -> None:
    dead_kafka, dead_redis = free_port(), free_port()
    started = time.time()
    consumer = start_consumer(
        wait_ready=False,
        LEADS_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{dead_kafka}",
        LEADS_REDIS_URL=f"redis://127.0.0.1:{dead_redis}/0",
        LEADS_STARTUP_TIMEOUT_SECONDS="1",
    )
    assert consumer.proc is not None
    assert consumer.proc.wait(40) == 3
    output = consumer.logs()
    assert _first_problem_after(output, started) < 10
    lines = [line for line in output.splitlines() if line.startswith("leadattr: ")]
    assert sorted(lines) == sorted(
        [
            next(
                line
                for line in lines
                if line.startswith(f"leadattr: kafka at 127.0.0.1:{dead_kafka}: unreachable")
            ),
            next(
                line
                for line in lines
                if line.startswith(f"leadattr: redis at 127.0.0.1:{dead_redis}: unreachable")
            ),
        ]
    ), output
    assert "Traceback" not in output


def test_a_missing_topic_keeps_start_up_waiting_and_not_ready_until_it_exists(
    start_consumer: StartConsumer,
) -> None:
    topics = Topics.fresh()  # nothing created yet
    if SECURE:  # granted ahead: to a principal without them, a missing topic reads "not authorized"
        grant_service_acls(topics)
    consumer = start_consumer(wait_ready=False, **topics.env(), LEADS_STARTUP_TIMEOUT_SECONDS="120")
    deadline, body = time.monotonic() + 20, ""
    while time.monotonic() < deadline:
        try:
            status, body = consumer.get("/readyz")
        except OSError:
            status = 0
        if status == 503 and "does not exist" in body:
            break
        time.sleep(0.2)
    assert "starting: kafka at" in body and f"topic {topics.input} does not exist" in body, body
    create_topics(topics.all(), configs=topics.configs())
    consumer.wait_ready(60)
    produce(topics.input, [lead("st-1", "signup", clickId="click-1")])
    assert [r["clickId"] for r in read_topic(topics.attributed, expected=1)] == ["click-1"]
    assert consumer.stop() == 0


def test_send_names_an_unreachable_broker_and_sends_nothing(tmp_path: Path) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "consumer.cli",
            "send",
            json.dumps({"customerExternalId": "c", "eventName": "e"}),
        ],
        env={**os.environ, "LEADS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3
    assert time.monotonic() - started < 20
    assert result.stderr.startswith("leadattr send: kafka at 127.0.0.1:") and "unreachable" in result.stderr
    assert "Traceback" not in result.stderr

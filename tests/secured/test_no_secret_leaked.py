"""No password reaches a log line (at DEBUG), /metrics, an error line or a dead letter: the
secured shape's passwords are random, so each is its own marker."""

from __future__ import annotations

import json
from pathlib import Path

import redis

from harness.kafka import Topics, lead, produce, read_topic, secure_env
from harness.process import ConsumerProcess
from tests.integration.conftest import BASE_ENV, StartConsumer


def _secrets() -> list[str]:
    consumer = secure_env("consumer")
    redis_password = consumer["LEADS_REDIS_URL"].split("@", 1)[0].rsplit(":", 1)[1]
    return [consumer["LEADS_KAFKA_SASL_PASSWORD"], redis_password]


def test_no_password_in_logs_metrics_or_dead_letters(
    topics: Topics, start_consumer: StartConsumer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    secrets = _secrets()
    assert all(len(secret) >= 16 for secret in secrets)
    consumer = start_consumer(LEADS_LOG_LEVEL="DEBUG")
    produce(
        topics.input, [lead("ns-1", "signup", clickId="click-1"), b"\x00\x01garbage"], keys=[b"ns-1", b"x"]
    )
    assert len(read_topic(topics.attributed, expected=1)) == 1
    dead = read_topic(topics.dead_letter, expected=1)
    metrics = consumer.metrics_text()
    assert consumer.stop() == 0
    # A start that fails (the Kafka password wrong) prints its line: without the password.
    failing = ConsumerProcess(
        {
            **BASE_ENV,
            **topics.env(),
            "LEADS_STARTUP_TIMEOUT_SECONDS": "1",
            "LEADS_KAFKA_SASL_PASSWORD": secrets[0][::-1],
        },
        tmp_path / "failing.log",
    ).start(wait_ready=False)
    assert failing.proc is not None and failing.proc.wait(60) == 3
    texts = {
        "log": consumer.logs(),
        "failed start": failing.logs(),
        "metrics": metrics,
        "dead letters": json.dumps(dead, default=repr),
    }
    assert "authentication failed" in texts["failed start"]
    for where, text in texts.items():
        for secret in [*secrets, secrets[0][::-1]]:
            assert secret not in text, f"a password in the {where}"

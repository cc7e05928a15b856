"""Integration fixtures: the real Kafka and Redis (started here when absent), fresh topics per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from harness.kafka import (
    BOOTSTRAP,
    KAFKA_PORT,
    REDIS_PORT,
    REDIS_URL,
    SECURE,
    Topics,
    create_topics,
    grant_service_acls,
    secure_env,
)
from harness.process import REPO, ConsumerProcess
from harness.services import LocalServices


@pytest.fixture(scope="session")
def services() -> Iterator[None]:
    """Kafka on KAFKA_PORT (9092) and Redis on REDIS_PORT (6379), as `make services-up` starts
    them; started by the suite (and stopped after) when they do not answer."""
    local = LocalServices(KAFKA_PORT, REDIS_PORT, REPO / ".services", shape={"SECURE": "1"} if SECURE else {})
    local.up()
    yield
    local.stop_started()


@pytest.fixture
def topics(services: None) -> Topics:
    fresh = Topics.fresh()
    create_topics(fresh.all(), configs=fresh.configs())
    if SECURE:  # the service user may do exactly what `leadattr acls` lists, for these topics
        grant_service_acls(fresh)
    return fresh


@pytest.fixture
def redis_client(services: None) -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL)


BASE_ENV = {
    "LEADS_KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP,
    "LEADS_REDIS_URL": REDIS_URL,
    "LEADS_BATCH_WAIT_MS": "50",
    "LEADS_LOG_LEVEL": "INFO",
    # Fast group membership so restarts and rebalances in tests take seconds, not a minute.
    "LEADS_KAFKA_SESSION_TIMEOUT_MS": "6000",
    "LEADS_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
    # SECURE=1: SASL_SSL as the SCRAM user leadattr, Redis over TLS as the ACL user leadattr.
    **(secure_env("consumer") if SECURE else {}),
}

# The operator commands (restore-state, replay, ...) run as an operator's principal, not the
# service's: on the secured services, the admin user.
OPERATOR_ENV = {k: v for k, v in secure_env("admin").items() if k.startswith("LEADS_")} if SECURE else {}

StartConsumer = Callable[..., ConsumerProcess]


@pytest.fixture
def start_consumer(topics: Topics, tmp_path: Path) -> Iterator[StartConsumer]:
    processes: list[ConsumerProcess] = []

    def start(wait_ready: bool = True, **env: str) -> ConsumerProcess:
        merged = {**BASE_ENV, **topics.env(), **env}
        process = ConsumerProcess(merged, tmp_path / f"consumer-{len(processes)}.log")
        processes.append(process)
        return process.start(wait_ready)

    yield start
    for process in processes:
        if process.proc is not None and process.proc.poll() is None:
            process.kill()

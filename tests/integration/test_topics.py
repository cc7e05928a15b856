"""`leadattr topics create|check` against the real broker, and the refusal at start-up of outputs
that would lose an acknowledged record with one broker, on a real three-node cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource
from confluent_kafka.cimpl import NewTopic

from harness.kafka import BOOTSTRAP, CLIENT, SECURE, Topics, lead, produce, read_topic
from harness.process import REPO, ConsumerProcess
from harness.services import LocalServices
from tests.integration.conftest import BASE_ENV, OPERATOR_ENV, StartConsumer

DEV = {"LEADS_TOPIC_REPLICATION_FACTOR": "1", "LEADS_TOPIC_PARTITIONS": "3"}
# The cluster of this module; see the `cluster` fixture for why these ports.
CLUSTER_KAFKA_PORT = 17092
CLUSTER_REDIS_PORT = 17379


def _topics_command(
    action: str, env: dict[str, str], plain: bool = False
) -> subprocess.CompletedProcess[str]:
    """As an operator; ``plain``: on the plaintext cluster below, whatever shape the suite runs on."""
    inherited = {k: v for k, v in os.environ.items() if not (plain and k.startswith("LEADS_"))}
    return subprocess.run(
        [sys.executable, "-m", "consumer.cli", "topics", action],
        env={
            **inherited,
            "LEADS_KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP,
            **({} if plain else OPERATOR_ENV),
            **env,
        },
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def _configs(bootstrap: str, topic: str, client: dict[str, str]) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": bootstrap, **client})
    described = admin.describe_configs([ConfigResource("topic", topic)])
    return {name: entry.value for name, entry in next(iter(described.values())).result(30).items()}


def test_create_makes_the_topics_check_finds_each_difference(
    services: None, start_consumer: StartConsumer, tmp_path: Path
) -> None:
    topics = Topics.fresh()
    env = {**topics.env(), **DEV}
    refused = _topics_command("create", {**topics.env()})  # replication 3 on one broker
    assert refused.returncode == 2
    assert "LEADS_TOPIC_REPLICATION_FACTOR=3 but the cluster has 1 broker(s)" in refused.stdout

    created = _topics_command("create", env)
    assert created.returncode == 0, created.stdout + created.stderr
    assert sorted(line for line in created.stdout.splitlines()) == sorted(
        f"created: {t}" for t in topics.all()
    )
    assert _configs(BOOTSTRAP, topics.input, CLIENT)["message.timestamp.type"] == "LogAppendTime"
    assert _configs(BOOTSTRAP, topics.changelog, CLIENT)["cleanup.policy"] == "compact"
    assert _configs(BOOTSTRAP, topics.attributed, CLIENT)["retention.ms"] == str(2 * 604800 * 1000)
    assert _configs(BOOTSTRAP, topics.attributed, CLIENT)["min.insync.replicas"] == "1"

    ok = _topics_command("check", env)
    assert (ok.returncode, ok.stdout.strip()) == (0, "ok: 6 topics as `leadattr topics create` makes them")
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP, **CLIENT})
    altered = admin.incremental_alter_configs(
        [ConfigResource("topic", topics.dead_letter, incremental_configs=[_set("retention.ms", "3600000")])]
    )
    for future in altered.values():
        future.result(30)
    differs = _topics_command("check", env)
    assert differs.returncode == 1
    assert differs.stdout.splitlines() == [f"{topics.dead_letter}: retention.ms 3600000, expected 2592000000"]
    again = _topics_command("create", env)  # what exists is left alone
    assert again.returncode == 0 and "exists:" in again.stdout

    # The service runs on what `create` made (as the service user on the secured services).
    if SECURE:
        from harness.kafka import grant_service_acls  # noqa: PLC0415

        grant_service_acls(topics)
    consumer = start_consumer(**topics.env())
    produce(topics.input, [lead("tp-1", "signup", clickId="click-1")])
    assert [r["clickId"] for r in read_topic(topics.attributed, expected=1)] == ["click-1"]
    assert consumer.stop() == 0


def _set(name: str, value: str) -> ConfigEntry:
    return ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalServices]:
    """Three KRaft nodes of their own (clients 17092-17094, controllers 18092-18094) and a Redis
    beside them (17379): all below the kernel's ephemeral range (32768-60999), where an outgoing
    connection of any process on the machine can hold a port that a listener then fails to bind."""
    local = LocalServices(
        CLUSTER_KAFKA_PORT, CLUSTER_REDIS_PORT, REPO / ".services-cluster-test", shape={"KAFKA_BROKERS": "3"}
    )
    local.up(require_owned=True)
    yield local
    local.stop_started()


def test_start_up_refuses_an_output_that_a_broker_loss_would_lose(
    cluster: LocalServices, tmp_path: Path
) -> None:
    bootstrap = ",".join(f"127.0.0.1:{CLUSTER_KAFKA_PORT + i}" for i in range(3))
    topics = Topics.fresh()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    unsafe = admin.create_topics([NewTopic(topics.dead_letter, 3, 1)])  # one replica
    for future in unsafe.values():
        future.result(60)
    made = _topics_command("create", {**topics.env(), "LEADS_KAFKA_BOOTSTRAP_SERVERS": bootstrap}, plain=True)
    assert made.returncode == 0, made.stdout + made.stderr
    plain = {k: v for k, v in BASE_ENV.items() if not k.startswith(("LEADS_KAFKA_S", "LEADS_REDIS_URL"))}
    base = {
        **plain,
        **topics.env(),
        "LEADS_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "LEADS_REDIS_URL": f"redis://127.0.0.1:{CLUSTER_REDIS_PORT}/0",
        "LEADS_STARTUP_TIMEOUT_SECONDS": "1",
    }
    refused = ConsumerProcess(base, tmp_path / "refused.log", clean=True).start(wait_ready=False)
    assert refused.proc is not None and refused.proc.wait(60) == 3
    lines = [line for line in refused.logs().splitlines() if line.startswith("leadattr: ")]
    assert lines == [
        f"leadattr: kafka at {bootstrap}: topic {topics.dead_letter}: replication factor 1, min.insync.replicas 2: "
        "an acknowledged record would not survive the loss of a broker (both must be >= 2; "
        "LEADS_ALLOW_UNSAFE_TOPICS=true allows it for development)"
    ], refused.logs()[-2000:]
    checked = _topics_command(
        "check", {**topics.env(), "LEADS_KAFKA_BOOTSTRAP_SERVERS": bootstrap}, plain=True
    )
    assert checked.returncode == 1
    assert f"{topics.dead_letter}: replication factor 1, expected 3" in checked.stdout.splitlines()

    allowed = ConsumerProcess(
        {**base, "LEADS_ALLOW_UNSAFE_TOPICS": "true"}, tmp_path / "allowed.log", clean=True
    )
    try:
        allowed.start(wait_ready=True)
        assert allowed.stop() == 0
    finally:
        if allowed.alive():
            allowed.kill()

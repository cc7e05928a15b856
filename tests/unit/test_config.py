"""A bad setting stops start-up with one line naming the variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from consumer.config import Config, Guarantee, SettingsError, kafka_passthrough


def test_defaults_follow_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("LEADS_"):
            monkeypatch.delenv(name)
    s = Config.load(env_file=None).settings
    assert (s.kafka_bootstrap_servers, s.redis_url) == ("localhost:9092", "redis://localhost:6379/0")
    assert (s.input_topic, s.attributed_topic, s.unlinked_topic, s.dead_letter_topic) == (
        "leads.raw",
        "leads.attributed",
        "leads.unlinked",
        "leads.dead-letter",
    )
    assert (s.consumer_group, s.pending_ttl_seconds, s.orphan_grace_seconds, s.dedupe_ttl_seconds) == (
        "lead-attribution",
        604800,
        300,
        604800,
    )
    assert s.processing_guarantee is Guarantee.EXACTLY_ONCE
    assert (s.metrics_port, s.schema_registry_url) == (9400, None)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LEADS_PENDING_TTL_SECONDS", "abc"),
        ("LEADS_ORPHAN_GRACE_SECONDS", "0"),
        ("LEADS_DEDUPE_TTL_SECONDS", "-5"),
        ("LEADS_PROCESSING_GUARANTEE", "sometimes"),
        ("LEADS_METRICS_PORT", "70000"),
        ("LEADS_REDIS_URL", "http://localhost"),
        ("LEADS_SCHEMA_REGISTRY_URL", "registry:8081"),
        ("LEADS_KAFKA_BOOTSTRAP_SERVERS", "nohostport"),
    ],
)
def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as error:
        Config.load(env_file=None)
    message = str(error.value)
    assert name in message and "\n" not in message


def test_kafka_passthrough() -> None:
    assert kafka_passthrough(
        {"LEADS_KAFKA_SECURITY_PROTOCOL": "SSL", "LEADS_KAFKA_BOOTSTRAP_SERVERS": "x:1"}
    ) == {"security.protocol": "SSL"}
    with pytest.raises(SettingsError, match="LEADS_KAFKA_ENABLE_AUTO_COMMIT"):
        kafka_passthrough({"LEADS_KAFKA_ENABLE_AUTO_COMMIT": "true"})


def test_env_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEADS_INPUT_TOPIC", raising=False)
    env = tmp_path / ".env"
    env.write_text("LEADS_INPUT_TOPIC=from-file\nLEADS_KAFKA_CLIENT_ID=abc\n")
    config = Config.load(env_file=env)
    assert config.settings.input_topic == "from-file"
    assert config.kafka_extra["client.id"] == "abc"


def test_cli_exits_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "consumer.cli", "run"],
        env={"LEADS_PENDING_TTL_SECONDS": "soon", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path.cwd())},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "leadattr: invalid setting LEADS_PENDING_TTL_SECONDS: Input should be a valid number, "
        "unable to parse string as a number (got 'soon')"
    ]


def test_a_full_fetch_queue_is_looked_at_again_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    """librdkafka's default waits 1 s before fetching for a partition whose queue was full; at
    bench rates the queue drained within that second and the loop waited in poll()
    (docs/performance.md). The setting stays overridable like the fetch sizes."""
    from consumer.app import consumer_config  # noqa: PLC0415 - builds nothing, reads the config

    monkeypatch.delenv("LEADS_KAFKA_FETCH_QUEUE_BACKOFF_MS", raising=False)
    assert consumer_config(Config.load(env_file=None), {})["fetch.queue.backoff.ms"] == 20
    monkeypatch.setenv("LEADS_KAFKA_FETCH_QUEUE_BACKOFF_MS", "500")
    assert consumer_config(Config.load(env_file=None), {})["fetch.queue.backoff.ms"] == "500"


def test_transactional_requests_are_retried_within_tens_of_milliseconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A transaction begun while the last one's markers are still being written is refused with
    CONCURRENT_TRANSACTIONS; librdkafka's default 100 ms before retrying AddOffsetsToTxn stalled
    batches 120-130 ms at 5,000 events/s (docs/performance.md). librdkafka accepts the settings
    (a Producer is built from them: no broker needed), and they stay overridable."""
    from confluent_kafka import Producer  # noqa: PLC0415

    from consumer.app import producer_config  # noqa: PLC0415 - builds nothing, reads the config

    for name in ("LEADS_KAFKA_RETRY_BACKOFF_MS", "LEADS_KAFKA_RETRY_BACKOFF_MAX_MS"):
        monkeypatch.delenv(name, raising=False)
    settings = producer_config(Config.load(env_file=None), transactional=True)
    assert (settings["retry.backoff.ms"], settings["retry.backoff.max.ms"]) == (10, 40)
    Producer({k: v for k, v in settings.items() if k != "logger"})  # KafkaException if refused
    monkeypatch.setenv("LEADS_KAFKA_RETRY_BACKOFF_MS", "100")
    monkeypatch.setenv("LEADS_KAFKA_RETRY_BACKOFF_MAX_MS", "1000")
    settings = producer_config(Config.load(env_file=None), transactional=True)
    assert (settings["retry.backoff.ms"], settings["retry.backoff.max.ms"]) == ("100", "1000")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LEADS_REDIS_URL", "redis//default:S3cretPw@127.0.0.1:1/0"),
        ("LEADS_SCHEMA_REGISTRY_URL", "htps://leadattr:S3cretPw@registry:8081"),
        ("LEADS_REDIS_SENTINELS", "S3cretPw@sentinel"),
    ],
)
def test_an_invalid_setting_names_the_variable_and_never_echoes_a_secret(
    tmp_path: Path, name: str, value: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "consumer.cli", "run"],
        env={name: value, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path.cwd())},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2
    assert len(lines) == 1 and lines[0].startswith(f"leadattr: invalid setting {name}: "), lines
    assert "S3cretPw" not in result.stderr + result.stdout


def test_an_instance_id_gives_static_membership_and_a_stable_transactional_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both prefixed by the consumer group: two deployments in one cluster never fence each other."""
    from consumer.app import consumer_config  # noqa: PLC0415 - builds nothing, reads the config

    monkeypatch.delenv("LEADS_TRANSACTIONAL_ID", raising=False)
    monkeypatch.setenv("LEADS_CONSUMER_GROUP", "leads-eu")
    monkeypatch.delenv("LEADS_INSTANCE_ID", raising=False)
    dynamic = Config.load(env_file=None)
    assert "group.instance.id" not in consumer_config(dynamic, {})
    assert dynamic.settings.transaction_id.startswith("leads-eu-")
    monkeypatch.setenv("LEADS_INSTANCE_ID", "lead-attribution-2")
    static = Config.load(env_file=None)
    assert consumer_config(static, {})["group.instance.id"] == "leads-eu-lead-attribution-2"
    assert static.settings.transaction_id == "leads-eu-lead-attribution-2"
    monkeypatch.setenv("LEADS_KAFKA_GROUP_INSTANCE_ID", "x")
    with pytest.raises(SettingsError, match="LEADS_INSTANCE_ID"):
        Config.load(env_file=None)

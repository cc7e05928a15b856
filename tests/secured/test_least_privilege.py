"""The service works with exactly the permissions `leadattr acls` lists (Kafka ACLs for the SCRAM
user leadattr, a Redis ACL user with the listed rule) and stops with one line naming what is
missing when one of them is not granted."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from confluent_kafka.admin._acl import AclBindingFilter, AclOperation, AclPermissionType
from confluent_kafka.admin._resource import ResourcePatternType, ResourceType

from consumer.tools.acls import Grant, redis_acl_rule
from harness.kafka import (
    REDIS_PORT,
    SERVICE_PRINCIPAL,
    SERVICES_DIR,
    Topics,
    admin,
    create_topics,
    grant_service_acls,
    lead,
    produce,
    read_topic,
)
from harness.process import ConsumerProcess
from tests.integration.conftest import BASE_ENV, StartConsumer

ANY: Any = None  # a filter's "any name" / "any host" (the stubs type them as str)
CA = SERVICES_DIR / "secure" / "tls" / "ca.pem"


@contextmanager
def _redis_user(client: redis.Redis, rule: str) -> Iterator[str]:
    """A Redis ACL user with ``rule``; yields the service's LEADS_REDIS_URL for it."""
    name, password = f"svc-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    client.execute_command("ACL", "SETUSER", name, "on", f">{password}", *rule.split())  # type: ignore[no-untyped-call]
    try:
        yield f"rediss://{name}:{quote(password)}@127.0.0.1:{REDIS_PORT}/0?ssl_ca_certs={CA}"
    finally:
        client.execute_command("ACL", "DELUSER", name)  # type: ignore[no-untyped-call]


@pytest.fixture
def bare_topics() -> Topics:
    """Topics with no ACL granted yet (the `topics` fixture grants all of them)."""
    fresh = Topics.fresh()
    create_topics(fresh.all(), configs=fresh.configs())
    return fresh


def _service_acls(topics: Topics) -> set[tuple[str, str, str, str]]:
    found = set()
    client = admin()  # held while the futures run: a destroyed client never answers them
    for kind in (ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID):
        described = client.describe_acls(
            AclBindingFilter(
                kind,
                ANY,
                ResourcePatternType.ANY,
                SERVICE_PRINCIPAL,
                ANY,
                AclOperation.ANY,
                AclPermissionType.ANY,
            )
        )
        for binding in described.result(30):
            if binding.name.startswith((topics.name, topics.group)):
                found.add(
                    (
                        binding.restype.name,
                        binding.name,
                        binding.resource_pattern_type.name,
                        binding.operation.name,
                    )
                )
    return found


def test_the_service_works_with_exactly_the_listed_permissions(
    topics: Topics, start_consumer: StartConsumer, redis_client: redis.Redis
) -> None:
    granted = _service_acls(topics)
    assert granted == {
        ("TOPIC", topics.input, "LITERAL", "READ"),
        ("GROUP", topics.group, "LITERAL", "READ"),
        ("TOPIC", topics.attributed, "LITERAL", "WRITE"),
        ("TOPIC", topics.unlinked, "LITERAL", "WRITE"),
        ("TOPIC", topics.dead_letter, "LITERAL", "WRITE"),
        ("TOPIC", topics.changelog, "LITERAL", "WRITE"),
        ("TOPIC", topics.changelog, "LITERAL", "READ"),
        ("TOPIC", topics.erasures, "LITERAL", "WRITE"),  # leadattr forget with the service's credentials
        ("TRANSACTIONAL_ID", f"{topics.group}-", "PREFIXED", "WRITE"),
        *(
            ("TOPIC", name, "LITERAL", "DESCRIBE_CONFIGS")
            for name in (topics.attributed, topics.unlinked, topics.dead_letter, topics.changelog)
        ),
    }
    with _redis_user(redis_client, redis_acl_rule(topics.redis_prefix)) as url:
        consumer = start_consumer(LEADS_REDIS_URL=url)
        produce(
            topics.input,
            [
                lead("lp-direct", "signup", clickId="click-1"),
                lead("lp-deferred", "signup_started", clickId="click-2", mode="deferred"),
                lead("lp-deferred", "email_verified"),
                b"\x00not avro",
            ],
            keys=[b"lp-direct", b"lp-deferred", b"lp-deferred", b"bad"],
        )
        attributed = read_topic(topics.attributed, expected=2)
        assert sorted((r["customerExternalId"], r["clickId"]) for r in attributed) == [
            ("lp-deferred", "click-2"),
            ("lp-direct", "click-1"),
        ]
        assert len(read_topic(topics.dead_letter, expected=1)) == 1
        assert consumer.stop() == 0


def _failed_start(tmp_path: Path, topics: Topics, **env: str) -> str:
    process = ConsumerProcess(
        {**BASE_ENV, **topics.env(), "LEADS_STARTUP_TIMEOUT_SECONDS": "1", **env}, tmp_path / "consumer.log"
    )
    process.start(wait_ready=False)
    assert process.proc is not None
    code = process.proc.wait(60)
    output = process.logs()
    assert code == 3, output
    assert "Traceback" not in output
    return output


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        (lambda t, g: g.name == t.input, "not authorized for topic {input}"),
        (lambda t, g: g.name == t.dead_letter, "not authorized for topic {dead_letter}"),
        (lambda t, g: g.kind.name == "TRANSACTIONAL_ID", "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"),
    ],
    ids=["input-read", "dead-letter-write", "transactional-id-write"],
)
def test_a_missing_kafka_acl_stops_start_up_with_a_line_naming_it(
    bare_topics: Topics, tmp_path: Path, missing: object, named: str
) -> None:
    def skip(grant: Grant) -> bool:
        return bool(missing(bare_topics, grant))  # type: ignore[operator]

    grant_service_acls(bare_topics, skip)
    output = _failed_start(tmp_path, bare_topics)
    expected = named.format(input=bare_topics.input, dead_letter=bare_topics.dead_letter)
    lines = [line for line in output.splitlines() if line.startswith("leadattr: ")]
    assert lines and expected in lines[-1], output


def test_a_redis_user_without_the_key_pattern_stops_start_up_with_one_line(
    topics: Topics, tmp_path: Path, redis_client: redis.Redis
) -> None:
    with _redis_user(redis_client, redis_acl_rule("elsewhere")) as url:
        output = _failed_start(tmp_path, topics, LEADS_REDIS_URL=url)
        lines = [line for line in output.splitlines() if line.startswith("leadattr: ")]
        assert len(lines) == 1 and "redis at 127.0.0.1" in lines[0] and "permission refused" in lines[0], (
            output
        )

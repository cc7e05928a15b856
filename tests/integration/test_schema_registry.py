"""Confluent framing against a real schema registry (Apicurio, Confluent API, basic auth on):
producers with the Confluent client and a newer compatible writer schema, outputs read back by
the Confluent AvroDeserializer; and the registry's faults by kind, through a stand-in server."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from fastavro import parse_schema

from consumer.avro.schemas import decode, encode, load_schema, schema_text
from harness.kafka import Topics, lead, produce, read_topic
from harness.process import REPO, ConsumerProcess
from harness.registry import LocalRegistry
from tests.integration.conftest import StartConsumer
from tests.support.standin_registry import StandinRegistry

# LeadEvent as a product team evolves it: one more optional field (backward compatible).
NEWER_LEAD_EVENT = json.loads(schema_text("lead_event"))
NEWER_LEAD_EVENT["fields"].append({"name": "campaign", "type": ["null", "string"], "default": None})


@pytest.fixture(scope="module")
def registry(services: None) -> Iterator[LocalRegistry]:
    local = LocalRegistry(REPO / ".services").up()
    yield local
    local.stop_started()


def _client(registry: LocalRegistry, user: str) -> SchemaRegistryClient:
    # A request timeout: a registry that stops answering fails the test in seconds, not at the
    # suite's 300-s limit.
    return SchemaRegistryClient(
        {"url": registry.url, "basic.auth.user.info": registry.user_info(user), "timeout": 30}
    )


# Subjects named "<topic>-value", as the consumer registers them. Named explicitly because newer
# Confluent clients otherwise first ask the registry for topic associations, an endpoint Apicurio
# does not serve (the request then waits without a timeout).
BY_TOPIC = {"subject.name.strategy": topic_subject_name_strategy}


def test_framed_leads_from_a_newer_writer_schema_are_attributed_and_read_back_by_confluent(
    registry: LocalRegistry, topics: Topics, start_consumer: StartConsumer
) -> None:
    consumer = start_consumer(
        LEADS_SCHEMA_REGISTRY_URL=registry.url,
        LEADS_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO=registry.user_info("leadattr"),
    )
    serializer = AvroSerializer(_client(registry, "producer"), json.dumps(NEWER_LEAD_EVENT), conf=BY_TOPIC)
    context = SerializationContext(topics.input, MessageField.VALUE)
    events = [
        {**lead("reg-direct", "signup", clickId="click-r1", customerEmail="r@example.com"), "campaign": "c1"},
        {**lead("reg-deferred", "signup_started", clickId="click-r2", mode="deferred"), "campaign": "c2"},
        {**lead("reg-deferred", "email_verified"), "campaign": None},
    ]
    framed = [serializer(event, context) for event in events]
    assert all(value is not None and value[0] == 0 for value in framed)
    produce(
        topics.input,
        [v for v in framed if v is not None],
        keys=[e["customerExternalId"].encode() for e in events],
    )

    deserializer = AvroDeserializer(_client(registry, "reader"), conf=BY_TOPIC)
    out = SerializationContext(topics.attributed, MessageField.VALUE)

    def confluent(data: bytes) -> dict[str, Any]:
        value = deserializer(data, out)
        assert isinstance(value, dict)
        return value

    attributed = read_topic(topics.attributed, expected=2, decode_value=confluent)
    by_cid = {record["customerExternalId"]: record for record in attributed}
    assert sorted(by_cid) == ["reg-deferred", "reg-direct"] and len(attributed) == 2
    assert (by_cid["reg-direct"]["clickId"], by_cid["reg-direct"]["mode"]) == ("click-r1", "direct")
    assert (by_cid["reg-deferred"]["clickId"], by_cid["reg-deferred"]["mode"]) == ("click-r2", "deferred")
    assert by_cid["reg-deferred"]["verificationEventName"] == "email_verified"
    # The consumer registered its output schema under the topic's subject, as Confluent clients do.
    registered = _client(registry, "reader").get_latest_version(f"{topics.attributed}-value")
    assert json.loads(registered.schema.schema_str or "{}")["name"] == "AttributedLead"
    assert consumer.metric("leads_schema_registry_errors_total", 'kind="unavailable"') == 0
    assert consumer.stop() == 0


def test_refused_registry_credentials_stop_start_up_with_one_line(
    registry: LocalRegistry, topics: Topics, start_consumer: StartConsumer
) -> None:
    wrong = "leadattr:Wr0ngMarkerPw"
    consumer = start_consumer(
        wait_ready=False,
        LEADS_SCHEMA_REGISTRY_URL=registry.url,
        LEADS_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO=wrong,
        LEADS_STARTUP_TIMEOUT_SECONDS="1",
    )
    assert consumer.proc is not None
    assert consumer.proc.wait(60) == 3
    output = consumer.logs()
    assert "leadattr: schema registry refused the request: HTTP 401" in output
    assert "Traceback" not in output and "Wr0ngMarkerPw" not in output


def _framed(schema_id: int, record: dict[str, Any]) -> bytes:
    """Confluent framing of a LeadEvent written with the newer schema (registered as ``schema_id``)."""
    return struct.pack(">bI", 0, schema_id) + encode(
        parse_schema(NEWER_LEAD_EVENT), {"campaign": "c", **record}
    )


def _unframed(schema: str) -> Callable[[bytes], dict[str, Any]]:
    def read(data: bytes) -> dict[str, Any]:
        value = decode(load_schema(schema), data[5:])
        assert isinstance(value, dict)
        return value

    return read


def _wait_reason(consumer: ConsumerProcess, text: str, timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    body = ""
    while time.monotonic() < deadline:
        status, body = consumer.get("/readyz")
        if status == 503 and text in body:
            return body
        time.sleep(0.2)
    raise AssertionError(f"readiness never said {text!r}; last: {body!r}")


def test_registry_faults_by_kind_pause_or_dead_letter_and_lose_nothing(
    topics: Topics, start_consumer: StartConsumer
) -> None:
    standin = StandinRegistry()
    try:
        consumer = start_consumer(LEADS_SCHEMA_REGISTRY_URL=standin.url)
        # A writer schema the consumer has not seen (not cached), while the registry is down.
        schema_id = standin.add(json.dumps(NEWER_LEAD_EVENT))
        standin.mode = "unavailable"
        produce(
            topics.input, [_framed(schema_id, lead("sr-1", "signup", clickId="click-s1"))], keys=[b"sr-1"]
        )
        body = _wait_reason(consumer, "schema registry unavailable")
        assert "redis" not in body  # not reported as a Redis outage
        assert consumer.metric("leads_schema_registry_errors_total", 'kind="unavailable"') >= 1
        assert consumer.metric("leads_redis_up") == 1
        standin.mode = "refused"
        _wait_reason(consumer, "schema registry refused")
        assert consumer.metric("leads_dead_letter_total", 'reason="undecodable"') == 0
        standin.mode = "normal"
        attributed = read_topic(topics.attributed, expected=1, decode_value=_unframed("attributed_lead"))
        assert [(r["customerExternalId"], r["clickId"]) for r in attributed] == [("sr-1", "click-s1")]
        consumer.wait_ready(30)

        # An id the registry does not know: the record cannot be read, ever; dead-lettered, kept.
        produce(topics.input, [_framed(999, lead("sr-2", "signup", clickId="click-s2"))], keys=[b"sr-2"])
        dead = read_topic(topics.dead_letter, expected=1, decode_value=_unframed("dead_letter"))
        assert [(d["reason"], d["detail"]) for d in dead] == [("undecodable", "unknown writer schema id 999")]
        assert dead[0]["value"] == _framed(999, lead("sr-2", "signup", clickId="click-s2"))
        assert consumer.metric("leads_schema_registry_errors_total", 'kind="unknown_schema"') == 1
        assert consumer.stop() == 0
    finally:
        standin.close()

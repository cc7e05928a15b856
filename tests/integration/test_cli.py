"""`leadattr send` and `leadattr run` as users call them."""

from __future__ import annotations

import json
from pathlib import Path

from confluent_kafka import Consumer

from consumer.avro.codec import Codec
from harness.kafka import BOOTSTRAP, CLIENT, Topics
from tests.integration.conftest import StartConsumer
from tests.support.cli import leadattr


def _raw(topic: str, count: int) -> list[tuple[bytes | None, dict[str, object]]]:
    consumer = Consumer(
        {"bootstrap.servers": BOOTSTRAP, "group.id": f"r-{topic}", "auto.offset.reset": "earliest", **CLIENT}
    )
    consumer.subscribe([topic])
    codec, out = Codec("lead_event"), []
    for _ in range(60):
        for message in consumer.consume(100, 0.5):
            if not message.error():
                out.append((message.key(), codec.decode(message.value() or b"")))
        if len(out) >= count:
            break
    consumer.close()
    return out


def test_send_publishes_json_as_avro_keyed_by_cid(topics: Topics, tmp_path: Path) -> None:
    lines = [
        {"customerExternalId": "cust-1", "eventName": "signup", "clickId": "k1"},
        {"customerExternalId": "cust-2", "eventName": "signup_started", "clickId": "k2", "mode": "deferred"},
    ]
    path = tmp_path / "leads.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    env = {"LEADS_INPUT_TOPIC": topics.input}
    assert leadattr(["send", "--file", str(path)], env).returncode == 0
    single = leadattr(
        ["send", json.dumps({"customerExternalId": "cust-3", "eventName": "email_verified"})], env
    )
    assert single.returncode == 0
    assert leadattr(["send"], env, stdin=json.dumps(lines[0])).returncode == 0
    records = _raw(topics.input, 4)
    assert sorted((k, v["customerExternalId"]) for k, v in records) == [
        (b"cust-1", "cust-1"),
        (b"cust-1", "cust-1"),
        (b"cust-2", "cust-2"),
        (b"cust-3", "cust-3"),
    ]


def test_send_refuses_a_bad_payload_and_sends_nothing(topics: Topics) -> None:
    bad = "\n".join(
        [json.dumps({"customerExternalId": "c", "eventName": "x"}), json.dumps({"eventName": "y"})]
    )
    result = leadattr(["send"], {"LEADS_INPUT_TOPIC": topics.input}, stdin=bad)
    assert result.returncode == 2
    assert "line 2: customerExternalId" in result.stderr
    assert _raw(topics.input, 1) == []


def test_replay_sends_dead_letters_back_byte_for_byte(topics: Topics, start_consumer: StartConsumer) -> None:
    from harness.kafka import create_topics, lead, produce, read_topic  # noqa: PLC0415

    consumer = start_consumer()
    produce(topics.input, [lead("c-1", "signup", clickId="k", mode="later"), b"garbage"], keys=[b"c-1", b"g"])
    dead = read_topic(topics.dead_letter, expected=2)
    assert consumer.stop() == 0
    target = topics.input + ".replayed"
    create_topics([target], partitions=1)
    env = {**topics.env(), "LEADS_INPUT_TOPIC": topics.input}
    dry = leadattr(["replay", "--reason", "invalid_mode", "--to", target, "--dry-run"], env)
    assert dry.returncode == 0 and "would replay invalid_mode: 1" in dry.stderr
    result = leadattr(["replay", "--reason", "invalid_mode", "--to", target], env)
    assert result.returncode == 0 and "replayed invalid_mode: 1" in result.stderr, result.stderr
    original = next(d for d in dead if d["reason"] == "invalid_mode")
    consumer_ = Consumer(
        {"bootstrap.servers": BOOTSTRAP, "group.id": f"r-{target}", "auto.offset.reset": "earliest", **CLIENT}
    )
    consumer_.subscribe([target])
    replayed = []
    for _ in range(40):
        replayed += [m for m in consumer_.consume(10, 0.5) if not m.error()]
        if replayed:
            break
    consumer_.close()
    assert [(m.key(), m.value()) for m in replayed] == [(b"c-1", original["value"])]

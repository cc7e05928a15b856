"""Dead letters always fit: a value longer than LEADS_DEAD_LETTER_MAX_VALUE_BYTES keeps its first
bytes, its length and its SHA-256, a key longer than a quarter of it its first bytes, and the
detail says so."""

from __future__ import annotations

import hashlib

from consumer.avro.outputs import OutputCodecs
from consumer.avro.schemas import decode, load_schema
from consumer.config import Settings
from consumer.model import SourceRecord
from consumer.reasons import DeadLetterReason

CODECS = OutputCodecs(Settings(_env_file=None, dead_letter_max_value_bytes=2048))  # type: ignore[call-arg]
SCHEMA = load_schema("dead_letter")


def _dead_letter(key: bytes | None, value: bytes) -> tuple[bytes | None, dict[str, object], int]:
    """(the dead letter's Kafka key, its record, its size as produced: key and value)."""
    source = SourceRecord("leads.raw", 3, 41, key, value, 1_000)
    output = CODECS.dead_letter_output(source, DeadLetterReason.UNDECODABLE, "not Avro", 2_000)
    assert output.value is not None
    record: dict[str, object] = decode(SCHEMA, output.value)
    assert record["key"] == output.key
    return output.key, record, len(output.key or b"") + len(output.value)


def test_a_value_that_fits_is_kept_whole() -> None:
    _, record, _ = _dead_letter(b"k", b"x" * 2000)
    assert record["value"] == b"x" * 2000
    assert (record["valueTruncated"], record["originalValueLength"], record["originalValueSha256"]) == (
        False,
        None,
        None,
    )
    assert record["detail"] == "not Avro"


def test_a_value_too_long_keeps_its_prefix_length_and_hash() -> None:
    value = bytes(range(256)) * 20  # 5,120 bytes
    key, record, _ = _dead_letter(b"key-12", value)
    assert key == b"key-12"
    room = 2048 - 2 * len(b"key-12")
    assert record["value"] == value[:room]
    assert record["valueTruncated"] is True
    assert record["originalValueLength"] == len(value)
    assert record["originalValueSha256"] == hashlib.sha256(value).hexdigest()
    assert record["detail"] == f"not Avro; value truncated to its first {room} of {len(value)} bytes"
    assert (record["sourcePartition"], record["sourceOffset"], record["key"]) == (3, 41, b"key-12")


def test_a_key_longer_than_a_quarter_of_the_room_keeps_its_prefix_and_the_letter_fits() -> None:
    for key_size, value_size in ((1100, 10), (600, 5_000), (1_040_000, 10), (100_000, 1_040_000)):
        key, record, size = _dead_letter(b"k" * key_size, b"v" * value_size)
        assert key == b"k" * 512  # 2,048 // 4
        assert size < 2048 + 400, (key_size, value_size, size)  # the room and the envelope
        assert f"key truncated to its first 512 of {key_size} bytes" in str(record["detail"])
        assert record["value"] == b"v" * min(value_size, 1024)
        assert record["valueTruncated"] is (value_size > 1024)


def test_no_key_leaves_the_whole_room_to_the_value() -> None:
    key, record, _ = _dead_letter(None, b"v" * 3000)
    assert key is None and record["value"] == b"v" * 2048

"""Dead letters always fit: a value longer than LEADS_DEAD_LETTER_MAX_VALUE_BYTES keeps its first
bytes, its length and its SHA-256, and says so."""

from __future__ import annotations

import hashlib

from consumer.avro.outputs import OutputCodecs
from consumer.avro.schemas import decode, load_schema
from consumer.config import Settings
from consumer.model import SourceRecord
from consumer.reasons import DeadLetterReason

CODECS = OutputCodecs(Settings(_env_file=None, dead_letter_max_value_bytes=2048))  # type: ignore[call-arg]
SCHEMA = load_schema("dead_letter")


def _dead_letter(key: bytes | None, value: bytes) -> dict[str, object]:
    source = SourceRecord("leads.raw", 3, 41, key, value, 1_000)
    output = CODECS.dead_letter_output(source, DeadLetterReason.UNDECODABLE, "not Avro", 2_000)
    assert output.value is not None and output.key == key
    record: dict[str, object] = decode(SCHEMA, output.value)
    return record


def test_a_value_that_fits_is_kept_whole() -> None:
    record = _dead_letter(b"k", b"x" * 2000)
    assert record["value"] == b"x" * 2000
    assert (record["valueTruncated"], record["originalValueLength"], record["originalValueSha256"]) == (
        False,
        None,
        None,
    )
    assert record["detail"] == "not Avro"


def test_a_value_too_long_keeps_its_prefix_length_and_hash() -> None:
    value = bytes(range(256)) * 20  # 5,120 bytes
    record = _dead_letter(b"key-12", value)
    room = 2048 - 2 * len(b"key-12")
    assert record["value"] == value[:room]
    assert record["valueTruncated"] is True
    assert record["originalValueLength"] == len(value)
    assert record["originalValueSha256"] == hashlib.sha256(value).hexdigest()
    assert record["detail"] == f"not Avro; value truncated to its first {room} of {len(value)} bytes"
    assert (record["sourcePartition"], record["sourceOffset"], record["key"]) == (3, 41, b"key-12")


def test_a_key_longer_than_the_room_leaves_an_empty_prefix() -> None:
    record = _dead_letter(b"k" * 1100, b"v" * 10)
    assert (record["value"], record["valueTruncated"], record["originalValueLength"]) == (b"", True, 10)

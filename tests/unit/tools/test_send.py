"""`leadattr send` refuses payloads that do not fit the schema, naming the field, and sends nothing."""

from __future__ import annotations

import json

import pytest

from consumer.avro.codec import Codec
from consumer.tools.send import PayloadError, check_payload, parse_lines


def test_contract_payload_is_accepted_and_encodable() -> None:
    payload = {
        "customerExternalId": "cust-1",
        "eventName": "signup_started",
        "clickId": "gclid-1",
        "mode": "deferred",
        "metadata": {"utm": "x"},
    }
    record = check_payload(payload)
    assert record["timestamp"] is None
    assert Codec("lead_event").decode(Codec("lead_event").encode(record))["clickId"] == "gclid-1"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"eventName": "x"}, "customerExternalId"),
        ({"customerExternalId": "c", "eventName": 5}, "eventName"),
        ({"customerExternalId": "c", "eventName": "x", "clickId": 12}, "clickId"),
        ({"customerExternalId": "c", "eventName": "x", "metadata": {"a": 1}}, "metadata"),
        ({"customerExternalId": "c", "eventName": "x", "customerEmial": "typo"}, "customerEmial"),
    ],
)
def test_bad_payload_names_the_field(payload: dict[str, object], field: str) -> None:
    with pytest.raises(PayloadError, match=f"^{field}:"):
        check_payload(payload)


def test_one_bad_line_refuses_the_whole_file() -> None:
    lines = [json.dumps({"customerExternalId": "c", "eventName": "x"}), "{not json", ""]
    with pytest.raises(PayloadError, match=r"^line 2: not JSON"):
        list(parse_lines(lines))

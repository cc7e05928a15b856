"""The hand-written AttributedLead encoder writes exactly fastavro's bytes for the bundled schema."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.avro.attributed_writer import LAYOUT, encode_attributed
from consumer.avro.codec import Codec
from consumer.avro.outputs import OutputCodecs
from consumer.avro.schemas import has_layout, schema_text
from consumer.model import AttributedLead
from consumer.reasons import Mode

CODEC = Codec("attributed_lead")
text = st.text(max_size=1500)  # past 1,024 bytes: lengths beyond the precomputed table
optional = st.none() | text
millis = st.integers(min_value=-(2**62), max_value=2**62)

leads = st.builds(
    AttributedLead,
    lead_id=text,
    customer_external_id=text,
    click_id=text,
    event_name=text,
    mode=st.sampled_from(Mode),
    verification_event_name=optional,
    customer_name=optional,
    customer_email=optional,
    customer_avatar=optional,
    metadata=st.none() | st.dictionaries(text, text, max_size=5),
    event_timestamp_ms=st.none() | millis,
    verified_timestamp_ms=st.none() | millis,
    attributed_at_ms=millis,
)


@settings(max_examples=400, deadline=None)
@given(leads)
def test_same_bytes_as_fastavro(lead: AttributedLead) -> None:
    assert encode_attributed(lead) == CODEC.encode(OutputCodecs.attributed_record(lead))


def test_the_bundled_schema_has_the_layout_the_encoder_was_written_for() -> None:
    # Otherwise the consumer silently falls back to fastavro (correct, but ~5x slower).
    assert has_layout(json.loads(schema_text("attributed_lead")), LAYOUT)


def test_a_changed_schema_is_not_encoded_by_hand() -> None:
    schema = json.loads(schema_text("attributed_lead"))
    schema["fields"].append({"name": "campaign", "type": ["null", "string"], "default": None})
    assert not has_layout(schema, LAYOUT)
    schema = json.loads(schema_text("attributed_lead"))
    schema["fields"][0], schema["fields"][1] = schema["fields"][1], schema["fields"][0]
    assert not has_layout(schema, LAYOUT)

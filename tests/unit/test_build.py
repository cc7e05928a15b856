"""The tests run the build that production runs: the per-event modules compiled by mypyc."""

from __future__ import annotations

import dataclasses
import os
import runpy
from pathlib import Path
from typing import Any

from consumer import compiled_modules
from consumer.avro.outputs import Output
from consumer.model import AttributedLead, Decision, LeadEvent, SourceRecord
from consumer.reasons import DeadLetterReason, DuplicateKind, Mode
from consumer.state.customer import CustomerState, HeldVerification, PendingLead, Write

ROOT = Path(__file__).resolve().parents[2]


def test_every_module_listed_in_setup_runs_compiled() -> None:
    listed = runpy.run_path(str(ROOT / "setup.py"), run_name="setup")["COMPILED"]
    expected = sorted(path.removesuffix(".py").replace("/", ".") for path in listed)
    # LEADS_PURE_PYTHON=1 builds no extension (setup.py): then nothing may run compiled either.
    assert compiled_modules() == ([] if os.environ.get("LEADS_PURE_PYTHON") == "1" else expected)


LEAD = AttributedLead("l", "c", "k", "e", Mode.DEFERRED, "v", "n", "m", "a", {"u": "1"}, 1, 2, 3)
PENDING = PendingLead("k", "e", "n", "m", "a", {"u": "1"}, 1, 2, 3, 4)
HELD = HeldVerification("e", "n", "m", "a", {"u": "1"}, 1, 2, 3, 4)
# One value per field, each told apart from the others (the samples above are built positionally).
SAMPLES: dict[type[Any], dict[str, Any]] = {
    LeadEvent: dict(
        customer_external_id="c",
        event_name="e",
        click_id="k",
        deferred=True,
        timestamp_ms=1,
        customer_name="n",
        customer_email="m",
        customer_avatar="a",
        metadata={"u": "1"},
    ),
    AttributedLead: dict(
        lead_id="l",
        customer_external_id="c",
        click_id="k",
        event_name="e",
        mode=Mode.DEFERRED,
        verification_event_name="v",
        customer_name="n",
        customer_email="m",
        customer_avatar="a",
        metadata={"u": "1"},
        event_timestamp_ms=1,
        verified_timestamp_ms=2,
        attributed_at_ms=3,
    ),
    Decision: dict(
        attributed=LEAD,
        dead_letter=DeadLetterReason.INVALID_FIELD,
        duplicate=DuplicateKind.DIRECT,
        detail="d",
        verification_delay_ms=1,
        decided_at_ms=2,
    ),
    SourceRecord: dict(topic="t", partition=1, offset=2, key=b"k", value=b"v", timestamp_ms=3),
    Output: dict(topic="t", key=b"k", value=b"v", source_timestamp_ms=1),
    PendingLead: dict(
        click_id="k",
        event_name="e",
        customer_name="n",
        customer_email="m",
        customer_avatar="a",
        metadata={"u": "1"},
        event_timestamp_ms=1,
        created_ms=2,
        deadline_ms=3,
        lease_until_ms=4,
    ),
    HeldVerification: dict(
        event_name="e",
        customer_name="n",
        customer_email="m",
        customer_avatar="a",
        metadata={"u": "1"},
        verified_timestamp_ms=1,
        created_ms=2,
        deadline_ms=3,
        lease_until_ms=4,
    ),
    CustomerState: dict(pending=(PENDING,), held=(HELD,), done={"e": 1}, verified_until_ms=2),
    Write: dict(
        cid="c",
        old_blob=b"o",
        new_blob=b"n",
        wake_ms=3,
        journal={("t", 1): b"j"},
        pending_delta=4,
        held_delta=5,
    ),
}


def test_each_written_init_takes_every_field_in_order() -> None:
    """The per-event records write their own __init__ for mypyc (consumer/model.py): a field added
    to one of them and forgotten in its __init__ would be left unset, or set from another."""
    for cls, values in SAMPLES.items():
        assert [f.name for f in dataclasses.fields(cls)] == list(values), cls.__name__
        by_name, in_order = cls(**values), cls(*values.values())  # compiled: no signature to read
        for built in (by_name, in_order):
            assert all(getattr(built, name) is value for name, value in values.items()), cls.__name__

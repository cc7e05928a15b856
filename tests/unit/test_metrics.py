"""Metric behaviour: every label value exported from the start, decisions counted by label."""

from __future__ import annotations

from prometheus_client import generate_latest

from consumer import metrics
from consumer.delivery.protocol import count_decisions
from consumer.model import AttributedLead, Decision, Invalid
from consumer.reasons import DeadLetterReason, DuplicateKind, Mode, UnlinkedReason


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels or {})
    assert value is not None, f"{name}{labels} is not exported"
    return value


def test_every_label_value_is_exported_from_the_start() -> None:
    text = generate_latest(metrics.REGISTRY).decode()
    for mode in Mode:
        assert f'leads_attributed_total{{mode="{mode.value}"}}' in text
    for reason in DeadLetterReason:
        assert f'leads_dead_letter_total{{reason="{reason.value}"}}' in text
    for unlinked in UnlinkedReason:
        assert f'leads_unlinked_total{{reason="{unlinked.value}"}}' in text
    for kind in DuplicateKind:
        assert f'leads_duplicates_total{{kind="{kind.value}"}}' in text
    for name in ("leads_pending", "leads_events_consumed_total", "leads_verification_delay_seconds_bucket"):
        assert name in text


def _lead(mode: Mode) -> AttributedLead:
    return AttributedLead("id", "cid", "click", "e", mode, None, None, None, None, None, None, None, 0)


def test_decisions_are_counted_by_label() -> None:
    before = {
        "direct": sample("leads_attributed_total", {"mode": "direct"}),
        "deferred": sample("leads_attributed_total", {"mode": "deferred"}),
        "dup": sample("leads_duplicates_total", {"kind": "verification"}),
        "dlq": sample("leads_dead_letter_total", {"reason": "invalid_mode"}),
        "dlq2": sample("leads_dead_letter_total", {"reason": "duplicate_attribution"}),
        "delay": sample("leads_verification_delay_seconds_count"),
        "delay_sum": sample("leads_verification_delay_seconds_sum"),
    }
    count_decisions(
        [
            Decision(attributed=_lead(Mode.DIRECT)),
            Decision(attributed=_lead(Mode.DEFERRED), verification_delay_ms=90_000),
            Decision(duplicate=DuplicateKind.VERIFICATION),
            Invalid(DeadLetterReason.INVALID_MODE, "mode"),
            Decision(dead_letter=DeadLetterReason.DUPLICATE_ATTRIBUTION),
            Decision(),  # stored as pending: nothing counted
            Decision(attributed=_lead(Mode.DIRECT)),  # one batch: summed per label
        ]
    )
    assert sample("leads_attributed_total", {"mode": "direct"}) == before["direct"] + 2
    assert sample("leads_attributed_total", {"mode": "deferred"}) == before["deferred"] + 1
    assert sample("leads_duplicates_total", {"kind": "verification"}) == before["dup"] + 1
    assert sample("leads_dead_letter_total", {"reason": "invalid_mode"}) == before["dlq"] + 1
    assert sample("leads_dead_letter_total", {"reason": "duplicate_attribution"}) == before["dlq2"] + 1
    assert sample("leads_verification_delay_seconds_count") == before["delay"] + 1
    assert sample("leads_verification_delay_seconds_sum") == before["delay_sum"] + 90

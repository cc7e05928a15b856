"""Every code an analyst or an SRE can see on a topic or a metric label, in one place.

The values are part of the product contract (section 3 and 7): renaming one breaks dashboards
and downstream queries, so they are spelled out explicitly rather than derived from names.
"""

from enum import StrEnum


class Mode(StrEnum):
    DIRECT = "direct"  # clickId present, no mode: attributed on arrival
    DEFERRED = "deferred"  # attributed when the verification event joins Event 1


class DeadLetterReason(StrEnum):
    UNDECODABLE = "undecodable"  # bytes are not Avro of the LeadEvent schema
    INVALID_FIELD = "invalid_field"  # a field breaks a rule of contract section 2; detail names it
    INVALID_MODE = "invalid_mode"  # mode is neither absent nor "deferred"
    MISSING_CLICK_ID = "missing_click_id"  # mode "deferred" without a clickId
    DUPLICATE_ATTRIBUTION = "duplicate_attribution"  # a second click for a lead whose attribution is locked
    CORRUPT_STATE = "corrupt_state"  # the customer's stored state could not be read (moved aside)
    STATE_LIMIT = "state_limit"  # the event would grow the customer's state past MAX_STATE_BYTES


class UnlinkedReason(StrEnum):
    NO_MATCHING_EVENT1 = "no_matching_event1"  # Event 2 joined nothing within the grace period
    VERIFICATION_EXPIRED = "verification_expired"  # a deferred Event 1 was not verified within its TTL


class DuplicateKind(StrEnum):
    DIRECT = "direct"  # the same direct lead (cid, eventName) again within the dedupe window
    DEFERRED_EVENT1 = "deferred_event1"  # the same Event 1 again, pending or already attributed
    VERIFICATION = "verification"  # an Event 2 for a customer verified recently or already held


class RebalanceEvent(StrEnum):
    ASSIGNED = "assigned"
    REVOKED = "revoked"
    LOST = "lost"

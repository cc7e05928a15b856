"""Field rules of contract section 2: a decoded record becomes a LeadEvent or an Invalid.

Details name the field and the rule, never the value: values may be customer PII and the
detail travels to the dead-letter topic, logs and dashboards.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from consumer.model import Invalid, LeadEvent
from consumer.reasons import DeadLetterReason

MAX_CID: Final = 100
MAX_EVENT_NAME: Final = 255
MAX_CLICK_ID: Final = 100
MAX_NAME: Final = 100
MAX_EMAIL: Final = 100
MAX_AVATAR: Final = 2048
MAX_METADATA_CHARS: Final = 10_000
DEFERRED: Final = "deferred"

# Pragmatic RFC 5322 subset: dot-atom local part, and a domain of LDH labels with at least one dot.
_EMAIL: Final = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)


def _field(name: str, rule: str) -> Invalid:
    return Invalid(DeadLetterReason.INVALID_FIELD, f"{name}: {rule}")


def _length(name: str, value: object, low: int, high: int) -> Invalid | None:
    """The string-field rule: present when ``low`` > 0, a string, ``low``..``high`` characters."""
    if value is None:
        return _field(name, "is required") if low else None
    if type(value) is not str:
        return _field(name, "must be a string")
    if not low <= len(value) <= high:
        return _field(name, f"must be {low}..{high} characters")
    return None


def parse_timestamp(value: str) -> int | None:
    """ISO 8601 with an offset or Z -> epoch milliseconds; None when it is not that."""
    common = _common_timestamp(value)
    return common if common is not None else iso_timestamp(value)


def iso_timestamp(value: str) -> int | None:
    """parse_timestamp's general path, for any shape datetime.fromisoformat reads."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None or "T" not in value.upper():
        return None
    return int(parsed.timestamp() * 1000)


# The common shape, "2026-11-27T10:00:00.123+00:00" (or Z; no fraction or 6 digits), read from its
# characters' code points: datetime.fromisoformat and .timestamp() build three objects per event and
# cost ~3 % of the consumer's CPU. Anything else, or a date this does not vouch for, goes to
# iso_timestamp; tests/unit/test_validate.py checks both agree. Years 1900-2199 only: the total in
# microseconds then stays below 2^53, so compiled float division rounds exactly as Python's does.
_DAYS_IN_MONTH: Final = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _common_timestamp(value: str) -> int | None:
    n = len(value)
    if n < 20 or ord(value[10]) != 84:  # T
        return None
    if ord(value[4]) != 45 or ord(value[7]) != 45 or ord(value[13]) != 58 or ord(value[16]) != 58:  # - - : :
        return None
    century, year2 = _two_digits(value, 0), _two_digits(value, 2)
    month, day = _two_digits(value, 5), _two_digits(value, 8)
    hour, minute, second = _two_digits(value, 11), _two_digits(value, 14), _two_digits(value, 17)
    if century < 0 or year2 < 0 or month < 0 or day < 0 or hour < 0 or minute < 0 or second < 0:
        return None
    year = century * 100 + year2
    pos = 19
    micros = 0
    if ord(value[pos]) == 46:  # "." then exactly 3 or 6 digits, as fromisoformat reads them
        digits = 0
        pos += 1
        while pos < n and 48 <= ord(value[pos]) <= 57:
            micros = micros * 10 + ord(value[pos]) - 48
            digits += 1
            pos += 1
        if digits == 3:
            micros *= 1000
        elif digits != 6:
            return None
    offset_s = 0
    if n - pos == 1 and ord(value[pos]) == 90:  # Z
        pass
    elif (
        n - pos == 6 and (ord(value[pos]) == 43 or ord(value[pos]) == 45) and ord(value[pos + 3]) == 58
    ):  # +HH:MM / -HH:MM
        offset_hours, offset_minutes = _two_digits(value, pos + 1), _two_digits(value, pos + 4)
        if not (0 <= offset_hours <= 23 and 0 <= offset_minutes <= 59):
            return None
        offset_s = offset_hours * 3600 + offset_minutes * 60
        if ord(value[pos]) == 45:
            offset_s = -offset_s
    else:
        return None
    if not (1900 <= year <= 2199 and 1 <= month <= 12 and hour <= 23 and minute <= 59 and second <= 59):
        return None
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if day < 1 or day > _DAYS_IN_MONTH[month] + (1 if month == 2 and leap else 0):
        return None
    # Days since 1970-01-01 of a proleptic Gregorian date (the "days from civil" algorithm).
    y = year - 1 if month <= 2 else year
    era = y // 400
    year_of_era = y - era * 400
    day_of_year = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days = era * 146097 + day_of_era - 719468
    total_us = (days * 86400 + hour * 3600 + minute * 60 + second - offset_s) * 1_000_000 + micros
    # As int(datetime.timestamp() * 1000): seconds as a float first, then milliseconds, truncated.
    return int(total_us / 1_000_000 * 1000)


def _two_digits(text: str, i: int) -> int:
    """The number text[i:i+2] spells in ASCII digits, -1 when it is not two digits. ord(text[i])
    compiles to a read of the code point: no 1-character string is built."""
    high, low = ord(text[i]), ord(text[i + 1])
    if 48 <= high <= 57 and 48 <= low <= 57:
        return (high - 48) * 10 + low - 48
    return -1


def valid_email(value: str) -> bool:
    return len(value) <= MAX_EMAIL and _EMAIL.match(value) is not None


# http(s)://[userinfo@]host[:port][/path?query#fragment], no whitespace anywhere. A regex rather
# than urlsplit: this runs for every event and urlsplit alone cost more than the Avro decode.
_AVATAR: Final = re.compile(
    r"^(?i:https?)://(?:[^@/?#\s]*@)?(?:\[[0-9A-Fa-f:.]+\]|[^:/?#\s\[\]@]+)(?::\d{1,5})?(?:[/?#]\S*)?$"
)


def valid_avatar(value: str) -> bool:
    return len(value) <= MAX_AVATAR and _AVATAR.match(value) is not None


def validate(record: dict[str, Any]) -> LeadEvent | Invalid:
    """A record as fastavro decodes it (a dict of the schema's fields)."""
    get = record.get
    return validate_fields(
        get("customerExternalId"),
        get("eventName"),
        get("clickId"),
        get("mode"),
        get("timestamp"),
        get("customerName"),
        get("customerEmail"),
        get("customerAvatar"),
        get("metadata"),
    )


def validate_fields(
    cid: object,
    event_name: object,
    click_id: object,
    mode: object,
    timestamp: object,
    name: object,
    email: object,
    avatar: object,
    metadata: object,
) -> LeadEvent | Invalid:
    """The rules, on the fields in schema order (consumer/avro/lead_reader.py reads them from the bytes
    without building a dict). Checked in this order; the first problem is reported."""
    problem = (
        _length("customerExternalId", cid, 1, MAX_CID)
        or _length("eventName", event_name, 1, MAX_EVENT_NAME)
        or _length("clickId", click_id, 0, MAX_CLICK_ID)
        or _length("customerName", name, 0, MAX_NAME)
        or _length("customerEmail", email, 0, MAX_EMAIL)
        or _length("customerAvatar", avatar, 0, MAX_AVATAR)
        or _length("timestamp", timestamp, 0, 64)
    )
    if problem is not None:
        return problem
    # Past the length rules each of these is a str (or None where optional): narrowed for mypy.
    assert isinstance(cid, str) and isinstance(event_name, str)
    assert (click_id is None or isinstance(click_id, str)) and (name is None or isinstance(name, str))
    assert (email is None or isinstance(email, str)) and (avatar is None or isinstance(avatar, str))

    if mode is not None and mode != DEFERRED:
        return Invalid(DeadLetterReason.INVALID_MODE, 'mode: must be absent or "deferred"')

    timestamp_ms: int | None = None
    if isinstance(timestamp, str):
        timestamp_ms = parse_timestamp(timestamp)
        if timestamp_ms is None:
            return _field("timestamp", "must be ISO 8601 with an offset or Z")
    if email is not None and not valid_email(email):
        return _field("customerEmail", "must be a valid email address")
    if avatar is not None and not valid_avatar(avatar):
        return _field("customerAvatar", "must be an http(s) URL")
    strings: Mapping[str, str] | None = None
    if metadata is not None:
        # dict first: what both decoders return, checked without the Mapping ABC's machinery.
        if not isinstance(metadata, (dict, Mapping)):
            return _field("metadata", "must be a map of strings")
        chars = 0
        for k, v in metadata.items():
            if type(k) is not str or type(v) is not str:
                return _field("metadata", "must be a map of strings")
            chars += len(k) + len(v)
        if chars > MAX_METADATA_CHARS:
            return _field("metadata", f"must be at most {MAX_METADATA_CHARS} characters in total")
        strings = metadata

    click = click_id or None  # "" is treated as absent (contract section 2)
    deferred = mode == DEFERRED
    if deferred and click is None:
        return Invalid(DeadLetterReason.MISSING_CLICK_ID, "mode deferred needs a clickId")
    return LeadEvent(cid, event_name, click, deferred, timestamp_ms, name, email, avatar, strings)

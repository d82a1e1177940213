"""What an audit record holds: who did what to which resource, with what result, when and from where.

Never object data, metadata values or secrets: only names (tenant, principal,
access key *id*, bucket/key), the action, the outcome and the error's class.
A record is a flat JSON object; the log adds its ``seq`` and writes it in
canonical form (sorted keys, no spaces), which is what its leaf hash covers.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

__all__ = ["FIELDS", "OUTCOMES", "make_record"]

# Every field of a record (besides seq); a caller may leave any but action, resource and outcome out.
FIELDS = ("time", "principal", "tenant", "access_key_id", "action", "resource", "outcome", "error",
          "request_id", "source_address")
OUTCOMES = ("allowed", "denied", "error")
_MAX_TEXT = 2048  # a record is a line of a log, not a place to store things


def make_record(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A record from ``fields``: unknown fields, a bad outcome or a non-text value are ``ValueError``s."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"audit record: unknown fields {sorted(unknown)}")
    for required in ("action", "resource", "outcome"):
        if not fields.get(required):
            raise ValueError(f"audit record: {required!r} is required")
    if fields["outcome"] not in OUTCOMES:
        raise ValueError(f"audit record: outcome {fields['outcome']!r} is not one of {OUTCOMES}")
    record: dict[str, Any] = {name: None for name in FIELDS}
    for name, value in fields.items():
        if name == "time":
            continue
        if value is not None and not isinstance(value, str):
            raise ValueError(f"audit record: {name} must be text, not {type(value).__name__}")
        record[name] = value[:_MAX_TEXT] if isinstance(value, str) else None
    when = fields.get("time")
    record["time"] = round(float(when if when is not None else time.time()), 6)
    return record

"""``[gateway] server_timing``: every S3 response names where the replica spent its time.

The session gateway runs with the option on; the TLS gateway (``dw up``
defaults, test_gateway_tls.py) checks that it is off by default.
"""
from __future__ import annotations

import os
import re
from typing import Any

from serve_apps.s3_api import TIMING_PHASES

ENTRY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*);dur=(\d+\.\d+)$")


def phases(response: dict[str, Any]) -> dict[str, float]:
    """The Server-Timing header of a boto3 response, as milliseconds per phase (every entry well-formed)."""
    header = response["ResponseMetadata"]["HTTPHeaders"]["server-timing"]
    parsed: dict[str, float] = {}
    for entry in header.split(", "):
        match = ENTRY.match(entry)
        assert match is not None, f"not a Server-Timing entry: {entry!r} in {header!r}"
        assert match[1] not in parsed, f"{match[1]} twice in {header!r}"
        parsed[match[1]] = float(match[2])
    return parsed


def check(timing: dict[str, float]) -> None:
    assert list(timing)[:len(TIMING_PHASES) + 1] == ["total", *TIMING_PHASES]
    assert 0 < timing["auth"] <= timing["total"]
    # Each phase is part of the handler's time. Phases may overlap (the body read overlaps the
    # write, and a write's audit record is appended while its commit runs), so they are not summed.
    assert all(value <= timing["total"] + 0.05 for value in timing.values()), timing


PLUGIN_PHASES = [name for name in TIMING_PHASES if name not in ("auth", "body")]


def test_a_put_and_a_get_carry_their_phases(s3: Any, bucket: str) -> None:
    body = os.urandom(4096)
    put = s3.put_object(Bucket=bucket, Key="timed", Body=body)
    timing = phases(put)
    check(timing)
    # The commit is a call to the catalog; the write's audit record is appended as it runs.
    assert timing["catalog"] > 0 and timing["audit"] > 0, timing
    got = s3.get_object(Bucket=bucket, Key="timed")
    assert got["Body"].read() == body
    timing = phases(got)
    check(timing)
    # A small GET makes no plugin call: the catalog's file is read here (same node), the bucket
    # key is cached, and the object's sealed bytes are in its row.
    assert [timing[name] for name in PLUGIN_PHASES] == [0.0] * len(PLUGIN_PHASES), timing


def test_errors_and_bucket_operations_are_timed_too(s3: Any, bucket: str) -> None:
    import botocore.exceptions

    try:
        s3.get_object(Bucket=bucket, Key="no-such-key")
    except botocore.exceptions.ClientError as error:
        assert error.response["Error"]["Code"] == "NoSuchKey"
        timing = phases(error.response)
    else:
        raise AssertionError("a missing key was found")
    assert timing["auth"] > 0 and timing["total"] >= timing["auth"]
    assert set(TIMING_PHASES) <= set(phases(s3.list_objects_v2(Bucket=bucket)))

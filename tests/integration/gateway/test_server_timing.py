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
    assert timing["auth"] > 0
    # The phases are parts of the handler's time (the body read overlaps the write: not summed).
    plugins = sum(value for name, value in timing.items() if name not in ("total", "auth", "body"))
    assert 0 < plugins <= timing["total"] + 0.05
    assert timing["auth"] <= timing["total"]


def test_a_put_and_a_get_carry_their_phases(s3: Any, bucket: str) -> None:
    body = os.urandom(4096)
    put = s3.put_object(Bucket=bucket, Key="timed", Body=body)
    timing = phases(put)
    check(timing)
    assert timing["catalog"] > 0  # the commit is a call to the catalog
    got = s3.get_object(Bucket=bucket, Key="timed")
    assert got["Body"].read() == body
    check(phases(got))


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

"""What ``dw`` prints: tables, JSON on a stdout of its own, progress bars."""
from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

PROGRESS_THRESHOLD = 8 << 20  # show progress for transfers larger than this
# C0 and C1 controls and DEL: keys may hold them (as in S3), and a terminal would obey them.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

stderr = Console(stderr=True)
stdout = Console()
wide = Console(width=10_000)  # for tables written to a pipe or file


def printable(text: str) -> str:
    """``text`` with its control characters written as ``\\xNN``, so that a stored name
    (an object key, an audit record's resource) cannot drive the terminal it is shown on."""
    return _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", text)


def print_table(table: Table) -> None:
    """A table on stdout; piped output is never cut to a terminal's width."""
    (stdout if stdout.is_terminal else wide).print(table)


_json_out: Any = None  # where --json output goes (see claim_stdout_for_json)


def claim_stdout_for_json() -> None:
    """Keep standard output for the JSON alone.

    Ray prints warnings of its own (``(raylet) ...``) on file descriptor 1, which
    would break a script parsing ``--json`` output. So descriptor 1 is pointed
    at standard error and the JSON goes to a private copy of the original.
    """
    global _json_out
    if _json_out is None:
        sys.stdout.flush()
        _json_out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)


def emit(as_json: bool, value: Any, human: Callable[[], None]) -> None:
    if as_json:
        out = _json_out or sys.stdout
        out.write(json.dumps(value, default=str) + "\n")
        out.flush()
    else:
        human()


def progress_bar(enabled: bool) -> Progress:
    return Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=stderr, disable=not enabled,
                    transient=False)


class CountingReader:
    """A binary file wrapper that advances a progress task as it is read."""

    def __init__(self, handle: BinaryIO, advance: Callable[[int], None]) -> None:
        self._handle, self._advance = handle, advance

    def readinto(self, buffer: Any) -> int:
        count = self._handle.readinto(buffer) or 0
        self._advance(count)
        return count


